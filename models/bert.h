#pragma once
/// BERT encoder with the semantics and the tensor names of HF transformers'
/// `BertModel` (modeling_bert.py), so that a `model.safetensors` of the hub
/// loads one-to-one (models/hf_loader.h):
///
///   emb = LayerNorm(word[ids] + position[0..L-1] + token_type[tt])      eps from config
///   per layer (post-LN):
///     q, k, v = Linear(x), split into heads [N, A, L, H/A]
///     ctx     = softmax(q k^T / sqrt(H/A) + (1 - mask) * lowest(dtype)) v
///     x       = LayerNorm(Linear(ctx) + x)
///     x       = LayerNorm(Linear(gelu_erf(Linear(x))) + x)
///   pooler_output = tanh(Linear(x[:, 0]))                              (optional)
///
/// Parameter names (named_parameters()) are exactly HF's:
///   embeddings.{word,position,token_type}_embeddings.weight, embeddings.LayerNorm.{weight,bias},
///   encoder.layer.N.attention.self.{query,key,value}.{weight,bias},
///   encoder.layer.N.attention.output.dense.*, encoder.layer.N.attention.output.LayerNorm.*,
///   encoder.layer.N.intermediate.dense.*, encoder.layer.N.output.dense.*,
///   encoder.layer.N.output.LayerNorm.*, pooler.dense.*
/// Every Linear is a LoraLinear, so LoRA adapters (models/lora.h) take part in
/// the forward. Dropout follows train()/eval() as in PyTorch.
///
///   BertModel bert(BertConfig::from_json_file("tiny-bert/config.json"));
///   bert->eval();
///   BertOutput out = bert(input_ids, attention_mask);   // [N, L, H], [N, H]
///   torch::Tensor cls = bert->first_token(input_ids, attention_mask);  // [N, H], cheaper
///   torch::Tensor mean = bert->mean_pooled(input_ids, attention_mask);  // [N, H], padding cut

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "models/lora_linear.h"

namespace llmrec {

/// HF `BertConfig` (config.json) keys used by the encoder. Defaults are HF's
/// (bert-base sizes).
struct BertConfig {
  std::int64_t vocab_size = 30522;
  std::int64_t hidden_size = 768;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t intermediate_size = 3072;
  std::int64_t max_position_embeddings = 512;
  std::int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  /// Only "gelu" (the exact erf GELU, as HF BERT) is implemented.
  std::string hidden_act = "gelu";
  double initializer_range = 0.02;
  /// Row of the word embeddings that is zero at init and gets no gradient;
  /// -1 (JSON null) for none.
  std::int64_t pad_token_id = 0;

  /// Reads an HF config.json. The size keys (vocab_size, hidden_size,
  /// num_hidden_layers, num_attention_heads, intermediate_size,
  /// max_position_embeddings) are required, the others default as in HF.
  /// Rejects model types other than "bert", position_embedding_type other
  /// than "absolute" and unsupported activations. Throws IoError (unreadable
  /// file, invalid JSON) or ConfigError naming the file and the key.
  static BertConfig from_json_file(const std::string& path);
  /// The same for JSON text; `name` is used in messages.
  static BertConfig from_json_string(const std::string& text, const std::string& name);

  /// config.json text HF transformers reads back (model_type "bert",
  /// architectures [`architecture`]).
  std::string to_json(const std::string& architecture = "BertModel") const;

  /// Throws ConfigError("<where>: '<key>' ...") on an invalid value.
  void validate(const std::string& where) const;

  std::int64_t head_size() const { return hidden_size / num_attention_heads; }
};

/// What BertModel returns.
struct BertOutput {
  torch::Tensor last_hidden_state;  ///< [N, L, H]
  torch::Tensor pooler_output;      ///< [N, H]; undefined without a pooler
};

/// embeddings: word + position + token type, LayerNorm, dropout.
class BertEmbeddingsImpl : public torch::nn::Cloneable<BertEmbeddingsImpl> {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& config);
  void reset() override;
  /// input_ids, token_type_ids [N, L] int64 -> [N, L, H].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids);

  BertConfig config;
  torch::nn::Embedding word_embeddings{nullptr};
  torch::nn::Embedding position_embeddings{nullptr};
  torch::nn::Embedding token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT(readability-identifier-naming): HF name
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertEmbeddings);

/// attention.self: multi-head scaled dot-product attention.
class BertSelfAttentionImpl : public torch::nn::Cloneable<BertSelfAttentionImpl> {
 public:
  explicit BertSelfAttentionImpl(const BertConfig& config);
  void reset() override;
  /// x [N, L, H], additive mask [N, 1, 1, L] -> context [N, L, H].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask);
  /// Queries from `xq` [N, Q, H], keys and values from `x` [N, L, H] ->
  /// context [N, Q, H] (forward(x, m) is attend(x, x, m)).
  torch::Tensor attend(const torch::Tensor& xq, const torch::Tensor& x, const torch::Tensor& additive_mask);
  /// The attention itself, of projected queries q [N, Q, H] over projected
  /// keys k and values v [N, L, H] -> context [N, Q, H].
  torch::Tensor context(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& additive_mask);

  BertConfig config;
  LoraLinear query{nullptr};
  LoraLinear key{nullptr};
  LoraLinear value{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertSelfAttention);

/// LayerNorm(dropout(dense(h)) + residual): HF's BertSelfOutput
/// (attention.output, in_features = hidden_size) and BertOutput (the layer's
/// `output`, in_features = intermediate_size).
class BertResidualImpl : public torch::nn::Cloneable<BertResidualImpl> {
 public:
  BertResidualImpl(const BertConfig& config, std::int64_t in_features);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& residual);

