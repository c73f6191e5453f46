// The rules for dict names, shared by Dict (open, unlink) and LocalCatalog (inspect, create).
#ifndef SHMDICT_CORE_DICT_NAMES_H_
#define SHMDICT_CORE_DICT_NAMES_H_

#include <string_view>

#include "shmdict/status.h"

namespace shmdict::internal {

// kInvalidArgument naming the problem, or OK. Names with '@' are the engine's own: a nested
// child's ("PARENT@c" + hex, IsNestedChildName), which `allow_nested_child` lets a caller attach
// to, inspect or unlink (never create under its own name), and a dict's internal segments'
// (snapshots, large values), which are never a dict and are always refused. A name starting with
// '-' is refused: every command line would take it for a flag.
Status ValidateDictName(std::string_view name, bool allow_nested_child);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_DICT_NAMES_H_
