// End-to-end tests of the `shmdict` command-line tool. Every test runs the real binary as a
// separate process and checks what a user sees: stdout, stderr, the exit status (0 success, 1 key
// not found, 2 any other error with one stderr line naming the dict), and what is left in
// /dev/shm (DictTestBase checks that nothing is, after each test).
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dict_test_base.h"
#include "gtest/gtest.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/replica_feed.h"
#include "shmdict/value.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using Json = nlohmann::ordered_json;

struct CliRun {
  std::string command;
  ExitInfo exit;
  std::string out;
  std::string err;

  // The exit code, or -1 when the process did not exit normally (signal, deadline).
  int code() const { return exit.reaped && exit.exited && !exit.timed_out ? exit.exit_code : -1; }
  std::string Describe() const {
    return "shmdict" + command + ": " + exit.ToString() + "\nstdout:\n" + out + "stderr:\n" + err;
  }
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> SplitLines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    lines.emplace_back(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  return lines;
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

class CliTest : public DictTestBase {
 protected:
  void SetUp() override {
    if (std::string_view(SHMDICT_CLI_PATH).empty()) GTEST_SKIP() << "the CLI is not built";
    char dir[] = "/tmp/shmdict-cli-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    temp_dir_ = dir;
  }

  void TearDown() override {
    DictTestBase::TearDown();
    if (!temp_dir_.empty()) std::filesystem::remove_all(temp_dir_);
  }

  // Starts the CLI. WorkerProcess captures stdout only, so a shell that execs the CLI (keeping its
  // pid, for signals) sends stderr to *stderr_path, or into stdout when stderr_path is null.
  std::unique_ptr<WorkerProcess> Start(const std::vector<std::string>& args,
                                       std::string* stderr_path) {
    std::string redirect = "2>&1";
    if (stderr_path != nullptr) {
      *stderr_path = temp_dir_ + "/stderr-" + std::to_string(++processes_started_);
      redirect = "2>'" + *stderr_path + "'";
    }
    std::vector<std::string> sh_args = {"-c", "exec \"$0\" \"$@\" " + redirect, SHMDICT_CLI_PATH};
    sh_args.insert(sh_args.end(), args.begin(), args.end());
    return std::make_unique<WorkerProcess>("/bin/sh", std::move(sh_args));
  }

  // Runs the CLI to completion with `input` (plus a final newline) on stdin.
  CliRun Run(const std::vector<std::string>& args, std::string_view input = {}) {
    CliRun run;
    for (const std::string& a : args) run.command += " " + a;
    std::string stderr_path;
    std::unique_ptr<WorkerProcess> process = Start(args, &stderr_path);
    // A command that stops reading early (a malformed import line) closes the pipe: fine.
    if (!input.empty()) process->SendLine(input);
    process->CloseStdin();
    run.exit = process->Wait(DeadlineIn(kWorkerTimeout));
    run.out = process->output();
    run.err = ReadFile(stderr_path);
    return run;
  }

  std::string WriteTempFile(std::string_view name, std::string_view content) {
    const std::string path = temp_dir_ + "/" + std::string(name);
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  void Create(const std::string& name) {
    const CliRun run = Run({"create", name});
    ASSERT_EQ(run.code(), 0) << run.Describe();
  }

  void Set(const std::string& key, const std::string& value, const std::string& type = "str") {
    const CliRun run = Run({"set", name_, key, value, "--type", type});
    ASSERT_EQ(run.code(), 0) << run.Describe();
  }

  // The latest committed revision, read the way `shmdict status` does.
  uint64_t Revision(const std::string& name) {
    Result<DictStatus> status = LocalCatalog().Inspect(name);
    EXPECT_OK(status);
    return status.ok() ? status->revision : 0;
  }

  std::string temp_dir_;
  int processes_started_ = 0;
};

// The error contract: exit 2 and exactly one stderr line that names the dict and the cause.
void ExpectError(const CliRun& run, std::string_view dict, std::string_view cause) {
  EXPECT_EQ(run.code(), 2) << run.Describe();
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.Describe();
  EXPECT_TRUE(run.err.ends_with('\n')) << run.Describe();
  EXPECT_TRUE(Contains(run.err, "dict '" + std::string(dict) + "'")) << run.Describe();
  EXPECT_TRUE(Contains(run.err, cause)) << "expected '" << cause << "' in " << run.Describe();
}

void ExpectOutput(const CliRun& run, std::string_view out) {
  EXPECT_EQ(run.code(), 0) << run.Describe();
  EXPECT_EQ(run.out, out) << run.Describe();
  EXPECT_EQ(run.err, "") << run.Describe();
}

void ExpectKeyMissing(const CliRun& run) {
  EXPECT_EQ(run.code(), 1) << run.Describe();
  EXPECT_EQ(run.out, "") << run.Describe();
}

// Export output as key -> its JSON Lines object.
std::map<std::string, Json> ParseExport(const CliRun& run) {
  std::map<std::string, Json> entries;
  for (const std::string& line : SplitLines(run.out)) {
    Json entry = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(entry.is_object()) << "export line is not a JSON object: " << line;
    if (!entry.is_object()) continue;
    const std::string key = entry.contains("key") ? entry["key"].get<std::string>()
                                                  : "hex:" + entry["key_hex"].get<std::string>();
    entries[key] = entry;
  }
  return entries;
}

// ---- create

TEST_F(CliTest, CreateMakesAnEmptyDictThatOutlivesTheCommand) {
  ExpectOutput(Run({"create", name_}), "created dict '" + name_ + "'\n");
  EXPECT_FALSE(ShmEntriesWithPrefix(name_).empty());

  const CliRun status = Run({"status", name_});
  EXPECT_EQ(status.code(), 0) << status.Describe();
  EXPECT_TRUE(Contains(status.out, "entries: 0\n")) << status.Describe();
}

TEST_F(CliTest, CreateAttachesToAnExistingDictUnlessExclusive) {
  Create(name_);
  Set("kept", "yes");

  ExpectOutput(Run({"create", name_}), "dict '" + name_ + "' already exists\n");
  ExpectOutput(Run({"get", name_, "kept"}), "yes\n");

  ExpectError(Run({"create", name_, "--exclusive"}), name_, "ALREADY_EXISTS");
  ExpectOutput(Run({"get", name_, "kept"}), "yes\n");
}

TEST_F(CliTest, CreateAppliesModeAndBufferSize) {
  ExpectOutput(Run({"create", name_, "--mode", "0640", "--buffer-size", "1MiB"}),
               "created dict '" + name_ + "'\n");

  struct stat st = {};
  ASSERT_EQ(stat(ShmPath(name_).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  const CliRun status = Run({"status", name_, "--json"});
  ASSERT_EQ(status.code(), 0) << status.Describe();
  const Json fields = Json::parse(status.out);
  EXPECT_EQ(fields["mode"], "0640");
  EXPECT_EQ(fields["log_capacity"], 1u << 20);
}

TEST_F(CliTest, CreateRefusesABadMode) {
  ExpectError(Run({"create", name_, "--mode", "999"}), name_, "--mode");
  EXPECT_TRUE(ShmEntriesWithPrefix(name_).empty());
}

// ---- set, get, del

TEST_F(CliTest, SetGetAndDelFollowTheExitStatusContract) {
  Create(name_);
  ExpectOutput(Run({"set", name_, "greeting", "hello world"}), "");
  ExpectOutput(Run({"get", name_, "greeting"}), "hello world\n");
  ExpectOutput(Run({"set", name_, "greeting", "bye"}), "");
  ExpectOutput(Run({"get", name_, "greeting"}), "bye\n");

  ExpectOutput(Run({"del", name_, "greeting"}), "");
  ExpectKeyMissing(Run({"get", name_, "greeting"}));
  ExpectKeyMissing(Run({"del", name_, "greeting"}));
}

TEST_F(CliTest, SetConvertsTheValueToItsType) {
  Create(name_);
  struct Case {
    std::string type, input, text;
  };
  const std::vector<Case> cases = {
      {"str", "hello", "hello"},
      {"int", "-42", "-42"},
      {"float", "2.5", "2.5"},
      {"bool", "1", "true"},
      {"bool", "false", "false"},
      {"json", R"({"a": [1, 2]})", R"({"a": [1, 2]})"},
      {"bytes", "raw\x01", "0x72617701"},
  };
  for (const Case& c : cases) {
    const std::string key = "k-" + c.type + "-" + c.input;
    ExpectOutput(Run({"set", name_, key, c.input, "--type", c.type}), "");
    ExpectOutput(Run({"get", name_, key}), c.text + "\n");
  }
  const std::map<std::string, Json> exported = ParseExport(Run({"export", name_}));
  for (const Case& c : cases) {
    const std::string key = "k-" + c.type + "-" + c.input;
    ASSERT_TRUE(exported.contains(key)) << key;
    EXPECT_EQ(exported.at(key)["type"], c.type) << key;
  }
  EXPECT_EQ(exported.at("k-int--42")["value"], -42);
  EXPECT_EQ(exported.at("k-float-2.5")["value"], 2.5);
  EXPECT_EQ(exported.at("k-bool-1")["value"], true);
}

TEST_F(CliTest, SetRefusesAValueThatDoesNotParseAsItsType) {
  Create(name_);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"int", "12abc"},    {"int", "99999999999999999999"}, {"float", "x1"}, {"bool", "yes"},
      {"json", "{\"a\":"},
  };
  for (const auto& [type, input] : bad) {
    ExpectError(Run({"set", name_, "k", input, "--type", type}), name_, "INVALID_ARGUMENT");
    ExpectKeyMissing(Run({"get", name_, "k"}));
  }
  const CliRun unknown_type = Run({"set", name_, "k", "v", "--type", "date"});
  EXPECT_EQ(unknown_type.code(), 2) << unknown_type.Describe();
  EXPECT_EQ(std::count(unknown_type.err.begin(), unknown_type.err.end(), '\n'), 1)
      << unknown_type.Describe();
}

// Text that parses but is not a valid encoding of its type (not UTF-8) is refused before anything
// is written, naming the key.
TEST_F(CliTest, SetRefusesBytesThatAreNotAValidEncodingOfTheirType) {
  Create(name_);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"str", "\xFF"},
      {"str", "\xC0\xAF"},           // overlong
      {"json", "\"\xED\xA0\x80\""},  // a surrogate inside a JSON string
  };
  for (const auto& [type, input] : bad) {
    const CliRun run = Run({"set", name_, "k", input, "--type", type});
    ExpectError(run, name_, "INVALID_ARGUMENT");
    EXPECT_TRUE(Contains(run.err, "key 'k'")) << run.Describe();
    ExpectKeyMissing(Run({"get", name_, "k"}));
  }
  Set("k", "caf\xC3\xA9");
}

TEST_F(CliTest, SetAcceptsANegativeNumberAsValue) {
  Create(name_);
  ExpectOutput(Run({"set", name_, "n", "-5", "--type", "int"}), "");
  ExpectOutput(Run({"get", name_, "n"}), "-5\n");
}

// ---- incr

TEST_F(CliTest, IncrCountsAMissingKeyAsZero) {
  Create(name_);
  ExpectOutput(Run({"incr", name_, "hits"}), "1\n");
  ExpectOutput(Run({"incr", name_, "hits", "41"}), "42\n");
  ExpectOutput(Run({"incr", name_, "hits", "-50"}), "-8\n");
  ExpectOutput(Run({"get", name_, "hits"}), "-8\n");
}

TEST_F(CliTest, IncrRefusesAValueThatIsNotAnInt) {
  Create(name_);
  Set("word", "abc");
  ExpectError(Run({"incr", name_, "word"}), name_, "FAILED_PRECONDITION");
  ExpectOutput(Run({"get", name_, "word"}), "abc\n");
}

// ---- list

TEST_F(CliTest, ListPrintsKeyTabValueLinesSortedByKey) {
  Create(name_);
  Set("b", "2", "int");
  Set("c", "true", "bool");
  Set("a", "x y");
  ExpectOutput(Run({"list", name_}), "a\tx y\nb\t2\nc\ttrue\n");
}

TEST_F(CliTest, ListJsonIsOneObjectWithTypedValues) {
  Create(name_);
  Set("s", "text");
  Set("i", "7", "int");
  Set("f", "1.5", "float");
  Set("b", "true", "bool");
  Set("j", R"({"z": 1, "a": [true]})", "json");
  Set("y", "abc", "bytes");
  const CliRun imported =
      Run({"import", name_}, R"({"key": "h", "type": "bytes", "value_hex": "ff00"})");
  ASSERT_EQ(imported.code(), 0) << imported.Describe();
  std::string child;
  {
    Result<Dict> dict = Dict::Open(AttachOptions(name_));
    ASSERT_OK(dict);
    Result<Dict> nested = dict->OpenNested("sub");
    ASSERT_OK(nested);
    child = nested->name();
  }

  const CliRun list = Run({"list", name_, "--json"});
  ASSERT_EQ(list.code(), 0) << list.Describe();
  ASSERT_EQ(SplitLines(list.out).size(), 1u) << list.Describe();
  const Json object = Json::parse(list.out);
  ASSERT_TRUE(object.is_object());
  EXPECT_EQ(object.size(), 8u);
  EXPECT_EQ(object["s"], "text");
  EXPECT_TRUE(object["i"].is_number_integer());
  EXPECT_EQ(object["i"], 7);
  EXPECT_TRUE(object["f"].is_number_float());
  EXPECT_EQ(object["f"], 1.5);
  EXPECT_EQ(object["b"], true);
  EXPECT_EQ(object["j"], Json::parse(R"({"z": 1, "a": [true]})"));
  EXPECT_EQ(object["y"], "abc");
  EXPECT_EQ(object["h"], "0xff00");
  EXPECT_EQ(object["sub"], Json({{"$dict", child}}));
}

// ---- import and export

TEST_F(CliTest, ImportInfersTypesFromJson) {
  Create(name_);
  const CliRun run = Run({"import", name_}, R"({"key": "s", "value": "text"}
{"key": "i", "value": -7}
{"key": "f", "value": 2.5}
{"key": "b", "value": true}
{"key": "j", "value": {"x": [1, 2]}}
{"key": "t", "value": "42", "type": "int"}
{"key": "d", "value": 3, "type": "float"})");
  ExpectOutput(run, "imported 7 entries, revision " + std::to_string(Revision(name_)) + "\n");

  const std::map<std::string, Json> exported = ParseExport(Run({"export", name_}));
  const std::map<std::string, std::string> types = {{"s", "str"},  {"i", "int"},  {"f", "float"},
                                                    {"b", "bool"}, {"j", "json"}, {"t", "int"},
                                                    {"d", "float"}};
  for (const auto& [key, type] : types) {
    ASSERT_TRUE(exported.contains(key)) << key;
    EXPECT_EQ(exported.at(key)["type"], type) << key;
  }
  ExpectOutput(Run({"get", name_, "j"}), "{\"x\":[1,2]}\n");
  ExpectOutput(Run({"get", name_, "t"}), "42\n");
  ExpectOutput(Run({"get", name_, "d"}), "3\n");
}

// Import checks each value as `set` does (ImportStopsAtAValueThatIsNotAValidEncodingOfItsType),
// so the round trip is into the same dict name, where a nested-dict reference still names one of
// that dict's children.
TEST_F(CliTest, ExportThenImportRoundTripsEveryTypeExactly) {
  Create(name_);
  Set("str", "hello\tworld");
  Set("int", "-9223372036854775808", "int");
  Set("float", "0.1", "float");
  Set("bool", "false", "bool");
  Set("json-pretty", "{\"b\": 1,\n \"a\": [true, null]}", "json");
  Set("json-compact", R"({"b":1,"a":[true,null]})", "json");
  Set("bytes", "raw", "bytes");
  const CliRun imported =
      Run({"import", name_}, R"({"key": "binary", "type": "bytes", "value_hex": "ff00fe"}
{"key_hex": "c3", "value": "key is not UTF-8"}
{"key": "negative-zero", "value": -0.0}
{"key": "user", "type": "user:200", "value": "app data"})");
  ASSERT_EQ(imported.code(), 0) << imported.Describe();
  std::map<std::string, Value> original;
  {
    Result<Dict> dict = Dict::Open(AttachOptions(name_));
    ASSERT_OK(dict);
    Result<Dict> nested = dict->OpenNested("nested");
    ASSERT_OK(nested);
    original = dict->Export();
  }

  const CliRun exported = Run({"export", name_});
  ASSERT_EQ(exported.code(), 0) << exported.Describe();
  EXPECT_EQ(SplitLines(exported.out).size(), 12u) << exported.Describe();

  ExpectOutput(Run({"unlink", name_}), "");
  Create(name_);
  const CliRun import_again = Run({"import", name_, WriteTempFile("export.jsonl", exported.out)});
  ExpectOutput(import_again,
               "imported 12 entries, revision " + std::to_string(Revision(name_)) + "\n");

  const CliRun reexported = Run({"export", name_});
  EXPECT_EQ(reexported.out, exported.out);
  Result<Dict> imported_again = Dict::Open(AttachOptions(name_));
  ASSERT_OK(imported_again);
  EXPECT_TRUE(original == imported_again->Export());
}

TEST_F(CliTest, ImportStopsAtAMalformedLineKeepingTheLinesBeforeIt) {
  Create(name_);
  const CliRun run = Run({"import", name_}, R"({"key": "a", "value": 1}
{"key": "b", "value": 2}
{"key": "c", "value": }
{"key": "d", "value": 4})");
  ExpectError(run, name_, "line 3");
  EXPECT_TRUE(Contains(run.err, "2 entries before it were imported")) << run.Describe();
  ExpectOutput(Run({"list", name_}), "a\t1\nb\t2\n");

  const CliRun no_key = Run({"import", name_}, R"({"key": "e", "value": 5}
{"value": 6})");
  ExpectError(no_key, name_, "line 2");
  ExpectOutput(Run({"list", name_}), "a\t1\nb\t2\ne\t5\n");
}

// Import builds values from the file's bytes: each is checked as `set` checks one, and the
// import stops at the first line whose value is not a valid encoding of its type.
TEST_F(CliTest, ImportStopsAtAValueThatIsNotAValidEncodingOfItsType) {
  Create(name_);
  const std::vector<std::string> bad = {
      R"({"key": "bad", "type": "int", "value_hex": "010203"})",
      R"({"key": "bad", "type": "bool", "value_hex": "0101010101"})",
      R"({"key": "bad", "type": "bool", "value_hex": "02"})",
      R"({"key": "bad", "type": "str", "value_hex": "ff"})",
      R"({"key": "bad", "type": "json", "value_text": "{\"a\": 1} trailing"})",
      R"({"key": "bad", "type": "null", "value_text": "x"})",
      R"({"key": "bad", "type": "dict", "value": "another-dict"})",
  };
  for (const std::string& line : bad) {
    const CliRun run = Run({"import", name_}, "{\"key\": \"a\", \"value\": 1}\n" + line);
    ExpectError(run, name_, "line 2");
    EXPECT_TRUE(Contains(run.err, "key 'bad'")) << run.Describe();
    EXPECT_TRUE(Contains(run.err, "INVALID_ARGUMENT")) << run.Describe();
    ExpectKeyMissing(Run({"get", name_, "bad"}));
  }
  ExpectOutput(Run({"list", name_}), "a\t1\n");
}

