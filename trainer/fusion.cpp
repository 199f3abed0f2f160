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
    throw Error(fmt::format("fusion: component '{}' returned scores that are not [{}, {}] float32",
                            scorer.name(), request.size(), n));
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

const std::vector<double>& fusion_grid() {
  static const std::vector<double> grid = {0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0};
  return grid;
}

// ---------------------------------------------------------------- scorer

FusedScorer::FusedScorer(std::vector<FusionComponent> components, std::string name, nlohmann::json tuning,
                         FusionMissing missing, std::vector<std::uint8_t> cold,
                         const std::vector<double>& cold_weights)
    : components_(std::move(components)),
      name_(std::move(name)),
      tuning_(std::move(tuning)),
      missing_(missing),
      cold_(std::move(cold)) {
  LLMREC_CHECK(missing_ == FusionMissing::kScored || !cold_.empty(),
               "fusion: the {} policy needs the catalogue's cold-item mask", fusion_missing_name(missing_));
  bool positive = false;
  for (const auto& c : components_) {
    LLMREC_CHECK(c.scorer != nullptr, "fusion: a component has no scorer");
    if (!(c.weight >= 0) || !std::isfinite(c.weight)) {
      throw ConfigError(fmt::format("fusion: weight of '{}' is {}; weights must be finite and >= 0",
                                    c.scorer->name(), c.weight));
    }
    positive = positive || c.weight > 0;
  }
  if (!positive) throw ConfigError("fusion: at least one component needs a positive weight");
  for (double w : cold_weights) {
    if (!(w >= 0) || !std::isfinite(w)) {
      throw ConfigError(fmt::format("fusion: a cold weight is {}; weights must be finite and >= 0", w));
    }
  }
  std::vector<double> weights;
  std::vector<bool> scores_cold;
  for (const auto& c : components_) {
    weights.push_back(c.weight);
    scores_cold.push_back(c.scorer->scores_cold_items());
  }
  cold_weights_ = fusion_cold_weights(missing_, weights, scores_cold, cold_weights);
}

nlohmann::json FusedScorer::params() const {
  nlohmann::json comps = nlohmann::json::array();
  for (std::size_t k = 0; k < components_.size(); ++k) {
    const auto& c = components_[k];
    comps.push_back({{"name", c.scorer->name()},
                     {"weight", c.weight},
                     {"cold_weight", cold_weights_[k]},
                     {"params", c.scorer->params()}});
  }
  nlohmann::json j = {{"components", comps},
                      {"standardisation",
                       "z = (s - mean) / std over the user's finite scores of all items (population std; "
                       "std 0 gives z = 0; -inf stays -inf)"},
                      {"score", "sum_k weight_k z_k; items without training events: sum_k cold_weight_k z_k"},
                      {"missing", fusion_missing_name(missing_)}};
  if (missing_ == FusionMissing::kRenormalise) {
    j["missing_rule"] =
        "items without training events: the components that score them (not popularity, itemknn, bpr), "
        "their weighted sum scaled by (sum of all weights) / (sum of their weights)";
  } else if (missing_ == FusionMissing::kColdWeights) {
    j["missing_rule"] =
        "items without training events: the components that score them (not popularity, itemknn, bpr), "
        "with weights of their own (cold_weight)";
  }
  if (!tuning_.is_null()) j["tuning"] = tuning_;
  return j;
}

at::Tensor FusedScorer::score(const ScoreRequest& request) {
  std::int64_t n = -1;
  std::vector<std::vector<float>> zs;
  std::vector<const float*> rows;
  std::vector<double> weights, cold_weights;
  for (std::size_t k = 0; k < components_.size(); ++k) {
    const auto& c = components_[k];
    if (c.weight == 0 && cold_weights_[k] == 0) continue;
    zs.push_back(standardised_scores(*c.scorer, request, n));
    weights.push_back(c.weight);
    cold_weights.push_back(cold_weights_[k]);
  }
  const bool by_cold = missing_ != FusionMissing::kScored;
  LLMREC_CHECK(!by_cold || static_cast<std::int64_t>(cold_.size()) == n,
               "fusion: cold mask of {} items for {} scores", cold_.size(), n);
  at::Tensor out = at::empty({request.size(), n}, at::kFloat);
  for (std::int64_t b = 0; b < request.size(); ++b) {
    rows.clear();
    for (const auto& z : zs) rows.push_back(z.data() + b * n);
    fusion_combine(rows, weights, n, out.data_ptr<float>() + b * n, by_cold ? cold_.data() : nullptr,
                   cold_weights);
  }
  return out;
}

