#pragma once
/// One micro-batch of data-parallel training: forward, loss and backward,
/// with per-rank or global (all-gathered) negatives. Pure of the loop around
/// it, so that equivalence tests can drive it directly.
///
/// Loss scaling. A micro-step's loss on rank r is
///   loss_r = W / (M * N) * sum_{i on r} w_i * nll_i
/// where N is the number of examples of this micro-step on all ranks, W the
/// world size and M the micro-batches per optimizer step. The reducer
/// averages over ranks, so the optimizer sees the gradient of
///   (1 / M) sum_micro (1 / N) sum_{all i} w_i nll_i,
/// the same whatever the world size: W ranks x batch B equal 1 rank x batch
/// W*B (global negatives) or 1 rank accumulating the W batches (local).
///
/// With AdaLoRA each micro-step also adds penalty / M on every rank (the
/// adapters' orthogonality penalty, RecommenderImpl::adapter_regulariser),
/// in the same backward pass, so the average is the penalty once per step.
///
/// Global negatives. Each rank's candidate keys (A l) are all-gathered; the
/// loss uses the gathered copy as a leaf; its gradient is computed first
/// (only the loss head, no parameters), summed over ranks (one all-reduce),
/// and each rank returns its own slice to its keys in the one backward pass
/// through the item tower. So a rank's items get the gradient of every
/// rank's users, and all collectives are issued in the same order on every
/// rank (even one with an empty batch).

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/sampler.h"
#include "distributed/communicator.h"
#include "distributed/gradient_reducer.h"
#include "models/recommender.h"

namespace llmrec {

/// The pooled encoder output (RecommenderImpl::text_features) of each item,
/// encoded without a graph (the encoder in inference mode) the first time a
/// step needs the item, and kept:
/// - a frozen encoder (model.bert.freeze) is a fixed function of the text,
///   so the kept rows are what encoding again would give, for the whole run:
///   a step costs item_proj and the ID vectors, not the encoder;
/// - a trainable encoder with train.item_cache_refresh N: the kept rows are
///   stale keys; the second `features` encodes the batch's own items again
///   with a graph for the encoder's gradient; clear() every N steps.
///   The table is kept in training checkpoints (state / restore), so a
///   resumed run continues with the same stale rows.
class TextFeatureCache {
 public:
  /// Items are dataset ids in [0, num_items).
  explicit TextFeatureCache(std::int64_t num_items) : num_items_(num_items) {}
  /// The features [U, H] (float32, no graph) of items `item_ids` [U] whose
  /// texts are `tokens`, `mask` [U, L]: kept rows, the others encoded and kept.
  torch::Tensor features(Recommender& model, const torch::Tensor& item_ids, const torch::Tensor& tokens,
                         const torch::Tensor& mask);
  /// The same, with rows `fresh` [F] (indices into item_ids) encoded now
  /// with a graph for the encoder's gradient, which flows through those rows
  /// alone, times `weight` [F]; the values returned are still the kept rows'
  /// (every candidate scored from features of one age, none told apart by
  /// dropout).
  torch::Tensor features(Recommender& model, const torch::Tensor& item_ids, const torch::Tensor& tokens,
                         const torch::Tensor& mask, const torch::Tensor& fresh, const torch::Tensor& weight);
  /// Forgets every row: each is encoded again when next needed.
  void clear();
  /// Items kept.
  std::int64_t size() const { return kept_; }
  /// The table [num_items, H] float32 and its kept rows [num_items] uint8
  /// (undefined before the first row); restore() takes them back (IoError
  /// naming `what` unless they are [num_items, width] and [num_items]).
  std::pair<torch::Tensor, torch::Tensor> state() const;
  void restore(const torch::Tensor& table, const torch::Tensor& kept, std::int64_t width,
               const std::string& what);

 private:
  std::int64_t num_items_;
  std::int64_t kept_ = 0;
  torch::Tensor table_;      ///< [num_items, H]
  torch::Tensor kept_rows_;  ///< [num_items] bool
};

struct StepContext {
  Communicator* comm = nullptr;        ///< null = one process
  GradientReducer* reducer = nullptr;  ///< null = no reduction (one process)
  bool global_negatives = false;
  int micro_batches = 1;
  int text_len = 0;  ///< tokens fed to the item tower (<= the dataset's)
  /// Items that get an ID vector (model.item_id_embedding): not cold.
  const std::vector<std::uint8_t>* cold = nullptr;
  std::int64_t num_items = 0;
  /// Where the model is; the batch (CPU, pinned for a GPU) is copied there.
  torch::Device device = torch::kCPU;
  /// Forward pass under bf16 autocast on `device` (run.precision: bf16).
  bool bf16 = false;
  /// With a frozen encoder or train.item_cache_refresh: the items' kept
  /// encoder features; null = encode every candidate at every step.
  TextFeatureCache* text_cache = nullptr;
  /// Every rank's batch holds the same items (model.loss.negatives: all,
  /// local negatives, no kept features): each rank encodes a contiguous
  /// share of them, the vectors are all-gathered, and their gradient,
  /// summed over the ranks, goes back into each rank's share (exact; the
  /// item tower's cost divided by the ranks). Collective on every micro-step.
  bool shard_items = false;
};

struct MicroStepResult {
  double loss_sum = 0;        ///< sum of w_i nll_i over this rank's examples
  std::int64_t examples = 0;  ///< this rank's examples
  std::int64_t global_examples = 0;
  double forward_s = 0;   ///< up to the loss (with global negatives: their all-gathers too)
  double backward_s = 0;  ///< the rest: backward, with the reducer's overlapped launches
};

/// Forward and backward of one micro-batch. With `sync` false the backward
/// runs inside the reducer's no_sync (gradient accumulation).
MicroStepResult train_micro_step(Recommender& model, const Batch& batch, const StepContext& ctx, bool sync);

/// The batch's tensors on `device` (asynchronous copies from pinned memory).
Batch batch_to(const Batch& batch, const torch::Device& device);

/// The examples [begin, end) of `batch` as a batch of their own (items
/// re-indexed, negatives kept). For tests and for splitting batches.
Batch batch_slice(const Batch& batch, std::int64_t begin, std::int64_t end);

}  // namespace llmrec
