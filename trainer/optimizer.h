#pragma once
/// AdamW with decay and no-decay groups, and the learning-rate schedule.

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainer/train_config.h"

namespace llmrec {

/// The parameters of `module` that require a gradient, with their names.
std::vector<std::pair<std::string, torch::Tensor>> trainable_named_parameters(
    const torch::nn::Module& module);

/// The tensors of `params` (name, tensor), in order.
std::vector<torch::Tensor> tensors_of(const std::vector<std::pair<std::string, torch::Tensor>>& params);

/// torch::optim::AdamW (same options, state and checkpoints) whose step()
/// updates each float32 CPU parameter in one pass over its four tensors
/// (weight decay, both moments and the parameter, element by element, AVX2
/// where the CPU has it) instead of AdamW's nine tensor operations, each a
/// pass of its own: for a model whose every weight is trained (pre-training)
/// that is most of the optimizer's time. The arithmetic is AdamW's in its
/// order, in float32, so results agree with it up to rounding and do not
/// depend on the thread count or the instruction set. Parameters on other
/// devices or of other dtypes, and amsgrad, take AdamW's own step.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// FusedAdamW over `params` (name, tensor): group 0 with weight decay, group 1
/// without (1-D tensors: biases, LayerNorm weights and such).
std::unique_ptr<torch::optim::AdamW> make_adamw(
    const std::vector<std::pair<std::string, torch::Tensor>>& params, const TrainConfig& config);

/// Warm-up steps of a run of `total_steps` (config.warmup < 1 is a share).
std::int64_t warmup_steps(const TrainConfig& config, std::int64_t total_steps);

/// Learning rate at optimizer step `step` (0-based) of `total_steps`:
/// linear warm-up from lr/warmup to lr, then cosine, linear or constant
/// decay to lr x min_lr_ratio at the last step. Pure.
double learning_rate(const TrainConfig& config, std::int64_t step, std::int64_t total_steps);

/// Sets every group's learning rate.
void set_learning_rate(torch::optim::AdamW& optimizer, double lr);

/// Leaves every parameter of `optimizer` without a gradient (PyTorch's
/// zero_grad(set_to_none=True)), after its step: the next backward pass
/// hands its gradient over instead of adding it into a zeroed one, which
/// saves a fill and an addition over every gradient per step.
void release_gradients(torch::optim::Optimizer& optimizer);

}  // namespace llmrec
