// VocabBuilder: WordPiece vocabularies learned from a corpus (HF
// WordPieceTrainer-style BPE merges), deterministic, round-tripping files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>

#include "common/error.h"
#include "data/vocab_builder.h"
#include "data/wordpiece.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Strings = std::vector<std::string>;

const Strings kSpecials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

/// A small deterministic catalogue: product titles with brands, sizes,
/// accents and a little CJK.
Strings catalogue(int n) {
  const Strings brands = {"Nike", "Adidas", "Levi's", "Samsung", "Apple", "L'Oréal", "Crème Co", "小米"};
  const Strings kinds = {"Running Shoes", "Jeans", "Smart TV", "Headphones", "Face Cream", "T-Shirt", "手机"};
  const Strings colours = {"Black", "White", "Navy Blue", "Rosé", "Olive", "Crimson"};
  std::mt19937 rng(7);
  Strings out;
  for (int i = 0; i < n; ++i) {
    out.push_back(brands[rng() % brands.size()] + " " + kinds[rng() % kinds.size()] + " - " +
                  colours[rng() % colours.size()] + ", Size " + std::to_string(rng() % 50) + " (" +
                  std::to_string(rng() % 5 + 1) + "-Pack)");
  }
  return out;
}

Strings build(const Strings& texts, int vocab_size, std::int64_t min_frequency = 2) {
  VocabBuilderOptions o;
  o.vocab_size = vocab_size;
  o.min_frequency = min_frequency;
  VocabBuilder b(o);
  for (const auto& t : texts) b.add_text(t);
  return b.build();
}

TEST(VocabBuilder, HandWorkedMergesAndTieRule) {
  // ids: specials 0-4, then a b c (plain), then ##b ##c.
  Strings v = build({"ab ab ab ac"}, 100, 1);
  EXPECT_EQ(v,
            (Strings{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##b", "##c", "ab", "ac"}));
  // min_frequency 2: "ac" (once) is not merged.
  EXPECT_EQ(build({"ab ab ab ac"}, 100, 2).back(), "ab");
  // A tie (1 each): the pair with the smaller (left id, right id) first.
  Strings tie = build({"ac ab"}, 11, 1);
  EXPECT_EQ(tie.back(), "ab");
  EXPECT_EQ(tie.size(), 11u);
  // Inner merges keep one "##"; a later merge extends the word start.
  Strings inner = build({"xbc ybc"}, 100, 1);
  EXPECT_EQ(inner[11], "##bc");  // ids 5-8: b c x y, 9-10: ##b ##c
  EXPECT_THAT(inner, ::testing::Contains("xbc"));
  // Equal strings from different pairs reuse the id: "abc" = ab+##c = a+##bc.
  Strings reuse = build({"abc abc abc abd abd zbc zbc"}, 100, 1);
  EXPECT_EQ(std::set<std::string>(reuse.begin(), reuse.end()).size(), reuse.size());
}

TEST(VocabBuilder, SpecialsFirstAndVocabSizeRespected) {
  const Strings texts = catalogue(2000);
  for (int size : {5, 12, 60, 300, 600}) {
    Strings v = build(texts, size);
    ASSERT_LE(v.size(), static_cast<std::size_t>(size)) << size;
    ASSERT_GE(v.size(), 5u);
    EXPECT_EQ(Strings(v.begin(), v.begin() + 5), kSpecials);
    EXPECT_EQ(std::set<std::string>(v.begin(), v.end()).size(), v.size()) << "duplicate token, size " << size;
    if (size <= 150) {  // this corpus saturates at ~200 tokens: every word whole
      EXPECT_EQ(v.size(), static_cast<std::size_t>(size)) << "corpus is rich enough to fill it";
    }
  }
  // An alphabet that does not fit keeps the most frequent letters.
  Strings cut = build(texts, 8);
  EXPECT_EQ(cut.size(), 8u);
  EXPECT_THAT(Strings(cut.begin() + 5, cut.end()), ::testing::Not(::testing::Contains("米")));
}

TEST(VocabBuilder, TokenizesItsOwnCorpusWithoutUnk) {
  const Strings texts = catalogue(3000);
  Strings v = build(texts, 400);
  auto tok = WordPieceTokenizer::from_tokens(v);
  std::size_t pieces = 0, unk = 0, words = 0;
  for (const auto& t : texts) {
    for (const auto& p : tok.tokenize(t)) {
      ++pieces;
      unk += p == "[UNK]";
    }
    words += wordpiece_words(t).size();
  }
  EXPECT_EQ(unk, 0u);
  // The merges are used: frequent words are one piece each.
  EXPECT_LT(static_cast<double>(pieces) / static_cast<double>(words), 1.2);
  EXPECT_EQ(tok.tokenize("Running Shoes"), (Strings{"running", "shoes"}));
  EXPECT_EQ(tok.tokenize("crème"), Strings{"creme"});
  // An unseen word still tokenizes from the alphabet.
  EXPECT_THAT(tok.tokenize("unseen"), ::testing::Not(::testing::Contains("[UNK]")));
}

TEST(VocabBuilder, DeterministicAndOrderIndependent) {
  Strings texts = catalogue(1500);
  const Strings a = build(texts, 350);
  EXPECT_EQ(build(texts, 350), a);
  std::shuffle(texts.begin(), texts.end(), std::mt19937(99));
  EXPECT_EQ(build(texts, 350), a);
}

TEST(VocabBuilder, WriteVocabRoundTripsThroughFromFile) {
  const Strings texts = catalogue(1000);
  const Strings v = build(texts, 300);
  const fs::path dir = fs::temp_directory_path() / ("llmrec_vocab_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "vocab.txt").string();
  write_vocab(v, path);
  auto from_file = WordPieceTokenizer::from_file(path);
  auto from_tokens = WordPieceTokenizer::from_tokens(v);
  EXPECT_EQ(from_file.tokens(), v);
  for (const auto& t : texts) ASSERT_EQ(from_file.encode(t, 32), from_tokens.encode(t, 32)) << t;
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
  // Errors: a token that would not read back; a path that cannot be written.
  EXPECT_THROW(write_vocab({"[PAD]", "a\nb"}, path), Error);
  EXPECT_THROW(write_vocab({"[PAD]", ""}, path), Error);
  try {
    write_vocab(v, (dir / "no-such-dir" / "vocab.txt").string());
    ADD_FAILURE() << "no IoError";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no-such-dir"));
  }
  fs::remove_all(dir);
}

TEST(VocabBuilder, OptionsAreValidated) {
  VocabBuilderOptions o;
  o.vocab_size = 4;
  EXPECT_THROW(VocabBuilder{o}, Error);
  o = {};
  o.min_frequency = 0;
  EXPECT_THROW(VocabBuilder{o}, Error);
  VocabBuilder b;
  b.add_text("Hello, world! hello");
  EXPECT_EQ(b.word_count(), 5);
  // Empty corpus: the specials only.
  EXPECT_EQ(VocabBuilder().build(), kSpecials);
}

}  // namespace
}  // namespace llmrec
