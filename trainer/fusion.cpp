#include "trainer/fusion.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace llmrec {
namespace {

constexpr float kNever = -std::numeric_limits<float>::infinity();
constexpr int kTuneK = 10;

/// Scores of `scorer` for `request`, z-standardised row by row: [B, n]
/// floats. `n` < 0 takes the catalogue size from these scores.
std::vector<float> standardised_scores(Scorer& scorer, const ScoreRequest& request, std::int64_t& n) {
  at::Tensor s = scorer.score(request);
  if (n < 0 && s.defined() && s.dim() == 2) n = s.size(1);
  if (!s.defined() || s.dim() != 2 || s.size(0) != request.size() || s.size(1) != n ||
      s.scalar_type() != at::kFloat) {
    throw Error(fmt::format("fusion: component '{}' returned scores that are not [{}, {}] float32", scorer.name(),
                            request.size(), n));
  }
  s = s.contiguous();
  std::vector<float> z(static_cast<std::size_t>(request.size() * n));
  for (std::int64_t b = 0; b < request.size(); ++b) {
    try {
      fusion_standardise(s.data_ptr<float>() + b * n, n, z.data() + b * n);
    } catch (const Error& e) {
      rethrow_with_context(e, fmt::format("fusion: component '{}', user {}", scorer.name(),
                                          request.users[static_cast<std::size_t>(b)]));
    }
  }
  return z;
}

}  // namespace

const char* fusion_missing_name(FusionMissing m) {
  return m == FusionMissing::kRenormalise ? "renormalise" : "scored";
}

FusionMissing fusion_missing_parse(const std::string& name, const std::string& what) {
  if (name == "scored") return FusionMissing::kScored;
  if (name == "renormalise") return FusionMissing::kRenormalise;
  throw ConfigError(fmt::format("{}: '{}' is not a fusion missing-score policy (scored, renormalise)", what, name));
}

const std::vector<double>& fusion_grid() {
  static const std::vector<double> grid = {0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0};
  return grid;
}

void fusion_standardise(const float* scores, std::int64_t n, float* z) {
  double sum = 0;
  std::int64_t finite = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float s = scores[i];
    if (std::isnan(s) || s == -kNever) throw Error(fmt::format("item {} has score {}: scores must be finite or -inf", i, s));
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
                    float* out, const std::vector<const std::uint8_t*>& missing) {
  LLMREC_CHECK(z.size() == weights.size(), "fusion: {} score rows for {} weights", z.size(), weights.size());
  LLMREC_CHECK(missing.empty() || missing.size() == z.size(), "fusion: {} missing masks for {} score rows",
               missing.size(), z.size());
  double total = 0;
  for (double w : weights) total += w;
  for (std::int64_t i = 0; i < n; ++i) {
    double s = 0, present = 0;
    bool never = false, absent = false;
    for (std::size_t k = 0; k < z.size(); ++k) {
      if (weights[k] == 0) continue;
      if (!missing.empty() && missing[k] != nullptr && missing[k][i] != 0) {
        absent = true;
        continue;
      }
      const float v = z[k][i];
      if (v == kNever) {
        never = true;
        break;
      }
      s += weights[k] * static_cast<double>(v);
      present += weights[k];
    }
    if (never) {
      out[i] = kNever;
    } else if (absent) {
      out[i] = present > 0 ? static_cast<float>(s * (total / present)) : 0.0f;
    } else {
      out[i] = static_cast<float>(s);
    }
  }
}

// ---------------------------------------------------------------- scorer

