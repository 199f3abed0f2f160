#include "models/loss.h"

#include <torch/torch.h>

#include <limits>

#include "common/error.h"

namespace llmrec {

namespace {

/// "Float [2, 3]" or "undefined", for error messages.
std::string shape_of(const at::Tensor& t) {
  return t.defined() ? c10::str(t.scalar_type(), " ", t.sizes()) : std::string("undefined");
}

void check_ids(const at::Tensor& ids, const char* what) {
  LLMREC_CHECK(ids.defined() && ids.dim() == 1 && ids.scalar_type() == at::kLong,
               "recommender loss: {} must be a 1-d int64 tensor of item ids, got {}", what, shape_of(ids));
}

}  // namespace

at::Tensor candidate_first_occurrence(const at::Tensor& cand_ids) {
  check_ids(cand_ids, "cand_ids");
  const std::int64_t C = cand_ids.size(0);
  at::Tensor valid = at::zeros({C}, cand_ids.options().dtype(at::kBool));
  if (C == 0) return valid;
  // A stable sort keeps equal ids in column order, so the first of a run of
  // equal ids in sorted order is the first occurrence.
  auto sorted = at::sort(cand_ids, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor& ids = std::get<0>(sorted);
  const at::Tensor& perm = std::get<1>(sorted);
  at::Tensor first = at::ones({C}, valid.options());
  if (C > 1) first.slice(0, 1).copy_(ids.slice(0, 1) != ids.slice(0, 0, C - 1));
  valid.index_put_({perm}, first);
  return valid;
}

at::Tensor candidate_positive_columns(const at::Tensor& cand_ids, const at::Tensor& target_ids) {
  check_ids(cand_ids, "cand_ids");
  check_ids(target_ids, "target_ids");
  const std::int64_t B = target_ids.size(0);
  const std::int64_t C = cand_ids.size(0);
  if (B == 0) return at::zeros({0}, target_ids.options());
  LLMREC_CHECK(C > 0, "recommender loss: {} targets but no candidates", B);
  auto sorted = at::sort(cand_ids, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor& ids = std::get<0>(sorted);
  const at::Tensor& perm = std::get<1>(sorted);
  // Leftmost match in sorted order = first occurrence in column order.
  const at::Tensor at_sorted = at::searchsorted(ids, target_ids).clamp_max(C - 1);
  const at::Tensor found = ids.index_select(0, at_sorted) == target_ids;
  if (!found.all().item<bool>()) {
    const std::int64_t missing =
        target_ids.masked_select(found.logical_not()).index({0}).item<std::int64_t>();
    LLMREC_CHECK(false,
                 "recommender loss: target item id {} is not among the {} candidates; every "
                 "user's target must be a candidate (add the batch's targets to the candidate set)",
                 missing, C);
  }
  return perm.index_select(0, at_sorted);
}

at::Tensor recommender_logits(const at::Tensor& user_vecs, const at::Tensor& cand_keys,
                              const at::Tensor& cand_ids, const LossOptions& options,
                              const at::Tensor& cand_log_q) {
  LLMREC_CHECK(user_vecs.defined() && user_vecs.dim() == 2,
               "recommender loss: user_vecs must be [B, d], got {}", shape_of(user_vecs));
  LLMREC_CHECK(cand_keys.defined() && cand_keys.dim() == 2 && cand_keys.size(1) == user_vecs.size(1),
               "recommender loss: cand_keys must be [C, d = {}], got {}", user_vecs.size(1),
               shape_of(cand_keys));
  check_ids(cand_ids, "cand_ids");
  LLMREC_CHECK(cand_ids.size(0) == cand_keys.size(0),
               "recommender loss: {} candidate ids for {} candidate keys", cand_ids.size(0),
               cand_keys.size(0));
  LLMREC_CHECK(options.temperature() > 0, "recommender loss: temperature must be > 0, got {}",
               options.temperature());

  at::Tensor z = at::matmul(user_vecs, cand_keys.t());
  if (options.temperature() != 1.0) z = z / options.temperature();
  if (options.logq_correction()) {
    LLMREC_CHECK(cand_log_q.defined() && cand_log_q.dim() == 1 && cand_log_q.size(0) == cand_keys.size(0),
                 "recommender loss: logq_correction needs cand_log_q [C = {}], got {}", cand_keys.size(0),
                 shape_of(cand_log_q));
    z = z - cand_log_q.to(z.scalar_type()).unsqueeze(0);
  }
  const at::Tensor valid = candidate_first_occurrence(cand_ids);
  return z.masked_fill(valid.logical_not().unsqueeze(0), -std::numeric_limits<double>::infinity());
}

LossResult recommender_loss(const at::Tensor& user_vecs, const at::Tensor& cand_keys,
                            const at::Tensor& cand_ids, const at::Tensor& target_ids,
                            const at::Tensor& weights, const LossOptions& options,
                            const at::Tensor& cand_log_q) {
  const at::Tensor z = recommender_logits(user_vecs, cand_keys, cand_ids, options, cand_log_q);
  const std::int64_t B = user_vecs.size(0);
  check_ids(target_ids, "target_ids");
  LLMREC_CHECK(target_ids.size(0) == B, "recommender loss: {} target ids for {} users", target_ids.size(0),
               B);
  LLMREC_CHECK(!weights.defined() || (weights.dim() == 1 && weights.size(0) == B),
               "recommender loss: weights must be [B = {}], got {}", B, shape_of(weights));

  LossResult result;
  result.positive_col = candidate_positive_columns(cand_ids, target_ids);
  if (B == 0) {
    result.nll = z.sum(1);                // [0], in the graph
    result.loss = (user_vecs.sum() * 0);  // zero, and backward still reaches the inputs
    return result;
  }
  result.nll = -at::log_softmax(z, 1).gather(1, result.positive_col.unsqueeze(1)).squeeze(1);
  const at::Tensor weighted =
      weights.defined() ? result.nll * weights.to(result.nll.scalar_type()) : result.nll;
  result.loss = weighted.sum() / static_cast<double>(B);
  return result;
}

}  // namespace llmrec
