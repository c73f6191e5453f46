// shmdict_worker: the helper program the multi-process, crash and corruption tests spawn as a real,
// unrelated process. One subcommand per role:
//
//   incr NAME KEY COUNT                  Increment(KEY) COUNT times; "done <last value>"
//   write NAME PREFIX COUNT              Set PREFIX.i -> ValueFor(i) for i in [0, COUNT), printing
//                                        "acked <i> <revision>" after each commit returned
//       [--value-bytes=N] [--hold-lock]  (--hold-lock: take Lock() first and never release it;
//       [--step=N]                       --step: wait for a line on stdin before every N writes,
//                                        and write the rest at once after EOF or an empty line)
//       [--large-every=N --large-bytes=B] every Nth value (i % N == N - 1) B bytes long instead
//   lockrmw NAME KEY COUNT               COUNT times under Lock(): Get, yield, Set(old + 1)
//   lockhold NAME                        Lock(), "locked <pid>", hold until stdin says "unlock"
//                                        or closes (or the test SIGKILLs it)
//   lockwait NAME TIMEOUT_MS             "waiting", Lock(TIMEOUT_MS): "locked" or "lock CODE MSG"
//   trylock NAME                         "trylock CODE MSG"
//   watch NAME UNTIL_REV                 Watch(0) until UNTIL_REV: "snapshot R N" / "rev R" for
//                                        every revision delivered, checking every value
//   refresh-observe NAME PREFIX UNTIL    WaitForChange + reads: "rev R" per revision seen,
//                                        checking the state is one consistent revision
//   dump NAME                            DigestLine per entry, then "end REV COUNT"
//   churn NAME SEED STEPS                apply the ChurnStep sequence; "done REV"
//   bigvalue NAME KEY BYTES SEED write|check
//   bigvalue-loop NAME KEY BYTES         Set KEY -> PatternBytes(BYTES, seed) for seed 0, 1, ...,
//                                        "acked <seed>" after each
//   nested NAME KEY N                    OpenNested(KEY), N items, a grandchild; prints names
//   open NAME MODE [--set=KEY]           Open with MODE (must-create|must-attach|attach-or-create)
//                                        and auto_unlink=false: "open CODE created=0|1 MSG"
//   wait NAME AFTER_REV TIMEOUT_MS       "waiting", WaitForChange: "changed R" or "wait CODE MSG"
//   set NAME KEY INT                     "acked REV"
//   replica NAME DESCRIPTION COUNT       ReplicaFeed::Adopt, then COUNT feed commits: the b-th
//                                        revision of the dict (b from 1) sets feed.<b-1> ->
//                                        ValueFor(b-1) and "u" -> 10*b, as upstream revision
//                                        10*b; "acked <i> <revision>" after each
//   probe NAME [--pause] [--prefix=P]    every read/write entry point on a possibly corrupted
//                                        dict: "step NAME CODE MSG" lines, then "end"
//
// Common flags: --barrier (print "ready" after opening, then wait for a line on stdin),
// --inline-compaction (Options::background_compaction = false), --lock-timeout-ms=N,
// --print-pid ("pid N" after opening, N as the worker's own pid namespace numbers it).
//
// Workers attach with kMustAttach and auto_unlink=false (the test creates and unlinks the dict),
// except `open`. A violated expectation prints "error <what>" to stdout and stderr and exits 2.
// Output goes through write(2) unbuffered, so a line the test read was printed before anything
// the worker did afterwards, and a SIGKILL never loses a printed line.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../support/workload.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/replica_feed.h"
#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict::testing {
namespace {

using std::chrono::milliseconds;

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;

  bool Has(const std::string& flag) const { return flags.count(flag) != 0; }
  int64_t Int(const std::string& flag, int64_t fallback) const {
    auto it = flags.find(flag);
    return it == flags.end() ? fallback : std::strtoll(it->second.c_str(), nullptr, 10);
  }
  std::string Str(const std::string& flag) const {
    auto it = flags.find(flag);
    return it == flags.end() ? std::string() : it->second;
  }
};

void Say(std::string line) {
  line += '\n';
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = write(STDOUT_FILENO, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::_Exit(3);  // the test is gone
    off += static_cast<size_t>(n);
  }
}

