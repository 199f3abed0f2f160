#pragma once
/// The ranking metrics of evaluation (definitions: docs/evaluation.md), as
/// pure functions of one user's scores, so that each is unit-testable.
///
/// The top-K lists are a total order: a higher score ranks first; equal
/// scores rank by the smaller dataset item id first. The held-out item's
/// metrics do not use that order: with `above` items scoring strictly higher
/// and `ties` other items scoring exactly the same, its rank is taken as
/// uniform on above+1 .. above+ties+1 (a random tie-break) and each metric
/// is its exact expectation (the expected_* functions below; the protocol of
/// the shared anchors). So a constant scorer earns no free hits from the
/// catalogue order.
///
///   ExclusionMask mask(num_items);
///   mask.set(history.data(), history.size(), target);   // history, not the target
///   UserRanking r = rank_user(scores, num_items, mask.data(), target, 20);
///   double ndcg10 = expected_ndcg(r.above, r.ties, 10);
///   mask.clear();

#include <cstdint>
#include <vector>

namespace llmrec {

/// True when item `a` (score `sa`) ranks before item `b` (score `sb`).
inline bool ranks_before(float sa, std::int32_t a, float sb, std::int32_t b) {
  return sa > sb || (sa == sb && a < b);
}

/// The items left out of one user's ranking: a bitmap over the catalogue,
/// set from the user's history and cleared again in O(history).
class ExclusionMask {
 public:
  explicit ExclusionMask(std::int64_t num_items);
  /// Excludes `items` (ids in [0, num_items)), except `keep` (the held-out
  /// item stays rankable even when it was consumed before); -1 keeps none.
  void set(const std::int32_t* items, std::int64_t n, std::int32_t keep);
  /// Un-excludes everything set since the last clear().
  void clear();
  bool excluded(std::int32_t item) const { return mask_[static_cast<std::size_t>(item)] != 0; }
  const std::uint8_t* data() const { return mask_.data(); }
  std::int64_t num_excluded() const { return static_cast<std::int64_t>(set_.size()); }

 private:
  std::vector<std::uint8_t> mask_;
  std::vector<std::int32_t> set_;
};

/// One user's ranking over the items that are not excluded.
struct UserRanking {
  std::int64_t rank = 0;          ///< 1-based full rank of the held-out item (ties: smaller id first)
  std::int64_t above = 0;         ///< items scoring strictly higher than the held-out item
  std::int64_t ties = 0;          ///< other items with exactly its score
  std::vector<std::int32_t> top;  ///< the best min(k_max, candidates) items, best first
};

/// Ranks `scores[0 .. num_items)`: items with `excluded[i] != 0` are skipped;
/// `target` must not be excluded. One pass, O(num_items log k_max) at worst.
/// Throws Error naming the item when a score is NaN or +inf.
UserRanking rank_user(const float* scores, std::int64_t num_items, const std::uint8_t* excluded,
                      std::int32_t target, int k_max);

/// rank_user's `above` and `ties` alone (no top list, no rank): enough for
/// expected_ndcg at any k <= stop_at. Counting stops once `stop_at` items
/// score above the target (then its NDCG@k is 0 for every such k), so a
/// target far down the ranking costs a fraction of a pass. The same checks
/// as rank_user on the items it reads.
UserRanking count_above(const float* scores, std::int64_t num_items, const std::uint8_t* excluded,
                        std::int32_t target, std::int64_t stop_at);

/// 1 when rank <= k, else 0.
double metric_hit_rate(std::int64_t rank, int k);
/// |top[0..k) & relevant| / |relevant| (0 when nothing is relevant).
double metric_recall(const std::vector<std::int32_t>& top, int k, const std::vector<std::int32_t>& relevant);
/// One relevant item: 1 / log2(rank + 1) when rank <= k, else 0 (the ideal
/// DCG is 1: rank 1 scores 1, rank 3 scores 1/log2(4) = 0.5).
double metric_ndcg(std::int64_t rank, int k);
/// 1 / rank, over the full ranking (no cut-off).
double metric_reciprocal_rank(std::int64_t rank);

/// The expectations of the three metrics above when the rank is uniform on
/// above+1 .. above+ties+1 (a random tie-break among equal scores).
double expected_hit_rate(std::int64_t above, std::int64_t ties, int k);
double expected_ndcg(std::int64_t above, std::int64_t ties, int k);
double expected_reciprocal_rank(std::int64_t above, std::int64_t ties);
/// Share of the pairs of top[0..min(k, size)) whose categories differ
/// (`category[item]` is a category code); 0 for lists shorter than 2.
double metric_diversity(const std::vector<std::int32_t>& top, int k,
                        const std::vector<std::int32_t>& category);
/// Mean training count of top[0..min(k, size)); 0 for an empty list.
double metric_mean_popularity(const std::vector<std::int32_t>& top, int k,
                              const std::vector<std::int64_t>& train_count);

}  // namespace llmrec
