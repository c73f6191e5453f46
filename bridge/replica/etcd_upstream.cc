#include "etcd_upstream.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd_txn_plan.h"
#include "key_range.h"
#include "shmdict/replica_feed.h"
#include "shmdict/v1/wire.h"
#include "value_codec.h"

namespace shmdict::replica {
namespace {

namespace pb = etcdserverpb;

// A failed Increment or PopItem compare (another writer changed the key between the read and the
// Txn) is retried this many times with a short jittered pause, then ABORTED.
constexpr int kMaxConflictRetries = 100;

// etcd's message for a stream or call refused by a member that lost its leader
// (rpctypes.ErrNoLeader); with "hasleader" metadata a Watch is cancelled with it instead of
// going silent.
constexpr std::string_view kNoLeader = "no leader";

Status FromGrpc(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return Status();
  Status converted = wire::FromGrpc(status);
  return Status(converted.code(), std::string(what) + ": " + converted.message());
}

// Errors that prove a request reached no member that could apply it.
bool NeverSent(const grpc::Status& status) {
  const std::string& message = status.error_message();
  return message.find(kNoLeader) != std::string::npos ||
         message.find("failed to connect") != std::string::npos ||
         message.find("Connection refused") != std::string::npos;
}

bool MovesToNextEndpoint(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         status.error_message().find(kNoLeader) != std::string::npos;
}

Result<std::string> ReadFile(const std::string& path, std::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(StatusCode::kInvalidArgument, std::string(flag) + ": cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The connection to the cluster: channels, failover and the auth token.
class EtcdClient {
 public:
  static Result<std::shared_ptr<EtcdClient>> Make(const EtcdOptions& options) {
    if (options.endpoints.empty()) {
      return Status(StatusCode::kInvalidArgument, "--etcd: no endpoint given");
    }
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!options.tls_ca.empty() || !options.tls_cert.empty() || !options.tls_key.empty()) {
      grpc::SslCredentialsOptions ssl;
      if (!options.tls_ca.empty()) {
        auto ca = ReadFile(options.tls_ca, "--etcd-ca");
        if (!ca.ok()) return ca.status();
        ssl.pem_root_certs = *ca;
      }
      if (options.tls_cert.empty() != options.tls_key.empty()) {
        return Status(StatusCode::kInvalidArgument, "--etcd-cert and --etcd-key go together");
      }
      if (!options.tls_cert.empty()) {
        auto cert = ReadFile(options.tls_cert, "--etcd-cert");
        if (!cert.ok()) return cert.status();
        auto key = ReadFile(options.tls_key, "--etcd-key");
        if (!key.ok()) return key.status();
        ssl.pem_cert_chain = *cert;
        ssl.pem_private_key = *key;
      }
      credentials = grpc::SslCredentials(ssl);
    }
    auto client = std::shared_ptr<EtcdClient>(new EtcdClient(options));
    for (const std::string& endpoint : options.endpoints) {
      grpc::ChannelArguments arguments;
      // etcd 3.4's server enforces a 5 s minimum ping interval and no pings without a call
      // (embed/etcd.go): pinging more often gets the connection closed with "too_many_pings".
      arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
      arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
      arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
      arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
      arguments.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
      arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
      auto channel = grpc::CreateCustomChannel(endpoint, credentials, arguments);
      client->kv_.push_back(pb::KV::NewStub(channel));
      client->watch_.push_back(pb::Watch::NewStub(channel));
      client->auth_.push_back(pb::Auth::NewStub(channel));
    }
    return client;
  }

  const EtcdOptions& options() const { return options_; }
  size_t endpoint_count() const { return kv_.size(); }
  size_t current() const { return current_.load(std::memory_order_relaxed); }
  void MoveOnFrom(size_t failed) {
    size_t expected = failed;
    current_.compare_exchange_strong(expected, (failed + 1) % kv_.size());
  }
  pb::KV::Stub& kv(size_t i) { return *kv_[i]; }
  pb::Watch::Stub& watch(size_t i) { return *watch_[i]; }

  void Decorate(grpc::ClientContext& context, bool with_deadline) {
    if (with_deadline) {
      context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
    }
    std::lock_guard lock(token_mu_);
    if (!token_.empty()) context.AddMetadata("token", token_);
  }

  // Runs `call(stub, context)` on the current endpoint, then on each other one while the failure
  // is one that another member may not have; authenticates first (and again when etcd says the
  // token expired). A request that is not `idempotent` (a DeleteRange or Txn whose answer depends
  // on the state it met) moves on only when it provably never reached a member ("no leader",
  // no connection): after a timeout or a dropped connection etcd may have applied it, and
  // sending it again would answer wrongly (an Increment twice, a Pop finding nothing). Then it
  // fails with UNAVAILABLE saying the outcome is unknown, as etcd's own client does.
  template <typename Call>
  grpc::Status Run(Call&& call, bool idempotent = true) {
    grpc::Status last;
    for (size_t attempt = 0; attempt < kv_.size(); ++attempt) {
      const size_t endpoint = current();
      Status auth = EnsureToken(endpoint, /*renew=*/false);
      if (!auth.ok()) {
        last = wire::ToGrpc(auth);
        MoveOnFrom(endpoint);
        continue;
      }
      grpc::ClientContext context;
      Decorate(context, /*with_deadline=*/true);
      last = call(kv(endpoint), context);
      if (last.ok()) return last;
      if (last.error_message().find("invalid auth token") != std::string::npos) {
        if (EnsureToken(endpoint, /*renew=*/true).ok()) {
          grpc::ClientContext retry;
          Decorate(retry, true);
          last = call(kv(endpoint), retry);
          if (last.ok()) return last;
        }
      }
      if (!MovesToNextEndpoint(last)) return last;
      MoveOnFrom(endpoint);
      if (!idempotent && !NeverSent(last)) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "etcd did not answer (" + last.error_message() +
                                "): the write may or may not have been applied; read to check");
      }
    }
    return last;
  }