TEST_F(CliTest, ImportOfALargeFileKeepsAnExactPrefixAcrossBatches) {
  Create(name_);
  constexpr int kLines = 2500;
  constexpr int kBadLine = 2345;
  std::string good;
  std::string with_bad_line;
  for (int i = 1; i <= kLines; ++i) {
    const std::string line = R"({"key": "k)" + std::to_string(100000 + i) + R"(", "value": )" +
                             std::to_string(i) + "}\n";
    good += line;
    with_bad_line += i == kBadLine ? "not json\n" : line;
  }

  ExpectError(Run({"import", name_, WriteTempFile("bad.jsonl", with_bad_line)}), name_,
              "line " + std::to_string(kBadLine));
  const std::vector<std::string> listed = SplitLines(Run({"list", name_}).out);
  ASSERT_EQ(listed.size(), size_t{kBadLine - 1});
  EXPECT_EQ(listed.front(), "k100001\t1");
  EXPECT_EQ(listed.back(), "k102344\t2344");

  const CliRun full = Run({"import", name_, WriteTempFile("good.jsonl", good)});
  EXPECT_EQ(full.code(), 0) << full.Describe();
  EXPECT_TRUE(full.out.starts_with("imported 2500 entries, revision ")) << full.Describe();
  EXPECT_EQ(SplitLines(Run({"list", name_}).out).size(), size_t{kLines});
}

