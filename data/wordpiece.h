#pragma once
/// WordPiece tokenizer, identical to Hugging Face's bert-base-uncased
/// tokenizer (`tokenizers` BertNormalizer + BertPreTokenizer + WordPiece +
/// `[CLS] ... [SEP]`), checked against shared/golden/wordpiece_*.jsonl.
///
///   auto tok = WordPieceTokenizer::from_file("models/bert-base-uncased/vocab.txt");
///   std::vector<std::int32_t> ids = tok.encode("Crème brûlée", 32);  // [101, 13675, ..., 102]
///   std::vector<std::string> pieces = tok.tokenize("Crème brûlée");   // {"cr", "##eme", ...}
///
/// The steps (docs/data.md, "Tokenizer"):
///  1. decode UTF-8; every ill-formed sequence (maximal subpart, as Python's
///     `decode('utf-8', 'replace')`) becomes U+FFFD, which step 2 deletes:
///     invalid bytes vanish and the text around them joins, nothing crashes;
///  2. BertNormalizer: delete U+0000, U+FFFD and Cc/Cf/Co except \t \n \r;
///     whitespace -> ' '; spaces around CJK ideographs; if strip_accents:
///     NFD and delete Mn; if lowercase: lowercase;
///  3. BertPreTokenizer: split on whitespace, every punctuation char alone;
///  4. WordPiece: greedy longest match, "##" continuation; a word of more
///     than max_input_chars_per_word code points, or with no match, is [UNK].
///
/// Special tokens are never produced from text: a literal "[MASK]" in a title
/// is "[", "mask", "]". Catalogue text is untrusted input and must not be
/// able to inject control tokens (HF's default registers them as added
/// tokens and would give id 103).
///
/// Thread safety: a constructed tokenizer is immutable; every const method
/// may be called from many threads at once.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmrec {

/// HF's `max_input_chars_per_word` of bert-base-uncased.
inline constexpr int kWordPieceMaxInputChars = 100;
/// Prefix of a piece that continues a word.
inline constexpr std::string_view kWordPieceContinuation = "##";
inline constexpr std::string_view kPadToken = "[PAD]";
inline constexpr std::string_view kUnkToken = "[UNK]";
inline constexpr std::string_view kClsToken = "[CLS]";
inline constexpr std::string_view kSepToken = "[SEP]";
inline constexpr std::string_view kMaskToken = "[MASK]";
/// id_of() of a token that is not in the vocabulary.
inline constexpr std::int32_t kNoTokenId = -1;

/// Normalization and WordPiece options (HF BertNormalizer / WordPiece).
struct WordPieceOptions {
  /// Lowercase the text (uncased models).
  bool lowercase = true;
  /// Strip accents (NFD, then delete Mn). Unset = follow `lowercase`, as HF.
  std::optional<bool> strip_accents;
  /// Longer words (in code points, after normalization) become one [UNK].
  int max_input_chars_per_word = kWordPieceMaxInputChars;

  bool strips_accents() const { return strip_accents.value_or(lowercase); }
};

/// Steps 1-3 only: the normalized, pre-tokenized words of `text` (UTF-8),
/// what WordPiece (and VocabBuilder) sees. Needs no vocabulary.
std::vector<std::string> wordpiece_words(std::string_view text, const WordPieceOptions& options = {});

class WordPieceTokenizer {
 public:
  /// Loads a vocab.txt: one token a line, id = line number - 1 (trailing
  /// whitespace and "\r" trimmed, as HF). Throws IoError naming the file and
  /// line when the file cannot be read, is empty, is not UTF-8, holds an
  /// empty or duplicate token, or lacks [PAD], [UNK], [CLS] or [SEP].
  static WordPieceTokenizer from_file(const std::string& path, WordPieceOptions options = {});

  /// The same from tokens in id order (e.g. VocabBuilder::build()); errors
  /// name the id instead of a line. Throws Error.
  static WordPieceTokenizer from_tokens(std::vector<std::string> tokens, WordPieceOptions options = {});

  /// Word pieces of `text`, without [CLS]/[SEP]: {"cr", "##eme", "br", ...}.
  std::vector<std::string> tokenize(std::string_view text) const;

  /// [CLS] pieces [SEP] as ids. With max_len > 0 the pieces are truncated so
  /// that the result, [CLS] and [SEP] included, has at most max_len ids
  /// (max_len must then be >= 2). No padding.
  std::vector<std::int32_t> encode(std::string_view text, int max_len = 0) const;

  /// encode() into `out` (cleared first), reusing its capacity.
  void encode_into(std::string_view text, std::vector<std::int32_t>& out, int max_len = 0) const;

  /// The id of `token` (exact string, e.g. "##ing"), or kNoTokenId.
  std::int32_t id_of(std::string_view token) const;
  /// The token of `id`; throws Error when out of range.
  const std::string& token_of(std::int32_t id) const;
  std::int32_t vocab_size() const { return static_cast<std::int32_t>(tokens_.size()); }
  /// Every token in id order.
  const std::vector<std::string>& tokens() const { return tokens_; }
  const WordPieceOptions& options() const { return options_; }

  std::int32_t pad_id() const { return pad_id_; }
  std::int32_t unk_id() const { return unk_id_; }
  std::int32_t cls_id() const { return cls_id_; }
  std::int32_t sep_id() const { return sep_id_; }
  /// [MASK] is optional in a vocabulary: kNoTokenId when absent.
  std::int32_t mask_id() const { return mask_id_; }

 private:
  /// Open-addressing hash set of token ids keyed by their string (or, for
  /// the continuation table, by the string after "##"); looked up with a
  /// string_view, so matching a piece allocates nothing.
  class TokenIndex {
   public:
    void build(const std::vector<std::string>& tokens, bool continuation);
    std::int32_t find(std::string_view key, const std::vector<std::string>& tokens) const;

   private:
    struct Slot {
      std::uint32_t hash = 0;
      std::int32_t id = kNoTokenId;
    };
    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::size_t skip_ = 0;  ///< bytes of prefix to skip in stored tokens ("##")
  };

  WordPieceTokenizer(std::vector<std::string> tokens, WordPieceOptions options);
  /// Appends the pieces of `text` to `out`, at most `limit` (< 0: no limit).
  void append_pieces(std::string_view text, std::vector<std::int32_t>& out, std::int64_t limit) const;

  std::vector<std::string> tokens_;
  WordPieceOptions options_;
  TokenIndex initial_;       ///< every token by its full string
  TokenIndex continuation_;  ///< "##x" tokens by "x"
  int max_piece_chars_ = 0;  ///< longest key of either index, in code points
  std::int32_t pad_id_ = kNoTokenId;
  std::int32_t unk_id_ = kNoTokenId;
  std::int32_t cls_id_ = kNoTokenId;
  std::int32_t sep_id_ = kNoTokenId;
  std::int32_t mask_id_ = kNoTokenId;
};

}  // namespace llmrec
