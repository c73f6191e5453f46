#include "shmdict/remote_dict.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "remote_watcher.h"
#include "shmdict/v1/wire.h"

namespace shmdict {

using client::Connection;
using client::RemoteWatcher;

namespace {

// Lets the mirror's maps be searched with a string_view: no allocation per read.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};
using MirrorMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;
using KeySet = std::unordered_set<std::string, StringHash, std::equal_to<>>;

// How many incarnations of the dict a mirror remembers having held: a write that committed to
// one of them is not waited for (the mirror has moved on to a newer dict).
constexpr size_t kRememberedIncarnations = 8;

// What a call's answer is checked against: RemoteDict::Impl::start_overs when it left, and the
// incarnation of the dict a write reached (0: not named).
struct Stamp {
  uint64_t epoch = 0;
  uint64_t incarnation = 0;
};

}  // namespace

struct RemoteDict::Impl {
  std::shared_ptr<Connection> connection;
  std::atomic<uint64_t> last_commit{0};
  std::atomic<uint64_t> seen_revision{0};  // without a mirror: the newest revision observed
  // Guarded by commit_mu, as are changes of last_commit and seen_revision that start them over:
  // the incarnation of the dict this object's commits go to as far as it knows (the newest one a
  // write or the mirror's stream named; 0: none named), and the ones it knew before (newest
  // last). A commit to another dict, or news that the dict was replaced, starts last_commit over
  // with the new dict's revisions; a late answer of a write to a retired one changes nothing.
  std::mutex commit_mu;
  uint64_t commit_incarnation = 0;
  // Not past_incarnations: the mirror's list moves with its stream under progress_mu, this one
  // with what the commits learned (a write or a question can be ahead of the stream), and a
  // dict is taken off it again when the handle moves back to it.
  std::vector<uint64_t> retired_incarnations;
  // Written under commit_mu: how often commit_incarnation changed (a start-over, or the first
  // one named). An answer stamped with an older count was asked before the handle moved to
  // another dict: one naming another dict than the handle's, or a read's revision, is stale.
  std::atomic<uint64_t> start_overs{0};
  // One check of the dict under the name at a time (a Get that timed out): the others wait for
  // it and use its answer rather than open a stream each. checks (written under check_mu)
  // counts the checks that ended.
  std::mutex check_mu;
  std::atomic<uint64_t> checks{0};

  // ---- The mirror (options.mirror).
  std::shared_mutex map_mu;
  MirrorMap map;          // guarded by map_mu
  KeySet too_large_keys;  // guarded by map_mu: present, but only the bridge can return them
  std::atomic<uint64_t> mirror_revision{0};  // written under progress_mu
  std::atomic<uint64_t> resyncs{0};
  // Moves (release) after every change of map or too_large_keys, from the feed's thread only:
  // mirror_generation().
  std::atomic<uint64_t> generation{0};
  std::mutex progress_mu;
  std::condition_variable progress_cv;  // mirror_revision advanced or started over, or stopped
  Status mirror_error;                  // guarded by progress_mu: why the mirror stopped
  bool mirror_stopped = false;          // guarded by progress_mu
  // Guarded by progress_mu: the incarnation of the dict the mirror holds (0: the bridge did not
  // say), the ones it held before (newest last), and how often it started over.
  uint64_t mirror_incarnation = 0;
  std::vector<uint64_t> past_incarnations;
  uint64_t replacements = 0;
  // Feed's reader thread only: the snapshot being received.
  MirrorMap staging;
  KeySet staging_too_large;
  // Last: its reader thread applies batches to the members above until it is joined.
  std::unique_ptr<RemoteWatcher> feed;

  ~Impl() { feed.reset(); }

  // `stamp`, when given: start_overs when the call left, and the incarnation of the dict it
  // reached (0: not named).
  template <typename Request, typename Response, typename Call>
  Status Unary(Call call, const Request& request, Response* response,
               Stamp* stamp = nullptr) const {
    if (stamp != nullptr) stamp->epoch = start_overs.load();
    grpc::ClientContext context;
    connection->Prepare(&context, connection->options.call_timeout);
    grpc::Status status = (connection->stub.get()->*call)(&context, request, response);
    if (!status.ok()) return connection->Describe(status);
    if (stamp != nullptr)
      stamp->incarnation = client::IncarnationIn(context.GetServerTrailingMetadata());
    return Status::Ok();
  }

