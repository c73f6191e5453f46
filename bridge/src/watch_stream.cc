#include "watch_stream.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "log_text.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {

namespace {
// Bytes an entry adds to a message beyond its key and value (tags, lengths).
constexpr size_t kPerItemOverhead = 32;
}  // namespace

WatchStream::WatchStream(DictRegistry* registry, const StreamLimits& limits,
                         const Authorizer* authorizer, Metrics* metrics,
                         grpc::CallbackServerContext& context, WaitingCalls* waiting)
    : registry_(registry),
      limits_(limits),
      authorizer_(authorizer),
      metrics_(metrics),
      call_(metrics, "Watch"),
      peer_(LogText(context.peer())),
      context_(&context) {
  // gRPC hands this reactor to its other threads through synchronization ThreadSanitizer cannot
  // see (libgrpc is uninstrumented), so the notifier's first Pump looked like a race with this
  // constructor's writes (the vtable pointers). Releasing mu_ here, which Start() acquires before
  // subscribing, makes the publication visible; it costs one uncontended lock per stream.
  { std::lock_guard publish(mu_); }
  // Writes are not asked for: a read-only token may watch. The generation is read first: a
  // reload racing this check makes the first poke check the token again.
  const uint64_t generation = authorizer_->generation();
  Access granted = Access::kRead;
  std::string token;
  grpc::Status allowed = authorizer_->Authenticate(context, &granted, &token);
  WaitingCalls::Slot slot;
  if (allowed.ok() && waiting != nullptr) {
    Result<WaitingCalls::Slot> entered = waiting->Enter("Watch");
    if (entered.ok()) {
      slot = std::move(*entered);
    } else {
      allowed = wire::ToGrpc(entered.status());
    }
  }
  {
    std::lock_guard lock(mu_);  // what gRPC's and the registry's threads read is set under mu_
    if (!allowed.ok()) {
      spdlog::info("Watch refused peer={}: {}", peer_, allowed.error_message());
      FinishLocked(allowed);
      return;
    }
    token_ = std::move(token);
    token_generation_ = generation;
    slot_ = std::move(slot);
    start_deadline_ = std::chrono::steady_clock::now() + limits_.start_timeout;
  }
  // Outside mu_: the registry pokes tracked streams holding its own lock, which then takes mu_.
  if (!registry_->Track(this)) {
    std::lock_guard lock(mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the bridge is shutting down"));
    return;
  }
  StartRead(&request_bytes_);
}

void WatchStream::OnReadDone(bool ok) {
  std::unique_lock lock(mu_);
  // A message that does not parse counts as a failed read, as it does on a typed method.
  if (ok) {
    ok = grpc::SerializationTraits<v1::WatchRequest>::Deserialize(&request_bytes_, &request_).ok();
  }
  // !ok: the client half-closed (it has nothing more to ask), the call ended, or a message did
  // not parse. A started stream keeps sending; one that never started has nothing to send.
  if (!ok) {
    if (!started_) {
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the Watch ended, or its first message did not parse, before a "
                                "`start` message"));
    }
    return;
  }
  if (finished_ || finish_after_write_) return;
  if (request_.has_start()) {
    if (started_) {
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "dict '" + dict_name_ + "': the stream was already started"));
      return;
    }
    const v1::WatchRequest::Start start = request_.start();
    lock.unlock();  // Start attaches the dict and subscribes, which may call End (mu_).
    Status started = Start(start);
    lock.lock();
    if (!started.ok()) {
      FinishLocked(wire::ToGrpc(started));
      return;
    }
  } else if (request_.has_progress()) {
    if (!started_) {
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the first message of a Watch must be `start`"));
      return;
    }
    progress_requested_ = true;
  } else {
    FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "a WatchRequest must carry `start` or `progress`"));
    return;
  }
  if (finished_ || finish_after_write_) return;
  PumpLocked();
  StartRead(&request_bytes_);
}

