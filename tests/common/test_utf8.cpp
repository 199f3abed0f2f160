#include <gtest/gtest.h>

#include <string>

#include "common/utf8.h"

namespace llmrec {
namespace {

TEST(Utf8, ValidRejectsOverlongSurrogatesAndTruncatedSequences) {
  EXPECT_TRUE(utf8_valid("crème brûlée, 日本, 😀"));
  EXPECT_FALSE(utf8_valid("bad \xC3\x28 utf-8"));          // a lead byte without its continuation
  EXPECT_FALSE(utf8_valid("\xC0\xAF"));                    // overlong '/'
  EXPECT_FALSE(utf8_valid("\xED\xA0\x80"));                // a surrogate
  EXPECT_FALSE(utf8_valid("\xF4\x90\x80\x80"));            // past U+10FFFF
  EXPECT_FALSE(utf8_valid(std::string("ab\xE2\x82", 4)));  // cut inside the last code point
}

TEST(Utf8, LengthAndPrefixCountCodePointsNotBytes) {
  const std::string s = "aé日😀b";  // 1 + 2 + 3 + 4 + 1 bytes
  EXPECT_EQ(utf8_length(s), 5u);
  EXPECT_EQ(utf8_prefix_bytes(s, 0), 0u);
  EXPECT_EQ(utf8_prefix_bytes(s, 2), 3u);
  EXPECT_EQ(utf8_prefix_bytes(s, 4), 10u);
  EXPECT_EQ(utf8_prefix_bytes(s, 99), s.size());
}

TEST(Utf8, TruncateCutsAtACodePointAndMarksTheCut) {
  EXPECT_EQ(utf8_truncate("short", 8), "short");
  EXPECT_EQ(utf8_truncate("exactly8", 8), "exactly8");
  EXPECT_EQ(utf8_truncate("nine char", 8), "nine ...");
  // Multi-byte code points are never split: 5 code points kept, then "...".
  EXPECT_EQ(utf8_truncate("日本語のテキストです", 8), "日本語のテ...");
  EXPECT_EQ(utf8_length(utf8_truncate("😀😀😀😀😀😀😀😀😀", 8)), 8u);
  EXPECT_TRUE(utf8_valid(utf8_truncate("😀😀😀😀😀😀😀😀😀", 8)));
}

}  // namespace
}  // namespace llmrec
