// WordPiece tokenizer: the Hugging Face goldens (shared/golden), the
// normalization rules one by one, truncation, invalid UTF-8, bad vocabularies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "data/unicode_tables.h"
#include "data/wordpiece.h"
#include "tests/shared_data.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Ids = std::vector<std::int32_t>;
using Strings = std::vector<std::string>;

/// shared/ as CTest passes it; a missing golden is a failure, not a skip:
/// without it nothing here proves HF compatibility.
std::string shared_path(const std::string& relative) {
  const char* dir = std::getenv("LLMREC_SHARED_DIR");
  if (dir == nullptr || *dir == '\0') {
    ADD_FAILURE() << "LLMREC_SHARED_DIR is not set: run through ctest, or export it (the shared/ folder with "
                     "golden/ and models/)";
    return "";
  }
  return (fs::path(dir) / relative).string();
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "golden file missing: " << path << " (shared/golden, see its README.md)";
    return out;
  }
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

/// The bert-base-uncased tokenizer, loaded once; nullptr (and a failure) if
/// shared/models/bert-base-uncased/vocab.txt is missing.
const WordPieceTokenizer* bert() {
  static const WordPieceTokenizer* tok = []() -> const WordPieceTokenizer* {
    std::string path = shared_path("models/bert-base-uncased/vocab.txt");
    if (path.empty() || !fs::exists(path)) return nullptr;
    return new WordPieceTokenizer(WordPieceTokenizer::from_file(path));
  }();
  if (tok == nullptr) ADD_FAILURE() << "vocabulary missing: shared/models/bert-base-uncased/vocab.txt";
  return tok;
}

// `name` is the variable declared: it cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define BERT_OR_FAIL(name)                 \
  LLMREC_SKIP_WITHOUT_SHARED();            \
  const WordPieceTokenizer* name = bert(); \
  ASSERT_NE(name, nullptr)
// NOLINTEND(bugprone-macro-parentheses)

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("llmrec_wordpiece_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

 private:
  fs::path path_;
};

/// A small vocabulary for the option tests.
WordPieceTokenizer tiny(WordPieceOptions options = {}) {
  return WordPieceTokenizer::from_tokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "Hello", "he", "##llo", "##l", "##o", "caf",
       "café", "##é", "##e", "world", ",", "!"},
      options);
}

// ------------------------------------------------------------ goldens

TEST(WordPieceGolden, BertBaseUncasedAll68CasesMatchIdsAndTokens) {
  BERT_OR_FAIL(tok);
  auto cases = read_jsonl(shared_path("golden/wordpiece_bert_base_uncased.jsonl"));
  ASSERT_EQ(cases.size(), 68u) << "the golden file should hold 68 cases";
  int matched = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const Ids want_ids = c["ids"].get<Ids>();
    const Strings want_tokens = c["tokens"].get<Strings>();
    Ids ids = tok->encode(text);
    Strings tokens = tok->tokenize(text);
    tokens.insert(tokens.begin(), "[CLS]");
    tokens.push_back("[SEP]");
    EXPECT_EQ(ids, want_ids) << "text: " << text;
    EXPECT_EQ(tokens, want_tokens) << "text: " << text;
    matched += (ids == want_ids && tokens == want_tokens);
  }
  EXPECT_EQ(matched, 68);
}

// Catalogue text never yields special tokens: a shop must not be able to
// inject [MASK]/[SEP] through a title. Expect HF's "no added tokens" column.
TEST(WordPieceGolden, SpecialTokenStringsInTextAreOrdinaryText) {
  BERT_OR_FAIL(tok);
  auto cases = read_jsonl(shared_path("golden/wordpiece_special_tokens_in_text.jsonl"));
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tok->encode(text), c["ids_no_added_tokens"].get<Ids>()) << text;
    Strings tokens = tok->tokenize(text);
    tokens.insert(tokens.begin(), "[CLS]");
    tokens.push_back("[SEP]");
    EXPECT_EQ(tokens, c["tokens_no_added_tokens"].get<Strings>()) << text;
  }
  // And so no special id other than the frame ever appears.
  Ids ids = tok->encode("[MASK] [SEP] [PAD] [CLS] [UNK]");
  for (std::size_t i = 1; i + 1 < ids.size(); ++i) {
    EXPECT_TRUE(ids[i] > tok->mask_id() || ids[i] == tok->unk_id()) << "id " << ids[i] << " at " << i;
  }
}