  // Forgets the auth token, so that the next EnsureToken authenticates again.
  void DropToken() {
    std::lock_guard lock(token_mu_);
    token_.clear();
  }

  Status EnsureToken(size_t endpoint, bool renew) {
    if (options_.user.empty()) return Status();
    {
      std::lock_guard lock(token_mu_);
      if (!token_.empty() && !renew) return Status();
    }
    pb::AuthenticateRequest request;
    request.set_name(options_.user);
    request.set_password(options_.password);
    pb::AuthenticateResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
    grpc::Status status = auth_[endpoint]->Authenticate(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, "etcd Authenticate as --etcd-user");
    std::lock_guard lock(token_mu_);
    token_ = response.token();
    return Status();
  }

 private:
  explicit EtcdClient(const EtcdOptions& options) : options_(options) {}

  const EtcdOptions options_;
  std::vector<std::unique_ptr<pb::KV::Stub>> kv_;
  std::vector<std::unique_ptr<pb::Watch::Stub>> watch_;
  std::vector<std::unique_ptr<pb::Auth::Stub>> auth_;
  std::atomic<size_t> current_{0};
  std::mutex token_mu_;
  std::string token_;
};

struct Listing {
  uint64_t revision = 0;
  uint64_t cluster_id = 0;
  std::vector<std::pair<std::string, Value>> items;
  uint64_t skipped_keys = 0;
};

// The prefix's whole contents at one revision, page by page (etcd 3.4 serves a Range at an old
// revision until it is compacted; then the list starts over at the newest one). A page refused
// as too large for a message or too slow for the deadline is asked again with half as many keys:
// large values must not wedge the first list. Stops between pages once `*cancelled`.
Result<Listing> ListPrefix(EtcdClient& client, const std::atomic<bool>* cancelled = nullptr) {
  const EtcdOptions& options = client.options();
  const std::string begin = PrefixRangeKey(options.prefix);
  const std::string end = PrefixRangeEnd(options.prefix);
  int64_t page = options.list_page_size;
  for (int attempt = 0;; ++attempt) {
    Listing listing;
    std::string next = begin;
    bool compacted = false;
    while (true) {
      if (cancelled != nullptr && cancelled->load(std::memory_order_acquire)) {
        return Status(StatusCode::kCancelled, "the replica is stopping");
      }
      pb::RangeRequest request;
      request.set_key(next);
      request.set_range_end(end);
      request.set_limit(page);
      if (listing.revision != 0) request.set_revision(static_cast<int64_t>(listing.revision));
      pb::RangeResponse response;
      grpc::Status status = client.Run([&](pb::KV::Stub& kv, grpc::ClientContext& context) {
        return kv.Range(&context, request, &response);
      });
      if (status.error_code() == grpc::StatusCode::OUT_OF_RANGE && attempt < 5) {
        compacted = true;  // "required revision has been compacted": start over, newer
        break;
      }
      if ((status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
           status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) &&
          page > 1) {
        page = std::max<int64_t>(1, page / 2);
        continue;
      }
      if (!status.ok()) return FromGrpc(status, "etcd Range of the prefix");
      if (listing.revision == 0) {
        listing.revision = response.header().revision();
        listing.cluster_id = response.header().cluster_id();
      }
      for (const auto& kv : response.kvs()) {
        auto local_key = LocalKeyOf(kv.key(), options.prefix);
        if (!local_key) {
          ++listing.skipped_keys;
          continue;
        }
        listing.items.emplace_back(std::string(*local_key),
                                   DecodeValue(kv.value(), options.allow_pickle));
      }
      if (!response.more() || response.kvs().empty()) break;
      next = response.kvs(response.kvs_size() - 1).key();
      next.push_back('\0');
    }
    if (!compacted) {
      if (listing.skipped_keys > 0) {
        spdlog::warn(
            "replica: {} etcd keys under the prefix have no local form (the prefix "
            "itself, or longer than {} bytes after it) and are skipped",
            listing.skipped_keys, kMaxKeyBytes);
      }
      return listing;
    }
  }
}

// One Watch call on one endpoint, read by the feed's thread itself: a reader thread handing each
// response over would add a thread hand-off to every change's way into shared memory (~30 us of
// the replica's ~0.25 ms behind a raw watch, docs/bench/replica.md). gRPC's flow control bounds
// what etcd sends ahead. Two steps, so that the stream can be cancelled while it connects:
// construct (no I/O), publish, then Start (which blocks until etcd took the request).
class WatchCall {
 public:
  WatchCall(EtcdClient& client, size_t endpoint) : client_(client), endpoint_(endpoint) {
    client.Decorate(context_, /*with_deadline=*/false);
    // Without it a member cut off from its leader keeps the stream open and silent.
    context_.AddMetadata("hasleader", "true");
  }
  ~WatchCall() {
    if (!stream_ || finished_) return;
    // gRPC wants a started stream finished: cancel, drain what is in flight, then Finish.
    context_.TryCancel();
    pb::WatchResponse ignored;
    while (stream_->Read(&ignored)) {
    }
    stream_->Finish().ok();
  }
  WatchCall(const WatchCall&) = delete;
  WatchCall& operator=(const WatchCall&) = delete;