TEST_F(CliTest, AnImportKilledMidwayLeavesAPrefixOfItsInput) {
  Create(name_);
  Result<Dict> dict = Dict::Open(AttachOptions(name_));
  ASSERT_OK(dict);
  const uint64_t before = dict->revision();
  std::string stderr_path;
  std::unique_ptr<WorkerProcess> import = Start({"import", name_}, &stderr_path);
  // 1500 lines with stdin left open: the first 1000 fill a batch and are committed, the rest wait
  // for more input when the import is killed.
  for (int i = 1; i <= 1500; ++i) {
    ASSERT_TRUE(import->SendLine(R"({"key": "k)" + std::to_string(100000 + i) + R"(", "value": )" +
                                 std::to_string(i) + "}"));
  }
  Result<uint64_t> changed = dict->WaitForChange(before, std::chrono::seconds(60));
  ASSERT_OK(changed) << ReadFile(stderr_path);
  EXPECT_TRUE(import->KillAndWait().KilledBy(SIGKILL));

  const std::vector<std::string> listed = SplitLines(Run({"list", name_}).out);
  ASSERT_EQ(listed.size(), 1000u);
  EXPECT_EQ(listed.front(), "k100001\t1");
  EXPECT_EQ(listed.back(), "k101000\t1000");
}

