#include "models/recommender.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <tuple>

#include "common/error.h"
#include "common/time_features.h"
#include "models/adalora.h"
#include "models/hf_loader.h"
#include "models/lora.h"

namespace llmrec {

namespace {

std::string shape_of(const torch::Tensor& t) {
  return t.defined() ? c10::str(t.scalar_type(), " ", t.sizes()) : std::string("undefined");
}

void check_rows(const torch::Tensor& t, const char* name, std::int64_t dims) {
  LLMREC_CHECK(t.defined() && t.dim() == dims && t.scalar_type() == torch::kLong,
               "RecBatch.{}: expected a {}-d int64 tensor of item rows, got {}", name, dims, shape_of(t));
}

}  // namespace

BertConfig bert_config_from(const ModelBertConfig& config) {
  BertConfig bert;
  bert.vocab_size = config.vocab_size;
  bert.hidden_size = config.hidden;
  bert.num_hidden_layers = config.layers;
  bert.num_attention_heads = config.heads;
  bert.intermediate_size = config.intermediate;
  bert.max_position_embeddings = config.max_positions;
  bert.hidden_dropout_prob = config.dropout;
  bert.attention_probs_dropout_prob = config.dropout;
  return bert;
}

RecommenderImpl::RecommenderImpl(const RecommenderOptions& options) : options_(options) {
  const ModelConfig& cfg = options_.config();
  cfg.validate();
  context_spec_.time = parse_time_features(cfg.user.time_features);
  context_spec_.column_values = options_.context_values();
  if (context_spec_.column_values.size() != cfg.user.context_columns.size()) {
    throw ConfigError(
        fmt::format("model.user.context_columns names {} columns but the model was given the "
                    "values of {} (from the dataset)",
                    cfg.user.context_columns.size(), context_spec_.column_values.size()));
  }
  if (cfg.item_id_embedding && options_.id_items() <= 0) {
    throw ConfigError(
        fmt::format("model.item_id_embedding is true but the model was given {} training items; the ID table "
                    "needs the number of training items from the dataset",
                    options_.id_items()));
  }
  const std::string& dir = cfg.bert.pretrained;
  if (!cfg.item_text) {
    reset();  // ID vectors only: no BERT, nothing to load
    return;
  }
  if (dir.empty()) {
    bert_config_ = bert_config_from(cfg.bert);
  } else {
    bert_config_ = BertConfig::from_json_file((std::filesystem::path(dir) / "config.json").string());
    if (cfg.text_len > bert_config_.max_position_embeddings) {
      throw ConfigError(fmt::format("model.text_len ({}) exceeds max_position_embeddings ({}) of {}",
                                    cfg.text_len, bert_config_.max_position_embeddings, dir));
    }
  }
  bert_config_.validate(dir.empty() ? std::string("model.bert") : dir + "/config.json");
  reset();
  if (!dir.empty()) {
    // Weights of the base model; LoRA adapters keep their fresh init.
    HfBertLoadOptions load;
    load.add_pooler = cfg.bert.add_pooler;
    HfBert loaded = load_hf_bert(dir, load);
    torch::NoGradGuard no_grad;
    auto mine = bert->named_parameters();
    std::size_t copied = 0;
    for (const auto& p : loaded.model->named_parameters()) {
      torch::Tensor* target = mine.find(p.key());
      LLMREC_CHECK(target != nullptr, "{}: tensor '{}' has no place in the item tower's BERT", dir, p.key());
      target->copy_(p.value());
      ++copied;
    }
    std::size_t base = 0;  // every parameter but the fresh adapters must have been loaded
    for (const auto& p : mine) base += p.key().find("lora_") == std::string::npos ? 1 : 0;
    LLMREC_CHECK(copied == base, "{}: loaded {} BERT tensors, the item tower has {}", dir, copied, base);
    auto my_buffers = bert->named_buffers();
    for (const auto& b : loaded.model->named_buffers()) {
      if (torch::Tensor* target = my_buffers.find(b.key())) target->copy_(b.value());
    }
  }
}

void check_recommender_config(const ModelConfig& cfg) {
  cfg.validate();
  if (!cfg.item_text || cfg.lora.r <= 0 || !cfg.bert.pretrained.empty())
    return;  // a pretrained tower: checked at load
  BertConfig tiny;
  tiny.vocab_size = 8;
  tiny.hidden_size = 4;
  tiny.num_hidden_layers = 1;
  tiny.num_attention_heads = 1;
  tiny.intermediate_size = 4;
  tiny.max_position_embeddings = 4;
  BertModel probe(tiny, cfg.bert.add_pooler);
  LoraOptions lora;
  lora.r = 1;
  lora.alpha = cfg.lora.alpha;
  lora.target_modules = cfg.lora.targets;
  try {
    apply_lora(probe, lora);
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw ConfigError(fmt::format("invalid model configuration:\n  model.lora.targets: {}", e.what()));
  }
}

void RecommenderImpl::reset() {
  const ModelConfig& cfg = options_.config();
  const std::int64_t d = cfg.dim;

  if (cfg.item_text) {
    bert = register_module("bert", BertModel(bert_config_, cfg.bert.add_pooler));
    apply_lora(bert, lora_options(cfg.lora));  // r > 0: base frozen, adapters trainable; r = 0: all trainable
    if (cfg.bert.freeze) {
      for (auto& p : bert->parameters()) p.requires_grad_(false);
      bert->train(false);
    } else if (bert->has_pooler()) {
      for (auto& p : bert->pooler->parameters()) p.requires_grad_(false);
    }
    item_proj = register_module("item_proj", torch::nn::Linear(bert_config_.hidden_size, d));
  } else {  // ID vectors only (model.item_text: false)
    bert = nullptr;
    item_proj = nullptr;
  }
  if (cfg.item_id_embedding) {
    item_id_embedding = register_module("item_id_embedding", torch::nn::Embedding(options_.id_items(), d));
    torch::NoGradGuard no_grad;
    // Small random vectors, as ID-based recommenders start: zeros would make
    // every history look alike to the user tower (all item vectors equal
    // while the text vectors are still uninformative), and the symmetry
    // breaks only slowly.
    item_id_embedding->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(d)));
  } else {
    item_id_embedding = nullptr;
  }
  user = register_module("user", UserTower(UserTowerOptions(d, cfg.user.history)
                                               .heads(cfg.user.heads)
                                               .layers(cfg.user.layers)
                                               .pooling(cfg.user.pooling)
                                               .dropout(cfg.user.dropout)
                                               .ff_dim(cfg.user.ff_dim)
                                               .activation(cfg.user.activation)
                                               .projection(cfg.user.projection)
                                               .context_sizes(context_spec_.sizes())
                                               .profile(cfg.user.profile)));
  scorer =
      register_module("scorer", BilinearScorer(BilinearScorerOptions(d).learned(cfg.score == "bilinear")));
}