// ------------------------------------------------------------ vocabulary API

TEST(WordPieceVocab, SpecialIdsAndLookups) {
  BERT_OR_FAIL(tok);
  EXPECT_EQ(tok->vocab_size(), 30522);
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->unk_id(), 100);
  EXPECT_EQ(tok->cls_id(), 101);
  EXPECT_EQ(tok->sep_id(), 102);
  EXPECT_EQ(tok->mask_id(), 103);
  EXPECT_EQ(tok->id_of("##ing"), 2075);
  EXPECT_EQ(tok->id_of("men"), 2273);
  EXPECT_EQ(tok->id_of("not-a-token"), kNoTokenId);
  EXPECT_EQ(tok->token_of(2273), "men");
  EXPECT_THROW(tok->token_of(30522), Error);
  EXPECT_THROW(tok->token_of(-1), Error);
  EXPECT_EQ(tok->encode(""), (Ids{101, 102}));
  EXPECT_EQ(tok->encode(" \t\n "), (Ids{101, 102}));
  EXPECT_TRUE(tok->tokenize("").empty());
}

// ------------------------------------------------------------ normalization
// Expected values below were produced with HF tokenizers 0.22.2 (the
// golden's configuration) unless the comment says otherwise.

TEST(WordPieceNormalize, AccentsAreStrippedPrecomposedOrNot) {
  BERT_OR_FAIL(tok);
  EXPECT_EQ(tok->tokenize("naïve"), Strings{"naive"});
  EXPECT_EQ(tok->tokenize("NAÏVE"), Strings{"naive"});
  EXPECT_EQ(tok->encode("Cafe\u0301"), tok->encode("Café"));
  EXPECT_EQ(tok->tokenize("\u00C5 \u212B A\u030A"), (Strings{"a", "a", "a"}));  // Å, Angstrom sign, A+ring
  EXPECT_EQ(tok->tokenize("İ"), Strings{"i"});
  EXPECT_EQ(tok->tokenize("Straße"), (Strings{"st", "##raße"}));         // ß has no decomposition
  EXPECT_EQ(tok->tokenize("\uFB01"), Strings{"\uFB01"});                 // no compatibility folding
  EXPECT_EQ(tok->tokenize("x\u0345y"), (Strings{"x", "##y"}));           // Mn with a combining class
  EXPECT_EQ(tok->tokenize("ΣΑΣ ς"), (Strings{"σ", "##α", "##σ", "ς"}));  // no final-sigma rule
}

TEST(WordPieceNormalize, CanonicalOrderingOfCombiningSigns) {
  // Two Mc signs (classes 216, 226) are reordered by NFD even across a
  // stripped Mn of class 230, but not across an Mn of class 0 (U+0E31).
  // Expected = Python unicodedata NFD minus Mn.
  EXPECT_EQ(wordpiece_words("x\U0001D16D\U0001D165"), Strings{"x\U0001D165\U0001D16D"});
  EXPECT_EQ(wordpiece_words("x\U0001D16D\u0301\U0001D165"), Strings{"x\U0001D165\U0001D16D"});
  EXPECT_EQ(wordpiece_words("x\U0001D16D\u0E31\U0001D165"), Strings{"x\U0001D16D\U0001D165"});
}

TEST(WordPieceNormalize, OptionsLowercaseAndStripAccents) {
  WordPieceOptions cased;
  cased.lowercase = false;  // strip_accents follows: off
  EXPECT_EQ(tiny(cased).tokenize("Hello café"), (Strings{"Hello", "café"}));
  EXPECT_EQ(tiny().tokenize("Hello café"), (Strings{"hello", "caf", "##e"}));
  WordPieceOptions keep_accents;
  keep_accents.strip_accents = false;  // lowercase, keep é
  EXPECT_EQ(tiny(keep_accents).tokenize("Hello CAFÉ"), (Strings{"hello", "café"}));
  WordPieceOptions strip_only;
  strip_only.lowercase = false;
  strip_only.strip_accents = true;
  EXPECT_EQ(tiny(strip_only).tokenize("Hello café"), (Strings{"Hello", "caf", "##e"}));
  EXPECT_EQ(wordpiece_words("Hello, World!"), (Strings{"hello", ",", "world", "!"}));
}