TEST_F(CliTest, ImportOfAMissingFileNamesTheFile) {
  Create(name_);
  ExpectError(Run({"import", name_, temp_dir_ + "/absent.jsonl"}), name_, "absent.jsonl");
}

// ---- watch

TEST_F(CliTest, WatchPrintsChangesMadeByAnotherProcess) {
  Create(name_);
  const uint64_t before = Revision(name_);
  // stderr (the --verbose log) goes into stdout: its "watching" line says the watch has taken its
  // start revision, so changes made from now on are the ones it must print.
  std::unique_ptr<WorkerProcess> watch =
      Start({"--verbose", "watch", name_, "--count", "3"}, /*stderr_path=*/nullptr);
  std::string line;
  while (!Contains(line, "watching changes after revision")) {
    ASSERT_EQ(watch->ReadLine(&line, DeadlineIn(kWorkerTimeout)), LineStatus::kLine)
        << watch->output();
  }

  Set("k", "hello");
  Set("n", "5", "int");
  ExpectOutput(Run({"del", name_, "k"}), "");

  const ExitInfo exit = watch->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << "\n" << watch->output();
  std::vector<std::string> changes;
  for (const std::string& l : watch->TakeLines()) {
    if (!l.starts_with("[")) changes.push_back(l);  // "[time] [shmdict] [info] ..." is the log
  }
  EXPECT_EQ(changes, (std::vector<std::string>{
                         std::to_string(before + 1) + "\tset\tk\thello",
                         std::to_string(before + 2) + "\tset\tn\t5",
                         std::to_string(before + 3) + "\tdel\tk",
                     }));
}

