#pragma once
/// The reference recommender (`model.type: bert_attn`, docs/architecture.md and
/// docs/ranker.md): item tower (BERT + LoRA, vector = Linear(H, d)(h_[CLS]),
/// optional item ID embedding), user tower (attention ranker over the
/// history) and bilinear score s(u, l) = u^T A l, trained with the
/// in-batch softmax loss of models/loss.h.
///
///   Recommender model(config.model);                  // random BERT, or model.bert.pretrained
///   torch::optim::AdamW opt(model->trainable_parameters());
///   torch::Tensor loss = model(batch);                // RecBatch, below
///   loss.backward(); opt.step();
///
/// Submodules (the checkpoint names): `bert` (HF names, models/bert.h),
/// `item_proj` Linear(H, d), `item_id_embedding` Embedding(id_items, d)
/// (with model.item_id_embedding), `user` (UserTower), `scorer`
/// (BilinearScorer, parameter `scorer.weight` = A).
///
/// Trainable: with model.lora.r > 0 the adapters, not the BERT base; with
/// r = 0 every BERT weight, unless model.bert.freeze (none). The BERT pooler (model.bert.add_pooler) is never
/// trained: the item vector reads h_[CLS], not the pooler output. Everything
/// outside `bert` is trainable.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "models/bert.h"
#include "models/loss.h"
#include "models/model_config.h"
#include "models/ranker.h"

namespace llmrec {

/// One training batch, built by the data layer. Items are encoded once per
/// batch: every tensor below refers to them by row of `item_tokens`.
struct RecBatch {
  torch::Tensor item_tokens;      ///< [U, L] int64 WordPiece ids, [CLS] ... [SEP], 0-padded
  torch::Tensor item_mask;        ///< [U, L] 1 = token, 0 = padding
  torch::Tensor item_ids;         ///< [U] int64 dataset item ids (identify candidates in the loss)
  torch::Tensor history;          ///< [B, S] int64 rows, time order (most recent last), -1 = padding; S <= T
  torch::Tensor target;           ///< [B] int64 row of each user's positive item
  torch::Tensor weight;           ///< [B] float event weights; undefined = all 1
  torch::Tensor negatives;        ///< [N] int64 rows of extra sampled negatives; undefined or empty = none
  torch::Tensor item_log_q;       ///< [U] float log q per row; required with model.loss.logq_correction
  torch::Tensor history_context;  ///< [B, S, F] int64 time and context values (Recommender::context_spec)
  torch::Tensor query_context;    ///< [B, F] int64 the targets' time feature values; the same
  torch::Tensor
      profile_tokens;          ///< [B, L] int64 each user's profile text (model.user.profile); else undefined
  torch::Tensor profile_mask;  ///< [B, L] 1 = token; a row of zeros = no profile
};

/// The time and context features (common/time_features.h, ContextSpec) a
/// user vector is computed with: required when the model has any
/// (model.user.time_features, model.user.context_columns), ignored otherwise.
struct UserContext {
  torch::Tensor history;  ///< [B, S, F] int64: each history slot's event
  torch::Tensor query;    ///< [B, F] (or [N, F] with slots) int64: the time recommended for
  /// With model.user.profile: each user's profile text, [B, L] int64 tokens
  /// and [B, L] mask (a row of zeros = the user has none); undefined = no
  /// user has one.
  torch::Tensor profile_tokens;
  torch::Tensor profile_mask;
  /// Or the profile vectors already encoded (profile_vectors()): [B, d] and
  /// [B] bool; read when profile_tokens is undefined.
  torch::Tensor profile_vectors;
  torch::Tensor has_profile;
};

struct RecommenderOptions {
  explicit RecommenderOptions(ModelConfig config) : config_(std::move(config)) {}
  /// The `model:` section (validated by the constructor).
  TORCH_ARG(ModelConfig, config);
  /// Items with an ID vector (model.item_id_embedding): ids in [0, id_items),
  /// i.e. the data layer numbers the training items first. Larger ids (cold
  /// items) use their text vector alone.
  TORCH_ARG(std::int64_t, id_items) = 0;
  /// Distinct values of each of model.user.context_columns (from the
  /// dataset: its codes are 0 .. n-1), in that order.
  TORCH_ARG(std::vector<std::int64_t>, context_values) = {};
};

class RecommenderImpl : public torch::nn::Cloneable<RecommenderImpl> {
 public:
  explicit RecommenderImpl(const ModelConfig& config, std::int64_t id_items = 0)
      : RecommenderImpl(RecommenderOptions(config).id_items(id_items)) {}
  /// Validates the config (ConfigError naming the keys), builds the modules
  /// and, with model.bert.pretrained, loads the HF weights (IoError naming
  /// the file and tensor).
  explicit RecommenderImpl(const RecommenderOptions& options);

