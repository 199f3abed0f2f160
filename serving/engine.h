#pragma once
/// The recommendation engine behind `llmrec recommend` and `llmrec serve`:
/// exact top-k over an export (serving/export_reader.h), with CF and
/// time-of-day fusion, filters, exclusions, MMR diversity re-ranking and
/// leave-one-out explanations. docs/serving.md states every formula.
///
///   auto engine = serving::RecommendEngine::open("runs/x/export.h5");
///   serving::RecommendRequest req;
///   req.user = "u12";
///   req.k = 10;
///   req.categories = {"Shoes"};
///   serving::Recommendation r = engine->recommend(req);   // r.items[0].item, .score
///
/// Contract:
///  - A request names a user (`user`) or gives a fresh history (`history`,
///    item ids oldest first), never both nor neither. The user vector is
///    `users/vectors` for a known user and the user tower on the last T
///    history items' `items/vectors` for a fresh history. A user id the
///    export does not know gets the popularity fallback (Recommendation::
///    fallback), not an error.
///  - model score s_i = keys_i . u (+ cold_shift for a cold item) for every
///    item (one BLAS product for all the requests of a batch). With fusion
///    active (cf_weight, popularity_weight or tfidf_weight > 0, or an hour
///    with hour_weight > 0) the ranking score is fusion_combine([z(model),
///    z(cf), z(popularity), z(tfidf), z(hour)], [1, cf_weight,
///    popularity_weight, tfidf_weight, hour_weight]) with the z-standardisation of export/fusion_math.h over
///    the whole catalogue; cold items take the weights of the export's missing-score policy (with
///    `cold_weights`, the export's own weights of model and tfidf, which requests do not change); otherwise
///    it is s_i itself. The default weights are the export's: evaluation's fusion row.
///  - Exact top-k of the eligible items (category filter, exclusions), a
///    higher score first, ties to the smaller item row. With diversity > 0
///    the k items are picked by MMR from the top 10k eligible items.
///  - Errors in a request are RequestError (HTTP status 400, or 404 for an
///    unknown id) whose message names the field. The engine is immutable
///    after construction: any number of threads may call it at once.

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/time_features.h"
#include "export/export_file.h"
#include "serving/ann_index.h"
#include "serving/quantised_keys.h"

namespace llmrec::serving {

/// Hours of the day in `items/hour_counts`.
constexpr int kHours = kExportHours;

constexpr int kDefaultK = 10;
constexpr int kMaxK = 1000;
/// Default weight of the time-of-day component when a request gives an hour.
constexpr double kDefaultHourWeight = 0.25;
/// Upper bound of cf_weight and hour_weight.
constexpr double kMaxWeight = 1000.0;
/// Latest time (unix seconds) a request may give: the year 5138.
constexpr std::int64_t kMaxRequestTime = 100000000000;
/// Longest fresh history a request may give.
constexpr std::size_t kMaxRequestHistory = 10000;
/// MMR picks from the top `kMmrPoolFactor * k` eligible items.
constexpr int kMmrPoolFactor = 10;
/// History items (and CF neighbours) an explanation lists.
constexpr std::size_t kExplainTop = 3;

/// An invalid request: `field` is the request field at fault ("" for the
/// request as a whole), `status` the HTTP status it maps to (400 invalid,
/// 404 unknown user or item id). what() names the field.
class RequestError : public Error {
 public:
  RequestError(int status, std::string field, const std::string& message);
  int status() const { return status_; }
  const std::string& field() const { return field_; }