// ---------------------------------------------------------------- tuning

namespace {

/// The points of one tuning stage: weights, policy and cold weights each.
struct TunePoints {
  std::vector<std::vector<double>> weights, cold;
  std::vector<FusionMissing> missing;
};

/// Collective: validation NDCG@10 of each point (each component scores each
/// block once; `cold_items` take the point's cold weights), and in
/// `cold_ndcg` that over the users whose target is in `cold_targets`;
/// `cold_only`: those users alone (the others are not fused). Items of
/// `left_out` (when not empty) score -inf: out of the ranking.
std::vector<double> tune_evaluate(const std::vector<std::shared_ptr<Scorer>>& components, const TunePoints& p,
                                  Evaluator& valid, const std::vector<std::uint8_t>& cold_items,
                                  const std::vector<std::uint8_t>& cold_targets,
                                  std::vector<double>& cold_ndcg, bool cold_only,
                                  const std::vector<std::uint8_t>& left_out = {}) {
  const std::uint8_t* cold = cold_items.data();
  const std::uint8_t* targets_cold = cold_targets.data();
  const std::uint8_t* out_of_ranking = left_out.empty() ? nullptr : left_out.data();
  const std::int64_t n = valid.num_items();
  std::vector<std::vector<float>> zs;
  auto fused = [&](const Evaluator::Block& blk, int g) {
    if (g == 0) {
      zs.clear();
      for (const auto& c : components) {
        std::int64_t width = n;
        zs.push_back(standardised_scores(*c, blk.request, width));
      }
    }
    const auto q = static_cast<std::size_t>(g);
    at::Tensor out = cold_only ? at::zeros({blk.request.size(), n}, at::kFloat)
                               : at::empty({blk.request.size(), n}, at::kFloat);
    std::vector<const float*> rows(zs.size());
    for (std::int64_t r = 0; r < blk.request.size(); ++r) {
      if (cold_only && targets_cold[blk.targets[static_cast<std::size_t>(r)]] == 0) continue;
      for (std::size_t k = 0; k < zs.size(); ++k) rows[k] = zs[k].data() + r * n;
      float* row = out.data_ptr<float>() + r * n;
      fusion_combine(rows, p.weights[q], n, row, p.missing[q] == FusionMissing::kScored ? nullptr : cold,
                     p.cold[q]);
      if (out_of_ranking != nullptr) {
        for (std::int64_t i = 0; i < n; ++i) {
          if (out_of_ranking[i] != 0) row[i] = -std::numeric_limits<float>::infinity();
        }
      }
    }
    return out;
  };
  return valid.mean_ndcg(kTuneK, static_cast<int>(p.weights.size()), fused, "fusion", &cold_ndcg,
                         &cold_targets, cold_only);
}

/// Point `g` of the Cartesian product of fusion_grid() over the entries
/// `slots` of `w` (the first slot varying slowest), written into them.
void grid_point(std::size_t g, const std::vector<std::size_t>& slots, std::vector<double>& w) {
  const std::vector<double>& grid = fusion_grid();
  std::size_t radix = 1;
  for (std::size_t i = 0; i < slots.size(); ++i) radix *= grid.size();
  for (std::size_t k : slots) {
    radix /= grid.size();
    w[k] = grid[g / radix];
    g %= radix;
  }
}

/// Points of the Cartesian product of fusion_grid() over `slots`.
std::size_t grid_points(const std::vector<std::size_t>& slots) {
  std::size_t points = 1;
  for (std::size_t i = 0; i < slots.size(); ++i) points *= fusion_grid().size();
  return points;
}

/// The tried point with the best cold-target NDCG@10 among those within
/// `tolerance` (relative) of the best overall NDCG@10; ties: the better overall.
std::size_t best_tuned_point(const FusionTuning& t, double tolerance) {
  std::size_t top = 0;
  for (std::size_t g = 0; g < t.tried.size(); ++g) {
    if (t.tried_ndcg10[g] > t.tried_ndcg10[top]) top = g;
  }
  std::size_t best = top;
  for (std::size_t g = 0; g < t.tried.size(); ++g) {
    if (t.tried_ndcg10[g] < (1.0 - tolerance) * t.tried_ndcg10[top]) continue;
    const double c = t.tried_cold_ndcg10[g], cb = t.tried_cold_ndcg10[best];
    if (c > cb || (c == cb && t.tried_ndcg10[g] > t.tried_ndcg10[best])) best = g;
  }
  return best;
}

/// Stage 1's grid: the warm weights (mixed radix over the non-reference
/// components) under each missing-score policy.
TunePoints warm_grid(std::size_t n, std::size_t reference, const std::vector<FusionMissing>& policies,
                     const std::vector<bool>& scores_cold) {
  TunePoints warm;
  std::vector<std::size_t> others;
  for (std::size_t k = 0; k < n; ++k) {
    if (k != reference) others.push_back(k);
  }
  for (FusionMissing policy : policies) {
    for (std::size_t g = 0; g < grid_points(others); ++g) {
      std::vector<double> w(n, 1.0);
      grid_point(g, others, w);
      warm.cold.push_back(fusion_cold_weights(policy, w, scores_cold));
      warm.weights.push_back(std::move(w));
      warm.missing.push_back(policy);
    }
  }
  return warm;
}

/// Stage 2's grid: the warm weights `kept`, the cold items' own weights
/// over the components that score them (`free`).
TunePoints cold_grid(const std::vector<double>& kept, const std::vector<std::size_t>& free) {
  TunePoints own;
  for (std::size_t g = 0; g < grid_points(free); ++g) {
    std::vector<double> c(kept.size(), 0.0);
    grid_point(g, free, c);
    own.weights.push_back(kept);
    own.cold.push_back(std::move(c));
    own.missing.push_back(FusionMissing::kColdWeights);
  }
  return own;
}

}  // namespace

