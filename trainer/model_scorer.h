#pragma once
/// The trained recommender as a Scorer: every catalogue item's vector l and
/// key A l computed once (in fixed blocks of items spread over the ranks and
/// all-gathered, so the result does not depend on the world size), then per
/// request the user vectors from the last T history items and s = u . (A l).
///
/// Cold items (no training event) have no ID vector. Their vector is their
/// text vector plus alpha times the mean ID vector of their text neighbours
/// among the warm items (TF-IDF cosine, tfidf_neighbours()), and their
/// scores get a shift b:
///
///   l_i = l_text(i) + alpha sum_j w_ij e_j,   s(u, i) = u . (A l_i) + b
///
/// (w_ij: the cosines of i's k nearest neighbours j, normalised to sum 1).
///
/// A text vector alone lands below the text + ID vectors of the warm items
/// it competes with; the neighbours lend a new item the collaborative
/// signal of the items it reads like. calibrate_cold() chooses alpha and b
/// on the validation split, with the IDs of some training items withheld.

#include <memory>
#include <optional>

#include "data/dataset.h"
#include "distributed/communicator.h"
#include "models/recommender.h"
#include "trainer/baselines.h"
#include "trainer/eval_config.h"
#include "trainer/evaluation.h"
#include "trainer/fusion.h"
#include "trainer/scorer.h"

namespace llmrec {

/// How the model scores the items that have no ID vector (see above).
struct ColdScoring {
  double shift = 0;                        ///< b
  double neighbour_weight = 0;             ///< alpha
  std::vector<ItemNeighbours> neighbours;  ///< one row per item (tfidf_neighbours); empty = none
};

class ModelScorer : public Scorer {
 public:
  /// Collective: every rank encodes its share of the items.
  /// `cold` applies to the items marked cold in `items`.
  ModelScorer(Recommender model, const ItemTable& items, int text_len, Communicator& comm,
              std::string name = "model", const ColdScoring& cold = {});

