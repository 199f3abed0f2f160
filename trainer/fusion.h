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

/// Pure: z-standardises one row of `n` scores into `z` (see above).
/// Throws Error for NaN or +inf.
void fusion_standardise(const float* scores, std::int64_t n, float* z);

/// Pure: out[i] = sum_k weights[k] z[k][i] in double, components in order,
/// skipping weight 0; -inf when a weighted z is -inf.
void fusion_combine(const std::vector<const float*>& z, const std::vector<double>& weights, std::int64_t n,
                    float* out);

class FusedScorer : public Scorer {
 public:
  /// At least one component with a positive weight; weights >= 0.
  /// `tuning` (optional) is recorded in params() under "tuning".
  explicit FusedScorer(std::vector<FusionComponent> components, std::string name = "fusion",
                       nlohmann::json tuning = nullptr);
  std::string name() const override { return name_; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

 private:
  std::vector<FusionComponent> components_;
  std::string name_;
  nlohmann::json tuning_;
};

/// What fusion_tune found.
struct FusionTuning {
  std::vector<double> weights;  ///< best weights, one per component
  double ndcg10 = 0;            ///< validation NDCG@10 with them
  std::vector<std::vector<double>> tried;  ///< every grid point, in grid order
  std::vector<double> tried_ndcg10;        ///< its validation NDCG@10
};

/// Collective: grid search over the weights on `valid` (an Evaluator of the
/// validation split), maximising NDCG@10. Component `reference` keeps
/// weight 1; every other one tries each value of fusion_grid() (Cartesian
/// product, the first component varying slowest). Each component scores
/// each block once. Ties: the first grid point in that order wins.
FusionTuning fusion_tune(const std::vector<FusionComponent>& components, std::size_t reference, Evaluator& valid);

/// The fused scorer with the tuned weights; its params() record the tuning.
FusedScorer fused_with_tuning(std::vector<FusionComponent> components, const FusionTuning& tuning);

}  // namespace llmrec