Status WatchStream::Start(const v1::WatchRequest::Start& start) {
  // As Authorizer::Check does for the unary calls: the name first (the token was checked when
  // the stream opened).
  if (Status valid = Dict::ValidateAttachName(start.dict()); !valid.ok()) {
    spdlog::info("Watch refused dict={} peer={}: invalid name", LogText(start.dict()), peer_);
    return valid;
  }
  if (!authorizer_->DictAllowed(start.dict())) {
    spdlog::info("Watch refused dict={} peer={}: not in the --dict list", LogText(start.dict()),
                 peer_);
    return wire::FromGrpc(authorizer_->CheckDict(start.dict()));
  }
  Result<DictRegistry::Lease> lease = registry_->Acquire(start.dict());
  if (!lease.ok()) return lease.status();
  Dict& dict = lease->dict();
  const uint64_t current = dict.revision();
  const uint64_t after = start.from_current() ? current : start.after_revision();
  if (after > current && after - current > kWatchStartHorizon) {
    return Status(StatusCode::kOutOfRange,
                  "dict '" + LogText(start.dict()) + "': after_revision " + std::to_string(after) +
                      " is more than 2^32 revisions ahead of the dict's revision " +
                      std::to_string(current));
  }
  Result<std::unique_ptr<Watcher>> watcher = dict.Watch(after);
  if (!watcher.ok()) return watcher.status();
  // A start ahead of the dict waits for it: what was "sent" is only what the dict has committed,
  // so that no progress message claims a revision the dict has not reached.
  const uint64_t sent = std::min(after, std::max(current, dict.revision()));
  const std::shared_ptr<DictEntry> entry = lease->entry();
  {
    std::lock_guard lock(mu_);
    // Goes out with the first message (nothing was written yet: PumpLocked waits for started_),
    // so that a client can tell this dict from one that had its name before (wire.h). Not once
    // the stream finished (a shutdown meanwhile): gRPC may be sending the metadata already.
    if (!finished_ && !finish_after_write_) {
      context_->AddInitialMetadata(std::string(wire::kIncarnationMetadata),
                                   std::to_string(entry->incarnation));
    }
    dict_name_ = start.dict();
    watcher_ = std::move(*watcher);
    entry_ = entry;
    lease_.emplace(std::move(*lease));
    start_after_ = after;
    watch_limits_.max_changes = start.max_changes_per_message() ? start.max_changes_per_message()
                                                                : limits_.default_max_changes;
    watch_limits_.max_bytes = limits_.batch_bytes;
    progress_interval_ = start.progress_interval_ms()
                             ? std::max(std::chrono::milliseconds(start.progress_interval_ms()),
                                        limits_.min_progress_interval)
                             : limits_.default_progress_interval;
    sent_revision_ = sent;
    published_sent_revision_.store(sent, std::memory_order_relaxed);
    progress_requested_ = start.from_current();
    last_sent_ = std::chrono::steady_clock::now();
    started_ = true;
  }
  spdlog::info("watch started dict={} peer={} after_revision={}", LogText(start.dict()), peer_,
               after);
  // Until pump_ is set the stream reads on its own watcher; the first Pump after it joins the
  // window if the stream is at a revision it covers.
  const WatchPump::Limits pump_limits{limits_.max_message_bytes, limits_.batch_bytes,
                                      limits_.default_max_changes, limits_.window_bytes};
  std::shared_ptr<WatchPump> pump = registry_->SubscribeWatch(entry, this, pump_limits);
  std::lock_guard lock(mu_);
  // A pump started by a stream with other limits makes other messages: read on our own.
  if (pump && pump->limits() == pump_limits &&
      watch_limits_.max_changes >= pump_limits.max_changes) {
    pump_ = std::move(pump);
  }
  return Status::Ok();
}

void WatchStream::Pump() {
  std::lock_guard lock(mu_);
  PumpLocked();
}

void WatchStream::PumpLocked() {
  if (finished_ || finish_after_write_) return;
  if (!CredentialsValidLocked()) return;
  if (!started_) {
    if (std::chrono::steady_clock::now() >= start_deadline_) {
      FinishLocked(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                "no `start` message within " +
                                    std::to_string(limits_.start_timeout.count()) +
                                    " ms of opening the Watch"));
    }
    return;
  }
  if (write_in_flight_) return;
  if (!FillLocked()) return;
  published_sent_revision_.store(sent_revision_, std::memory_order_relaxed);
  if (metrics_ != nullptr) metrics_->AddBytesSent(out_.Length());
  write_in_flight_ = true;
  last_sent_ = std::chrono::steady_clock::now();
  StartWrite(&out_);
}

bool WatchStream::CredentialsValidLocked() {
  const uint64_t generation = authorizer_->generation();
  if (generation == token_generation_) return true;
  token_generation_ = generation;
  grpc::Status valid = authorizer_->Revalidate(token_, Access::kRead);
  if (valid.ok()) return true;
  spdlog::info("watch ended dict={} peer={}: {}", LogText(dict_name_), peer_,
               valid.error_message());
  FinishLocked(valid);
  return false;
}

bool WatchStream::FillLocked() {
  TryJoinLocked();
  if (shared_) {
    switch (FillSharedLocked()) {
      case Shared::kReady:
        return true;
      case Shared::kIdle:
        return false;
      case Shared::kBehind:
        if (!LeaveWindowLocked()) return false;
        break;
    }
  }
  return FillOwnLocked();
}

