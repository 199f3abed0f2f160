// AdaLoRA's rank allocator and orthogonal regulariser (see adalora.h).
#include "models/adalora.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>

#include "common/error.h"
#include "models/lora_linear.h"

namespace llmrec {
namespace {

using NamedAdapter = std::pair<std::string, LoraLinearImpl*>;

std::vector<NamedAdapter> adaptive_adapters(const torch::nn::Module& model) {
  std::vector<NamedAdapter> out;
  for (const auto& m : model.named_modules("", /*include_self=*/false)) {
    auto* linear = dynamic_cast<LoraLinearImpl*>(m.value().get());
    if (linear != nullptr && linear->adaptive()) out.emplace_back(m.key(), linear);
  }
  return out;
}

/// I = beta1 I + (1 - beta1) |p grad|; U = beta2 U + (1 - beta2) |ipt - I|
/// (PEFT's update_ipt: U uses the I just updated).
void smooth(const torch::Tensor& p, torch::Tensor& ipt, torch::Tensor& unc, const ModelAdaLoraConfig& s) {
  if (!p.grad().defined()) return;  // no gradient this step: nothing learned about it
  const torch::Tensor now = (p * p.grad()).abs();
  ipt.mul_(s.beta1).add_(now, 1.0 - s.beta1);
  unc.mul_(s.beta2).add_((now - ipt).abs(), 1.0 - s.beta2);
}

/// The score of each of an adapter's triplets: s(E_i) + mean_j s(A_ij) + mean_j s(B_ji).
torch::Tensor triplet_scores(const AdaLoraState& st) {
  const torch::Tensor e = (st.e_ipt * st.e_unc).view({-1});
  const torch::Tensor a = (st.a_ipt * st.a_unc).mean(/*dim=*/1);
  const torch::Tensor b = (st.b_ipt * st.b_unc).mean(/*dim=*/0);
  return e + (a + b);
}

/// Masks every adapter's triplets at or below the k-th smallest score over
/// all of them (k = init budget - budget; none when k <= 0).
void mask_to_budget(const std::vector<NamedAdapter>& adapters, std::int64_t init_budget,
                    std::int64_t budget) {
  std::vector<torch::Tensor> scores;
  for (const auto& item : adapters) scores.push_back(triplet_scores(item.second->ada));
  const std::int64_t k = init_budget - budget;
  double threshold = -std::numeric_limits<double>::infinity();
  if (k > 0) threshold = std::get<0>(torch::cat(scores).kthvalue(k)).item<double>();
  for (std::size_t i = 0; i < adapters.size(); ++i) {
    LoraLinearImpl& a = *adapters[i].second;
    const torch::Tensor keep = scores[i] > threshold;
    a.ada.keep.copy_(keep.to(a.ada.keep.scalar_type()));
    a.svd_e.masked_fill_(keep.logical_not().unsqueeze(1), 0.0);
  }
}

}  // namespace

AdaLoraBudget adalora_budget(const ModelAdaLoraConfig& s, std::int64_t init_budget,
                             std::int64_t target_budget, std::int64_t step) {
  AdaLoraBudget b;
  if (step <= s.tinit) {  // warm-up at the full rank
    b.budget = init_budget;
    b.mask = false;
  } else if (step > std::int64_t{s.total_step} - s.tfinal) {  // the final budget
    b.budget = target_budget;
    b.mask = true;
  } else {  // cubic decrease
    const double left =
        1.0 - static_cast<double>(step - s.tinit) / static_cast<double>(s.total_step - s.tfinal - s.tinit);
    b.budget =
        static_cast<std::int64_t>(static_cast<double>(init_budget - target_budget) * left * left * left +
                                  static_cast<double>(target_budget));
    b.mask = step % s.delta_t == 0;
  }
  return b;
}

void adalora_check_schedule(const ModelAdaLoraConfig& s, std::int64_t init_r) {
  std::vector<std::string> problems;
  if (s.target_r < 0 || s.target_r > init_r) {
    problems.push_back(fmt::format("model.lora.adaptive.target_r ({}) must be in [0, model.lora.r = {}]",
                                   s.target_r, init_r));
  }
  if (s.tinit < 0 || s.tfinal < 0 || s.delta_t < 1) {
    problems.push_back(
        fmt::format("model.lora.adaptive: tinit ({}) and tfinal ({}) must be >= 0, delta_t ({}) >= 1",
                    s.tinit, s.tfinal, s.delta_t));
  }
  if (std::int64_t{s.tinit} + s.tfinal >= s.total_step) {
    problems.push_back(fmt::format(
        "model.lora.adaptive: tinit ({}) + tfinal ({}) must be below the run's {} steps, which leaves no "
        "step for the budget to fall in",
        s.tinit, s.tfinal, s.total_step));
  }
  if (!(s.beta1 >= 0 && s.beta1 < 1) || !(s.beta2 >= 0 && s.beta2 < 1)) {
    problems.push_back(
        fmt::format("model.lora.adaptive: beta1 ({}) and beta2 ({}) must be in [0, 1)", s.beta1, s.beta2));
  }
  if (problems.empty()) return;
  std::string message = "invalid AdaLoRA schedule:";
  for (const auto& p : problems) message += "\n  " + p;
  throw ConfigError(message);
}

AdaLoraUpdate adalora_update_and_allocate(torch::nn::Module& model, const ModelAdaLoraConfig& s,
                                          std::int64_t step) {
  const std::vector<NamedAdapter> adapters = adaptive_adapters(model);
  LLMREC_CHECK(!adapters.empty(), "adalora_update_and_allocate: the model has no adaptive LoRA adapter");
  std::int64_t init_budget = 0;
  for (const auto& item : adapters) init_budget += item.second->adapter().r();
  const std::int64_t target_budget = std::int64_t{s.target_r} * static_cast<std::int64_t>(adapters.size());
  const std::int64_t final_step = std::int64_t{s.total_step} - s.tfinal;
  torch::NoGradGuard no_grad;
  AdaLoraUpdate u;
  if (step < final_step) {  // PEFT: the scores stop at the final allocation
    for (const auto& item : adapters) {
      LoraLinearImpl& a = *item.second;
      smooth(a.svd_a, a.ada.a_ipt, a.ada.a_unc, s);
      smooth(a.svd_b, a.ada.b_ipt, a.ada.b_unc, s);
      smooth(a.svd_e, a.ada.e_ipt, a.ada.e_unc, s);
    }
  }
  const AdaLoraBudget b = adalora_budget(s, init_budget, target_budget, step);
  u.budget = b.budget;
  if (step < final_step) {
    if (b.mask) mask_to_budget(adapters, init_budget, b.budget);
    u.masked = b.mask;
  } else if (step == final_step) {  // the final allocation, then the scores are no longer needed
    mask_to_budget(adapters, init_budget, b.budget);
    for (const auto& item : adapters) {
      AdaLoraState& st = item.second->ada;
      for (torch::Tensor* t : {&st.a_ipt, &st.a_unc, &st.b_ipt, &st.b_unc, &st.e_ipt, &st.e_unc}) t->zero_();
    }
    u.masked = true;
  } else {  // after it: the final pattern holds
    adalora_apply_rank_pattern(model);
    u.masked = true;
  }
  return u;
}

void adalora_apply_rank_pattern(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& item : adaptive_adapters(model)) {
    LoraLinearImpl& a = *item.second;
    a.svd_e.masked_fill_((a.ada.keep == 0).unsqueeze(1), 0.0);
  }
}

