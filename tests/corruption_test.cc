// Corruption tests: a dict is created and closed, then its files in /dev/shm are damaged directly
// (wrong magic or layout version, truncation, impossible sizes, random bytes in the header, the
// log and a snapshot). Opening, inspecting, reading, refreshing, watching and writing must then
// give a clear error (kDataLoss / kFailedPrecondition naming the dict) or keep working: never a
// crash, never a hang.
//
// Every probe of a damaged dict runs in another process (the `probe` worker), so that a crash is
// observed as a signal there instead of killing this test binary; the probe reports each step's
// status and the test judges them.
//
// Byte offsets of the main segment used here (the engine's layout contract): 0 u64 magic, 8 u32
// layout version (the ready word), 12 u32 header size, 16 u64 log capacity; the header is 4096
// bytes, then the log ring, whose records start at offset 4096 while nothing was compacted.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dict_test_base.h"
#include "gtest/gtest.h"
#include "shmdict/dict.h"
#include "worker_process.h"
#include "workload.h"

namespace shmdict::testing {
namespace {

using std::chrono::seconds;

constexpr uint64_t kMagicOffset = 0;
constexpr uint64_t kVersionOffset = 8;
constexpr uint64_t kHeaderSizeOffset = 12;
constexpr uint64_t kLogCapacityOffset = 16;
constexpr uint64_t kHeaderBytes = 4096;
constexpr uint64_t kLog = 64 * 1024;
constexpr int kEntries = 40;
// A hang shows as a probe still running at this deadline.
constexpr seconds kProbeTimeout{30};

const std::set<std::string> kDataLoss = {"DATA_LOSS"};
const std::set<std::string> kRejected = {"DATA_LOSS", "FAILED_PRECONDITION"};

// What a `probe` worker reported: step name -> "CODE message ...".
struct ProbeReport {
  std::map<std::string, std::string> steps;
  bool finished = false;

  bool Has(const std::string& step) const { return steps.count(step) != 0; }
  // "CODE message ..." of `step`, empty if the probe never reported it.
  std::string Outcome(const std::string& step) const {
    auto it = steps.find(step);
    return it == steps.end() ? "" : it->second;
  }
  std::string Code(const std::string& step) const {
    auto it = steps.find(step);
    return it == steps.end() ? "" : it->second.substr(0, it->second.find(' '));
  }
};

class File {
 public:
  explicit File(const std::string& path) : path_(path), fd_(open(path.c_str(), O_RDWR)) {
    EXPECT_GE(fd_, 0) << path << ": " << strerror(errno);
  }
  ~File() {
    if (fd_ >= 0) close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint64_t Size() const {
    struct stat st = {};
    EXPECT_EQ(fstat(fd_, &st), 0);
    return static_cast<uint64_t>(st.st_size);
  }
  std::string Read(uint64_t offset, size_t bytes) const {
    std::string out(bytes, '\0');
    EXPECT_EQ(pread(fd_, out.data(), bytes, static_cast<off_t>(offset)),
              static_cast<ssize_t>(bytes))
        << path_;
    return out;
  }
  void Write(uint64_t offset, std::string_view bytes) {
    EXPECT_EQ(pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(bytes.size()))
        << path_;
  }
  template <typename T>
  T Get(uint64_t offset) const {
    T value;
    const std::string bytes = Read(offset, sizeof(T));
    std::memcpy(&value, bytes.data(), sizeof(T));
    return value;
  }
  template <typename T>
  void Put(uint64_t offset, T value) {
    Write(offset, std::string_view(reinterpret_cast<const char*>(&value), sizeof(T)));
  }
  void Truncate(uint64_t size) { EXPECT_EQ(ftruncate(fd_, static_cast<off_t>(size)), 0) << path_; }

 private:
  std::string path_;
  int fd_;
};

class CorruptionTest : public DictTestBase {
 protected:
  // Creates name_ (64 KiB log, kEntries entries k.i -> i, no compaction yet, optionally a
  // snapshot) and closes it without unlinking. Records where the log's records are.
  void CreateClosedDict(bool with_snapshot = false) {
    Options options = CreateOptions(name_);
    options.buffer_size = kLog;
    options.auto_unlink = false;
    options.background_compaction = false;
    Result<Dict> dict = Dict::Open(options);
    ASSERT_OK(dict);
    for (int i = 0; i < kEntries; ++i) {
      ASSERT_OK(dict->Set(KeyFor("k", i), ValueFor(i, 0)));
    }
    if (with_snapshot) {
      ASSERT_OK(dict->Dump());
    }
    const DictStatus status = dict->GetStatus();
    ASSERT_OK(dict->Close());

    ASSERT_EQ(status.log_capacity, kLog);
    log_used_ = status.log_used;
    if (!with_snapshot) {
      ASSERT_EQ(status.snapshot_revision, 0u) << "the records must still start the log";
      ASSERT_GE(log_used_, uint64_t{kEntries} * 32) << "every record takes at least 32 bytes";
    }
    File file(ShmPath(name_));
    magic_ = file.Get<uint64_t>(kMagicOffset);
    version_ = file.Get<uint32_t>(kVersionOffset);
    ASSERT_NE(version_, 0u) << "the ready word is set once the dict is created";
    ASSERT_EQ(file.Get<uint32_t>(kHeaderSizeOffset), kHeaderBytes);
    ASSERT_EQ(file.Get<uint64_t>(kLogCapacityOffset), kLog);
    ASSERT_GE(file.Size(), kHeaderBytes + kLog);
  }

