#pragma once
/// The Linear layer of llmrec's transformer code: y = x W^T + b, able to
/// carry a LoRA adapter (Hu et al. 2021) exactly as HF PEFT's `lora.Linear`:
///
///   y = x W^T + b + scaling * lora_B(lora_A(lora_dropout(x))),  scaling = alpha / r
///
/// Parameter names are those of torch.nn.Linear (`weight` [out, in], `bias`
/// [out]) and, once an adapter is added, of PEFT: `lora_A.weight` [r, in]
/// (kaiming-uniform, a = sqrt(5), as PEFT) and `lora_B.weight` [out, r]
/// (zeros, so a fresh adapter leaves the output unchanged). Merging folds the
/// adapter into `weight` (W += scaling * B A) and the forward then skips it;
/// unmerging subtracts it again (equal to the original up to rounding).
///
///   LoraLinear q(LoraLinearOptions(64, 64).init_std(0.02));
///   q->add_adapter(LoraAdapterOptions(8).alpha(16));
///   torch::Tensor y = q(x);
///
/// An adaptive adapter (AdaLoRA, Zhang et al. 2023; PEFT's `adalora.SVDLinear`)
/// is the SVD-like form
///
///   y = x W^T + b + scaling * lora_B diag(lora_E) lora_A lora_dropout(x),  scaling = alpha / (r + 1e-5)
///
/// with parameters `lora_A` [r, in] and `lora_B` [out, r] (normal(0, 0.02))
/// and `lora_E` [r, 1] (zeros), and buffers for AdaLoRA's rank allocator
/// (models/adalora.h): the smoothed importance and uncertainty of each
/// (`lora_{A,B,E}_ipt`, `lora_{A,B,E}_unc`) and `lora_keep` [r] (1 for each
/// triplet the last allocation kept), so a checkpoint carries them.
///
/// `clone()` keeps the adapter and the merged state (reset() rebuilds the
/// adapter modules, then Cloneable copies the values); like every LibTorch
/// module, a clone's parameters have the requires_grad flags reset() gives.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace llmrec {

/// Shape and initialisation of a LoraLinear.
struct LoraLinearOptions {
  LoraLinearOptions(std::int64_t in_features, std::int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(std::int64_t, in_features);
  TORCH_ARG(std::int64_t, out_features);
  /// With a bias vector (initialised to zeros).
  TORCH_ARG(bool, bias) = true;
  /// The weight is drawn from normal(0, init_std) (HF BERT initialisation).
  TORCH_ARG(double, init_std) = 0.02;
};

/// One LoRA adapter: rank r > 0, scaling alpha / r, dropout on its input;
/// `adaptive`: AdaLoRA's form with r its initial rank.
struct LoraAdapterOptions {
  explicit LoraAdapterOptions(std::int64_t r) : r_(r) {}
  TORCH_ARG(std::int64_t, r);
  TORCH_ARG(double, alpha) = 16;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, adaptive) = false;
};

/// AdaLoRA's allocator state of one adaptive adapter: for each of A, B and
/// E the smoothed importance (ipt) and uncertainty (unc), same shapes.
struct AdaLoraState {
  torch::Tensor a_ipt, a_unc, b_ipt, b_unc, e_ipt, e_unc;
  torch::Tensor keep;  ///< [r] float: 1 where the last allocation kept the triplet
};

class LoraLinearImpl : public torch::nn::Cloneable<LoraLinearImpl> {
 public:
  LoraLinearImpl(std::int64_t in_features, std::int64_t out_features)
      : LoraLinearImpl(LoraLinearOptions(in_features, out_features)) {}
  explicit LoraLinearImpl(const LoraLinearOptions& options);

  /// Registers weight, bias and (when an adapter was added) the adapter
  /// modules, then initialises them. Leaves merged() as it was, which is
  /// what clone() needs.
  void reset() override;
  /// weight ~ normal(0, init_std), bias = 0; adapter as described above.
  void reset_parameters();

  /// x [..., in] -> [..., out], in the dtype of the parameters.
  torch::Tensor forward(const torch::Tensor& input);

  void pretty_print(std::ostream& stream) const override;

  /// Adds a LoRA adapter (lora_A, lora_B, lora_dropout) in the dtype and on
  /// the device of `weight`. Throws llmrec::Error if one is already there or
  /// the options are invalid (r < 1, dropout outside [0, 1)).
  void add_adapter(const LoraAdapterOptions& adapter);
  bool has_adapter() const { return adapter_.has_value(); }
  /// The adapter's options; throws llmrec::Error without an adapter.
  const LoraAdapterOptions& adapter() const;
  /// alpha / r; adaptive: alpha / (r + 1e-5), PEFT's.
  double scaling() const;
  bool adaptive() const { return adapter_.has_value() && adapter_->adaptive(); }
  /// The adapter's [r, in] and [out, r] factors (adaptive: E not folded in).
  torch::Tensor adapter_a() const;
  torch::Tensor adapter_b() const;
  /// scaling * B A, or scaling * B diag(E) A (without autograd history).
  torch::Tensor delta_weight() const;

  /// W += delta_weight(); the forward then skips the adapter. No-op when
  /// already merged; throws llmrec::Error without an adapter.
  void merge();
  /// W -= delta_weight(). No-op when not merged.
  void unmerge();
  bool merged() const { return merged_; }
  /// The weight the layer computes with: W + delta_weight() while an adapter
  /// is active and not merged, else W (a new tensor, without autograd history).
  torch::Tensor merged_weight() const;

  LoraLinearOptions options;
  torch::Tensor weight;
  torch::Tensor bias;  ///< undefined without options.bias
  /// Plain adapters: the Linear modules `lora_A` and `lora_B` (PEFT's names
  /// `lora_A.weight`, `lora_B.weight`).
  torch::nn::Linear lora_A{nullptr};
  torch::nn::Linear lora_B{nullptr};
  torch::nn::Dropout lora_dropout{nullptr};
  /// Adaptive adapters: the parameters `lora_A`, `lora_B`, `lora_E` (PEFT's
  /// AdaLoRA names) and the allocator's buffers.
  torch::Tensor svd_a, svd_b, svd_e;
  AdaLoraState ada;

 private:
  void adapter_register();
  /// The adapter's initial values (PEFT's for each form).
  void adapter_init();
  c10::optional<LoraAdapterOptions> adapter_;
  bool merged_ = false;
};

TORCH_MODULE(LoraLinear);

}  // namespace llmrec