std::string OneLine(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// "CODE message" for a status, e.g. "NOT_FOUND dict 'x' does not exist" or "OK".
std::string Describe(const Status& status) {
  std::string s(StatusCodeName(status.code()));
  if (!status.ok()) s += " " + OneLine(status.message());
  return s;
}

[[noreturn]] void Fail(const std::string& what) {
  const std::string line = "error " + OneLine(what);
  std::fprintf(stderr, "shmdict_worker[%d]: %s\n", static_cast<int>(getpid()), line.c_str());
  Say(line);
  std::_Exit(2);
}

[[noreturn]] void Fail(const std::string& what, const Status& status) {
  Fail(what + ": " + status.ToString());
}

uint64_t ToU64(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

// Blocks until a line (or EOF) arrives on stdin; returns the line without '\n' (empty at EOF).
std::string ReadStdinLine() {
  std::string line;
  char c;
  for (;;) {
    const ssize_t n = read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return line;
    line += c;
  }
}

Options BaseOptions(const std::string& name, const Args& args) {
  Options options;
  options.name = name;
  options.create_mode = CreateMode::kMustAttach;
  options.auto_unlink = false;
  options.background_compaction = !args.Has("inline-compaction");
  options.lock_timeout = milliseconds(args.Int("lock-timeout-ms", 10000));
  return options;
}

Dict Attach(const std::string& name, const Args& args) {
  Result<Dict> dict = Dict::Open(BaseOptions(name, args));
  if (!dict.ok()) Fail("open " + name, dict.status());
  if (args.Has("print-pid")) Say("pid " + std::to_string(getpid()));
  Say("ready");
  if (args.Has("barrier")) ReadStdinLine();
  return std::move(*dict);
}

void Need(const Args& args, size_t n, const char* usage) {
  if (args.positional.size() != n) Fail(std::string("usage: ") + usage);
}

int Incr(const Args& args) {
  Need(args, 3, "incr NAME KEY COUNT");
  Dict dict = Attach(args.positional[0], args);
  const uint64_t count = ToU64(args.positional[2]);
  int64_t last = 0;
  for (uint64_t i = 0; i < count; ++i) {
    Result<int64_t> v = dict.Increment(args.positional[1], 1);
    if (!v.ok()) Fail("increment", v.status());
    last = *v;
  }
  Say("done " + std::to_string(last));
  return 0;
}

int Write(const Args& args) {
  Need(args, 3, "write NAME PREFIX COUNT");
  Dict dict = Attach(args.positional[0], args);
  const std::string& prefix = args.positional[1];
  const int64_t count = static_cast<int64_t>(ToU64(args.positional[2]));
  const size_t value_bytes = static_cast<size_t>(args.Int("value-bytes", 0));
  const int64_t large_every = args.Int("large-every", 0);
  const size_t large_bytes = static_cast<size_t>(args.Int("large-bytes", 0));
  LockGuard guard;
  if (args.Has("hold-lock")) {
    Result<LockGuard> locked = dict.Lock();
    if (!locked.ok()) Fail("lock", locked.status());
    guard = std::move(*locked);
    Say("locked");
  }
  // Lets a test choose what happens meanwhile (a bridge down, then back) without sleeping.
  int64_t step = args.Int("step", 0);
  for (int64_t i = 0; i < count; ++i) {
    if (step > 0 && i % step == 0 && ReadStdinLine().empty()) step = 0;
    const bool large = large_every > 0 && i % large_every == large_every - 1;
    Result<uint64_t> rev =
        dict.Set(KeyFor(prefix, i), ValueFor(i, large ? large_bytes : value_bytes));
    if (!rev.ok()) Fail("set " + KeyFor(prefix, i), rev.status());
    Say("acked " + std::to_string(i) + " " + std::to_string(*rev));
  }
  if (guard.owns_lock()) guard.Unlock();
  Say("done");
  return 0;
}

int Replica(const Args& args) {
  Need(args, 3, "replica NAME DESCRIPTION COUNT");
  Dict dict = Attach(args.positional[0], args);
  ReplicaResumePoint point;
  Result<ReplicaFeed> feed =
      ReplicaFeed::Adopt(dict, ReplicaMarker{.description = args.positional[1]}, &point);
  if (!feed.ok()) Fail("adopt", feed.status());
  const int64_t count = static_cast<int64_t>(ToU64(args.positional[2]));
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t b = point.local_revision + static_cast<uint64_t>(i) + 1;
    const uint64_t upstream = 10 * b;
    const int64_t index = static_cast<int64_t>(b - 1);
    Result<uint64_t> rev = feed->Apply(
        {Change{.op = ChangeOp::kSet, .key = KeyFor("feed", index), .value = ValueFor(index, 0)},
         Change{.op = ChangeOp::kSet,
                .key = "u",
                .value = Value::Int(static_cast<int64_t>(upstream))}},
        upstream);
    if (!rev.ok()) Fail("feed apply", rev.status());
    if (*rev != b) Fail("feed revision " + std::to_string(*rev) + ", not " + std::to_string(b));
    Say("acked " + std::to_string(i) + " " + std::to_string(*rev));
  }
  Say("done");
  return 0;
}

int LockRmw(const Args& args) {
  Need(args, 3, "lockrmw NAME KEY COUNT");
  Dict dict = Attach(args.positional[0], args);
  const std::string& key = args.positional[1];
  const uint64_t count = ToU64(args.positional[2]);
  for (uint64_t i = 0; i < count; ++i) {
    Result<LockGuard> guard = dict.Lock();
    if (!guard.ok()) Fail("lock", guard.status());
    std::optional<Value> old = *dict.Get(key);
    int64_t n = 0;
    if (old.has_value()) {
      if (!old->AsInt().has_value()) Fail("value of " + key + " is not an int");
      n = *old->AsInt();
    }
    // Widen the window between read and write: without mutual exclusion, updates get lost.
    sched_yield();
    Result<uint64_t> rev = dict.Set(key, Value::Int(n + 1));
    if (!rev.ok()) Fail("set", rev.status());
    guard->Unlock();
  }
  Say("done");
  return 0;
}

int LockHold(const Args& args) {
  Need(args, 1, "lockhold NAME");
  Dict dict = Attach(args.positional[0], args);
  Result<LockGuard> guard = dict.Lock();
  if (!guard.ok()) Fail("lock", guard.status());
  Say("locked " + std::to_string(getpid()));
  for (;;) {
    const std::string line = ReadStdinLine();
    if (line.empty() || line == "unlock") break;
  }
  guard->Unlock();
  Say("unlocked");
  return 0;
}

int LockWait(const Args& args) {
  Need(args, 2, "lockwait NAME TIMEOUT_MS");
  Dict dict = Attach(args.positional[0], args);
  Say("waiting");
  Result<LockGuard> guard = dict.Lock(milliseconds(ToU64(args.positional[1])));
  if (!guard.ok()) {
    Say("lock " + Describe(guard.status()));
    return 0;
  }
  Say("locked");
  guard->Unlock();
  return 0;
}

int TryLock(const Args& args) {
  Need(args, 1, "trylock NAME");
  Dict dict = Attach(args.positional[0], args);
  Result<LockGuard> guard = dict.TryLock();
  Say("trylock " + Describe(guard.status()));
  return 0;
}

// The writers' workload is assumed: every revision sets one new key PREFIX.i -> ValueFor(i), so
// the state at revision R has exactly R entries.
int Watch(const Args& args) {
  Need(args, 2, "watch NAME UNTIL_REV");
  Dict dict = Attach(args.positional[0], args);
  const uint64_t until = ToU64(args.positional[1]);
  Result<std::unique_ptr<Watcher>> watched = dict.Watch(0);
  if (!watched.ok()) Fail("watch", watched.status());
  Watcher& watcher = **watched;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  std::map<std::string, Value> state;
  uint64_t last = 0;
  bool delivered_any = false;
  while (last < until) {
    if (std::chrono::steady_clock::now() > deadline)
      Fail("timed out at revision " + std::to_string(last));
    Result<ChangeBatch> batch = watcher.Next(4096, std::chrono::seconds(1));
    if (!batch.ok()) Fail("watch next", batch.status());
    if (batch->is_snapshot) {
      // A snapshot comes in chunks: the first clears the state, the last completes it.
      if (batch->snapshot_begins) {
        if (delivered_any && batch->snapshot_revision <= last) {
          Fail("snapshot at revision " + std::to_string(batch->snapshot_revision) +
               " after revision " + std::to_string(last) + " was delivered");
        }
        state.clear();
      }
      if (batch->revision != last && (delivered_any || batch->revision != 0) &&
          !batch->snapshot_ends) {
        Fail("a snapshot chunk moved the revision to " + std::to_string(batch->revision));
      }
      for (auto& [key, value] : batch->snapshot_items) {
        std::optional<ParsedKey> parsed = ParseKey(key);
        if (!parsed || !ValueMatchesIndex(value.view(), parsed->index)) {
          Fail("snapshot has wrong value for " + key + ": " + value.ToText());
        }
        if (!state.emplace(key, value).second) Fail("snapshot repeats " + key);
      }
      if (!batch->snapshot_ends) continue;
      if (state.size() != batch->snapshot_revision) {
        Fail("snapshot at revision " + std::to_string(batch->snapshot_revision) + " has " +
             std::to_string(state.size()) + " entries");
      }
      last = batch->snapshot_revision;
      delivered_any = true;
      Say("snapshot " + std::to_string(last) + " " + std::to_string(state.size()));
    }
    for (const Change& change : batch->changes) {
      if (delivered_any && change.revision <= last) {
        Fail("revision " + std::to_string(change.revision) + " delivered after " +
             std::to_string(last));
      }
      if (change.op != ChangeOp::kSet) Fail("unexpected op at " + std::to_string(change.revision));
      std::optional<ParsedKey> parsed = ParseKey(change.key);
      if (!parsed || !ValueMatchesIndex(change.value.view(), parsed->index)) {
        Fail("revision " + std::to_string(change.revision) + " sets " + change.key + " to " +
             change.value.ToText());
      }
      if (!state.emplace(change.key, change.value).second) {
        Fail("revision " + std::to_string(change.revision) + " sets " + change.key +
             " a second time");
      }
      last = change.revision;
      delivered_any = true;
      Say("rev " + std::to_string(last));
    }
    if (batch->revision != last && (delivered_any || batch->revision != 0)) {
      Fail("batch claims revision " + std::to_string(batch->revision) + " but delivered up to " +
           std::to_string(last));
    }
    if (state.size() != last) {
      Fail("at revision " + std::to_string(last) + " the stream describes " +
           std::to_string(state.size()) + " entries");
    }
  }
  if (dict.Export() != state) Fail("the streamed state differs from Export()");
  Say("done " + std::to_string(last) + " " + std::to_string(state.size()));
  return 0;
}

// One writer sets PREFIX.i at revision i + 1, so revision R means keys PREFIX.0 .. PREFIX.(R-1).
int RefreshObserve(const Args& args) {
  Need(args, 3, "refresh-observe NAME PREFIX UNTIL_REV");
  Dict dict = Attach(args.positional[0], args);
  const std::string& prefix = args.positional[1];
  const uint64_t until = ToU64(args.positional[2]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  uint64_t last = 0;
  uint64_t observations = 0;
  Value value;
  while (last < until) {
    if (std::chrono::steady_clock::now() > deadline) Fail("timed out at " + std::to_string(last));
    Result<uint64_t> woke = dict.WaitForChange(last, std::chrono::seconds(1));
    if (!woke.ok() && woke.status().code() != StatusCode::kDeadlineExceeded) {
      Fail("wait", woke.status());
    }
    // Reads would quietly serve the last state they could build; Refresh reports why not. On a
    // healthy dict nothing may stop a reader from catching up.
    const Status refreshed = dict.Refresh();
    if (!refreshed.ok()) Fail("refresh", refreshed);
    const uint64_t r1 = dict.revision();
    if (r1 < last)
      Fail("revision went back from " + std::to_string(last) + " to " + std::to_string(r1));
    if (r1 == last) continue;
    const std::string newest = KeyFor(prefix, static_cast<int64_t>(r1 - 1));
    if (!*dict.Get(newest, &value) || !ValueMatchesIndex(value.view(), r1 - 1)) {
      Fail("at revision " + std::to_string(r1) + " " + newest + " is missing or wrong");
    }
    const uint64_t size = *dict.Size();
    const uint64_t r2 = dict.revision();
    if (size < r1 || size > r2) {
      Fail("Size() " + std::to_string(size) + " between revisions " + std::to_string(r1) + " and " +
           std::to_string(r2));
    }
    if (++observations % 16 == 0) {
      uint64_t n = 0;
      int64_t max_index = -1;
      std::string bad;
      dict.ForEach([&](std::string_view key, ValueView v) {
        std::optional<ParsedKey> parsed = ParseKey(key);
        if (!parsed || parsed->prefix != prefix || !ValueMatchesIndex(v, parsed->index)) {
          bad = std::string(key);
        } else {
          max_index = std::max(max_index, parsed->index);
        }
        ++n;
      });
      const uint64_t r3 = dict.revision();
      if (!bad.empty()) Fail("ForEach saw a wrong entry " + bad);
      if (n != static_cast<uint64_t>(max_index + 1) || n < r2 || n > r3) {
        Fail("ForEach saw " + std::to_string(n) + " entries up to index " +
             std::to_string(max_index) + " between revisions " + std::to_string(r2) + " and " +
             std::to_string(r3));
      }
    }
    Say("rev " + std::to_string(r1));
    last = r1;
  }
  std::map<std::string, Value> items = dict.Export();
  if (items.size() != until) Fail("final Export() has " + std::to_string(items.size()));
  for (const auto& [key, v] : items) {
    std::optional<ParsedKey> parsed = ParseKey(key);
    if (!parsed || !ValueMatchesIndex(v.view(), parsed->index)) Fail("final value of " + key);
  }
  Say("done " + std::to_string(last) + " " + std::to_string(observations));
  return 0;
}

int Dump(const Args& args) {
  Need(args, 1, "dump NAME");
  Dict dict = Attach(args.positional[0], args);
  Status refreshed = dict.Refresh();
  if (!refreshed.ok()) Fail("refresh", refreshed);
  const std::map<std::string, Value> items = dict.Export();
  const uint64_t revision = dict.revision();
  std::string out;
  for (const std::string& line : DigestLines(items)) out += line + "\n";
  out += "end " + std::to_string(revision) + " " + std::to_string(items.size());
  Say(out);
  return 0;
}

int Churn(const Args& args) {
  Need(args, 3, "churn NAME SEED STEPS");
  Dict dict = Attach(args.positional[0], args);
  const uint64_t seed = ToU64(args.positional[1]);
  const uint64_t steps = ToU64(args.positional[2]);
  for (uint64_t i = 0; i < steps; ++i) {
    ChurnOp op = ChurnStep(seed, i);
    if (op.erase) {
      Result<bool> erased = dict.Erase(op.key);
      if (!erased.ok()) Fail("erase " + op.key, erased.status());
    } else {
      Result<uint64_t> rev = dict.Set(op.key, op.value);
      if (!rev.ok()) Fail("set " + op.key, rev.status());
    }
  }
  Say("done " + std::to_string(dict.last_commit_revision()));
  return 0;
}

int BigValue(const Args& args) {
  Need(args, 5, "bigvalue NAME KEY BYTES SEED write|check");
  Dict dict = Attach(args.positional[0], args);
  const std::string& key = args.positional[1];
  const std::string expected = PatternBytes(ToU64(args.positional[2]), ToU64(args.positional[3]));
  if (args.positional[4] == "write") {
    Result<uint64_t> rev = dict.Set(key, Value::Bytes(expected));
    if (!rev.ok()) Fail("set", rev.status());
    Say("acked " + std::to_string(*rev));
    return 0;
  }
  std::optional<Value> got = *dict.Get(key);
  if (!got.has_value()) Fail(key + " is missing");
  if (got->type() != ValueType::kBytes) Fail(key + " has type " + TypeName(got->type()));
  if (got->data() != expected) {
    const auto diff =
        std::mismatch(expected.begin(), expected.end(), got->data().begin(), got->data().end());
    Fail(key + " has " + std::to_string(got->data().size()) + " bytes, expected " +
         std::to_string(expected.size()) + "; first difference at byte " +
         std::to_string(diff.first - expected.begin()));
  }
  Say("check match");
  return 0;
}

int BigValueLoop(const Args& args) {
  Need(args, 3, "bigvalue-loop NAME KEY BYTES");
  Dict dict = Attach(args.positional[0], args);
  const uint64_t bytes = ToU64(args.positional[2]);
  for (uint64_t seed = 0;; ++seed) {
    Result<uint64_t> rev = dict.Set(args.positional[1], Value::Bytes(PatternBytes(bytes, seed)));
    if (!rev.ok()) Fail("set", rev.status());
    Say("acked " + std::to_string(seed));
  }
}

int Nested(const Args& args) {
  Need(args, 3, "nested NAME KEY N");
  Dict dict = Attach(args.positional[0], args);
  Result<Dict> child = dict.OpenNested(args.positional[1]);
  if (!child.ok()) Fail("open nested", child.status());
  const int64_t n = static_cast<int64_t>(ToU64(args.positional[2]));
  for (int64_t i = 0; i < n; ++i) {
    Result<uint64_t> rev = child->Set(KeyFor("c", i), ValueFor(i, 0));
    if (!rev.ok()) Fail("child set", rev.status());
  }
  Result<Dict> grandchild = child->OpenNested("inner");
  if (!grandchild.ok()) Fail("open grandchild", grandchild.status());
  Result<uint64_t> rev = grandchild->Set(KeyFor("g", 0), ValueFor(0, 0));
  if (!rev.ok()) Fail("grandchild set", rev.status());
  Say("child " + child->name());
  Say("grandchild " + grandchild->name());
  return 0;
}

int OpenMode(const Args& args) {
  Need(args, 2, "open NAME MODE");
  Options options = BaseOptions(args.positional[0], args);
  const std::string& mode = args.positional[1];
  if (mode == "must-create") {
    options.create_mode = CreateMode::kMustCreate;
  } else if (mode == "must-attach") {
    options.create_mode = CreateMode::kMustAttach;
  } else if (mode == "attach-or-create") {
    options.create_mode = CreateMode::kAttachOrCreate;
  } else {
    Fail("unknown mode " + mode);
  }
  Say("ready");
  if (args.Has("barrier")) ReadStdinLine();
  Result<Dict> dict = Dict::Open(options);
  Say("open " + std::string(StatusCodeName(dict.status().code())) +
      " created=" + (dict.ok() && dict->created() ? "1" : "0") +
      (dict.ok() ? "" : " " + OneLine(dict.status().message())));
  if (dict.ok() && args.Has("set")) {
    Result<uint64_t> rev = dict->Set(args.Str("set"), Value::Int(getpid()));
    Say("set " + Describe(rev.status()));
  }
  return 0;
}

int Wait(const Args& args) {
  Need(args, 3, "wait NAME AFTER_REV TIMEOUT_MS");
  Dict dict = Attach(args.positional[0], args);
  Say("waiting");
  Result<uint64_t> rev =
      dict.WaitForChange(ToU64(args.positional[1]), milliseconds(ToU64(args.positional[2])));
  if (rev.ok()) {
    Say("changed " + std::to_string(*rev));
  } else {
    Say("wait " + Describe(rev.status()));
  }
  return 0;
}

int SetOne(const Args& args) {
  Need(args, 3, "set NAME KEY INT");
  Dict dict = Attach(args.positional[0], args);
  Result<uint64_t> rev = dict.Set(
      args.positional[1], Value::Int(std::strtoll(args.positional[2].c_str(), nullptr, 10)));
  if (!rev.ok()) Fail("set", rev.status());
  Say("acked " + std::to_string(*rev));
  return 0;
}

// Calls every entry point on a dict that may be corrupted. Each outcome is reported, none is
// judged here: the test decides what is acceptable. Surviving to "end" is the point.
int Probe(const Args& args) {
  Need(args, 1, "probe NAME");
  const std::string& name = args.positional[0];
  auto step = [](const std::string& what, const Status& status, const std::string& extra = "") {
    Say("step " + what + " " + Describe(status) + (extra.empty() ? "" : " " + extra));
  };
  Say("begin inspect");
  Result<DictStatus> inspected = LocalCatalog().Inspect(name);
  step("inspect", inspected.status());

  Say("begin open");
  Options options = BaseOptions(name, args);
  options.lock_timeout = milliseconds(2000);
  Result<Dict> opened = Dict::Open(options);
  step("open", opened.status());
  if (!opened.ok()) {
    Say("end");
    return 0;
  }
  Dict dict = std::move(*opened);
  if (args.Has("pause")) {
    Say("opened " + std::to_string(dict.revision()) + " " + std::to_string(*dict.Size()));
    ReadStdinLine();
  }

  Say("begin refresh");
  step("refresh", dict.Refresh(false));

  Say("begin reads");
  const uint64_t size = *dict.Size();
  const std::vector<std::string> keys = *dict.Keys();
  const std::map<std::string, Value> items = dict.Export();
  uint64_t visited = 0;
  dict.ForEach([&](std::string_view, ValueView) { ++visited; });
  uint64_t wrong = 0;
  const std::string prefix = args.Str("prefix");
  for (const std::string& key : keys) {
    std::optional<Value> v = *dict.Get(key);
    std::optional<ParsedKey> parsed = ParseKey(key);
    if (!prefix.empty() && parsed && parsed->prefix == prefix &&
        (!v || !ValueMatchesIndex(v->view(), parsed->index))) {
      ++wrong;
    }
  }
  step("reads", Status(),
       "size=" + std::to_string(size) + " keys=" + std::to_string(keys.size()) +
           " items=" + std::to_string(items.size()) + " visited=" + std::to_string(visited) +
           " wrong=" + std::to_string(wrong));

  Say("begin refresh-force");
  step("refresh-force", dict.Refresh(true));

  Say("begin watch");
  {
    Result<std::unique_ptr<Watcher>> watcher = dict.Watch(0);
    step("watch", watcher.ok() ? (*watcher)->Next(1 << 20, std::chrono::nanoseconds(0)).status()
                               : watcher.status());
  }

  Say("begin status");
  const DictStatus status = dict.GetStatus();
  step("status", Status(), "revision=" + std::to_string(status.revision));

  Say("begin write");
  step("write", dict.Set(KeyFor("probe", 0), ValueFor(0, 0)).status());

  Say("begin dump");
  step("dump", dict.Dump().status());

  Say("begin close");
  step("close", dict.Close());
  Say("end");
  return 0;
}

}  // namespace
}  // namespace shmdict::testing

