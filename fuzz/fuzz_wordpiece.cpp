// libFuzzer target: the WordPiece tokenizer (data/wordpiece.cpp): UTF-8
// decoding with replacement, BertNormalizer, pre-tokenization, greedy
// WordPiece, truncation; and vocabularies read from fuzzed vocab.txt bytes.
//
// Input: byte 0 holds the options (lowercase, strip_accents, max_len,
// max_input_chars_per_word, own vocabulary or not). With an own vocabulary
// the rest is "vocab.txt bytes \0 text", else all of it is text, encoded
// with a small built-in vocabulary.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/text.h"
#include "data/wordpiece.h"
#include "fuzz/fuzz_util.h"

using namespace llmrec;

namespace {

const WordPieceTokenizer& builtin(const WordPieceOptions& options) {
  static const std::vector<std::string> tokens = {
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!",    ",",         "-",      ".",     "/",
      "[",     "]",     "a",     "b",     "c",      "e",    "r",         "s",      "t",     "##a",
      "##b",   "##e",   "##s",   "##t",   "the",    "shoe", "run",       "##ning", "##ing", "cr",
      "##eme", "br",    "##ul",  "##ee",  "cre",    "##me", "é",         "##é",    "mask",  "红",
      "茶",    "ß",     "##ß",   "ǆ",     "ⅷ",      "٣",    "##\xcc\x81"};
  // One tokenizer per distinct options value (strip/lowercase matter).
  static std::vector<std::pair<std::string, WordPieceTokenizer>> cache;
  const std::string key = fmt::format(
      "{}{}{}", options.lowercase, options.strip_accents.has_value() ? (*options.strip_accents ? 1 : 0) : 2,
      options.max_input_chars_per_word);
  for (const auto& [k, t] : cache) {
    if (k == key) return t;
  }
  cache.emplace_back(key, WordPieceTokenizer::from_tokens(tokens, options));
  return cache.back().second;
}

/// from_file()'s reading of vocab.txt: one token a line, trailing
/// whitespace and "\r" trimmed, no empty rest after the last "\n".
std::vector<std::string> vocab_lines(std::string_view text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    while (!line.empty() && std::string_view(" \t\r\v\f").find(line.back()) != std::string_view::npos) {
      line.remove_suffix(1);
    }
    out.emplace_back(line);
    pos = end + 1;
  }
  return out;
}

void check_encoding(const WordPieceTokenizer& tok, std::string_view text, int max_len) {
  const std::vector<std::int32_t> full = tok.encode(text);
  const std::vector<std::int32_t> ids = tok.encode(text, max_len);
  for (const auto& v : {full, ids}) {
    if (v.size() < 2 || v.front() != tok.cls_id() || v.back() != tok.sep_id()) {
      fuzz::fuzz_fail("an encoding without [CLS] ... [SEP]");
    }
    for (std::int32_t id : v) {
      if (id < 0 || id >= tok.vocab_size()) fuzz::fuzz_fail(fmt::format("id {} out of range", id));
    }
  }
  if (max_len > 0 && ids.size() > static_cast<std::size_t>(max_len)) {
    fuzz::fuzz_fail(fmt::format("{} ids for max_len {}", ids.size(), max_len));
  }
  // Truncation keeps a prefix of the pieces.
  if (ids.size() > full.size() || !std::equal(ids.begin(), ids.end() - 1, full.begin())) {
    fuzz::fuzz_fail("the truncated encoding is not a prefix of the full one");
  }
  // tokenize() gives the pieces of encode(), as strings.
  const std::vector<std::string> pieces = tok.tokenize(text);
  if (pieces.size() + 2 != full.size()) fuzz::fuzz_fail("tokenize() and encode() disagree on the count");
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (tok.token_of(full[i + 1]) != pieces[i]) fuzz::fuzz_fail("tokenize() and encode() disagree");
  }
}

void check_words(std::string_view text, const WordPieceOptions& options) {
  for (const std::string& w : wordpiece_words(text, options)) {
    if (w.empty()) fuzz::fuzz_fail("an empty word");
    if (!utf8_valid(w)) fuzz::fuzz_fail("a word that is not valid UTF-8");
    if (w.find_first_of(" \t\n\r") != std::string::npos) fuzz::fuzz_fail("a word with whitespace");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  WordPieceOptions options;
  options.lowercase = flags & 1;
  switch ((flags >> 1) & 3) {
    case 1: options.strip_accents = false; break;
    case 2: options.strip_accents = true; break;
    default: break;
  }
  static const int kMaxLen[] = {0, 2, 5, 16};
  const int max_len = kMaxLen[(flags >> 3) & 3];
  static const int kMaxChars[] = {kWordPieceMaxInputChars, 1, 5, 0};  // 0 is refused
  options.max_input_chars_per_word = kMaxChars[(flags >> 6) & 3];

  if (!(flags & 32)) {
    fuzz::expect_clean([&] {
      check_words(rest, options);
      check_encoding(builtin(options), rest, max_len);
    });
    return 0;
  }
  const std::size_t nul = rest.find('\0');
  const std::string_view vocab = rest.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
  // from_tokens() and from_file() accept the same vocabularies.
  bool from_tokens_ok = false;
  fuzz::expect_clean([&] {
    WordPieceTokenizer tok = WordPieceTokenizer::from_tokens(vocab_lines(vocab), options);
    from_tokens_ok = true;
    check_encoding(tok, text, max_len);
  });
  const std::string path = fuzz::write_scratch("vocab.txt", vocab);
  bool from_file_ok = false;
  fuzz::expect_clean([&] {
    WordPieceTokenizer tok = WordPieceTokenizer::from_file(path, options);
    from_file_ok = true;
    if (tok.tokens() != vocab_lines(vocab))
      fuzz::fuzz_fail("from_file() read other tokens than from_tokens()");
  });
  if (from_tokens_ok != from_file_ok)
    fuzz::fuzz_fail("from_file() and from_tokens() disagree on a vocabulary");
  return 0;
}