std::shared_ptr<torch::nn::Module> RecommenderImpl::clone(
    const torch::optional<torch::Device>& device) const {
  auto copy = torch::nn::Cloneable<RecommenderImpl>::clone(device);
  auto mine = named_parameters();
  for (auto& p : copy->named_parameters()) p.value().requires_grad_(mine[p.key()].requires_grad());
  return copy;
}

LossOptions RecommenderImpl::loss_options() const {
  const ModelLossConfig& loss = options_.config().loss;
  return LossOptions().temperature(loss.temperature).logq_correction(loss.logq_correction);
}

torch::Tensor RecommenderImpl::adapter_regulariser() const {
  const ModelAdaLoraConfig& ada = options_.config().lora.adaptive;
  if (!ada.enabled || ada.orth_reg_weight == 0 || !bert) return {};
  const torch::Tensor penalty = adalora_orthogonal_regulariser(*bert);
  return penalty.defined() ? penalty * ada.orth_reg_weight : penalty;
}

torch::Tensor RecommenderImpl::encode_items(const torch::Tensor& tokens, const torch::Tensor& mask,
                                            const torch::Tensor& item_ids) {
  LLMREC_CHECK(tokens.defined() && tokens.dim() == 2, "encode_items: tokens must be [U, L], got {}",
               shape_of(tokens));
  if (!options_.config().item_text) {
    // The ID vector alone; items without one (cold) get zeros.
    LLMREC_CHECK(item_ids.defined(), "encode_items: model.item_text is false, so item_ids are required");
    const std::int64_t n = options_.id_items();
    const torch::Tensor ids = item_ids.to(item_id_embedding->weight.device());
    const torch::Tensor has_id = (ids >= 0).logical_and(ids < n);
    const torch::Tensor vecs = item_id_embedding(ids.clamp(0, n - 1));
    return vecs * has_id.unsqueeze(1).to(vecs.scalar_type());
  }
  return item_vectors(text_features(tokens, mask), item_ids);
}

torch::Tensor RecommenderImpl::text_features(const torch::Tensor& tokens, const torch::Tensor& mask) {
  LLMREC_CHECK(options_.config().item_text, "text_features: the model reads no text (model.item_text false)");
  if (options_.config().pooling == "mean") return bert->mean_pooled(tokens, mask);  // padding cut
  return bert->first_token(tokens, mask);  // h_[CLS], computing only what it needs
}

