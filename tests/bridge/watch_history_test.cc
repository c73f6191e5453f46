// Watch validation in the manner of etcd's robustness tests: several watchers record their
// histories through a bridge that is SIGKILLed and restarted while local and remote writers
// write (some writes happen while no bridge runs), and every history is checked against the
// dict's own history, read from shared memory by a local watcher:
//   ordered and unique  revisions only grow, no revision twice;
//   atomic              each revision arrives whole in one batch (fragments reassembled);
//   gap-free            the changes are exactly the dict's, with nothing missing after the
//                       watcher's start or a resync snapshot (which must equal the dict's state
//                       at its revision);
//   resumable           after each reconnect, the next change is the one right after the last;
//   progress-safe       no change at or below a progress revision already received.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "shmdict/remote_dict.h"

namespace shmdict::testing {
namespace {

using namespace std::chrono_literals;

struct Event {
  enum Kind { kChanges, kSnapshot, kProgress } kind = kChanges;
  std::vector<Change> changes;            // kChanges
  uint64_t revision = 0;                  // every kind: the batch's revision
  std::map<std::string, Value> snapshot;  // kSnapshot: the assembled state
};

// The dict's own history: revision -> its changes, in order.
using History = std::map<uint64_t, std::vector<Change>>;

bool SameChange(const Change& a, const Change& b) {
  return a.revision == b.revision && a.op == b.op && a.key == b.key &&
         (a.op != ChangeOp::kSet || a.value == b.value);
}

std::map<std::string, Value> StateAt(const History& history, uint64_t revision) {
  std::map<std::string, Value> state;
  for (const auto& [r, changes] : history) {
    if (r > revision) break;
    for (const Change& c : changes) {
      if (c.op == ChangeOp::kSet) state[c.key] = c.value;
      if (c.op == ChangeOp::kErase) state.erase(c.key);
      if (c.op == ChangeOp::kClear) state.clear();
    }
  }
  return state;
}

// Returns "" when the events are a valid history of `history` after `start`, else the first
// violation.
std::string Validate(const History& history, uint64_t start, const std::vector<Event>& events) {
  uint64_t position = start;  // everything up to here was received
  uint64_t progress = 0;      // the highest progress revision received
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& event = events[i];
    const std::string where = "event " + std::to_string(i) + ": ";
    if (event.kind == Event::kProgress) {
      if (event.revision < position) return where + "progress went backwards";
      if (event.revision > position) {
        return where + "progress " + std::to_string(event.revision) + " skips changes after " +
               std::to_string(position);
      }
      progress = std::max(progress, event.revision);
      continue;
    }
    if (event.kind == Event::kSnapshot) {
      if (event.revision < position) return where + "snapshot older than the position";
      if (event.snapshot != StateAt(history, event.revision)) {
        return where + "snapshot at " + std::to_string(event.revision) +
               " differs from the dict's state then";
      }
      position = event.revision;
      continue;
    }
    size_t c = 0;
    while (c < event.changes.size()) {
      const uint64_t revision = event.changes[c].revision;
      if (revision <= progress) {
        return where + "change at " + std::to_string(revision) + " after progress " +
               std::to_string(progress);
      }
      if (revision != position + 1) {
        return where + "expected revision " + std::to_string(position + 1) + ", got " +
               std::to_string(revision) + (revision <= position ? " (duplicate)" : " (gap)");
      }
      auto truth = history.find(revision);
      if (truth == history.end())
        return where + "revision " + std::to_string(revision) + " unknown";
      for (const Change& expected : truth->second) {
        if (c >= event.changes.size() || !SameChange(event.changes[c], expected)) {
          return where + "revision " + std::to_string(revision) +
                 " is not whole in one batch or differs from the dict's";
        }
        ++c;
      }
      position = revision;
    }
    if (event.revision < position) return where + "batch revision below its changes";
    position = std::max(position, event.revision);
  }
  return "";
}

class WatchHistoryTest : public DictTestBase {};

TEST_F(WatchHistoryTest, HistoriesStayOrderedUniqueAtomicAndGapFreeAcrossBridgeKills) {
  Options options = CreateOptions(name_);
  options.buffer_size = uint64_t{64} << 20;  // the truth watcher is never lapped
  auto dict = Dict::Open(options);
  ASSERT_OK(dict);
  BridgeProcess bridge;
  ASSERT_TRUE(bridge.Start());

  // The truth, from shared memory.
  std::atomic<bool> stop{false};
  History history;
  std::atomic<uint64_t> truth_revision{0};
  auto truth_watcher = dict->Watch(0);
  ASSERT_OK(truth_watcher);
  std::thread truth([&] {
    while (!stop) {
      auto batch = (*truth_watcher)->Next(WatchLimits{}, 50ms);
      if (!batch.ok()) {
        ADD_FAILURE() << batch.status().ToString();
        return;
      }
      EXPECT_FALSE(batch->is_snapshot) << "the truth watcher was lapped";
      for (Change& change : batch->changes) history[change.revision].push_back(std::move(change));
      truth_revision = batch->revision;
    }
  });

  // The watchers under test: three from the start, one from the middle.
  RemoteOptions remote{.address = bridge.address(), .dict = name_, .mirror = false};
  remote.initial_backoff = 20ms;
  remote.max_backoff = 200ms;
  auto client = RemoteDict::Open(remote);
  ASSERT_OK(client);
  struct Recorded {
    uint64_t start = 0;
    std::vector<Event> events;
    std::unique_ptr<Watcher> watcher;
    std::thread thread;
  };
  std::vector<std::unique_ptr<Recorded>> watchers;
  auto start_watcher = [&](uint64_t after) {
    auto recorded = std::make_unique<Recorded>();
    recorded->start = after;
    auto watcher = (*client)->Watch(after);
    ASSERT_OK(watcher);
    recorded->watcher = std::move(*watcher);
    Recorded* r = recorded.get();
    r->thread = std::thread([r] {
      std::map<std::string, Value> staging;
      for (;;) {
        auto batch = r->watcher->Next(WatchLimits{}, 100ms);
        if (!batch.ok()) return;  // cancelled at the end
        Event event;
        event.revision = batch->revision;
        if (batch->is_snapshot) {
          if (batch->snapshot_begins) staging.clear();
          for (auto& [key, value] : batch->snapshot_items) staging[key] = value;
          if (!batch->snapshot_ends) continue;
          event.kind = Event::kSnapshot;
          event.revision = batch->snapshot_revision;
          event.snapshot.swap(staging);
        } else if (batch->changes.empty()) {
          if (batch->revision == (r->events.empty() ? r->start : r->events.back().revision)) {
            continue;  // a timeout, not a progress message
          }
          event.kind = Event::kProgress;
        } else {
          event.changes = std::move(batch->changes);
        }
        r->events.push_back(std::move(event));
      }
    });
    watchers.push_back(std::move(recorded));
  };
  for (int i = 0; i < 3; ++i) start_watcher(0);

  const int local_writes = Scaled(40000);
  const int remote_writes = Scaled(15000);
  WorkerProcess local_a(RemoteWorkerProgram(),
                        {"local-write", name_, "a", std::to_string(local_writes), "20"});
  WorkerProcess local_b(RemoteWorkerProgram(),
                        {"local-write", name_, "b", std::to_string(local_writes), "20"});
  WorkerProcess remote_writer(RemoteWorkerProgram(), {"remote-write", bridge.address(), name_, "r",
                                                      std::to_string(remote_writes)});
  std::vector<WorkerProcess*> writers = {&local_a, &local_b, &remote_writer};
  // Progress is awaited, never assumed from elapsed time: under a sanitizer on a loaded machine
  // a worker takes seconds to start.
  auto await_revision = [&](uint64_t target, const char* what) {
    const Deadline deadline = DeadlineIn(std::chrono::seconds(120));
    while (dict->published_revision() < target && Clock::now() < deadline) {
      Pump(writers, DeadlineIn(20ms));
    }
    EXPECT_GE(dict->published_revision(), target) << what;
  };
  for (int kill = 0; kill < 2; ++kill) {
    await_revision(dict->published_revision() + 2000, "the writers are not writing");
    if (kill == 0) start_watcher(dict->published_revision());
    bridge.Kill();
    // Writes made while no bridge runs.
    await_revision(dict->published_revision() + 500, "no write happened while the bridge was down");
    ASSERT_TRUE(bridge.Start());
  }
  const std::vector<ExitInfo> exits = WaitAll(writers, DeadlineIn(std::chrono::seconds(300)));
  for (size_t i = 0; i < exits.size(); ++i) {
    const std::string& output = writers[i]->output();
    const size_t error = output.rfind("error ");
    EXPECT_TRUE(exits[i].Succeeded())
        << writers[i]->description() << ": " << exits[i].ToString() << ": "
        << (error == std::string::npos ? "" : output.substr(error));
  }
  const uint64_t final_revision = dict->published_revision();
  const Deadline deadline = DeadlineIn(std::chrono::seconds(120));
  while (truth_revision < final_revision && Clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  for (auto& w : watchers) {
    while (Clock::now() < deadline) {
      if (w->watcher->revision() >= final_revision) break;
      std::this_thread::sleep_for(10ms);
    }
    w->watcher->Cancel();
    w->thread.join();
  }
  stop = true;
  truth.join();

  size_t total = 0;
  for (const auto& [revision, changes] : history) total += changes.size();
  EXPECT_GE(total, static_cast<size_t>(Scaled(100000))) << "the run must cover 100,000 changes";
  EXPECT_EQ(history.size(), final_revision);
  for (size_t i = 0; i < watchers.size(); ++i) {
    SCOPED_TRACE("watcher " + std::to_string(i) + " from revision " +
                 std::to_string(watchers[i]->start));
    EXPECT_EQ(watchers[i]->watcher->revision(), final_revision);
    EXPECT_EQ(Validate(history, watchers[i]->start, watchers[i]->events), "");
  }
}

}  // namespace
}  // namespace shmdict::testing