FusedScorer::FusedScorer(std::vector<FusionComponent> components, std::string name, nlohmann::json tuning,
                         FusionMissing missing, std::vector<std::uint8_t> cold)
    : components_(std::move(components)),
      name_(std::move(name)),
      tuning_(std::move(tuning)),
      missing_(missing),
      cold_(std::move(cold)) {
  LLMREC_CHECK(missing_ == FusionMissing::kScored || !cold_.empty(),
               "fusion: the renormalise policy needs the catalogue's cold-item mask");
  bool positive = false;
  for (const auto& c : components_) {
    LLMREC_CHECK(c.scorer != nullptr, "fusion: a component has no scorer");
    if (!(c.weight >= 0) || !std::isfinite(c.weight)) {
      throw ConfigError(fmt::format("fusion: weight of '{}' is {}; weights must be finite and >= 0", c.scorer->name(),
                                    c.weight));
    }
    positive = positive || c.weight > 0;
  }
  if (!positive) throw ConfigError("fusion: at least one component needs a positive weight");
}

nlohmann::json FusedScorer::params() const {
  nlohmann::json comps = nlohmann::json::array();
  for (const auto& c : components_) {
    comps.push_back({{"name", c.scorer->name()}, {"weight", c.weight}, {"params", c.scorer->params()}});
  }
  nlohmann::json j = {{"components", comps},
                      {"standardisation",
                       "z = (s - mean) / std over the user's finite scores of all items (population std; "
                       "std 0 gives z = 0; -inf stays -inf)"},
                      {"score", "sum_k weight_k z_k"},
                      {"missing", fusion_missing_name(missing_)}};
  if (missing_ == FusionMissing::kRenormalise) {
    j["missing_rule"] =
        "items without training events: the components that score them (not popularity, itemknn, bpr), "
        "their weighted sum scaled by (sum of all weights) / (sum of their weights)";
  }
  if (!tuning_.is_null()) j["tuning"] = tuning_;
  return j;
}

at::Tensor FusedScorer::score(const ScoreRequest& request) {
  std::int64_t n = -1;
  std::vector<std::vector<float>> zs;
  std::vector<const float*> rows;
  std::vector<double> weights;
  std::vector<const std::uint8_t*> missing;
  for (const auto& c : components_) {
    if (c.weight == 0) continue;
    zs.push_back(standardised_scores(*c.scorer, request, n));
    weights.push_back(c.weight);
    const bool absent = missing_ == FusionMissing::kRenormalise && !c.scorer->scores_cold_items();
    missing.push_back(absent ? cold_.data() : nullptr);
  }
  LLMREC_CHECK(missing_ == FusionMissing::kScored || static_cast<std::int64_t>(cold_.size()) == n,
               "fusion: cold mask of {} items for {} scores", cold_.size(), n);
  at::Tensor out = at::empty({request.size(), n}, at::kFloat);
  for (std::int64_t b = 0; b < request.size(); ++b) {
    rows.clear();
    for (const auto& z : zs) rows.push_back(z.data() + b * n);
    fusion_combine(rows, weights, n, out.data_ptr<float>() + b * n, missing);
  }
  return out;
}

// ---------------------------------------------------------------- tuning

