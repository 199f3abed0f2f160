// Linear layer with an optional LoRA adapter (see lora_linear.h).
#include "models/lora_linear.h"

#include <torch/torch.h>

#include <cmath>

#include "common/error.h"

namespace llmrec {

LoraLinearImpl::LoraLinearImpl(const LoraLinearOptions& options_) : options(options_) {
  LLMREC_CHECK(options.in_features() > 0 && options.out_features() > 0,
               "LoraLinear needs positive sizes, got in {} out {}", options.in_features(),
               options.out_features());
  reset();
}

void LoraLinearImpl::reset() {
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_features()}));
  } else {
    bias = torch::Tensor();
  }
  if (adapter_) adapter_register();
  reset_parameters();
}

void LoraLinearImpl::adapter_register() {
  const std::int64_t r = adapter_->r();
  lora_dropout =
      register_module("lora_dropout", torch::nn::Dropout(torch::nn::DropoutOptions(adapter_->dropout())));
  lora_A = register_module("lora_A",
                           torch::nn::Linear(torch::nn::LinearOptions(options.in_features(), r).bias(false)));
  lora_B = register_module(
      "lora_B", torch::nn::Linear(torch::nn::LinearOptions(r, options.out_features()).bias(false)));
}

void LoraLinearImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, options.init_std());
  if (bias.defined()) bias.zero_();
  if (adapter_) {
    // PEFT: A like nn.Linear's default (kaiming-uniform, a = sqrt(5)), B = 0.
    torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
    lora_B->weight.zero_();
  }
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& input) {
  torch::Tensor out = torch::linear(input, weight, bias);
  if (adapter_ && !merged_) {
    const torch::Tensor x = adapter_->dropout() > 0 ? lora_dropout(input) : input;
    out = out + lora_B(lora_A(x)) * scaling();
  }
  return out;
}

void LoraLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "llmrec::LoraLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << (options.bias() ? "true" : "false");
  if (adapter_) {
    stream << ", lora_r=" << adapter_->r() << ", lora_alpha=" << adapter_->alpha()
           << ", lora_dropout=" << adapter_->dropout() << (merged_ ? ", merged" : "");
  }
  stream << ")";
}

void LoraLinearImpl::add_adapter(const LoraAdapterOptions& adapter) {
  LLMREC_CHECK(!adapter_, "LoraLinear already has a LoRA adapter (r = {})", adapter_ ? adapter_->r() : 0);
  LLMREC_CHECK(adapter.r() >= 1, "LoRA rank r must be >= 1 for an adapter, got {}", adapter.r());
  LLMREC_CHECK(adapter.alpha() > 0, "LoRA alpha must be positive, got {}", adapter.alpha());
  LLMREC_CHECK(adapter.dropout() >= 0 && adapter.dropout() < 1, "LoRA dropout must be in [0, 1), got {}",
               adapter.dropout());
  adapter_ = adapter;
  merged_ = false;
  adapter_register();
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
  lora_B->weight.zero_();
  lora_A->to(weight.device(), weight.scalar_type());
  lora_B->to(weight.device(), weight.scalar_type());
  lora_dropout->train(is_training());
}

const LoraAdapterOptions& LoraLinearImpl::adapter() const {
  LLMREC_CHECK(adapter_.has_value(), "LoraLinear has no LoRA adapter");
  return *adapter_;
}

double LoraLinearImpl::scaling() const {
  return adapter().alpha() / static_cast<double>(adapter().r());
}

void LoraLinearImpl::merge() {
  LLMREC_CHECK(adapter_.has_value(), "cannot merge: this LoraLinear has no LoRA adapter");
  if (merged_) return;
  torch::NoGradGuard no_grad;
  weight.add_(torch::matmul(lora_B->weight, lora_A->weight), scaling());
  merged_ = true;
}

void LoraLinearImpl::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  weight.sub_(torch::matmul(lora_B->weight, lora_A->weight), scaling());
  merged_ = false;
}

torch::Tensor LoraLinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  if (!adapter_ || merged_) return weight.detach().clone();
  return weight.detach() + torch::matmul(lora_B->weight.detach(), lora_A->weight.detach()) * scaling();
}

}  // namespace llmrec
