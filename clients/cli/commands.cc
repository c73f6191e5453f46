#include "commands.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "shmdict/dict.h"
#include "shmdict/dict_status.h"
#include "shmdict/local_catalog.h"
#include "shmdict/status.h"
#include "shmdict/store.h"
#include "shmdict/value.h"
#include "transport.h"
#include "value_json.h"

namespace shmdict::cli {
namespace {

// Import commits at whichever limit comes first: big enough to amortize the writer lock, small
// enough that a killed import loses little and never holds the lock for long.
constexpr size_t kImportBatchEntries = 1000;
constexpr size_t kImportBatchBytes = size_t{1} << 20;

// How often a blocked watch looks at the stop flag: the latency of Ctrl-C.
constexpr std::chrono::milliseconds kWatchStopCheck{100};

volatile sig_atomic_t g_stop_requested = 0;

void RequestStop(int /*signal*/) { g_stop_requested = 1; }

// The error contract promises one line, and messages may quote user input.
std::string OneLine(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return text;
}

std::string Abbreviate(std::string_view text) {
  constexpr size_t kMax = 60;
  if (text.size() <= kMax) return std::string(text);
  return std::string(text.substr(0, kMax)) + "...";
}

std::string Quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

int Fail(std::string_view dict, const Status& status) {
  std::cerr << OneLine("shmdict: dict " + Quoted(dict) + ": " + status.ToString()) << '\n';
  return kExitError;
}

int KeyMissing(std::string_view dict, std::string_view key) {
  std::cerr << OneLine("shmdict: dict " + Quoted(dict) + ": key " + Quoted(key) + " not found")
            << '\n';
  return kExitKeyMissing;
}

// The library's log lines (snapshot builds, lock recoveries) go to the CLI's own logger.
class SpdlogSink final : public LogSink {
 public:
  explicit SpdlogSink(std::shared_ptr<spdlog::logger> logger) : logger_(std::move(logger)) {}
  void Log(LogLevel level, std::string_view message) override {
    switch (level) {
      case LogLevel::kInfo:
        logger_->info("{}", message);
        break;
      case LogLevel::kWarning:
        logger_->warn("{}", message);
        break;
      case LogLevel::kError:
        logger_->error("{}", message);
        break;
    }
  }

