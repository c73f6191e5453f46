#include <shmdict/dict.h>
#include <shmdict/store.h>
#include <unistd.h>

#include <cstdio>
#include <string>

int main() {
  shmdict::Options options;
  options.name = "install-consumer-" + std::to_string(getpid());
  auto dict = shmdict::Dict::Open(options);
  if (!dict.ok()) {
    std::fprintf(stderr, "%s\n", dict.status().ToString().c_str());
    return 1;
  }
  shmdict::Store& store = *dict;  // the local dict through the transport-neutral interface
  if (!store.Set("k", shmdict::Value::Int(7)).ok()) return 1;
  auto got = store.Get("k");
  if (!got.ok() || !got->has_value()) return 1;
  return (*got)->AsInt() == 7 ? 0 : 1;  // the handle unlinks the dict on exit
}
