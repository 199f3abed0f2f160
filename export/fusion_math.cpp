#include "export/fusion_math.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "common/error.h"

namespace llmrec {
namespace {

constexpr float kNever = -std::numeric_limits<float>::infinity();

}  // namespace

const char* fusion_missing_name(FusionMissing m) {
  switch (m) {
    case FusionMissing::kRenormalise: return "renormalise";
    case FusionMissing::kColdWeights: return "cold_weights";
    case FusionMissing::kScored: break;
  }
  return "scored";
}

FusionMissing parse_fusion_missing(const std::string& name, const std::string& what) {
  for (FusionMissing m : {FusionMissing::kScored, FusionMissing::kRenormalise, FusionMissing::kColdWeights}) {
    if (name == fusion_missing_name(m)) return m;
  }
  throw ConfigError(fmt::format(
      "{}: '{}' is not a fusion missing-score policy (scored, renormalise, cold_weights)", what, name));
}

std::vector<double> fusion_cold_weights(FusionMissing policy, const std::vector<double>& weights,
                                        const std::vector<bool>& scores_cold,
                                        const std::vector<double>& tuned) {
  LLMREC_CHECK(scores_cold.size() == weights.size(), "fusion: {} cold flags for {} weights",
               scores_cold.size(), weights.size());
  if (policy == FusionMissing::kScored) return weights;
  std::vector<double> c(weights.size(), 0.0);
  if (policy == FusionMissing::kColdWeights) {
    LLMREC_CHECK(tuned.size() == weights.size(), "fusion: {} cold weights for {} components", tuned.size(),
                 weights.size());
    for (std::size_t k = 0; k < c.size(); ++k) c[k] = scores_cold[k] ? tuned[k] : 0.0;
    return c;
  }
  double total = 0, present = 0;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    total += weights[k];
    if (scores_cold[k]) present += weights[k];
  }
  if (present > 0) {
    for (std::size_t k = 0; k < c.size(); ++k) c[k] = scores_cold[k] ? weights[k] * (total / present) : 0.0;
  }
  return c;
}

void fusion_standardise(const float* scores, std::int64_t n, float* z) {
  double sum = 0;
  std::int64_t finite = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float s = scores[i];
    if (std::isnan(s) || s == -kNever)
      throw Error(fmt::format("item {} has score {}: scores must be finite or -inf", i, s));
    if (s != kNever) {
      sum += s;
      ++finite;
    }
  }
  const double mean = finite > 0 ? sum / static_cast<double>(finite) : 0.0;
  double var = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (scores[i] != kNever) var += (scores[i] - mean) * (scores[i] - mean);
  }
  const double sd = finite > 0 ? std::sqrt(var / static_cast<double>(finite)) : 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (scores[i] == kNever) {
      z[i] = kNever;
    } else {
      z[i] = sd > 0 ? static_cast<float>((scores[i] - mean) / sd) : 0.0f;
    }
  }
}

void fusion_combine(const std::vector<const float*>& z, const std::vector<double>& weights, std::int64_t n,
                    float* out, const std::uint8_t* cold, const std::vector<double>& cold_weights) {
  LLMREC_CHECK(z.size() == weights.size(), "fusion: {} score rows for {} weights", z.size(), weights.size());
  LLMREC_CHECK(cold == nullptr || cold_weights.size() == z.size(),
               "fusion: {} cold weights for {} score rows", cold_weights.size(), z.size());
  for (std::int64_t i = 0; i < n; ++i) {
    const std::vector<double>& w = cold != nullptr && cold[i] != 0 ? cold_weights : weights;
    double s = 0;
    bool never = false;
    for (std::size_t k = 0; k < z.size() && !never; ++k) {
      if (w[k] == 0) continue;
      const float v = z[k][i];
      never = v == kNever;
      s += w[k] * static_cast<double>(v);
    }
    out[i] = never ? kNever : static_cast<float>(s);
  }
}

}  // namespace llmrec