TEST_F(CliTest, WatchFromARevisionReplaysTheChangesAfterIt) {
  Create(name_);
  Set("a", "1");
  const uint64_t after_a = Revision(name_);
  Set("b", "2");
  Set("c", "3");
  ExpectOutput(Run({"watch", name_, "--from", std::to_string(after_a), "--count", "2"}),
               std::to_string(after_a + 1) + "\tset\tb\t2\n" + std::to_string(after_a + 2) +
                   "\tset\tc\t3\n");
}

TEST_F(CliTest, WatchFromBeforeTheLogStartsWithTheSnapshot) {
  ExpectOutput(Run({"create", name_, "--buffer-size", "64KiB"}), "created dict '" + name_ + "'\n");
  {
    // Enough small writes to wrap the 64 KiB log several times: revision 1 is long gone from it.
    Result<Dict> dict = Dict::Open(AttachOptions(name_));
    ASSERT_OK(dict);
    ASSERT_OK(dict->Set("a", Value::Str("1")));
    for (int i = 1; i <= 5000; ++i) ASSERT_OK(dict->Set("churn", Value::Int(i)));
  }
  const uint64_t last_churn = Revision(name_);
  std::string stderr_path;
  std::unique_ptr<WorkerProcess> watch = Start({"watch", name_, "--from", "1"}, &stderr_path);
  // The snapshot comes first, then every change after it; "c" is set once the watch runs.
  std::vector<std::string> lines;
  bool c_set = false;
  while (lines.empty() || !lines.back().ends_with("\tset\tc\t3")) {
    std::string line;
    ASSERT_EQ(watch->ReadLine(&line, DeadlineIn(kWorkerTimeout)), LineStatus::kLine)
        << watch->output() << ReadFile(stderr_path);
    lines.push_back(line);
    if (!c_set) {
      Set("c", "3");
      c_set = true;
    }
  }
  watch->Signal(SIGTERM);
  const ExitInfo exit = watch->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << ReadFile(stderr_path);

  // "a" was revision 1 and churn value i revision i + 1.
  ASSERT_GE(lines.size(), 3u);
  const uint64_t snapshot_revision = std::stoull(lines[0].substr(0, lines[0].find('\t')));
  EXPECT_GT(snapshot_revision, 1u);
  std::vector<std::string> expected = {std::to_string(snapshot_revision) + "\tsnapshot\ta\t1",
                                       std::to_string(snapshot_revision) + "\tsnapshot\tchurn\t" +
                                           std::to_string(snapshot_revision - 1)};
  for (uint64_t revision = snapshot_revision + 1; revision <= last_churn; ++revision) {
    expected.push_back(std::to_string(revision) + "\tset\tchurn\t" + std::to_string(revision - 1));
  }
  expected.push_back(std::to_string(last_churn + 1) + "\tset\tc\t3");
  EXPECT_EQ(lines, expected);
}

