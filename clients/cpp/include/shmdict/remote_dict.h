// RemoteDict: a shmdict dict reached through shmdict-bridge (gRPC), for processes that cannot map
// /dev/shm: containers, other hosts. It implements Store (store.h), so code written for a local
// Dict runs unchanged.
//
//   auto dict = shmdict::RemoteDict::Open({.address = "unix:/run/shmdict/bridge.sock",
//                                          .dict = "orders"});
//   if (!dict.ok()) { /* dict.status(): kNotFound, kUnavailable... */ }
//   (*dict)->Set("apples", shmdict::Value::Int(3)).IgnoreError();
//   auto v = (*dict)->Get("apples");   // from the local mirror: no round trip
//
// Mirror mode (the default): a background Watch stream keeps a local copy of the whole dict, so
// reads cost a local map lookup (as Kubernetes informers and Redis client-side caching do). The
// copy is as fresh as revision() says: reads may trail other clients' writes by the propagation
// delay, but never this object's own writes: a write returns once the mirror holds its revision.
// When the stream breaks, the client reconnects with jittered exponential backoff and resumes
// after the last revision it applied (no gap, no duplicate); a resync snapshot replaces the copy
// atomically. Meanwhile reads serve the last state (revision() stays put) and writes, which go to
// the bridge, still return their committed revision.
//
// Without a mirror (RemoteOptions::mirror = false, for dicts too big to copy): every read is a call
// to the bridge that asks for at least this object's latest commit (read-your-writes).
//
// A dict deleted and created again under its name (on its host, or through RemoteCatalog) is a new
// dict whose revisions start over at 1. The mirror notices it (its stream ends with ABORTED, or a
// bridge reached after a restart names another incarnation of the dict) and starts over: it is
// emptied, revision() drops back to 0 and then follows the new dict's revisions, and it fills from
// the new dict's snapshot or log. Keys of the old dict never outlive that in the mirror; reads in
// between see the new dict at some revision of its own (empty at first). A write to the new dict
// returns once the mirror holds it, as always; one that raced the replacement and committed to
// the old dict returns once the mirror has moved on. last_commit_revision() starts over too, as
// soon as this object learns of the replacement (its mirror starts over, a write reaches the new
// dict, or a WaitForChange without mirror sees it), and then follows its commits to the new dict,
// so a read from the bridge never waits for a revision of the old dict. Without a mirror nothing
// else tells: a Get whose min_revision the new dict has not reached fails on its deadline (the
// bridge's --max-wait-ms or call_timeout), and then asks which dict the name holds; when another
// one than its commits went to, the commits start over and the Get is asked again at once (so it
// takes up to call_timeout plus that deadline longer; one such question at a time per object,
// Gets that timed out meanwhile use its answer). An answer to a call that left before this object
// moved to another dict never moves it back (nor revision()); a write that raced the replacement
// may then not count in last_commit_revision(). A mirror whose resubscription after a
// replacement finds no dict (deleting and creating again is not atomic) tries again 5 times, at
// initial_backoff, before NOT_FOUND stops it. Watchers from Watch() end instead: see Watch.
// (Bridges older
// than this client name no incarnation: the mirror then starts over on ABORTED only, a write
// returns as soon as the mirror's revision, old or new, reaches the write's, and a Get without
// mirror is not asked again.)
//
// Thread-safety: thread-safe; every method may be called concurrently. Watchers it returns are
// thread-compatible (Cancel() from any thread). Lifetime: destroying it stops the mirror; watchers
// outliving it keep their own streams.
//
// Errors: as Store's. kUnavailable when the bridge cannot be reached (never "missing"); kNotFound
// when the dict does not exist (the bridge never creates one); kDeadlineExceeded when a call
// exceeded RemoteOptions::call_timeout. A write that failed with kUnavailable or kDeadlineExceeded
// may or may not have been committed (the bridge may have died after committing): read to find out.
#ifndef SHMDICT_REMOTE_DICT_H_
#define SHMDICT_REMOTE_DICT_H_

#include <chrono>
#include <memory>
#include <string>

#include "shmdict/store.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace shmdict {

struct RemoteOptions {
  // The bridge: "unix:/path/to/socket", "127.0.0.1:7377", "dns:///host:port".
  std::string address;
  // The dict's name.
  std::string dict;
  // Keep a local copy fed by Watch (see above); false: every read asks the bridge.
  bool mirror = true;
  // Deadline of each call to the bridge.
  std::chrono::milliseconds call_timeout{10000};
  // How long Open waits for the bridge and, with a mirror, for the first full copy.
  std::chrono::milliseconds open_timeout{10000};
  // Reconnect backoff: starts here, doubles up to max, each wait jittered by +-20%
  // (client-go's 0.8 s -> 30 s).
  std::chrono::milliseconds initial_backoff{800};
  std::chrono::milliseconds max_backoff{30000};
  // Sent on every call, Watch included, as metadata "authorization: Bearer TOKEN" (a bridge
  // started with --token-file needs one). Empty: none.
  std::string token;
  // TLS, by file (PEM): tls_ca verifies the bridge's certificate (empty: the system's roots);
  // tls_cert and tls_key, both or neither, present a client certificate (mTLS). Any of them set
  // makes the channel TLS; a file that cannot be read fails Open (and every RemoteCatalog call)
  // with kInvalidArgument.
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // Null: plaintext (loopback and Unix sockets), or TLS from the files above. Set: these
  // credentials, and the tls_* files are ignored.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class RemoteDict final : public Store {
 public:
  // (Listing, inspecting, creating and unlinking dicts on the bridge's host, and its health:
  // RemoteCatalog, remote_catalog.h.)

