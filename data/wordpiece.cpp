#include "data/wordpiece.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "data/unicode_tables.h"

namespace llmrec {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

// ---------------------------------------------------------------- UTF-8

/// Decodes the code point at s[i] and advances i. An ill-formed sequence
/// gives U+FFFD and consumes its maximal subpart only (Unicode 3.9, "U+FFFD
/// substitution of maximal subparts", what Python's 'replace' does): a byte
/// that cannot continue the sequence is left to start the next one.
inline char32_t utf8_next(const unsigned char* s, std::size_t n, std::size_t& i) {
  const unsigned char b0 = s[i++];
  if (b0 < 0x80) return b0;
  int need;
  char32_t cp;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1Fu;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0Fu;
    if (b0 == 0xE0)
      lo = 0xA0;  // no overlong forms
    else if (b0 == 0xED)
      hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07u;
    if (b0 == 0xF0)
      lo = 0x90;  // no overlong forms
    else if (b0 == 0xF4)
      hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return kReplacement;  // 0x80-0xC1 (continuation or overlong lead), 0xF5-0xFF
  }
  for (int k = 0; k < need; ++k) {
    if (i >= n || s[i] < lo || s[i] > hi) return kReplacement;
    cp = (cp << 6) | (s[i] & 0x3Fu);
    lo = 0x80;
    hi = 0xBF;
    ++i;
  }
  return cp;
}

bool utf8_well_formed(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t at = i;
    char32_t cp = utf8_next(s, text.size(), i);
    // A literal U+FFFD is 3 bytes; a substituted one is shorter or invalid.
    if (cp == kReplacement && !(i - at == 3 && std::memcmp(s + at, "\xEF\xBF\xBD", 3) == 0)) return false;
  }
  return true;
}

inline void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int utf8_code_points(std::string_view text) {
  int n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// ----------------------------------------------------- BertNormalizer

/// HF BertNormalizer's "Chinese character" ranges. Note 0x2B920, not the
/// 0x2B820 of Google's original BERT code: HF `tokenizers` has it so, and
/// we match HF (U+2B820..U+2B91F are not spaced, a difference in extension E).
inline bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0x2F800 && cp <= 0x2FA1F);
}

inline bool is_hangul_syllable(char32_t cp) {
  return cp >= 0xAC00 && cp <= 0xD7A3;
}

/// Steps 1 and 2 (see wordpiece.h): UTF-8 text -> normalized code points.
/// HF applies clean-text, CJK spacing, NFD + strip Mn and lowercase one after
/// the other over the whole string; doing them per code point gives the same
/// result because each depends on its own character only, except NFD's
/// canonical reordering of combining marks, done here by insertion into the
/// current run of marks. Marks that are stripped (Mn) need no place in the
/// run; the only survivors with a nonzero combining class are a few Mc signs.
class Normalizer {
 public:
  Normalizer(const WordPieceOptions& options, std::vector<char32_t>& out)
      : strip_(options.strips_accents()), lower_(options.lowercase), out_(out) {}

