#include "trainer/optimizer.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>

#include "common/cpu_features.h"
#include "common/error.h"

namespace llmrec {
namespace {

/// AdamW's per-step coefficients, as float32 (what its tensor operations
/// on float32 tensors use).
struct AdamWStep {
  float decay;  ///< 1 - lr x weight_decay
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bc2_sqrt;  ///< sqrt(1 - beta2^step)
  float eps;
  float neg_step;  ///< -lr / (1 - beta1^step)
};

/// Elements [0, n): p *= decay; m = m b1 + g (1 - b1); v = v b2 + (1 - b2) g g;
/// p += neg_step (m / (sqrt(v) / bc2_sqrt + eps)). No fused multiply-add, so
/// the vector and scalar forms round alike.
void adamw_base(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWStep& c) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float pi = p[i] * c.decay;
    const float mi = m[i] * c.beta1 + g[i] * c.one_minus_beta1;
    const float vi = v[i] * c.beta2 + c.one_minus_beta2 * g[i] * g[i];
    const float denom = std::sqrt(vi) / c.bc2_sqrt + c.eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + c.neg_step * (mi / denom);
  }
}

__attribute__((target("avx2"))) void adamw_avx2(float* p, const float* g, float* m, float* v, std::int64_t n,
                                                const AdamWStep& c) {
  const __m256 decay = _mm256_set1_ps(c.decay), b1 = _mm256_set1_ps(c.beta1),
               omb1 = _mm256_set1_ps(c.one_minus_beta1), b2 = _mm256_set1_ps(c.beta2),
               omb2 = _mm256_set1_ps(c.one_minus_beta2), bc2 = _mm256_set1_ps(c.bc2_sqrt),
               eps = _mm256_set1_ps(c.eps), step = _mm256_set1_ps(c.neg_step);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(gi, omb1));
    const __m256 vi =
        _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_mul_ps(step, _mm256_div_ps(mi, denom))));
  }
  adamw_base(p + i, g + i, m + i, v + i, n - i, c);
}

bool fusable(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && !t.is_sparse() &&
         t.is_contiguous();
}

}  // namespace

torch::Tensor FusedAdamW::step(LossClosure closure) {
  for (auto& group : param_groups()) {
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad())
      return torch::optim::AdamW::step(std::move(closure));
    for (const auto& p : group.params()) {
      if (p.grad().defined() && (!fusable(p) || !fusable(p.grad())))
        return torch::optim::AdamW::step(std::move(closure));
    }
  }
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state()[c10::guts::to_string(p.unsafeGetTensorImpl())];
      if (!slot) {  // as AdamW: zero moments, step 0
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        slot = std::move(fresh);
      }
      auto& st = static_cast<torch::optim::AdamWParamState&>(*slot);
      if (!st.exp_avg().is_contiguous()) st.exp_avg(st.exp_avg().contiguous());
      if (!st.exp_avg_sq().is_contiguous()) st.exp_avg_sq(st.exp_avg_sq().contiguous());
      st.step(st.step() + 1);
      const auto t = static_cast<double>(st.step());
      AdamWStep c{};
      c.decay = static_cast<float>(o.weight_decay() != 0 ? 1 - o.lr() * o.weight_decay() : 1.0);
      c.beta1 = static_cast<float>(beta1);
      c.one_minus_beta1 = static_cast<float>(1 - beta1);
      c.beta2 = static_cast<float>(beta2);
      c.one_minus_beta2 = static_cast<float>(1 - beta2);
      c.bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(beta2, t)));
      c.eps = static_cast<float>(o.eps());
      c.neg_step = static_cast<float>(-o.lr() / (1 - std::pow(beta1, t)));
      float* pp = p.data_ptr<float>();
      const float* gp = p.grad().data_ptr<float>();
      float* mp = st.exp_avg().data_ptr<float>();
      float* vp = st.exp_avg_sq().data_ptr<float>();
      const bool avx2 = cpu_has_avx2();
      at::parallel_for(0, p.numel(), 1 << 15, [&](std::int64_t begin, std::int64_t end) {
        (avx2 ? adamw_avx2 : adamw_base)(pp + begin, gp + begin, mp + begin, vp + begin, end - begin, c);
      });
    }
  }
  return loss;
}

std::vector<torch::Tensor> tensors_of(const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  std::vector<torch::Tensor> out;
  out.reserve(params.size());
  for (const auto& named : params) out.push_back(named.second);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> trainable_named_parameters(
    const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module.named_parameters()) {
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  }
  return out;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(
    const std::vector<std::pair<std::string, torch::Tensor>>& params, const TrainConfig& config) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [name, p] : params) (p.dim() <= 1 ? no_decay : decay).push_back(p);
  auto options = torch::optim::AdamWOptions(config.lr)
                     .betas({config.beta1, config.beta2})
                     .eps(config.eps)
                     .weight_decay(config.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
  auto none = options;
  none.weight_decay(0.0);
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(none));
  return std::make_unique<FusedAdamW>(groups, options);
}

std::int64_t warmup_steps(const TrainConfig& config, std::int64_t total_steps) {
  if (config.warmup < 1.0)
    return static_cast<std::int64_t>(std::floor(config.warmup * static_cast<double>(total_steps)));
  return static_cast<std::int64_t>(config.warmup);
}

double learning_rate(const TrainConfig& config, std::int64_t step, std::int64_t total_steps) {
  const std::int64_t warm = warmup_steps(config, total_steps);
  if (step < warm) return config.lr * static_cast<double>(step + 1) / static_cast<double>(warm);
  const double floor_lr = config.lr * config.min_lr_ratio;
  const std::int64_t span = std::max<std::int64_t>(total_steps - warm - 1, 1);
  const double t = std::min(1.0, static_cast<double>(step - warm) / static_cast<double>(span));
  if (config.schedule == "cosine")
    return floor_lr + (config.lr - floor_lr) * 0.5 * (1.0 + std::cos(M_PI * t));
  if (config.schedule == "linear") return floor_lr + (config.lr - floor_lr) * (1.0 - t);
  return config.lr;
}

void set_learning_rate(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

void release_gradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) p.mutable_grad() = torch::Tensor();
  }
}

}  // namespace llmrec
