// LMDB (liblmdb) as a user shares a map between processes: one environment directory on tmpfs
// (/dev/shm), opened by every process. MDB_NOSYNC | MDB_NOMETASYNC: shmdict is not durable either,
// so neither pays for fsync. One write transaction per write, so other processes see it at once;
// reads through one read-only transaction reused with mdb_txn_reset / mdb_txn_renew (LMDB's
// documented fast path for repeated reads).
#include <lmdb.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>

#include "client_peer.h"
#include "systems.h"

namespace peers {
namespace {

void CheckMdb(int rc, const char* what) {
  if (rc != MDB_SUCCESS) Fail(std::string("lmdb ") + what + ": " + mdb_strerror(rc));
}

MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

class LmdbClient : public PollingWatch<LmdbClient> {
 public:
  static constexpr const char* kName = "lmdb";
  static constexpr bool kCrossProcess = true;

  static std::string Unavailable() { return ""; }

  static std::string Describe() {
    return std::string(mdb_version(nullptr, nullptr, nullptr)) +
           ". LMDB environment directory on tmpfs (/dev/shm), flags MDB_NOSYNC|MDB_NOMETASYNC (not "
           "durable, like shmdict). Read: mdb_txn_renew + mdb_get + copy + mdb_txn_reset of one "
           "reused read-only txn. Write: one write txn per write (begin, put, commit), so other "
           "processes see it. Bulk import: one write txn per 'batch' puts. Attach: "
           "mdb_env_create/open + read txn + mdb_dbi_open + first get.";
  }
  static std::string WatchUnavailable(WatchMode mode) {
    return mode == WatchMode::kNotify ? "LMDB has no change notification" : "";
  }
  static std::string WatchDescription(WatchMode) {
    return "polling reader (LMDB has no notification): renew txn, get, reset, until the value "
           "changes";
  }

  static std::unique_ptr<LmdbClient> Create(const std::string& tag, const Workload& sizing) {
    static int count = 0;
    const std::string dir = NewName("lmdb_" + tag + std::to_string(count++));
    const std::string path = "/dev/shm/" + dir;
    if (mkdir(path.c_str(), 0700) != 0) Fail("mkdir " + path + " failed");
    // Sparse on tmpfs: only the pages written cost memory.
    const uint64_t per_key = sizing.value_bytes + 16 + 64;
    const uint64_t map_size = std::max<uint64_t>(uint64_t{64} << 20, sizing.n * per_key * 4);
    auto client = std::unique_ptr<LmdbClient>(new LmdbClient(path, map_size));
    client->owned_dir_ = dir;
    return client;
  }

  // where: "<directory>;<map size>".
  static std::unique_ptr<LmdbClient> Connect(const std::string& where) {
    const size_t semicolon = where.find(';');
    if (semicolon == std::string::npos) Fail("bad lmdb location '" + where + "'");
    return std::unique_ptr<LmdbClient>(
        new LmdbClient(where.substr(0, semicolon), std::stoull(where.substr(semicolon + 1))));
  }

  ~LmdbClient() {
    if (read_txn_ != nullptr) mdb_txn_abort(read_txn_);
    if (env_ != nullptr) mdb_env_close(env_);
    if (!owned_dir_.empty()) RemoveShmEntry(owned_dir_);
  }

  std::string where() const { return path_ + ";" + std::to_string(map_size_); }

  std::optional<std::string_view> Get(std::string_view key) {
    CheckMdb(mdb_txn_renew(read_txn_), "mdb_txn_renew");
    MDB_val k = Val(key);
    MDB_val v;
    const int rc = mdb_get(read_txn_, dbi_, &k, &v);
    if (rc == MDB_SUCCESS) out_.assign(static_cast<const char*>(v.mv_data), v.mv_size);
    mdb_txn_reset(read_txn_);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    CheckMdb(rc, "mdb_get");
    return std::string_view(out_);
  }

  void Set(std::string_view key, std::string_view value) {
    MDB_txn* txn = nullptr;
    CheckMdb(mdb_txn_begin(env_, nullptr, 0, &txn), "mdb_txn_begin");
    MDB_val k = Val(key);
    MDB_val v = Val(value);
    if (const int rc = mdb_put(txn, dbi_, &k, &v, 0); rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      CheckMdb(rc, "mdb_put");
    }
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }

  void Import(const Workload& w, size_t batch) {
    for (uint64_t i = 0; i < w.n; i += batch) {
      MDB_txn* txn = nullptr;
      CheckMdb(mdb_txn_begin(env_, nullptr, 0, &txn), "mdb_txn_begin");
      for (uint64_t j = i; j < std::min<uint64_t>(w.n, i + batch); ++j) {
        MDB_val k = Val(w.key(static_cast<uint32_t>(j)));
        MDB_val v = Val(w.value(static_cast<uint32_t>(j), 0));
        if (const int rc = mdb_put(txn, dbi_, &k, &v, 0); rc != MDB_SUCCESS) {
          mdb_txn_abort(txn);
          CheckMdb(rc, "mdb_put (import)");
        }
      }
      CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit (import)");
    }
  }

  uint64_t Count() {
    MDB_stat stat;
    CheckMdb(mdb_env_stat(env_, &stat), "mdb_env_stat");
    return stat.ms_entries;
  }

  Memory StoreMemory() {
    Memory m;
    m.kib = static_cast<double>(TmpfsBytes(NameIsExactly, owned_dir_)) / 1024;
    m.how = "tmpfs pages of the environment directory (data.mdb + lock.mdb)";
    return m;
  }

 private:
  LmdbClient(std::string path, uint64_t map_size) : path_(std::move(path)), map_size_(map_size) {
    CheckMdb(mdb_env_create(&env_), "mdb_env_create");
    CheckMdb(mdb_env_set_mapsize(env_, map_size_), "mdb_env_set_mapsize");
    CheckMdb(mdb_env_open(env_, path_.c_str(), MDB_NOSYNC | MDB_NOMETASYNC, 0600), "mdb_env_open");
    MDB_txn* txn = nullptr;
    CheckMdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin (open)");
    if (const int rc = mdb_dbi_open(txn, nullptr, 0, &dbi_); rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      CheckMdb(rc, "mdb_dbi_open");
    }
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit (open)");
    CheckMdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &read_txn_), "mdb_txn_begin (read)");
    mdb_txn_reset(read_txn_);
  }

  std::string path_;
  uint64_t map_size_;
  std::string owned_dir_;  // the creator removes the directory
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  MDB_txn* read_txn_ = nullptr;
  std::string out_;
};

}  // namespace

std::unique_ptr<Peer> MakeLmdbPeer() { return std::make_unique<ClientPeer<LmdbClient>>(); }
int LmdbChildMain(const ChildArgs& args) { return ClientChildMain<LmdbClient>(args); }

}  // namespace peers