  // A write answered at `revision` of the dict stamp.incarnation (0: the bridge did not say),
  // `committed` when it changed the dict: remembered, and with a mirror, returned once the mirror
  // holds it (unless the stream went down: a committed write is never reported as failed). A
  // stream that has not received its first message yet is not down: Open returns before that for
  // a dict at revision 0, and a write right after it must still be read back from the mirror.
  uint64_t Committed(uint64_t revision, const Stamp& stamp, bool committed = true) {
    const uint64_t incarnation = stamp.incarnation;
    {
      std::lock_guard lock(commit_mu);
      const bool current = incarnation != 0 && incarnation == commit_incarnation;
      if (incarnation != 0 && IsRetiredLocked(incarnation)) {
        // A write that raced the replacement: its revision counts in a dict that is gone.
      } else if (!current && stamp.epoch != start_overs.load()) {
        // The handle moved to another dict after this call left: the dict it names is an older
        // one (or one the handle will learn of again), so its revision must not move the
        // handle's back.
      } else if (!current && incarnation != 0 && commit_incarnation != 0) {
        StartCommitsOverLocked(incarnation);
        last_commit.store(committed ? revision : 0);
        seen_revision.store(revision);
      } else {
        if (incarnation != 0 && commit_incarnation == 0) StartCommitsOverLocked(incarnation);
        if (committed) {
          uint64_t known = last_commit.load();
          while (known < revision && !last_commit.compare_exchange_weak(known, revision)) {
          }
        }
        Observe(revision);
      }
    }
    if (!committed) return revision;
    if (!feed) return revision;
    const auto deadline = std::chrono::steady_clock::now() + connection->options.call_timeout;
    std::unique_lock lock(progress_mu);
    while (!MirrorHoldsLocked(revision, incarnation) && !mirror_stopped &&
           (feed->connected() || !feed->ever_connected()) &&
           std::chrono::steady_clock::now() < deadline) {
      progress_cv.wait_for(lock, std::chrono::milliseconds(20));
    }
    return revision;
  }

  // Whether waiting for the mirror to hold `revision` of `incarnation` is over: it holds it, or
  // it holds a newer dict than the one the write went to (which it will never hold again). With
  // an incarnation unknown on either side, the revision alone decides (a bridge that names none:
  // ABORTED still starts the mirror over).
  bool MirrorHoldsLocked(uint64_t revision, uint64_t incarnation) {
    if (incarnation == 0 || mirror_incarnation == 0 || incarnation == mirror_incarnation) {
      return mirror_revision.load() >= revision;
    }
    return std::find(past_incarnations.begin(), past_incarnations.end(), incarnation) !=
           past_incarnations.end();
  }

  // The dict this object's commits went to is gone; `incarnation` is the one now under its name
  // (0: not known), as found by a question asked when start_overs was `epoch` (nullopt: the
  // mirror's stream, which tells in order). Unless the handle already moved to it, or moved
  // since the question was asked (the answer may name a dict older than the one it moved to),
  // last_commit and seen_revision start over: a read's min_revision from the old dict could wait
  // for a revision the new one never reaches.
  void LearnReplaced(uint64_t incarnation, std::optional<uint64_t> epoch = std::nullopt) {
    std::lock_guard lock(commit_mu);
    if (incarnation != 0 && incarnation == commit_incarnation) return;
    if (epoch && *epoch != start_overs.load()) return;
    StartCommitsOverLocked(incarnation);
    last_commit.store(0);
    seen_revision.store(0);
  }

  bool IsRetiredLocked(uint64_t incarnation) const {
    return std::find(retired_incarnations.begin(), retired_incarnations.end(), incarnation) !=
           retired_incarnations.end();
  }

  // The handle's commits go to `incarnation` from now on: the one before is retired, and
  // `incarnation` is not (inodes can be reused, and a dict the handle retired on stale news may
  // be the current one after all).
  void StartCommitsOverLocked(uint64_t incarnation) {
    if (commit_incarnation != 0 && commit_incarnation != incarnation) {
      retired_incarnations.push_back(commit_incarnation);
      if (retired_incarnations.size() > kRememberedIncarnations) {
        retired_incarnations.erase(retired_incarnations.begin());
      }
    }
    std::erase(retired_incarnations, incarnation);
    commit_incarnation = incarnation;
    start_overs.fetch_add(1);
  }

