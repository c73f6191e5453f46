// The public Dict API: opening (create / attach / validate), the dict interface, locks, status.
// The mechanics (catch-up, commit, compaction, waits) are in dict_impl.cc.
#include "shmdict/dict.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <random>
#include <unordered_map>

#include "dict_impl.h"
#include "dict_names.h"
#include "main_segment.h"

namespace shmdict {

using internal::LocalView;
using internal::MainHeader;
using internal::OpRef;

namespace {

bool ValidNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

}  // namespace

// A message quotes a name that was valid enough to open whole (and cuts only a client's junk).
static_assert(kMaxNameLength <= kMaxQuotedBytes, "QuoteForMessage would cut valid dict names");

namespace internal {

Status ValidateDictName(std::string_view name, bool allow_nested_child) {
  auto invalid = [&](const std::string& why) {
    return Status(StatusCode::kInvalidArgument,
                  "invalid dict name " + QuoteForMessage(name) + ": " + why);
  };
  if (name.empty()) return invalid("it is empty");
  if (name.size() > kMaxNameLength) {
    return invalid("longer than " + std::to_string(kMaxNameLength) + " characters");
  }
  if (name.find('/') != std::string_view::npos) return invalid("it contains '/'");
  if (name.find("..") != std::string_view::npos) return invalid("it contains '..'");
  if (name == ".") return invalid("'.' is not a name");
  if (name.front() == '@') return invalid("it starts with '@'");
  // Every command line (the CLI's, the bridge's, a shell's) would read it as a flag.
  if (name.front() == '-') return invalid("it starts with '-'");
  if (name.find('@') != std::string_view::npos) {
    if (!allow_nested_child) return invalid("'@' is reserved for the segments a dict owns");
    // Snapshots, retired snapshots and large values are parts of a dict, never one: opening or
    // unlinking one by name would break the dict that owns it.
    if (!IsNestedChildName(name)) {
      return invalid(
          "it names one of a dict's internal segments ('@' is reserved for them and for nested "
          "children, PARENT@c and hex digits)");
    }
  }
  for (char c : name) {
    if (c != '@' && !ValidNameChar(c)) return invalid("use only letters, digits, '_', '-' and '.'");
  }
  return Status::Ok();
}

}  // namespace internal

namespace {

std::string RandomHex(size_t digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::mt19937_64 gen((uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(getpid()));
  std::string out;
  for (size_t i = 0; i < digits; ++i) out += kHex[gen() & 15];
  return out;
}

bool SameValue(const std::optional<Value>& a, ValueView* b, bool b_present) {
  if (!a.has_value() || !b_present) return !a.has_value() && !b_present;
  return a->type() == b->type && a->data() == b->data;
}

}  // namespace

Status Dict::ValidateName(std::string_view name) { return internal::ValidateDictName(name, false); }

Status Dict::ValidateAttachName(std::string_view name) {
  return internal::ValidateDictName(name, true);
}

Result<Dict> Dict::Open(const Options& options) {
  return OpenWithNameRules(options, options.create_mode == CreateMode::kMustAttach);
}

Result<Dict> Dict::OpenWithNameRules(const Options& options, bool allow_nested_child_name) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->name = options.name.empty() ? "sd-" + RandomHex(16) : options.name;
  Status valid = internal::ValidateDictName(impl->name, allow_nested_child_name);
  if (!valid.ok()) return valid;
  if (options.buffer_size > internal::kMaxLogCapacity) {
    return Status(StatusCode::kInvalidArgument,
                  "dict " + QuoteForMessage(impl->name) + ": buffer_size " +
                      std::to_string(options.buffer_size) + " exceeds the maximum of " +
                      std::to_string(internal::kMaxLogCapacity));
  }
  if ((options.mode & ~mode_t{0777}) != 0) {
    return Status(StatusCode::kInvalidArgument, "dict " + QuoteForMessage(impl->name) +
                                                    ": mode must be permission bits (0..0777)");
  }
  const uint64_t capacity =
      std::bit_ceil(std::max<uint64_t>(options.buffer_size, internal::kMinLogCapacity));
  const std::string& name = impl->name;
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (options.create_mode != CreateMode::kMustAttach) {
      auto created = internal::CreateSegment(name, internal::kHeaderSize + capacity, options.mode,
                                             /*replace_existing=*/false);
      if (created.ok()) {
        auto* h = reinterpret_cast<MainHeader*>(created->second.data());
        Status s = internal::InitializeMainHeader(h, capacity, options.mode, options.user_flags);
        if (!s.ok()) {
          internal::UnlinkSegmentQuietly(name);
          return s;
        }
        impl->fd = std::move(created->first);
        impl->map = std::move(created->second);
        impl->created = true;
        break;
      }
      if (created.status().code() != StatusCode::kAlreadyExists) {
        return Status(
            created.status().code(),
            "dict " + QuoteForMessage(name) + ": cannot create: " + created.status().message());
      }
      if (options.create_mode == CreateMode::kMustCreate) {
        return Status(StatusCode::kAlreadyExists,
                      "dict " + QuoteForMessage(name) + " already exists");
      }
    }
    auto fd = internal::OpenSegment(name, O_RDWR, 0);
    if (!fd.ok()) {
      // Unlinked between our create attempt and this open: try to create again.
      if (fd.status().code() == StatusCode::kNotFound &&
          options.create_mode == CreateMode::kAttachOrCreate) {
        continue;
      }
      if (fd.status().code() == StatusCode::kNotFound) {
        return Status(StatusCode::kNotFound, "dict " + QuoteForMessage(name) + " does not exist");
      }
      return Status(fd.status().code(),
                    "dict " + QuoteForMessage(name) + ": cannot open: " + fd.status().message());
    }
    auto map = internal::MapExistingMainSegment(name, fd->get(), true);
    if (!map.ok()) return map.status();
    impl->fd = std::move(*fd);
    impl->map = std::move(*map);
    break;
  }
  if (!impl->map.valid()) {
    return Status(
        StatusCode::kUnavailable,
        "dict " + QuoteForMessage(name) + " is being created and unlinked concurrently; retry");
  }
  // A shared flock marks "some process has this dict open" for `shmdict ls`; the kernel drops it
  // when the process dies, so it never goes stale.
  flock(impl->fd.get(), LOCK_SH | LOCK_NB);
  struct stat st {};
  if (fstat(impl->fd.get(), &st) != 0) {
    if (impl->created) internal::UnlinkSegmentQuietly(name);
    return internal::ErrnoStatus(errno, "dict " + QuoteForMessage(name) + ": fstat");
  }
  impl->incarnation = static_cast<uint64_t>(st.st_ino);
  impl->header = reinterpret_cast<MainHeader*>(impl->map.data());
  Status s = impl->Attach();
  if (!s.ok()) {
    impl->created = false;  // never unlink what we could not read
    return s;
  }
  return Dict(std::move(impl));
}