  // Sends the create request. An error is the stream's status (a refused token, an unreachable
  // member).
  grpc::Status Start(int64_t start_revision) {
    const EtcdOptions& options = client_.options();
    stream_ = client_.watch(endpoint_).Watch(&context_);
    pb::WatchRequest request;
    auto* create = request.mutable_create_request();
    create->set_key(PrefixRangeKey(options.prefix));
    create->set_range_end(PrefixRangeEnd(options.prefix));
    create->set_start_revision(start_revision);
    // Progress notifications are the only resume points on an idle prefix: event responses'
    // header.revision is not one in 3.4 (syncWatchers sends the current revision even when it
    // cut the events short), and WatchProgressRequest's answer can overtake events (etcd#15220),
    // so it is never sent.
    create->set_progress_notify(true);
    // A catching-up watcher gets up to 1000 revisions in one response: fragments keep each
    // message under the receive limit; Next joins them again.
    create->set_fragment(true);
    if (!stream_->Write(request)) return End();
    return grpc::Status();
  }

  size_t endpoint() const { return endpoint_; }
  // Any thread: makes a blocked Read return false.
  void Cancel() { context_.TryCancel(); }

  // The next response; false at the end of the stream (then End() says why).
  bool Read(pb::WatchResponse* response) { return stream_->Read(response); }
  grpc::Status End() {
    finished_ = true;
    grpc::Status status = stream_->Finish();
    return status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcd ended the Watch stream")
                       : status;
  }

 private:
  EtcdClient& client_;
  const size_t endpoint_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::WatchRequest, pb::WatchResponse>> stream_;
  bool finished_ = false;
};

class EtcdStream final : public UpstreamStream {
 public:
  EtcdStream(std::shared_ptr<EtcdClient> client, uint64_t after_revision,
             std::function<void(bool)> connected)
      : client_(std::move(client)),
        after_(after_revision),
        connected_(std::move(connected)),
        need_list_(after_revision == 0) {}
  ~EtcdStream() override { DropCall(); }

  void Cancel() override {
    cancelled_.store(true, std::memory_order_release);
    std::lock_guard lock(mu_);
    if (call_) call_->Cancel();
  }

  Result<std::vector<UpstreamStep>> Next(std::chrono::milliseconds timeout) override {
    std::vector<UpstreamStep> steps;
    if (IsCancelled()) return Status(StatusCode::kCancelled, "the replica is stopping");
    if (need_list_) {
      auto listing = ListPrefix(*client_, &cancelled_);
      if (!listing.ok()) return listing.status();
      connected_(true);
      UpstreamStep replace;
      replace.kind = UpstreamStep::Kind::kReplace;
      replace.revision = listing->revision;
      replace.identity = listing->cluster_id;
      replace.items = std::move(listing->items);
      steps.push_back(std::move(replace));
      after_ = listing->revision;
      need_list_ = false;
      DropCall();
    }
    if (!call_) {
      Status opened = OpenCall();
      if (!opened.ok()) {
        if (!steps.empty()) return steps;  // the error comes again from the next Next
        return opened;
      }
    }
    // Reads until a response gives steps (or the stream ends): each change reaches Apply on
    // this thread as soon as it arrives. Waits past `timeout` while etcd is silent (progress
    // notifications come every --experimental-watch-progress-notify-interval); Cancel ends it.
    (void)timeout;
    if (!steps.empty()) return steps;  // a listing: applied before the watch is read
    while (true) {
      pb::WatchResponse received;
      if (!call_->Read(&received)) {
        const grpc::Status end = call_->End();
        if (MovesToNextEndpoint(end)) client_->MoveOnFrom(call_->endpoint());
        DropCall();
        if (IsCancelled()) return Status(StatusCode::kCancelled, "the replica is stopping");
        return FromGrpc(end, "etcd Watch");
      }
      connected_(true);
      pb::WatchResponse& response = received;
      if (response.canceled()) {
        const std::string& reason = response.cancel_reason();
        DropCall();
        if (response.compact_revision() > 0) {
          // Compacted past our revision: the history we need is gone. List again.
          spdlog::warn("replica: etcd compacted to revision {} past revision {}; listing again",
                       response.compact_revision(), after_);
          need_list_ = true;
          return steps;
        }
        if (reason.find("permission denied") != std::string::npos ||
            reason.find("invalid auth token") != std::string::npos) {
          client_->DropToken();  // authenticate again for the next watch
        }
        if (reason.find(kNoLeader) != std::string::npos) {
          client_->MoveOnFrom(client_->current());
        }
        if (!steps.empty()) return steps;
        return Status(StatusCode::kUnavailable,
                      "etcd cancelled the Watch: " + EscapeUntrustedText(reason, 200));
      }
      if (response.created()) {
        // etcd answered: a step that changes nothing, so that the feed counts as caught up.
        UpstreamStep answered;
        answered.kind = UpstreamStep::Kind::kProgress;
        answered.revision = after_;
        steps.push_back(std::move(answered));
        return steps;
      }
      if (response.fragment()) {
        // Part of a large response: kept until its last fragment (fragment false) arrives.
        for (auto& event : *response.mutable_events()) {
          *fragments_.add_events() = std::move(event);
        }
        continue;
      }
      if (fragments_.events_size() > 0) {
        for (auto& event : *response.mutable_events()) {
          *fragments_.add_events() = std::move(event);
        }
        response.mutable_events()->Swap(fragments_.mutable_events());
        fragments_.Clear();
      }
      if (response.events_size() == 0) {
        // A progress notification: every event up to header.revision has been sent.
        const auto revision = static_cast<uint64_t>(response.header().revision());
        if (revision > after_) {
          UpstreamStep progress;
          progress.kind = UpstreamStep::Kind::kProgress;
          progress.revision = revision;
          steps.push_back(std::move(progress));
          after_ = revision;
          return steps;
        }
        continue;
      }
      AppendEvents(response, steps);
      if (!steps.empty()) return steps;  // else only revisions applied before a resume
    }
  }

