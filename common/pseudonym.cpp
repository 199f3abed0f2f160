#include "common/pseudonym.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/sha256.h"

namespace llmrec {

std::string hmac_sha256_hex(const std::string& key, const std::string& message) {
  constexpr std::size_t kBlock = 64;
  std::string k = key;
  if (k.size() > kBlock) {  // longer keys are hashed first (RFC 2104)
    Sha256 h;
    h.update(k);
    const auto d = h.digest();
    k.assign(d.begin(), d.end());
  }
  k.resize(kBlock, '\0');
  std::string inner_pad(kBlock, '\0'), outer_pad(kBlock, '\0');
  for (std::size_t i = 0; i < kBlock; ++i) {
    inner_pad[i] = static_cast<char>(k[i] ^ 0x36);
    outer_pad[i] = static_cast<char>(k[i] ^ 0x5c);
  }
  Sha256 inner;
  inner.update(inner_pad);
  inner.update(message);
  const auto inner_digest = inner.digest();
  Sha256 outer;
  outer.update(outer_pad);
  outer.update(inner_digest.data(), inner_digest.size());
  return outer.hex_digest();
}

std::string read_secret_file(const std::string& path, const std::string& what, std::size_t min_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{} {}: cannot be read: {}", what, path, std::strerror(errno)));
  std::string line;
  std::getline(in, line);
  const auto b = line.find_first_not_of(" \t\r");
  const auto e = line.find_last_not_of(" \t\r");
  std::string secret = b == std::string::npos ? std::string() : line.substr(b, e - b + 1);
  if (secret.size() < min_bytes) {
    throw ConfigError(
        fmt::format("{} {}: the first line holds {} bytes, at least {} are needed (e.g. "
                    "`head -c 32 /dev/urandom | base64 > {}`)",
                    what, path, secret.size(), min_bytes, path));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("{} {}: readable by others than its owner (chmod 600 it)", what, path);
  }
  return secret;
}

std::string read_pseudonym_key(const std::string& path) {
  return read_secret_file(path, "pseudonym key", 16);
}

std::string pseudonymise(const std::string& key, const std::string& id) {
  return "p:" + hmac_sha256_hex(key, id);
}

std::string check_pseudonym_key(const std::string& key) {
  return hmac_sha256_hex(key, "llmrec pseudonym key check").substr(0, 16);
}

}  // namespace llmrec