uint32_t Dict::LayoutVersion() { return internal::kLayoutVersion; }

bool Dict::MayAttach(std::string_view name) {
  if (!internal::ValidateDictName(name, true).ok()) return false;
  return faccessat(AT_FDCWD, internal::SegmentPath(name).c_str(), R_OK | W_OK, AT_EACCESS) == 0;
}

Status Dict::UnlinkByName(std::string_view name) {
  Status valid = internal::ValidateDictName(name, true);
  if (!valid.ok()) return valid;
  if (!internal::UnlinkDictSegments(name)) {
    return Status(StatusCode::kNotFound, "dict " + QuoteForMessage(name) + " does not exist");
  }
  return Status::Ok();
}

Result<uint64_t> Dict::IncarnationOf(std::string_view name) {
  Status valid = internal::ValidateDictName(name, true);
  if (!valid.ok()) return valid;
  const std::string path = internal::SegmentPath(name);
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return Status(StatusCode::kNotFound, "dict " + QuoteForMessage(name) + " does not exist");
    }
    return internal::ErrnoStatus(errno, "dict " + QuoteForMessage(name) + ": stat " + path);
  }
  return static_cast<uint64_t>(st.st_ino);
}

Dict::Dict(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Dict::Dict(Dict&& other) noexcept = default;
Dict& Dict::operator=(Dict&& other) noexcept = default;
Dict::~Dict() = default;

namespace {
// Using a closed or moved-from handle is a programming error, not a runtime condition.
Dict::Impl& Live(const std::unique_ptr<Dict::Impl>& impl) {
  if (!impl || impl->is_closed()) std::abort();
  return *impl;
}
}  // namespace

const std::string& Dict::name() const { return Live(impl_).name; }
bool Dict::created() const { return Live(impl_).created; }

uint32_t Dict::user_flags() const { return Live(impl_).header->identity.user_flags; }

bool Dict::is_replica() const {
  return Live(impl_).header->replica.owner_token.load(std::memory_order_acquire) != 0;
}

uint64_t Dict::incarnation() const { return Live(impl_).incarnation; }

Result<std::optional<Value>> Dict::Get(std::string_view key) {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  ValueView v;
  if (!d.view.Find(key, &v)) return std::optional<Value>();
  return std::optional<Value>(Value(v));
}

bool Dict::CopyValue(std::string_view key, Value* out) {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  ValueView v;
  if (!d.view.Find(key, &v)) return false;
  out->assign(v.type, v.data);
  return true;
}

Result<bool> Dict::Contains(std::string_view key) {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  ValueView v;
  return d.view.Find(key, &v);
}

Result<uint64_t> Dict::Size() {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  return d.view.Size();
}

uint64_t Dict::ForEach(const std::function<void(std::string_view key, ValueView value)>& fn) {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  d.view.ForEach(fn);
  return d.view.revision;
}

Result<std::vector<std::string>> Dict::Keys() {
  std::vector<std::string> keys;
  ForEach([&](std::string_view k, ValueView) { keys.emplace_back(k); });
  return keys;
}

Result<std::vector<std::pair<std::string, Value>>> Dict::Items() {
  std::vector<std::pair<std::string, Value>> items;
  ForEach([&](std::string_view k, ValueView v) { items.emplace_back(std::string(k), Value(v)); });
  return items;
}

std::map<std::string, Value> Dict::Export() {
  std::map<std::string, Value> out;
  ForEach([&](std::string_view k, ValueView v) { out.emplace(std::string(k), Value(v)); });
  return out;
}

Result<uint64_t> Dict::Set(std::string_view key, const Value& value) {
  return Live(impl_).Write([&](std::vector<OpRef>& ops) {
    ops.push_back({ChangeOp::kSet, value.type(), key, value.data()});
    return Status::Ok();
  });
}

Result<uint64_t> Dict::Update(const std::vector<std::pair<std::string, Value>>& items) {
  return Live(impl_).Write([&](std::vector<OpRef>& ops) {
    ops.reserve(items.size());
    for (const auto& [k, v] : items) ops.push_back({ChangeOp::kSet, v.type(), k, v.data()});
    return Status::Ok();
  });
}

Result<uint64_t> Dict::Update(const std::map<std::string, Value>& items) {
  return Live(impl_).Write([&](std::vector<OpRef>& ops) {
    for (const auto& [k, v] : items) ops.push_back({ChangeOp::kSet, v.type(), k, v.data()});
    return Status::Ok();
  });
}

Result<uint64_t> Dict::Apply(const std::vector<Change>& changes) {
  return Live(impl_).ApplyChanges(changes, nullptr);
}

Result<uint64_t> Dict::Impl::ApplyChanges(const std::vector<Change>& changes,
                                          const internal::FeedCommit* feed) {
  Impl& d = *this;
  // Whether a key is present at this point of the batch, for the keys the batch touched so far;
  // other keys are as the view has them, unless the batch cleared the dict.
  std::unordered_map<std::string_view, bool> touched;
  return d.Write(
      [&](std::vector<OpRef>& ops) {
        touched.clear();
        bool cleared = false;
        for (const Change& c : changes) {
          switch (c.op) {
            case ChangeOp::kSet:
              ops.push_back({ChangeOp::kSet, c.value.type(), c.key, c.value.data()});
              touched[c.key] = true;
              break;
            case ChangeOp::kErase: {
              bool present = false;
              if (auto it = touched.find(c.key); it != touched.end()) {
                present = it->second;
              } else if (!cleared) {
                ValueView v;
                present = d.view.Find(c.key, &v);
              }
              if (!present) break;  // erasing a missing key changes nothing
              ops.push_back({ChangeOp::kErase, ValueType::kBytes, c.key, {}});
              touched[c.key] = false;
              break;
            }
            case ChangeOp::kClear:
              ops.push_back({ChangeOp::kClear, ValueType::kBytes, {}, {}});
              // A fresh map, not clear(): clear() wipes every bucket the map ever grew, so a batch
              // of many keys and many clears would cost keys * clears.
              touched = {};
              cleared = true;
              break;
            default:
              return Status(StatusCode::kInvalidArgument,
                            "dict " + QuoteForMessage(d.name) + ": change op " +
                                std::to_string(static_cast<int>(c.op)) +
                                " is not a set, erase or clear");
          }
        }
        return Status::Ok();
      },
      feed);
}

Result<bool> Dict::Erase(std::string_view key) {
  Impl& d = Live(impl_);
  bool existed = false;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    ValueView v;
    existed = d.view.Find(key, &v);
    if (existed) ops.push_back({ChangeOp::kErase, ValueType::kBytes, key, {}});
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  return existed;
}

Result<std::optional<Value>> Dict::Pop(std::string_view key) {
  Impl& d = Live(impl_);
  std::optional<Value> old;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    ValueView v;
    if (d.view.Find(key, &v)) {
      old = Value(v);
      ops.push_back({ChangeOp::kErase, ValueType::kBytes, key, {}});
    }
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  return old;
}

Result<std::optional<std::pair<std::string, Value>>> Dict::PopItem() {
  Impl& d = Live(impl_);
  std::optional<std::pair<std::string, Value>> item;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    d.view.ForEach([&](std::string_view k, ValueView v) {
      if (!item) item.emplace(std::string(k), Value(v));
    });
    if (item) ops.push_back({ChangeOp::kErase, ValueType::kBytes, item->first, {}});
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  return item;
}

Result<Value> Dict::SetDefault(std::string_view key, const Value& default_value) {
  Impl& d = Live(impl_);
  Value result = default_value;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    ValueView v;
    if (d.view.Find(key, &v)) {
      result = Value(v);
    } else {
      ops.push_back({ChangeOp::kSet, default_value.type(), key, default_value.data()});
    }
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  return result;
}

Result<uint64_t> Dict::Clear() {
  return Live(impl_).Write([&](std::vector<OpRef>& ops) {
    ops.push_back({ChangeOp::kClear, ValueType::kBytes, {}, {}});
    return Status::Ok();
  });
}

Result<bool> Dict::CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                                 const std::optional<Value>& desired) {
  Impl& d = Live(impl_);
  bool swapped = false;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    ValueView current;
    const bool present = d.view.Find(key, &current);
    swapped = SameValue(expected, &current, present);
    if (!swapped) return Status::Ok();
    if (desired) {
      ops.push_back({ChangeOp::kSet, desired->type(), key, desired->data()});
    } else if (present) {
      ops.push_back({ChangeOp::kErase, ValueType::kBytes, key, {}});
    }
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  return swapped;
}