 private:
  bool IsCancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // The call is published under mu_ before it connects, so that Cancel reaches a stream that is
  // still connecting; only this (the feed's) thread creates or drops it.
  Status OpenCall() {
    const size_t endpoint = client_->current();
    Status auth = client_->EnsureToken(endpoint, /*renew=*/false);
    if (!auth.ok()) {
      client_->MoveOnFrom(endpoint);
      return auth;
    }
    fragments_.Clear();
    {
      std::lock_guard lock(mu_);
      if (IsCancelled()) return Status(StatusCode::kCancelled, "the replica is stopping");
      call_ = std::make_unique<WatchCall>(*client_, endpoint);
    }
    grpc::Status started = call_->Start(static_cast<int64_t>(after_ + 1));
    if (!started.ok()) {
      DropCall();
      if (MovesToNextEndpoint(started)) client_->MoveOnFrom(endpoint);
      if (IsCancelled()) return Status(StatusCode::kCancelled, "the replica is stopping");
      return FromGrpc(started, "etcd Watch");
    }
    return Status();
  }

  void DropCall() {
    std::unique_ptr<WatchCall> dropped;
    {
      std::lock_guard lock(mu_);
      dropped = std::move(call_);
    }
    // Destroyed outside mu_: it joins its reader, which Cancel must be able to interrupt.
  }

  // One step per revision: etcd never splits a revision across responses (fragments are joined
  // before this), and a DELETE's mod_revision is the deletion's.
  void AppendEvents(pb::WatchResponse& response, std::vector<UpstreamStep>& steps) {
    const EtcdOptions& options = client_->options();
    for (auto& event : *response.mutable_events()) {
      const auto revision = static_cast<uint64_t>(event.kv().mod_revision());
      if (revision <= after_) continue;  // a duplicate after a resume
      if (steps.empty() || steps.back().kind != UpstreamStep::Kind::kChanges ||
          steps.back().revision != revision) {
        UpstreamStep step;
        step.kind = UpstreamStep::Kind::kChanges;
        step.revision = revision;
        steps.push_back(std::move(step));
      }
      auto local_key = LocalKeyOf(event.kv().key(), options.prefix);
      if (!local_key) continue;  // the revision still counts: its step records it
      Change change;
      change.revision = revision;
      change.key = std::string(*local_key);
      if (event.type() == mvccpb::Event::DELETE) {
        change.op = ChangeOp::kErase;
      } else {
        change.op = ChangeOp::kSet;
        change.value = DecodeValue(event.kv().value(), options.allow_pickle);
      }
      steps.back().changes.push_back(std::move(change));
    }
    // after_ moves only past complete revisions: the last one of a response is complete too.
    if (!steps.empty()) after_ = std::max(after_, steps.back().revision);
  }

