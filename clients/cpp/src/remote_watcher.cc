#include "remote_watcher.h"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <random>

#include "shmdict/v1/wire.h"

namespace shmdict::client {

namespace {
// Batches waiting for the caller; beyond this the reader stops reading and gRPC's flow control
// holds the bridge back (which then resyncs this stream from a snapshot if the log laps it).
constexpr size_t kMaxQueuedBatches = 8;
// See missing_after_replacement in Run: with the initial backoff between them.
constexpr int kMissingAfterReplacementTries = 5;

bool IsTerminal(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::DATA_LOSS:
    case grpc::StatusCode::UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}
}  // namespace

Status Connection::Describe(const grpc::Status& status) const {
  Status converted = wire::FromGrpc(status);
  if (converted.message().find("dict '" + options.dict + "'") != std::string::npos) {
    return converted;
  }
  return Status(converted.code(), description + ": " + converted.message());
}

void Connection::Prepare(grpc::ClientContext* context, std::chrono::milliseconds timeout) const {
  if (timeout.count() > 0) context->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
}

uint64_t IncarnationIn(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  // Untrusted bytes from a socket: exactly one value, all decimal digits, that fits in 64 bits;
  // anything else is "unknown". A partial parse ("12abc", "12\0...") would name a dict that no
  // bridge named; two values could name two.
  auto [first, last] = metadata.equal_range(
      grpc::string_ref(wire::kIncarnationMetadata.data(), wire::kIncarnationMetadata.size()));
  if (first == last || std::next(first) != last) return 0;
  const grpc::string_ref value = first->second;
  const char* begin = value.data();
  const char* end = begin + value.size();
  // from_chars itself takes no sign or whitespace for an unsigned type; a digit first rules out
  // the empty value too.
  if (begin == end || *begin < '0' || *begin > '9') return 0;
  uint64_t incarnation = 0;
  auto [parsed_end, error] = std::from_chars(begin, end, incarnation);
  return error == std::errc() && parsed_end == end ? incarnation : 0;
}

RemoteWatcher::RemoteWatcher(std::shared_ptr<const Connection> connection, uint64_t after_revision,
                             uint32_t max_changes_per_message, bool from_current, Sink sink,
                             OnDict on_dict)
    : connection_(std::move(connection)),
      max_changes_per_message_(max_changes_per_message),
      from_current_(from_current),
      sink_(std::move(sink)),
      on_dict_(std::move(on_dict)),
      resume_after_(after_revision),
      delivered_(after_revision) {
  reader_ = std::thread([this] { Run(); });
}

RemoteWatcher::~RemoteWatcher() {
  Cancel();
  reader_.join();
}

void RemoteWatcher::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  if (live_context_ != nullptr) live_context_->TryCancel();
  changed_.notify_all();
}

uint64_t RemoteWatcher::revision() const {
  std::lock_guard lock(mu_);
  return delivered_;
}

Result<ChangeBatch> RemoteWatcher::Next(const WatchLimits&, std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  changed_.wait_for(lock, timeout, [&] { return cancelled_ || !queue_.empty(); });
  if (cancelled_) {
    return Status(StatusCode::kCancelled, connection_->description + ": the watch was cancelled");
  }
  if (queue_.empty()) {
    ChangeBatch nothing;
    nothing.revision = delivered_;
    return nothing;
  }
  Result<ChangeBatch> batch = std::move(queue_.front());
  if (!batch.ok()) return batch;  // terminal: left queued, so every later call reports it too
  queue_.pop_front();
  delivered_ = std::max(delivered_, batch->revision);
  changed_.notify_all();
  return batch;
}

bool RemoteWatcher::Deliver(Result<ChangeBatch> batch) {
  if (sink_) {
    {
      std::lock_guard lock(mu_);
      if (cancelled_) return false;
      if (batch.ok()) delivered_ = std::max(delivered_, batch->revision);
    }
    sink_(std::move(batch));
    return true;
  }
  std::unique_lock lock(mu_);
  changed_.wait(lock, [&] { return cancelled_ || queue_.size() < kMaxQueuedBatches; });
  if (cancelled_) return false;
  queue_.push_back(std::move(batch));
  changed_.notify_all();
  return true;
}

