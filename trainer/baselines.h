#pragma once
/// The baselines of the evaluation harness (docs/evaluation.md): popularity,
/// ItemKNN (item-item co-occurrence cosine), BPR matrix factorisation and
/// TF-IDF (content: the items' text tokens, no interactions, so it ranks
/// cold items too). Each learns only from the training events (never from
/// validation or test events) and gives the same scores on every rank and
/// for any world size. ItemKNN's and BPR's hyper-parameters are tuned on the
/// validation split by default (eval.itemknn.tune, eval.bpr.tune): small
/// grids, maximising NDCG@10, the same choice on every rank.
///
///   TrainingHistories h = gather_training_histories(file, comm);   // collective
///   ItemKnnScorer knn(h, {100, 10.0}, comm);                       // collective
///   BprScorer bpr(h, config.eval.bpr, comm);                       // collective
///   PopularityScorer pop(file.read_items().train_count);
///   TfidfScorer tfidf(file.read_items(), file.text_len(), file.vocab(), {20, 0.5});
///   Evaluator valid(file, comm, "valid", config.eval);
///   auto tuned = tune_itemknn(h, valid);                           // collective

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "distributed/communicator.h"
#include "export/tfidf_index.h"
#include "trainer/eval_config.h"
#include "trainer/evaluation.h"
#include "trainer/scorer.h"

namespace llmrec {

/// Every user's training events (items in time order), CSR by dataset user.
struct TrainingHistories {
  std::int64_t num_items = 0;
  std::vector<std::int64_t> offsets{0};  ///< users + 1
  std::vector<std::int32_t> items;