TEST(WordPieceNormalize, CjkIdeographsAreSpacedOtherScriptsNot) {
  BERT_OR_FAIL(tok);
  EXPECT_EQ(tok->tokenize("中文字 a中b"), (Strings{"中", "文", "[UNK]", "a", "中", "b"}));
  // Hangul syllables are not "Chinese" but decompose to jamo.
  EXPECT_EQ(tok->tokenize("한국어"), (Strings{"ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ", "##ᄋ", "##ᅥ"}));
  // HF's ranges start extension E at U+2B920 (Google's BERT: U+2B820).
  EXPECT_EQ(tok->tokenize("a\U0002B920b"), (Strings{"a", "[UNK]", "b"}));
  EXPECT_EQ(tok->tokenize("a\U0002B820b"), Strings{"[UNK]"});
  // Full-width Latin is not folded.
  EXPECT_EQ(tok->tokenize("\uFF21"), Strings{"[UNK]"});
}

TEST(WordPieceNormalize, PunctuationIsIsolated) {
  BERT_OR_FAIL(tok);
  EXPECT_EQ(tok->tokenize("¿qué? ¡sí! «hola»"),
            (Strings{"¿", "que", "?", "¡", "si", "!", "«", "ho", "##la", "»"}));
  // ASCII symbols count as punctuation; Unicode symbols (So) do not.
  EXPECT_EQ(tok->tokenize("$5+3=8 a^b|c~d `e`"),
            (Strings{"$", "5", "+", "3", "=", "8", "a", "^", "b", "|", "c", "~", "d", "`", "e", "`"}));
  EXPECT_EQ(tok->tokenize("© 2024 café®"), (Strings{"©", "202", "##4", "cafe", "##®"}));
}

TEST(WordPieceNormalize, ControlAndFormatCharsAreDeletedAndJoinWords) {
  BERT_OR_FAIL(tok);
  // ZWSP, soft hyphen, Mongolian vowel separator (Cf); U+0001, DEL, VT, FF,
  // NEL (Cc, deleted even though VT/FF/NEL are White_Space).
  EXPECT_EQ(tok->tokenize("a\u200Bb\u00ADc\u180Ed\x01"
                          "e\x7F"
                          "f\x0Bg\x0Ch\u0085i"),
            (Strings{"abc", "##de", "##f", "##ghi"}));
  EXPECT_EQ(tok->tokenize(std::string("a\0b", 3)), Strings{"ab"});
  EXPECT_EQ(tok->tokenize("a\uFFFDb"), Strings{"ab"});
  EXPECT_EQ(tok->tokenize("a\uE001b \U000F0001x"), (Strings{"ab", "x"}));  // private use (Co)
  // Unassigned code points (Cn) are kept, as HF does: the word is [UNK].
  EXPECT_EQ(tok->tokenize("a\u0378b"), Strings{"[UNK]"});
}

TEST(WordPieceNormalize, WhitespaceVariantsSplit) {
  BERT_OR_FAIL(tok);
  EXPECT_EQ(tok->tokenize("a\u00A0b\u2009c\u3000d\u2028e\u1680f\tg\nh\ri"),
            (Strings{"a", "b", "c", "d", "e", "f", "g", "h", "i"}));
  EXPECT_EQ(tok->tokenize("  a  \u2029\u202F\u205F b "), (Strings{"a", "b"}));
}

// ------------------------------------------------------------ WordPiece

