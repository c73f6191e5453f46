// LocalCatalog: the dicts in this host's shared memory (/dev/shm), as a Catalog (catalog.h).
//
// Inspect reads a dict's header without attaching to it (no handle, no flock of its own beyond a
// probe), so `shmdict status` and `ls` never keep a dict alive or block its writers.
//
// Thread-safety: thread-safe; it holds only its log sink. Lifetime: Stores it opens are Dicts that
// outlive it.
#ifndef SHMDICT_LOCAL_CATALOG_H_
#define SHMDICT_LOCAL_CATALOG_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shmdict/catalog.h"
#include "shmdict/log_sink.h"

namespace shmdict {

class LocalCatalog final : public Catalog {
 public:
  // `log_sink`: where the dicts this catalog opens or creates report (dict.h, Options::log_sink).
  explicit LocalCatalog(std::shared_ptr<LogSink> log_sink = nullptr);

  std::string Where() const override;
  // Main segments in /dev/shm, sorted; names with '@' (a dict's own segments) are not listed.
  Result<std::vector<std::string>> ListNames() override;
  // Fills every field. kNotFound if missing; kInvalidArgument for a bad name (Dict::UnlinkByName's
  // rules); kFailedPrecondition (another layout version), kDataLoss (a damaged header).
  Result<DictStatus> Inspect(std::string_view name) override;
  // options.mode nullopt: 0600. The dict outlives this call (no auto-unlink). kInvalidArgument for
  // a name holding '@' (only OpenNested makes nested children) or otherwise bad (Options::name).
  Result<bool> Create(std::string_view name, const CreateOptions& options) override;
  // As Dict::UnlinkByName.
  Status Unlink(std::string_view name) override;
  // "" : true (shared memory needs no server). A dict: true when Inspect succeeds; kNotFound if
  // missing; false for a dict whose segment is damaged or of another layout version.
  Result<bool> CheckHealth(std::string_view name) override;
  // A Dict attached with CreateMode::kMustAttach.
  Result<std::unique_ptr<Store>> OpenStore(std::string_view name) override;

 private:
  std::shared_ptr<LogSink> log_sink_;
};

}  // namespace shmdict

#endif  // SHMDICT_LOCAL_CATALOG_H_
