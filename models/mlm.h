#pragma once
/// BERT with HF's masked-language-model head (`BertForMaskedLM`), and BERT's
/// masking rule, for pre-training the item encoder on catalogue text
/// (trainer/pretrain.h).
///
///   h      = LayerNorm(gelu_erf(dense(x)))   cls.predictions.transform.{dense,LayerNorm}
///   logits = h E^T + bias                    E = bert.embeddings.word_embeddings.weight (tied),
///                                            bias = cls.predictions.bias
///
/// Parameter names are HF's: `bert.<BertModel name>` and `cls.predictions.*`,
/// so save_mlm_hf writes a directory that `BertForMaskedLM.from_pretrained`
/// and load_hf_bert (which drops the head) both read.
///
///   BertForMaskedLM mlm(config);
///   MlmVocab v = MlmVocab::from(vocab, "dataset.h5");
///   MaskedText m = mlm_mask_text(tokens, len, v, {0.15, true}, seed);
///   MlmSums s = mlm->loss(input_ids, attention_mask, labels);   // labels -1 = not predicted

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/bert.h"

namespace llmrec {

/// What the masking needs to know about a WordPiece vocabulary.
struct MlmVocab {
  std::int64_t size = 0;
  std::int32_t pad = 0, unk = 1, cls = 2, sep = 3, mask = 4;
  std::vector<std::uint8_t> continuation;  ///< per id: 1 for a "##" piece
  std::vector<std::uint8_t> special;       ///< per id: 1 for [PAD] [UNK] [CLS] [SEP] [MASK] (never predicted)
  /// Finds the special tokens by name; ConfigError naming `where` when
  /// [MASK], [CLS], [SEP] or [PAD] is missing.
  static MlmVocab from(const std::vector<std::string>& vocab, const std::string& where);
};

struct MlmMaskOptions {
  double prob = 0.15;      ///< share of a text's word pieces to predict
  bool whole_word = true;  ///< a word's "##" pieces are chosen with it
};

/// One text after masking.
struct MaskedText {
  std::vector<std::int32_t> input;   ///< the ids fed to the model
  std::vector<std::int32_t> labels;  ///< the original id where predicted, -1 elsewhere
  std::int64_t predicted = 0;        ///< labels >= 0
};

/// BERT's rule on `tokens[0..len)` (the real tokens of one text), a pure
/// function of its arguments: n = max(1, round(prob x candidates)) pieces
/// are chosen (candidates: every piece but the special tokens), whole words
/// in a random order while they fit (HF's DataCollatorForWholeWordMask), or
/// single pieces; of those 80% become [MASK], 10% a random non-special
/// piece, 10% stay. A text without candidates predicts nothing.
MaskedText mlm_mask_text(const std::int32_t* tokens, std::int64_t len, const MlmVocab& vocab,
                         const MlmMaskOptions& options, std::uint64_t seed);

/// The seed of one text's masks in one pass (splitmix64 of the three), so
/// that masks do not depend on the world size or on where a run resumed.
std::uint64_t mlm_text_seed(std::uint64_t seed, std::uint64_t pass, std::uint64_t text);

/// Sums over the predicted positions of a batch.
struct MlmSums {
  torch::Tensor loss_sum;      ///< sum of cross-entropies (differentiable), scalar
  std::int64_t correct = 0;    ///< argmax == label (when asked for)
  std::int64_t predicted = 0;  ///< positions with a label
};

class BertForMaskedLMImpl : public torch::nn::Module {
 public:
  /// A BERT initialised as BertModel (no pooler) and a fresh head
  /// (normal(0, initializer_range) dense, LayerNorm 1/0, bias 0).
  explicit BertForMaskedLMImpl(const BertConfig& config);
  /// Logits [M, V] at the positions [M] (flat indices into N x L) of the
  /// last hidden state of (input_ids, attention_mask) [N, L].
  torch::Tensor logits_at(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                          const torch::Tensor& positions);
  /// Cross-entropy sums at labels >= 0 (labels [N, L], int64); `correct`
  /// only with `accuracy` (an argmax over the vocabulary per masked piece,
  /// left out of training steps, which take the fused
  /// linear_cross_entropy_sum of models/loss.h instead of the logits). BERT's
  /// last layer runs at the predicted positions only (BertModel::hidden_at).
  MlmSums loss(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
               const torch::Tensor& labels, bool accuracy = true);
  /// The head's transform, LayerNorm(gelu(dense(h))), of the last hidden
  /// state at `positions` [M] -> [M, H]: the decoder's input.
  torch::Tensor transformed_at(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                               const torch::Tensor& positions);
  /// The head's tensors by HF name (cls.predictions.*), for saving.
  std::map<std::string, torch::Tensor> head_tensors() const;
  /// Copies HF-named head tensors in (those present; shapes checked,
  /// IoError naming `source`); returns how many were copied.
  int load_head(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

  const BertConfig& config() const { return config_; }
  BertModel bert{nullptr};
  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  torch::Tensor bias;

 private:
  BertConfig config_;
};
TORCH_MODULE(BertForMaskedLM);

/// Writes `model` as an HF directory (config.json with architectures
/// ["BertForMaskedLM"], a copy of `vocab_path` as vocab.txt, model.safetensors
/// with HF's BertForMaskedLM names; the decoder is tied to the word
/// embeddings, so it is not stored, as HF does). The directory is replaced
/// as a whole.
void save_mlm_hf(const std::string& dir, BertForMaskedLMImpl& model, const std::string& vocab_path);

}  // namespace llmrec
