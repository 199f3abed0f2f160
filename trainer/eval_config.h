#pragma once
/// The `eval:` section: how recommenders are evaluated (full ranking over
/// every item, docs/evaluation.md), which baselines run next to the model,
/// their parameters, the oracle of the synthetic shop, and score fusion.
///
///   eval:
///     k: [10, 20]
///     baselines: [popularity, itemknn, bpr]
///     oracle_dir: runs/quickstart/shop      # the `llmrec synth` output
///     itemknn: {neighbours: 100, shrink: 10, tune: true}    # tune: chosen on valid
///     bpr: {dim: 64, epochs: 30, lr: 0.05, reg: 0.003, seed: 1, tune: true}
///     tfidf: {profile_items: 20, max_df: 0.5}
///     fusion: {weights: {model: 1.0, itemknn: 0.5}, tune: false}
///
/// No tensors here: this header is read by the config tooling too.

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"

namespace llmrec {

/// Names of the baselines `eval.baselines` and `llmrec eval --baseline` accept.
inline const std::vector<std::string>& eval_baseline_names() {
  static const std::vector<std::string> names = {"popularity", "itemknn", "bpr", "tfidf", "oracle"};
  return names;
}

/// Largest cut-off K accepted in `eval.k`.
constexpr int kEvalMaxK = 10000;

/// `eval.k`: a non-empty list of distinct cut-offs in [1, kEvalMaxK].
inline ConfigCheck<std::vector<int>> eval_check_k() {
  return {[](const std::vector<int>& ks) {
            if (ks.empty()) return std::string("must list at least one cut-off");
            for (std::size_t i = 0; i < ks.size(); ++i) {
              if (ks[i] < 1 || ks[i] > kEvalMaxK)
                return fmt::format("must hold values in [1, {}]", kEvalMaxK);
              if (std::find(ks.begin(), ks.begin() + static_cast<std::ptrdiff_t>(i), ks[i]) !=
                  ks.begin() + static_cast<std::ptrdiff_t>(i)) {
                return fmt::format("must not repeat a value ({} twice)", ks[i]);
              }
            }
            return std::string();
          },
          fmt::format("distinct, each in [1, {}]", kEvalMaxK)};
}

/// `eval.baselines`: distinct names out of eval_baseline_names().
inline ConfigCheck<std::vector<std::string>> eval_check_baselines() {
  return {[](const std::vector<std::string>& names) {
            const auto& known = eval_baseline_names();
            for (std::size_t i = 0; i < names.size(); ++i) {
              if (std::find(known.begin(), known.end(), names[i]) == known.end()) {
                return fmt::format(
                    "must name baselines out of: popularity, itemknn, bpr, tfidf, oracle ('{}' is not one)",
                    names[i]);
              }
              if (std::count(names.begin(), names.end(), names[i]) > 1) {
                return fmt::format("must not repeat a name ('{}' twice)", names[i]);
              }
            }
            return std::string();
          },
          "out of: popularity, itemknn, bpr, tfidf, oracle"};
}

/// `eval.fusion.weights`: finite weights >= 0, at least one positive.
inline ConfigCheck<std::map<std::string, double>> eval_check_fusion_weights() {
  return {[](const std::map<std::string, double>& w) {
            bool positive = w.empty();
            for (const auto& [name, x] : w) {
              if (x < 0) return fmt::format("must not be negative ('{}' is {})", name, x);
              positive = positive || x > 0;
            }
            return positive ? std::string()
                            : std::string("must give at least one component a positive weight");
          },
          "weights >= 0, one > 0"};
}

/// `eval.itemknn`: item-item co-occurrence cosine with shrinkage.
struct EvalItemKnnConfig {
  int neighbours = 100;
  double shrink = 10.0;
  bool tune = true;

