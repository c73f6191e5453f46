// DictRegistry: the bridge's dicts, attached lazily by name, each with its handles (a SharedDict)
// and the fan-out that feeds its Watch streams.
//
// Why leases: a Dict handle is thread-compatible and attaching costs ~80 us, so a call neither
// shares one handle with every other client (one lock for all) nor attaches per call: it leases
// a handle from the dict's SharedDict (shmdict/shared_dict.h) and returns it when done. Idle
// handles are capped per dict (Limits::max_idle_handles_per_dict).
//
// Why one notifier thread per watched dict: a stream that has caught up must be woken when the
// dict changes. One thread per dict sleeps on the dict's futex, has the dict's WatchPump
// (watch_pump.h) read and encode what changed, once for all of its Watch streams, and then pokes
// the streams, so reactors never block. The pump belongs to the entry from the first Watch stream
// of the dict to the last (SubscribeWatch, Unsubscribe).
//
// A dict unlinked and created again under the same name is noticed (Dict::incarnation): leases
// then attach the new dict, and the streams of the old one end with ABORTED so their clients
// resubscribe from revision 0.
//
// Thread-safety: every method may be called from any thread. Lifetime: the registry must outlive
// every lease and stream; Shutdown() ends the streams and stops the notifier threads.
#ifndef SHMDICT_BRIDGE_DICT_REGISTRY_H_
#define SHMDICT_BRIDGE_DICT_REGISTRY_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metrics.h"
#include "shmdict/dict.h"
#include "shmdict/shared_dict.h"
#include "watch_pump.h"

namespace shmdict::bridge {

// What the fan-out needs of a stream: poke it when the dict may have changed or time passed, and
// end it. Implemented by the Watch reactor and by a Get parked until a revision (service.cc).
class Subscriber {
 public:
  virtual ~Subscriber() = default;
  // Sends what is ready, if no write is in flight. Never blocks.
  virtual void Pump() = 0;
  // Ends the stream with `status` (after the write in flight, if any).
  virtual void End(const Status& status) = 0;
  // Every revision up to this one was sent completely (metrics: the slowest subscriber's lag).
  virtual uint64_t SentRevision() const = 0;
  // Whether this is a Watch stream (the metrics' and presence record's subscriber counts) rather
  // than a call parked until a revision (a Get with min_revision).
  virtual bool IsWatchStream() const { return true; }
};

struct DictEntry;

class DictRegistry {
 public:
  struct Limits {
    // Idle handles kept per dict for the next calls, beyond the handle the dict was attached
    // with (SharedDict's first, which stays open unless a Watch stream took it with Release());
    // a handle returned when this many are idle is closed (--max-idle-handles).
    size_t max_idle_handles_per_dict = SharedDict::kDefaultMaxIdleHandles;
    // How often the notifier checks that the dict was not unlinked or replaced, and pokes idle
    // streams (their progress messages) when nothing changes.
    std::chrono::milliseconds tick{50};
  };
  // Called when a dict becomes served or stops being served (health per dict).
  using ServingCallback = std::function<void(const std::string& name, bool serving)>;

  explicit DictRegistry(Limits limits, ServingCallback on_serving = nullptr);
  ~DictRegistry();
  DictRegistry(const DictRegistry&) = delete;
  DictRegistry& operator=(const DictRegistry&) = delete;

  // A handle of one dict, used by one call at a time.
  class Lease {
   public:
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) noexcept = default;
    Dict& dict() { return *handle_; }
    // Takes the handle for good (it never returns to the pool): a Watch stream keeps the handle
    // its watcher came from for the stream's life, since a watcher fails once its handle closes.
    std::unique_ptr<Dict> Release() { return handle_.Release(); }
    const std::shared_ptr<DictEntry>& entry() const { return entry_; }

   private:
    friend class DictRegistry;
    Lease(std::shared_ptr<DictEntry> entry, SharedDict::Lease handle)
        : entry_(std::move(entry)), handle_(std::move(handle)) {}
    std::shared_ptr<DictEntry> entry_;
    SharedDict::Lease handle_;  // destroyed first: a closed entry's handle closes on return
  };

  // Attaches (never creates) the dict. kNotFound if it does not exist, kInvalidArgument for a bad
  // name; the dict's open errors otherwise.
  Result<Lease> Acquire(std::string_view name);
  // A handle of the dict of `entry` itself (not of whatever the name now holds): a Watch stream
  // falling back to a watcher of its own. kFailedPrecondition once the entry retired.
  Result<Lease> Reacquire(const std::shared_ptr<DictEntry>& entry);