torch::Tensor RecommenderImpl::item_vectors(const torch::Tensor& text_features,
                                            const torch::Tensor& item_ids) {
  LLMREC_CHECK(options_.config().item_text && text_features.dim() == 2,
               "item_vectors: text features must be [U, H] of a model that reads text, got {}",
               shape_of(text_features));
  torch::Tensor vecs = item_proj(text_features);
  if (!item_id_embedding || !item_ids.defined()) return vecs;

  LLMREC_CHECK(item_ids.dim() == 1 && item_ids.size(0) == text_features.size(0) &&
                   item_ids.scalar_type() == torch::kLong,
               "item_vectors (encode_items): item_ids must be [U = {}] int64, got {}", text_features.size(0),
               shape_of(item_ids));
  const std::int64_t n = options_.id_items();
  const torch::Tensor ids = item_ids.to(vecs.device());
  torch::Tensor has_id = (ids >= 0).logical_and(ids < n);  // cold items: text only
  const double p = options_.config().id_dropout;
  if (is_training() && p > 0) {
    has_id = has_id.logical_and(torch::rand({ids.size(0)}, vecs.options()) >= p);
  }
  const torch::Tensor id_vecs = item_id_embedding(ids.clamp(0, n - 1));
  return vecs + id_vecs * has_id.unsqueeze(1).to(vecs.scalar_type());
}

void RecommenderImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (encoder_frozen()) bert->train(false);
}

std::pair<torch::Tensor, torch::Tensor> RecommenderImpl::profile_vectors(const torch::Tensor& tokens,
                                                                         const torch::Tensor& mask) {
  LLMREC_CHECK(options_.config().item_text,
               "profile_vectors: the model reads no text (model.item_text false)");
  LLMREC_CHECK(tokens.defined() && tokens.dim() == 2 && mask.defined() && mask.sizes() == tokens.sizes(),
               "profile_vectors: tokens and mask must be [B, L], got {} and {}", shape_of(tokens),
               shape_of(mask));
  const torch::Device device = item_proj->weight.device();
  const torch::Tensor present = mask.to(device).sum(1) > 0;
  const torch::Tensor rows = present.nonzero().view({-1});
  torch::Tensor vecs = torch::zeros({tokens.size(0), options_.config().dim}, item_proj->weight.options());
  if (rows.numel() == 0) return {vecs, present};
  const torch::Tensor encoded =
      encode_items(tokens.to(device).index_select(0, rows), mask.to(device).index_select(0, rows));
  return {vecs.to(encoded.scalar_type()).index_copy(0, rows, encoded), present};
}

torch::Tensor RecommenderImpl::user_vectors(const torch::Tensor& history_index,
                                            const torch::Tensor& item_vecs, const torch::Tensor& slots,
                                            const UserContext& context) {
  check_rows(history_index, "history", 2);
  LLMREC_CHECK(item_vecs.dim() == 2 && item_vecs.size(1) == options_.config().dim,
               "user_vectors: item_vecs must be [U, d = {}], got {}", options_.config().dim,
               shape_of(item_vecs));
  const std::int64_t B = history_index.size(0);
  const std::int64_t S = history_index.size(1);
  const std::int64_t U = item_vecs.size(0);
  const torch::Tensor index = history_index.to(item_vecs.device());
  const torch::Tensor mask = index >= 0;
  torch::Tensor items;
  if (U == 0) {
    items = torch::zeros({B, S, item_vecs.size(1)}, item_vecs.options());
  } else {
    items = item_vecs.index_select(0, index.clamp_min(0).reshape({-1})).view({B, S, item_vecs.size(1)});
  }
  const bool timed = !context_spec_.empty();
  LLMREC_CHECK(!timed || (context.history.defined() && context.query.defined()),
               "user_vectors: the model has time or context features (model.user.time_features, "
               "context_columns), so the history's and the query's values are required");
  const torch::Tensor history_context = timed ? context.history : torch::Tensor();
  torch::Tensor profile, has_profile;
  if (options_.config().user.profile && context.profile_tokens.defined()) {
    LLMREC_CHECK(context.profile_tokens.dim() == 2 && context.profile_tokens.size(0) == B &&
                     context.profile_mask.defined() &&
                     context.profile_mask.sizes() == context.profile_tokens.sizes(),
                 "user_vectors: the profiles must be [B = {}, L] tokens and mask, got {} and {}", B,
                 shape_of(context.profile_tokens), shape_of(context.profile_mask));
    std::tie(profile, has_profile) = profile_vectors(context.profile_tokens, context.profile_mask);
  } else if (options_.config().user.profile && context.profile_vectors.defined()) {
    profile = context.profile_vectors.to(items.device());
    has_profile =
        context.has_profile.defined() ? context.has_profile.to(items.device()) : context.has_profile;
  }
  if (profile.defined()) profile = profile.to(items.scalar_type());
  torch::Tensor u;
  if (!slots.defined()) {
    u = user(items, mask, history_context, profile, has_profile);
  } else {
    check_rows(slots, "target_slot", 1);
    u = user->forward_all(items, mask, history_context, profile, has_profile)
            .reshape({B * S, item_vecs.size(1)})
            .index_select(0, slots.to(index.device()));
  }
  if (!timed) return u;
  LLMREC_CHECK(context.query.dim() == 2 && context.query.size(0) == u.size(0),
               "user_vectors: the query's time features must be [{}, F], got {}", u.size(0),
               shape_of(context.query));
  return u + user->query_vectors(context.query).to(u.scalar_type());
}