  template <class V>
  void visit(V& v) {
    v.field("neighbours", neighbours, "Most similar items kept per item (top-k of each similarity row)",
            config_range(1, 100000));
    v.field(
        "shrink", shrink,
        "Shrinkage: sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink), damping pairs seen by few users",
        config_range(0.0, 1e9));
    v.field("tune", tune,
            "Choose neighbours and shrink on the validation split (maximising NDCG@10) out of neighbours "
            "{50, 200, all items} x shrink {0, 10}; false = use neighbours and shrink as given");
  }
};

/// `eval.bpr`: BPR matrix factorisation trained on the training events.
struct EvalBprConfig {
  int dim = 64;
  int epochs = 30;
  double lr = 0.05;
  double reg = 0.003;
  std::int64_t seed = 1;
  bool tune = true;
  int tune_max_epochs = 300;
  int tune_eval_every = 10;
  int tune_patience = 5;

  template <class V>
  void visit(V& v) {
    v.field("dim", dim, "Factors per user and item", config_range(1, 4096));
    v.field("epochs", epochs, "Passes over the training events (one sampled negative per event and pass)",
            config_range(0, 100000));
    v.field("lr", lr, "SGD learning rate", config_range(1e-8, 10.0));
    v.field("reg", reg, "L2 regularisation of the factors and item biases touched by each step",
            config_range(0.0, 10.0));
    v.field("seed", seed,
            "Seed of the initialisation, the event order and the negatives (same model on every rank)");
    v.field("tune", tune,
            "Choose lr, reg and epochs on the validation split (maximising NDCG@10): lr {0.05, 0.2} x "
            "reg {0.0003, 0.003, 0.03}, each trained up to tune_max_epochs and evaluated every "
            "tune_eval_every epochs, its best evaluation kept; false = use lr, reg and epochs as given");
    v.field("tune_max_epochs", tune_max_epochs, "With tune: the most epochs one grid point trains",
            config_range(1, 100000));
    v.field("tune_eval_every", tune_eval_every, "With tune: epochs between two validation evaluations",
            config_range(1, 100000));
    v.field("tune_patience", tune_patience,
            "With tune: a grid point stops after this many evaluations in a row without a better NDCG@10",
            config_range(1, 100000));
  }
};

/// `eval.tfidf`: content baseline, cosine between TF-IDF vectors of the
/// items' WordPiece tokens and the mean vector of the user's recent items.
struct EvalTfidfConfig {
  int profile_items = 20;
  double max_df = 0.5;

  template <class V>
  void visit(V& v) {
    v.field("profile_items", profile_items,
            "History events (the most recent ones) whose TF-IDF vectors are averaged into the user's profile",
            config_range(1, 100000));
    v.field("max_df", max_df,
            "Terms (token ids) in more than this share of the catalogue's items are dropped (a stop list "
            "learnt from the catalogue)",
            config_range(1e-9, 1.0));
  }
};

/// `eval.cold_calibration`: how the model scores cold items (no training
/// event, so no ID vector): its text vector plus alpha times the mean ID
/// vector of its TF-IDF neighbours among the training items, and a score
/// shift b; alpha and b chosen on the validation split with the IDs of a
/// random share of the training items withheld (trainer/model_scorer.h).
struct EvalColdCalibrationConfig {
  bool enabled = true;
  double withhold = 0.05;
  std::int64_t seed = 1;
  int neighbours = 10;
  std::string real_cold = "rank";

