#include "shmdict/replica_feed.h"

#include <unistd.h>

#include <chrono>
#include <utility>

#include "dict_impl.h"
#include "replica_block.h"
#include "robust_lock.h"

namespace shmdict {

using internal::ReplicaBlock;

// The feed's own handle: its writer-lock token is the dict's owner_token, and the liveness lock
// behind that token (robust_lock.h's HolderIdentity, an OFD lock the kernel drops with the
// process, in any pid namespace) is what says whether the feed lives. The writer lock already
// needs exactly that answer for a dead holder; a second mechanism (a pid, a heartbeat) would be
// wrong across pid namespaces or slow to notice a death.
class ReplicaFeed::Impl {
 public:
  explicit Impl(Dict handle) : dict(std::move(handle)) {}
  Dict dict;
  uint64_t upstream = 0;  // the upstream revision held, as the last Adopt or Apply left it
};

namespace {

Status CheckText(std::string_view dict, std::string_view what, std::string_view text,
                 size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Status(StatusCode::kInvalidArgument,
                  "dict " + QuoteForMessage(dict) + ": the replica's " + std::string(what) +
                      " is " + std::to_string(text.size()) + " bytes, more than " +
                      std::to_string(max_bytes));
  }
  for (char c : text) {
    if (c < 0x20 || c > 0x7e) {
      return Status(StatusCode::kInvalidArgument,
                    "dict " + QuoteForMessage(dict) + ": the replica's " + std::string(what) + " " +
                        QuoteForMessage(text) + " is not printable ASCII");
    }
  }
  return Status::Ok();
}

uint64_t NowUnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Result<ReplicaFeed> ReplicaFeed::Adopt(Dict& dict, const ReplicaMarker& marker,
                                       ReplicaResumePoint* resume_point) {
  if (!dict.impl_ || dict.impl_->is_closed()) std::abort();  // as every call on a closed Dict
  const Dict::Impl& given = *dict.impl_;
  Status s = CheckText(given.name, "upstream description", marker.description,
                       ReplicaMarker::kMaxUpstreamBytes);
  if (!s.ok()) return s;
  // A handle of the feed's own, so that the caller's may close and the token is the feed's alone.
  Options options = given.options;
  options.name = given.name;
  options.create_mode = CreateMode::kMustAttach;
  options.auto_unlink = false;
  auto own = Dict::OpenWithNameRules(options, /*allow_nested_child_name=*/true);
  if (!own.ok()) return own.status();
  if (own->incarnation() != given.incarnation) {
    return Status(StatusCode::kAborted, "dict " + QuoteForMessage(given.name) +
                                            " was unlinked and created again while being "
                                            "adopted as a replica: retry");
  }
  auto impl = std::make_unique<Impl>(std::move(*own));
  Dict::Impl& d = *impl->dict.impl_;
  s = d.AcquireWriteLock(d.options.lock_timeout);
  if (!s.ok()) return s;
  struct Unlock {
    Dict::Impl* impl;
    ~Unlock() { impl->ReleaseWriteLock(); }
  } unlock{&d};
  s = d.CatchUp(false);
  if (!s.ok()) return s;

  ReplicaBlock& r = d.header->replica;
  const uint64_t committed = d.view.revision;
  const uint64_t me = d.writer_lock.identity().token();
  const uint64_t owner = r.owner_token.load(std::memory_order_acquire);
  if (owner != 0 && owner != me && internal::HolderTokenIsAlive(d.fd.get(), owner)) {
    return Status(StatusCode::kAlreadyExists,
                  "dict " + QuoteForMessage(d.name) +
                      " is already kept by a live shmdict-replica (pid " +
                      std::to_string(r.owner_pid.load(std::memory_order_relaxed)) +
                      " in its pid namespace) as a replica of " + internal::ReadTexts(r).upstream);
  }
  if (owner == 0) {
    // Never a replica: nothing in the block counts until owner_token is stored, last.
    r.pending_upstream.store(0, std::memory_order_relaxed);
    r.pending_local.store(committed, std::memory_order_relaxed);
    r.applied_upstream.store(0, std::memory_order_relaxed);
    r.applied_local.store(committed, std::memory_order_relaxed);
    r.upstream_identity.store(0, std::memory_order_relaxed);
    r.last_contact_unix_ms.store(0, std::memory_order_relaxed);
  } else {
    // A dead feed's dict: its upstream revision stands when the upstream is the same. Reset
    // before the description changes, so that a death in between never pairs the new upstream
    // with the old one's revision.
    internal::NormalizePairs(&r, committed);
    if (internal::ReadTexts(r).upstream != marker.description) {
      internal::RecordWithoutCommit(&r, 0, committed);
      r.upstream_identity.store(0, std::memory_order_relaxed);
    }
  }
  // The listen address is the new feed's to set (the dead one's may be gone).
  internal::WriteTexts(&r, marker.description, "");
  r.upstream_connected.store(0, std::memory_order_relaxed);
  r.owner_pid.store(static_cast<uint32_t>(getpid()), std::memory_order_relaxed);
  r.owner_token.store(me, std::memory_order_release);

  impl->upstream = internal::UpstreamOfCommitted(r, committed);
  if (resume_point != nullptr) {
    resume_point->upstream_revision = impl->upstream;
    resume_point->upstream_identity = r.upstream_identity.load(std::memory_order_relaxed);
    resume_point->local_revision = committed;
  }
  return ReplicaFeed(std::move(impl));
}

ReplicaFeed::ReplicaFeed(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaFeed::ReplicaFeed(ReplicaFeed&&) noexcept = default;
ReplicaFeed& ReplicaFeed::operator=(ReplicaFeed&&) noexcept = default;

ReplicaFeed::~ReplicaFeed() {
  if (!impl_) return;
  // Its handle closes next, and with it the liveness lock that status checks; clearing the flag
  // too says "not connected" to anything that reads only the flag.
  Dict::Impl& d = *impl_->dict.impl_;
  if (!d.is_closed() && !d.writer_lock.inherited_through_fork() &&
      d.header->replica.owner_token.load(std::memory_order_acquire) ==
          d.writer_lock.identity().token()) {
    d.header->replica.upstream_connected.store(0, std::memory_order_relaxed);
  }
}

Result<uint64_t> ReplicaFeed::Apply(const std::vector<Change>& changes,
                                    uint64_t upstream_revision) {
  const internal::FeedCommit feed{.upstream_revision = upstream_revision};
  auto applied = impl_->dict.impl_->ApplyChanges(changes, &feed);
  if (applied.ok()) impl_->upstream = upstream_revision;
  return applied;
}

Result<uint64_t> ReplicaFeed::ApplyRestartedHistory(const std::vector<Change>& changes,
                                                    uint64_t upstream_revision) {
  const internal::FeedCommit feed{.upstream_revision = upstream_revision,
                                  .history_restarted = true};
  auto applied = impl_->dict.impl_->ApplyChanges(changes, &feed);
  if (applied.ok()) impl_->upstream = upstream_revision;
  return applied;
}

uint64_t ReplicaFeed::upstream_revision() const { return impl_->upstream; }

Status ReplicaFeed::UnderLockAsOwner(const std::function<void()>& store) {
  Dict::Impl& d = *impl_->dict.impl_;
  Status s = d.AcquireWriteLock(d.options.lock_timeout);
  if (!s.ok()) return s;
  if (d.header->replica.owner_token.load(std::memory_order_acquire) !=
      d.writer_lock.identity().token()) {
    s = Status(StatusCode::kFailedPrecondition,
               "dict " + QuoteForMessage(d.name) +
                   ": this replica feed no longer owns the dict (another shmdict-replica "
                   "adopted it)");
  } else {
    store();
  }
  d.ReleaseWriteLock();
  return s;
}

Status ReplicaFeed::SetUpstreamIdentity(uint64_t identity) {
  ReplicaBlock& r = impl_->dict.impl_->header->replica;
  return UnderLockAsOwner([&] { r.upstream_identity.store(identity, std::memory_order_release); });
}

Status ReplicaFeed::SetListen(std::string_view address) {
  Dict::Impl& d = *impl_->dict.impl_;
  Status s = CheckText(d.name, "--listen address", address, sizeof(ReplicaBlock::listen) - 1);
  if (!s.ok()) return s;
  ReplicaBlock& r = d.header->replica;
  // Under the lock: the texts have one writer at a time (status readers use the seqlock).
  return UnderLockAsOwner(
      [&] { internal::WriteTexts(&r, internal::ReadTexts(r).upstream, address); });
}

void ReplicaFeed::SetContact(bool connected) {
  ReplicaBlock& r = impl_->dict.impl_->header->replica;
  if (connected) r.last_contact_unix_ms.store(NowUnixMs(), std::memory_order_relaxed);
  r.upstream_connected.store(connected ? 1 : 0, std::memory_order_relaxed);
}

}  // namespace shmdict