  // Runs the probe worker on name_ and returns its report; it must finish (no hang) and exit
  // normally (no crash).
  ProbeReport Probe(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"probe", name_, "--prefix=k"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto probe = SpawnWorker(args);
    const ExitInfo exit = probe->Wait(DeadlineIn(kProbeTimeout));
    return Judge(*probe, exit);
  }

  ProbeReport Judge(WorkerProcess& probe, const ExitInfo& exit) {
    ProbeReport report;
    std::string last_step;
    for (const std::string& line : probe.TakeLines()) {
      if (line.starts_with("begin ")) last_step = line.substr(6);
      if (line == "end") report.finished = true;
      if (!line.starts_with("step ")) continue;
      const size_t space = line.find(' ', 5);
      report.steps[line.substr(5, space - 5)] = space == line.npos ? "" : line.substr(space + 1);
    }
    if (std::getenv("SHMDICT_TEST_VERBOSE") != nullptr) {
      std::fprintf(stderr, "%s %s:\n%s", probe.description().c_str(), exit.ToString().c_str(),
                   probe.output().c_str());
    }
    EXPECT_TRUE(exit.Succeeded() && report.finished)
        << "the probe " << exit.ToString() << " during step '" << last_step << "'; output:\n"
        << probe.output();
    return report;
  }

  // `step` failed with one of `codes` and a message that names the dict.
  void ExpectClearError(const ProbeReport& report, const std::string& step,
                        const std::set<std::string>& codes) {
    ASSERT_TRUE(report.Has(step)) << "the probe never reached '" << step << "'";
    const std::string& outcome = report.steps.at(step);
    EXPECT_TRUE(codes.count(report.Code(step)) != 0) << step << " returned " << outcome;
    EXPECT_NE(outcome.find(name_), std::string::npos)
        << step << ": the message must name the dict: " << outcome;
  }

  // For damage inside the log: attaching fails with kDataLoss, or it succeeds and catching up
  // reports kDataLoss; reads never return a value that was not written.
  void ExpectLogDamageReported(const ProbeReport& report) {
    ASSERT_TRUE(report.Has("open"));
    if (report.Code("open") != "OK") {
      ExpectClearError(report, "open", kDataLoss);
      return;
    }
    EXPECT_EQ(report.Code("refresh"), "DATA_LOSS") << report.Outcome("refresh");
    EXPECT_EQ(report.Code("refresh-force"), "DATA_LOSS") << report.Outcome("refresh-force");
    ASSERT_TRUE(report.Has("reads"));
    EXPECT_NE(report.Outcome("reads").find("wrong=0"), std::string::npos)
        << "reads returned values nobody wrote: " << report.Outcome("reads");
  }

