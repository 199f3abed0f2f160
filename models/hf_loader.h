#pragma once
/// Loads an HF model directory (config.json, model.safetensors, vocab.txt)
/// into a BertModel. Nothing is ever unpickled: a directory that only has
/// pytorch_model.bin is refused with a message saying how to convert it.
///
/// Tensor names are matched to BertModel's (HF BertModel) names after:
///   1. dropping a leading `bert.` (BertForMaskedLM, BertForPreTraining, ...);
///   2. renaming the TF-era `LayerNorm.gamma` / `LayerNorm.beta` to
///      `LayerNorm.weight` / `LayerNorm.bias`.
/// Known extras are skipped and logged at info: the `embeddings.position_ids`
/// and `embeddings.token_type_ids` buffers, task heads `cls.*`, and `pooler.*`
/// when the model is built without a pooler. Every other unexpected tensor,
/// every missing tensor and every shape mismatch is an IoError that lists
/// them all by name (with expected and found shapes). Floating-point tensors
/// are converted to the model's dtype.
///
///   HfBert bert = load_hf_bert("tiny-bert", {});
///   bert.model->eval();
///   auto tok = WordPieceTokenizer::from_file(bert.vocab_path);

#include <c10/core/ScalarType.h>

#include <map>
#include <string>
#include <vector>

#include "models/bert.h"

namespace llmrec {

struct HfBertLoadOptions {
  /// Build (and require weights for) the pooler.
  bool add_pooler = true;
  /// dtype of the returned model (weights are converted).
  c10::ScalarType dtype = c10::kFloat;
  /// Weights file inside the directory. When it is the default and absent,
  /// a sharded `model.safetensors.index.json` is read instead.
  std::string weights_file = "model.safetensors";
  /// Log unexpected (non-ignorable) tensors as warnings instead of failing.
  bool allow_unexpected = false;
};

/// A loaded model directory.
struct HfBert {
  BertConfig config;
  BertModel model{nullptr};  ///< in train() mode, as every new module; call eval()
  std::string dir;
  std::string vocab_path;                    ///< <dir>/vocab.txt, or "" when the directory has none
  std::vector<std::string> weights_paths;    ///< safetensors file(s) read
  std::vector<std::string> ignored_tensors;  ///< file names of the skipped extras
  /// The task head's tensors (`cls.*`, file names), e.g. BertForMaskedLM's
  /// cls.predictions.*, for a model that continues that task
  /// (models/mlm.h).
  std::map<std::string, torch::Tensor> head_tensors;
};

/// Reads `dir`. Throws IoError (missing files, a bad safetensors file,
/// missing/unexpected/mis-shaped tensors) or ConfigError (config.json keys),
/// each naming the file and the tensor or key.
HfBert load_hf_bert(const std::string& dir, const HfBertLoadOptions& options = {});

/// Copies HF-named `tensors` (file names, before the renaming above) into
/// `model` with the rules above; `source` names the file(s) in messages.
/// LoRA adapter parameters (lora_A, lora_B) are not expected here. Returns
/// the names of the ignored extras.
std::vector<std::string> bert_load_tensors(BertModelImpl& model,
                                           const std::map<std::string, torch::Tensor>& tensors,
                                           const std::string& source, bool allow_unexpected = false);

}  // namespace llmrec