 private:
  int status_;
  std::string field_;
};

enum class Exclude { kSeen, kPurchased, kNone };
const char* exclude_name(Exclude e);

struct RecommendRequest {
  std::optional<std::string> user;                  ///< a known user id, or
  std::optional<std::vector<std::string>> history;  ///< recent item ids, oldest first
  int k = kDefaultK;                                ///< 1..kMaxK
  std::vector<std::string> categories;              ///< exact matches; empty = every category
  Exclude exclude = Exclude::kSeen;
  std::optional<int> hour;  ///< 0..23: time-of-day context
  /// Unix seconds the recommendation is for: with a tower trained with time
  /// features (model.user.time_features), u gains the context vector of
  /// this moment (gap since the history's last event). Absent: no context
  /// vector (the time is unknown).
  std::optional<std::int64_t> time;
  /// Unix seconds of each item of `history` (fresh histories only; empty =
  /// unknown): the tower's slot time features.
  std::vector<std::int64_t> history_times;
  /// The request's context (column -> value) for a tower with context
  /// columns (model.user.context_columns): the query's values; a value
  /// training never saw counts as unknown. A column the tower does not
  /// read is an error.
  std::map<std::string, std::string> context;
  std::optional<double> hour_weight;        ///< default kDefaultHourWeight
  std::optional<double> cf_weight;          ///< default RecommendEngine::default_cf_weight()
  std::optional<double> popularity_weight;  ///< default RecommendEngine::default_popularity_weight()
  std::optional<double> tfidf_weight;       ///< default RecommendEngine::default_tfidf_weight()
  double diversity = 0;                     ///< MMR lambda in [0, 1]; 0 = off
  bool explain = false;
  /// "exact" (every item scored) or "hnsw" (the engine's approximate index
  /// proposes the items; see RecommendEngine). Default: "hnsw" when the
  /// engine has an index, else "exact".
  std::optional<std::string> search;
  /// Item rows of the user's events received since the export (serving's
  /// POST /events), oldest first: appended to the stored history, and the
  /// user vector computed from that history by the tower. A user the export
  /// does not know is ranked from these alone. Not a request field.
  std::vector<std::int32_t> live;
  /// Unix seconds of each `live` event (parallel to it; empty = unknown).
  std::vector<std::int64_t> live_times;
  /// The context of each `live` event (parallel to it; empty = unknown).
  std::vector<std::map<std::string, std::string>> live_context;
};

/// Leave-one-out contribution of one history item to an item's model score.
struct Contribution {
  std::int32_t item = -1;
  float value = 0;
};
/// One history item whose CF neighbours include the recommended item.
struct CfEvidence {
  std::int32_t item = -1;
  float similarity = 0;
};

struct RecommendedItem {
  std::int32_t item = -1;  ///< row in the export
  float score = 0;         ///< the ranking score (fused when fusion is active)
  float model_score = 0;   ///< keys_i . u
  float cf_score = 0;      ///< raw CF score (0 when cf_weight is 0)
  float hour_score = 0;    ///< raw time-of-day score (0 without an hour)
  float tfidf_score = 0;   ///< raw content score (0 when tfidf_weight is 0)
  /// With explain and TF-IDF rows in the export: the history's terms that
  /// add the most to this item's content score (its keywords that match).
  std::vector<std::string> matches;
  std::vector<Contribution> because;  ///< with explain: top kExplainTop, largest first
  std::vector<CfEvidence> cf;         ///< with explain and cf_weight > 0: top kExplainTop
};

struct Recommendation {
  std::int32_t user = -1;             ///< known user row, -1 for a fresh history
  std::vector<std::int32_t> history;  ///< the items the request's history resolved to
  int k = 0;
  Exclude exclude = Exclude::kSeen;
  std::optional<int> hour;
  double hour_weight = 0;  ///< as applied (0 without an hour)
  double cf_weight = 0;
  double popularity_weight = 0;
  double tfidf_weight = 0;
  double diversity = 0;
  bool explain = false;
  bool fused = false;  ///< scores are fused z-scores, not model scores
  /// "popularity" for a user id the export does not know (`unknown_user`):
  /// its items are ranked by their training events (scores are the
  /// counts), filters apply, nothing is excluded; "" otherwise.
  std::string fallback;
  std::string unknown_user;
  std::int64_t eligible = 0;     ///< items left after filters and exclusions
  std::string search = "exact";  ///< "exact" or "hnsw", as applied
  std::int64_t candidates = 0;   ///< with hnsw: the items the index proposed (the ranked pool)
  std::vector<RecommendedItem> items;
  double took_ms = 0;
};

struct SimilarRequest {
  std::string item;
  int k = kDefaultK;
  std::vector<std::string> categories;
  std::optional<double> cf_weight;  ///< default RecommendEngine::default_cf_weight()
};

struct SimilarItem {
  std::int32_t item = -1;
  float score = 0;   ///< ranking score (fused when cf_weight > 0)
  float cosine = 0;  ///< cosine of items/vectors
  float cf = 0;      ///< CF similarity (0 when not a neighbour)
};

struct SimilarResult {
  std::int32_t item = -1;
  int k = 0;
  double cf_weight = 0;
  std::vector<SimilarItem> items;
  double took_ms = 0;
};

/// Exact search of a request ranked by the model score alone (no fusion
/// component) scans int8 copies of the keys with a proven error bound and
/// scores exactly only the items the bound cannot rule out
/// (QuantisedKeys): the same items and scores as a full scan at a quarter
/// of the memory traffic. Fused requests score every item (one product).
///
/// Approximate search (docs/serving.md): with an AnnIndex over items/keys,
/// a request with search "hnsw" ranks only the pool the index proposes,
/// max(ef_search, 4 k) items (10 k with diversity) of the largest model
/// score, instead of scoring every item. The ranking of that pool is the
/// exact one: the same filters, exclusions and fusion, the model's
/// z-standardisation with its exact catalogue mean and deviation (from the
/// keys' mean and Gram matrix, O(d^2) per request); the other fusion
/// components still score the whole catalogue. The popularity fallback
/// (unknown user) is always exact.
class RecommendEngine {
 public:
  explicit RecommendEngine(std::shared_ptr<const ExportData> data,
                           std::optional<AnnOptions> ann = std::nullopt);
  ~RecommendEngine();
  RecommendEngine(const RecommendEngine&) = delete;
  RecommendEngine& operator=(const RecommendEngine&) = delete;