TEST(WordPieceModel, WordLengthLimitCountsNormalizedCodePoints) {
  BERT_OR_FAIL(tok);
  const std::string a100(100, 'a');
  Strings pieces = tok->tokenize(a100);
  ASSERT_EQ(pieces.size(), 50u);  // "aaa", 48 x "##aa", "##a"
  EXPECT_EQ(pieces.front(), "aaa");
  EXPECT_EQ(pieces.back(), "##a");
  EXPECT_EQ(tok->tokenize(a100 + "a"), Strings{"[UNK]"});
  // 101 code points raw, 100 after the accent is stripped: split, not [UNK].
  Strings e = tok->tokenize(std::string(100, 'e') + "\u0301");
  EXPECT_EQ(e.size(), 50u);
  EXPECT_EQ(tok->tokenize(std::string(101, 'e')), Strings{"[UNK]"});
  // Two-byte characters count once: 100 x "é" is 100 code points (200 bytes
  // in, 100 "e" after stripping).
  std::string e_acute;
  for (int i = 0; i < 100; ++i) e_acute += "é";
  EXPECT_EQ(tok->tokenize(e_acute).size(), 50u);
  // Only the long word is [UNK].
  EXPECT_EQ(tok->tokenize("big " + a100 + "a shoes"), (Strings{"big", "[UNK]", "shoes"}));

  WordPieceOptions five;
  five.max_input_chars_per_word = 5;
  EXPECT_EQ(tiny(five).tokenize("hello helloo"), (Strings{"hello", "[UNK]"}));
}

TEST(WordPieceModel, GreedyLongestMatchAndUnmatchableWords) {
  auto tok = tiny();
  EXPECT_EQ(tok.tokenize("hello"), Strings{"hello"});
  EXPECT_EQ(tok.tokenize("hellol"), (Strings{"hello", "##l"}));
  EXPECT_EQ(tok.tokenize("helo"), (Strings{"he", "##l", "##o"}));
  EXPECT_EQ(tok.tokenize("hex world"), (Strings{"[UNK]", "world"}));  // "##x" missing: whole word
}

TEST(WordPieceModel, TruncationKeepsClsAndSep) {
  BERT_OR_FAIL(tok);
  const std::string text = "Men's Running Shoes, Size 10.5 US — Breathable Mesh";
  const Ids full = tok->encode(text);  // 17 ids
  ASSERT_EQ(full.size(), 17u);
  for (int max_len = 2; max_len <= 20; ++max_len) {
    Ids cut = tok->encode(text, max_len);
    const std::size_t want = std::min<std::size_t>(full.size(), static_cast<std::size_t>(max_len));
    ASSERT_EQ(cut.size(), want) << max_len;
    EXPECT_EQ(cut.front(), 101);
    EXPECT_EQ(cut.back(), 102);
    EXPECT_TRUE(std::equal(cut.begin(), cut.end() - 1, full.begin())) << max_len;
  }
  // A cut may fall inside a word: "breath" kept, "##able" dropped.
  EXPECT_EQ(tok->encode(text, 15),
            (Ids{101, 2273, 1005, 1055, 2770, 6007, 1010, 2946, 2184, 1012, 1019, 2149, 1517, 3052, 102}));
  EXPECT_EQ(tok->encode("", 2), (Ids{101, 102}));
  EXPECT_THROW(tok->encode(text, 1), Error);
  EXPECT_THROW(tok->encode(text, -3), Error);
  Ids reused = {7, 7, 7};
  tok->encode_into(text, reused, 4);
  EXPECT_EQ(reused, (Ids{101, 2273, 1005, 102}));
}

// ------------------------------------------------------------ invalid UTF-8
// Policy: each ill-formed sequence (maximal subpart) decodes to U+FFFD, which
// BertNormalizer deletes: the bytes vanish, the text around them joins,
// exactly as HF on Python's `data.decode("utf-8", "replace")`.

TEST(WordPieceUtf8, InvalidBytesAreDroppedNeverCrash) {
  BERT_OR_FAIL(tok);
  EXPECT_EQ(tok->tokenize("caf\xE9 au lait"), tok->tokenize("caf au lait"));  // Latin-1 é
  EXPECT_EQ(tok->tokenize("x\xE2\x82y"), tok->tokenize("xy"));                // truncated: 'y' survives
  EXPECT_EQ(tok->tokenize("abc\xE2\x82"), tok->tokenize("abc"));              // truncated at the end
  EXPECT_EQ(tok->tokenize("a\xC0\xAF"
                          "b"),
            tok->tokenize("ab"));  // overlong '/'
  EXPECT_EQ(tok->tokenize("a\xED\xA0\x80"
                          "b"),
            tok->tokenize("ab"));  // surrogate
  EXPECT_EQ(tok->tokenize("a\xF4\x90\x80\x80"
                          "b"),
            tok->tokenize("ab"));  // above U+10FFFF
  EXPECT_EQ(tok->tokenize("a\x80\xBF\xFE\xFF"
                          "b"),
            tok->tokenize("ab"));                       // stray bytes
  EXPECT_EQ(tok->tokenize("\xF0\x9F\x8E"), Strings{});  // 3 of 4 bytes
  EXPECT_EQ(tok->tokenize("a \xE2\x80 b"), (Strings{"a", "b"}));
  EXPECT_EQ(tok->tokenize("\xC3"), Strings{});
}