TEST_F(CliTest, WatchJsonPrintsOneObjectPerChange) {
  Create(name_);
  const uint64_t before = Revision(name_);
  Set("n", "5", "int");
  ExpectOutput(Run({"del", name_, "n"}), "");
  ExpectOutput(Run({"import", name_}, R"({"key": "c", "value": {"a": 1}})"),
               "imported 1 entries, revision " + std::to_string(before + 3) + "\n");

  const CliRun run =
      Run({"watch", name_, "--json", "--from", std::to_string(before), "--count", "3"});
  ASSERT_EQ(run.code(), 0) << run.Describe();
  const std::vector<std::string> lines = SplitLines(run.out);
  ASSERT_EQ(lines.size(), 3u) << run.Describe();
  EXPECT_EQ(
      Json::parse(lines[0]),
      Json({{"revision", before + 1}, {"op", "set"}, {"key", "n"}, {"type", "int"}, {"value", 5}}));
  EXPECT_EQ(Json::parse(lines[1]), Json({{"revision", before + 2}, {"op", "del"}, {"key", "n"}}));
  EXPECT_EQ(Json::parse(lines[2]), Json({{"revision", before + 3},
                                         {"op", "set"},
                                         {"key", "c"},
                                         {"type", "json"},
                                         {"value", {{"a", 1}}}}));
}

TEST_F(CliTest, WatchExitsCleanlyOnSigintAndSigterm) {
  Create(name_);
  for (int sig : {SIGINT, SIGTERM}) {
    std::unique_ptr<WorkerProcess> watch =
        Start({"--verbose", "watch", name_}, /*stderr_path=*/nullptr);
    std::string line;
    while (!Contains(line, "watching changes after revision")) {
      ASSERT_EQ(watch->ReadLine(&line, DeadlineIn(kWorkerTimeout)), LineStatus::kLine)
          << watch->output();
    }
    watch->Signal(sig);
    const ExitInfo exit = watch->Wait(DeadlineIn(kWorkerTimeout));
    EXPECT_TRUE(exit.Succeeded()) << sigabbrev_np(sig) << ": " << exit.ToString() << "\n"
                                  << watch->output();
  }
}