  // A revision a read answered, asked when start_overs was `epoch`: ignored when the handle moved
  // to another dict since (it may be the old dict's).
  void ObserveRead(uint64_t revision, uint64_t epoch) {
    std::lock_guard lock(commit_mu);
    if (epoch == start_overs.load()) Observe(revision);
  }

  void Observe(uint64_t revision) {
    uint64_t known = seen_revision.load();
    while (known < revision && !seen_revision.compare_exchange_weak(known, revision)) {
    }
  }

  // The feed's OnDict: the batches after this come from the dict with `incarnation`. When it
  // replaced the one the mirror held, the mirror is emptied and its revision starts over at 0:
  // the new dict's own revisions (or a snapshot of it) follow, so every state a reader sees
  // from here is one the new dict had.
  void OnDict(uint64_t incarnation, bool replaced) {
    if (replaced) {
      LearnReplaced(incarnation);
    } else if (incarnation != 0) {
      // Named for the first time: the dict the commits so far went to, unless a commit named one.
      std::lock_guard lock(commit_mu);
      if (commit_incarnation == 0) StartCommitsOverLocked(incarnation);
    }
    if (replaced) {
      staging = MirrorMap();
      staging_too_large = KeySet();
      {
        std::unique_lock lock(map_mu);
        map.clear();
        too_large_keys.clear();
      }
      generation.fetch_add(1, std::memory_order_release);
    }
    std::lock_guard lock(progress_mu);
    if (replaced) {
      mirror_revision.store(0);
      ++replacements;
    }
    if (mirror_incarnation != 0 && mirror_incarnation != incarnation) {
      past_incarnations.push_back(mirror_incarnation);
      if (past_incarnations.size() > kRememberedIncarnations) {
        past_incarnations.erase(past_incarnations.begin());
      }
    }
    mirror_incarnation = incarnation;
    progress_cv.notify_all();
  }

  // The feed's sink: applies each batch on the thread that read it from the stream (no queue and
  // no second thread between the bridge's message and the map); the batch's keys and values are
  // moved into the map.
  void OnBatch(Result<ChangeBatch> batch) {
    if (!batch.ok()) {
      std::lock_guard lock(progress_mu);
      mirror_stopped = true;
      if (batch.status().code() != StatusCode::kCancelled) mirror_error = batch.status();
      progress_cv.notify_all();
      return;
    }
    Apply(*batch);
  }

  void Apply(ChangeBatch& batch) {
    if (batch.is_snapshot) {
      if (batch.snapshot_begins) {
        staging.clear();
        staging_too_large.clear();
      }
      for (auto& [key, value] : batch.snapshot_items) {
        staging.insert_or_assign(std::move(key), std::move(value));
      }
      for (Change& omitted : batch.changes) staging_too_large.insert(std::move(omitted.key));
      if (!batch.snapshot_ends) return;
      {
        std::unique_lock lock(map_mu);
        map.swap(staging);
        too_large_keys.swap(staging_too_large);
      }
      generation.fetch_add(1, std::memory_order_release);
      staging = MirrorMap();
      staging_too_large = KeySet();
      resyncs.fetch_add(1);
    } else if (!batch.changes.empty()) {
      std::unique_lock lock(map_mu);
      for (Change& change : batch.changes) {
        switch (change.op) {
          case ChangeOp::kSet:
            if (change.value_too_large) {
              map.erase(change.key);
              too_large_keys.insert(std::move(change.key));
            } else {
              too_large_keys.erase(change.key);
              map.insert_or_assign(std::move(change.key), std::move(change.value));
            }
            break;
          case ChangeOp::kErase:
            map.erase(change.key);
            too_large_keys.erase(change.key);
            break;
          case ChangeOp::kClear:
            map.clear();
            too_large_keys.clear();
            break;
        }
      }
      lock.unlock();
      generation.fetch_add(1, std::memory_order_release);
    }
    if (batch.revision > mirror_revision.load()) {
      std::lock_guard lock(progress_mu);
      mirror_revision.store(batch.revision);
      progress_cv.notify_all();
    }
  }