  void run(std::string_view text) {
    out_.clear();
    out_.reserve(text.size() + 8);
    run_start_ = 0;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
      if (s[i] < 0x80) {  // ASCII: no decomposition, no combining class
        const char32_t c = s[i++];
        const std::uint8_t f = unicode::detail::kAsciiFlags[c];
        if (f & unicode::kControl) continue;  // includes U+0000
        if (f & unicode::kWhitespace)
          out_.push_back(' ');
        else
          out_.push_back(lower_ && c >= 'A' && c <= 'Z' ? c + 32 : c);
        run_start_ = out_.size();
        continue;
      }
      add(utf8_next(s, n, i));
    }
  }

 private:
  void add(char32_t cp) {
    const std::uint8_t f = unicode::char_flags(cp);
    if (cp == kReplacement || (f & unicode::kControl)) return;
    if (f & unicode::kWhitespace) {
      space();
      return;
    }
    const bool cjk = is_cjk(cp);
    if (cjk) space();
    if (!strip_) {
      lowered(cp, f);
    } else if ((f & unicode::kHasDecomposition) || is_hangul_syllable(cp)) {
      char32_t parts[unicode::kMaxMapping];
      const int count = unicode::char_decompose(cp, parts);
      for (int k = 0; k < count; ++k) decomposed(parts[k], unicode::char_flags(parts[k]));
    } else {
      decomposed(cp, f);
    }
    if (cjk) space();
  }

  void space() {
    out_.push_back(' ');
    run_start_ = out_.size();
  }

  void lowered(char32_t cp, std::uint8_t f) {
    if (lower_ && (f & unicode::kHasLowercase)) {
      char32_t buf[unicode::kMaxMapping];
      const int count = unicode::char_lowercase(cp, buf);
      out_.insert(out_.end(), buf, buf + count);
    } else {
      out_.push_back(cp);
    }
  }

  /// One code point of the NFD: drop Mn, order the combining survivors.
  void decomposed(char32_t cp, std::uint8_t f) {
    if (!(f & unicode::kCombining)) {  // a starter ends the run of marks
      if (!(f & unicode::kMarkNonspacing)) lowered(cp, f);
      run_start_ = out_.size();
      return;
    }
    if (f & unicode::kMarkNonspacing) return;
    const std::uint8_t ccc = unicode::char_combining_class(cp);
    std::size_t at = out_.size();
    out_.push_back(cp);
    while (at > run_start_ && unicode::char_combining_class(out_[at - 1]) > ccc) {
      out_[at] = out_[at - 1];
      --at;
    }
    out_[at] = cp;  // marks have no lowercase mapping (checked by the generator)
  }

  const bool strip_;
  const bool lower_;
  std::vector<char32_t>& out_;
  std::size_t run_start_ = 0;  ///< first index of the current run of combining marks
};

/// A word: [begin, end) of the normalized code points.
struct Span {
  std::uint32_t begin;
  std::uint32_t end;
};

/// Step 3, BertPreTokenizer: split on whitespace, isolate punctuation.
void split_words(const std::vector<char32_t>& chars, std::vector<Span>& words) {
  words.clear();
  std::uint32_t begin = 0;
  const auto n = static_cast<std::uint32_t>(chars.size());
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint8_t f = unicode::char_flags(chars[i]);
    if (!(f & (unicode::kWhitespace | unicode::kPunctuation))) continue;
    if (begin < i) words.push_back({begin, i});
    if (f & unicode::kPunctuation) words.push_back({i, i + 1});
    begin = i + 1;
  }
  if (begin < n) words.push_back({begin, n});
}