  BertConfig config;
  std::int64_t in_features;
  LoraLinear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT(readability-identifier-naming): HF name
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertResidual);

/// attention: self + output.
class BertAttentionImpl : public torch::nn::Cloneable<BertAttentionImpl> {
 public:
  explicit BertAttentionImpl(const BertConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask);

  BertConfig config;
  BertSelfAttention self{nullptr};
  BertResidual output{nullptr};
};
TORCH_MODULE(BertAttention);

/// intermediate: gelu_erf(dense(x)).
class BertIntermediateImpl : public torch::nn::Cloneable<BertIntermediateImpl> {
 public:
  explicit BertIntermediateImpl(const BertConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  BertConfig config;
  LoraLinear dense{nullptr};
};
TORCH_MODULE(BertIntermediate);

/// encoder.layer.N: attention, intermediate, output.
class BertLayerImpl : public torch::nn::Cloneable<BertLayerImpl> {
 public:
  explicit BertLayerImpl(const BertConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask);
  /// The layer after self-attention: attention.output (dense, LayerNorm
  /// with the residual `input`, the tokens' layer input), intermediate and
  /// output, for the attention context `ctx` of those tokens (any shape
  /// [..., H] both).
  torch::Tensor from_context(const torch::Tensor& ctx, const torch::Tensor& input);

  BertConfig config;
  BertAttention attention{nullptr};
  BertIntermediate intermediate{nullptr};
  BertResidual output{nullptr};
};
TORCH_MODULE(BertLayer);

/// encoder: `layer` holds num_hidden_layers BertLayers.
class BertEncoderImpl : public torch::nn::Cloneable<BertEncoderImpl> {
 public:
  explicit BertEncoderImpl(const BertConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask);

  BertConfig config;
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(BertEncoder);

/// pooler: tanh(dense(x[:, 0])).
class BertPoolerImpl : public torch::nn::Cloneable<BertPoolerImpl> {
 public:
  explicit BertPoolerImpl(const BertConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  BertConfig config;
  LoraLinear dense{nullptr};
};
TORCH_MODULE(BertPooler);

/// The encoder. Random init from the config alone: weights normal(0,
/// initializer_range), the pad_token_id row of the word embeddings zero,
/// LayerNorm 1/0, biases 0. Works in any floating dtype (module.to(kDouble)).
class BertModelImpl : public torch::nn::Cloneable<BertModelImpl> {
 public:
  /// Throws ConfigError when `config` is invalid.
  explicit BertModelImpl(const BertConfig& config, bool add_pooler = true);
  void reset() override;

  /// input_ids [N, L] (any integer dtype; ids in [0, vocab_size)),
  /// attention_mask [N, L] (1 = token, 0 = pad; integer, bool or float;
  /// undefined = all ones), token_type_ids [N, L] (undefined = zeros);
  /// L <= max_position_embeddings. Inputs move to the parameters' device.
  /// Throws llmrec::Error naming the offending input.
  BertOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                     const torch::Tensor& token_type_ids = {});

  /// forward(...).last_hidden_state[:, 0] (h_[CLS]), equal up to float
  /// rounding, for a fraction of the work: the batch is cut to its longest
  /// row (one past its last real token; all of L if a row has none, whose
  /// attention spreads over its padding), token-wise products and norms run
  /// on the real tokens alone (packed, no padding, one product per layer for
  /// the whole batch; attention on the cut rows), and the last layer
  /// computes keys and values for every token but the query, attention
  /// output and feed-forward for token 0 alone. Same checks as forward();
  /// L = 0 is an error.
  torch::Tensor first_token(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                            const torch::Tensor& token_type_ids = {});

  /// forward(...).last_hidden_state at the flat positions `positions` [M]
  /// (indices into N x L, any order, repeats allowed) -> [M, H], equal up to
  /// float rounding, for a fraction of the work: token-wise products and
  /// norms run on the real tokens alone (packed, no padding; attention
  /// itself on the padded rows), and the last layer computes keys and
  /// values for every token but the rest for the asked positions alone
  /// (the masked-LM head needs ~15% of them). Same checks as forward().
  torch::Tensor hidden_at(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                          const torch::Tensor& positions, const torch::Tensor& token_type_ids = {});

  /// The mean of forward(...).last_hidden_state over each row's real tokens
  /// (attention_mask != 0; a row without any gives zeros), equal up to
  /// float rounding, with padding cut: rows grouped by their length (last
  /// real token, rounded up to a multiple of 4) and each group cut to it,
  /// so on short texts (titles) most of a padded row is never computed.
  /// (Packing as first_token does was measured slower for the shipped
  /// configs' 0-layer bag of word pieces: docs/performance.md.)
  torch::Tensor mean_pooled(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                            const torch::Tensor& token_type_ids = {});

  const BertConfig& config() const { return config_; }
  bool has_pooler() const { return add_pooler_; }

  BertEmbeddings embeddings{nullptr};
  BertEncoder encoder{nullptr};
  BertPooler pooler{nullptr};  ///< empty without a pooler

 private:
  /// Validated inputs on the parameters' device: ids, types, mask.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> inputs(const torch::Tensor& input_ids,
                                                                 const torch::Tensor& attention_mask,
                                                                 const torch::Tensor& token_type_ids) const;

  BertConfig config_;
  bool add_pooler_;
};
TORCH_MODULE(BertModel);

/// HF's extended attention mask: (1 - mask) * lowest(dtype), shape
/// [N, 1, 1, L], added to the attention scores.
torch::Tensor bert_additive_mask(const torch::Tensor& attention_mask, c10::ScalarType dtype);

}  // namespace llmrec
