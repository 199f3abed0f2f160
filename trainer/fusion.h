#pragma once
/// Score fusion: several scorers (the model and CF baselines) combined as
///
///   s(u, i) = sum_k w_k z_k(u, i),   z_k(u, i) = (s_k(u, i) - mean_k(u)) / std_k(u)
///
/// where mean_k(u) and std_k(u) (population standard deviation) are taken
/// over user u's finite scores of scorer k across the whole catalogue. The
/// standardisation puts scorers of different scales (counts, similarities,
/// logits) on one scale per user before weighting. A row with std 0 gives
/// z = 0 (that scorer cannot tell the items apart for this user); a -inf
/// score ("never") stays -inf in the fused score when its weight is > 0;
/// components of weight 0 are not scored at all.
///
/// Missing scores (FusionMissing::kRenormalise): a collaborative component
/// (Scorer::scores_cold_items() false) knows nothing of an item without
/// training events (a cold item); its low score there is absence of
/// evidence, and fusing it as scored buries every cold item. With
/// kRenormalise such an item's fused score is the weighted sum over the
/// components that can score it, scaled to the full weight:
///
///   s(u, i) = (W / W_i) sum_{k scores i} w_k z_k(u, i),   W = sum_k w_k,  W_i = sum_{k scores i} w_k
///
/// (0 when W_i = 0). Warm items are unchanged. Tuning tries both policies.
///
///   FusedScorer fused({{model, 1.0}, {itemknn, 0.5}});
///   FusionTuning t = fusion_tune({{model, 1.0}, {itemknn, 1.0}}, 0, valid_evaluator);
///   FusedScorer best(with_weights(components, t.weights));

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/evaluation.h"
#include "trainer/scorer.h"

namespace llmrec {

/// Weights the tuning tries for each non-reference component (the
/// reference keeps its weight 1).
const std::vector<double>& fusion_grid();

struct FusionComponent {
  std::shared_ptr<Scorer> scorer;
  double weight = 1.0;
};

/// How a component's score of an item it cannot score enters the fusion.
enum class FusionMissing {
  kScored,       ///< as the component scored it (its z of 0 events)
  kRenormalise,  ///< left out; the other components' sum scaled to the full weight
};
const char* fusion_missing_name(FusionMissing m);
/// "scored" | "renormalise"; ConfigError naming `what` otherwise.
FusionMissing fusion_missing_parse(const std::string& name, const std::string& what);

/// Pure: z-standardises one row of `n` scores into `z` (see above).
/// Throws Error for NaN or +inf.
void fusion_standardise(const float* scores, std::int64_t n, float* z);

/// Pure: out[i] = sum_k weights[k] z[k][i] in double, components in order,
/// skipping weight 0; -inf when a weighted z is -inf. `missing` (empty, or
/// one entry per component: nullptr or an [n] mask, 1 = this component
/// cannot score item i) renormalises as above: a missing z is left out
/// (even -inf) and the sum of the others is scaled by W / W_i.
void fusion_combine(const std::vector<const float*>& z, const std::vector<double>& weights, std::int64_t n,
                    float* out, const std::vector<const std::uint8_t*>& missing = {});

class FusedScorer : public Scorer {
 public:
  /// At least one component with a positive weight; weights >= 0.
  /// `tuning` (optional) is recorded in params() under "tuning". With
  /// kRenormalise, `cold` ([num_items], 1 = no training event) is where the
  /// components with scores_cold_items() false are missing.
  explicit FusedScorer(std::vector<FusionComponent> components, std::string name = "fusion",
                       nlohmann::json tuning = nullptr, FusionMissing missing = FusionMissing::kScored,
                       std::vector<std::uint8_t> cold = {});
  std::string name() const override { return name_; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;
  const std::vector<FusionComponent>& components() const { return components_; }
  FusionMissing missing() const { return missing_; }

 private:
  std::vector<FusionComponent> components_;
  std::string name_;
  nlohmann::json tuning_;
  FusionMissing missing_;
  std::vector<std::uint8_t> cold_;
};

/// What fusion_tune found.
struct FusionTuning {
  std::vector<double> weights;  ///< best weights, one per component
  FusionMissing missing = FusionMissing::kScored;  ///< best policy
  double ndcg10 = 0;            ///< validation NDCG@10 with them
  std::vector<std::vector<double>> tried;  ///< every grid point, in grid order
  std::vector<FusionMissing> tried_missing;  ///< its policy
  std::vector<double> tried_ndcg10;        ///< its validation NDCG@10
};

/// Collective: grid search over the weights on `valid` (an Evaluator of the
/// validation split), maximising NDCG@10. Component `reference` keeps
/// weight 1; every other one tries each value of fusion_grid() (Cartesian
/// product, the first component varying slowest), first with
/// FusionMissing::kScored, then (when some component has
/// scores_cold_items() false and the catalogue has cold items) the same
/// grid with kRenormalise. Each component scores each block once. Ties: the
/// first grid point in that order wins.
FusionTuning fusion_tune(const std::vector<FusionComponent>& components, std::size_t reference, Evaluator& valid);

/// The fused scorer with the tuned weights and policy; its params() record
/// the tuning. `cold` as in FusedScorer (valid.items().cold).
FusedScorer fused_with_tuning(std::vector<FusionComponent> components, const FusionTuning& tuning,
                              std::vector<std::uint8_t> cold);

}  // namespace llmrec