  // Without a mirror, or for a value too large for the mirror: ask the bridge, at least at this
  // object's latest commit. A Get that timed out waiting for it may have waited for a dict that
  // was replaced since (the bridge names no incarnation in a read's answer): when the dict now
  // under the name is another one than the commit went to, the commits start over and the Get
  // is asked once more.
  Result<bool> GetFromBridge(std::string_view key, Value* out) {
    uint64_t min_revision = 0;
    uint64_t epoch = 0;
    uint64_t known = 0;
    {
      // Together: a min_revision of one dict is never checked against another's incarnation.
      std::lock_guard lock(commit_mu);
      min_revision = last_commit.load();
      epoch = start_overs.load();
      known = commit_incarnation;
    }
    Result<bool> found = GetFromBridgeAt(key, min_revision, epoch, out);
    if (found.ok() || found.status().code() != StatusCode::kDeadlineExceeded || min_revision == 0 ||
        known == 0) {
      return found;
    }
    if (start_overs.load() == epoch) {
      const uint64_t checks_before = checks.load();
      std::lock_guard check(check_mu);
      // Another Get's check that ended after this one timed out answered already: its news (if
      // any) moved start_overs.
      if (checks.load() == checks_before && start_overs.load() == epoch) {
        Result<std::pair<uint64_t, uint64_t>> now =
            CurrentIncarnation(connection->options.call_timeout);
        checks.fetch_add(1);
        if (!now.ok() || now->first == 0 || now->first == known) return found;
        LearnReplaced(now->first, epoch);
        ObserveRead(now->second, start_overs.load());
      }
    }
    if (start_overs.load() == epoch) return found;  // the same dict: it is just slow
    uint64_t retry_epoch = 0;
    {
      std::lock_guard lock(commit_mu);
      min_revision = last_commit.load();
      retry_epoch = start_overs.load();
    }
    return GetFromBridgeAt(key, min_revision, retry_epoch, out);
  }

  // The incarnation of the dict now under the name (0: the bridge names none) and its revision:
  // the first message of a Watch stream started at the current revision, a progress message the
  // bridge sends at once, comes with the initial metadata. The stream's error otherwise.
  Result<std::pair<uint64_t, uint64_t>> CurrentIncarnation(
      std::chrono::milliseconds timeout) const {
    grpc::ClientContext context;
    connection->Prepare(&context, timeout);
    auto stream = connection->stub->Watch(&context);
    v1::WatchRequest request;
    request.mutable_start()->set_dict(connection->options.dict);
    request.mutable_start()->set_from_current(true);
    v1::WatchResponse message;
    if (stream->Write(request) && stream->Read(&message)) {
      const uint64_t incarnation = client::IncarnationIn(context.GetServerInitialMetadata());
      context.TryCancel();
      stream->Finish();
      return std::make_pair(incarnation, message.revision());
    }
    grpc::Status status = stream->Finish();
    if (status.ok()) {
      return Status(StatusCode::kUnavailable,
                    connection->description + ": the Watch stream ended before its first message");
    }
    return connection->Describe(status);
  }