  // Registers a stream for the fan-out of the lease's dict (starting its notifier thread).
  void Subscribe(const std::shared_ptr<DictEntry>& entry, Subscriber* subscriber);
  // Subscribe for a Watch stream: also returns the dict's pump, started with `limits` by the
  // dict's first Watch stream (the limits of a running pump are not changed: a stream with other
  // limits reads on its own). Null when the entry retired (the stream was ended) or the pump could
  // not start (the streams then read on their own; logged).
  std::shared_ptr<WatchPump> SubscribeWatch(const std::shared_ptr<DictEntry>& entry,
                                            Subscriber* subscriber,
                                            const WatchPump::Limits& limits);
  // After Unsubscribe returns, the fan-out never calls the subscriber again. The last Watch
  // stream's Unsubscribe stops the pump (streams still holding it keep its frames alive).
  void Unsubscribe(const std::shared_ptr<DictEntry>& entry, Subscriber* subscriber);

  // Every Watch stream from its creation to its end, subscribed to a dict or not (one still
  // waiting for its start message): shutdown and a token reload must reach them all, and a
  // housekeeping thread pokes them every few ticks (so that a stream whose start message never
  // comes times out). Track returns false after Shutdown: the stream must then end itself.
  // After Untrack returns, the registry never calls the stream again.
  bool Track(Subscriber* stream);
  void Untrack(Subscriber* stream);
  // Pokes every tracked stream now (after a token reload: each rechecks its token).
  void PokeAll();

  // Ends every stream (subscribed or only tracked) with `status` and stops the notifiers; after
  // it returns the registry never calls a stream again (the streams may be freed without
  // Untrack). Later Acquire calls fail with kUnavailable, later Track calls return false.
  void Shutdown(const Status& status);

  // Names of the dicts currently attached.
  std::vector<std::string> AttachedNames();
  // The dicts currently attached, each with its number of Watch streams (for the bridge's
  // presence record); parked Gets, subscribers too, are not counted (Subscriber::IsWatchStream).
  std::map<std::string, uint64_t> SubscriberCounts();

  // Figures of every attached dict (metrics); reads each dict's revision through a lease.
  std::vector<DictStats> Stats();

 private:
  // A copy of the attached entries, taken under mu_.
  std::vector<std::shared_ptr<DictEntry>> Entries();
  void Retire(const std::shared_ptr<DictEntry>& entry, const Status& why);
  // Removes `entry` from entries_ if it is still the one registered under its name.
  void Forget(const std::shared_ptr<DictEntry>& entry);
  void RunNotifier(std::shared_ptr<DictEntry> entry);
  void RunHousekeeping();

  const Limits limits_;
  const ServingCallback on_serving_;
  std::mutex mu_;
  bool shut_down_ = false;
  std::map<std::string, std::shared_ptr<DictEntry>, std::less<>> entries_;

  // Tracked streams; the housekeeping thread holds streams_mu_ while poking, so an untracked
  // stream is never poked again. Started by the first Track, stopped by Shutdown.
  std::mutex streams_mu_;
  std::condition_variable streams_cv_;
  std::set<Subscriber*> streams_;
  bool streams_closed_ = false;  // guarded by streams_mu_
  std::thread housekeeping_;
};

// One attached dict. Internal to the registry; streams hold it as an opaque key.
struct DictEntry {
  explicit DictEntry(SharedDict handles)
      : name(handles.name()), incarnation(handles.incarnation()), handles(std::move(handles)) {}

  const std::string name;
  const uint64_t incarnation;
  // Set once, together, under subscribers_mu; `retired` may also be read without it.
  std::atomic<bool> retired{false};
  // Why it retired, written once under subscribers_mu before `retired` is set: what a late
  // Subscribe gets, readable without the lock once `retired` is seen (Reacquire).
  Status retire_status;
  // Thread-safe; closed when the entry retires (leases still out close their handle on return).
  SharedDict handles;

  // Fan-out: guarded by subscribers_mu; the notifier holds it while poking, so a subscriber that
  // unsubscribed is never poked again.
  std::mutex subscribers_mu;
  std::set<Subscriber*> subscribers;
  size_t watch_streams = 0;  // subscribers that are Watch streams (guarded by subscribers_mu)
  // From the first Watch stream to the last, replaced by the next stream when it failed (guarded
  // by subscribers_mu; Fill runs outside it, on the notifier thread, with a reference of its own).
  std::shared_ptr<WatchPump> pump;
  std::thread notifier;

  // Metrics (relaxed counters).
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> changes_sent{0};
  std::atomic<uint64_t> watch_joins{0};    // a stream moved to the pump's window
  std::atomic<uint64_t> watch_leaves{0};   // ... and back to a watcher of its own
  std::atomic<uint64_t> pump_restarts{0};  // the log lapped the pump
  bool notifier_stop = false;              // guarded by subscribers_mu
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_DICT_REGISTRY_H_