  // For arbitrary damage: either a clear error (Open rejects the dict, or catching up reports
  // kDataLoss), or the damage was harmless and every read is complete and correct. Silently
  // serving a partial or wrong state is the failure.
  void ExpectErrorOrHarmless(const ProbeReport& report) {
    const std::string open = report.Code("open");
    if (open != "OK") {
      ExpectClearError(report, "open", kRejected);
      return;
    }
    if (report.Code("refresh") == "DATA_LOSS" || report.Code("refresh-force") == "DATA_LOSS") {
      return;
    }
    EXPECT_EQ(report.Code("refresh"), "OK") << report.Outcome("refresh");
    EXPECT_EQ(report.Code("refresh-force"), "OK") << report.Outcome("refresh-force");
    const std::string n = std::to_string(kEntries);
    EXPECT_EQ(report.Outcome("reads"),
              "OK size=" + n + " keys=" + n + " items=" + n + " visited=" + n + " wrong=0")
        << "the damage went undetected and the reads are not the dict's content";
  }

  // A main segment damaged this way is rejected by both Open and Inspect.
  void ExpectRejected(const std::set<std::string>& codes) {
    const ProbeReport report = Probe();
    ExpectClearError(report, "inspect", codes);
    ExpectClearError(report, "open", codes);
  }

  std::string RandomBytes(size_t n) {
    std::string bytes(n, '\0');
    for (char& c : bytes) c = static_cast<char>(Random(256));
    return bytes;
  }

  // The dict's segments other than the main one (snapshots, large values).
  std::vector<std::string> SideSegments() const {
    std::vector<std::string> side = ShmEntriesWithPrefix(name_ + "@");
    for (std::string& s : side) s = "/dev/shm/" + s;
    return side;
  }

  uint64_t log_used_ = 0;
  uint64_t magic_ = 0;
  uint32_t version_ = 0;
};

TEST_F(CorruptionTest, WrongMagicIsRejectedWithAClearError) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  File(ShmPath(name_)).Put<uint64_t>(kMagicOffset, magic_ ^ 0x00FF00FF00FF00FFull);
  ExpectRejected(kRejected);
}

// The segment of an older build (layout version 4 had no replica block), of a newer one and of a
// far-off one: refused, each with the advice that fits which side must change.
TEST_F(CorruptionTest, OtherLayoutVersionIsFailedPreconditionWithTheRightAdvice) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  ASSERT_GT(version_, 1u);
  for (const uint32_t version : {version_ - 1, version_ + 1, 0x7FFFFFFFu}) {
    if (!ShmEntriesWithPrefix(name_).empty()) {
      ASSERT_OK(Dict::UnlinkByName(name_));
    }
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    SCOPED_TRACE("layout version " + std::to_string(version));
    File(ShmPath(name_)).Put<uint32_t>(kVersionOffset, version);
    const ProbeReport report = Probe();
    for (const char* step : {"inspect", "open"}) {
      ExpectClearError(report, step, {"FAILED_PRECONDITION"});
      const std::string advice = version < version_
                                     ? "made by an older shmdict (layout 4: before replica dicts)"
                                     : "upgrade shmdict";
      EXPECT_NE(report.Outcome(step).find(advice), std::string::npos)
          << step << ": " << report.Outcome(step);
    }
  }
  ASSERT_OK(Dict::UnlinkByName(name_));
}

TEST_F(CorruptionTest, SegmentTruncatedTo100BytesIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  File(ShmPath(name_)).Truncate(100);
  ExpectRejected(kDataLoss);
}

TEST_F(CorruptionTest, SegmentTruncatedToItsHeaderIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  File(ShmPath(name_)).Truncate(kHeaderBytes);
  ExpectRejected(kDataLoss);
}

TEST_F(CorruptionTest, SegmentTruncatedToHalfIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  File file(ShmPath(name_));
  file.Truncate(file.Size() / 2);
  ExpectRejected(kDataLoss);
}

TEST_F(CorruptionTest, EmptySegmentIsAnErrorNotAHang) {
  // What a creator killed between shm_open and ftruncate leaves behind.
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  File(ShmPath(name_)).Truncate(0);
  const ProbeReport report = Probe();
  EXPECT_NE(report.Code("inspect"), "OK");
  EXPECT_NE(report.Code("open"), "OK");
  EXPECT_NE(report.Outcome("open").find(name_), std::string::npos) << report.Outcome("open");
}

TEST_F(CorruptionTest, SegmentWhoseCreatorDiedBeforeItWasReadyIsAnErrorNotAHang) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  File(ShmPath(name_)).Put<uint32_t>(kVersionOffset, 0);  // the ready word is never set
  const ProbeReport report = Probe();
  EXPECT_NE(report.Code("open"), "OK");
  EXPECT_NE(report.Outcome("open").find(name_), std::string::npos) << report.Outcome("open");
}