int main(int argc, char** argv) {
  using namespace shmdict::testing;  // NOLINT: a program's main, not a header
  // Die with the test: a worker blocked forever (lockhold) must not outlive a crashed test.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc < 2) Fail("usage: shmdict_worker COMMAND ARGS...");
  Args args;
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.starts_with("--")) {
      const size_t eq = a.find('=');
      args.flags[std::string(a.substr(2, eq == std::string_view::npos ? a.npos : eq - 2))] =
          eq == std::string_view::npos ? "" : std::string(a.substr(eq + 1));
    } else {
      args.positional.emplace_back(a);
    }
  }
  const std::map<std::string_view, std::function<int(const Args&)>> commands = {
      {"incr", Incr},         {"write", Write},
      {"lockrmw", LockRmw},   {"lockhold", LockHold},
      {"lockwait", LockWait}, {"trylock", TryLock},
      {"watch", Watch},       {"refresh-observe", RefreshObserve},
      {"dump", Dump},         {"churn", Churn},
      {"bigvalue", BigValue}, {"bigvalue-loop", BigValueLoop},
      {"nested", Nested},     {"open", OpenMode},
      {"wait", Wait},         {"set", SetOne},
      {"probe", Probe},       {"replica", Replica},
  };
  auto it = commands.find(argv[1]);
  if (it == commands.end()) Fail(std::string("unknown command ") + argv[1]);
  return it->second(args);
}