FusionTuning tune_fusion(const std::vector<FusionComponent>& components, std::size_t reference,
                         Evaluator& valid, const FusionColdWorld* world) {
  LLMREC_CHECK(valid.split() == "valid", "fusion weights are tuned on the validation split, not '{}'",
               valid.split());
  LLMREC_CHECK(reference < components.size(), "fusion: reference component {} of {}", reference,
               components.size());
  LLMREC_CHECK(world == nullptr || (world->scorers.size() == components.size() &&
                                    static_cast<std::int64_t>(world->cold.size()) == valid.num_items()),
               "fusion: a cold world of {} scorers and {} items for {} components and {} items",
               world ? world->scorers.size() : 0, world ? world->cold.size() : 0, components.size(),
               valid.num_items());
  const std::vector<std::uint8_t>& cold = valid.items().cold;
  const bool any_cold = std::find(cold.begin(), cold.end(), std::uint8_t{1}) != cold.end() ||
                        (world != nullptr && world->withheld > 0);
  std::vector<std::shared_ptr<Scorer>> real;
  for (const auto& c : components) real.push_back(c.scorer);
  std::vector<bool> scores_cold;
  for (const auto& c : components) scores_cold.push_back(c.scorer->scores_cold_items());
  const bool any_cf = std::find(scores_cold.begin(), scores_cold.end(), false) != scores_cold.end();
  FusionTuning t;
  const bool in_world = world != nullptr && !world->left_out.empty();
  std::vector<std::uint8_t> withheld_only;  // the world's cold targets when the real cold items are left out
  if (in_world) {
    withheld_only = world->cold;
    for (std::size_t i = 0; i < withheld_only.size(); ++i) withheld_only[i] &= world->left_out[i] == 0;
  }
  auto record = [&](const TunePoints& p) {
    std::vector<double> cold_ndcg, ndcg;
    if (in_world) {  // everything in the world, its real cold items out of the ranking
      ndcg = tune_evaluate(world->scorers, p, valid, world->cold, withheld_only, cold_ndcg, false,
                           world->left_out);
    } else {
      ndcg = tune_evaluate(real, p, valid, cold, cold, cold_ndcg, false);
      if (world != nullptr) {  // the cold-target figures of the world: its cold-target users alone
        std::vector<double> world_ndcg;
        tune_evaluate(world->scorers, p, valid, world->cold, world->cold, world_ndcg, true);
        cold_ndcg = world_ndcg;
      }
    }
    for (std::size_t g = 0; g < p.weights.size(); ++g) {
      t.tried.push_back(p.weights[g]);
      t.tried_missing.push_back(p.missing[g]);
      t.tried_cold.push_back(p.cold[g]);
      t.tried_ndcg10.push_back(ndcg[g]);
      t.tried_cold_ndcg10.push_back(cold_ndcg[g]);
    }
  };

  // Stage 1: the warm weights, scored, then renormalised where that can differ.
  std::vector<FusionMissing> policies = {FusionMissing::kScored};
  if (any_cf && any_cold) policies.push_back(FusionMissing::kRenormalise);
  record(warm_grid(components.size(), reference, policies, scores_cold));
  const double tolerance = valid.config().fusion.cold_tolerance;

  // Stage 2: the best warm weights kept, the cold items' own weights.
  std::vector<std::size_t> free;
  for (std::size_t k = 0; k < components.size(); ++k) {
    if (scores_cold[k]) free.push_back(k);
  }
  if (any_cold && !free.empty()) record(cold_grid(t.tried[best_tuned_point(t, tolerance)], free));
  const std::size_t best = best_tuned_point(t, tolerance);
  t.weights = t.tried[best];
  t.missing = t.tried_missing[best];
  t.cold_weights = t.tried_cold[best];
  t.ndcg10 = t.tried_ndcg10[best];
  t.cold_ndcg10 = t.tried_cold_ndcg10[best];
  t.cold_tolerance = tolerance;
  t.cold_withheld = world != nullptr ? world->withheld : 0;
  t.real_cold_left_out = in_world;
  return t;
}

