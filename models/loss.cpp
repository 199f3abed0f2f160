#include "models/loss.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "common/cpu_features.h"
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

namespace {

// exp(x) for x <= 0, as 2^n p(r) with n = floor(x log2(e) + 1/2) and
// r = x - n ln 2 (ln 2 in two parts), p a degree-7 minimax polynomial (the
// classic single-precision one, within about 1 ulp); x below -87.3 is taken
// as -87.3 (2^n stays a normal number: exp(-87.3) ~ 1e-38, nothing next to
// the row's maximum, which is exp(0) = 1). NaN stays NaN. The vector and
// scalar forms do the same float operations in the same order (no fused
// multiply-add), so they agree bit for bit.
constexpr float kExpLow = -87.3f, kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f,
                kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

float exp_nonpositive(float x) {
  if (std::isnan(x)) return x;
  x = std::max(kExpLow, x);
  const float n = std::floor(x * kLog2e + 0.5f);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = kP0;
  for (float c : {kP1, kP2, kP3, kP4, kP5}) p = p * r + c;
  const float y = (p * (r * r) + r) + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

__attribute__((target("avx2"))) __m256 exp_nonpositive8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(kExpLow), x);  // the second operand when x is NaN
  const __m256 n =
      _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _mm256_set1_ps(0.5f)));
  const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(kLn2Hi))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(kLn2Lo)));
  __m256 p = _mm256_set1_ps(kP0);
  for (float c : {kP1, kP2, kP3, kP4, kP5}) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
  const __m256 y =
      _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

/// One row of logits without their bias, e[0, V): e = exp(e + b - top),
/// top = max(e + b); returns top, the sum of the new row and e + b at
/// `target`.
struct RowSums {
  float top = 0, picked = 0;
  double sum = 0;
};

RowSums softmax_row_base(float* e, const float* b, std::int64_t v, std::int64_t target) {
  RowSums r;
  r.picked = e[target] + b[target];
  float top = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < v; ++j) {
    e[j] += b[j];
    top = std::max(top, e[j]);  // a NaN reaches the sum through exp below
  }
  float sum = 0;
  for (std::int64_t j = 0; j < v; ++j) {
    e[j] = exp_nonpositive(e[j] - top);
    sum += e[j];
  }
  r.top = top;
  r.sum = sum;
  return r;
}

__attribute__((target("avx2"))) RowSums softmax_row_avx2(float* e, const float* b, std::int64_t v,
                                                         std::int64_t target) {
  RowSums r;
  r.picked = e[target] + b[target];
  const std::int64_t body = v / 8 * 8;
  __m256 top8 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (std::int64_t j = 0; j < body; j += 8) {
    const __m256 z = _mm256_add_ps(_mm256_loadu_ps(e + j), _mm256_loadu_ps(b + j));
    _mm256_storeu_ps(e + j, z);
    top8 = _mm256_max_ps(top8, z);  // a NaN reaches the sum through exp below
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top8);
  float top = -std::numeric_limits<float>::infinity();
  for (float l : lanes) top = std::max(top, l);
  for (std::int64_t j = body; j < v; ++j) {
    e[j] += b[j];
    top = std::max(top, e[j]);
  }
  const __m256 t8 = _mm256_set1_ps(top);
  __m256 sum8 = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < body; j += 8) {
    const __m256 y = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(e + j), t8));
    _mm256_storeu_ps(e + j, y);
    sum8 = _mm256_add_ps(sum8, y);
  }
  _mm256_store_ps(lanes, sum8);
  float sum = 0;
  for (float l : lanes) sum += l;
  for (std::int64_t j = body; j < v; ++j) {
    e[j] = exp_nonpositive(e[j] - top);
    sum += e[j];
  }
  r.top = top;
  r.sum = sum;
  return r;
}

bool cpu_float(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
}