  /// read_export(path) and an engine on it. With a `pseudonym_key` (the
  /// key of `export --pseudonymise`), requests name users by their raw ids
  /// and the engine looks up their pseudonyms; ConfigError when the key is
  /// not the export's or the export holds raw ids. A pseudonymised export
  /// opened without the key knows its users by pseudonym only.
  /// With `ann`, the HNSW index over items/keys is built here (its build
  /// time: ann_index()->build_seconds()).
  static std::shared_ptr<const RecommendEngine> open(const std::string& path,
                                                     const std::string& pseudonym_key = "",
                                                     const std::optional<AnnOptions>& ann = std::nullopt);

  const ExportData& data() const { return *data_; }
  /// The approximate index; nullptr without one.
  const AnnIndex* ann_index() const { return ann_.get(); }
  /// The export's row of a requested user id ("" = -1 as unknown), through
  /// the pseudonym key when there is one.
  std::int32_t find_user(const std::string& id) const;

  /// One request (see the contract above).
  Recommendation recommend(const RecommendRequest& request) const;
  /// Several requests: every request is validated first (the first bad one
  /// throws), the fresh histories go through one batched tower forward and
  /// the user vectors of the fused requests through one matrix product with
  /// the keys (model-only requests take the quantised scan, hnsw ones the
  /// index).
  std::vector<Recommendation> recommend_batch(const std::vector<RecommendRequest>& requests) const;

  /// The k items nearest to `request.item` by cosine of items/vectors
  /// (fused with its CF neighbours when cf_weight > 0), the item excluded.
  SimilarResult similar(const SimilarRequest& request) const;

  /// u = tower(items/vectors of the last T of `items`), [d] floats; with
  /// time and context features, `times` (parallel to items) and `codes` (C
  /// context codes per item) give the slots' values, empty = unknown (the
  /// export's user vectors are this, without a query).
  std::vector<float> history_vector(const std::vector<std::int32_t>& items,
                                    const std::vector<std::int64_t>& times = {},
                                    const std::vector<std::int32_t>& codes = {}) const;

  /// CF score of every item for a history (docs/export-format.md): the sum
  /// over the distinct history items h of similarity(h, j), j among h's
  /// neighbours. [num_items] floats, accumulated in double.
  std::vector<float> cf_scores(const std::vector<std::int32_t>& history) const;

  /// Time-of-day score of every item for `hour`:
  /// log((hour_counts[i][hour] + 1) / (popularity_i + 24)).
  std::vector<float> hour_scores(int hour) const;

  /// The codes of the tower's context columns in `context` (nullptr: none),
  /// -1 where a column is absent or its value unknown.
  std::vector<std::int32_t> context_codes(const std::map<std::string, std::string>* context) const;