FusedScorer fused_with_tuning(std::vector<FusionComponent> components, const FusionTuning& tuning,
                              std::vector<std::uint8_t> cold) {
  LLMREC_CHECK(components.size() == tuning.weights.size(), "fusion: {} components, {} tuned weights",
               components.size(), tuning.weights.size());
  nlohmann::json tried = nlohmann::json::array();
  nlohmann::json policies = nlohmann::json::array();
  for (std::size_t g = 0; g < tuning.tried.size(); ++g) {
    nlohmann::json w = nlohmann::json::object(), c = nlohmann::json::object();
    for (std::size_t k = 0; k < components.size(); ++k) {
      w[components[k].scorer->name()] = tuning.tried[g][k];
      c[components[k].scorer->name()] = tuning.tried_cold[g][k];
    }
    const char* policy = fusion_missing_name(tuning.tried_missing[g]);
    if (std::find(policies.begin(), policies.end(), policy) == policies.end()) policies.push_back(policy);
    tried.push_back({{"weights", w},
                     {"cold_weights", c},
                     {"missing", policy},
                     {"valid_ndcg@10", tuning.tried_ndcg10[g]},
                     {"valid_cold_ndcg@10", tuning.tried_cold_ndcg10[g]}});
  }
  for (std::size_t k = 0; k < components.size(); ++k) components[k].weight = tuning.weights[k];
  return FusedScorer(
      std::move(components), "fusion",
      {{"split", "valid"},
       {"objective", "NDCG@10"},
       {"grid", fusion_grid()},
       {"best_valid_ndcg@10", tuning.ndcg10},
       {"best_valid_cold_ndcg@10", tuning.cold_ndcg10},
       {"cold_tolerance", tuning.cold_tolerance},
       {"cold_targets", tuning.cold_withheld > 0 && tuning.real_cold_left_out
                            ? fmt::format("validation users whose target is one of {} training items whose "
                                          "IDs and events were withheld (every figure measured with them "
                                          "as the new items, the items without training events left out)",
                                          tuning.cold_withheld)
                        : tuning.cold_withheld > 0
                            ? fmt::format("validation users whose target is cold or one of {} training "
                                          "items whose IDs and events were withheld",
                                          tuning.cold_withheld)
                            : std::string("validation users whose target is cold")},
       {"points_tried", tuning.tried.size()},
       {"missing_tried", policies},
       {"tried", tried}},
      tuning.missing, std::move(cold), tuning.cold_weights);
}

}  // namespace llmrec