torch::Tensor adalora_orthogonal_regulariser(const torch::nn::Module& model) {
  const std::vector<NamedAdapter> adapters = adaptive_adapters(model);
  if (adapters.empty()) return {};
  torch::Tensor sum;
  for (const auto& item : adapters) {
    const torch::Tensor& a = item.second->svd_a;
    const torch::Tensor& b = item.second->svd_b;
    const torch::Tensor aat = torch::matmul(a, a.t());
    const torch::Tensor btb = torch::matmul(b.t(), b);
    const torch::Tensor term = (aat - torch::eye(aat.size(0), aat.options())).norm() +
                               (btb - torch::eye(btb.size(0), btb.options())).norm();
    sum = sum.defined() ? sum + term : term;
  }
  return sum / static_cast<double>(2 * adapters.size());
}

std::string adalora_rank_summary(const torch::nn::Module& model) {
  std::int64_t kept = 0, all = 0;
  std::vector<std::string> modules;
  for (const auto& [name, flags] : adalora_rank_pattern(model)) {
    const auto k = std::count(flags.begin(), flags.end(), true);
    kept += k;
    all += static_cast<std::int64_t>(flags.size());
    modules.push_back(fmt::format("{} {}", name, k));
  }
  return fmt::format("{} of {} rank-1 triplets kept ({})", kept, all, fmt::join(modules, ", "));
}

std::vector<std::pair<std::string, std::vector<bool>>> adalora_rank_pattern(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, std::vector<bool>>> out;
  for (const auto& [name, linear] : adaptive_adapters(model)) {
    const torch::Tensor keep = linear->ada.keep.to(torch::kCPU, torch::kFloat).contiguous();
    std::vector<bool> flags;
    for (std::int64_t i = 0; i < keep.numel(); ++i) flags.push_back(keep.data_ptr<float>()[i] != 0.0F);
    out.emplace_back(name, std::move(flags));
  }
  return out;
}

}  // namespace llmrec