  Result<bool> GetFromBridgeAt(std::string_view key, uint64_t min_revision, uint64_t epoch,
                               Value* out) {
    v1::GetRequest request;
    request.set_dict(connection->options.dict);
    request.set_key(key.data(), key.size());
    request.set_min_revision(min_revision);
    v1::GetResponse response;
    Status status = Unary(&v1::Dict::Stub::Get, request, &response);
    if (!status.ok()) return status;
    ObserveRead(response.revision(), epoch);
    if (!response.found()) return false;
    status = wire::FromProto(response.value(), out);
    if (!status.ok()) return status;
    return true;
  }
};

RemoteDict::RemoteDict(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

// ~Impl cancels and joins the mirror's feed first (its reader thread writes the mirror).
RemoteDict::~RemoteDict() = default;

namespace {

Result<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return Status(StatusCode::kInvalidArgument,
                  std::string(what) + " '" + path + "' cannot be read (or is empty)");
  }
  return text.str();
}

// The channel's credentials: options.credentials, TLS from the tls_* files, or plaintext.
Result<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const RemoteOptions& options) {
  if (options.credentials) return options.credentials;
  if (options.tls_ca.empty() && options.tls_cert.empty() && options.tls_key.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "a client certificate needs both tls_cert and tls_key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca.empty()) {
    auto ca = ReadPem(options.tls_ca, "TLS CA file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = std::move(*ca);
  }
  if (!options.tls_cert.empty()) {
    auto cert = ReadPem(options.tls_cert, "TLS certificate file");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(options.tls_key, "TLS key file");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = std::move(*cert);
    ssl.pem_private_key = std::move(*key);
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

Result<std::shared_ptr<grpc::Channel>> client::OpenChannel(const RemoteOptions& options) {
  auto credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments arguments;
  // Keepalive agreeing with the bridge's (it accepts pings every 10 s): a dead bridge behind a
  // proxy is noticed in ~30 s instead of minutes.
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetMaxReceiveMessageSize(-1);  // the bridge bounds what it sends
  arguments.SetMaxSendMessageSize(-1);     // and says so when a request is too large
  // Reconnect quickly after a bridge restart; RemoteWatcher adds its own backoff.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                   static_cast<int>(options.max_backoff.count()));
  return grpc::CreateCustomChannel(options.address, *credentials, arguments);
}

std::shared_ptr<Connection> client::ConnectionOver(std::shared_ptr<grpc::Channel> channel,
                                                   const RemoteOptions& options) {
  auto connection = std::make_shared<Connection>();
  connection->options = options;
  connection->description = "dict '" + options.dict + "' via " + options.address;
  connection->channel = std::move(channel);
  connection->stub = v1::Dict::NewStub(connection->channel);
  return connection;
}

namespace {

Result<std::shared_ptr<Connection>> Connect(const RemoteOptions& options) {
  auto channel = client::OpenChannel(options);
  if (!channel.ok()) return channel.status();
  return client::ConnectionOver(std::move(*channel), options);
}

}  // namespace

Result<std::unique_ptr<RemoteDict>> RemoteDict::Open(const RemoteOptions& options) {
  if (options.address.empty() || options.dict.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "RemoteDict needs a bridge address and a dict name");
  }
  auto connected = Connect(options);
  if (!connected.ok()) return connected.status();
  std::shared_ptr<Connection> connection = std::move(*connected);

  // The dict must exist: Status answers NOT_FOUND otherwise. Waits for the bridge up to
  // open_timeout (it may be starting). Status is idempotent, so a connection lost with the call
  // in flight (a bridge killed or restarting: UNAVAILABLE despite wait_for_ready) is retried
  // until open_timeout, as a bridge not yet listening is waited for.
  v1::StatusRequest status_request;
  status_request.set_dict(options.dict);
  v1::StatusResponse status_response;
  const auto open_deadline = std::chrono::steady_clock::now() + options.open_timeout;
  grpc::Status opened;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        open_deadline - std::chrono::steady_clock::now());
    grpc::ClientContext context;
    connection->Prepare(&context, std::max(left, std::chrono::milliseconds(1)));
    context.set_wait_for_ready(true);
    opened = connection->stub->Status(&context, status_request, &status_response);
    if (opened.error_code() != grpc::StatusCode::UNAVAILABLE ||
        left <= std::chrono::milliseconds(100)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (opened.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      connection->channel->GetState(false) != GRPC_CHANNEL_READY) {
    // Waiting for a connection that never came is "unreachable", not a slow call.
    return Status(StatusCode::kUnavailable, connection->description +
                                                ": no bridge answered within " +
                                                std::to_string(options.open_timeout.count()) +
                                                " ms (is shmdict-bridge running there?)");
  }
  if (!opened.ok()) return connection->Describe(opened);

  auto impl = std::make_unique<Impl>();
  impl->connection = connection;
  impl->seen_revision = status_response.revision();
  if (options.mirror) {
    Impl* raw = impl.get();
    impl->feed = std::make_unique<RemoteWatcher>(
        connection, 0, 0, false,
        [raw](Result<ChangeBatch> batch) { raw->OnBatch(std::move(batch)); },
        [raw](uint64_t incarnation, bool replaced) { raw->OnDict(incarnation, replaced); });
    const auto deadline = std::chrono::steady_clock::now() + options.open_timeout;
    std::unique_lock lock(impl->progress_mu);
    while (impl->mirror_revision.load() < status_response.revision()) {
      if (impl->mirror_stopped) {
        Status failed = impl->mirror_error;
        lock.unlock();
        return failed.ok() ? Status(StatusCode::kUnavailable,
                                    connection->description + ": the mirror stopped")
                           : failed;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        lock.unlock();
        return Status(StatusCode::kDeadlineExceeded,
                      connection->description + ": no copy of the dict within the open timeout");
      }
      impl->progress_cv.wait_for(lock, std::chrono::milliseconds(20));
    }
  }
  return std::unique_ptr<RemoteDict>(new RemoteDict(std::move(impl)));
}

const std::string& RemoteDict::name() const { return impl_->connection->options.dict; }

Result<bool> RemoteDict::Get(std::string_view key, Value* out) {
  Impl& d = *impl_;
  if (!d.feed) return d.GetFromBridge(key, out);
  {
    std::shared_lock lock(d.map_mu);
    auto it = d.map.find(key);
    if (it != d.map.end()) {
      out->assign(it->second.type(), it->second.data());
      return true;
    }
    if (!d.too_large_keys.contains(key)) return false;
  }
  return d.GetFromBridge(key, out);
}

Result<std::optional<Value>> RemoteDict::Get(std::string_view key) {
  Value value;
  Result<bool> found = Get(key, &value);
  if (!found.ok()) return found.status();
  if (!*found) return std::optional<Value>();
  return std::optional<Value>(std::move(value));
}

Result<bool> RemoteDict::Contains(std::string_view key) {
  Impl& d = *impl_;
  if (d.feed) {
    std::shared_lock lock(d.map_mu);
    return d.map.contains(key) || d.too_large_keys.contains(key);
  }
  Value ignored;
  return d.GetFromBridge(key, &ignored);
}

Result<std::vector<std::pair<std::string, Value>>> RemoteDict::Items() {
  Impl& d = *impl_;
  std::vector<std::pair<std::string, Value>> items;
  if (d.feed) {
    std::vector<std::string> large;
    {
      std::shared_lock lock(d.map_mu);
      items.reserve(d.map.size());
      for (const auto& [key, value] : d.map) items.emplace_back(key, value);
      large.assign(d.too_large_keys.begin(), d.too_large_keys.end());
    }
    for (const std::string& key : large) {
      Value value;
      Result<bool> found = d.GetFromBridge(key, &value);
      if (!found.ok()) return found.status();
      if (*found) items.emplace_back(key, std::move(value));
    }
    return items;
  }
  const uint64_t epoch = d.start_overs.load();
  grpc::ClientContext context;
  d.connection->Prepare(&context, d.connection->options.call_timeout);
  v1::ListRequest request;
  request.set_dict(d.connection->options.dict);
  auto reader = d.connection->stub->List(&context, request);
  v1::ListResponse response;
  // Values over the bridge's message limit come as markers (v1.3): read each with its own Get, as
  // the mirror does, and name the key when even that cannot bring it.
  std::vector<v1::Change> large;
  while (reader->Read(&response)) {
    for (const v1::Entry& entry : response.entries()) {
      auto& item = items.emplace_back(entry.key(), Value());
      Status decoded = wire::FromProto(entry.value(), &item.second);
      if (!decoded.ok()) return decoded;
    }
    for (v1::Change& marker : *response.mutable_too_large()) large.push_back(std::move(marker));
    if (response.last()) d.ObserveRead(response.revision(), epoch);
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return d.connection->Describe(status);
  for (const v1::Change& marker : large) {
    Value value;
    Result<bool> found = d.GetFromBridge(marker.key(), &value);
    if (!found.ok()) {
      return Status(found.status().code(),
                    "dict '" + d.connection->options.dict + "': the value of key '" + marker.key() +
                        "' (" + std::to_string(marker.value_size()) +
                        " bytes) is larger than the bridge sends in a listing and could not be "
                        "read alone: " +
                        found.status().message());
    }
    if (*found) items.emplace_back(marker.key(), std::move(value));
  }
  return items;
}

Result<std::vector<std::string>> RemoteDict::Keys() {
  Impl& d = *impl_;
  if (d.feed) {
    std::shared_lock lock(d.map_mu);
    std::vector<std::string> keys;
    keys.reserve(d.map.size() + d.too_large_keys.size());
    for (const auto& [key, value] : d.map) keys.push_back(key);
    keys.insert(keys.end(), d.too_large_keys.begin(), d.too_large_keys.end());
    return keys;
  }
  auto items = Items();
  if (!items.ok()) return items.status();
  std::vector<std::string> keys;
  for (auto& [key, value] : *items) keys.push_back(std::move(key));
  return keys;
}

Result<uint64_t> RemoteDict::Size() {
  Impl& d = *impl_;
  if (d.feed) {
    std::shared_lock lock(d.map_mu);
    return static_cast<uint64_t>(d.map.size() + d.too_large_keys.size());
  }
  v1::StatusRequest request;
  request.set_dict(d.connection->options.dict);
  v1::StatusResponse response;
  Stamp stamp;
  Status status = d.Unary(&v1::Dict::Stub::Status, request, &response, &stamp);
  if (!status.ok()) return status;
  d.ObserveRead(response.revision(), stamp.epoch);
  return response.entries();
}

Result<uint64_t> RemoteDict::Set(std::string_view key, const Value& value) {
  v1::SetRequest request;
  request.set_dict(name());
  request.set_key(key.data(), key.size());
  wire::ToProto(value, request.mutable_value());
  v1::WriteResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::Set, request, &response, &stamp);
  if (!status.ok()) return status;
  return impl_->Committed(response.revision(), stamp);
}

Result<uint64_t> RemoteDict::Update(const std::vector<std::pair<std::string, Value>>& items) {
  std::vector<Change> changes(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    changes[i].key = items[i].first;
    changes[i].value = items[i].second;
  }
  return Apply(changes);
}

Result<uint64_t> RemoteDict::Apply(const std::vector<Change>& changes) {
  v1::BatchRequest request;
  request.set_dict(name());
  for (const Change& change : changes) {
    v1::Mutation* mutation = request.add_mutations();
    mutation->set_op(wire::ToProto(change.op));
    mutation->set_key(change.key);
    if (change.op == ChangeOp::kSet) wire::ToProto(change.value, mutation->mutable_value());
  }
  v1::WriteResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::Batch, request, &response, &stamp);
  if (!status.ok()) return status;
  return impl_->Committed(response.revision(), stamp);
}

Result<bool> RemoteDict::Erase(std::string_view key) {
  v1::DeleteRequest request;
  request.set_dict(name());
  request.set_key(key.data(), key.size());
  v1::DeleteResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::Delete, request, &response, &stamp);
  if (!status.ok()) return status;
  impl_->Committed(response.revision(), stamp, response.existed());
  return response.existed();
}