Result<int64_t> Dict::Increment(std::string_view key, int64_t delta) {
  Impl& d = Live(impl_);
  int64_t result = 0;
  std::string encoded;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    ValueView current;
    int64_t base = 0;
    if (d.view.Find(key, &current)) {
      std::optional<int64_t> v = Value(current).AsInt();
      if (!v) {
        return Status(StatusCode::kFailedPrecondition,
                      "dict " + QuoteForMessage(d.name) + ": key " + QuoteForMessage(key) +
                          " holds a " + TypeName(current.type) + ", not an int");
      }
      base = *v;
    }
    if (__builtin_add_overflow(base, delta, &result)) {
      return Status(StatusCode::kOutOfRange, "dict " + QuoteForMessage(d.name) +
                                                 ": incrementing key " + QuoteForMessage(key) +
                                                 " overflows int64");
    }
    encoded = Value::Int(result).data();
    ops.push_back({ChangeOp::kSet, ValueType::kInt64, key, encoded});
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  return result;
}

uint64_t Dict::last_commit_revision() const { return Live(impl_).last_commit; }

Result<Dict> Dict::OpenNested(std::string_view key) {
  Impl& d = Live(impl_);
  std::string child;
  auto r = d.Write([&](std::vector<OpRef>& ops) {
    ValueView current;
    if (d.view.Find(key, &current)) {
      if (current.type != ValueType::kNestedDict) {
        return Status(StatusCode::kFailedPrecondition,
                      "dict " + QuoteForMessage(d.name) + ": key " + QuoteForMessage(key) +
                          " holds a " + TypeName(current.type) + ", not a nested dict");
      }
      // Whoever stored a reference to another dict would make this reader open a dict it was
      // never given: only this dict's own children are followed.
      if (Status own = CheckNestedReference(d.name, current.data); !own.ok()) {
        return Status(StatusCode::kFailedPrecondition,
                      "dict " + QuoteForMessage(d.name) + ": key " + QuoteForMessage(key) +
                          " holds a nested-dict reference to " + QuoteForMessage(current.data) +
                          ", which is not one of its children: not followed (" + own.message() +
                          ")");
      }
      child = std::string(current.data);
      return Status::Ok();
    }
    // The child is named under the parent so unlinking the parent's "NAME@" prefix removes it.
    child = d.name + "@c" + RandomHex(12);
    ops.push_back({ChangeOp::kSet, ValueType::kNestedDict, key, child});
    return Status::Ok();
  });
  if (!r.ok()) return r.status();
  Options child_options = d.options;
  child_options.name = child;
  child_options.create_mode = CreateMode::kAttachOrCreate;
  child_options.auto_unlink = false;                         // it lives as long as its parent
  child_options.user_flags = d.header->identity.user_flags;  // the parent's, not this handle's
  return OpenWithNameRules(child_options, /*allow_nested_child_name=*/true);
}