 private:
  std::shared_ptr<spdlog::logger> logger_;  // spdlog loggers are thread-safe (_mt)
};

// The dicts the command works on, chosen once: this host's shared memory, or with --remote (or
// $SHMDICT_REMOTE) the host of a bridge. Every command is written against Catalog and Store, so
// it behaves the same either way (tests/bridge/cli_remote_test.cc runs both and compares).
Result<std::unique_ptr<Catalog>> OpenCatalog(const CommandLine& cl) {
  if (!cl.remote.empty()) return OpenRemoteCatalog(cl);
  std::shared_ptr<LogSink> sink;
  if (cl.logger) sink = std::make_shared<SpdlogSink>(cl.logger);
  return std::unique_ptr<Catalog>(std::make_unique<LocalCatalog>(std::move(sink)));
}

// The existing dict cl.name: data commands never create one by accident.
Result<std::unique_ptr<Store>> OpenStore(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return valid;
  Result<std::unique_ptr<Catalog>> catalog = OpenCatalog(cl);
  if (!catalog.ok()) return catalog.status();
  return (*catalog)->OpenStore(cl.name);
}

// Every entry, sorted by key, from either kind of Store.
Result<std::map<std::string, Value>> SortedItems(Store& dict) {
  Result<std::vector<std::pair<std::string, Value>>> items = dict.Items();
  if (!items.ok()) return items.status();
  return std::map<std::string, Value>(std::make_move_iterator(items->begin()),
                                      std::make_move_iterator(items->end()));
}

// ParseValue, plus the JSON check it leaves to callers.
std::optional<Value> ParseCliValue(ValueType type, std::string_view text) {
  if (type == ValueType::kJson && !Json::accept(text)) return std::nullopt;
  return ParseValue(type, text);
}

// A value built from the user's text or bytes is checked before anything is written, as the
// bridge checks a client's: its tag's encoding (readers trust a tag to describe its bytes), and a
// nested-dict reference must name one of `dict`'s own children (any other would make readers
// open, and the engine later unlink, a dict this command was not given). The message names the
// key.
Status CheckUserValue(std::string_view dict, std::string_view key, const Value& value) {
  Status valid = ValidateEncoding(value.view());
  if (valid.ok() && value.type() == ValueType::kNestedDict) {
    valid = CheckNestedReference(dict, value.data());
  }
  if (valid.ok()) return valid;
  return Status(valid.code(), "key " + Quoted(Abbreviate(key)) + ": " + valid.message());
}

std::optional<mode_t> ParseOctalMode(std::string_view text) {
  unsigned mode = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || mode > 0777) {
    return std::nullopt;
  }
  return static_cast<mode_t>(mode);
}

// False once stdout is gone (e.g. the reader of a pipe exited while SIGPIPE is ignored).
bool PrintLine(const std::string& line) {
  std::cout << line << '\n' << std::flush;
  return static_cast<bool>(std::cout);
}

// One watch output line. `key` and `value` are null for ops that do not carry them.
bool PrintChange(bool json, uint64_t revision, std::string_view op, const std::string* key,
                 const Value* value) {
  if (json) {
    Json line = Json::object();
    line["revision"] = revision;
    line["op"] = std::string(op);
    if (key != nullptr && value != nullptr) {
      EncodeEntry(*key, *value, &line);
    } else if (key != nullptr) {
      EncodeKey(*key, &line);
    }
    return PrintLine(line.dump());
  }
  std::string line = std::to_string(revision) + "\t" + std::string(op);
  if (key != nullptr) line += "\t" + *key;
  if (value != nullptr) line += "\t" + value->ToText();
  return PrintLine(line);
}

// A value the bridge did not send (over its message limit) is shown as such, never as empty.
bool PrintOmitted(bool json, uint64_t revision, std::string_view op, const Change& change) {
  if (json) {
    Json line = Json::object();
    line["revision"] = revision;
    line["op"] = std::string(op);
    EncodeKey(change.key, &line);
    line["type"] = TypeName(change.value.type());
    line["value"] = nullptr;
    line["value_too_large"] = true;
    line["value_size"] = change.value_size;
    return PrintLine(line.dump());
  }
  return PrintLine(std::to_string(revision) + "\t" + std::string(op) + "\t" + change.key + "\t<" +
                   std::to_string(change.value_size) +
                   " bytes: larger than the bridge's message limit>");
}

bool PrintChange(bool json, const Change& change) {
  switch (change.op) {
    case ChangeOp::kSet:
      if (change.value_too_large) return PrintOmitted(json, change.revision, "set", change);
      return PrintChange(json, change.revision, "set", &change.key, &change.value);
    case ChangeOp::kErase:
      return PrintChange(json, change.revision, "del", &change.key, nullptr);
    case ChangeOp::kClear:
      return PrintChange(json, change.revision, "clear", nullptr, nullptr);
  }
  return PrintChange(json, change.revision, "unknown", nullptr, nullptr);
}

Result<std::pair<std::string, Value>> ParseImportLine(const std::string& line) {
  Json doc;
  try {
    doc = Json::parse(line);
  } catch (const Json::parse_error& e) {
    // nlohmann's own position says "line 1" (it sees one line); keep only its description.
    const std::string what = e.what();
    const size_t detail = what.find("syntax error");
    return Status(StatusCode::kInvalidArgument,
                  "not valid JSON at column " + std::to_string(e.byte) +
                      (detail == std::string::npos ? "" : ": " + what.substr(detail)));
  }
  Result<std::pair<std::string, Value>> entry = DecodeEntry(doc);
  if (entry.ok() && entry->first.size() > kMaxKeyBytes) {
    return Status(StatusCode::kInvalidArgument, "key is " + std::to_string(entry->first.size()) +
                                                    " bytes, more than the " +
                                                    std::to_string(kMaxKeyBytes) + "-byte limit");
  }
  return entry;
}

// Every field the transport reported, in the table's order (dict_status.h); unknown ones are left
// out rather than shown as zero.
Json StatusJson(const DictStatus& status) {
  Json j = Json::object();
  for (const StatusField& field : StatusFields()) {
    std::optional<StatusFieldValue> value = field.get(status);
    if (!value) continue;
    if (field.kind == StatusFieldKind::kFileMode) {
      j[std::string(field.name)] = OctalFileMode(std::get<uint64_t>(*value));
    } else {
      std::visit([&](const auto& v) { j[std::string(field.name)] = v; }, *value);
    }
  }
  return j;
}

// status: one JSON object, or "field: value" lines.
int PrintFields(const CommandLine& cl, const Json& fields) {
  if (cl.json) {
    std::cout << fields.dump() << '\n';
    return kExitOk;
  }
  for (const auto& [field, value] : fields.items()) {
    std::cout << field << ": " << (value.is_string() ? value.get<std::string>() : value.dump())
              << '\n';
  }
  return kExitOk;
}

std::string Joined(const Json& strings, std::string_view separator) {
  std::string text;
  for (const Json& s : strings) {
    text += (text.empty() ? "" : std::string(separator)) + s.get<std::string>();
  }
  return text.empty() ? "-" : text;
}

// ls: one JSON array, or NAME, ENTRIES, REVISION, STATE[, BRIDGES] lines. STATE is "in-use" or
// "abandoned" (nobody has it open and its creator is gone) as the dict's host sees it: through a
// bridge of shmdict.v1.2 or later, the bridge's host (where the bridge itself has a dict open while
// it serves it); "remote" when an older bridge did not report it. BRIDGES, the number of live
// local bridges serving the dict, for local rows in builds with the bridge.
int PrintLsRows(const CommandLine& cl, const Json& all) {
  if (cl.json) {
    std::cout << all.dump() << '\n';
    return kExitOk;
  }
  for (const Json& row : all) {
    std::cout << row["name"].get<std::string>() << '\t';
    if (row.contains("error")) {
      std::cout << "-\t-\tunreadable (" << row["error"].get<std::string>() << ")\n";
      continue;
    }
    const char* state = !row.contains("abandoned")     ? "remote"
                        : row["abandoned"].get<bool>() ? "abandoned"
                                                       : "in-use";
    std::cout << row["entries"].dump() << '\t' << row["revision"].dump() << '\t' << state;
    if (row.contains("bridges")) std::cout << '\t' << row["bridges"].dump();
    std::cout << '\n';
  }
  return kExitOk;
}

}  // namespace

