#include "trainer/optimizer.h"

#include <cmath>

#include "common/error.h"

namespace llmrec {

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
  return std::make_unique<torch::optim::AdamW>(groups, options);
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

}  // namespace llmrec
