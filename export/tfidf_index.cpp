#include "export/tfidf_index.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "common/error.h"

namespace llmrec {

TfidfIndex::TfidfIndex(TfidfMatrix m) : matrix_(std::move(m)) {
  const std::int64_t n = matrix_.num_items();
  LLMREC_CHECK(matrix_.num_terms >= 0 && n >= 0 && matrix_.offsets.front() == 0 &&
                   matrix_.offsets.back() == static_cast<std::int64_t>(matrix_.terms.size()) &&
                   matrix_.terms.size() == matrix_.weights.size(),
               "tfidf: a CSR matrix of {} items with {} terms and {} weights", n, matrix_.terms.size(),
               matrix_.weights.size());
  for (std::int64_t i = 0; i < n; ++i) {
    const auto a = matrix_.offsets[static_cast<std::size_t>(i)],
               b = matrix_.offsets[static_cast<std::size_t>(i) + 1];
    LLMREC_CHECK(a <= b, "tfidf: row {} ends before it starts", i);
    for (auto k = a; k < b; ++k) {
      const std::int32_t t = matrix_.terms[static_cast<std::size_t>(k)];
      LLMREC_CHECK(
          t >= 0 && t < matrix_.num_terms && (k == a || matrix_.terms[static_cast<std::size_t>(k) - 1] < t),
          "tfidf: row {} holds term {}: terms must ascend within [0, {})", i, t, matrix_.num_terms);
    }
  }
  // The inverted index: the matrix transposed, items ascending per term.
  term_offsets_.assign(static_cast<std::size_t>(matrix_.num_terms) + 1, 0);
  for (auto t : matrix_.terms) ++term_offsets_[static_cast<std::size_t>(t) + 1];
  std::partial_sum(term_offsets_.begin(), term_offsets_.end(), term_offsets_.begin());
  term_items_.resize(matrix_.terms.size());
  term_weights_.resize(matrix_.terms.size());
  std::vector<std::int64_t> at(term_offsets_.begin(), term_offsets_.end() - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    for (auto k = matrix_.offsets[static_cast<std::size_t>(i)];
         k < matrix_.offsets[static_cast<std::size_t>(i) + 1]; ++k) {
      const auto slot = static_cast<std::size_t>(
          at[static_cast<std::size_t>(matrix_.terms[static_cast<std::size_t>(k)])]++);
      term_items_[slot] = static_cast<std::int32_t>(i);
      term_weights_[slot] = matrix_.weights[static_cast<std::size_t>(k)];
    }
  }
}

std::vector<std::pair<std::int32_t, double>> TfidfIndex::profile(const std::int32_t* history, std::int64_t n,
                                                                 int profile_items) const {
  const std::int64_t items = matrix_.num_items();
  // Sum of the recent items' vectors (the mean up to a factor the
  // normalisation removes), term by term.
  std::map<std::int32_t, double> sum;
  for (std::int64_t e = std::max<std::int64_t>(0, n - profile_items); e < n; ++e) {
    const std::int32_t i = history[e];
    if (i < 0 || i >= items) throw Error(fmt::format("tfidf: history item {} is not an item id", i));
    for (auto k = matrix_.offsets[static_cast<std::size_t>(i)];
         k < matrix_.offsets[static_cast<std::size_t>(i) + 1]; ++k) {
      sum[matrix_.terms[static_cast<std::size_t>(k)]] += matrix_.weights[static_cast<std::size_t>(k)];
    }
  }
  double norm2 = 0;
  for (const auto& [t, w] : sum) norm2 += w * w;
  std::vector<std::pair<std::int32_t, double>> out;
  if (norm2 <= 0) return out;
  const double inv = 1.0 / std::sqrt(norm2);
  for (const auto& [t, w] : sum) out.emplace_back(t, w * inv);
  return out;
}

void TfidfIndex::score(const std::int32_t* history, std::int64_t n, int profile_items, float* out) const {
  const std::int64_t items = matrix_.num_items();
  std::vector<double> acc(static_cast<std::size_t>(items), 0.0);
  for (const auto& [t, p] : profile(history, n, profile_items)) {
    for (auto k = term_offsets_[static_cast<std::size_t>(t)];
         k < term_offsets_[static_cast<std::size_t>(t) + 1]; ++k) {
      acc[static_cast<std::size_t>(term_items_[static_cast<std::size_t>(k)])] +=
          p * term_weights_[static_cast<std::size_t>(k)];
    }
  }
  for (std::int64_t j = 0; j < items; ++j) out[j] = static_cast<float>(acc[static_cast<std::size_t>(j)]);
}

namespace {

/// The k largest (term, value) pairs, largest first, ties smaller term first.
template <class V>
std::vector<std::pair<std::int32_t, float>> top_pairs(std::vector<std::pair<std::int32_t, V>> terms, int k) {
  const auto keep = std::min<std::size_t>(terms.size(), static_cast<std::size_t>(std::max(k, 0)));
  std::partial_sort(terms.begin(), terms.begin() + static_cast<std::ptrdiff_t>(keep), terms.end(),
                    [](const auto& a, const auto& b) {
                      return a.second > b.second || (a.second == b.second && a.first < b.first);
                    });
  std::vector<std::pair<std::int32_t, float>> out;
  for (std::size_t j = 0; j < keep; ++j)
    out.emplace_back(terms[j].first, static_cast<float>(terms[j].second));
  return out;
}

}  // namespace

std::vector<std::pair<std::int32_t, float>> TfidfIndex::top_terms(std::int64_t item, int k) const {
  LLMREC_CHECK(item >= 0 && item < matrix_.num_items(), "tfidf: item {} is not one of the {} items", item,
               matrix_.num_items());
  LLMREC_CHECK(k >= 0, "tfidf: top {} terms asked for", k);
  std::vector<std::pair<std::int32_t, float>> terms;
  for (auto e = matrix_.offsets[static_cast<std::size_t>(item)];
       e < matrix_.offsets[static_cast<std::size_t>(item) + 1]; ++e) {
    terms.emplace_back(matrix_.terms[static_cast<std::size_t>(e)],
                       matrix_.weights[static_cast<std::size_t>(e)]);
  }
  return top_pairs(std::move(terms), k);
}

std::vector<std::pair<std::int32_t, float>> TfidfIndex::shared_terms(const std::int32_t* history,
                                                                     std::int64_t n, int profile_items,
                                                                     std::int64_t item, int k) const {
  LLMREC_CHECK(item >= 0 && item < matrix_.num_items(), "tfidf: item {} is not one of the {} items", item,
               matrix_.num_items());
  const auto prof = profile(history, n, profile_items);
  std::vector<std::pair<std::int32_t, double>> shared;
  std::size_t p = 0;
  for (auto e = matrix_.offsets[static_cast<std::size_t>(item)];
       e < matrix_.offsets[static_cast<std::size_t>(item) + 1]; ++e) {
    const std::int32_t t = matrix_.terms[static_cast<std::size_t>(e)];
    while (p < prof.size() && prof[p].first < t) ++p;
    if (p < prof.size() && prof[p].first == t) {
      shared.emplace_back(t, prof[p].second * matrix_.weights[static_cast<std::size_t>(e)]);
    }
  }
  return top_pairs(std::move(shared), k);
}

}  // namespace llmrec
