#pragma once
/// The recommender loss: softmax cross-entropy of each user's positive item
/// against a shared candidate set (docs/ranker.md, "Loss"). Pure functions
/// of tensors: the candidate set may be the batch's own items, sampled
/// negatives appended to them, or candidates all-gathered from every rank.
///
/// For users i = 1..B with vectors u_i, candidates c = 1..C with keys
/// k_c = A l_c and item ids id_c:
///
///   z_ic = u_i . k_c / temperature  -  [logq_correction] log q_c
///   z_ic = -inf where column c is not valid (below)
///   p_i  = softmax_c(z_i)[pos_i]
///   L    = -(1/B) sum_i w_i log p_i
///
/// Candidates are identified by item id. Column c is valid iff it is the
/// first occurrence of id_c in `cand_ids`; pos_i is the first column whose
/// id equals target_i. So an item is counted once whatever number of times
/// it occurs, and an item equal to a user's target is never that user's
/// negative (false-negative mask). Put the candidates whose keys should
/// receive the positive's gradient first (a rank's own items before those
/// gathered from other ranks, in-batch items before sampled negatives).
///
///   auto r = recommender_loss(u, keys, ids, targets, weights, LossOptions().temperature(0.1));
///   r.loss.backward();

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

namespace llmrec {

struct LossOptions {
  /// Logits are u . k / temperature (> 0).
  TORCH_ARG(double, temperature) = 1.0;
  /// Subtract log q_c from every candidate's logit (cand_log_q required).
  TORCH_ARG(bool, logq_correction) = false;
};

struct LossResult {
  at::Tensor loss;          ///< scalar: -(1/B) sum_i w_i log p_i
  at::Tensor nll;           ///< [B] -log p_i, unweighted (in the graph)
  at::Tensor positive_col;  ///< [B] int64: column of each user's positive
};

/// [C] bool: true at the first occurrence of each id of `cand_ids` [C] int64.
at::Tensor candidate_first_occurrence(const at::Tensor& cand_ids);

/// [B] int64: for each target id, the first column of `cand_ids` holding it.
/// Throws llmrec::Error naming the first target id that is not a candidate.
at::Tensor candidate_positive_columns(const at::Tensor& cand_ids, const at::Tensor& target_ids);

/// [B, C] logits z of the formula above (-inf at invalid columns).
/// `cand_log_q` [C] is used only with logq_correction (then required).
at::Tensor recommender_logits(const at::Tensor& user_vecs, const at::Tensor& cand_keys,
                              const at::Tensor& cand_ids, const LossOptions& options,
                              const at::Tensor& cand_log_q = {});

/// The loss. user_vecs [B, d] float; cand_keys [C, d] (A l per candidate);
/// cand_ids [C] int64; target_ids [B] int64, each present in cand_ids;
/// weights [B] >= 0 (undefined = all 1); cand_log_q [C] (logq_correction).
/// Every tensor on the device of user_vecs. B = 0 gives a zero loss.
LossResult recommender_loss(const at::Tensor& user_vecs, const at::Tensor& cand_keys,
                            const at::Tensor& cand_ids, const at::Tensor& target_ids,
                            const at::Tensor& weights, const LossOptions& options,
                            const at::Tensor& cand_log_q = {});

/// sum_i CE(x_i W^T + b, target_i): the softmax cross-entropy of a linear
/// layer over a large output (the masked-LM decoder over the vocabulary),
/// summed over the rows. x [M, H], weight [V, H], bias [V], target [M]
/// int64 in [0, V); differentiable in x, weight and bias. Equal, up to float
/// rounding, to cross_entropy(linear(x, weight, bias), target, sum), for a
/// fraction of its passes over the [M, V] logits: they are exponentiated in
/// place, and the backward pass folds the softmax's normalisation and the
/// target's -1 into its two products (dx = (E W) / s - W[t], dW = E^T (x /
/// s) - scatter(t, x), E = exp(logits - max), s its row sums) instead of
/// materialising log-softmax, its gradient and the one-hot. The [M, V]
/// buffer is the only one kept for the backward pass. Float32 CPU tensors
/// take a row kernel (bias, maximum, exp and sum in two passes over a row
/// in cache; AVX2 where the CPU has it, the same results without); others
/// (GPUs, float64) the same steps as tensor operations.
at::Tensor linear_cross_entropy_sum(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                    const at::Tensor& target);

}  // namespace llmrec
