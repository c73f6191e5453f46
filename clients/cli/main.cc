// shmdict: the command-line tool for shared-memory dicts on this host. Argument parsing lives
// here; each command's behaviour is in commands.cc.
#include <exception>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "commands.h"
#include "shmdict/dict.h"

namespace {

using shmdict::cli::CommandLine;

constexpr char kExitStatusHelp[] =
    "Exit status: 0 success, 1 key not found (get, del), 2 any other error, with one line on "
    "stderr naming the dict and the cause.";

CLI::Option* AddName(CLI::App* command, CommandLine* cl) {
  return command
      ->add_option("NAME", cl->name,
                   "Dict name: 1-200 characters of [A-Za-z0-9_.-], not '.' or '..'")
      ->required();
}

CLI::Option* AddKey(CLI::App* command, CommandLine* cl) {
  return command->add_option("KEY", cl->key, "Key")->required();
}

CLI::Option* AddJsonFlag(CLI::App* command, CommandLine* cl, const std::string& description) {
  return command->add_flag("--json", cl->json, description);
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  using namespace shmdict::cli;

  CLI::App app{"Create, inspect, edit and watch shmdict shared-memory dictionaries on this host.",
               "shmdict"};
  app.footer(kExitStatusHelp);
  // Version skew between containers sharing a dict shows here: the layout version must match.
  app.set_version_flag("--version", std::string("shmdict ") + SHMDICT_VERSION +
                                        ", layout version " +
                                        std::to_string(shmdict::Dict::LayoutVersion()));
  app.require_subcommand(1);
  // Lets --verbose follow the command as well as precede it.
  app.fallthrough();
  CommandLine cl;
  bool verbose = false;
  app.add_option("--remote", cl.remote,
                 "Work on the dict through the shmdict-bridge at ADDR (HOST:PORT or unix:PATH) "
                 "instead of this host's shared memory; every data command, status and ls")
      ->envname("SHMDICT_REMOTE")
      ->type_name("ADDR");
  app.add_option("--token", cl.token,
                 "Send 'authorization: Bearer TOKEN' to the bridge (one started with --token-file)")
      ->envname("SHMDICT_TOKEN")
      ->type_name("TOKEN");
  app.add_option("--tls-ca", cl.tls_ca, "Reach the bridge over TLS, trusting this PEM CA")
      ->type_name("FILE");
  app.add_option("--tls-cert", cl.tls_cert, "PEM client certificate for mTLS (with --tls-key)")
      ->type_name("FILE");
  CLI::Option* tls_key =
      app.add_option("--tls-key", cl.tls_key, "PEM key of --tls-cert")->type_name("FILE");
  app.get_option("--tls-cert")->needs(tls_key);
  tls_key->needs(app.get_option("--tls-cert"));
  app.add_flag("-v,--verbose", verbose,
               "Log the library's activity (opens, compactions, lock recoveries) to stderr");

  std::vector<std::pair<CLI::App*, int (*)(const CommandLine&)>> commands;
  // `summary` is the line in `shmdict --help`; `details` goes below the command's own options.
  auto add_command = [&](const std::string& name, const std::string& summary,
                         const std::string& details, int (*run)(const CommandLine&)) {
    CLI::App* command = app.add_subcommand(name, summary);
    command->footer(details.empty() ? kExitStatusHelp : details + "\n\n" + kExitStatusHelp);
    commands.emplace_back(command, run);
    return command;
  };

  CLI::App* create = add_command(
      "create", "Create a dict that stays until 'shmdict unlink'",
      "Does nothing (exit 0) if the dict already exists, unless --exclusive.", RunCreate);
  AddName(create, &cl);
  create
      ->add_option("--buffer-size", cl.buffer_size,
                   "Size of the change log in bytes (suffixes K, KiB, M, MiB, ... are powers of "
                   "1024); rounded up to a power of two, at least 64 KiB")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  create->add_option("--mode", cl.mode, "File mode of the segments, in octal")
      ->type_name("OCTAL")
      ->capture_default_str();
  create->add_flag("--exclusive", cl.exclusive, "Fail (exit 2) if the dict already exists");

  CLI::App* set = add_command("set", "Set KEY to VALUE", "", RunSet);
  AddName(set, &cl);
  AddKey(set, &cl);
  set->add_option("VALUE", cl.value, "Value, parsed as --type")->required();
  set->add_option(
         "--type", cl.type,
         "str: text; int: a decimal int64; float: a double; bool: true/false/1/0; json: "
         "a JSON document (checked); bytes: the argument's bytes; null: the text null. A value "
         "that does not parse as its type exits 2")
      ->check(CLI::IsMember({"str", "int", "float", "bool", "json", "bytes", "null"}))
      ->capture_default_str();

  CLI::App* get = add_command("get", "Print KEY's value as text; exit 1 if the key is missing",
                              "Bytes that are not printable are shown as '0x' + hex.", RunGet);
  AddName(get, &cl);
  AddKey(get, &cl);

  CLI::App* del = add_command("del", "Delete KEY; exit 1 if the key is missing", "", RunDel);
  AddName(del, &cl);
  AddKey(del, &cl);

  CLI::App* incr = add_command(
      "incr", "Atomically add DELTA to KEY's int value and print the result",
      "A missing key counts as 0; a value that is not an int exits 2 and is left unchanged.",
      RunIncr);
  AddName(incr, &cl);
  AddKey(incr, &cl);
  incr->add_option("DELTA", cl.delta, "Amount to add, may be negative")->capture_default_str();

  CLI::App* list = add_command(
      "list", "Print every entry, sorted by key",
      "Plain: 'KEY<tab>VALUE' lines, values as text (bytes that are not printable as '0x' + "
      "hex).",
      RunList);
  AddName(list, &cl);
  AddJsonFlag(list, &cl,
              "Print one JSON object {key: value}: int and float as numbers, bool as a boolean, "
              "json as the embedded document, str and bytes as strings (as '0x' + hex when not "
              "valid UTF-8, also for keys), a nested dict as {\"$dict\": child name}");

  CLI::App* import_command = add_command(
      "import", "Add entries from JSON Lines",
      "Each line is {\"key\": K, \"value\": V} with an optional \"type\" (str, int, float, "
      "bool, json, bytes, dict, user:N); without it the JSON type decides: string -> str, "
      "integer -> int, other number -> float, boolean -> bool, object/array -> json. The exact "
      "forms export writes are accepted too (\"key_hex\", \"value_text\", \"value_hex\").\n"
      "Lines are committed in input order in atomic batches (1000 lines or 1 MiB), so an "
      "interrupted import leaves the dict holding a prefix of the input. A malformed line stops "
      "the import with exit 2 naming the line; every line before it stays imported.\n"
      "Prints 'imported N entries, revision R'.",
      RunImport);
  AddName(import_command, &cl);
  import_command->add_option("FILE", cl.file, "JSON Lines file; '-' reads stdin")
      ->capture_default_str();

  CLI::App* export_command = add_command(
      "export", "Print every entry as JSON Lines that import reads back exactly",
      "One {\"key\", \"type\", \"value\"} object per line, sorted by key. What \"value\" cannot "
      "carry exactly is written as \"key_hex\" / \"value_hex\" (bytes that are not valid UTF-8, "
      "in hex) or \"value_text\" (e.g. JSON text that is not in compact form).",
      RunExport);
  AddName(export_command, &cl);

  CLI::App* watch = add_command(
      "watch", "Print changes as they are committed",
      "One line per change, flushed: 'REV<tab>set<tab>KEY<tab>VALUE', 'REV<tab>del<tab>KEY', "
      "'REV<tab>clear'. When --from is older than the change log holds, the entries of the "
      "latest snapshot come first as 'S<tab>snapshot<tab>KEY<tab>VALUE' (S: the snapshot's "
      "revision), then every change after S. Stops on SIGINT or SIGTERM with exit 0.",
      RunWatch);
  AddName(watch, &cl);
  CLI::Option* from = watch->add_option("--from", cl.from,
                                        "Print the changes after revision REV (0: from the "
                                        "start); default: only changes made from now on");
  from->type_name("REV");
  watch->add_option("--count", cl.count, "Exit 0 after N changes (snapshot lines do not count)")
      ->type_name("N")
      ->check(CLI::PositiveNumber);
  AddJsonFlag(watch, &cl,
              "One JSON object per line: {\"revision\", \"op\", \"key\", \"type\", \"value\"} "
              "with key and value in export's exact form");

  CLI::App* status = add_command(
      "status", "Print every status field of a dict",
      "Plain: 'field: value' lines. Does not attach to the dict. 'bridges: N' counts the live "
      "bridges of this host serving the dict (one that has attached it); a line 'bridge: "
      "ADDRESSES pid=PID since=TIME subscribers=N' follows for each (--json: an array).",
      RunStatus);
  AddName(status, &cl);
  AddJsonFlag(status, &cl, "Print one JSON object");

  CLI::App* ls = add_command(
      "ls", "List the dicts on this host",
      "Plain: 'NAME<tab>ENTRIES<tab>REVISION<tab>STATE<tab>BRIDGES' lines; STATE is "
      "'abandoned' when the dict's creator is gone and no process has it open, else 'in-use' (with "
      "--remote: as the bridge's host sees it, 'remote' from a bridge older than v1.2); BRIDGES is "
      "the number of live bridges of this host serving the dict.",
      RunLs);
  AddJsonFlag(ls, &cl, "Print one JSON array of objects");

  CLI::App* bridges = add_command(
      "bridges", "List the live shmdict-bridge processes of this host",
      "Plain: 'PID<tab>SINCE<tab>ADDRESSES<tab>DICTS' lines, DICTS as 'NAME:SUBSCRIBERS,...' "
      "(the dicts the bridge has attached, with their Watch streams). From the bridges' "
      "advisory records in /dev/shm/shmdict-bridges ($SHMDICT_BRIDGE_REGISTRY_DIR): a bridge "
      "that was killed is never listed.",
      RunBridges);
  AddJsonFlag(bridges, &cl, "Print one JSON array of objects");

  CLI::App* unlink_command = add_command(
      "unlink", "Remove a dict and every segment it owns",
      "Removes snapshots, large values and nested children too. Processes that have the dict "
      "open keep working on their mappings.",
      RunUnlink);
  AddName(unlink_command, &cl);

  CLI::App* health = add_command(
      "health", "Ask a bridge whether it serves (grpc.health.v1): for probes and HEALTHCHECKs", "",
      RunHealth);
  // Its own exit statuses, not the data commands'.
  health->footer(
      "Prints SERVING, NOT_SERVING or SERVICE_UNKNOWN. Asks --remote ADDR (default "
      "127.0.0.1:7377: a bridge's --listen or --health-listen).\n\n"
      "Exit status: 0 SERVING, 1 NOT_SERVING or an unknown service, 2 the bridge cannot be "
      "reached (one line on stderr).");
  health->add_option("--service", cl.service,
                     "\"\" (the bridge), shmdict.v1.Dict, or shmdict.v1.Dict/NAME (a dict)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is reported as a "parse error" with exit code 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    return FailWithoutDict(std::string(e.what()) + " (see shmdict --help)");
  }
  cl.from_given = from->count() > 0;
  if (verbose) {
    cl.logger = spdlog::stderr_logger_mt("shmdict");
    cl.logger->set_level(spdlog::level::debug);
    cl.logger->flush_on(spdlog::level::debug);
  }

  int exit_status = kExitError;
  try {
    for (const auto& [command, run] : commands) {
      if (command->parsed()) exit_status = run(cl);
    }
  } catch (const std::exception& e) {
    return FailWithoutDict(std::string("internal error: ") + e.what());
  }
  std::cout.flush();
  if (!std::cout) return FailWithoutDict("cannot write to stdout");
  return exit_status;
}
