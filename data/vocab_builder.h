#pragma once
/// Builds a WordPiece vocabulary from a corpus when no pretrained vocab.txt
/// is given: what Hugging Face's WordPieceTrainer does (BPE merge learning
/// with the "##" continuation prefix), made deterministic.
///
///   VocabBuilder builder({/*vocab_size=*/8000});
///   for (const auto& title : titles) builder.add_text(title);
///   std::vector<std::string> vocab = builder.build();
///   write_vocab(vocab, run_dir + "/vocab.txt");
///   auto tok = WordPieceTokenizer::from_tokens(vocab);
///
/// The vocabulary, in id order:
///  1. the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4);
///  2. the alphabet: every code point of the corpus, then "##" + every code
///     point seen after the start of a word, each group sorted by code point.
///     If the alphabet does not fit in vocab_size, the most frequent entries
///     are kept (ties: plain before "##", then code point order), and words that
///     hold a dropped one take no part in step 3;
///  3. merges, in the order learned, until vocab_size tokens or no pair occurs
///     at least min_frequency times. Each step merges the most frequent pair
///     of adjacent symbols over all words (weighted by word count); ties go to
///     the pair whose (left id, right id) is smallest. The merged token is
///     left + right without its "##"; a merge whose string already exists
///     reuses that id.
/// Words are those of wordpiece_words() (BertNormalizer + BertPreTokenizer
/// with `normalization`), so the vocabulary fits the tokenizer that uses it:
/// every word of the corpus tokenizes without [UNK] unless the alphabet was
/// cut or the word is longer than max_input_chars_per_word.
///
/// The result depends only on the multiset of texts, not on their order.

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/wordpiece.h"

namespace llmrec {

/// BERT's vocabulary size.
inline constexpr int kDefaultVocabSize = 30522;

struct VocabBuilderOptions {
  /// Upper bound on the number of tokens (specials included); >= 5.
  int vocab_size = kDefaultVocabSize;
  /// A pair must occur at least this often to be merged (HF's
  /// BertWordPieceTokenizer.train default); >= 1.
  std::int64_t min_frequency = 2;
  /// How texts are normalized and split into words.
  WordPieceOptions normalization;
};

class VocabBuilder {
 public:
  /// Throws Error for an invalid option.
  explicit VocabBuilder(VocabBuilderOptions options = {});

  /// Counts the words of one text (any size; invalid UTF-8 as in the tokenizer).
  void add_text(std::string_view text);
  /// Number of word occurrences counted so far.
  std::int64_t word_count() const { return word_total_; }

  /// Learns the vocabulary from the texts added so far; tokens in id order.
  std::vector<std::string> build() const;

 private:
  VocabBuilderOptions options_;
  std::unordered_map<std::string, std::int64_t> words_;
  std::int64_t word_total_ = 0;
};

/// Writes `tokens` as a vocab.txt (one token a line, "\n" after each) by way
/// of a temporary file renamed into place. Throws IoError naming the path
/// when it cannot be written, Error when a token is empty or holds a line
/// break (it would not read back as the same vocabulary).
void write_vocab(const std::vector<std::string>& tokens, const std::string& path);

}  // namespace llmrec
