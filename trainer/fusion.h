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
/// Cold items (no training event) take their own weights c_k:
///
///   s(u, i) = sum_k c_k z_k(u, i)   for a cold item i
///
/// A collaborative component (Scorer::scores_cold_items() false) knows
/// nothing of a cold item; its low score there is absence of evidence, and
/// fusing it as scored buries every cold item. The policies (FusionMissing):
///   kScored:       c_k = w_k (every component as it scored the item);
///   kRenormalise:  the collaborative components left out, the others scaled
///                  to the full weight: c_k = (W / W_c) w_k, W = sum_k w_k,
///                  W_c = sum over the components that score cold items
///                  (all c_k = 0 when W_c = 0);
///   kColdWeights:  c_k chosen on their own (tuned on validation), 0 for
///                  the collaborative components.
/// Warm items always take w_k. Tuning tries all three.
///
///   FusedScorer fused({{model, 1.0}, {itemknn, 0.5}});
///   FusionTuning t = tune_fusion({{model, 1.0}, {itemknn, 1.0}}, 0, valid_evaluator);
///   FusedScorer best(with_weights(components, t.weights));

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "export/fusion_math.h"
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

class FusedScorer : public Scorer {
 public:
  /// At least one component with a positive weight; weights >= 0.
  /// `tuning` (optional) is recorded in params() under "tuning". Unless the
  /// policy is kScored, `cold` ([num_items], 1 = no training event) marks
  /// the items that take the cold weights; kColdWeights takes them from
  /// `cold_weights` (one per component, >= 0).
  explicit FusedScorer(std::vector<FusionComponent> components, std::string name = "fusion",
                       nlohmann::json tuning = nullptr, FusionMissing missing = FusionMissing::kScored,
                       std::vector<std::uint8_t> cold = {}, const std::vector<double>& cold_weights = {});
  std::string name() const override { return name_; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;
  const std::vector<FusionComponent>& components() const { return components_; }
  FusionMissing missing() const { return missing_; }
  const std::vector<double>& cold_weights() const { return cold_weights_; }  ///< c_k, one per component

 private:
  std::vector<FusionComponent> components_;
  std::string name_;
  nlohmann::json tuning_;
  FusionMissing missing_;
  std::vector<std::uint8_t> cold_;
  std::vector<double> cold_weights_;
};

/// A validation world in which some training items play new ones: the
/// tuning's cold-target figures are measured there when one is given
/// (model_scorer.h, fusion_cold_world()), because a validation split holds
/// few cold targets or none.
struct FusionColdWorld {
  std::vector<std::shared_ptr<Scorer>> scorers;  ///< one per component, in this world
  std::vector<std::uint8_t> cold;                ///< [num_items]: the real cold items and the withheld ones
  std::int64_t withheld = 0;                     ///< training items playing new ones
  /// [num_items] or empty: items left out of this world's ranking (the real
  /// cold items, eval.cold_calibration.real_cold leave_out). When set, the
  /// whole tuning is measured here: every point's NDCG@10 over all users and
  /// its cold-target figure over the users whose target is withheld.
  std::vector<std::uint8_t> left_out;
};

/// What tune_fusion found.
struct FusionTuning {
  std::vector<double> weights;                     ///< best weights, one per component
  FusionMissing missing = FusionMissing::kScored;  ///< best policy
  std::vector<double> cold_weights;                ///< the cold items' weights of the best point
  double ndcg10 = 0;                               ///< validation NDCG@10 with them
  std::vector<std::vector<double>> tried;          ///< every grid point, in grid order
  std::vector<FusionMissing> tried_missing;        ///< its policy
  std::vector<std::vector<double>> tried_cold;     ///< its cold weights
  std::vector<double> tried_ndcg10;                ///< its validation NDCG@10
  std::vector<double> tried_cold_ndcg10;           ///< its validation NDCG@10 on the users with a cold target
  double cold_ndcg10 = 0;                          ///< that of the best point
  double cold_tolerance = 0;                       ///< eval.fusion.cold_tolerance it was chosen with
  std::int64_t cold_withheld = 0;   ///< training items withheld for the cold-target figures (0: none)
  bool real_cold_left_out = false;  ///< every figure measured in the world (FusionColdWorld::left_out)
};

/// Collective: grid search over the weights on `valid` (an Evaluator of the
/// validation split), maximising NDCG@10. Component `reference` keeps
/// weight 1; every other one tries each value of fusion_grid() (Cartesian
/// product, the first component varying slowest), first with
/// FusionMissing::kScored, then (when some component has
/// scores_cold_items() false and the catalogue has cold items) the same
/// grid with kRenormalise. Then (when the catalogue has cold items) the
/// best point's warm weights are kept and the cold weights of the
/// components that score cold items each try fusion_grid() (kColdWeights;
/// the first such component varying slowest). Each component scores each
/// block once per stage. The best point: the best validation NDCG@10 on
/// cold targets among the points within (1 - eval.fusion.cold_tolerance) x
/// the best validation NDCG@10 (ties: the better NDCG@10, then the first
/// grid point in that order). With `world`, the cold-target figures are
/// those of each point in that world (its scorers, its cold items) and the
/// NDCG@10 stays the real one; with `world->left_out` set, both figures are
/// the world's (NDCG@10 over all users, the cold-target one over the users
/// whose target is withheld), the left-out items out of every ranking.
FusionTuning tune_fusion(const std::vector<FusionComponent>& components, std::size_t reference,
                         Evaluator& valid, const FusionColdWorld* world = nullptr);

/// The fused scorer with the tuned weights and policy; its params() record
/// the tuning. `cold` as in FusedScorer (valid.items().cold).
FusedScorer fused_with_tuning(std::vector<FusionComponent> components, const FusionTuning& tuning,
                              std::vector<std::uint8_t> cold);

}  // namespace llmrec
