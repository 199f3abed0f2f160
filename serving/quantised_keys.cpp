#include "serving/quantised_keys.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "common/cpu_features.h"
#include "common/error.h"

namespace llmrec::serving {
namespace {

constexpr std::int64_t kLanes = 32;
/// Relative slack on every bound: covers the float rounding of the stored
/// norms and of the scores compared later (2^-24 ~ 6e-8), many times over.
constexpr double kSlack = 1e-5;

/// out[i] = c_i . v for rows [0, n) of `codes` ([n, stride], stride a
/// multiple of kLanes): exact int32 sums (|c| <= 127, |v| <= vmax, so
/// stride * 127 * vmax < 2^31). AVX2 when the CPU has it (16 products per
/// instruction: int8 widened to int16, multiplied and pairwise added into
/// int32 lanes), plain C++ otherwise; both sums are exact, so equal.
__attribute__((target("avx2"))) void int8_dots_avx2(const std::int8_t* codes, std::int64_t n,
                                                    std::int64_t stride, const std::int16_t* v,
                                                    std::int32_t* out) {
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int8_t* c = codes + i * stride;
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    for (std::int64_t j = 0; j < stride; j += 32) {
      const __m256i c16a = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j)));
      const __m256i c16b =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j + 16)));
      const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j));
      const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j + 16));
      acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(c16a, va));
      acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(c16b, vb));
    }
    const __m256i acc = _mm256_add_epi32(acc0, acc1);
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    out[i] = _mm_cvtsi128_si32(x);
  }
}

void int8_dots_base(const std::int8_t* codes, std::int64_t n, std::int64_t stride, const std::int16_t* v,
                    std::int32_t* out) {
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int8_t* c = codes + i * stride;
    std::int32_t acc = 0;
    for (std::int64_t j = 0; j < stride; ++j)
      acc += static_cast<std::int32_t>(c[j]) * static_cast<std::int32_t>(v[j]);
    out[i] = acc;
  }
}

/// The float just above x (bounds are rounded up, never down).
float up(double x) {
  return std::nextafter(static_cast<float>(x), std::numeric_limits<float>::infinity());
}

}  // namespace

QuantisedKeys::QuantisedKeys(const float* keys, std::int64_t n, std::int64_t d)
    : n_(n), d_(d), stride_((d + kLanes - 1) / kLanes * kLanes) {
  LLMREC_CHECK(n >= 0 && d >= 1 && (n == 0 || keys != nullptr), "quantised keys: {} keys of dimension {}", n,
               d);
  LLMREC_CHECK(stride_ <= (std::int64_t{1} << 16), "quantised keys: dimension {} is too large", d);
  codes_.assign(static_cast<std::size_t>(n * stride_), 0);
  scale_.resize(static_cast<std::size_t>(n));
  code_norm_.resize(static_cast<std::size_t>(n));
  residual_norm_.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const float* k = keys + i * d;
    double amax = 0;
    for (std::int64_t c = 0; c < d; ++c) amax = std::max(amax, static_cast<double>(std::fabs(k[c])));
    const double s = amax > 0 ? amax / 127.0 : 1.0;
    double cn = 0, rn = 0;
    for (std::int64_t c = 0; c < d; ++c) {
      const double q = std::clamp(std::nearbyint(k[c] / s), -127.0, 127.0);
      codes_[static_cast<std::size_t>(i * stride_ + c)] = static_cast<std::int8_t>(q);
      cn += (s * q) * (s * q);
      rn += (k[c] - s * q) * (k[c] - s * q);
    }
    scale_[static_cast<std::size_t>(i)] = static_cast<float>(s);
    // The bound uses s exactly as stored: recompute the residual with it.
    const double sf = scale_[static_cast<std::size_t>(i)];
    cn = 0;
    rn = 0;
    for (std::int64_t c = 0; c < d; ++c) {
      const double q = codes_[static_cast<std::size_t>(i * stride_ + c)];
      cn += (sf * q) * (sf * q);
      rn += (k[c] - sf * q) * (k[c] - sf * q);
    }
    code_norm_[static_cast<std::size_t>(i)] = up(std::sqrt(cn));
    residual_norm_[static_cast<std::size_t>(i)] = up(std::sqrt(rn));
  }
}