  std::string name() const override { return name_; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

  const at::Tensor& item_vectors() const { return item_vecs_; }  ///< [I, d] l
  const at::Tensor& item_keys() const { return item_keys_; }     ///< [I, d] A l
  /// [B, d] float32 on the CPU: the user vectors of the request's rows.
  at::Tensor user_vectors(const ScoreRequest& request);
  /// How cold items are scored (alpha, b and the neighbours).
  const ColdScoring& cold_scoring() const { return cold_; }
  /// The model it scores with.
  const Recommender& model() const { return model_; }
  /// Recorded in params() under "cold_calibration" (how the cold scoring was chosen).
  void set_calibration_record(nlohmann::json record) { calibration_ = std::move(record); }

 private:
  Recommender model_;
  std::string name_;
  std::int64_t history_;
  ColdScoring cold_;
  nlohmann::json calibration_;
  at::Tensor item_shift_;       ///< [I] float32: b on cold items, else 0; undefined when b = 0
  at::Tensor item_vecs_;        ///< float32, CPU
  at::Tensor item_vecs_model_;  ///< the same on the model's device and dtype
  at::Tensor item_keys_;
};

/// Items per encoding block (fixed, so that results do not depend on W).
constexpr std::int64_t kEncodeBlock = 256;

/// Item vectors of every item (eval mode, no gradient), blocks of
/// kEncodeBlock items dealt round-robin to the ranks and all-gathered.
/// `item_ids`: the dataset item id of each row of `items` (whose ID vector
/// it gets; rows marked cold get none), for a table that is not the whole
/// catalogue in id order (`llmrec export --update`); empty = the row index.
at::Tensor encode_all_items(Recommender& model, const ItemTable& items, int text_len, Communicator& comm,
                            const std::vector<std::int64_t>& item_ids = {});

/// [I, d] float32 on the CPU: row i = sum_j w_ij e_j over the neighbours j of
/// item i, w_ij = similarity / the row's sum (e_j: the model's ID vector of
/// item j, which must have one); rows without neighbours are 0.
at::Tensor neighbour_id_vectors(Recommender& model, const std::vector<ItemNeighbours>& neighbours);

/// What calibrate_cold() chose and saw.
struct ColdCalibration {
  ColdScoring scoring;          ///< for the real cold items (alpha, b and their neighbours)
  double scale = 0;             ///< sigma: mean over validation users of the std of their scores
  std::vector<double> weights;  ///< alpha tried
  std::vector<double> shifts;   ///< b / sigma tried
  std::vector<double> ndcg10;   ///< validation NDCG@10, alpha-major (withheld IDs)
  std::int64_t withheld = 0;    ///< training items whose ID vector was withheld
  std::int64_t cold_users = 0;  ///< validation users whose target was cold or withheld (withheld only with
                                ///< real_cold leave_out)
  std::string real_cold;        ///< eval.cold_calibration.real_cold when searched
  std::string skipped;          ///< why nothing was searched ("" = searched)
  nlohmann::json to_json() const;
  /// One line for the log: the choice and the curve.
  std::string summary() const;
};

/// The alphas and the multiples of sigma that calibrate_cold() tries.
const std::vector<double>& cold_weight_grid();
const std::vector<double>& cold_shift_grid();

/// Pure: the training items whose ID vectors the calibration withholds: a
/// seeded draw of round(share x warm items) of the items with cold == 0,
/// sorted; the same on every rank.
std::vector<std::int64_t> cold_withheld_items(const std::vector<std::uint8_t>& cold, double share,
                                              std::int64_t seed);

/// Collective: chooses how `model` scores cold items, on `valid` (the
/// validation split). The items of cold_withheld_items() lose their ID
/// vectors, so that they and the real cold items are scored as cold (text
/// vector, neighbours among the other items, shift); every (alpha, b =
/// sigma x g) of the grids is evaluated and the best validation NDCG@10
/// over all users wins (ties: the first in alpha-major order, i.e. the
/// smaller alpha, then the smaller shift), sigma being the mean per-user
/// standard deviation of the scores at alpha = b = 0. The neighbours come
/// from the TF-IDF vectors of the items' text (`vocab`, eval.tfidf.max_df).
/// With eval.cold_calibration.real_cold "leave_out" the items without
/// training events score -inf at every point (left out of the ranking), so
/// the withheld items alone are the new ones and cold_users counts theirs.
/// A model without both item text and ID vectors, or
/// eval.cold_calibration.enabled false, gets alpha = b = 0 without scoring.
/// Identical on every rank and world size.
ColdCalibration calibrate_cold(Recommender model, Evaluator& valid, int text_len,
                               const std::vector<std::string>& vocab);

/// Collective: calibrate_cold() on `valid`, its summary logged, then the
/// ModelScorer "model" of `items` with the chosen cold scoring and the
/// calibration recorded in its params() (what `train` and `eval
/// --checkpoint` put in their tables).
std::shared_ptr<ModelScorer> calibrated_model_scorer(Recommender model, Evaluator& valid,
                                                     const ItemTable& items, int text_len,
                                                     const std::vector<std::string>& vocab);

/// Collective: the validation world of calibrate_cold() for the fusion
/// tuning's cold-target figures (fusion.h, FusionColdWorld): the items of
/// cold_withheld_items() play new ones. The ModelScorer among `components`
/// is encoded again with their ID vectors withheld (its cold scoring: the
/// same shift b and alpha, their neighbours among the other items); every
/// collaborative component (scores_cold_items() false) has no evidence on
/// them (their scores set to the row's lowest finite score, what an item
/// without events gets from popularity and ItemKNN); the others are as
/// they are. With eval.cold_calibration.real_cold "leave_out", `left_out`
/// marks the real cold items (the tuning then happens in this world with
/// them out of the ranking). std::nullopt when no component is a ModelScorer of a model
/// with item text and ID vectors, eval.cold_calibration is disabled, or
/// nothing is withheld.
std::optional<FusionColdWorld> fusion_cold_world(const std::vector<FusionComponent>& components,
                                                 Evaluator& valid, const std::vector<std::string>& vocab);

}  // namespace llmrec