bool RemoteWatcher::StartOn(uint64_t incarnation) {
  const bool other_dict = incarnation != 0 && incarnation_ != 0 && incarnation != incarnation_;
  // Resumed after a revision of the dict before: what this stream sends would continue the new
  // dict's revisions from there, as if they were the old one's.
  // A caller's watcher (no sink) ends on another dict even from revision 0: it was given the old
  // dict's revisions (or asked to start "from now" on it).
  if (other_dict && !replaced_ && (resume_after_ != 0 || !sink_)) return false;
  const bool replaced = replaced_ || other_dict;
  if (on_dict_ && (replaced || incarnation != incarnation_)) on_dict_(incarnation, replaced);
  if (replaced && sink_) {
    std::lock_guard lock(mu_);
    delivered_ = 0;
  }
  if (incarnation != 0 || replaced) incarnation_ = incarnation;
  replaced_ = false;
  return true;
}

Status RemoteWatcher::Replaced(uint64_t new_incarnation) const {
  const std::string old_one = incarnation_ != 0 ? std::to_string(incarnation_) : "unknown";
  const std::string which =
      new_incarnation != 0 ? old_one + " -> " + std::to_string(new_incarnation) : old_one;
  return Status(StatusCode::kAborted, connection_->description +
                                          ": the dict was deleted or replaced (incarnation " +
                                          which + "): watch it again from revision 0");
}

bool RemoteWatcher::Backoff(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  return !changed_.wait_for(lock, wait, [&] { return cancelled_; });
}