int FailWithoutDict(std::string cause) {
  std::cerr << OneLine("shmdict: " + std::move(cause)) << '\n';
  return kExitError;
}

int RunCreate(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  std::optional<mode_t> mode = ParseOctalMode(cl.mode);
  if (!mode) {
    return Fail(cl.name, Status(StatusCode::kInvalidArgument,
                                "--mode " + Quoted(cl.mode) + " is not an octal mode like 0600"));
  }
  CreateOptions options;
  options.exclusive = cl.exclusive;
  options.buffer_size = cl.buffer_size;
  // Only a mode the user gave: a bridge creates with its own --create-mode and refuses one.
  if (cl.mode != CommandLine{}.mode) options.mode = *mode;
  Result<std::unique_ptr<Catalog>> catalog = OpenCatalog(cl);
  if (!catalog.ok()) return Fail(cl.name, catalog.status());
  Result<bool> created = (*catalog)->Create(cl.name, options);
  if (!created.ok()) return Fail(cl.name, created.status());
  std::cout << (*created ? "created dict " : "dict ") << Quoted(cl.name)
            << (*created ? "" : " already exists") << '\n';
  return kExitOk;
}

int RunSet(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  std::optional<ValueType> type = ParseTypeName(cl.type);
  std::optional<Value> value = type ? ParseCliValue(*type, cl.value) : std::nullopt;
  if (!value) {
    return Fail(cl.name, Status(StatusCode::kInvalidArgument,
                                Quoted(Abbreviate(cl.value)) + " is not a valid " + cl.type +
                                    " value; key " + Quoted(cl.key) + " was not changed"));
  }
  if (Status valid = CheckUserValue(cl.name, cl.key, *value); !valid.ok()) {
    return Fail(cl.name, Status(valid.code(), valid.message() + "; it was not changed"));
  }
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;
  Result<uint64_t> revision = dict.Set(cl.key, *value);
  if (!revision.ok()) return Fail(cl.name, revision.status());
  if (cl.logger) cl.logger->info("dict '{}': set '{}' at revision {}", cl.name, cl.key, *revision);
  return kExitOk;
}