  /// Builds every submodule with fresh weights (BERT random, LoRA applied,
  /// base frozen). Does not read pretrained weights: the constructor does.
  void reset() override;

  /// A deep copy with the same trainable/frozen split (LibTorch's clone
  /// alone would reset requires_grad inside `bert`).
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;

  /// Item tower: tokens [U, L], mask [U, L] -> item vectors l [U, d].
  /// `item_ids` [U] (optional) adds the ID vector of items with id in
  /// [0, id_items) when model.item_id_embedding is on; in training mode each
  /// row's ID vector is dropped with probability model.id_dropout.
  torch::Tensor encode_items(const torch::Tensor& tokens, const torch::Tensor& mask,
                             const torch::Tensor& item_ids = {});
  /// encode_items in two parts (model.item_text): the encoder's pooled
  /// output of each text, [U, H], and the item vectors from it.
  /// encode_items(t, m, ids) == item_vectors(text_features(t, m), ids).
  torch::Tensor text_features(const torch::Tensor& tokens, const torch::Tensor& mask);
  torch::Tensor item_vectors(const torch::Tensor& text_features, const torch::Tensor& item_ids = {});
  /// model.bert.freeze: no BERT weight trains and the encoder stays in
  /// inference mode whatever train() says, so text_features is a fixed
  /// function of the text (trainer/train_step.h keeps it per item).
  bool encoder_frozen() const { return options_.config().item_text && options_.config().bert.freeze; }
  /// Module::train, except that a frozen encoder (model.bert.freeze) stays
  /// in inference mode.
  void train(bool on = true) override;

  /// User tower over rows of `item_vecs` [U, d]: history_index [B, S] int64
  /// (-1 = padding, S <= T) -> u [B, d]. Users without history get the
  /// learned no-history vector (ranker.h). With `slots` [N] int64 (causal
  /// user tower only): the user vectors after the slots b * S + s -> [N, d].
  /// With time features, `context` gives the slots' and the queries' values
  /// and u gains the query's context vector. With model.user.profile, the
  /// users' profile texts in `context` are encoded (profile_vectors) and
  /// fed to the tower.
  torch::Tensor user_vectors(const torch::Tensor& history_index, const torch::Tensor& item_vecs,
                             const torch::Tensor& slots = {}, const UserContext& context = {});

  /// The profile vectors of texts tokens [B, L], mask [B, L]: the item
  /// tower's text vector (no ID vector) of each row with a token, zeros for
  /// a row without one; and that presence, [B] bool.
  std::pair<torch::Tensor, torch::Tensor> profile_vectors(const torch::Tensor& tokens,
                                                          const torch::Tensor& mask);

  /// A l per item (what an export stores): [.., d] -> [.., d].
  torch::Tensor item_keys(const torch::Tensor& item_vecs) const { return scorer->item_keys(item_vecs); }

  /// The loss of a batch, with its per-example terms.
  LossResult forward_result(const RecBatch& batch);
  /// The loss of a batch (scalar).
  torch::Tensor forward(const RecBatch& batch) { return forward_result(batch).loss; }

  /// The parameters that require a gradient, in module order.
  std::vector<torch::Tensor> trainable_parameters() const;

  const RecommenderOptions& options() const { return options_; }
  /// The time and context features of the user tower.
  const ContextSpec& context_spec() const { return context_spec_; }
  /// The item tower's BERT architecture (from config.json when pretrained).
  const BertConfig& bert_config() const { return bert_config_; }
  LossOptions loss_options() const;
  /// What training adds to the loss besides it: with model.lora.adaptive,
  /// orth_reg_weight x AdaLoRA's orthogonality penalty (models/adalora.h);
  /// undefined otherwise (or with a weight of 0).
  torch::Tensor adapter_regulariser() const;

  BertModel bert{nullptr};
  torch::nn::Linear item_proj{nullptr};
  torch::nn::Embedding item_id_embedding{nullptr};  ///< null without model.item_id_embedding
  UserTower user{nullptr};
  BilinearScorer scorer{nullptr};

 private:
  RecommenderOptions options_;
  BertConfig bert_config_;
  ContextSpec context_spec_;
};
TORCH_MODULE(Recommender);

/// Throws ConfigError listing what `cfg` breaks before any data is read:
/// ModelConfig::validate(), and LoRA targets that name no Linear layer of
/// the item tower (checked on a one-layer BERT of the same module names).
/// `llmrec config` runs it.
void check_recommender_config(const ModelConfig& cfg);

/// The BERT architecture the keys of `model.bert` describe (pretrained
/// ignored): layers, hidden, heads, intermediate, vocab_size,
/// max_positions, dropout (hidden and attention), HF's other defaults.
BertConfig bert_config_from(const ModelBertConfig& config);

}  // namespace llmrec
