#include "trainer/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace llmrec {

ExclusionMask::ExclusionMask(std::int64_t num_items) : mask_(static_cast<std::size_t>(num_items), 0) {}

void ExclusionMask::set(const std::int32_t* items, std::int64_t n, std::int32_t keep) {
  for (std::int64_t k = 0; k < n; ++k) {
    const std::int32_t item = items[k];
    LLMREC_CHECK(item >= 0 && static_cast<std::size_t>(item) < mask_.size(),
                 "history item {} is not an item id (0..{})", item, mask_.size());
    if (item == keep || mask_[static_cast<std::size_t>(item)]) continue;
    mask_[static_cast<std::size_t>(item)] = 1;
    set_.push_back(item);
  }
}

void ExclusionMask::clear() {
  for (std::int32_t item : set_) mask_[static_cast<std::size_t>(item)] = 0;
  set_.clear();
}

namespace {

/// The checks of a ranking's arguments, and an item's score read in a pass:
/// NaN and +inf are errors naming the item.
void check_ranking(std::int64_t num_items, const std::uint8_t* excluded, std::int32_t target,
                   std::int64_t cut, const char* cut_name) {
  LLMREC_CHECK(target >= 0 && target < num_items, "held-out item {} is not an item id (0..{})", target,
               num_items);
  LLMREC_CHECK(!excluded[target], "held-out item {} is excluded from its own ranking", target);
  LLMREC_CHECK(cut >= 1, "{} must be positive, got {}", cut_name, cut);
}

float checked_score(const float* scores, std::int64_t j) {
  const float s = scores[j];
  if (std::isnan(s) || s == std::numeric_limits<float>::infinity())
    throw Error(fmt::format("item {} has score {}: scores must be finite or -inf", j, s));
  return s;
}

}  // namespace

