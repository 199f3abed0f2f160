#pragma once
/// Approximate maximum-inner-product search over the export's item keys
/// with FAISS's HNSW graph (docs/serving.md, "Approximate search").
///
///   AnnIndex index(e.item_keys.data(), e.num_items, e.dim, {});   // builds the graph
///   std::vector<std::int32_t> ids; std::vector<float> dots;
///   index.search(u.data(), 200, ids, dots);   // the ~200 items of largest key . u
///
/// Two graphs (AnnOptions::metric). "l2" (the default): inner products
/// become Euclidean distances by the usual augmentation (Bachrach et al.
/// 2014): each key k_i gets one more coordinate sqrt(M^2 - |k_i|^2), M =
/// the largest |k_i|, and the query a 0 there, so |q - k_i|^2 = |q|^2 + M^2
/// - 2 q . k_i and the nearest keys are those of the largest inner product;
/// the graph is a metric one, so a longer search list always reaches more
/// of it. "ip": FAISS's graph on the inner product itself (ip-NSW), often
/// faster at equal recall, but items of small norm can be unreachable, so
/// its recall may stop short of 1 on some data (docs/serving.md). Either
/// way the returned scores are the exact inner products q . k_i of the ids
/// found (in double).
/// Immutable after construction; search may be called from any number of
/// threads at once. FAISS stays out of this header.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmrec::serving {

struct AnnOptions {
  /// l2: the keys augmented to a sphere, a Euclidean graph (see above);
  /// ip: a graph on the inner product itself.
  std::string metric = "l2";
  int m = 32;                 ///< HNSW neighbours per node (FAISS's M)
  int ef_construction = 200;  ///< candidate list while building
  int ef_search = 128;        ///< candidate list while searching (at least the number of results asked)
};

class AnnIndex {
 public:
  /// Builds the graph over `n` keys of dimension `d` (row-major; the keys
  /// must outlive the index) with the process's OpenMP threads. Error for
  /// n < 1, d < 1 or options out of range (m in [4, 256], ef_* in [1, 65536]).
  AnnIndex(const float* keys, std::int64_t n, std::int64_t d, const AnnOptions& options);
  ~AnnIndex();
  AnnIndex(const AnnIndex&) = delete;
  AnnIndex& operator=(const AnnIndex&) = delete;

  /// The (at most) `k` keys of largest inner product with `query` ([d]
  /// floats) that the graph finds, largest first (ties: smaller id first):
  /// their rows in `ids`, their exact inner products in `dots`. `ef_search`
  /// > 0 overrides options().ef_search for this call.
  void search(const float* query, std::int64_t k, std::vector<std::int32_t>& ids, std::vector<float>& dots,
              int ef_search = 0) const;

  std::int64_t size() const { return n_; }
  const AnnOptions& options() const { return options_; }
  double build_seconds() const { return build_seconds_; }
  /// "hnsw l2 M=32 efConstruction=200 efSearch=128"
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  const float* keys_;  ///< the caller's keys (outlive the index)
  std::int64_t n_ = 0, d_ = 0;
  AnnOptions options_;
  double build_seconds_ = 0;
  double max_norm_ = 0;  ///< l2: M
};

}  // namespace llmrec::serving
