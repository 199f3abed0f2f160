#pragma once
/// LoRA adapters on BertModel, saved and loaded in HF PEFT's layout.
///
/// Every Linear of BertModel is a LoraLinear (models/lora_linear.h); apply_lora
/// adds an adapter to those whose module name matches a target: the name
/// equals the target or ends with "." + target (PEFT's rule for a list of
/// target_modules), e.g. "query" matches encoder.layer.3.attention.self.query.
///
///   LoraOptions lora;                                  // r 8, alpha 16, query + value
///   auto adapted = apply_lora(bert, lora);             // base frozen, adapters trainable
///   torch::optim::AdamW opt(lora_trainable_parameters(*bert).values());
///   ... train ...
///   save_peft_adapter("out/adapter", bert, lora, "bert-base-uncased");   // PEFT directory
///   save_hf_directory("out/merged", bert, bert->config(), vocab);     // plain HF model
///
/// The PEFT directory is adapter_config.json + adapter_model.safetensors with
/// tensors `base_model.model.<module>.lora_A.weight` [r, in] and
/// `...lora_B.weight` [out, r], which `PeftModel.from_pretrained(BertModel...,
/// dir)` loads (docs/models.md).

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/bert.h"
#include "models/model_config.h"

namespace llmrec {

struct LoraOptions {
  /// Rank; 0 = no adapters, full fine-tuning (nothing frozen).
  std::int64_t r = 8;
  /// Scaling = alpha / r.
  double alpha = 16;
  /// Dropout on the adapter input (train mode only).
  double dropout = 0.0;
  /// Module names (or their last components) that get an adapter.
  std::vector<std::string> target_modules = {"query", "value"};
  /// AdaLoRA (adaptive.enabled): the SVD form with r its initial rank, and
  /// the schedule its rank allocator follows (models/adalora.h).
  ModelAdaLoraConfig adaptive;
};

/// Whether a parameter name is an adapter's: a component lora_A, lora_B or
/// lora_E ("x.query.lora_A.weight", AdaLoRA's "x.query.lora_E").
bool is_lora_parameter_name(const std::string& name);

/// The adapters `model.lora` describes.
LoraOptions lora_options(const ModelLoraConfig& config);

/// r > 0: freezes every parameter of `model` (requires_grad false), then adds
/// a trainable adapter to each Linear matching a target; returns the adapted
/// module names in module order. r == 0: adds nothing and makes every
/// parameter trainable; returns {}. Throws llmrec::Error if a target matches
/// no module or matches a module that is not a Linear, if the options are
/// invalid, or if the model already has adapters.
std::vector<std::string> apply_lora(BertModel& model, const LoraOptions& options);

/// Names of the Linear modules of `model` that carry an adapter.
std::vector<std::string> lora_adapted_modules(const torch::nn::Module& model);

/// Folds every adapter of `module` (any module tree) into its base weight;
/// the forward then no longer applies the adapters. Idempotent.
void merge_lora(torch::nn::Module& module);
/// Undoes merge_lora (up to rounding). Idempotent.
void unmerge_lora(torch::nn::Module& module);

/// The parameters with requires_grad, by name: after apply_lora with r > 0,
/// exactly the adapters' lora_A/lora_B weights.
torch::OrderedDict<std::string, torch::Tensor> lora_trainable_parameters(const torch::nn::Module& module);

/// Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors
/// (float32) in HF PEFT's layout. `options` must describe the model's
/// adapters (same r and alpha, targets that select exactly the adapted
/// modules). Creates `dir`; files are written atomically. Throws
/// llmrec::Error for a mismatch, IoError on a write failure.
void save_peft_adapter(const std::string& dir, const BertModel& model, const LoraOptions& options,
                       const std::string& base_model_name_or_path);

/// Reads a PEFT LoRA directory into `model`: adds the adapters first when the
/// model has none (freezing the base, as apply_lora), else checks that the
/// existing adapters have the same r, alpha and modules. Validates every
/// tensor's name and shape. Returns the options read. Throws ConfigError for
/// adapter_config.json (naming the key; unsupported PEFT features such as
/// rslora, DoRA, regex target_modules, modules_to_save are refused) and
/// IoError naming the tensor for adapter_model.safetensors.
LoraOptions load_peft_adapter(const std::string& dir, BertModel& model);

/// Writes an HF model directory that load_hf_bert (and HF transformers'
/// BertModel.from_pretrained) reads: config.json, model.safetensors with HF
/// names and adapters folded into the weights (whether or not the model is
/// merged; the model is not modified), and a copy of `vocab_path` as
/// vocab.txt unless it is empty. Tensors are stored as `dtype`.
/// With a task `head` (HF names such as BertForMaskedLM's
/// `cls.predictions.bias`), the encoder's tensors are stored under `bert.`
/// beside them and config.json names `architecture`, as HF saves a model
/// with a head; load_hf_bert reads either layout.
void save_hf_directory(const std::string& dir, const BertModel& model, const BertConfig& config,
                       const std::string& vocab_path, c10::ScalarType dtype = c10::kFloat,
                       const std::map<std::string, at::Tensor>& head = {},
                       const std::string& architecture = "BertModel");

}  // namespace llmrec