LossResult RecommenderImpl::forward_result(const RecBatch& batch) {
  const ModelConfig& cfg = options_.config();
  LLMREC_CHECK(batch.item_tokens.defined() && batch.item_tokens.dim() == 2,
               "RecBatch.item_tokens must be [U, L], got {}", shape_of(batch.item_tokens));
  const std::int64_t U = batch.item_tokens.size(0);
  LLMREC_CHECK(batch.item_ids.defined() && batch.item_ids.dim() == 1 && batch.item_ids.size(0) == U &&
                   batch.item_ids.scalar_type() == torch::kLong,
               "RecBatch.item_ids must be [U = {}] int64, got {}", U, shape_of(batch.item_ids));
  check_rows(batch.history, "history", 2);
  check_rows(batch.target, "target", 1);
  const std::int64_t B = batch.target.size(0);
  LLMREC_CHECK(batch.history.size(0) == B, "RecBatch.history has {} users, target has {}",
               batch.history.size(0), B);
  const bool has_negatives = batch.negatives.defined() && batch.negatives.numel() > 0;
  if (has_negatives) check_rows(batch.negatives, "negatives", 1);
  if (cfg.loss.logq_correction) {
    LLMREC_CHECK(batch.item_log_q.defined() && batch.item_log_q.dim() == 1 && batch.item_log_q.size(0) == U,
                 "model.loss.logq_correction is on: RecBatch.item_log_q must be [U = {}], got {}", U,
                 shape_of(batch.item_log_q));
  }
  // Row ranges, checked with one synchronisation.
  {
    std::vector<torch::Tensor> ok = {((batch.history >= -1).logical_and(batch.history < U)).all(),
                                     ((batch.target >= 0).logical_and(batch.target < U)).all()};
    if (has_negatives) ok.push_back(((batch.negatives >= 0).logical_and(batch.negatives < U)).all());
    LLMREC_CHECK(torch::stack(ok).all().item<bool>(),
                 "RecBatch: history (-1 or a row), target and negatives must index rows of item_tokens "
                 "[0, {}); history ok: {}, target ok: {}",
                 U, ok[0].item<bool>(), ok[1].item<bool>());
  }

  const torch::Tensor item_vecs = encode_items(batch.item_tokens, batch.item_mask, batch.item_ids);
  const torch::Tensor users = user_vectors(
      batch.history, item_vecs, {},
      UserContext{
          batch.history_context, batch.query_context, batch.profile_tokens, batch.profile_mask, {}, {}});
  const torch::Tensor keys = scorer->item_keys(item_vecs);
  const torch::Device device = item_vecs.device();

  // Candidate rows: the batch's own items first, then sampled negatives
  // (the loss keeps the first occurrence of each item id).
  torch::Tensor rows = cfg.loss.negatives == "batch_items"
                           ? torch::arange(U, torch::TensorOptions().dtype(torch::kLong).device(device))
                           : std::get<0>(torch::_unique(batch.target.to(device), /*sorted=*/true));
  if (has_negatives) rows = torch::cat({rows, batch.negatives.to(device)});
  const torch::Tensor item_ids = batch.item_ids.to(device);
  const torch::Tensor cand_log_q =
      cfg.loss.logq_correction ? batch.item_log_q.to(device).index_select(0, rows) : torch::Tensor();
  const torch::Tensor weights = batch.weight.defined() ? batch.weight.to(device) : torch::Tensor();
  return recommender_loss(users, keys.index_select(0, rows), item_ids.index_select(0, rows),
                          item_ids.index_select(0, batch.target.to(device)), weights, loss_options(),
                          cand_log_q);
}

std::vector<torch::Tensor> RecommenderImpl::trainable_parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& p : parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

}  // namespace llmrec
