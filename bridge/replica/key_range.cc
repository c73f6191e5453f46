#include "key_range.h"

#include "shmdict/dict.h"

namespace shmdict::replica {

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    const auto last = static_cast<unsigned char>(end.back());
    if (last != 0xFF) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

std::string PrefixRangeKey(std::string_view prefix) {
  return prefix.empty() ? std::string(1, '\0') : std::string(prefix);
}

std::optional<std::string_view> LocalKeyOf(std::string_view etcd_key, std::string_view prefix) {
  if (!etcd_key.starts_with(prefix)) return std::nullopt;
  const std::string_view local = etcd_key.substr(prefix.size());
  if (local.empty() || local.size() > kMaxKeyBytes) return std::nullopt;
  return local;
}

std::string EtcdKeyOf(std::string_view local_key, std::string_view prefix) {
  std::string key;
  key.reserve(prefix.size() + local_key.size());
  key.append(prefix);
  key.append(local_key);
  return key;
}

}  // namespace shmdict::replica