int RunGet(const CommandLine& cl) {
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;
  Result<std::optional<Value>> value = dict.Get(cl.key);  // remote: may be UNAVAILABLE
  if (!value.ok()) return Fail(cl.name, value.status());
  if (!value->has_value()) return KeyMissing(cl.name, cl.key);
  std::cout << (*value)->ToText() << '\n';
  return kExitOk;
}

int RunDel(const CommandLine& cl) {
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;
  Result<bool> erased = dict.Erase(cl.key);
  if (!erased.ok()) return Fail(cl.name, erased.status());
  if (!*erased) return KeyMissing(cl.name, cl.key);
  return kExitOk;
}

int RunIncr(const CommandLine& cl) {
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;
  Result<int64_t> value = dict.Increment(cl.key, cl.delta);
  if (!value.ok()) return Fail(cl.name, value.status());
  std::cout << *value << '\n';
  return kExitOk;
}

int RunList(const CommandLine& cl) {
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;
  Result<std::map<std::string, Value>> sorted = SortedItems(dict);
  if (!sorted.ok()) return Fail(cl.name, sorted.status());
  const std::map<std::string, Value>& items = *sorted;
  if (!cl.json) {
    for (const auto& [key, value] : items) std::cout << key << '\t' << value.ToText() << '\n';
    return kExitOk;
  }
  // Streamed member by member: building one ordered_json object costs O(n^2) on big dicts.
  std::cout << '{';
  bool first = true;
  for (const auto& [key, value] : items) {
    std::cout << (first ? "" : ",") << DisplayText(key).dump() << ':' << DisplayJson(value).dump();
    first = false;
  }
  std::cout << "}\n";
  return kExitOk;
}

