#pragma once
/// Exact top-m search over the item keys at a quarter of the memory
/// traffic: a scan of int8 keys with a proven error bound, then exact
/// scores for the few items the bound cannot rule out.
///
///   QuantisedKeys q(e.item_keys.data(), I, d);
///   std::vector<std::int32_t> pool = q.candidates(u, m, eligible);   // a superset of the exact top m
///
/// Each key is stored as k_i = s_i c_i + r_i (c_i int8, s_i = max|k_i| / 127,
/// r_i the residual) and the query as u = t v + w (v int16). The scan
/// computes a_i = s_i t (c_i . v) with exact integer sums, and
///
///   |k_i . u - a_i| <= |s_i c_i| |w| + |r_i| |u| = e_i            (Cauchy-Schwarz)
///
/// With tau = the m-th largest a_i - e_i over the eligible items, every
/// eligible item whose exact score can reach the top m has a_i + e_i >= tau;
/// candidates() returns those items (ties included), so ranking them by
/// their exact scores gives exactly the top m of a full scan. Immutable
/// after construction; thread-safe.

#include <cstdint>
#include <vector>

namespace llmrec::serving {

class QuantisedKeys {
 public:
  /// `keys` row-major [n, d] (copied; they need not outlive this).
  QuantisedKeys(const float* keys, std::int64_t n, std::int64_t d);

  /// The eligible items (eligible == nullptr: all; else eligible[i] != 0)
  /// that may be among the m of largest key . u + offset[i] (offset nullptr:
  /// 0; see above), ascending. Fewer eligible items than m: all of them.
  /// `count` (optional) receives the number of eligible items.
  std::vector<std::int32_t> candidates(const float* u, std::int64_t m, const std::uint8_t* eligible,
                                       const float* offset = nullptr, std::int64_t* count = nullptr) const;

  std::int64_t size() const { return n_; }

 private:
  std::int64_t n_ = 0, d_ = 0, stride_ = 0;  ///< stride_: d rounded up to 32
  std::vector<std::int8_t> codes_;           ///< [n, stride_], zero padded
  std::vector<float> scale_;                 ///< s_i
  std::vector<float> code_norm_;             ///< |s_i c_i|
  std::vector<float> residual_norm_;         ///< |r_i|
};

}  // namespace llmrec::serving
