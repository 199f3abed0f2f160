#include "serving/ann_index.h"

#include <faiss/IndexHNSW.h>
#include <faiss/impl/HNSW.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/error.h"

namespace llmrec::serving {

struct AnnIndex::Impl {
  Impl(int dim, int m, faiss::MetricType metric) : index(dim, m, metric) {}
  faiss::IndexHNSWFlat index;
};

AnnIndex::AnnIndex(const float* keys, std::int64_t n, std::int64_t d, const AnnOptions& options)
    : keys_(keys), n_(n), d_(d), options_(options) {
  LLMREC_CHECK(n >= 1 && d >= 1 && keys != nullptr, "ann: {} keys of dimension {}", n, d);
  if (options.metric != "l2" && options.metric != "ip") {
    throw ConfigError(fmt::format("ann: metric '{}' must be l2 or ip", options.metric));
  }
  if (options.m < 4 || options.m > 256 || options.ef_construction < 1 || options.ef_construction > 65536 ||
      options.ef_search < 1 || options.ef_search > 65536) {
    throw ConfigError(
        fmt::format("ann: hnsw M {} must be in [4, 256] and efConstruction {}, efSearch {} in [1, 65536]",
                    options.m, options.ef_construction, options.ef_search));
  }
  const auto t0 = std::chrono::steady_clock::now();
  if (options.metric == "ip") {
    impl_ = std::make_unique<Impl>(static_cast<int>(d), options.m, faiss::METRIC_INNER_PRODUCT);
    impl_->index.hnsw.efConstruction = options.ef_construction;
    impl_->index.add(n, keys);
  } else {
    // Inner products as Euclidean distances: k_i -> [k_i, sqrt(M^2 - |k_i|^2)],
    // q -> [q, 0], M = the largest |k_i|: |q - k_i|^2 = |q|^2 + M^2 - 2 q . k_i.
    double max_norm2 = 0;
    std::vector<double> norm2(static_cast<std::size_t>(n), 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::int64_t c = 0; c < d; ++c) s += static_cast<double>(keys[i * d + c]) * keys[i * d + c];
      norm2[static_cast<std::size_t>(i)] = s;
      max_norm2 = std::max(max_norm2, s);
    }
    max_norm_ = std::sqrt(max_norm2);
    const std::int64_t D = d + 1;
    std::vector<float> augmented(static_cast<std::size_t>(n * D));
    for (std::int64_t i = 0; i < n; ++i) {
      std::copy_n(keys + i * d, d, augmented.data() + i * D);
      augmented[static_cast<std::size_t>(i * D + d)] =
          static_cast<float>(std::sqrt(std::max(0.0, max_norm2 - norm2[static_cast<std::size_t>(i)])));
    }
    impl_ = std::make_unique<Impl>(static_cast<int>(D), options.m, faiss::METRIC_L2);
    impl_->index.hnsw.efConstruction = options.ef_construction;
    impl_->index.add(n, augmented.data());
  }
  impl_->index.hnsw.efSearch = options.ef_search;
  build_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

AnnIndex::~AnnIndex() = default;

void AnnIndex::search(const float* query, std::int64_t k, std::vector<std::int32_t>& ids,
                      std::vector<float>& dots, int ef_search) const {
  ids.clear();
  dots.clear();
  k = std::min(k, n_);
  if (k <= 0) return;
  std::vector<float> q(query, query + d_);
  if (options_.metric == "l2") {
    // Scaled onto the keys' sphere (|q| = M; the order is unchanged): the
    // greedy walk then starts among distances like the graph's own.
    double norm2 = 0;
    for (float x : q) norm2 += static_cast<double>(x) * x;
    if (norm2 > 0 && max_norm_ > 0) {
      const auto scale = static_cast<float>(max_norm_ / std::sqrt(norm2));
      for (float& x : q) x *= scale;
    }
    q.push_back(0.0f);
  }
  std::vector<float> distances(static_cast<std::size_t>(k));
  std::vector<faiss::Index::idx_t> labels(static_cast<std::size_t>(k));
  faiss::SearchParametersHNSW params;
  params.efSearch = std::max<int>(ef_search > 0 ? ef_search : options_.ef_search, static_cast<int>(k));
  impl_->index.search(1, q.data(), k, distances.data(), labels.data(), &params);
  std::vector<std::pair<float, std::int32_t>> found;
  found.reserve(static_cast<std::size_t>(k));
  for (faiss::Index::idx_t label : labels) {
    if (label < 0 || label >= n_) continue;  // fewer reachable than asked
    const float* key = keys_ + label * d_;
    double s = 0;
    for (std::int64_t c = 0; c < d_; ++c) s += static_cast<double>(key[c]) * query[c];
    found.emplace_back(static_cast<float>(s), static_cast<std::int32_t>(label));
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (const auto& [s, i] : found) {
    ids.push_back(i);
    dots.push_back(s);
  }
}

std::string AnnIndex::describe() const {
  return fmt::format("hnsw {} M={} efConstruction={} efSearch={}", options_.metric, options_.m,
                     options_.ef_construction, options_.ef_search);
}

}  // namespace llmrec::serving