TEST(WordPieceUtf8, RandomBytesGiveValidIdsAndDeterministicOutput) {
  BERT_OR_FAIL(tok);
  std::mt19937 rng(42);
  const std::string pieces[] = {"a",
                                "Z",
                                " ",
                                "\xC3",
                                "\xA9",
                                "\xE2\x80",
                                "\x8B",
                                "\xF0\x9F",
                                "\x98\x80",
                                "\xFF",
                                std::string(1, '\0'),
                                "\xED\xA0",
                                "\xE4\xB8\xAD",
                                ".",
                                "\xCC\x81"};
  for (int round = 0; round < 2000; ++round) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 == 0)
        text.push_back(static_cast<char>(rng() % 256));
      else
        text += pieces[rng() % std::size(pieces)];
    }
    const Ids full = tok->encode(text);
    ASSERT_GE(full.size(), 2u);
    for (std::int32_t id : full) ASSERT_TRUE(id >= 0 && id < tok->vocab_size()) << id;
    EXPECT_EQ(tok->encode(text), full);  // deterministic
    const int max_len = 2 + static_cast<int>(rng() % 10);
    const Ids cut = tok->encode(text, max_len);
    ASSERT_EQ(cut.size(), std::min(full.size(), static_cast<std::size_t>(max_len)));
    EXPECT_TRUE(std::equal(cut.begin(), cut.end() - 1, full.begin()));
    EXPECT_EQ(cut.back(), tok->sep_id());
  }
}

// ------------------------------------------------------------ vocab files

TEST(WordPieceVocabFile, BadFilesNameFileAndLine) {
  TempDir dir;
  const std::string ok = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n";
  auto error_of = [&](const std::string& name, const std::string& bytes) -> std::string {
    std::string path = dir.write(name, bytes);
    try {
      WordPieceTokenizer::from_file(path);
    } catch (const IoError& e) {
      return e.what();
    }
    return "no IoError";
  };
  EXPECT_THAT(error_of("empty.txt", ""), HasSubstr("empty.txt: empty vocabulary"));
  EXPECT_THAT(error_of("dup.txt", ok + "world\nhello\n"), HasSubstr("dup.txt:7: duplicate token 'hello'"));
  EXPECT_THAT(error_of("dup.txt", ok + "world\nhello\n"), HasSubstr("first at"));
  EXPECT_THAT(error_of("nounk.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n"),
              HasSubstr("nounk.txt: missing special token [UNK]"));
  EXPECT_THAT(error_of("nopad.txt", "[UNK]\n[CLS]\n[SEP]\n"), HasSubstr("missing special token [PAD]"));
  EXPECT_THAT(error_of("nocls.txt", "[PAD]\n[UNK]\n[SEP]\n"), HasSubstr("missing special token [CLS]"));
  EXPECT_THAT(error_of("nosep.txt", "[PAD]\n[UNK]\n[CLS]\n"), HasSubstr("missing special token [SEP]"));
  EXPECT_THAT(error_of("blank.txt", "[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n"), HasSubstr("blank.txt:3: empty token"));
  EXPECT_THAT(error_of("latin1.txt", ok + "caf\xE9\n"), HasSubstr("latin1.txt:6: token is not valid UTF-8"));
  try {
    WordPieceTokenizer::from_file(dir.write("x", "") + ".does-not-exist");
    ADD_FAILURE() << "no error for a missing file";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot open vocabulary file"));
    EXPECT_THAT(e.what(), HasSubstr(".does-not-exist"));
  }
}

