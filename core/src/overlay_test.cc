#include "overlay.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

#include "hash.h"
#include "pass_counter.h"

namespace shmdict::internal {
namespace {

struct ModelEntry {
  bool present;
  std::string value;
  uint64_t revision;
};

// Compares every key of the model with the overlay, and the overlay's contents with the model.
void ExpectSame(const Overlay& overlay, const std::map<std::string, ModelEntry>& model) {
  ASSERT_EQ(overlay.size(), model.size());
  for (const auto& [key, want] : model) {
    const Overlay::Entry* e = overlay.Find(key, Hash64(key));
    ASSERT_NE(e, nullptr) << key;
    EXPECT_EQ(e->present, want.present) << key;
    EXPECT_EQ(e->value(), want.value) << key;
    EXPECT_EQ(e->revision, want.revision) << key;
  }
  size_t visited = 0;
  overlay.ForEach([&](uint64_t hash, const Overlay::Entry& e) {
    ++visited;
    EXPECT_EQ(hash, Hash64(e.key()));
    EXPECT_TRUE(model.count(std::string(e.key())));
  });
  EXPECT_EQ(visited, model.size());
}

TEST(OverlayTest, RandomOperationsMatchAMap) {
  std::mt19937_64 rng(42);
  Overlay overlay;
  std::map<std::string, ModelEntry> model;
  uint64_t revision = 0;
  for (int step = 0; step < 200000; ++step) {
    // Few distinct keys: chains collide, erasures shift entries back, values grow and shrink.
    const std::string key = "k" + std::to_string(rng() % 3000);
    const uint64_t hash = Hash64(key);
    switch (rng() % 10) {
      case 0:
      case 1:
        overlay.Erase(key, hash);
        model.erase(key);
        break;
      case 2: {
        bool had = false;
        bool was = false;
        overlay.Put(key, hash, ++revision, nullptr, &had, &was);
        auto it = model.find(key);
        EXPECT_EQ(had, it != model.end());
        EXPECT_EQ(was, it != model.end() && it->second.present);
        model[key] = {false, "", revision};
        break;
      }
      default: {
        const std::string value(rng() % 100, static_cast<char>('a' + rng() % 26));
        const ValueView view{ValueType::kString, value};
        bool had = false;
        bool was = false;
        overlay.Put(key, hash, ++revision, &view, &had, &was);
        auto it = model.find(key);
        EXPECT_EQ(had, it != model.end());
        EXPECT_EQ(was, it != model.end() && it->second.present);
        model[key] = {true, value, revision};
      }
    }
    if (step % 50000 == 49999) ExpectSame(overlay, model);
  }
  ExpectSame(overlay, model);

  const uint64_t cut = revision - 5000;
  overlay.DropUpTo(cut);
  std::erase_if(model, [&](const auto& kv) { return kv.second.revision <= cut; });
  ExpectSame(overlay, model);

  Overlay moved = std::move(overlay);
  ExpectSame(moved, model);
  EXPECT_EQ(overlay.size(), 0u);  // NOLINT(bugprone-use-after-move): a moved-from overlay is empty
  moved.Clear();
  EXPECT_EQ(moved.Find("k1", Hash64("k1")), nullptr);
  model.clear();

  // Cleared and cut overlays keep their slot array and arena chunks for reuse: what is written
  // into that memory next must read back exactly, and nothing from before may show through.
  for (int round = 0; round < 3; ++round) {
    for (int step = 0; step < 20000; ++step) {
      const std::string key = "r" + std::to_string(rng() % 5000);
      const std::string value(rng() % 300, static_cast<char>('a' + rng() % 26));
      const ValueView view{ValueType::kString, value};
      bool had = false;
      bool was = false;
      moved.Put(key, Hash64(key), ++revision, &view, &had, &was);
      EXPECT_EQ(had, model.count(key) != 0) << key;
      model[key] = {true, value, revision};
    }
    ExpectSame(moved, model);
    if (round % 2 == 0) {
      moved.Clear();
      model.clear();
    } else {
      const uint64_t keep_after = revision - 3000;
      moved.DropUpTo(keep_after);
      std::erase_if(model, [&](const auto& kv) { return kv.second.revision <= keep_after; });
    }
    ExpectSame(moved, model);
  }
}

// A batch of many clears, each after a few puts, on an overlay whose slot array grew large: each
// clear costs what the puts before it added, never the capacity (a wipe of the whole array), and
// the overlay reads back exactly after each.
TEST(OverlayTest, ManyClearsOfALargeOverlayWipeItsSlotsAtMostOnce) {
  Overlay overlay;
  std::map<std::string, ModelEntry> model;
  bool had = false;
  bool was = false;
  uint64_t revision = 0;
  auto put = [&](const std::string& key) {
    const std::string value = "v" + key;
    const ValueView view{ValueType::kString, value};
    overlay.Put(key, Hash64(key), ++revision, &view, &had, &was);
    model[key] = {true, value, revision};
  };
  for (int i = 0; i < 50000; ++i) put("k" + std::to_string(i));
  const uint64_t passes_before = whole_dict_passes;
  for (int clear = 0; clear < 20000; ++clear) {
    overlay.Clear();
    model.clear();
    if (clear % 1000 == 0) ExpectSame(overlay, model);
    put("c" + std::to_string(clear));
    put("d" + std::to_string(clear));
    if (clear % 1000 == 0) ExpectSame(overlay, model);
  }
  ExpectSame(overlay, model);
  EXPECT_EQ(whole_dict_passes - passes_before, 1u)
      << "the first clear may wipe the large slot array, no later one";
  overlay.Erase("c19999", Hash64("c19999"));
  model.erase("c19999");
  ExpectSame(overlay, model);
}

TEST(OverlayTest, OverwriteWithItsOwnValueIsSafe) {
  Overlay overlay;
  const std::string key = "key";
  const uint64_t hash = Hash64(key);
  const std::string small = "abc";
  const ValueView small_view{ValueType::kBytes, small};
  bool had = false;
  bool was = false;
  overlay.Put(key, hash, 1, &small_view, &had, &was);
  // The new value aliases the entry's own bytes (an op built from a read of the overlay).
  const ValueView own = overlay.Find(key, hash)->view();
  overlay.Put(key, hash, 2, &own, &had, &was);
  EXPECT_EQ(overlay.Find(key, hash)->value(), "abc");
  EXPECT_TRUE(had);
  EXPECT_TRUE(was);
}

TEST(OverlayTest, ReservingRoomKeepsEveryEntry) {
  Overlay overlay;
  std::map<std::string, ModelEntry> model;
  bool had = false;
  bool was = false;
  uint64_t revision = 0;
  auto put = [&](int i) {
    const std::string key = "k" + std::to_string(i);
    const std::string value = "v" + std::to_string(i);
    const ValueView view{ValueType::kString, value};
    overlay.Put(key, Hash64(key), ++revision, &view, &had, &was);
    model[key] = {true, value, revision};
  };
  overlay.Reserve(10);  // on an empty overlay
  for (int i = 0; i < 100; ++i) put(i);
  overlay.Reserve(5000);  // moves the entries it holds
  ExpectSame(overlay, model);
  for (int i = 100; i < 6000; ++i) put(i);  // past the reservation: grows as before
  overlay.Reserve(10);                      // smaller than what it holds: nothing changes
  ExpectSame(overlay, model);
}

}  // namespace
}  // namespace shmdict::internal
