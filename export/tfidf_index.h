#pragma once
/// The items' TF-IDF rows and their inverted index: the content scorer of
/// evaluation (trainer/baselines.h, TfidfScorer, which also builds the
/// matrix from the catalogue) and of serving (the export's tfidf/ rows).

#include <cstdint>
#include <utility>
#include <vector>

namespace llmrec {

struct TfidfOptions {
  int profile_items = 20;  ///< the user's profile: its most recent history events
  double max_df = 0.5;     ///< terms in more than max_df * items items are dropped
};

/// The items' TF-IDF vectors, L2-normalised, as a CSR matrix items x terms.
/// A term is a token id of the dataset's vocabulary.
struct TfidfMatrix {
  std::int32_t num_terms = 0;            ///< vocabulary size (term ids are in [0, num_terms))
  std::vector<std::int64_t> offsets{0};  ///< items + 1
  std::vector<std::int32_t> terms;       ///< ascending within an item
  std::vector<float> weights;            ///< parallel to terms
  std::vector<std::int64_t> df;          ///< [num_terms] items holding the term (before max_df)
  std::int64_t terms_kept = 0;           ///< terms with 1 <= df <= max_df * items
  /// [num_terms] the weight of one occurrence of each term (0: a dropped
  /// term), so that rows of new texts can be weighted as these were; empty
  /// where unknown (an export written before it was stored).
  std::vector<double> idf;

  std::int64_t num_items() const { return static_cast<std::int64_t>(offsets.size()) - 1; }
};

/// The TF-IDF matrix with its inverted index: the content scores of every
/// item for one history, shared by the TfidfScorer baseline and serving.
/// The profile is the mean of the TF-IDF vectors of the last
/// `profile_items` events of the history (an item seen twice there counts
/// twice), L2-normalised; score(i) = cosine of the profile and item i's
/// vector, in [0, 1]; an empty history (or one without terms) scores every
/// item 0. Immutable: any number of threads may call it at once.
class TfidfIndex {
 public:
  /// Error when a row's terms are not ascending or outside num_terms.
  explicit TfidfIndex(TfidfMatrix m);
  const TfidfMatrix& matrix() const { return matrix_; }
  /// out[0..items) = the scores for `history` (n item ids, oldest first;
  /// Error for an id outside the matrix).
  void score(const std::int32_t* history, std::int64_t n, int profile_items, float* out) const;
  /// The item's k highest-weight terms (term id, weight), highest first,
  /// ties smaller term id first; fewer when the item has fewer terms.
  std::vector<std::pair<std::int32_t, float>> top_terms(std::int64_t item, int k) const;
  /// The k terms the item shares with the history's profile that add the
  /// most to its score (term id, profile weight x item weight), largest
  /// first, ties smaller term id first: why the content scorer likes it.
  std::vector<std::pair<std::int32_t, float>> shared_terms(const std::int32_t* history, std::int64_t n,
                                                           int profile_items, std::int64_t item, int k) const;

 private:
  /// The normalised profile of `history`: (term, weight) ascending by term.
  std::vector<std::pair<std::int32_t, double>> profile(const std::int32_t* history, std::int64_t n,
                                                       int profile_items) const;
  TfidfMatrix matrix_;
  std::vector<std::int64_t> term_offsets_;  ///< num_terms + 1: the items holding each term, ascending
  std::vector<std::int32_t> term_items_;
  std::vector<float> term_weights_;
};

}  // namespace llmrec
