#pragma once
/// Distributed evaluation with full ranking (docs/evaluation.md).
///
/// For each user with a held-out event of the split ("valid" or "test"), the
/// scorer ranks EVERY catalogue item (no sampled negatives) except the
/// user's history (valid: the training events; test: the training events
/// and the validation event); the held-out item itself always stays in the
/// ranking. Metrics per K: Recall, NDCG, HitRate, catalogue coverage,
/// intra-list diversity, mean popularity of the recommended items; MRR over
/// the full rank; the same on the cold subset (users whose held-out item has
/// no training event). Definitions and the tie rule: trainer/metrics.h.
///
/// Distribution and determinism, in steps:
///  1. Users are cut into global blocks of `eval.batch_users` consecutive
///     users; rank r takes the contiguous blocks [nb r / W, nb (r+1) / W)
///     and reads only those users (DatasetFile::read_users). A block holds
///     the same users, in the same order, whatever the world size W.
///  2. Every rank calls Scorer::score() eval_shard(...).calls times (its
///     blocks, then empty requests), so scorers may use collectives.
///  3. Per-user metric values (doubles) are gathered from all ranks
///     (all_gather_v) and summed in user order on every rank; coverage counts
///     are integer sums (all_reduce). Every rank therefore returns the same
///     EvalResult, bitwise identical to W = 1.
///
///   Evaluator ev(file, comm, "test", config.eval);
///   EvalResult r = ev.evaluate(scorer);   // collective: call on every rank
///   if (comm.rank() == 0) write_eval_result(path, r, eval_protocol(file, "test", config.eval, yaml,
///   comm.size()));

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "distributed/communicator.h"
#include "trainer/eval_config.h"
#include "trainer/scorer.h"

namespace llmrec {

/// This rank's share of an evaluation (step 1 above).
struct EvalShard {
  std::int64_t user_begin = 0;   ///< first user of this rank
  std::int64_t user_end = 0;     ///< one past its last user
  std::int64_t block_begin = 0;  ///< first global block of this rank
  std::int64_t block_end = 0;    ///< one past its last block
  std::int64_t calls = 0;        ///< score() calls on every rank: the most blocks any rank has
};

/// Pure: the shard of `rank` out of `world` for `num_users` users in blocks
/// of `batch_users`.
EvalShard eval_shard(std::int64_t num_users, std::int64_t batch_users, int rank, int world);

/// The figures of one group of users (all, or the cold subset). Means over
/// the group's users; NaN when the group is empty (or, for diversity, when
/// the dataset has no categories).
struct EvalGroupMetrics {
  std::int64_t users = 0;
  double mrr = 0;
  std::vector<double> hit_rate;  ///< per K, in EvalConfig::k order
  std::vector<double> recall;    ///< == hit_rate with one held-out item per user
  std::vector<double> ndcg;
  std::vector<double> coverage;         ///< items in some top-K list of the group / catalogue size
  std::vector<double> diversity;        ///< share of top-K pairs with different categories
  std::vector<double> mean_popularity;  ///< mean training count of the top-K items
};

/// One segment of the users: NDCG@K and Recall@K (K: 10 when evaluated,
/// else the first cut-off) over the users whose history length, or whose
/// held-out item's training event count, falls in `range`.
struct EvalSegment {
  std::string by;     ///< "history_length" | "target_popularity"
  std::string range;  ///< "1-4", "200+", "0 (cold)", ...
  std::int64_t users = 0;
  double ndcg = 0;  ///< NaN when the segment is empty
  double recall = 0;
};

/// Pure: the segment of a history of `length` events ("0-2", "3-4", "5-9",
/// "10-19", "20-49", "50+"; a test user with at most 3 events has a history
/// of at most 2) and of a held-out item with `train_count`
/// training events ("0 (cold)", "1-9", "10-49", "50-199", "200+"); each
/// list in order.
const std::vector<std::string>& eval_history_segments();
const std::vector<std::string>& eval_popularity_segments();
std::size_t eval_history_segment(std::int64_t length);
std::size_t eval_popularity_segment(std::int64_t train_count);

struct EvalResult {
  std::string scorer;
  nlohmann::json params;
  std::string split;
  std::vector<int> k;
  std::int64_t num_items = 0;
  std::int64_t users = 0;            ///< users in the dataset
  std::int64_t users_evaluated = 0;  ///< users with a held-out event of the split
  std::int64_t users_skipped = 0;    ///< users without one (skipped, counted)
  std::int64_t repeat_targets = 0;   ///< held-out items the user had in its history (kept rankable)
  bool has_categories = false;       ///< the dataset has item categories (else no diversity)
  EvalGroupMetrics all;
  EvalGroupMetrics cold;              ///< users whose held-out item is cold (items/cold == 1)
  int segment_k = 10;                 ///< the K of the segments' figures
  std::vector<EvalSegment> segments;  ///< history-length segments, then target-popularity ones
  double seconds = 0;                 ///< wall time of evaluate() on the slowest rank
};

/// Every metric of a result, named as in the result file ("ndcg@10",
/// "mrr", "cold.recall@20", ...), in a fixed order. Diversity is left out
/// when the dataset has no categories.
std::vector<std::pair<std::string, double>> eval_figures(const EvalResult& result);

/// eval.swap_histories: row r of the result holds the user id and history of
/// row (r + 1) % rows of `request` (query times stay). A one-row request is
/// returned as it is.
ScoreRequest swap_histories(const ScoreRequest& request);

/// Evaluates scorers on one split; construction reads the item table and
/// this rank's users once. Every method that takes a Scorer is collective.
class Evaluator {
 public:
  Evaluator(const DatasetFile& file, Communicator& comm, std::string split, EvalConfig config);