// ---- status, ls, unlink

TEST_F(CliTest, StatusPrintsEveryField) {
  Create(name_);
  Set("a", "1");
  Set("b", "2");

  const CliRun json = Run({"status", name_, "--json"});
  ASSERT_EQ(json.code(), 0) << json.Describe();
  const Json fields = Json::parse(json.out);
  for (const char* field : {"name",
                            "layout_version",
                            "revision",
                            "entries",
                            "log_capacity",
                            "log_used",
                            "snapshot_generation",
                            "snapshot_revision",
                            "snapshots_built",
                            "lock_held",
                            "lock_holder_pid",
                            "lock_holder_pid_namespace",
                            "lock_holder_in_this_pid_namespace",
                            "lock_recoveries",
                            "creator_pid",
                            "creator_alive",
                            "attached",
                            "segment_bytes",
                            "mode",
                            "replica_of",
                            "replica_listen",
                            "upstream_revision",
                            "upstream_connected",
                            "last_upstream_contact"}) {
    EXPECT_TRUE(fields.contains(field)) << field << " missing in " << json.out;
  }
  EXPECT_EQ(fields["name"], name_);
  EXPECT_EQ(fields["entries"], 2);
  EXPECT_EQ(fields["revision"], Revision(name_));
  EXPECT_EQ(fields["mode"], "0600");
  EXPECT_EQ(fields["creator_alive"], false);
  EXPECT_EQ(fields["replica_of"], "") << "not a replica";
  EXPECT_EQ(fields["upstream_connected"], false);

  const CliRun plain = Run({"status", name_});
  ASSERT_EQ(plain.code(), 0) << plain.Describe();
  EXPECT_EQ(SplitLines(plain.out).size(), fields.size()) << plain.Describe();
  EXPECT_TRUE(Contains(plain.out, "name: " + name_ + "\n")) << plain.Describe();
  EXPECT_TRUE(Contains(plain.out, "entries: 2\n")) << plain.Describe();
}

// A replica dict (its feed lives in this process): status tells its upstream, and a write through
// the CLI is refused naming the replica's --listen address, changing nothing.
TEST_F(CliTest, StatusShowsAReplicasUpstreamAndSetIsRefusedNamingItsListenAddress) {
  Create(name_);
  Set("a", "1");
  Result<Dict> dict = Dict::Open(AttachOptions(name_));
  ASSERT_OK(dict);
  Result<ReplicaFeed> feed = ReplicaFeed::Adopt(
      *dict, ReplicaMarker{.description = "etcd:http://127.0.0.1:2379 prefix=/app/"}, nullptr);
  ASSERT_OK(feed);
  ASSERT_OK(feed->SetListen("127.0.0.1:7400"));
  ASSERT_OK(feed->Apply({Change{.op = ChangeOp::kSet, .key = "b", .value = Value::Int(2)}}, 9));
  feed->SetContact(true);

  const CliRun json = Run({"status", name_, "--json"});
  ASSERT_EQ(json.code(), 0) << json.Describe();
  const Json fields = Json::parse(json.out);
  EXPECT_EQ(fields["replica_of"], "etcd:http://127.0.0.1:2379 prefix=/app/");
  EXPECT_EQ(fields["replica_listen"], "127.0.0.1:7400");
  EXPECT_EQ(fields["upstream_revision"], 9);
  EXPECT_EQ(fields["upstream_connected"], true);
  EXPECT_GT(fields["last_upstream_contact"].get<uint64_t>(), 0u);

  const uint64_t revision = Revision(name_);
  const CliRun set = Run({"set", name_, "a", "5"});
  EXPECT_EQ(set.code(), 2) << set.Describe();
  EXPECT_TRUE(Contains(set.err, "is a replica of etcd:http://127.0.0.1:2379 prefix=/app/"))
      << set.Describe();
  EXPECT_TRUE(Contains(set.err, "write through 127.0.0.1:7400, the replica's --listen"))
      << set.Describe();
  EXPECT_EQ(Revision(name_), revision);
  EXPECT_EQ(dict->Get("a")->value(), Value::Str("1"));
}