  std::shared_ptr<EtcdClient> client_;
  uint64_t after_;
  std::function<void(bool)> connected_;
  bool need_list_;
  pb::WatchResponse fragments_;  // events of a fragmented response received so far
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;                    // guards call_ against Cancel
  std::unique_ptr<WatchCall> call_;  // created and dropped only by the feed's thread
};

// Writes to the prefix. Each returns the etcd revision it created in last_commit_revision()
// (0 when it changed nothing).
// Whether a Txn that succeeded changed anything: etcd 3.4 answers a write Txn that changed
// nothing (deletes of missing keys) with the current revision, which may belong to another part
// of the keyspace and never reach this prefix's watch.
bool TxnChangedSomething(const pb::TxnResponse& response) {
  for (const pb::ResponseOp& op : response.responses()) {
    if (op.has_response_put()) return true;
    if (op.has_response_delete_range() && op.response_delete_range().deleted() > 0) return true;
  }
  return false;
}

class EtcdWriter final : public Store {
 public:
  EtcdWriter(std::shared_ptr<EtcdClient> client, std::string name)
      : client_(std::move(client)), name_(std::move(name)) {}

  const std::string& name() const override { return name_; }

  // Reads go to etcd directly (linearizable); the replica's service reads its local dict instead
  // and uses only this object's writes.
  Result<std::optional<Value>> Get(std::string_view key) override {
    auto kv = Read(key);
    if (!kv.ok()) return kv.status();
    if (!*kv) return std::optional<Value>();
    return std::optional<Value>(Decode((*kv)->value()));
  }
  Result<bool> Get(std::string_view key, Value* out) override {
    auto value = Get(key);
    if (!value.ok()) return value.status();
    if (!*value) return false;
    *out = std::move(**value);
    return true;
  }
  Result<bool> Contains(std::string_view key) override {
    auto kv = Read(key);
    if (!kv.ok()) return kv.status();
    return kv->has_value();
  }
  Result<uint64_t> Size() override {
    auto listing = ListPrefix(*client_);
    if (!listing.ok()) return listing.status();
    return listing->items.size();
  }
  Result<std::vector<std::pair<std::string, Value>>> Items() override {
    auto listing = ListPrefix(*client_);
    if (!listing.ok()) return listing.status();
    return std::move(listing->items);
  }
  Result<std::vector<std::string>> Keys() override {
    auto items = Items();
    if (!items.ok()) return items.status();
    std::vector<std::string> keys;
    for (auto& [key, value] : *items) keys.push_back(std::move(key));
    return keys;
  }

  Result<uint64_t> Set(std::string_view key, const Value& value) override {
    auto encoded = Encode(value);
    if (!encoded.ok()) return encoded.status();
    pb::PutRequest request;
    request.set_key(EtcdKeyOf(key, prefix()));
    request.set_value(std::move(*encoded));
    pb::PutResponse response;
    grpc::Status status = client_->Run([&](pb::KV::Stub& kv, grpc::ClientContext& context) {
      return kv.Put(&context, request, &response);
    });
    if (!status.ok()) return FromGrpc(status, "etcd Put");
    return Committed(response.header());
  }

  Result<uint64_t> Update(const std::vector<std::pair<std::string, Value>>& items) override {
    std::vector<Change> changes;
    changes.reserve(items.size());
    for (const auto& [key, value] : items) {
      Change change;
      change.op = ChangeOp::kSet;
      change.key = key;
      change.value = value;
      changes.push_back(std::move(change));
    }
    return Apply(changes);
  }

  Result<uint64_t> Apply(const std::vector<Change>& changes) override {
    TxnPlanOptions plan_options;
    plan_options.prefix = prefix();
    plan_options.max_txn_ops = client_->options().max_txn_ops;
    plan_options.allow_pickle = client_->options().allow_pickle;
    const bool clears = HasClear(changes);
    for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
      // A clear inside a batch deletes the keys present when the Txn runs: list them; the plan
      // makes the Txn conditional on nothing under the prefix having changed since.
      ClearListing listing;
      if (clears) {
        auto listed = ListKeys(client_->options().max_txn_ops + changes.size());
        if (!listed.ok()) return listed.status();
        listing = std::move(*listed);
      }
      auto txn = PlanBatchTxn(changes, clears ? &listing : nullptr, plan_options);
      if (!txn.ok()) return txn.status();
      auto response = Txn(*txn);
      if (!response.ok()) return response.status();
      if (response->succeeded()) {
        return TxnChangedSomething(*response) ? Committed(response->header()) : Unchanged();
      }
      Pause(attempt);
    }
    return Aborted("Batch with a clear");
  }

  Result<bool> Erase(std::string_view key) override {
    pb::DeleteRangeRequest request;
    request.set_key(EtcdKeyOf(key, prefix()));
    pb::DeleteRangeResponse response;
    grpc::Status status = client_->Run(
        [&](pb::KV::Stub& kv, grpc::ClientContext& context) {
          return kv.DeleteRange(&context, request, &response);
        },
        /*idempotent=*/false);
    if (!status.ok()) return FromGrpc(status, "etcd DeleteRange");
    if (response.deleted() == 0) {
      Unchanged();
      return false;
    }
    Committed(response.header());
    return true;
  }