int RunImport(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  std::ifstream file;
  std::istream* in = &std::cin;
  if (cl.file != "-") {
    file.open(cl.file, std::ios::binary);
    if (!file) {
      return Fail(cl.name, Status(StatusCode::kInvalidArgument,
                                  "cannot open " + Quoted(cl.file) + ": " + std::strerror(errno)));
    }
    in = &file;
  }
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;

  std::vector<std::pair<std::string, Value>> batch;
  size_t batch_bytes = 0;
  uint64_t batch_first_line = 0;
  uint64_t imported = 0;
  uint64_t revision = 0;
  auto progress = [&] {
    return std::to_string(imported) + " entries before it were imported (revision " +
           std::to_string(revision) + ")";
  };
  // Each batch is one atomic revision, so whatever stops the import leaves a prefix of the input.
  auto commit = [&]() -> Status {
    if (batch.empty()) return Status();
    Result<uint64_t> committed = dict.Update(batch);
    if (!committed.ok()) {
      return Status(committed.status().code(), "line " + std::to_string(batch_first_line) + ": " +
                                                   committed.status().message() + "; " +
                                                   progress());
    }
    revision = *committed;
    imported += batch.size();
    batch.clear();
    batch_bytes = 0;
    return Status();
  };

  std::string line;
  uint64_t line_number = 0;
  while (std::getline(*in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Result<std::pair<std::string, Value>> entry = ParseImportLine(line);
    if (entry.ok()) {
      if (Status valid = CheckUserValue(cl.name, entry->first, entry->second); !valid.ok()) {
        entry = Status(valid.code(), valid.message() + ", not imported");
      }
    }
    if (!entry.ok()) {
      if (Status committed = commit(); !committed.ok()) return Fail(cl.name, committed);
      return Fail(cl.name, Status(entry.status().code(), "line " + std::to_string(line_number) +
                                                             ": " + entry.status().message() +
                                                             "; the " + progress()));
    }
    if (batch.empty()) batch_first_line = line_number;
    batch_bytes += entry->first.size() + entry->second.data().size();
    batch.push_back(std::move(*entry));
    if (batch.size() >= kImportBatchEntries || batch_bytes >= kImportBatchBytes) {
      if (Status committed = commit(); !committed.ok()) return Fail(cl.name, committed);
    }
  }
  const bool read_failed = in->bad();
  if (Status committed = commit(); !committed.ok()) return Fail(cl.name, committed);
  if (read_failed) {
    return Fail(cl.name, Status(StatusCode::kDataLoss,
                                "reading " + Quoted(cl.file) + " failed after line " +
                                    std::to_string(line_number) + "; the " + progress()));
  }
  if (imported == 0) revision = dict.revision();
  std::cout << "imported " << imported << " entries, revision " << revision << '\n';
  return kExitOk;
}

int RunExport(const CommandLine& cl) {
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;
  Result<std::map<std::string, Value>> sorted = SortedItems(dict);
  if (!sorted.ok()) return Fail(cl.name, sorted.status());
  for (const auto& [key, value] : *sorted) {
    Json line = Json::object();
    EncodeEntry(key, value, &line);
    std::cout << line.dump() << '\n';
  }
  return kExitOk;
}

int RunWatch(const CommandLine& cl) {
  Result<std::unique_ptr<Store>> opened = OpenStore(cl);
  if (!opened.ok()) return Fail(cl.name, opened.status());
  Store& dict = **opened;

  struct sigaction action = {};
  action.sa_handler = RequestStop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  const uint64_t start = cl.from_given ? cl.from : dict.revision();
  Result<std::unique_ptr<Watcher>> watched = dict.Watch(start);
  if (!watched.ok()) return Fail(cl.name, watched.status());
  Watcher& watcher = **watched;
  if (cl.logger) cl.logger->info("dict '{}': watching changes after revision {}", cl.name, start);

  uint64_t changes_seen = 0;
  // A snapshot comes in chunks; it is printed whole, sorted, once its last chunk arrived. Entries
  // a bridge could not send (too large) come as markers in a chunk's `changes`.
  std::vector<Change> snapshot;
  while (!g_stop_requested) {
    const size_t max_changes = cl.count != 0 ? cl.count - changes_seen : 1024;
    Result<ChangeBatch> batch = watcher.Next(max_changes, kWatchStopCheck);
    if (!batch.ok()) return Fail(cl.name, batch.status());
    const Status stdout_gone(StatusCode::kUnavailable, "cannot write to stdout");
    if (batch->is_snapshot) {
      if (batch->snapshot_begins) snapshot.clear();
      for (auto& [key, value] : batch->snapshot_items) {
        snapshot.push_back(
            Change{.op = ChangeOp::kSet, .key = std::move(key), .value = std::move(value)});
      }
      std::move(batch->changes.begin(), batch->changes.end(), std::back_inserter(snapshot));
      if (!batch->snapshot_ends) continue;
      std::sort(snapshot.begin(), snapshot.end(),
                [](const Change& a, const Change& b) { return a.key < b.key; });
      for (const Change& entry : snapshot) {
        const bool printed =
            entry.value_too_large
                ? PrintOmitted(cl.json, batch->snapshot_revision, "snapshot", entry)
                : PrintChange(cl.json, batch->snapshot_revision, "snapshot", &entry.key,
                              &entry.value);
        if (!printed) return Fail(cl.name, stdout_gone);
      }
      snapshot.clear();
      continue;
    }
    for (const Change& change : batch->changes) {
      if (!PrintChange(cl.json, change)) return Fail(cl.name, stdout_gone);
      if (cl.count != 0 && ++changes_seen == cl.count) return kExitOk;
    }
  }
  if (cl.logger) cl.logger->info("dict '{}': watch stopped by a signal", cl.name);
  return kExitOk;
}

int RunStatus(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  Result<std::unique_ptr<Catalog>> catalog = OpenCatalog(cl);
  if (!catalog.ok()) return Fail(cl.name, catalog.status());
  Result<DictStatus> status = (*catalog)->Inspect(cl.name);
  if (!status.ok()) return Fail(cl.name, status.status());
  Json fields = StatusJson(*status);
  // This host's bridges serving the dict (a remote status names its bridge in a field instead).
  // Plain: "bridges: N", then one "bridge: ..." line per bridge after the fields.
  const std::optional<Json> bridges = cl.remote.empty() ? LiveBridges(&cl.name) : std::nullopt;
  if (bridges) fields["bridges"] = cl.json ? *bridges : Json(bridges->size());
  PrintFields(cl, fields);
  if (bridges && !cl.json) {
    for (const Json& b : *bridges) {
      std::cout << "bridge: " << Joined(b["addresses"], ",") << " pid=" << b["pid"].dump()
                << " since=" << b["since"].get<std::string>()
                << " subscribers=" << b["subscribers"].dump() << '\n';
    }
  }
  return kExitOk;
}

int RunLs(const CommandLine& cl) {
  Result<std::unique_ptr<Catalog>> catalog = OpenCatalog(cl);
  if (!catalog.ok()) return FailWithoutDict("cannot list dicts: " + catalog.status().ToString());
  Result<std::vector<std::string>> names = (*catalog)->ListNames();
  if (!names.ok()) return FailWithoutDict("cannot list dicts: " + names.status().ToString());
  const std::optional<Json> bridges = cl.remote.empty() ? LiveBridges(nullptr) : std::nullopt;
  Json all = Json::array();
  for (const std::string& name : *names) {
    Result<DictStatus> status = (*catalog)->Inspect(name);
    // Unlinked between ListNames and Inspect: it is no longer there.
    if (!status.ok() && status.status().code() == StatusCode::kNotFound) continue;
    Json row = Json::object();
    row["name"] = name;
    if (!status.ok()) {
      row["error"] = status.status().ToString();
      all.push_back(std::move(row));
      continue;
    }
    row["entries"] = status->entries;
    row["revision"] = status->revision;
    if (std::optional<bool> abandoned = status->abandoned()) row["abandoned"] = *abandoned;
    if (status->creator_pid) row["creator_pid"] = *status->creator_pid;
    if (status->creator_alive) row["creator_alive"] = *status->creator_alive;
    if (status->attached) row["attached"] = *status->attached;
    if (bridges) {
      row["bridges"] = std::count_if(bridges->begin(), bridges->end(),
                                     [&](const Json& b) { return b["dicts"].contains(name); });
    }
    all.push_back(std::move(row));
  }
  return PrintLsRows(cl, all);
}

int RunBridges(const CommandLine& cl) {
  if (!cl.remote.empty()) {
    return FailWithoutDict(
        "bridges lists the bridges of this host only (run it on the bridge's host, without "
        "--remote)");
  }
  const std::optional<Json> all = LiveBridges(nullptr);
  if (!all) {
    return FailWithoutDict("this shmdict was built without bridge support: bridges is unavailable");
  }
  if (cl.json) {
    std::cout << all->dump() << '\n';
    return kExitOk;
  }
  for (const Json& b : *all) {
    std::string dicts;
    for (const auto& [name, subscribers] : b["dicts"].items()) {
      dicts += (dicts.empty() ? "" : ",") + name + ":" + subscribers.dump();
    }
    std::cout << b["pid"].dump() << '\t' << b["since"].get<std::string>() << '\t'
              << Joined(b["addresses"], ",") << '\t' << (dicts.empty() ? "-" : dicts) << '\n';
  }
  return kExitOk;
}

int RunUnlink(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  Result<std::unique_ptr<Catalog>> catalog = OpenCatalog(cl);
  if (!catalog.ok()) return Fail(cl.name, catalog.status());
  if (Status unlinked = (*catalog)->Unlink(cl.name); !unlinked.ok()) {
    return Fail(cl.name, unlinked);
  }
  return kExitOk;
}

int RunHealth(const CommandLine& cl) {
  // For container HEALTHCHECKs and probes: Debian ships no grpc_health_probe.
  std::string address;
  Result<bool> serving = CheckBridgeHealth(cl, &address);
  if (serving.ok()) {
    std::cout << (*serving ? "SERVING" : "NOT_SERVING") << '\n';
    return *serving ? kExitOk : kExitKeyMissing;
  }
  if (serving.status().code() == StatusCode::kNotFound) {
    std::cout << "SERVICE_UNKNOWN\n";
    return kExitKeyMissing;
  }
  return FailWithoutDict("health of '" + cl.service + "' at " + address + ": " +
                         serving.status().ToString());
}

}  // namespace shmdict::cli
