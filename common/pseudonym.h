#pragma once
/// Keyed pseudonyms for user ids (`llmrec export --pseudonymise`): an export
/// may leave the machine without the raw ids, and only a holder of the key
/// can map a raw id to its pseudonym (serving with --pseudonym-key-file).
///
///   std::string key = read_pseudonym_key("secrets/users.key");
///   pseudonymise(key, "u000042");     // "p:" + HMAC-SHA256(key, id) in hex
///   check_pseudonym_key(key);         // stored in the export: a wrong key is refused
///
/// HMAC-SHA256 is RFC 2104 over SHA-256 (common/sha256.h), checked against
/// RFC 4231's test vectors.

#include <cstddef>
#include <string>

namespace llmrec {

/// The export attribute `user_ids` of a pseudonymised export.
constexpr const char* kPseudonymScheme = "hmac-sha256";

/// HMAC-SHA256 of `message` under `key`, 64 lowercase hex digits.
std::string hmac_sha256_hex(const std::string& key, const std::string& message);

/// A secret kept in a file (a key, a bearer token): its first line,
/// surrounding whitespace trimmed, at least `min_bytes` long. ConfigError
/// naming `what` and the file otherwise; a warning when others than its
/// owner may read the file.
std::string read_secret_file(const std::string& path, const std::string& what, std::size_t min_bytes);

/// The key in `path`: its first line, surrounding whitespace trimmed; at
/// least 16 bytes. ConfigError naming the file otherwise (unreadable, too
/// short); a warning when others than its owner may read it.
std::string read_pseudonym_key(const std::string& path);

/// "p:" + hmac_sha256_hex(key, id).
std::string pseudonymise(const std::string& key, const std::string& id);

/// 16 hex digits of HMAC(key, a fixed message): tells whether a key is the
/// export's without revealing anything about it.
std::string check_pseudonym_key(const std::string& key);

}  // namespace llmrec