  /// The export's `fusion` weight of "itemknn" relative to "model"
  /// (itemknn / model when "model" > 0, else itemknn; 0 without "itemknn").
  double default_cf_weight() const { return default_cf_weight_; }
  /// The same for "popularity" and "tfidf" (0 without TF-IDF rows).
  double default_popularity_weight() const { return default_popularity_weight_; }
  double default_tfidf_weight() const { return default_tfidf_weight_; }

  /// Event type rows named "purchase" (case-insensitive).
  const std::vector<int>& purchase_types() const { return purchase_types_; }

 private:
  std::string pseudonym_key_;
  struct Resolved;
  Resolved resolve(const RecommendRequest& request) const;
  /// The request's checked settings (k, weights, hour, diversity, search).
  void resolve_options(const RecommendRequest& request, Resolved& r) const;
  /// The user's stored and live events, or the given history's items.
  void resolve_history(const RecommendRequest& request, Resolved& r) const;
  /// The items `exclude` removes (seen, purchased or none).
  void resolve_exclusions(const RecommendRequest& request, Resolved& r) const;
  struct Pool;
  struct Components;
  /// The fusion components a request uses (none: the model score alone).
  Components components(const Resolved& r) const;
  /// `pool` (the items to rank: hnsw's proposals, or the quantised scan's
  /// candidates) or nullptr (model_scores holds every item's score).
  void finish(const Resolved& r, const float* model_scores, const Pool* pool, Recommendation& out) const;
  /// A request's scores beside the model's: the fused score of every item
  /// (or popularity for the fallback) and the components explanations show.
  struct Fused;
  Fused fuse(const Resolved& r, const Components& comp, const float* model_scores, const Pool* pool) const;
  /// The items a request may get: filters and exclusions over the catalogue
  /// or over `pool`.
  std::vector<std::int32_t> candidates(const Resolved& r, const Pool* pool) const;
  /// Scores, keywords and the hour's score of each picked item.
  void describe_items(const Resolved& r, const std::vector<std::int32_t>& picked, const float* model_scores,
                      const Fused& f, Recommendation& out) const;
  Pool ann_pool(const Resolved& r, const float* u, std::vector<float>& scratch) const;
  Pool scan_pool(const Resolved& r, const float* u, std::vector<float>& scratch) const;
  std::vector<std::int32_t> mmr_select(const std::vector<std::int32_t>& pool, const float* score,
                                       std::size_t k, double lambda) const;
  void explain(const Resolved& r, bool use_cf, Recommendation& out) const;
  const std::vector<float>& hour_z(int hour) const;

  std::shared_ptr<const ExportData> data_;
  std::unique_ptr<AnnIndex> ann_;
  /// Exact search of a model-only request: the int8 scan with its bound.
  std::unique_ptr<QuantisedKeys> quantised_;
  std::vector<float> cold_offset_;  ///< [I] cold_shift on cold items, 0 elsewhere (empty: no shift)
  // With ann_: the model score's catalogue moments, s_i = k_i . u + b c_i
  // (b = cold_shift, c_i = cold flag): E[s] = u . mean_key + b f,
  // E[s^2] = u^T G u + 2 b u . cold_key_sum / I + b^2 f.
  std::vector<double> gram_;           ///< [d, d] G = K^T K / I
  std::vector<double> mean_key_d_;     ///< [d] mean of the keys
  std::vector<double> cold_key_mean_;  ///< [d] sum of the cold items' keys / I
  double cold_share_ = 0;              ///< f = cold items / I
  at::Tensor mean_key_;                ///< [d] mean of items/keys over the catalogue (explanations)
  double default_cf_weight_ = 0;
  double default_popularity_weight_ = 0;
  double default_tfidf_weight_ = 0;
  std::map<std::string, double> cold_weights_;  ///< the export's cold_weights relative to the model's weight
  std::vector<float> popularity_z_;             ///< z of items/popularity over the catalogue
  std::vector<int> purchase_types_;
  ContextSpec context_spec_;  ///< the tower's time and context features
  /// Per context column (ranker_context_columns): value -> code.
  std::vector<std::unordered_map<std::string, std::int32_t>> context_codes_;
  std::vector<float> vector_norms_;  ///< |items/vectors[i]|
  mutable std::array<std::once_flag, kHours> hour_once_;
  mutable std::array<std::vector<float>, kHours> hour_z_;
};

}  // namespace llmrec::serving