Result<std::optional<Value>> RemoteDict::Pop(std::string_view key) {
  v1::PopRequest request;
  request.set_dict(name());
  request.set_key(key.data(), key.size());
  v1::PopResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::Pop, request, &response, &stamp);
  if (!status.ok()) return status;
  impl_->Committed(response.revision(), stamp, response.found());
  if (!response.found()) return std::optional<Value>();
  Value value;
  wire::FromProto(response.value(), &value).IgnoreError();
  return std::optional<Value>(std::move(value));
}

Result<std::optional<std::pair<std::string, Value>>> RemoteDict::PopItem() {
  v1::PopItemRequest request;
  request.set_dict(name());
  v1::PopResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::PopItem, request, &response, &stamp);
  if (!status.ok()) return status;
  impl_->Committed(response.revision(), stamp, response.found());
  using Item = std::pair<std::string, Value>;
  if (!response.found()) return std::optional<Item>();
  Value value;
  wire::FromProto(response.value(), &value).IgnoreError();
  return std::optional<Item>(Item(response.key(), std::move(value)));
}

Result<Value> RemoteDict::SetDefault(std::string_view key, const Value& default_value) {
  v1::SetDefaultRequest request;
  request.set_dict(name());
  request.set_key(key.data(), key.size());
  wire::ToProto(default_value, request.mutable_default_value());
  v1::SetDefaultResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::SetDefault, request, &response, &stamp);
  if (!status.ok()) return status;
  impl_->Committed(response.revision(), stamp);
  Value value;
  wire::FromProto(response.value(), &value).IgnoreError();
  return value;
}