void WatchStream::TryJoinLocked() {
  if (!pump_ || shared_ || in_snapshot_ || skip_ > 0) return;
  // Only at a revision boundary the stream reached completely, with nothing read but unsent.
  if (pending_next_ < pending_.changes.size() || sent_revision_ < start_after_) return;
  if (!pump_->Join(sent_revision_, &cursor_)) return;
  shared_ = true;
  if (entry_) entry_->watch_joins.fetch_add(1, std::memory_order_relaxed);
  fragment_sent_ = 0;
  pending_ = ChangeBatch();
  pending_next_ = 0;
  watcher_.reset();
  lease_.reset();  // the handle goes back to the dict's pool
  // Protobuf keeps a cleared message's allocations for reuse: a stream that caught up on its own
  // with large messages would keep them for its life.
  response_ = v1::WatchResponse();
}

bool WatchStream::LeaveWindowLocked() {
  shared_ = false;
  if (entry_) entry_->watch_leaves.fetch_add(1, std::memory_order_relaxed);
  Result<DictRegistry::Lease> lease = registry_->Reacquire(entry_);
  Result<std::unique_ptr<Watcher>> watcher = lease.ok()
                                                 ? lease->dict().Watch(sent_revision_)
                                                 : Result<std::unique_ptr<Watcher>>(lease.status());
  if (!watcher.ok()) {
    spdlog::warn("watch ended dict={} peer={} revision={}: {}", LogText(dict_name_), peer_,
                 sent_revision_, watcher.status().ToString());
    FinishLocked(wire::ToGrpc(watcher.status()));
    return false;
  }
  lease_.emplace(std::move(*lease));
  watcher_ = std::move(*watcher);
  skip_ = fragment_sent_;
  fragment_sent_ = 0;
  spdlog::debug("watch fell behind the window dict={} peer={} revision={}", LogText(dict_name_),
                peer_, sent_revision_);
  return true;
}

WatchStream::Shared WatchStream::FillSharedLocked() {
  for (;;) {
    WatchFrame frame;
    uint64_t head = 0;
    switch (pump_->Next(&cursor_, &frame, &head)) {
      case WatchPump::Take::kBehind:
        return Shared::kBehind;
      case WatchPump::Take::kNone:
        if (!ProgressDueLocked()) return Shared::kIdle;
        FillProgressLocked(head);
        SerializeLocked();
        return Shared::kReady;
      case WatchPump::Take::kFrame:
        break;
    }
    // Frames before the revision the stream joined at (or started after) carry nothing new.
    if (frame.last_revision <= sent_revision_) {
      if (!frame.more_fragments) sent_revision_ = std::max(sent_revision_, frame.complete);
      continue;
    }
    // The window is gap-free: only a stream that joined inside a frame is past its start.
    if (frame.after > sent_revision_) return Shared::kBehind;
    size_t count = frame.changes;
    if (frame.after < sent_revision_) {
      // Joined inside this frame: its changes after sent_revision_, encoded for this stream once.
      if (!grpc::SerializationTraits<v1::WatchResponse>::Deserialize(&frame.bytes, &response_)
               .ok()) {
        return Shared::kBehind;  // never expected (the pump encoded it): read on our own
      }
      auto* changes = response_.mutable_changes();
      int sent = 0;
      while (sent < changes->size() && changes->Get(sent).revision() <= sent_revision_) ++sent;
      changes->DeleteSubrange(0, sent);
      count = static_cast<size_t>(changes->size());
      response_.set_revision(std::max(sent_revision_, frame.complete));
      SerializeLocked();
    } else {
      out_ = std::move(frame.bytes);
    }
    if (!frame.more_fragments) {
      fragment_sent_ = 0;
    } else if (frame.starts_mid_revision && frame.changes == frame.last_revision_changes) {
      fragment_sent_ += frame.last_revision_changes;  // another fragment of the same revision
    } else {
      fragment_sent_ = frame.last_revision_changes;
    }
    sent_revision_ = std::max(sent_revision_, frame.complete);
    if (entry_) entry_->changes_sent.fetch_add(count, std::memory_order_relaxed);
    return Shared::kReady;
  }
}

bool WatchStream::ProgressDueLocked() const {
  return progress_requested_ || std::chrono::steady_clock::now() - last_sent_ >= progress_interval_;
}

void WatchStream::FillProgressLocked(uint64_t revision) {
  progress_requested_ = false;
  response_.Clear();
  response_.set_kind(v1::WatchResponse::KIND_PROGRESS);
  sent_revision_ = std::max(sent_revision_, revision);
  response_.set_revision(sent_revision_);
}

bool WatchStream::SerializeLocked() {
  bool own_buffer = false;
  out_.Clear();
  grpc::SerializationTraits<v1::WatchResponse>::Serialize(response_, &out_, &own_buffer)
      .IgnoreError();
  return true;
}

