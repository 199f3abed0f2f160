// SHA-256 against the FIPS 180-4 / NIST example vectors, split updates and
// files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/pseudonym.h"
#include "common/sha256.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 448 bits: the padding needs a second block.
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(
      sha256_hex(
          "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
          "mnopqrstnopqrstu"),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first).
TEST(HmacSha256, Rfc4231Vectors) {
  EXPECT_EQ(hmac_sha256_hex(std::string(20, '\x0b'), "Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(
      hmac_sha256_hex(std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First"),
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(Pseudonym, KeyedStableAndRefusedWhenShort) {
  const std::string key = "0123456789abcdef-key";
  EXPECT_EQ(pseudonymise(key, "u42"), "p:" + hmac_sha256_hex(key, "u42"));
  EXPECT_EQ(pseudonymise(key, "u42"), pseudonymise(key, "u42"));
  EXPECT_NE(pseudonymise(key, "u42"), pseudonymise(key + "x", "u42"));
  EXPECT_NE(check_pseudonym_key(key), check_pseudonym_key(key + "x"));
  EXPECT_EQ(check_pseudonym_key(key).size(), 16u);
  const fs::path dir = fs::temp_directory_path() / ("llmrec_pseudonym_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "good.key") << "  " << key << "  \nignored\n";
  EXPECT_EQ(read_pseudonym_key((dir / "good.key").string()), key);
  std::ofstream(dir / "short.key") << "short\n";
  try {
    read_pseudonym_key((dir / "short.key").string());
    FAIL() << "a 5-byte key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("short.key"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("at least 16 are needed"));
  }
  EXPECT_THROW(read_pseudonym_key((dir / "missing.key").string()), ConfigError);
  fs::remove_all(dir);
}

TEST(Sha256, SplitUpdatesGiveTheSameDigest) {
  std::string msg;
  for (int i = 0; i < 1000; ++i) msg.push_back(static_cast<char>(i * 7 + 3));
  const std::string whole = sha256_hex(msg);
  for (std::size_t step : {1u, 3u, 63u, 64u, 65u, 200u}) {
    Sha256 h;
    for (std::size_t at = 0; at < msg.size(); at += step) h.update(msg.substr(at, step));
    EXPECT_EQ(h.hex_digest(), whole) << "step " << step;
  }
  // Boundary lengths around the 55/56/64-byte padding edges.
  EXPECT_EQ(sha256_hex(std::string(55, 'x')), sha256_hex(std::string(55, 'x')));
  EXPECT_NE(sha256_hex(std::string(55, 'x')), sha256_hex(std::string(56, 'x')));
}

TEST(Sha256, DigestTwiceIsAnErrorUntilReset) {
  Sha256 h;
  h.update("abc");
  EXPECT_EQ(h.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_THROW(h.hex_digest(), Error);
  EXPECT_THROW(h.update("x"), Error);
  h.reset();
  EXPECT_EQ(h.hex_digest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, FileIsHashedByContentAndMissingFileNamesThePath) {
  fs::path p = fs::temp_directory_path() / ("llmrec_sha256_" + std::to_string(::getpid()));
  std::string content(3 << 20, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i % 251);
  std::ofstream(p, std::ios::binary) << content;
  EXPECT_EQ(sha256_file(p.string()), sha256_hex(content));
  fs::remove(p);
  try {
    sha256_file(p.string());
    FAIL() << "no error for a missing file";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(p.string()));
  }
}

}  // namespace
}  // namespace llmrec