TEST_F(CorruptionTest, ImpossibleLogCapacityIsDataLoss) {
  // Larger than the file, not a power of two, zero.
  for (uint64_t capacity : {uint64_t{1} << 30, kLog + kHeaderBytes, uint64_t{0}}) {
    SCOPED_TRACE("log capacity " + std::to_string(capacity));
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    File(ShmPath(name_)).Put<uint64_t>(kLogCapacityOffset, capacity);
    ExpectRejected(kDataLoss);
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

TEST_F(CorruptionTest, WrongHeaderSizeIsRejected) {
  for (uint32_t header_size : {uint32_t{64}, uint32_t{1} << 20, uint32_t{0}}) {
    SCOPED_TRACE("header size " + std::to_string(header_size));
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    File(ShmPath(name_)).Put<uint32_t>(kHeaderSizeOffset, header_size);
    ExpectRejected(kRejected);
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

TEST_F(CorruptionTest, RandomBytesOverTheWholeHeaderAreRejected) {
  SCOPED_TRACE(SeedTrace());
  for (int trial = 0; trial < 5; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    File(ShmPath(name_)).Write(0, RandomBytes(kHeaderBytes));
    ExpectRejected(kRejected);
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

TEST_F(CorruptionTest, EveryHeaderWordSetToAllOnesIsRejectedOrHarmless) {
  // The first 512 bytes hold the header's fields; the rest of the 4 KiB is reserved.
  for (uint64_t offset = 0; offset < 512; offset += 8) {
    SCOPED_TRACE("0xFF x 8 at offset " + std::to_string(offset));
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    File(ShmPath(name_)).Put<uint64_t>(offset, ~uint64_t{0});
    ExpectErrorOrHarmless(Probe());  // Probe also fails the test on a crash or a hang
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

TEST_F(CorruptionTest, RandomBytesAtRandomHeaderOffsetsAreRejectedOrHarmless) {
  SCOPED_TRACE(SeedTrace());
  for (int trial = 0; trial < 30; ++trial) {
    // Mostly the first 512 bytes, where the fields are.
    const uint64_t offset = Random(4) == 0 ? Random(kHeaderBytes) : Random(512);
    const size_t bytes = 1 + Random(std::min<uint64_t>(16, kHeaderBytes - offset));
    SCOPED_TRACE("trial " + std::to_string(trial) + ": " + std::to_string(bytes) +
                 " random bytes at offset " + std::to_string(offset));
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    File(ShmPath(name_)).Write(offset, RandomBytes(bytes));
    ExpectErrorOrHarmless(Probe());
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

TEST_F(CorruptionTest, DamagedFirstLogRecordIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  {
    File file(ShmPath(name_));
    std::string header = file.Read(kHeaderBytes, 32);
    for (char& c : header) c = static_cast<char>(c ^ 0x5A);
    file.Write(kHeaderBytes, header);
  }
  ExpectLogDamageReported(Probe());
}

TEST_F(CorruptionTest, OneFlippedBitInALogRecordIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  {
    // Byte 33 of the log: inside the first record's payload (its op's value type).
    File file(ShmPath(name_));
    const uint8_t byte = file.Get<uint8_t>(kHeaderBytes + 33);
    file.Put<uint8_t>(kHeaderBytes + 33, byte ^ 0x04);
  }
  ExpectLogDamageReported(Probe());
}

TEST_F(CorruptionTest, RandomBytesInsideTheLogRecordsAreDataLoss) {
  SCOPED_TRACE(SeedTrace());
  for (int trial = 0; trial < 5; ++trial) {
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
    // 64 bytes always cover a whole 32-byte-aligned slice of some record.
    const uint64_t offset = kHeaderBytes + Random(log_used_ - 64);
    SCOPED_TRACE("trial " + std::to_string(trial) + ": 64 random bytes at offset " +
                 std::to_string(offset));
    File(ShmPath(name_)).Write(offset, RandomBytes(64));
    ExpectLogDamageReported(Probe());
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

TEST_F(CorruptionTest, HandleOpenBeforeTheLogIsDamagedKeepsWhatItKnewAndReportsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict());
  auto probe = SpawnWorker({"probe", name_, "--prefix=k", "--pause"});
  std::optional<std::string> opened = probe->AwaitLine("opened ", DeadlineIn(kProbeTimeout));
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(*opened, "opened " + std::to_string(kEntries) + " " + std::to_string(kEntries));

  // More writes, then damage the first record the paused handle has not read yet.
  {
    Result<Dict> writer = Dict::Open(AttachOptions(name_));
    ASSERT_OK(writer);
    for (int i = kEntries; i < 2 * kEntries; ++i) {
      ASSERT_OK(writer->Set(KeyFor("k", i), ValueFor(i, 0)));
    }
    ASSERT_EQ(writer->GetStatus().snapshot_revision, 0u) << "the log must not have been compacted";
  }
  {
    File file(ShmPath(name_));
    std::string record = file.Read(kHeaderBytes + log_used_, 64);
    for (char& c : record) c = static_cast<char>(c ^ 0xA5);
    file.Write(kHeaderBytes + log_used_, record);
  }
  ASSERT_TRUE(probe->SendLine("go"));
  const ProbeReport report = Judge(*probe, probe->Wait(DeadlineIn(kProbeTimeout)));
  EXPECT_EQ(report.Code("refresh"), "DATA_LOSS") << report.Outcome("refresh");
  EXPECT_NE(report.Outcome("refresh").find(name_), std::string::npos) << report.Outcome("refresh");
  EXPECT_TRUE(report.Outcome("reads").starts_with("OK size=" + std::to_string(kEntries) +
                                                  " keys=" + std::to_string(kEntries)))
      << "reads must serve what the handle last knew: " << report.Outcome("reads");
  EXPECT_NE(report.Outcome("reads").find("wrong=0"), std::string::npos) << report.Outcome("reads");
}

TEST_F(CorruptionTest, TruncatedSnapshotIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(CreateClosedDict(/*with_snapshot=*/true));
  const std::vector<std::string> side = SideSegments();
  ASSERT_EQ(side.size(), 1u) << "expected exactly one snapshot segment after Dump()";
  {
    File snapshot(side[0]);
    snapshot.Truncate(snapshot.Size() / 2);
  }
  const ProbeReport report = Probe();
  // Attach loads the snapshot: attaching, or at the latest catching up, reports the damage.
  const bool reported = report.Code("open") == "DATA_LOSS" ||
                        report.Code("refresh") == "DATA_LOSS" ||
                        report.Code("refresh-force") == "DATA_LOSS";
  EXPECT_TRUE(reported) << "open: " << report.Outcome("open")
                        << "; refresh: " << report.Outcome("refresh")
                        << "; refresh-force: " << report.Outcome("refresh-force");
  if (report.Code("open") == "DATA_LOSS") ExpectClearError(report, "open", kDataLoss);
}

TEST_F(CorruptionTest, RandomBytesInASnapshotAreDataLossOrHarmless) {
  SCOPED_TRACE(SeedTrace());
  for (int trial = 0; trial < 10; ++trial) {
    ASSERT_NO_FATAL_FAILURE(CreateClosedDict(/*with_snapshot=*/true));
    const std::vector<std::string> side = SideSegments();
    ASSERT_EQ(side.size(), 1u) << "expected exactly one snapshot segment after Dump()";
    File snapshot(side[0]);
    const uint64_t size = snapshot.Size();
    const size_t bytes = 1 + Random(std::min<uint64_t>(256, size));
    const uint64_t offset = Random(size - bytes + 1);
    SCOPED_TRACE("trial " + std::to_string(trial) + ": " + std::to_string(bytes) +
                 " random bytes at offset " + std::to_string(offset) + " of " +
                 std::to_string(size));
    snapshot.Write(offset, RandomBytes(bytes));
    ExpectErrorOrHarmless(Probe());
    ASSERT_OK(Dict::UnlinkByName(name_));
  }
}

}  // namespace
}  // namespace shmdict::testing