  // Connects and checks that the dict exists; with a mirror, returns once the mirror holds the
  // dict at least at its revision at the time of the call. kNotFound, kUnavailable,
  // kDeadlineExceeded (open_timeout), kInvalidArgument (empty address or dict name).
  static Result<std::unique_ptr<RemoteDict>> Open(const RemoteOptions& options);
  ~RemoteDict() override;
  RemoteDict(const RemoteDict&) = delete;
  RemoteDict& operator=(const RemoteDict&) = delete;

  const std::string& name() const override;

  Result<std::optional<Value>> Get(std::string_view key) override;
  Result<bool> Get(std::string_view key, Value* out) override;
  Result<bool> Contains(std::string_view key) override;
  Result<uint64_t> Size() override;
  Result<std::vector<std::pair<std::string, Value>>> Items() override;
  Result<std::vector<std::string>> Keys() override;

  Result<uint64_t> Set(std::string_view key, const Value& value) override;
  Result<uint64_t> Update(const std::vector<std::pair<std::string, Value>>& items) override;
  Result<uint64_t> Apply(const std::vector<Change>& changes) override;
  Result<bool> Erase(std::string_view key) override;
  Result<std::optional<Value>> Pop(std::string_view key) override;
  Result<std::optional<std::pair<std::string, Value>>> PopItem() override;
  Result<Value> SetDefault(std::string_view key, const Value& default_value) override;
  Result<uint64_t> Clear() override;
  Result<bool> CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                             const std::optional<Value>& desired) override;
  Result<int64_t> Increment(std::string_view key, int64_t delta) override;
  // This object's latest commit, from any thread (0 if none); after the dict was replaced, its
  // latest commit to the new dict.
  uint64_t last_commit_revision() const override;

  // With a mirror: the revision the mirror holds (back to 0 when the dict was replaced, see
  // above). Without: the latest revision this object saw (its commits and reads).
  uint64_t revision() override;
  // As Store's; unlike a local dict's, it also returns when the dict was replaced while it
  // waited, with the mirror's revision or, without a mirror, the new dict's (either perhaps not
  // above after_revision; 0 when asking the bridge for it failed otherwise than kNotFound, within
  // the time left); without a mirror, kNotFound when the dict was deleted and not created
  // again. (Without a
  // mirror a replacement is noticed only once its stream watched the old dict: one that started
  // after the replacement waits for after_revision of the new dict.)
  Result<uint64_t> WaitForChange(uint64_t after_revision,
                                 std::chrono::nanoseconds timeout) override;
  // A watcher with a stream of its own, resumed across bridge restarts without gap or duplicate.
  // When the dict is deleted and created again it ends, once it delivered every change of the
  // old dict the bridge sent: Next returns kAborted ("... was deleted or replaced (incarnation
  // N -> M) ...", or "(incarnation N)" when no bridge named the new one), then and on every later
  // call, and revision() stays at the old dict's; also when it was given no revision yet. A
  // stream that ends with ABORTED is resumed once to ask which dict the name holds (the bridge
  // also ends streams so when it failed to open its own handle: the same dict then goes on).
  // Its revisions never jump back to another dict's: watch again from revision 0 to follow the
  // new dict (a local Dict's watcher, by contrast, keeps reading the dict it mapped, which nobody
  // writes any more once unlinked). kNotFound from Next when the dict was gone when the stream
  // (re)started, as for a dict deleted and not created again.
  Result<std::unique_ptr<Watcher>> Watch(uint64_t after_revision) override;

  // Whether the mirror's stream is connected now (false without a mirror).
  bool mirror_connected() const;
  // Times the mirror was replaced by a resync snapshot (the first copy counts).
  uint64_t mirror_resyncs() const;
  // Counts the changes of the mirror's contents: every batch applied, snapshot swapped in, and
  // start over of a replaced dict (0 without a mirror). Unlike revision(), it never goes back or
  // repeats, so it identifies what the mirror held for a cache of values read from it (Python's
  // read cache); it moves after the contents changed, so a value read after loading it is at
  // least that new. One atomic load.
  uint64_t mirror_generation() const;

  struct Impl;

 private:
  explicit RemoteDict(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmdict

#endif  // SHMDICT_REMOTE_DICT_H_