TEST(WordPieceVocabFile, CrlfAndMissingFinalNewlineLoadTheSame) {
  TempDir dir;
  auto lf = WordPieceTokenizer::from_file(dir.write("lf.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n##s\n"));
  auto crlf = WordPieceTokenizer::from_file(
      dir.write("crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n##s"));
  EXPECT_EQ(lf.tokens(), crlf.tokens());
  EXPECT_EQ(crlf.vocab_size(), 6);
  EXPECT_EQ(crlf.mask_id(), kNoTokenId);  // optional
  EXPECT_EQ(crlf.tokenize("hellos"), (Strings{"hello", "##s"}));
  EXPECT_EQ(crlf.encode("hellos"), (Ids{2, 4, 5, 3}));
}

TEST(WordPieceVocabFile, FromTokensRejectsTheSameProblems) {
  EXPECT_THROW(WordPieceTokenizer::from_tokens({}), Error);
  EXPECT_THROW(WordPieceTokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "a"}), Error);
  EXPECT_THROW(WordPieceTokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]"}), Error);
  EXPECT_THROW(WordPieceTokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a\nb"}), Error);
  WordPieceOptions bad;
  bad.max_input_chars_per_word = 0;
  EXPECT_THROW(tiny(bad), Error);
  try {
    WordPieceTokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "a"});
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("token 5: duplicate token 'a' (first at token 4)"));
  }
}

// ------------------------------------------------------------ misc

TEST(WordPieceThreads, ConcurrentCallsGiveTheSerialResult) {
  BERT_OR_FAIL(tok);
  auto cases = read_jsonl(shared_path("golden/wordpiece_bert_base_uncased.jsonl"));
  ASSERT_FALSE(cases.empty());
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        for (const auto& c : cases) {
          if (tok->encode(c["text"].get<std::string>()) != c["ids"].get<Ids>()) ++wrong[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

TEST(UnicodeTables, SpotChecks) {
  using namespace unicode;
  EXPECT_TRUE(char_flags(U'\u0301') & kMarkNonspacing);
  EXPECT_TRUE(char_flags(U'\u200B') & kControl);
  EXPECT_FALSE(char_flags(U'\t') & kControl);
  EXPECT_TRUE(char_flags(U'\t') & kWhitespace);
  EXPECT_TRUE(char_flags(U'\u3000') & kWhitespace);
  EXPECT_TRUE(char_flags(U'\u2014') & kPunctuation);
  EXPECT_TRUE(char_flags(U'$') & kPunctuation);
  EXPECT_FALSE(char_flags(U'\u00A9') & kPunctuation);
  EXPECT_EQ(char_flags(0x110000), 0);
  EXPECT_EQ(char_combining_class(U'\u0301'), 230);
  EXPECT_EQ(char_combining_class(U'a'), 0);
  char32_t out[kMaxMapping];
  ASSERT_EQ(char_decompose(U'\u1EA5', out), 3);  // ấ = a + circumflex + acute
  EXPECT_EQ(out[0], U'a');
  EXPECT_EQ(out[1], U'\u0302');
  EXPECT_EQ(out[2], U'\u0301');
  ASSERT_EQ(char_decompose(U'\uD55C', out), 3);  // 한 = ᄒ ᅡ ᆫ
  EXPECT_EQ(out[0], U'\u1112');
  EXPECT_EQ(out[1], U'\u1161');
  EXPECT_EQ(out[2], U'\u11AB');
  ASSERT_EQ(char_decompose(U'\uAC00', out), 2);  // 가 = ᄀ ᅡ
  ASSERT_EQ(char_decompose(U'x', out), 1);
  ASSERT_EQ(char_lowercase(U'\u0130', out), 2);  // İ -> i + combining dot above
  EXPECT_EQ(out[0], U'i');
  EXPECT_EQ(out[1], U'\u0307');
  ASSERT_EQ(char_lowercase(U'\u0410', out), 1);  // Cyrillic А
  EXPECT_EQ(out[0], U'\u0430');
  EXPECT_STRNE(kUnicodeVersion, "");
}

}  // namespace
}  // namespace llmrec
