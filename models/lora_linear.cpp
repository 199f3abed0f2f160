// Linear layer with an optional LoRA adapter (see lora_linear.h).
#include "models/lora_linear.h"

#include <torch/torch.h>

#include <cmath>

#include "common/error.h"

namespace llmrec {
namespace {

/// The adapter's [r, in] factor as the product uses it: A, or diag(E) A
/// (AdaLoRA's P diag(E) Q), for the forward and for delta_weight alike.
torch::Tensor input_factor(const LoraLinearImpl& layer) {
  return layer.adaptive() ? layer.svd_a * layer.svd_e : layer.adapter_a();
}

}  // namespace

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
  if (adapter_->adaptive()) {
    const std::int64_t in = options.in_features(), out = options.out_features();
    svd_a = register_parameter("lora_A", torch::empty({r, in}));
    svd_b = register_parameter("lora_B", torch::empty({out, r}));
    svd_e = register_parameter("lora_E", torch::empty({r, 1}));
    ada.a_ipt = register_buffer("lora_A_ipt", torch::zeros({r, in}));
    ada.a_unc = register_buffer("lora_A_unc", torch::zeros({r, in}));
    ada.b_ipt = register_buffer("lora_B_ipt", torch::zeros({out, r}));
    ada.b_unc = register_buffer("lora_B_unc", torch::zeros({out, r}));
    ada.e_ipt = register_buffer("lora_E_ipt", torch::zeros({r, 1}));
    ada.e_unc = register_buffer("lora_E_unc", torch::zeros({r, 1}));
    ada.keep = register_buffer("lora_keep", torch::ones({r}));
    return;
  }
  lora_A = register_module("lora_A",
                           torch::nn::Linear(torch::nn::LinearOptions(options.in_features(), r).bias(false)));
  lora_B = register_module(
      "lora_B", torch::nn::Linear(torch::nn::LinearOptions(r, options.out_features()).bias(false)));
}

void LoraLinearImpl::adapter_init() {
  torch::NoGradGuard no_grad;
  if (adapter_->adaptive()) {
    // PEFT's AdaLoRA: E = 0 (a fresh adapter adds nothing), A and B ~ normal(0, 0.02).
    svd_a.normal_(0.0, 0.02);
    svd_b.normal_(0.0, 0.02);
    svd_e.zero_();
    return;
  }
  // PEFT: A like nn.Linear's default (kaiming-uniform, a = sqrt(5)), B = 0.
  torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
  lora_B->weight.zero_();
}

void LoraLinearImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, options.init_std());
  if (bias.defined()) bias.zero_();
  if (adapter_) adapter_init();
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& input) {
  torch::Tensor out = torch::linear(input, weight, bias);
  if (adapter_ && !merged_) {
    const torch::Tensor x = adapter_->dropout() > 0 ? lora_dropout(input) : input;
    const torch::Tensor h = torch::linear(x, input_factor(*this));  // [..., r]
    // out + scaling (h B^T) as one product: no [..., out] temporaries for the
    // scale and the sum, forward or backward.
    const std::vector<std::int64_t> shape = out.sizes().vec();
    out = torch::addmm(out.reshape({-1, shape.back()}), h.reshape({-1, h.size(-1)}), adapter_b().t(), 1.0,
                       scaling())
              .view(shape);
  }
  return out;
}

void LoraLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "llmrec::LoraLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << (options.bias() ? "true" : "false");
  if (adapter_) {
    stream << ", lora_r=" << adapter_->r() << ", lora_alpha=" << adapter_->alpha()
           << ", lora_dropout=" << adapter_->dropout() << (adapter_->adaptive() ? ", adaptive" : "")
           << (merged_ ? ", merged" : "");
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
  adapter_init();
  // The adapter in the dtype and on the device of the weight.
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters(/*recurse=*/true)) {
    if (p.key() != "weight" && p.key() != "bias")
      p.value().set_data(p.value().to(weight.device(), weight.scalar_type()));
  }
  for (auto& b : named_buffers(/*recurse=*/true))
    b.value().set_data(b.value().to(weight.device(), weight.scalar_type()));
  lora_dropout->train(is_training());
}

const LoraAdapterOptions& LoraLinearImpl::adapter() const {
  LLMREC_CHECK(adapter_.has_value(), "LoraLinear has no LoRA adapter");
  return *adapter_;
}

double LoraLinearImpl::scaling() const {
  const double r = static_cast<double>(adapter().r());
  return adapter().alpha() / (adapter().adaptive() ? r + 1e-5 : r);  // PEFT's AdaLoRA: / (ranknum + 1e-5)
}

torch::Tensor LoraLinearImpl::adapter_a() const {
  return adapter().adaptive() ? svd_a : lora_A->weight;
}

torch::Tensor LoraLinearImpl::adapter_b() const {
  return adapter().adaptive() ? svd_b : lora_B->weight;
}

torch::Tensor LoraLinearImpl::delta_weight() const {
  torch::NoGradGuard no_grad;
  return torch::matmul(adapter_b().detach(), input_factor(*this).detach()) * scaling();
}

void LoraLinearImpl::merge() {
  LLMREC_CHECK(adapter_.has_value(), "cannot merge: this LoraLinear has no LoRA adapter");
  if (merged_) return;
  torch::NoGradGuard no_grad;
  weight.add_(delta_weight());
  merged_ = true;
}

void LoraLinearImpl::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  weight.sub_(delta_weight());
  merged_ = false;
}

torch::Tensor LoraLinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  if (!adapter_ || merged_) return weight.detach().clone();
  return weight.detach() + delta_weight();
}

}  // namespace llmrec