  Result<std::optional<Value>> Pop(std::string_view key) override {
    // One DeleteRange with prev_kv: the value removed is the value returned, atomically.
    pb::DeleteRangeRequest request;
    request.set_key(EtcdKeyOf(key, prefix()));
    request.set_prev_kv(true);
    pb::DeleteRangeResponse response;
    grpc::Status status = client_->Run(
        [&](pb::KV::Stub& kv, grpc::ClientContext& context) {
          return kv.DeleteRange(&context, request, &response);
        },
        /*idempotent=*/false);
    if (!status.ok()) return FromGrpc(status, "etcd DeleteRange");
    if (response.deleted() == 0 || response.prev_kvs_size() == 0) {
      Unchanged();
      return std::optional<Value>();
    }
    Committed(response.header());
    return std::optional<Value>(Decode(response.prev_kvs(0).value()));
  }

  Result<std::optional<std::pair<std::string, Value>>> PopItem() override {
    for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
      // The first key with a local form: pages on past keys the replica skips.
      std::optional<mvccpb::KeyValue> victim;
      std::string local_key;
      std::string next = PrefixRangeKey(prefix());
      while (!victim) {
        pb::RangeRequest range;
        range.set_key(next);
        range.set_range_end(PrefixRangeEnd(prefix()));
        range.set_limit(16);
        pb::RangeResponse found;
        grpc::Status status = client_->Run([&](pb::KV::Stub& kv, grpc::ClientContext& context) {
          return kv.Range(&context, range, &found);
        });
        if (!status.ok()) return FromGrpc(status, "etcd Range");
        for (const auto& kv : found.kvs()) {
          auto key = LocalKeyOf(kv.key(), prefix());
          if (key) {
            victim = kv;
            local_key = std::string(*key);
            break;
          }
        }
        if (victim || !found.more() || found.kvs().empty()) break;
        next = found.kvs(found.kvs_size() - 1).key();
        next.push_back('\0');
      }
      if (!victim) {
        Unchanged();
        return std::optional<std::pair<std::string, Value>>();
      }
      pb::TxnRequest txn;
      auto* compare = txn.add_compare();
      compare->set_target(pb::Compare::MOD);
      compare->set_result(pb::Compare::EQUAL);
      compare->set_key(victim->key());
      compare->set_mod_revision(victim->mod_revision());
      auto* erase = txn.add_success()->mutable_request_delete_range();
      erase->set_key(victim->key());
      auto response = Txn(txn);
      if (!response.ok()) return response.status();
      if (response->succeeded()) {
        Committed(response->header());
        return std::optional<std::pair<std::string, Value>>(
            std::pair<std::string, Value>(std::move(local_key), Decode(victim->value())));
      }
      Pause(attempt);
    }
    return Aborted("PopItem");
  }

  Result<Value> SetDefault(std::string_view key, const Value& default_value) override {
    auto encoded = Encode(default_value);
    if (!encoded.ok()) return encoded.status();
    const std::string etcd_key = EtcdKeyOf(key, prefix());
    pb::TxnRequest txn;
    AbsentCompare(txn, etcd_key);
    auto* put = txn.add_success()->mutable_request_put();
    put->set_key(etcd_key);
    put->set_value(std::move(*encoded));
    txn.add_failure()->mutable_request_range()->set_key(etcd_key);
    auto response = Txn(txn);
    if (!response.ok()) return response.status();
    if (response->succeeded()) {
      Committed(response->header());
      return default_value;
    }
    const auto& kvs = response->responses(0).response_range().kvs();
    if (kvs.empty()) return Aborted("SetDefault");  // deleted between the compare and the read
    // The answer is the value at its mod_revision: the caller waits until this replica has it.
    Answered(kvs[0].mod_revision());
    return Decode(kvs[0].value());
  }

  Result<uint64_t> Clear() override {
    pb::DeleteRangeRequest request;
    request.set_key(PrefixRangeKey(prefix()));
    request.set_range_end(PrefixRangeEnd(prefix()));
    pb::DeleteRangeResponse response;
    grpc::Status status = client_->Run(
        [&](pb::KV::Stub& kv, grpc::ClientContext& context) {
          return kv.DeleteRange(&context, request, &response);
        },
        /*idempotent=*/false);
    if (!status.ok()) return FromGrpc(status, "etcd DeleteRange of the prefix");
    return response.deleted() == 0 ? Unchanged() : Committed(response.header());
  }

  Result<bool> CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                             const std::optional<Value>& desired) override {
    const std::string etcd_key = EtcdKeyOf(key, prefix());
    std::optional<std::string> encoded;
    if (desired) {
      auto value = Encode(*desired);
      if (!value.ok()) return value.status();
      encoded = std::move(*value);
    }
    for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
      pb::TxnRequest txn;
      if (!expected) {
        AbsentCompare(txn, etcd_key);
      } else {
        // Compared by decoded value, then made conditional on the key's mod_revision: another
        // client's bytes for the same value (a foreign writer) still compare equal.
        auto current = Read(key);
        if (!current.ok()) return current.status();
        if (!*current || !(Decode((*current)->value()) == *expected)) {
          if (*current) {
            Answered((*current)->mod_revision());
          } else {
            Unchanged();
          }
          return false;
        }
        auto* compare = txn.add_compare();
        compare->set_target(pb::Compare::MOD);
        compare->set_result(pb::Compare::EQUAL);
        compare->set_key(etcd_key);
        compare->set_mod_revision((*current)->mod_revision());
      }
      if (encoded) {
        auto* put = txn.add_success()->mutable_request_put();
        put->set_key(etcd_key);
        put->set_value(*encoded);
      } else {
        txn.add_success()->mutable_request_delete_range()->set_key(etcd_key);
      }
      auto response = Txn(txn);
      if (!response.ok()) return response.status();
      if (response->succeeded()) {
        if (TxnChangedSomething(*response)) {
          Committed(response->header());
        } else {
          Unchanged();  // absent expected and absent desired: nothing to do
        }
        return true;
      }
      if (!expected) {
        Unchanged();
        return false;  // the key exists
      }
      Pause(attempt);  // changed between the read and the Txn: compare again
    }
    return Aborted("CompareAndSet");
  }

  Result<int64_t> Increment(std::string_view key, int64_t delta) override {
    const std::string etcd_key = EtcdKeyOf(key, prefix());
    for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
      auto current = Read(key);
      if (!current.ok()) return current.status();
      int64_t value = 0;
      pb::TxnRequest txn;
      if (*current) {
        auto number = Decode((*current)->value()).AsInt();
        if (!number) {
          return Status(StatusCode::kFailedPrecondition,
                        "Increment: the value of " + QuoteForMessage(key) + " is not an int");
        }
        value = *number;
        auto* compare = txn.add_compare();
        compare->set_target(pb::Compare::MOD);
        compare->set_result(pb::Compare::EQUAL);
        compare->set_key(etcd_key);
        compare->set_mod_revision((*current)->mod_revision());
      } else {
        AbsentCompare(txn, etcd_key);
      }
      int64_t sum = 0;
      if (__builtin_add_overflow(value, delta, &sum)) {
        return Status(StatusCode::kOutOfRange,
                      "Increment of " + QuoteForMessage(key) + " overflows int64");
      }
      auto encoded = Encode(Value::Int(sum));
      if (!encoded.ok()) return encoded.status();
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key(etcd_key);
      put->set_value(std::move(*encoded));
      auto response = Txn(txn);
      if (!response.ok()) return response.status();
      if (response->succeeded()) {
        Committed(response->header());
        return sum;
      }
      Pause(attempt);
    }
    return Aborted("Increment");
  }

  uint64_t last_commit_revision() const override { return last_revision_; }
  uint64_t revision() override { return last_revision_; }
  Result<uint64_t> WaitForChange(uint64_t, std::chrono::nanoseconds) override {
    return Status(StatusCode::kUnimplemented,
                  "the etcd writer only writes: wait on the replica's local dict");
  }
  Result<std::unique_ptr<Watcher>> Watch(uint64_t) override {
    return Status(StatusCode::kUnimplemented,
                  "the etcd writer only writes: watch the replica's local dict");
  }

 private:
  const std::string& prefix() const { return client_->options().prefix; }

  Result<std::string> Encode(const Value& value) {
    return EncodeValue(value, client_->options().allow_pickle);
  }
  Value Decode(std::string_view bytes) {
    return DecodeValue(bytes, client_->options().allow_pickle);
  }

  uint64_t Committed(const pb::ResponseHeader& header) {
    last_revision_ = static_cast<uint64_t>(header.revision());
    return last_revision_;
  }
  uint64_t Unchanged() {
    last_revision_ = 0;
    return 0;
  }
  // An answer read at `mod_revision` without writing: that revision is in this prefix, so the
  // replica applies it and the caller can wait for it (read-your-writes holds for reads too).
  void Answered(int64_t mod_revision) { last_revision_ = static_cast<uint64_t>(mod_revision); }
  Status Aborted(std::string_view what) {
    return Status(StatusCode::kAborted, std::string(what) + ": other writers changed the key " +
                                            std::to_string(kMaxConflictRetries) +
                                            " times in a row; try again");
  }
  void Pause(int attempt) {
    thread_local std::mt19937 random{std::random_device{}()};
    std::uniform_int_distribution<int> micros(0, 200 * (1 + std::min(attempt, 20)));
    std::this_thread::sleep_for(std::chrono::microseconds(micros(random)));
  }

  static void AbsentCompare(pb::TxnRequest& txn, const std::string& etcd_key) {
    auto* compare = txn.add_compare();
    compare->set_target(pb::Compare::CREATE);
    compare->set_result(pb::Compare::EQUAL);
    compare->set_key(etcd_key);
    compare->set_create_revision(0);
  }

  Result<std::optional<mvccpb::KeyValue>> Read(std::string_view key) {
    pb::RangeRequest request;
    request.set_key(EtcdKeyOf(key, prefix()));
    pb::RangeResponse response;
    grpc::Status status = client_->Run([&](pb::KV::Stub& kv, grpc::ClientContext& context) {
      return kv.Range(&context, request, &response);
    });
    if (!status.ok()) return FromGrpc(status, "etcd Range");
    if (response.kvs_size() == 0) return std::optional<mvccpb::KeyValue>();
    return std::optional<mvccpb::KeyValue>(response.kvs(0));
  }

  // The etcd keys under the prefix now (skipped ones included: a clear removes them too), and
  // the revision they were listed at.
  // More than `max_keys` keys is RESOURCE_EXHAUSTED at once: a clear inside a batch deletes each
  // key in the Txn, so a larger prefix could never fit --etcd-max-txn-ops, and one call must not
  // make this process list a million keys to find that out.
  Result<ClearListing> ListKeys(size_t max_keys) {
    ClearListing listed;
    std::string next = PrefixRangeKey(prefix());
    while (true) {
      pb::RangeRequest request;
      request.set_key(next);
      request.set_range_end(PrefixRangeEnd(prefix()));
      request.set_keys_only(true);
      request.set_limit(client_->options().list_page_size);
      if (listed.revision != 0) request.set_revision(listed.revision);
      pb::RangeResponse response;
      grpc::Status status = client_->Run([&](pb::KV::Stub& kv, grpc::ClientContext& context) {
        return kv.Range(&context, request, &response);
      });
      if (!status.ok()) return FromGrpc(status, "etcd Range of the prefix");
      if (listed.revision == 0) listed.revision = response.header().revision();
      for (const auto& kv : response.kvs()) listed.etcd_keys.push_back(kv.key());
      if (listed.etcd_keys.size() > max_keys) {
        return Status(StatusCode::kResourceExhausted,
                      "a Batch with a clear deletes every key under the prefix in one etcd Txn: "
                      "more than --etcd-max-txn-ops (" +
                          std::to_string(client_->options().max_txn_ops) +
                          ") operations; use Clear alone");
      }
      if (!response.more() || response.kvs().empty()) return listed;
      next = response.kvs(response.kvs_size() - 1).key();
      next.push_back('\0');
    }
  }

  Result<pb::TxnResponse> Txn(const pb::TxnRequest& request) {
    pb::TxnResponse response;
    grpc::Status status = client_->Run(
        [&](pb::KV::Stub& kv, grpc::ClientContext& context) {
          return kv.Txn(&context, request, &response);
        },
        /*idempotent=*/false);
    if (status.ok()) return response;
    const std::string& message = status.error_message();
    if (message.find("too many operations in txn request") != std::string::npos) {
      return Status(StatusCode::kResourceExhausted,
                    "etcd refused the Txn: more operations than its --max-txn-ops; set the "
                    "replica's --etcd-max-txn-ops to the cluster's value");
    }
    if (message.find("request is too large") != std::string::npos) {
      return Status(StatusCode::kResourceExhausted,
                    "etcd refused the request as larger than its --max-request-bytes");
    }
    return FromGrpc(status, "etcd Txn");
  }

  std::shared_ptr<EtcdClient> client_;
  std::string name_;
  uint64_t last_revision_ = 0;
};

