#include <shmdict/dict.h>
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
  if (!dict->Set("k", shmdict::Value::Int(7)).ok()) return 1;
  return dict->Get("k")->AsInt() == 7 ? 0 : 1;  // the handle unlinks the dict on exit
}