UserRanking rank_user(const float* scores, std::int64_t num_items, const std::uint8_t* excluded,
                      std::int32_t target, int k_max) {
  check_ranking(num_items, excluded, target, k_max, "k_max");
  const float st = scores[target];
  // The heap keeps the best k_max seen so far with the worst on top.
  auto better = [&](std::int32_t a, std::int32_t b) { return ranks_before(scores[a], a, scores[b], b); };
  std::vector<std::int32_t> heap;
  heap.reserve(static_cast<std::size_t>(std::min<std::int64_t>(k_max, num_items)));
  std::int64_t ahead = 0;
  std::int64_t above = 0;
  std::int64_t ties = 0;
  for (std::int64_t j64 = 0; j64 < num_items; ++j64) {
    const auto j = static_cast<std::int32_t>(j64);
    const float s = checked_score(scores, j);
    if (excluded[j]) continue;
    ahead += ranks_before(s, j, st, target);
    above += s > st;
    ties += s == st && j != target;
    if (static_cast<int>(heap.size()) < k_max) {
      heap.push_back(j);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(j, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = j;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), better);  // best first
  return {ahead + 1, above, ties, std::move(heap)};
}

UserRanking count_above(const float* scores, std::int64_t num_items, const std::uint8_t* excluded,
                        std::int32_t target, std::int64_t stop_at) {
  check_ranking(num_items, excluded, target, stop_at, "stop_at");
  const float st = scores[target];
  UserRanking r;
  for (std::int64_t j = 0; j < num_items && r.above < stop_at; ++j) {
    const float s = checked_score(scores, j);
    if (excluded[j]) continue;
    r.above += s > st;
    r.ties += s == st && j != target;
  }
  return r;
}

double metric_hit_rate(std::int64_t rank, int k) {
  return rank >= 1 && rank <= k ? 1.0 : 0.0;
}

double metric_recall(const std::vector<std::int32_t>& top, int k, const std::vector<std::int32_t>& relevant) {
  if (relevant.empty()) return 0.0;
  const std::size_t n = std::min(top.size(), static_cast<std::size_t>(std::max(k, 0)));
  std::int64_t found = 0;
  for (std::int32_t r : relevant)
    found += std::find(top.begin(), top.begin() + static_cast<std::ptrdiff_t>(n), r) !=
             top.begin() + static_cast<std::ptrdiff_t>(n);
  return static_cast<double>(found) / static_cast<double>(relevant.size());
}

double metric_ndcg(std::int64_t rank, int k) {
  return rank >= 1 && rank <= k ? 1.0 / std::log2(static_cast<double>(rank) + 1.0) : 0.0;
}

double metric_reciprocal_rank(std::int64_t rank) {
  return rank >= 1 ? 1.0 / static_cast<double>(rank) : 0.0;
}

namespace {

/// The mean of metric(r) over r = above+1 .. above+ties+1, where metric is 0
/// beyond rank k (so at most k terms are summed).
template <class Metric>
double mean_over_tied_ranks(std::int64_t above, std::int64_t ties, std::int64_t k, Metric metric) {
  double sum = 0;
  for (std::int64_t r = above + 1; r <= std::min(above + ties + 1, k); ++r) sum += metric(r);
  return sum / static_cast<double>(ties + 1);
}

/// H(n) = 1 + 1/2 + ... + 1/n: summed below 256, else its asymptotic series
/// (error < 1e-12 there).
double harmonic(std::int64_t n) {
  if (n < 256) {
    double h = 0;
    for (std::int64_t i = n; i >= 1; --i) h += 1.0 / static_cast<double>(i);
    return h;
  }
  const double x = static_cast<double>(n);
  return std::log(x) + 0.57721566490153286 + 1.0 / (2 * x) - 1.0 / (12 * x * x) + 1.0 / (120 * x * x * x * x);
}

}  // namespace

double expected_hit_rate(std::int64_t above, std::int64_t ties, int k) {
  return mean_over_tied_ranks(above, ties, k, [k](std::int64_t r) { return metric_hit_rate(r, k); });
}

double expected_ndcg(std::int64_t above, std::int64_t ties, int k) {
  return mean_over_tied_ranks(above, ties, k, [k](std::int64_t r) { return metric_ndcg(r, k); });
}

double expected_reciprocal_rank(std::int64_t above, std::int64_t ties) {
  if (ties == 0) return metric_reciprocal_rank(above + 1);
  return (harmonic(above + ties + 1) - harmonic(above)) / static_cast<double>(ties + 1);
}

double metric_diversity(const std::vector<std::int32_t>& top, int k,
                        const std::vector<std::int32_t>& category) {
  const std::size_t n = std::min(top.size(), static_cast<std::size_t>(std::max(k, 0)));
  if (n < 2) return 0.0;
  // Differing pairs = all pairs - pairs within each category.
  std::vector<std::int32_t> cats(n);
  for (std::size_t a = 0; a < n; ++a) cats[a] = category[static_cast<std::size_t>(top[a])];
  std::sort(cats.begin(), cats.end());
  const auto all = static_cast<std::int64_t>(n * (n - 1) / 2);
  std::int64_t same = 0;
  for (std::size_t a = 0, b = 0; a < n; a = b) {
    while (b < n && cats[b] == cats[a]) ++b;
    const auto run = static_cast<std::int64_t>(b - a);
    same += run * (run - 1) / 2;
  }
  return static_cast<double>(all - same) / static_cast<double>(all);
}

double metric_mean_popularity(const std::vector<std::int32_t>& top, int k,
                              const std::vector<std::int64_t>& train_count) {
  const std::size_t n = std::min(top.size(), static_cast<std::size_t>(std::max(k, 0)));
  if (n == 0) return 0.0;
  double sum = 0;
  for (std::size_t a = 0; a < n; ++a)
    sum += static_cast<double>(train_count[static_cast<std::size_t>(top[a])]);
  return sum / static_cast<double>(n);
}

}  // namespace llmrec
