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
#ifdef SHMDICT_CLI_PRESENCE
#include "shmdict/bridge/presence.h"
#endif
#ifdef SHMDICT_CLI_REMOTE
#include "shmdict/remote_dict.h"
#endif
#include "shmdict/status.h"
#include "shmdict/store.h"
#include "shmdict/value.h"
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

Status MissingDict(std::string_view name) {
  return Status(StatusCode::kNotFound, "dict " + Quoted(name) +
                                           " does not exist (create it with: shmdict create " +
                                           std::string(name) + ")");
}

// A kNotFound from the library is about the dict here; say so in the words the user knows.
Status ExplainNotFound(std::string_view name, Status status) {
  if (status.code() == StatusCode::kNotFound) return MissingDict(name);
  return status;
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

Options BaseOptions(const CommandLine& cl) {
  Options options;
  options.name = cl.name;
  if (cl.logger) options.log_sink = std::make_shared<SpdlogSink>(cl.logger);
  return options;
}

// Every command but create works on an existing dict and must never create one by accident.
Result<Dict> OpenExisting(const CommandLine& cl) {
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return valid;
  Options options = BaseOptions(cl);
  options.create_mode = CreateMode::kMustAttach;
  Result<Dict> dict = Dict::Open(options);
  if (!dict.ok()) return ExplainNotFound(cl.name, dict.status());
  return dict;
}

#ifdef SHMDICT_CLI_REMOTE
RemoteOptions RemoteFor(const CommandLine& cl) {
  RemoteOptions options;
  options.address = cl.remote;
  options.dict = cl.name;
  options.token = cl.token;
  options.tls_ca = cl.tls_ca;
  options.tls_cert = cl.tls_cert;
  options.tls_key = cl.tls_key;
  return options;
}
#endif

// The dict the data commands work on: this host's shared memory, or with --remote (or
// $SHMDICT_REMOTE) the dict of that name on a bridge's host. Both are a Store, so every command
// behaves the same either way.
Result<std::unique_ptr<Store>> OpenStore(const CommandLine& cl) {
  if (cl.remote.empty()) {
    Result<Dict> dict = OpenExisting(cl);
    if (!dict.ok()) return dict.status();
    return std::unique_ptr<Store>(std::make_unique<Dict>(std::move(*dict)));
  }
#ifdef SHMDICT_CLI_REMOTE
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return valid;
  RemoteOptions options = RemoteFor(cl);
  options.mirror = false;  // one command, a few calls: a copy of the dict would only cost
  options.open_timeout = std::chrono::seconds(5);
  Result<std::unique_ptr<RemoteDict>> remote = RemoteDict::Open(options);
  if (!remote.ok()) {
    if (remote.status().code() == StatusCode::kNotFound) {
      return Status(StatusCode::kNotFound, "dict " + Quoted(cl.name) +
                                               " does not exist on the host of the bridge at " +
                                               cl.remote +
                                               " (create it there, or with `shmdict --remote "
                                               "ADDR create` on a bridge with --allow-create)");
    }
    return remote.status();
  }
  return std::unique_ptr<Store>(std::move(*remote));
#else
  return Status(StatusCode::kUnimplemented,
                "--remote needs the bridge client, and this shmdict was built without it "
                "(-DSHMDICT_BUILD_BRIDGE=OFF)");
#endif
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

std::string OctalMode(mode_t mode) {
  char buf[16];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<unsigned>(mode), 8);
  std::string digits(buf, ec == std::errc() ? end : buf);
  return std::string(digits.size() < 4 ? 4 - digits.size() : 0, '0') + digits;
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

Json StatusJson(const DictStatus& s) {
  Json j = Json::object();
  j["name"] = s.name;
  j["layout_version"] = s.layout_version;
  j["revision"] = s.revision;
  j["entries"] = s.entries;
  j["log_capacity"] = s.log_capacity;
  j["log_used"] = s.log_used;
  j["snapshot_generation"] = s.snapshot_generation;
  j["snapshot_revision"] = s.snapshot_revision;
  j["snapshots_built"] = s.snapshots_built;
  j["lock_held"] = s.lock_held;
  j["lock_holder_pid"] = s.lock_holder_pid;
  j["lock_holder_pid_namespace"] = s.lock_holder_pid_namespace;
  j["lock_holder_in_this_pid_namespace"] = s.lock_holder_in_this_pid_namespace;
  j["lock_recoveries"] = s.lock_recoveries;
  j["creator_pid"] = s.creator_pid;
  j["creator_alive"] = s.creator_alive;
  j["attached"] = s.attached;
  j["segment_bytes"] = s.segment_bytes;
  j["mode"] = OctalMode(s.mode);
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

#ifdef SHMDICT_CLI_PRESENCE
// The live bridges of this host, from their advisory records (bridge/src/presence.h): shown, never
// trusted for anything else. `dict`: only those that have it attached, with its subscribers.
Json BridgesJson(const std::vector<bridge::BridgeRecord>& bridges, const std::string* dict) {
  Json all = Json::array();
  for (const bridge::BridgeRecord& record : bridges) {
    auto served = dict != nullptr ? record.dicts.find(*dict) : record.dicts.end();
    if (dict != nullptr && served == record.dicts.end()) continue;
    Json one = Json::object();
    one["pid"] = record.pid;
    one["since"] = bridge::FormatUtc(record.since_unix);
    one["since_unix"] = record.since_unix;
    one["addresses"] = record.addresses;
    if (dict != nullptr) {
      one["subscribers"] = served->second;
    } else {
      Json dicts = Json::object();
      for (const auto& [name, subscribers] : record.dicts) dicts[name] = subscribers;
      one["dicts"] = std::move(dicts);
    }
    all.push_back(std::move(one));
  }
  return all;
}

std::string Joined(const Json& strings, std::string_view separator) {
  std::string text;
  for (const Json& s : strings) {
    text += (text.empty() ? "" : std::string(separator)) + s.get<std::string>();
  }
  return text.empty() ? "-" : text;
}
#endif

// ls: one JSON array, or NAME, ENTRIES, REVISION, STATE[, BRIDGES] lines (STATE "remote" for a
// row a bridge reported: whether its creator lives is for the bridge's host to see; BRIDGES, the
// number of live local bridges serving the dict, for local rows in builds with the bridge).
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

#ifdef SHMDICT_CLI_REMOTE
// status --remote: what the bridge reports (a subset of the local fields, plus the bridge).
int RunRemoteStatus(const CommandLine& cl) {
  Result<RemoteDictStatus> status = RemoteDict::Inspect(RemoteFor(cl));
  if (!status.ok()) return Fail(cl.name, status.status());
  Json fields = Json::object();
  fields["name"] = status->name;
  fields["bridge"] = cl.remote;
  fields["layout_version"] = status->layout_version;
  fields["revision"] = status->revision;
  fields["entries"] = status->entries;
  fields["log_capacity"] = status->log_capacity;
  fields["log_used"] = status->log_used;
  fields["snapshot_revision"] = status->snapshot_revision;
  fields["lock_held"] = status->lock_held;
  fields["segment_bytes"] = status->segment_bytes;
  return PrintFields(cl, fields);
}

// ls --remote: the dicts on the bridge's host; STATE is "remote" (liveness is the host's to see).
int RunRemoteLs(const CommandLine& cl) {
  RemoteOptions options = RemoteFor(cl);
  Result<std::vector<std::string>> names = RemoteDict::ListNames(options);
  if (!names.ok()) return FailWithoutDict("cannot list dicts: " + names.status().ToString());
  Json all = Json::array();
  for (const std::string& name : *names) {
    options.dict = name;
    Result<RemoteDictStatus> status = RemoteDict::Inspect(options);
    if (!status.ok() && status.status().code() == StatusCode::kNotFound) continue;
    Json row = Json::object();
    row["name"] = name;
    if (!status.ok()) {
      row["error"] = status.status().ToString();
    } else {
      row["entries"] = status->entries;
      row["revision"] = status->revision;
    }
    all.push_back(std::move(row));
  }
  return PrintLsRows(cl, all);
}

// create and unlink --remote: only a bridge started with --allow-create does them, and the file
// mode is the bridge's --create-mode (a client must not widen who can map the host's memory).
int RunRemoteCreate(const CommandLine& cl) {
  if (cl.mode != CommandLine{}.mode) {
    return Fail(cl.name, Status(StatusCode::kInvalidArgument,
                                "--mode applies to local dicts only: a bridge creates dicts "
                                "with its own --create-mode"));
  }
  Result<bool> created = RemoteDict::Create(RemoteFor(cl), cl.exclusive, cl.buffer_size);
  if (!created.ok()) return Fail(cl.name, created.status());
  std::cout << (*created ? "created dict " : "dict ") << Quoted(cl.name)
            << (*created ? "" : " already exists") << '\n';
  return kExitOk;
}
int RunRemoteUnlink(const CommandLine& cl) {
  if (Status unlinked = RemoteDict::Unlink(RemoteFor(cl)); !unlinked.ok()) {
    return Fail(cl.name, unlinked);
  }
  return kExitOk;
}
#else
// Commands a CLI built without bridge support runs only on this host's shared memory.
int LocalOnly(const CommandLine& cl, std::string_view command) {
  return Fail(cl.name, Status(StatusCode::kFailedPrecondition,
                              std::string(command) +
                                  " --remote needs a shmdict built with bridge support (run it "
                                  "on the dict's host, without --remote)"));
}
int RunRemoteStatus(const CommandLine& cl) { return LocalOnly(cl, "status"); }
int RunRemoteLs(const CommandLine& cl) { return LocalOnly(cl, "ls"); }
int RunRemoteCreate(const CommandLine& cl) { return LocalOnly(cl, "create"); }
int RunRemoteUnlink(const CommandLine& cl) { return LocalOnly(cl, "unlink"); }
#endif

}  // namespace

int FailWithoutDict(std::string cause) {
  std::cerr << OneLine("shmdict: " + std::move(cause)) << '\n';
  return kExitError;
}

int RunCreate(const CommandLine& cl) {
  if (!cl.remote.empty()) return RunRemoteCreate(cl);
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  std::optional<mode_t> mode = ParseOctalMode(cl.mode);
  if (!mode) {
    return Fail(cl.name, Status(StatusCode::kInvalidArgument,
                                "--mode " + Quoted(cl.mode) + " is not an octal mode like 0600"));
  }
  Options options = BaseOptions(cl);
  options.create_mode = cl.exclusive ? CreateMode::kMustCreate : CreateMode::kAttachOrCreate;
  options.buffer_size = cl.buffer_size;
  options.mode = *mode;
  options.auto_unlink = false;  // the dict must outlive this command
  Result<Dict> dict = Dict::Open(options);
  if (!dict.ok()) return Fail(cl.name, dict.status());
  const bool created = dict->created();
  if (Status closed = dict->Close(); !closed.ok()) return Fail(cl.name, closed);
  std::cout << (created ? "created dict " : "dict ") << Quoted(cl.name)
            << (created ? "" : " already exists") << '\n';
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
  if (!cl.remote.empty()) return RunRemoteStatus(cl);
  Result<DictStatus> status = Dict::Inspect(cl.name);
  if (!status.ok()) return Fail(cl.name, ExplainNotFound(cl.name, status.status()));
  Json fields = StatusJson(*status);
#ifdef SHMDICT_CLI_PRESENCE
  // Plain: "bridges: N", then one "bridge: ..." line per bridge after the fields.
  const Json bridges = BridgesJson(bridge::ListLiveBridges(), &cl.name);
  fields["bridges"] = cl.json ? bridges : Json(bridges.size());
  PrintFields(cl, fields);
  if (!cl.json) {
    for (const Json& b : bridges) {
      std::cout << "bridge: " << Joined(b["addresses"], ",") << " pid=" << b["pid"].dump()
                << " since=" << b["since"].get<std::string>()
                << " subscribers=" << b["subscribers"].dump() << '\n';
    }
  }
  return kExitOk;
#else
  return PrintFields(cl, fields);
#endif
}

int RunLs(const CommandLine& cl) {
  if (!cl.remote.empty()) return RunRemoteLs(cl);
  Result<std::vector<std::string>> names = Dict::ListNames();
  if (!names.ok()) return FailWithoutDict("cannot list dicts: " + names.status().ToString());
#ifdef SHMDICT_CLI_PRESENCE
  const std::vector<bridge::BridgeRecord> bridges = bridge::ListLiveBridges();
#endif
  Json all = Json::array();
  for (const std::string& name : *names) {
    Result<DictStatus> status = Dict::Inspect(name);
    // Unlinked between ListNames and Inspect: it is no longer on this host.
    if (!status.ok() && status.status().code() == StatusCode::kNotFound) continue;
    Json row = Json::object();
    row["name"] = name;
    if (!status.ok()) {
      row["error"] = status.status().ToString();
    } else {
      row["entries"] = status->entries;
      row["revision"] = status->revision;
      row["abandoned"] = !status->creator_alive && !status->attached;
      row["creator_pid"] = status->creator_pid;
      row["creator_alive"] = status->creator_alive;
      row["attached"] = status->attached;
#ifdef SHMDICT_CLI_PRESENCE
      row["bridges"] = std::count_if(bridges.begin(), bridges.end(),
                                     [&](const auto& b) { return b.dicts.contains(name); });
#endif
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
#ifdef SHMDICT_CLI_PRESENCE
  const Json all = BridgesJson(bridge::ListLiveBridges(), nullptr);
  if (cl.json) {
    std::cout << all.dump() << '\n';
    return kExitOk;
  }
  for (const Json& b : all) {
    std::string dicts;
    for (const auto& [name, subscribers] : b["dicts"].items()) {
      dicts += (dicts.empty() ? "" : ",") + name + ":" + subscribers.dump();
    }
    std::cout << b["pid"].dump() << '\t' << b["since"].get<std::string>() << '\t'
              << Joined(b["addresses"], ",") << '\t' << (dicts.empty() ? "-" : dicts) << '\n';
  }
  return kExitOk;
#else
  (void)cl;
  return FailWithoutDict("this shmdict was built without bridge support: bridges is unavailable");
#endif
}

int RunUnlink(const CommandLine& cl) {
  if (!cl.remote.empty()) return RunRemoteUnlink(cl);
  if (Status valid = Dict::ValidateName(cl.name); !valid.ok()) return Fail(cl.name, valid);
  if (Status unlinked = Dict::UnlinkByName(cl.name); !unlinked.ok()) {
    return Fail(cl.name, ExplainNotFound(cl.name, unlinked));
  }
  return kExitOk;
}

int RunHealth(const CommandLine& cl) {
#ifdef SHMDICT_CLI_REMOTE
  // For container HEALTHCHECKs and probes: Debian ships no grpc_health_probe.
  RemoteOptions options = RemoteFor(cl);
  if (options.address.empty()) options.address = "127.0.0.1:7377";  // the bridge's default
  options.call_timeout = std::chrono::seconds(5);
  Result<bool> serving = RemoteDict::CheckHealth(options, cl.service);
  const std::string what = "'" + cl.service + "' at " + options.address;
  if (serving.ok()) {
    std::cout << (*serving ? "SERVING" : "NOT_SERVING") << '\n';
    return *serving ? kExitOk : kExitKeyMissing;
  }
  if (serving.status().code() == StatusCode::kNotFound) {
    std::cout << "SERVICE_UNKNOWN\n";
    return kExitKeyMissing;
  }
  return FailWithoutDict("health of " + what + ": " + serving.status().ToString());
#else
  (void)cl;
  return FailWithoutDict("this shmdict was built without bridge support: health is unavailable");
#endif
}

}  // namespace shmdict::cli
