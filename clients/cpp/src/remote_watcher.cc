#include "remote_watcher.h"

#include <algorithm>
#include <random>

#include "shmdict/v1/wire.h"

namespace shmdict::client {

namespace {
// Batches waiting for the caller; beyond this the reader stops reading and gRPC's flow control
// holds the bridge back (which then resyncs this stream from a snapshot if the log laps it).
constexpr size_t kMaxQueuedBatches = 8;

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

RemoteWatcher::RemoteWatcher(std::shared_ptr<const Connection> connection, uint64_t after_revision,
                             uint32_t max_changes_per_message, bool from_current, Sink sink)
    : connection_(std::move(connection)),
      max_changes_per_message_(max_changes_per_message),
      from_current_(from_current),
      sink_(std::move(sink)),
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

bool RemoteWatcher::Backoff(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  return !changed_.wait_for(lock, wait, [&] { return cancelled_; });
}

void RemoteWatcher::Run() {
  const RemoteOptions& options = connection_->options;
  std::mt19937_64 random(std::random_device{}());
  std::chrono::milliseconds backoff = options.initial_backoff;
  bool first_connection = true;
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
    while (!cancelled && stream->Read(&message)) {
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
    if (cancelled) context.TryCancel();
    grpc::Status status = stream->Finish();
    connected_.store(false, std::memory_order_release);
    {
      std::lock_guard lock(mu_);
      live_context_ = nullptr;
      if (cancelled_) return;
    }
    if (IsTerminal(status.error_code())) {
      Deliver(connection_->Describe(status));
      std::lock_guard lock(mu_);
      ended_ = true;
      return;
    }
    if (status.error_code() == grpc::StatusCode::ABORTED) {
      // The dict was deleted and created again: its revisions started over. Resync from a
      // snapshot of the new one.
      resume_after_ = 0;
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