FusionTuning fusion_tune(const std::vector<FusionComponent>& components, std::size_t reference, Evaluator& valid) {
  LLMREC_CHECK(valid.split() == "valid", "fusion weights are tuned on the validation split, not '{}'", valid.split());
  LLMREC_CHECK(reference < components.size(), "fusion: reference component {} of {}", reference, components.size());
  const std::vector<double>& grid = fusion_grid();
  FusionTuning t;
  // Policies: kRenormalise only where it can differ from kScored.
  const std::vector<std::uint8_t>& cold = valid.items().cold;
  std::vector<FusionMissing> policies = {FusionMissing::kScored};
  const bool any_cf = std::any_of(components.begin(), components.end(),
                                  [](const FusionComponent& c) { return !c.scorer->scores_cold_items(); });
  if (any_cf && std::find(cold.begin(), cold.end(), std::uint8_t{1}) != cold.end()) {
    policies.push_back(FusionMissing::kRenormalise);
  }
  std::vector<const std::uint8_t*> renormalise;
  for (const auto& c : components) renormalise.push_back(c.scorer->scores_cold_items() ? nullptr : cold.data());
  // Grid points: mixed radix over the non-reference components.
  std::size_t per_policy = 1;
  for (std::size_t k = 0; k + 1 < components.size(); ++k) per_policy *= grid.size();
  const std::size_t points = per_policy * policies.size();
  for (std::size_t g = 0; g < points; ++g) {
    std::vector<double> w(components.size(), 1.0);
    std::size_t rest = g % per_policy, radix = per_policy;
    for (std::size_t k = 0; k < components.size(); ++k) {
      if (k == reference) continue;
      radix /= grid.size();
      w[k] = grid[rest / radix];
      rest %= radix;
    }
    t.tried.push_back(w);
    t.tried_missing.push_back(policies[g / per_policy]);
  }

  // Each component scores a block once (at point 0); every point combines
  // those standardised scores with its weights.
  std::int64_t n = valid.num_items();
  std::vector<std::vector<float>> zs;
  auto fused = [&](const Evaluator::Block& blk, int g) {
    if (g == 0) {
      zs.clear();
      for (const auto& c : components) zs.push_back(standardised_scores(*c.scorer, blk.request, n));
    }
    at::Tensor out = at::empty({blk.request.size(), n}, at::kFloat);
    std::vector<const float*> rows(zs.size());
    for (std::int64_t r = 0; r < blk.request.size(); ++r) {
      for (std::size_t k = 0; k < zs.size(); ++k) rows[k] = zs[k].data() + r * n;
      const auto p = static_cast<std::size_t>(g);
      fusion_combine(rows, t.tried[p], n, out.data_ptr<float>() + r * n,
                     t.tried_missing[p] == FusionMissing::kRenormalise ? renormalise
                                                                       : std::vector<const std::uint8_t*>{});
    }
    return out;
  };
  t.tried_ndcg10 = valid.mean_ndcg(kTuneK, static_cast<int>(points), fused, "fusion");
  std::size_t best = 0;
  for (std::size_t g = 0; g < points; ++g) {
    if (t.tried_ndcg10[g] > t.tried_ndcg10[best]) best = g;
  }
  t.weights = t.tried[best];
  t.missing = t.tried_missing[best];
  t.ndcg10 = t.tried_ndcg10[best];
  return t;
}

FusedScorer fused_with_tuning(std::vector<FusionComponent> components, const FusionTuning& tuning,
                              std::vector<std::uint8_t> cold) {
  LLMREC_CHECK(components.size() == tuning.weights.size(), "fusion: {} components, {} tuned weights",
               components.size(), tuning.weights.size());
  nlohmann::json tried = nlohmann::json::array();
  for (std::size_t g = 0; g < tuning.tried.size(); ++g) {
    nlohmann::json w = nlohmann::json::object();
    for (std::size_t k = 0; k < components.size(); ++k) w[components[k].scorer->name()] = tuning.tried[g][k];
    tried.push_back({{"weights", w},
                     {"missing", fusion_missing_name(tuning.tried_missing[g])},
                     {"valid_ndcg@10", tuning.tried_ndcg10[g]}});
  }
  for (std::size_t k = 0; k < components.size(); ++k) components[k].weight = tuning.weights[k];
  return FusedScorer(std::move(components), "fusion",
                     {{"split", "valid"},
                      {"objective", "NDCG@10"},
                      {"grid", fusion_grid()},
                      {"best_valid_ndcg@10", tuning.ndcg10},
                      {"points_tried", tuning.tried.size()},
                      {"missing_tried", tuning.tried_missing.size() > 0 &&
                                                tuning.tried_missing.back() == FusionMissing::kRenormalise
                                            ? nlohmann::json{"scored", "renormalise"}
                                            : nlohmann::json{"scored"}},
                      {"tried", tried}},
                     tuning.missing, std::move(cold));
}

}  // namespace llmrec