/// Per-thread buffers, so tokenizing allocates only while they grow.
struct Scratch {
  std::vector<char32_t> chars;
  std::vector<Span> words;
  std::string word;                    ///< UTF-8 of the current word
  std::vector<std::uint32_t> offsets;  ///< byte offset of each code point of `word`, and the end
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// FNV-1a, folded to 32 bits; keys are short.
inline std::uint32_t hash_key(std::string_view key) {
  std::uint64_t h = 14695981039346656037ull;
  for (char c : key) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

inline std::string_view trim_right(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\v' || s.back() == '\f')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

std::vector<std::string> wordpiece_words(std::string_view text, const WordPieceOptions& options) {
  Scratch& s = scratch();
  Normalizer(options, s.chars).run(text);
  split_words(s.chars, s.words);
  std::vector<std::string> out;
  out.reserve(s.words.size());
  for (const Span& w : s.words) {
    std::string word;
    for (std::uint32_t i = w.begin; i < w.end; ++i) utf8_append(word, s.chars[i]);
    out.push_back(std::move(word));
  }
  return out;
}

// ------------------------------------------------------------ TokenIndex

void WordPieceTokenizer::TokenIndex::build(const std::vector<std::string>& tokens, bool continuation) {
  skip_ = continuation ? kWordPieceContinuation.size() : 0;
  std::size_t capacity = 16;
  while (capacity < tokens.size() * 2) capacity *= 2;
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    std::string_view t = tokens[id];
    if (continuation) {
      if (t.size() <= skip_ || t.substr(0, skip_) != kWordPieceContinuation) continue;
      t.remove_prefix(skip_);
    }
    const std::uint32_t h = hash_key(t);
    std::size_t at = h & mask_;
    while (slots_[at].id != kNoTokenId) at = (at + 1) & mask_;
    slots_[at] = {h, static_cast<std::int32_t>(id)};
  }
}

std::int32_t WordPieceTokenizer::TokenIndex::find(std::string_view key,
                                                  const std::vector<std::string>& tokens) const {
  const std::uint32_t h = hash_key(key);
  for (std::size_t at = h & mask_;; at = (at + 1) & mask_) {
    const Slot& slot = slots_[at];
    if (slot.id == kNoTokenId) return kNoTokenId;
    if (slot.hash == h) {
      const std::string& t = tokens[static_cast<std::size_t>(slot.id)];
      if (t.size() == key.size() + skip_ && std::memcmp(t.data() + skip_, key.data(), key.size()) == 0) {
        return slot.id;
      }
    }
  }
}

// ------------------------------------------------------ WordPieceTokenizer

namespace {

/// Checks every token of a vocabulary (before indexing it); `where(id)` names
/// the token's place in messages ("vocab.txt:12" or "token 11").
template <class E, class Where>
void vocab_check_tokens(const std::vector<std::string>& tokens, const std::string& name, Where where) {
  if (tokens.empty()) throw E(fmt::format("{}: empty vocabulary (expected one token a line)", name));
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    const std::string& t = tokens[id];
    if (t.empty()) throw E(fmt::format("{}: empty token", where(id)));
    if (!utf8_well_formed(t)) throw E(fmt::format("{}: token is not valid UTF-8", where(id)));
    if (t.find_first_of("\n\r") != std::string::npos || trim_right(t).size() != t.size()) {
      throw E(fmt::format("{}: token '{}' holds a line break or ends in whitespace", where(id), t));
    }
  }
}

/// Checks the indexed vocabulary: no duplicates, the required specials.
template <class E, class Where>
void vocab_check_index(const WordPieceTokenizer& tok, const std::string& name, Where where) {
  const auto& tokens = tok.tokens();
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    // Equal keys are found in insertion (= id) order: a later copy maps to
    // the first one.
    const std::int32_t first = tok.id_of(tokens[id]);
    if (first != static_cast<std::int32_t>(id)) {
      throw E(fmt::format("{}: duplicate token '{}' (first at {})", where(id), tokens[id],
                          where(static_cast<std::size_t>(first))));
    }
  }
  for (std::string_view special : {kPadToken, kUnkToken, kClsToken, kSepToken}) {
    if (tok.id_of(special) == kNoTokenId) {
      throw E(fmt::format("{}: missing special token {} (a BERT vocabulary needs {}, {}, {} and {})", name,
                          special, kPadToken, kUnkToken, kClsToken, kSepToken));
    }
  }
}

void check_options(const WordPieceOptions& options, const std::string& name) {
  if (options.max_input_chars_per_word < 1) {
    throw Error(fmt::format("{}: max_input_chars_per_word must be >= 1, got {}", name,
                            options.max_input_chars_per_word));
  }
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> tokens, WordPieceOptions options)
    : tokens_(std::move(tokens)), options_(options) {
  initial_.build(tokens_, false);
  continuation_.build(tokens_, true);
  for (const std::string& t : tokens_) {
    // A key of either index: the whole token, or what follows "##".
    max_piece_chars_ = std::max(max_piece_chars_, utf8_code_points(t));
  }
  pad_id_ = id_of(kPadToken);
  unk_id_ = id_of(kUnkToken);
  cls_id_ = id_of(kClsToken);
  sep_id_ = id_of(kSepToken);
  mask_id_ = id_of(kMaskToken);
}

WordPieceTokenizer WordPieceTokenizer::from_file(const std::string& path, WordPieceOptions options) {
  check_options(options, path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot open vocabulary file {}: {}", path, std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("cannot read vocabulary file {}", path));
  const std::string text = buffer.str();
  // One token a line; a last line without "\n" counts, the empty rest after
  // a final "\n" does not (Rust's lines(), as HF reads vocab.txt).
  std::vector<std::string> tokens;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    tokens.emplace_back(trim_right(std::string_view(text).substr(pos, end - pos)));
    pos = end + 1;
  }
  auto where = [&path](std::size_t id) { return fmt::format("{}:{}", path, id + 1); };
  vocab_check_tokens<IoError>(tokens, path, where);
  WordPieceTokenizer tok(std::move(tokens), options);
  vocab_check_index<IoError>(tok, path, where);
  return tok;
}

WordPieceTokenizer WordPieceTokenizer::from_tokens(std::vector<std::string> tokens,
                                                   WordPieceOptions options) {
  const std::string name = "vocabulary";
  check_options(options, name);
  auto where = [](std::size_t id) { return fmt::format("token {}", id); };
  vocab_check_tokens<Error>(tokens, name, where);
  WordPieceTokenizer tok(std::move(tokens), options);
  vocab_check_index<Error>(tok, name, where);
  return tok;
}

std::int32_t WordPieceTokenizer::id_of(std::string_view token) const {
  return initial_.find(token, tokens_);
}

const std::string& WordPieceTokenizer::token_of(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw Error(fmt::format("token id {} out of range [0, {})", id, vocab_size()));
  }
  return tokens_[static_cast<std::size_t>(id)];
}