Result<LockGuard> Dict::Lock() { return Lock(Live(impl_).options.lock_timeout); }

Result<LockGuard> Dict::Lock(std::chrono::milliseconds timeout) {
  Impl& d = Live(impl_);
  // A zero timeout would mean "try once"; Lock() with 0 ms behaves like TryLock.
  Status s = d.AcquireWriteLock(timeout);
  if (!s.ok()) return s;
  d.CatchUp(false).IgnoreError();
  return LockGuard(&d);
}

Result<LockGuard> Dict::TryLock() { return Lock(std::chrono::milliseconds(0)); }

LockGuard::LockGuard(LockGuard&& other) noexcept : dict_(std::exchange(other.dict_, nullptr)) {}

LockGuard& LockGuard::operator=(LockGuard&& other) noexcept {
  if (this != &other) {
    Unlock();
    dict_ = std::exchange(other.dict_, nullptr);
  }
  return *this;
}

LockGuard::~LockGuard() { Unlock(); }

void LockGuard::Unlock() {
  if (dict_ == nullptr) return;
  static_cast<Dict::Impl*>(dict_)->ReleaseWriteLock();
  dict_ = nullptr;
}

uint64_t Dict::revision() {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  return d.view.revision;
}

uint64_t Dict::published_revision() const {
  return Live(impl_).header->commit.commit_revision.load(std::memory_order_acquire);
}