  std::int64_t num_users() const { return static_cast<std::int64_t>(offsets.size()) - 1; }
};

/// The training events of the users in `slice` (pure).
TrainingHistories training_histories_of(const UserSlice& slice, std::int64_t num_items);

/// Collective: each rank reads an even, contiguous share of the users and
/// the shares are all-gathered, so every rank holds all training histories.
TrainingHistories gather_training_histories(const DatasetFile& file, Communicator& comm);

/// score(u, i) = number of training events of item i. Ignores the history.
class PopularityScorer : public Scorer {
 public:
  explicit PopularityScorer(const std::vector<std::int64_t>& train_count);
  std::string name() const override { return "popularity"; }
  bool scores_cold_items() const override { return false; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

 private:
  std::vector<float> counts_;
};

struct ItemKnnOptions {
  int neighbours = 100;  ///< similarity row kept per item: its top `neighbours`
  double shrink = 10.0;
};

/// One item's kept neighbours, most similar first (ties: smaller id first).
struct ItemNeighbours {
  std::vector<std::int32_t> items;
  std::vector<float> similarity;
};

/// Pure: the similarity rows of items [begin, end) from the training
/// histories (each user's items taken as a set):
///   sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink),   j != i,
/// U_i = the users with a training event on i; only pairs with a common user,
/// top `neighbours` per row.
std::vector<ItemNeighbours> itemknn_rows(const TrainingHistories& histories, std::int64_t begin,
                                         std::int64_t end, const ItemKnnOptions& options);

/// score(u, j) = sum over the distinct items i of u's history of sim(i, j),
/// where j is among i's kept neighbours (else that term is 0).
class ItemKnnScorer : public Scorer {
 public:
  /// Collective: the rows are computed in contiguous item ranges, one per
  /// rank, and all-gathered (exact: each row is computed the same way
  /// wherever it is computed).
  ItemKnnScorer(const TrainingHistories& histories, const ItemKnnOptions& options, Communicator& comm);
  /// From precomputed rows (num_items of them).
  ItemKnnScorer(std::vector<ItemNeighbours> rows, const ItemKnnOptions& options);
  std::string name() const override { return "itemknn"; }
  bool scores_cold_items() const override { return false; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;
  const std::vector<ItemNeighbours>& rows() const { return rows_; }
  const ItemKnnOptions& options() const { return options_; }
  /// Records how the options were chosen: params()["tuning"].
  void set_tuning(nlohmann::json tuning) { tuning_ = std::move(tuning); }

 private:
  ItemKnnOptions options_;
  std::vector<ItemNeighbours> rows_;
  nlohmann::json tuning_;
};

/// The ItemKNN grid of eval.itemknn.tune: neighbours (0 = all items) and shrink.
const std::vector<int>& itemknn_tune_neighbours();
const std::vector<double>& itemknn_tune_shrinks();

/// Collective: ItemKNN at every point of the grid (neighbours x shrink, in
/// that order, neighbours varying fastest), each evaluated on `valid` (an
/// Evaluator of the validation split) by NDCG@10; returns the scorer of the
/// first best point, its params()["tuning"] listing every point. The rows
/// are computed once per shrink with every neighbour kept; the smaller
/// neighbourhoods are their prefixes (the same rows itemknn_rows gives).
std::shared_ptr<ItemKnnScorer> tune_itemknn(const TrainingHistories& histories, Evaluator& valid);

/// BPR-MF (Rendle et al. 2009): score(u, i) = p_u . q_i + b_i, trained by SGD
/// on ln sigmoid(x_ui - x_uj) over the training events (u, i), one negative
/// j drawn uniformly from the items u has no training event on, per event
/// and epoch; events visited in a seeded random order each epoch.
class BprScorer : public Scorer {
 public:
  /// Collective only to check the result: every rank trains the same model
  /// (its own arithmetic, no BLAS, deterministic for the seed), then the
  /// ranks compare a fingerprint of the factors (CommError if they differ).
  BprScorer(const TrainingHistories& histories, const EvalBprConfig& config, Communicator& comm);
  /// Trains without a communicator (one process).
  BprScorer(const TrainingHistories& histories, const EvalBprConfig& config);
  /// From trained factors (`config` says how they were trained).
  BprScorer(const EvalBprConfig& config, at::Tensor users, at::Tensor items, at::Tensor bias,
            std::vector<double> epoch_loss, nlohmann::json tuning = nullptr);
  std::string name() const override { return "bpr"; }
  bool scores_cold_items() const override { return false; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

  /// Mean training loss -ln sigmoid(x_ui - x_uj) of each epoch.
  const std::vector<double>& epoch_loss() const { return epoch_loss_; }
  /// User factors [users, dim], item factors [items, dim], item biases [items].
  const at::Tensor& user_factors() const { return users_; }
  const at::Tensor& item_factors() const { return items_; }
  const at::Tensor& item_bias() const { return bias_; }
  /// lr, reg and epochs as trained (the tuned ones after tune_bpr).
  const EvalBprConfig& config() const { return config_; }

 private:
  void train(const TrainingHistories& histories);

  EvalBprConfig config_;
  at::Tensor users_, items_, bias_;
  std::vector<double> epoch_loss_;
  nlohmann::json tuning_;
};

/// Pure: the TF-IDF matrix of every item of `items` (tokens [items, text_len],
/// the first length[i] of item i real). Terms are the token ids except those
/// of [PAD], [UNK], [CLS], [SEP] and [MASK] in `vocab`; tf = raw count of the
/// term in the item's tokens; terms in more than max_df of the items are
/// dropped; idf = ln((1 + N) / (1 + df)) + 1 over the N items (scikit-learn's
/// smooth idf); each row tf * idf is L2-normalised (an item without terms
/// keeps an empty row). Error when a token id is outside the vocabulary.
TfidfMatrix tfidf_matrix(const ItemTable& items, int text_len, const std::vector<std::string>& vocab,
                         const TfidfOptions& options);

/// Pure: the rows of `items` weighted with a given `idf` (that of
/// tfidf_matrix over another corpus: an export's items), as tfidf_matrix
/// weights its own; `idf` is carried into the result, df is left empty.
/// An item's row equals its tfidf_matrix row when `idf` is that matrix's.
TfidfMatrix tfidf_rows(const ItemTable& items, int text_len, const std::vector<std::string>& vocab,
                       const std::vector<double>& idf);

/// Pure: text neighbours. For each item i with query[i] == 1, the (at most)
/// k items j with query[j] == 0 whose TF-IDF vectors are the most similar to
/// i's (cosine > 0; most similar first, ties: the smaller id first), with
/// their cosines; one row per item of `m`, empty for items with query 0.
/// Error when query has another size than m's items or k < 1.
std::vector<ItemNeighbours> tfidf_neighbours(const TfidfMatrix& m, const std::vector<std::uint8_t>& query,
                                             int k);

/// Content baseline (the quality anchors' TF-IDF): TfidfIndex scores over
/// each request row's history. Needs no interactions: every catalogue item
/// has a vector, cold ones too. Pure, so identical on every rank.
class TfidfScorer : public Scorer {
 public:
  TfidfScorer(const ItemTable& items, int text_len, const std::vector<std::string>& vocab,
              const TfidfOptions& options);
  std::string name() const override { return "tfidf"; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

  const TfidfMatrix& matrix() const { return index_.matrix(); }
  const TfidfOptions& options() const { return options_; }
  /// TfidfIndex::top_terms (Error for an item outside the catalogue or k < 0).
  std::vector<std::pair<std::int32_t, float>> tfidf_top_terms(std::int64_t item, int k) const;

 private:
  TfidfOptions options_;
  TfidfIndex index_;
};

/// The BPR grid of eval.bpr.tune: learning rates and regularisations.
const std::vector<double>& bpr_tune_lrs();
const std::vector<double>& bpr_tune_regs();

/// Collective: BPR trained at every (lr, reg) of `lrs` x `regs` (lr varying
/// slowest; eval.bpr.tune uses bpr_tune_lrs() x bpr_tune_regs()) with
/// config's dim and seed, each for up to
/// config.tune_max_epochs epochs, evaluated on `valid` (validation split) by
/// NDCG@10 after every config.tune_eval_every epochs and after the last one;
/// a point stops after config.tune_patience evaluations in a row without a
/// better figure. Returns the factors of the best evaluation (first best
/// point, earliest epoch), with config().lr/reg/epochs set to it: exactly
/// what BprScorer(histories, config()) trains. params()["tuning"] lists
/// every point. Ranks compare a digest of the result (CommError if they differ).
std::shared_ptr<BprScorer> tune_bpr(const TrainingHistories& histories, const EvalBprConfig& config,
                                    Evaluator& valid, const std::vector<double>& lrs = bpr_tune_lrs(),
                                    const std::vector<double>& regs = bpr_tune_regs());

/// Collective: the named baselines, in the order given, out of
/// eval_baseline_names() (popularity, itemknn, bpr, tfidf, oracle; the oracle reads
/// config.oracle_dir). Training histories are gathered once when ItemKNN or
/// BPR needs them. ItemKNN and BPR are tuned on the validation split
/// (tune_itemknn, tune_bpr) when config.itemknn.tune / config.bpr.tune is
/// set, whatever split they are then evaluated on; otherwise they use the
/// configured values. ConfigError for an unknown name or an oracle without
/// eval.oracle_dir.
std::vector<std::shared_ptr<Scorer>> create_baseline_scorers(const std::vector<std::string>& names,
                                                             const DatasetFile& file, Communicator& comm,
                                                             const EvalConfig& config);

}  // namespace llmrec