/// The forward pass on float32 CPU tensors: the product, then per row
/// (threads over rows) the bias, the maximum, exp and the sum in two passes
/// over a row that stays in cache. Returns (E, row sums, loss).
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                           const at::Tensor& bias, const at::Tensor& target) {
  const std::int64_t m = x.size(0), v = weight.size(0);
  at::Tensor e = at::mm(x, weight.t());
  at::Tensor sums = at::empty({m, 1}, x.options());
  std::vector<double> row_loss(static_cast<std::size_t>(m), 0.0);
  float* ep = e.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* sp = sums.data_ptr<float>();
  const std::int64_t* tp = target.data_ptr<std::int64_t>();
  const bool avx2 = cpu_has_avx2();
  at::parallel_for(0, m, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const RowSums r = (avx2 ? softmax_row_avx2 : softmax_row_base)(ep + i * v, bp, v, tp[i]);
      sp[i] = static_cast<float>(r.sum);
      row_loss[static_cast<std::size_t>(i)] =
          std::log(static_cast<double>(sp[i])) + static_cast<double>(r.top) - static_cast<double>(r.picked);
    }
  });
  double loss = 0;
  for (double l : row_loss) loss += l;
  return {e, sums, at::scalar_tensor(loss, x.options())};
}

struct LinearCrossEntropySum : public torch::autograd::Function<LinearCrossEntropySum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& target) {
    at::Tensor e, s, loss;
    if (cpu_float(x) && cpu_float(weight) && cpu_float(bias) && target.is_contiguous() &&
        target.device().is_cpu()) {
      std::tie(e, s, loss) = forward_cpu(x, weight, bias, target);
    } else {                               // the same with tensor operations (GPUs, other dtypes)
      e = at::addmm(bias, x, weight.t());  // [M, V] logits, exponentiated in place
      const at::Tensor picked = e.gather(1, target.unsqueeze(1));
      const at::Tensor top = e.amax(1, /*keepdim=*/true);
      e.sub_(top).exp_();
      s = e.sum(1, /*keepdim=*/true);
      loss = (s.log() + top - picked).sum();
    }
    ctx->save_for_backward({x, weight, target, e, s});
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& target = saved[2];
    const at::Tensor& e = saved[3];
    const at::Tensor g = grads[0];
    const at::Tensor scale = g / saved[4];  // [M, 1]: the upstream gradient over each row's sum
    at::Tensor gx, gw, gb;
    // d loss / d logits = g (softmax - onehot(target)) = E scale - g onehot.
    if (ctx->needs_input_grad(0)) gx = at::mm(e, weight).mul_(scale).sub_(weight.index_select(0, target) * g);
    if (ctx->needs_input_grad(1)) gw = at::mm(e.t(), x * scale).index_add_(0, target, x * (-g));
    if (ctx->needs_input_grad(2)) {
      gb = at::mv(e.t(), scale.squeeze(1)).index_add_(0, target, (-g).expand({target.size(0)}).contiguous());
    }
    return {gx, gw, gb, at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy_sum(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                    const at::Tensor& target) {
  LLMREC_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
               "linear cross-entropy: x [M, H] and weight [V, H] expected, got {} and {}", shape_of(x),
               shape_of(weight));
  LLMREC_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0),
               "linear cross-entropy: bias must be [V = {}], got {}", weight.size(0), shape_of(bias));
  LLMREC_CHECK(target.dim() == 1 && target.size(0) == x.size(0) && target.scalar_type() == at::kLong,
               "linear cross-entropy: target must be int64 [M = {}], got {}", x.size(0), shape_of(target));
  if (target.numel() > 0) {
    const auto [lo, hi] = at::aminmax(target);
    LLMREC_CHECK(lo.item<std::int64_t>() >= 0 && hi.item<std::int64_t>() < weight.size(0),
                 "linear cross-entropy: targets must lie in [0, {}), got [{}, {}]", weight.size(0),
                 lo.item<std::int64_t>(), hi.item<std::int64_t>());
  }
  return LinearCrossEntropySum::apply(x, weight, bias, target);
}

}  // namespace llmrec
