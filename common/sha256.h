#pragma once
/// SHA-256 (FIPS 180-4), for the fingerprints that evaluation results carry:
/// the dataset file and the resolved configuration.
///
///   Sha256 h;
///   h.update(data, n);              // any number of times
///   std::string hex = h.hex_digest();  // 64 lowercase hex digits
///   sha256_hex("abc");              // "ba7816bf..."
///   sha256_file("dataset.h5");      // streams the file

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace llmrec {

/// Incremental hasher. After hex_digest() the object is spent: call reset()
/// before hashing another message.
class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  void update(const void* data, std::size_t size);
  void update(const std::string& data) { update(data.data(), data.size()); }
  /// The 32-byte digest; finishes the message.
  std::array<std::uint8_t, 32> digest();
  /// The digest as 64 lowercase hex digits; finishes the message.
  std::string hex_digest();

 private:
  void compress(const std::uint8_t* block);

  std::array<std::uint32_t, 8> state_{};
  std::array<std::uint8_t, 64> block_{};
  std::size_t block_used_ = 0;
  std::uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

/// SHA-256 of `data` as 64 lowercase hex digits.
std::string sha256_hex(const std::string& data);

/// SHA-256 of the file's bytes; IoError naming the file if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace llmrec