std::vector<std::int32_t> QuantisedKeys::candidates(const float* u, std::int64_t m,
                                                    const std::uint8_t* eligible, const float* offset,
                                                    std::int64_t* count_out) const {
  std::vector<std::int32_t> out;
  if (count_out != nullptr) *count_out = 0;
  if (n_ == 0 || m <= 0) return out;
  // The query: u = t v + w, |v| <= vmax so that no int32 sum overflows.
  const double vmax = std::min(32767.0, std::floor(2147483647.0 / (127.0 * static_cast<double>(stride_))));
  double umax = 0, unorm2 = 0;
  for (std::int64_t c = 0; c < d_; ++c) {
    umax = std::max(umax, static_cast<double>(std::fabs(u[c])));
    unorm2 += static_cast<double>(u[c]) * u[c];
  }
  const double t = umax > 0 ? umax / vmax : 1.0;
  std::vector<std::int16_t> v(static_cast<std::size_t>(stride_), 0);
  double wnorm2 = 0;
  for (std::int64_t c = 0; c < d_; ++c) {
    const double q = std::clamp(std::nearbyint(u[c] / t), -vmax, vmax);
    v[static_cast<std::size_t>(c)] = static_cast<std::int16_t>(q);
    wnorm2 += (u[c] - t * q) * (u[c] - t * q);
  }
  const double unorm = std::sqrt(unorm2), wnorm = std::sqrt(wnorm2);

  thread_local std::vector<std::int32_t> dots;
  thread_local std::vector<float> lower, upper;
  dots.resize(static_cast<std::size_t>(n_));
  lower.resize(static_cast<std::size_t>(n_));
  upper.resize(static_cast<std::size_t>(n_));
  if (cpu_has_avx2()) {
    int8_dots_avx2(codes_.data(), n_, stride_, v.data(), dots.data());
  } else {
    int8_dots_base(codes_.data(), n_, stride_, v.data(), dots.data());
  }
  // The bounds in float: the relative slack covers their own rounding (a
  // few ulps, ~1e-7) a hundred times over. Ineligible items: -inf.
  const auto tf = static_cast<float>(t), wf = static_cast<float>(wnorm), uf = static_cast<float>(unorm);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const auto slack = static_cast<float>(kSlack);
  const std::int32_t* dp = dots.data();
  const float* sp = scale_.data();
  const float* cp = code_norm_.data();
  const float* rp = residual_norm_.data();
  float* lo = lower.data();
  float* hi = upper.data();
  for (std::int64_t i = 0; i < n_; ++i) {
    const float a = sp[i] * tf * static_cast<float>(dp[i]) + (offset != nullptr ? offset[i] : 0.0f);
    float e = cp[i] * wf + rp[i] * uf;
    e += slack * (std::fabs(a) + e) + std::numeric_limits<float>::min();
    const bool ok = eligible == nullptr || eligible[i] != 0;
    lo[i] = ok ? a - e : -kInf;
    hi[i] = ok ? a + e : -kInf;
  }
  // tau: the m-th largest lower bound over the eligible items (a min-heap
  // of the m largest; most items fail the first comparison).
  std::vector<float> heap;
  heap.reserve(static_cast<std::size_t>(m));
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n_; ++i) {
    if (eligible != nullptr && eligible[i] == 0) continue;
    ++count;
    const float l = lo[i];
    if (static_cast<std::int64_t>(heap.size()) < m) {
      heap.push_back(l);
      std::push_heap(heap.begin(), heap.end(), std::greater<float>());
    } else if (l > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
      heap.back() = l;
      std::push_heap(heap.begin(), heap.end(), std::greater<float>());
    }
  }
  if (count_out != nullptr) *count_out = count;
  const float tau = count <= m ? -kInf : heap.front();
  for (std::int64_t i = 0; i < n_; ++i) {
    if (hi[i] >= tau && hi[i] > -kInf) out.push_back(static_cast<std::int32_t>(i));
  }
  return out;
}

}  // namespace llmrec::serving