TEST_F(CliTest, LsShowsTheDictAndWhetherItIsAbandoned) {
  Create(name_);
  auto find_row = [&](const CliRun& run) {
    EXPECT_EQ(run.code(), 0) << run.Describe();
    for (const Json& row : Json::parse(run.out)) {
      if (row["name"] == name_) return row;
    }
    ADD_FAILURE() << name_ << " not listed: " << run.Describe();
    return Json();
  };
  // The creating command has exited and nobody has it open.
  Json row = find_row(Run({"ls", "--json"}));
  EXPECT_EQ(row["abandoned"], true) << row.dump();
  EXPECT_EQ(row["entries"], 0) << row.dump();

  Result<Dict> dict = Dict::Open(AttachOptions(name_));
  ASSERT_OK(dict);
  ASSERT_OK(dict->Set("k", Value::Str("v")));
  row = find_row(Run({"ls", "--json"}));
  EXPECT_EQ(row["abandoned"], false) << row.dump();
  EXPECT_EQ(row["entries"], 1) << row.dump();
  EXPECT_EQ(row["revision"], dict->revision()) << row.dump();

  const CliRun plain = Run({"ls"});
  // Built with the bridge, a BRIDGES column follows: no bridge serves this dict.
  const std::string line = name_ + "\t1\t" + std::to_string(dict->revision()) + "\tin-use";
  EXPECT_TRUE(Contains(plain.out, line + "\n") || Contains(plain.out, line + "\t0\n"))
      << plain.Describe();
}

TEST_F(CliTest, UnlinkRemovesEverySegmentIncludingNestedChildren) {
  Create(name_);
  Set("a", "1");
  {
    Result<Dict> dict = Dict::Open(AttachOptions(name_));
    ASSERT_OK(dict);
    Result<Dict> nested = dict->OpenNested("child");
    ASSERT_OK(nested);
    ASSERT_OK(nested->Set("x", Value::Int(1)));
  }
  EXPECT_GE(ShmEntriesWithPrefix(name_).size(), 2u);

  ExpectOutput(Run({"unlink", name_}), "");
  const std::vector<std::string> left = ShmEntriesWithPrefix(name_);
  EXPECT_TRUE(left.empty()) << left.front();
  ExpectError(Run({"get", name_, "a"}), name_, "dict '" + name_ + "' does not exist");
  ExpectError(Run({"unlink", name_}), name_, "does not exist");
}

// ---- errors common to every command

TEST_F(CliTest, InvalidNamesAreRefused) {
  for (const std::string name : {"", "a/b", "..", "../etc"}) {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"create", name},
             {"set", name, "k", "v"},
             {"get", name, "k"},
             {"del", name, "k"},
             {"incr", name, "k"},
             {"list", name},
             {"import", name},
             {"export", name},
             {"watch", name},
             {"status", name},
             {"unlink", name},
         }) {
      ExpectError(Run(args), name, "INVALID_ARGUMENT");
    }
  }
  EXPECT_TRUE(ShmEntriesWithPrefix("..").empty());
}

// A name starting with '-' reads as a flag; given after "--" it is still refused, never created.
TEST_F(CliTest, NamesStartingWithADashAreRefused) {
  const std::string dashed = "-" + name_;
  ExpectError(Run({"create", "--", dashed}), dashed, "INVALID_ARGUMENT");
  ExpectError(Run({"set", "--", dashed, "k", "v"}), dashed, "INVALID_ARGUMENT");
  ExpectError(Run({"unlink", "--", dashed}), dashed, "INVALID_ARGUMENT");
  EXPECT_TRUE(ShmEntriesWithPrefix(dashed).empty());
}

TEST_F(CliTest, AMissingDictIsNamedInTheError) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"set", name_, "k", "v"},
           {"get", name_, "k"},
           {"del", name_, "k"},
           {"incr", name_, "k"},
           {"list", name_},
           {"import", name_},
           {"export", name_},
           {"watch", name_},
           {"status", name_},
           {"unlink", name_},
       }) {
    ExpectError(Run(args), name_, "dict '" + name_ + "' does not exist");
  }
  EXPECT_TRUE(ShmEntriesWithPrefix(name_).empty());
}

TEST_F(CliTest, EveryCommandHasHelp) {
  for (const std::string command : {"create", "set", "get", "del", "incr", "list", "import",
                                    "export", "watch", "status", "ls", "unlink", "bridges"}) {
    const CliRun run = Run({command, "--help"});
    EXPECT_EQ(run.code(), 0) << run.Describe();
    EXPECT_TRUE(Contains(run.out, "shmdict " + command)) << run.Describe();
    EXPECT_TRUE(Contains(run.out, "Exit status")) << run.Describe();
  }
  EXPECT_TRUE(Contains(Run({"list", "--help"}).out, "hex"));
  EXPECT_TRUE(Contains(Run({"import", "--help"}).out, "every line before it stays imported"));
}

TEST_F(CliTest, UsageErrorsExitWithTwoAndOneLine) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {}, {"frobnicate"}, {"get", name_}, {"watch", name_, "--count", "0"}}) {
    const CliRun run = Run(args);
    EXPECT_EQ(run.code(), 2) << run.Describe();
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.Describe();
  }
}

}  // namespace
}  // namespace shmdict::testing