Result<uint64_t> RemoteDict::Clear() {
  v1::ClearRequest request;
  request.set_dict(name());
  v1::WriteResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::Clear, request, &response, &stamp);
  if (!status.ok()) return status;
  return impl_->Committed(response.revision(), stamp);
}

Result<bool> RemoteDict::CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                                       const std::optional<Value>& desired) {
  v1::CompareAndSetRequest request;
  request.set_dict(name());
  request.set_key(key.data(), key.size());
  if (expected) wire::ToProto(*expected, request.mutable_expected());
  if (desired) wire::ToProto(*desired, request.mutable_desired());
  v1::CompareAndSetResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::CompareAndSet, request, &response, &stamp);
  if (!status.ok()) return status;
  impl_->Committed(response.revision(), stamp, response.swapped());
  return response.swapped();
}

Result<int64_t> RemoteDict::Increment(std::string_view key, int64_t delta) {
  v1::IncrementRequest request;
  request.set_dict(name());
  request.set_key(key.data(), key.size());
  request.set_delta(delta);
  v1::IncrementResponse response;
  Stamp stamp;
  Status status = impl_->Unary(&v1::Dict::Stub::Increment, request, &response, &stamp);
  if (!status.ok()) return status;
  impl_->Committed(response.revision(), stamp);
  return response.value();
}

