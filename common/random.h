#pragma once
/// Deterministic randomness that is the same on every machine and rank
/// (no std::uniform_int_distribution, whose results the standard leaves to
/// the library): splitmix64 for seeds and hashes, Lemire's unbiased bounded
/// draw, a Fisher-Yates permutation.
///
///   std::mt19937_64 gen(splitmix64(splitmix64(seed) ^ epoch));
///   std::vector<std::int64_t> order = random_permutation(n, gen);

#include <cstdint>
#include <utility>
#include <vector>

namespace llmrec {

/// One splitmix64 step: a well-mixed 64-bit function of x.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Uniform in [0, n) from one 64-bit draw (Lemire's multiply-shift).
inline std::uint64_t random_below(std::uint64_t draw, std::uint64_t n) {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(draw) * n) >> 64);
}

/// Uniform in [0, 1) from one 64-bit draw.
inline double random_unit(std::uint64_t draw) {
  return static_cast<double>(draw >> 11) * 0x1.0p-53;
}

/// Shuffles v in place (Fisher-Yates) with draws from `gen`.
template <class T, class Gen>
void random_shuffle(std::vector<T>& v, Gen& gen) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[random_below(gen(), i)]);
}

/// 0..n-1 in a random order drawn from `gen`.
template <class Gen>
std::vector<std::int64_t> random_permutation(std::int64_t n, Gen& gen) {
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  random_shuffle(perm, gen);
  return perm;
}

}  // namespace llmrec