  /// The full evaluation of `scorer` (collective).
  EvalResult evaluate(Scorer& scorer);

  /// One block of this rank's users that have a held-out event.
  struct Block {
    ScoreRequest request;
    std::vector<std::int32_t> targets;  ///< held-out item of each request row
  };
  /// score() calls every rank makes (EvalShard::calls).
  std::int64_t calls() const { return shard_.calls; }
  /// The block of call `call` in [0, calls()); empty past this rank's blocks.
  Block block(std::int64_t call) const;
  /// Collective: this rank's per-user rows (its users with a held-out event,
  /// in block order, `width` values each) from every rank, concatenated in
  /// user order; the same vector on every rank.
  std::vector<double> gather_user_rows(const std::vector<double>& local, int width);
  /// Checks that `scores` fits `block` (shape, dtype) and returns it
  /// contiguous; Error naming the scorer otherwise.
  at::Tensor check_scores(const at::Tensor& scores, const Block& block, const std::string& scorer) const;

  /// Scores of grid point `point` for `block`: [rows, items] float32.
  using PointScores = std::function<at::Tensor(const Block& block, int point)>;
  /// Collective: the mean NDCG@`k` over this split's users of each of
  /// `points` scorings, the objective of every validation tuning (fusion
  /// weights, baseline hyper-parameters). `scores` is called for every block
  /// (empty ones too) and, within it, every point in order, the same calls on
  /// every rank, so it may use collectives. Per-user values are gathered
  /// once and summed in user order: the same vector on every rank, and
  /// point p's value equals evaluate()'s NDCG@k of that scoring bit for bit.
  /// `label` names the scorings in errors. `cold_mean` (optional) receives
  /// the same mean over the users whose held-out item is cold (0 when none):
  /// cold in `cold_items` ([num_items], 1 = cold) when given, else in items().
  /// `cold_only`: only those users' rows are ranked (the others' scores are
  /// not read), and the returned means are theirs too.
  std::vector<double> mean_ndcg(int k, int points, const PointScores& scores, const std::string& label,
                                std::vector<double>* cold_mean = nullptr,
                                const std::vector<std::uint8_t>* cold_items = nullptr,
                                bool cold_only = false);
  /// Collective: mean_ndcg of each scorer (each scores every block once).
  std::vector<double> mean_ndcg(int k, const std::vector<Scorer*>& scorers);

  const ItemTable& items() const { return items_; }
  std::int64_t num_items() const { return static_cast<std::int64_t>(items_.cold.size()); }
  const std::string& split() const { return split_; }
  const EvalConfig& config() const { return config_; }
  Communicator& comm() { return comm_; }

 private:
  Communicator& comm_;
  std::string split_;
  EvalConfig config_;
  std::int64_t num_users_ = 0;
  EvalShard shard_;
  ItemTable items_;
  std::vector<std::int32_t> category_code_;  ///< per item: index of its category string
  bool has_categories_ = false;
  UserSlice slice_;
  std::vector<std::string> context_names_;  ///< the dataset's context columns (their codes are in slice_)
  int profile_len_ = 0;       ///< tokens per profile row of slice_.users (the dataset's text_len)
  std::int64_t skipped_ = 0;  ///< this rank's users without a held-out event
  std::int64_t repeats_ = 0;  ///< this rank's held-out items found in the history
};

/// One-shot form of Evaluator::evaluate (collective).
EvalResult evaluate(Scorer& scorer, const DatasetFile& file, Communicator& comm, const std::string& split,
                    const EvalConfig& config);

/// What a result file records about how its figures were made.
struct EvalProtocol {
  std::string dataset_path;
  std::string dataset_sha256;
  nlohmann::json
      dataset_settings;  ///< split method, filtering (data.*) and counts, from the file's attributes
  std::string split;     ///< valid | test
  std::string history;   ///< what is excluded from the ranking
  std::string ranking;   ///< "full ranking over N items, history excluded"
  std::vector<int> k;
  std::string config_sha256;  ///< SHA-256 of the resolved YAML
  int world_size = 1;
};

/// Builds the protocol; reads the whole dataset file for its SHA-256 (call
/// it on one rank).
EvalProtocol eval_protocol(const DatasetFile& file, const std::string& split, const EvalConfig& config,
                           const std::string& resolved_yaml, int world_size);

/// The result file as JSON: {"format": "llmrec-eval", "version": 1,
/// "protocol": {"dataset": path, "dataset_sha256": ..., "dataset_settings":
/// {...}, "split": ..., "ranking": ..., "k": [...], "scorers": [...],
/// "config_sha256": ..., ...}, "results": [{"scorer": ..., "params": ...,
/// "users": {...}, "all": {...}, "cold": {...}}, ...]} (docs/evaluation.md
/// has an example).
nlohmann::json eval_results_json(const std::vector<EvalResult>& results, const EvalProtocol& protocol);
/// Writes eval_results_json atomically (temporary file, then rename).
void write_eval_results(const std::string& path, const std::vector<EvalResult>& results,
                        const EvalProtocol& protocol);
void write_eval_result(const std::string& path, const EvalResult& result, const EvalProtocol& protocol);

/// A readable table, one row per result: NDCG@K and Recall@K for each K,
/// MRR, coverage, diversity and mean popularity at the first K, the cold
/// subset's NDCG and Recall at the first K, and the seconds taken.
std::string eval_results_table(const std::vector<EvalResult>& results);

}  // namespace llmrec
