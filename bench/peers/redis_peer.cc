// Redis as UltraDict's README uses it for reference: a redis-server the harness starts on
// 127.0.0.1 with a free port, no persistence (--save "" --appendonly no), and kills afterwards
// (RedisLauncher, tests/support/redis_launcher.h).
// Client: hiredis over loopback TCP, one synchronous command per operation (unpipelined); the
// bulk import pipelines MSETs, as a user loading data would.
#include <hiredis/hiredis.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "client_peer.h"
#include "redis_launcher.h"
#include "systems.h"

namespace peers {
namespace {

constexpr int kImportWindow = 16;  // MSETs in flight during the bulk import

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

redisContext* ConnectTcp(int port) {
  redisContext* c = redisConnect("127.0.0.1", port);
  if (c == nullptr) Fail("redis: cannot allocate a context");
  if (c->err != 0) {
    const std::string error = c->errstr;
    redisFree(c);
    Fail("redis connect 127.0.0.1:" + std::to_string(port) + ": " + error);
  }
  return c;
}

class RedisClient {
 public:
  static constexpr const char* kName = "redis";
  static constexpr bool kCrossProcess = true;

  static std::string Unavailable() {
    return shmdict::internal::RedisLauncher::FindServer().empty()
               ? "redis-server not found in PATH (package redis-server)"
               : "";
  }
  static std::string Describe() {
    // "Redis server v=7.0.15 sha=... malloc=jemalloc-5.3.0 bits=64 build=...": keep "v=...".
    const std::string version =
        shmdict::internal::RedisLauncher::Version(shmdict::internal::RedisLauncher::FindServer());
    return "redis-server " + version + ", hiredis " + std::to_string(HIREDIS_MAJOR) + "." +
           std::to_string(HIREDIS_MINOR) + "." + std::to_string(HIREDIS_PATCH) +
           ". redis-server on 127.0.0.1 (loopback TCP), --save \"\" --appendonly no, started and "
           "killed by the harness; hiredis with one synchronous command per operation "
           "(unpipelined GET, SET). Bulk import: pipelined MSET of 'batch' keys, 16 in flight. "
           "Attach: redisConnect + first GET.";
  }
  static std::string WatchUnavailable(WatchMode) { return ""; }
  static std::string WatchDescription(WatchMode mode) {
    return mode == WatchMode::kPoll
               ? "polling reader: GET in a loop over loopback TCP until the value changes"
               : "keyspace notification (notify-keyspace-events K$, enabled only for this "
                 "measurement): SUBSCRIBE __keyspace@0__:key, then GET on a second connection";
  }

  static std::unique_ptr<RedisClient> Create(const std::string& tag, const Workload&) {
    static int count = 0;
    const std::string dir = NewName("redis_" + tag + std::to_string(count++));
    const std::string path = "/dev/shm/" + dir;
    if (mkdir(path.c_str(), 0700) != 0) Fail("mkdir " + path + " failed");
    auto client = std::unique_ptr<RedisClient>(new RedisClient());
    client->owned_dir_ = dir;
    shmdict::internal::RedisLaunchOptions options;
    options.dir = path;
    std::string error;
    client->server_ = shmdict::internal::RedisLauncher::Start(options, &error);
    if (client->server_ == nullptr) Fail(error);
    client->port_ = client->server_->port();
    client->ctx_ = ConnectTcp(client->port_);
    return client;
  }

  static std::unique_ptr<RedisClient> Connect(const std::string& where) {
    auto client = std::unique_ptr<RedisClient>(new RedisClient());
    client->port_ = std::stoi(where);
    client->ctx_ = ConnectTcp(client->port_);
    return client;
  }

  ~RedisClient() {
    if (sub_ != nullptr) redisFree(sub_);
    if (ctx_ != nullptr) redisFree(ctx_);
    if (server_ != nullptr) server_->Kill();  // nothing to save: no persistence
    if (!owned_dir_.empty()) RemoveShmEntry(owned_dir_);
  }

  std::string where() const { return std::to_string(port_); }

  std::optional<std::string_view> Get(std::string_view key) {
    Reply r = Command(ctx_, "GET %b", key.data(), key.size());
    if (r->type == REDIS_REPLY_NIL) return std::nullopt;
    if (r->type != REDIS_REPLY_STRING) Fail("redis GET: unexpected reply type");
    out_.assign(r->str, r->len);
    return std::string_view(out_);
  }

