#pragma once
/// What evaluation (and fusion) asks of a recommender: scores over the whole
/// catalogue for a block of users, each given by its history.
///
/// The interface is model-agnostic: the trained model, the baselines
/// (trainer/baselines.h), the synthetic shop's oracle (trainer/oracle.h) and
/// a fusion of any of them (trainer/fusion.h) all answer the same request.
///
///   ScoreRequest req;
///   req.add_user(/*user=*/17, items, times, /*n=*/5, /*query_time=*/t);
///   at::Tensor s = scorer.score(req);   // [1, num_items] float32
///
/// Contract of score():
///  1. Returns a CPU float32 tensor of shape [request.size(), num_items]:
///     row b scores every dataset item for request row b, higher = better.
///     -inf means "never recommend" (e.g. an item not released yet at
///     query_time); NaN and +inf are errors, reported by the evaluation.
///  2. A row depends only on that row's fields (user, history, query_time),
///     never on the other rows of the block.
///  3. Evaluation calls score() the same number of times on every rank, in
///     the same order, the last calls possibly with an empty request (size 0,
///     which must return a [0, num_items] tensor). A scorer may therefore run
///     collectives inside score(), provided it runs the same ones for an
///     empty request.
///  4. Scorers do not see the held-out item: only what a live system would
///     know when the user asks (history, time).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llmrec {

/// A block of users to score. Histories are stored back to back (CSR):
/// row b's history is [history_offsets[b], history_offsets[b + 1]).
struct ScoreRequest {
  std::vector<std::int64_t> users;               ///< dataset user index of each row
  std::vector<std::int64_t> history_offsets{0};  ///< size() + 1
  std::vector<std::int32_t> history_items;       ///< dataset item ids, oldest first
  std::vector<std::int64_t> history_times;       ///< unix seconds, parallel to history_items
  std::vector<std::int64_t> query_times;         ///< unix seconds the recommendation is for
  /// Context columns (the dataset's data.columns.context) whose codes the
  /// two lists below hold, C = context_names.size() per event / row, -1 =
  /// unknown; both empty when C = 0.
  std::vector<std::string> context_names;
  std::vector<std::int32_t> history_context;  ///< C per history event, parallel to history_items
  std::vector<std::int32_t> query_context;    ///< C per row: the context of the moment recommended for
  /// Users' profile texts (a dataset prepared with data.users), else all
  /// empty and profile_len 0: profile_len tokens per row, and the real
  /// tokens of each (0 = no profile).
  int profile_len = 0;
  std::vector<std::int32_t> profile_tokens;
  std::vector<std::int32_t> profile_length;

  std::int64_t size() const { return static_cast<std::int64_t>(users.size()); }
  std::int64_t history_begin(std::int64_t row) const {
    return history_offsets[static_cast<std::size_t>(row)];
  }
  std::int64_t history_end(std::int64_t row) const {
    return history_offsets[static_cast<std::size_t>(row) + 1];
  }
  std::int64_t history_size(std::int64_t row) const { return history_end(row) - history_begin(row); }

  /// Appends a row: `n` history events (items and times, oldest first),
  /// with C context codes per event (`codes`) and for the query
  /// (`query_codes`) when context_names is not empty.
  void add_user(std::int64_t user, const std::int32_t* items, const std::int64_t* times, std::int64_t n,
                std::int64_t query_time, const std::int32_t* codes = nullptr,
                const std::int32_t* query_codes = nullptr) {
    users.push_back(user);
    history_items.insert(history_items.end(), items, items + n);
    history_times.insert(history_times.end(), times, times + n);
    history_offsets.push_back(static_cast<std::int64_t>(history_items.size()));
    query_times.push_back(query_time);
    const auto c = static_cast<std::int64_t>(context_names.size());
    if (c == 0) return;
    if (codes != nullptr) {
      history_context.insert(history_context.end(), codes, codes + n * c);
    } else {
      history_context.insert(history_context.end(), static_cast<std::size_t>(n * c), -1);
    }
    if (query_codes != nullptr) {
      query_context.insert(query_context.end(), query_codes, query_codes + c);
    } else {
      query_context.insert(query_context.end(), static_cast<std::size_t>(c), -1);
    }
  }

  /// With profile_len > 0, after add_user(): the row's profile (profile_len
  /// tokens, `length` real).
  void add_profile(const std::int32_t* tokens, std::int32_t length) {
    profile_tokens.insert(profile_tokens.end(), tokens, tokens + profile_len);
    profile_length.push_back(length);
  }
};

/// A recommender under evaluation. See the contract above.
class Scorer {
 public:
  virtual ~Scorer() = default;
  /// Short name: the row of the results table and the key in the result file.
  virtual std::string name() const = 0;
  /// The parameters that determine the scores, recorded in the result file.
  virtual nlohmann::json params() const = 0;
  /// [request.size(), num_items] float32 scores (contract above).
  virtual at::Tensor score(const ScoreRequest& request) = 0;
  /// False when this scorer's score of an item without training events
  /// carries no information (collaborative filtering from training events:
  /// such an item scores 0 because nobody was seen with it, not because it
  /// is a poor match). Fusion may then treat the score as missing
  /// (trainer/fusion.h, FusionMissing::kRenormalise).
  virtual bool scores_cold_items() const { return true; }
};

}  // namespace llmrec
