#include "shmdict/local_catalog.h"

#include <fcntl.h>
#include <sys/file.h>

#include <utility>

#include "dict_names.h"
#include "main_segment.h"
#include "segment.h"
#include "shmdict/dict.h"

namespace shmdict {
namespace {

// `say_how_to_create`: for lookups, not for unlink (the user just wanted it gone).
Status Missing(std::string_view name, bool say_how_to_create = true) {
  std::string message = "dict " + QuoteForMessage(name) + " does not exist on this host";
  if (say_how_to_create) message += " (create it with: shmdict create " + std::string(name) + ")";
  return Status(StatusCode::kNotFound, std::move(message));
}

}  // namespace

LocalCatalog::LocalCatalog(std::shared_ptr<LogSink> log_sink) : log_sink_(std::move(log_sink)) {}

std::string LocalCatalog::Where() const { return "this host"; }

Result<std::vector<std::string>> LocalCatalog::ListNames() {
  std::vector<std::string> names;
  for (std::string& segment : internal::ListSegments("")) {
    if (segment.find('@') == std::string::npos) names.push_back(std::move(segment));
  }
  return names;
}

Result<DictStatus> LocalCatalog::Inspect(std::string_view name) {
  Status valid = internal::ValidateDictName(name, true);
  if (!valid.ok()) return valid;
  auto fd = internal::OpenSegment(name, O_RDONLY, 0);
  if (!fd.ok()) {
    if (fd.status().code() == StatusCode::kNotFound) return Missing(name);
    return Status(fd.status().code(),
                  "dict " + QuoteForMessage(name) + ": " + fd.status().message());
  }
  auto map = internal::MapExistingMainSegment(name, fd->get(), false);
  if (!map.ok()) return map.status();
  const auto* header = reinterpret_cast<const internal::MainHeader*>(map->data());
  DictStatus status = internal::StatusFromHeader(name, *header, map->size(), fd->get());
  // Nobody holds a shared flock <=> an exclusive one can be had. The probe is on our own open
  // file description, so our own handles (if any) count as attached too.
  if (flock(fd->get(), LOCK_EX | LOCK_NB) == 0) {
    flock(fd->get(), LOCK_UN);
    status.attached = false;
  } else {
    status.attached = true;
  }
  return status;
}

Result<bool> LocalCatalog::Create(std::string_view name, const CreateOptions& options) {
  Options open;
  open.name = std::string(name);
  open.create_mode = options.exclusive ? CreateMode::kMustCreate : CreateMode::kAttachOrCreate;
  if (options.buffer_size != 0) open.buffer_size = options.buffer_size;
  if (options.mode) open.mode = *options.mode;
  open.auto_unlink = false;  // the dict outlives this call
  open.log_sink = log_sink_;
  Result<Dict> dict = Dict::Open(open);
  if (!dict.ok()) return dict.status();
  const bool created = dict->created();
  if (Status closed = dict->Close(); !closed.ok()) return closed;
  return created;
}

Status LocalCatalog::Unlink(std::string_view name) {
  Status unlinked = Dict::UnlinkByName(name);
  if (unlinked.code() == StatusCode::kNotFound) return Missing(name, false);
  return unlinked;
}

Result<bool> LocalCatalog::CheckHealth(std::string_view name) {
  if (name.empty()) return true;
  Result<DictStatus> status = Inspect(name);
  if (status.ok()) return true;
  const StatusCode code = status.status().code();
  if (code == StatusCode::kNotFound || code == StatusCode::kInvalidArgument) {
    return status.status();
  }
  return false;
}

Result<std::unique_ptr<Store>> LocalCatalog::OpenStore(std::string_view name) {
  Options open;
  open.name = std::string(name);
  open.create_mode = CreateMode::kMustAttach;
  open.log_sink = log_sink_;
  Result<Dict> dict = Dict::Open(open);
  if (!dict.ok()) {
    if (dict.status().code() == StatusCode::kNotFound) return Missing(name);
    return dict.status();
  }
  return std::unique_ptr<Store>(std::make_unique<Dict>(std::move(*dict)));
}

}  // namespace shmdict