Status Dict::Refresh(bool force) { return Live(impl_).CatchUp(force); }

Result<uint64_t> Dict::WaitForChange(uint64_t after_revision, std::chrono::nanoseconds timeout) {
  return Live(impl_).WaitForChange(after_revision, timeout);
}

Result<uint64_t> Dict::Dump() {
  Impl& d = Live(impl_);
  Status s = d.AcquireWriteLock(d.options.lock_timeout);
  if (!s.ok()) return s;
  s = d.CatchUp(false);
  if (s.ok()) s = d.CompactLocked();
  d.ReleaseWriteLock();
  if (!s.ok()) return s;
  return d.view.generation();
}

DictStatus Dict::GetStatus() {
  Impl& d = Live(impl_);
  d.CatchUp(false).IgnoreError();
  DictStatus st = internal::StatusFromHeader(d.name, *d.header, d.map.size(), d.fd.get());
  // The handle's own view is exact at its revision; the header's count may trail a dead writer.
  if (st.revision == d.view.revision) st.entries = d.view.Size();
  st.attached = true;
  return st;
}

Status Dict::Close() {
  if (!impl_) return Status::Ok();
  impl_->Close();
  return Status::Ok();
}

Status Dict::Unlink() { return UnlinkByName(Live(impl_).name); }

}  // namespace shmdict