class EtcdUpstream final : public Upstream {
 public:
  EtcdUpstream(std::shared_ptr<EtcdClient> client, std::string description)
      : client_(std::move(client)), description_(std::move(description)) {}

  const std::string& description() const override { return description_; }

  Result<uint64_t> Identity() override {
    pb::RangeRequest request;
    request.set_key(PrefixRangeKey(client_->options().prefix));
    request.set_range_end(PrefixRangeEnd(client_->options().prefix));
    request.set_count_only(true);
    pb::RangeResponse response;
    grpc::Status status = client_->Run([&](pb::KV::Stub& kv, grpc::ClientContext& context) {
      return kv.Range(&context, request, &response);
    });
    if (!status.ok()) return FromGrpc(status, "etcd Range (the cluster's identity)");
    return response.header().cluster_id();
  }

  Result<std::unique_ptr<UpstreamStream>> Follow(uint64_t after_revision,
                                                 std::function<void(bool)> connected) override {
    return std::unique_ptr<UpstreamStream>(
        new EtcdStream(client_, after_revision, std::move(connected)));
  }

  Result<std::unique_ptr<Store>> Writer() override {
    return std::unique_ptr<Store>(new EtcdWriter(client_, description_));
  }

 private:
  std::shared_ptr<EtcdClient> client_;
  std::string description_;
};

}  // namespace

Result<std::unique_ptr<Upstream>> MakeEtcdUpstream(const EtcdOptions& options) {
  auto client = EtcdClient::Make(options);
  if (!client.ok()) return client.status();
  std::string description = "etcd:";
  for (size_t i = 0; i < options.endpoints.size(); ++i) {
    if (i > 0) description += ',';
    description += options.endpoints[i];
  }
  // Never cut: two prefixes must not share a description (a replica adopted under another
  // upstream's description would resume at that upstream's revision).
  description += " prefix=" + EscapeUntrustedText(options.prefix, ReplicaMarker::kMaxUpstreamBytes);
  if (description.size() > ReplicaMarker::kMaxUpstreamBytes) {
    return Status(StatusCode::kInvalidArgument,
                  "--etcd and --prefix describe an upstream longer than " +
                      std::to_string(ReplicaMarker::kMaxUpstreamBytes) + " bytes");
  }
  return std::unique_ptr<Upstream>(new EtcdUpstream(std::move(*client), std::move(description)));
}

}  // namespace shmdict::replica