  template <class V>
  void visit(V& v) {
    v.field("enabled", enabled,
            "Choose alpha and b on the validation split (maximising NDCG@10) out of alpha {0, 0.5, 1, 2} x "
            "b {0, 0.25, 0.5, 1, 1.5, 2, 3} x sigma (sigma: the mean per-user std of the scores); false = "
            "text vector only, no shift. Only for models with item_text and item_id_embedding");
    v.field("withhold", withhold,
            "Share of the training items whose ID vectors are withheld while alpha and b are chosen, so "
            "that they play new items next to the real cold ones",
            config_range(0.0, 0.5));
    v.field("seed", seed, "Seed of the draw of the withheld items (the same draw on every rank)");
    v.field("neighbours", neighbours,
            "Training items (most similar TF-IDF vectors of the item text) whose ID vectors a cold item "
            "borrows, weighted by cosine",
            config_range(1, 1000));
    v.field("real_cold", real_cold,
            "The items without training events while alpha and b are chosen: rank = scored as cold items "
            "next to the withheld ones (they were on sale in the validation period, a real shop's usual "
            "case); leave_out = left out of that ranking, so the withheld items alone play the new ones "
            "(new items that arrive after the validation period, as in the synthetic shop)",
            config_one_of({"rank", "leave_out"}));
  }
};

/// `eval.fusion`: weighted sum of per-user standardised scores.
struct EvalFusionConfig {
  std::map<std::string, double> weights;
  bool tune = false;
  double cold_tolerance = 0.01;

  template <class V>
  void visit(V& v) {
    v.field("weights", weights,
            "Scorers fused into one more row of the table, name -> weight (e.g. {model: 1.0, itemknn: 0.5}); "
            "each score is standardised per user first; {} = no fusion",
            eval_check_fusion_weights());
    v.field(
        "tune", tune,
        "Grid-search the weights on the validation split (maximising NDCG@10): the reference component "
        "(model if present, else the first name) keeps weight 1, the others try 0, 0.1, 0.25, 0.5, 1, 2, 4");
    v.field(
        "cold_tolerance", cold_tolerance,
        "Share of the best validation NDCG@10 the tuning may give up for new items: among the weightings "
        "within (1 - cold_tolerance) x the best, the one with the best validation NDCG@10 on cold targets "
        "(real ones and the training items eval.cold_calibration withholds) wins; 0 = the best NDCG@10 alone",
        config_range(0.0, 0.2));
  }
};

struct EvalConfig {
  std::vector<int> k = {10, 20};
  int batch_users = 256;
  std::string oracle_dir;
  std::vector<std::string> baselines = {"popularity", "itemknn", "bpr"};
  bool swap_histories = false;
  EvalItemKnnConfig itemknn;
  EvalBprConfig bpr;
  EvalTfidfConfig tfidf;
  EvalFusionConfig fusion;
  EvalColdCalibrationConfig cold_calibration;

  template <class V>
  void visit(V& v) {
    v.field("k", k,
            "Cut-offs K of Recall@K, NDCG@K, HitRate@K, coverage@K, diversity@K (the first one is "
            "shown first)",
            eval_check_k());
    v.field("batch_users", batch_users,
            "Users scored per block ([block, items] float scores in memory at once)",
            config_range(1, 1 << 20));
    v.field("oracle_dir", oracle_dir,
            "Directory of a `llmrec synth` shop (latent_items.csv, latent_users.csv, synth.json) the dataset "
            "was prepared from: adds the oracle (the true choice model) to `llmrec eval`; \"\" = none");
    v.field("baselines", baselines, "Baselines `llmrec eval` runs (oracle needs eval.oracle_dir)",
            eval_check_baselines());
    v.field("swap_histories", swap_histories,
            "Diagnostic: score each user as the next user of its block (that user's id and history), "
            "while the held-out item and the excluded items stay the user's own; the drop from the "
            "normal figures is what a scorer owes to knowing the user");
    v.section("itemknn", itemknn, "ItemKNN baseline: item-item co-occurrence cosine over training histories");
    v.section("bpr", bpr, "BPR-MF baseline: matrix factorisation, pairwise loss, uniform negatives");
    v.section("tfidf", tfidf,
              "TF-IDF baseline: cosine of item text vectors and the user's recent items' mean vector");
    v.section("fusion", fusion, "Score fusion: s = sum_k w_k z_k(u, i), z = score standardised per user");
    v.section("cold_calibration", cold_calibration,
              "The model's cold items: a score shift chosen on validation with some items' IDs withheld");
  }
};

}  // namespace llmrec
