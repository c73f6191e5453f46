// The CLI's transports in a build with bridge support (see transport.h).
#include <chrono>
#include <utility>

#include "shmdict/bridge/presence.h"
#include "shmdict/remote_catalog.h"
#include "transport.h"

namespace shmdict::cli {
namespace {

RemoteOptions RemoteFor(const CommandLine& cl) {
  RemoteOptions options;
  options.address = cl.remote;
  options.token = cl.token;
  options.tls_ca = cl.tls_ca;
  options.tls_cert = cl.tls_cert;
  options.tls_key = cl.tls_key;
  options.mirror = false;  // one command, a few calls: a copy of the dict would only cost
  options.open_timeout = std::chrono::seconds(5);
  return options;
}

}  // namespace

Result<std::unique_ptr<Catalog>> OpenRemoteCatalog(const CommandLine& cl) {
  return std::unique_ptr<Catalog>(std::make_unique<RemoteCatalog>(RemoteFor(cl)));
}

std::optional<Json> LiveBridges(const std::string* dict) {
  Json all = Json::array();
  for (const bridge::BridgeRecord& record : bridge::ListLiveBridges()) {
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

Result<bool> CheckBridgeHealth(const CommandLine& cl, std::string* address) {
  RemoteOptions options = RemoteFor(cl);
  if (options.address.empty()) options.address = "127.0.0.1:7377";  // the bridge's default
  options.call_timeout = std::chrono::seconds(5);
  *address = options.address;
  return RemoteCatalog(options).CheckHealthOfService(cl.service);
}

}  // namespace shmdict::cli