void RemoteWatcher::Run() {
  const RemoteOptions& options = connection_->options;
  std::mt19937_64 random(std::random_device{}());
  std::chrono::milliseconds backoff = options.initial_backoff;
  bool first_connection = true;
  // A caller's watcher whose stream ended with ABORTED naming no new dict: the bridge also ends
  // streams so when it merely failed to open its own handle of the dict, so the watcher resumes
  // once and lets the incarnation the bridge names decide (the same dict: it goes on).
  bool confirming_abort = false;
  // Resubscriptions after a replacement that found no dict: unlinking and creating the dict again
  // is not atomic, and the bridge can look in between; a few tries before NOT_FOUND is final.
  int missing_after_replacement = 0;
  for (;;) {
    grpc::ClientContext context;
    {
      std::lock_guard lock(mu_);
      if (cancelled_) return;
      live_context_ = &context;
    }
    connection_->Prepare(&context, std::chrono::milliseconds::zero());
    auto stream = connection_->stub->Watch(&context);
    v1::WatchRequest request;
    v1::WatchRequest::Start* start = request.mutable_start();
    start->set_dict(options.dict);
    start->set_after_revision(resume_after_);
    // Only the first connection starts "from now"; a reconnect resumes where it stopped.
    start->set_from_current(from_current_ && first_connection);
    start->set_max_changes_per_message(max_changes_per_message_);
    stream->Write(request);

    ChangeBatch assembling;  // the changes of a revision arriving in fragments
    v1::WatchResponse message;
    bool cancelled = false;
    bool first_message = true;
    bool resubscribe = false;  // the dict was replaced while away: watch the new one from 0
    uint64_t replaced_by = 0;  // with resubscribe: the new dict's incarnation
    while (!cancelled && stream->Read(&message)) {
      if (first_message) {
        first_message = false;
        // The initial metadata came with the first message.
        const uint64_t named = IncarnationIn(context.GetServerInitialMetadata());
        if (!StartOn(named)) {
          resubscribe = true;
          replaced_by = named;
          break;
        }
        confirming_abort = false;
        missing_after_replacement = 0;
      }
      connected_.store(true, std::memory_order_release);
      ever_connected_.store(true, std::memory_order_release);
      first_connection = false;
      backoff = options.initial_backoff;
      switch (message.kind()) {
        case v1::WatchResponse::KIND_CHANGES: {
          for (const v1::Change& in : message.changes()) {
            if (in.revision() <= resume_after_) continue;  // already delivered before a reconnect
            Change& change = assembling.changes.emplace_back();
            change.revision = in.revision();
            Result<ChangeOp> op = wire::FromProto(in.op());
            change.op = op.ok() ? *op : ChangeOp::kSet;
            change.key = in.key();
            if (in.value_too_large()) {
              change.value_too_large = true;
              change.value_size = in.value_size();
              change.value = Value(static_cast<ValueType>(in.value_type() & 0xFF), std::string());
            } else if (change.op == ChangeOp::kSet) {
              wire::FromProto(in.value(), &change.value).IgnoreError();
            }
          }
          if (message.more_fragments()) break;  // apply a revision only once all of it arrived
          uint64_t complete = message.revision();
          if (!assembling.changes.empty()) {
            complete = std::max(complete, assembling.changes.back().revision);
          }
          if (complete <= resume_after_ && assembling.changes.empty()) break;
          resume_after_ = std::max(resume_after_, complete);
          assembling.revision = resume_after_;
          cancelled = !Deliver(std::move(assembling));
          assembling = ChangeBatch();
          break;
        }
        case v1::WatchResponse::KIND_SNAPSHOT: {
          ChangeBatch chunk;
          chunk.is_snapshot = true;
          chunk.snapshot_begins = message.snapshot_begins();
          chunk.snapshot_ends = message.snapshot_ends();
          chunk.snapshot_revision = message.snapshot_revision();
          chunk.snapshot_items.reserve(message.snapshot_entries_size());
          for (const v1::Entry& entry : message.snapshot_entries()) {
            auto& item = chunk.snapshot_items.emplace_back(entry.key(), Value());
            wire::FromProto(entry.value(), &item.second).IgnoreError();
          }
          for (const v1::Change& marker : message.snapshot_too_large()) {
            Change& omitted = chunk.changes.emplace_back();
            omitted.key = marker.key();
            omitted.value_too_large = true;
            omitted.value_size = marker.value_size();
            omitted.value =
                Value(static_cast<ValueType>(marker.value_type() & 0xFF), std::string());
          }
          if (chunk.snapshot_ends) resume_after_ = chunk.snapshot_revision;
          chunk.revision = resume_after_;
          cancelled = !Deliver(std::move(chunk));
          break;
        }
        case v1::WatchResponse::KIND_PROGRESS:
          if (assembling.changes.empty() && message.revision() > resume_after_) {
            resume_after_ = message.revision();
            ChangeBatch progress;
            progress.revision = resume_after_;
            cancelled = !Deliver(std::move(progress));
          }
          break;
        default:
          break;  // a kind from a newer bridge: skip it, keep the stream
      }
    }
    if (cancelled || resubscribe) context.TryCancel();
    grpc::Status status = stream->Finish();
    // The dict was deleted and created again: its revisions started over; watch the new one
    // from revision 0 (a snapshot of it, or its whole log) at once. Still "connected" meanwhile,
    // so that a write's wait for the mirror (RemoteDict) waits for the new dict's stream instead
    // of giving up on a stream that is down.
    resubscribe = resubscribe || status.error_code() == grpc::StatusCode::ABORTED;
    if (!resubscribe) connected_.store(false, std::memory_order_release);
    {
      std::lock_guard lock(mu_);
      live_context_ = nullptr;
      if (cancelled_) {
        connected_.store(false, std::memory_order_release);
        return;
      }
    }
    if (status.error_code() == grpc::StatusCode::NOT_FOUND && replaced_ && sink_ &&
        missing_after_replacement < kMissingAfterReplacementTries) {
      ++missing_after_replacement;
      if (!Backoff(options.initial_backoff)) return;
      continue;
    }
    if (IsTerminal(status.error_code())) {
      Deliver(connection_->Describe(status));
      std::lock_guard lock(mu_);
      ended_ = true;
      return;
    }
    if (resubscribe && !sink_ && replaced_by == 0 && incarnation_ != 0 && !confirming_abort) {
      confirming_abort = true;
      continue;
    }
    if (resubscribe && !sink_) {
      // A caller's watcher: the revisions it was given belong to a dict that is gone, so it ends
      // here rather than go on with another dict's revisions as if they followed them.
      Deliver(Replaced(replaced_by));
      connected_.store(false, std::memory_order_release);
      std::lock_guard lock(mu_);
      ended_ = true;
      return;
    }
    if (resubscribe) {
      resume_after_ = 0;
      replaced_ = true;
      continue;
    }
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const auto wait = std::chrono::milliseconds(
        static_cast<int64_t>(static_cast<double>(backoff.count()) * jitter(random)));
    if (!Backoff(wait)) return;
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

}  // namespace shmdict::client
