// The rules for dict names, shared by Dict (open, unlink) and LocalCatalog (inspect, create).
#ifndef SHMDICT_CORE_DICT_NAMES_H_
#define SHMDICT_CORE_DICT_NAMES_H_

#include <string_view>

#include "shmdict/status.h"

namespace shmdict::internal {

// kInvalidArgument naming the problem, or OK. Names with '@' are the engine's own (nested
// children "parent@c..."): `allow_reserved` lets a caller attach to or inspect them, never create.
Status ValidateDictName(std::string_view name, bool allow_reserved);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_DICT_NAMES_H_