bool WatchStream::FillOwnLocked() {
  if (pending_next_ < pending_.changes.size()) {
    FillChangesLocked();
    return SerializeLocked();
  }
  Result<ChangeBatch> batch = watcher_->Next(watch_limits_, std::chrono::nanoseconds::zero());
  if (!batch.ok()) {
    Status failed = batch.status();
    spdlog::warn("watch ended dict={} peer={} revision={}: {}", LogText(dict_name_), peer_,
                 sent_revision_, failed.ToString());
    FinishLocked(wire::ToGrpc(failed));
    return false;
  }
  if (batch->is_snapshot) {
    skip_ = 0;  // the snapshot replaces the client's copy, the half-sent revision included
    FillSnapshotLocked(*batch);
    return SerializeLocked();
  }
  if (!batch->changes.empty()) {
    pending_ = std::move(*batch);
    pending_next_ = 0;
    // The changes of a revision the window already sent in part: the rest only.
    for (; skip_ > 0 && pending_next_ + 1 < pending_.changes.size() &&
           pending_.changes[pending_next_].revision == sent_revision_ + 1;
         --skip_) {
      ++pending_next_;
    }
    skip_ = 0;
    FillChangesLocked();
    return SerializeLocked();
  }
  if (ProgressDueLocked()) {
    FillProgressLocked(watcher_->revision());
    return SerializeLocked();
  }
  return false;
}

void WatchStream::FillChangesLocked() {
  const EncodedChanges encoded =
      EncodeChanges(&pending_, &pending_next_, limits_.max_message_bytes, &response_);
  if (entry_) entry_->changes_sent.fetch_add(encoded.count, std::memory_order_relaxed);
  sent_revision_ = std::max(sent_revision_, encoded.complete);
  response_.set_revision(sent_revision_);
}

void WatchStream::FillSnapshotLocked(const ChangeBatch& batch) {
  response_.Clear();
  response_.set_kind(v1::WatchResponse::KIND_SNAPSHOT);
  response_.set_snapshot_begins(batch.snapshot_begins);
  response_.set_snapshot_ends(batch.snapshot_ends);
  response_.set_snapshot_revision(batch.snapshot_revision);
  in_snapshot_ = !batch.snapshot_ends;
  for (const auto& [key, value] : batch.snapshot_items) {
    if (value.data().size() + key.size() + kPerItemOverhead > limits_.max_message_bytes) {
      v1::Change* marker = response_.add_snapshot_too_large();
      marker->set_op(v1::OP_SET);
      marker->set_key(key);
      marker->set_value_too_large(true);
      marker->set_value_size(value.data().size());
      marker->set_value_type(static_cast<uint32_t>(value.type()));
      continue;
    }
    v1::Entry* entry = response_.add_snapshot_entries();
    entry->set_key(key);
    wire::ToProto(value, entry->mutable_value());
  }
  if (batch.snapshot_ends) {
    sent_revision_ = batch.revision;
    spdlog::info("watch resynced dict={} peer={} revision={}", LogText(dict_name_), peer_,
                 batch.snapshot_revision);
  }
  response_.set_revision(sent_revision_);
}

void WatchStream::OnWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  write_in_flight_ = false;
  out_.Clear();  // an idle stream holds no frame
  if (finish_after_write_) {
    finished_ = true;
    Finish(finish_status_);
    return;
  }
  if (!ok) {
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    return;
  }
  PumpLocked();
}

void WatchStream::End(const Status& status) {
  std::lock_guard lock(mu_);
  FinishLocked(wire::ToGrpc(status));
}

void WatchStream::FinishLocked(const grpc::Status& status) {
  if (finished_ || finish_after_write_) return;
  final_status_ = status;
  if (watcher_) watcher_->Cancel();
  if (write_in_flight_) {
    finish_after_write_ = true;
    finish_status_ = status;
    return;
  }
  finished_ = true;
  Finish(status);
}

void WatchStream::OnCancel() {
  std::lock_guard lock(mu_);
  FinishLocked(grpc::Status::CANCELLED);
}

void WatchStream::OnDone() {
  std::shared_ptr<DictEntry> entry;
  {
    std::lock_guard lock(mu_);
    entry = entry_;
  }
  if (entry) registry_->Unsubscribe(entry, this);
  registry_->Untrack(this);
  {
    std::lock_guard lock(mu_);
    slot_.Release();
    pump_.reset();  // the last stream's reference stops the pump, if the registry dropped it
  }
  spdlog::debug("watch done dict={} peer={} revision={}", LogText(dict_name_), peer_,
                sent_revision_);
  call_.Finish(final_status_, 0);
  delete this;
}

}  // namespace shmdict::bridge