uint64_t RemoteDict::last_commit_revision() const { return impl_->last_commit.load(); }

uint64_t RemoteDict::revision() {
  return impl_->feed ? impl_->mirror_revision.load() : impl_->seen_revision.load();
}

Result<uint64_t> RemoteDict::WaitForChange(uint64_t after_revision,
                                           std::chrono::nanoseconds timeout) {
  Impl& d = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (d.feed) {
    std::unique_lock lock(d.progress_mu);
    // A dict replaced meanwhile is a change, whatever its revision (it started over).
    const uint64_t replacements = d.replacements;
    while (d.mirror_revision.load() <= after_revision && d.replacements == replacements) {
      if (d.mirror_stopped && !d.mirror_error.ok()) return d.mirror_error;
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status(StatusCode::kDeadlineExceeded,
                      d.connection->description + ": no change after revision " +
                          std::to_string(after_revision) + " within the timeout");
      }
      d.progress_cv.wait_until(lock, deadline);
    }
    return d.mirror_revision.load();
  }
  const uint64_t epoch = d.start_overs.load();
  RemoteWatcher watcher(d.connection, after_revision, 1);
  for (;;) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::nanoseconds::zero()) {
      return Status(StatusCode::kDeadlineExceeded,
                    d.connection->description + ": no change after revision " +
                        std::to_string(after_revision) + " within the timeout");
    }
    Result<ChangeBatch> batch = watcher.Next(WatchLimits{}, left);
    if (!batch.ok() && batch.status().code() == StatusCode::kAborted) {
      // The dict was replaced while it waited: a change whatever the new dict's revision, as with
      // a mirror. kNotFound when it was deleted and not created again. The question takes no
      // longer than the caller has left (nor than a call may); when it fails otherwise, the
      // change still happened, at a revision of the new dict this object does not know yet (0).
      const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      const auto ask_for =
          std::clamp(remaining, std::chrono::milliseconds(1), d.connection->options.call_timeout);
      Result<std::pair<uint64_t, uint64_t>> now = d.CurrentIncarnation(ask_for);
      if (!now.ok() && now.status().code() == StatusCode::kNotFound) return now.status();
      if (!now.ok()) {
        d.LearnReplaced(0, epoch);
        return d.seen_revision.load();
      }
      d.LearnReplaced(now->first, epoch);
      d.ObserveRead(now->second, d.start_overs.load());
      return now->second;
    }
    if (!batch.ok()) return batch.status();
    if (batch->revision > after_revision) {
      d.ObserveRead(batch->revision, epoch);
      return batch->revision;
    }
  }
}

Result<std::unique_ptr<Watcher>> RemoteDict::Watch(uint64_t after_revision) {
  return std::unique_ptr<Watcher>(
      std::make_unique<RemoteWatcher>(impl_->connection, after_revision, 0));
}

bool RemoteDict::mirror_connected() const { return impl_->feed && impl_->feed->connected(); }

uint64_t RemoteDict::mirror_resyncs() const { return impl_->resyncs.load(); }

uint64_t RemoteDict::mirror_generation() const {
  return impl_->generation.load(std::memory_order_acquire);
}

}  // namespace shmdict