  void Set(std::string_view key, std::string_view value) {
    Reply r = Command(ctx_, "SET %b %b", key.data(), key.size(), value.data(), value.size());
    if (r->type != REDIS_REPLY_STATUS) Fail("redis SET: " + ReplyText(*r));
  }

  void Import(const Workload& w, size_t batch) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    int in_flight = 0;
    auto take_reply = [&] {
      void* raw = nullptr;
      if (redisGetReply(ctx_, &raw) != REDIS_OK) Fail(std::string("redis MSET: ") + ctx_->errstr);
      Reply r(static_cast<redisReply*>(raw));
      if (r->type != REDIS_REPLY_STATUS) Fail("redis MSET: " + ReplyText(*r));
      --in_flight;
    };
    for (uint64_t i = 0; i < w.n; i += batch) {
      argv.assign(1, "MSET");
      lengths.assign(1, 4);
      for (uint64_t j = i; j < std::min<uint64_t>(w.n, i + batch); ++j) {
        for (std::string_view s :
             {w.key(static_cast<uint32_t>(j)), w.value(static_cast<uint32_t>(j), 0)}) {
          argv.push_back(s.data());
          lengths.push_back(s.size());
        }
      }
      if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(),
                                 lengths.data()) != REDIS_OK) {
        Fail(std::string("redis MSET: ") + ctx_->errstr);
      }
      if (++in_flight >= kImportWindow) take_reply();
    }
    while (in_flight > 0) take_reply();
  }

  uint64_t Count() {
    Reply r = Command(ctx_, "DBSIZE");
    if (r->type != REDIS_REPLY_INTEGER) Fail("redis DBSIZE: " + ReplyText(*r));
    return static_cast<uint64_t>(r->integer);
  }

  Memory StoreMemory() {
    Memory m;
    if (server_ != nullptr) {
      std::map<std::string, int64_t> f = ReadSmapsRollup(server_->process().pid());
      if (auto it = f.find("Rss"); it != f.end()) m.kib = static_cast<double>(it->second);
    }
    m.how = "RSS of the redis-server process (smaps_rollup)";
    return m;
  }

  void BeginWatch(WatchMode mode) {
    if (mode == WatchMode::kNotify) ConfigNotify("K$");
  }
  void EndWatch(WatchMode mode) {
    if (mode == WatchMode::kNotify) ConfigNotify("");
  }

  void PrepareWatch(std::string_view key, WatchMode mode) {
    if (mode != WatchMode::kNotify) return;
    sub_ = ConnectTcp(port_);
    const std::string channel = "__keyspace@0__:" + std::string(key);
    Reply r = Command(sub_, "SUBSCRIBE %b", channel.data(), channel.size());
    if (r->type != REDIS_REPLY_ARRAY) Fail("redis SUBSCRIBE: " + ReplyText(*r));
  }

  std::string_view AwaitChange(std::string_view key, std::string_view last, WatchMode mode) {
    for (;;) {
      if (mode == WatchMode::kNotify) {
        void* raw = nullptr;
        if (redisGetReply(sub_, &raw) != REDIS_OK) Fail(std::string("redis: ") + sub_->errstr);
        freeReplyObject(raw);
      }
      if (std::optional<std::string_view> v = Get(key); v && *v != last) return *v;
    }
  }

 private:
  RedisClient() = default;

  template <typename... Args>
  static Reply Command(redisContext* c, const char* format, Args... args) {
    Reply r(static_cast<redisReply*>(redisCommand(c, format, args...)));
    if (!r) Fail(std::string("redis: ") + c->errstr);
    if (r->type == REDIS_REPLY_ERROR) Fail("redis: " + ReplyText(*r));
    return r;
  }

  static std::string ReplyText(const redisReply& r) {
    return r.str != nullptr ? std::string(r.str, r.len) : "reply type " + std::to_string(r.type);
  }

  void ConfigNotify(const char* events) {
    Reply r = Command(ctx_, "CONFIG SET notify-keyspace-events %s", events);
  }

  int port_ = 0;
  redisContext* ctx_ = nullptr;
  redisContext* sub_ = nullptr;  // the watch reader's subscriber connection
  std::unique_ptr<shmdict::internal::RedisLauncher> server_;
  std::string owned_dir_;
  std::string out_;
};

}  // namespace

std::unique_ptr<Peer> MakeRedisPeer() { return std::make_unique<ClientPeer<RedisClient>>(); }
int RedisChildMain(const ChildArgs& args) { return ClientChildMain<RedisClient>(args); }

}  // namespace peers