void WordPieceTokenizer::append_pieces(std::string_view text, std::vector<std::int32_t>& out,
                                       std::int64_t limit) const {
  Scratch& s = scratch();
  Normalizer(options_, s.chars).run(text);
  split_words(s.chars, s.words);
  const std::size_t base = out.size();
  const auto max_chars = static_cast<std::uint32_t>(options_.max_input_chars_per_word);
  const auto max_piece = static_cast<std::uint32_t>(max_piece_chars_);
  for (const Span& w : s.words) {
    if (limit >= 0 && out.size() - base >= static_cast<std::size_t>(limit)) break;
    const std::uint32_t n = w.end - w.begin;
    if (n > max_chars) {
      out.push_back(unk_id_);
      continue;
    }
    s.word.clear();
    s.offsets.clear();
    for (std::uint32_t i = w.begin; i < w.end; ++i) {
      s.offsets.push_back(static_cast<std::uint32_t>(s.word.size()));
      utf8_append(s.word, s.chars[i]);
    }
    s.offsets.push_back(static_cast<std::uint32_t>(s.word.size()));
    // Greedy longest match first; a piece after the first is "##" + piece.
    const std::size_t word_start = out.size();
    std::uint32_t start = 0;
    while (start < n) {
      std::uint32_t end = std::min(n, start + max_piece);
      std::int32_t id = kNoTokenId;
      const TokenIndex& index = start == 0 ? initial_ : continuation_;
      for (; end > start; --end) {
        id = index.find(std::string_view(s.word).substr(s.offsets[start], s.offsets[end] - s.offsets[start]),
                        tokens_);
        if (id != kNoTokenId) break;
      }
      if (id == kNoTokenId) {  // no piece matches here: the whole word is [UNK]
        out.resize(word_start);
        out.push_back(unk_id_);
        break;
      }
      out.push_back(id);
      start = end;
    }
  }
  if (limit >= 0 && out.size() - base > static_cast<std::size_t>(limit)) out.resize(base + limit);
}

void WordPieceTokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out,
                                     int max_len) const {
  if (max_len < 0 || max_len == 1) {
    throw Error(fmt::format("max_len must be 0 (no limit) or >= 2 (room for {} and {}), got {}", kClsToken,
                            kSepToken, max_len));
  }
  out.clear();
  out.push_back(cls_id_);
  append_pieces(text, out, max_len > 0 ? max_len - 2 : -1);
  out.push_back(sep_id_);
}

std::vector<std::int32_t> WordPieceTokenizer::encode(std::string_view text, int max_len) const {
  std::vector<std::int32_t> out;
  encode_into(text, out, max_len);
  return out;
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<std::int32_t> ids;
  append_pieces(text, ids, -1);
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (std::int32_t id : ids) out.push_back(tokens_[static_cast<std::size_t>(id)]);
  return out;
}

}  // namespace llmrec
