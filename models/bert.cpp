// HF-compatible BERT encoder (see bert.h).
#include "models/bert.h"

#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "models/batched_matmul.h"

namespace llmrec {
namespace {

using nlohmann::json;

[[noreturn]] void config_fail(const std::string& where, const std::string& message) {
  throw ConfigError(fmt::format("{}: {}", where, message));
}

void read_int(const json& j, const char* key, std::int64_t& out, bool required, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) config_fail(where, fmt::format("missing required key '{}'", key));
    return;
  }
  if (!it->is_number_integer())
    config_fail(where, fmt::format("'{}' must be an integer, got {}", key, it->dump()));
  out = it->get<std::int64_t>();
}

void read_double(const json& j, const char* key, double& out, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_number()) config_fail(where, fmt::format("'{}' must be a number, got {}", key, it->dump()));
  out = it->get<double>();
}

void read_string(const json& j, const char* key, std::string& out, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_string()) config_fail(where, fmt::format("'{}' must be a string, got {}", key, it->dump()));
  out = it->get<std::string>();
}

/// Most negative finite value of `dtype`: HF's torch.finfo(dtype).min.
double dtype_lowest(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kDouble: return std::numeric_limits<double>::lowest();
    case c10::kFloat: return std::numeric_limits<float>::lowest();
    case c10::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case c10::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    default: throw Error(fmt::format("BertModel: unsupported floating dtype {}", c10::toString(dtype)));
  }
}

std::string shape_text(const torch::Tensor& t) {
  return fmt::format("[{}]", fmt::join(t.sizes(), ", "));
}

/// Checks an index tensor [N, L] and returns it as int64 on `device`.
torch::Tensor index_input(const torch::Tensor& t, const char* name, torch::IntArrayRef shape,
                          std::int64_t limit, const char* limit_name, const torch::Device& device) {
  if (!c10::isIntegralType(t.scalar_type(), /*includeBool=*/false)) {
    throw Error(
        fmt::format("BertModel: {} must be an integer tensor, got {}", name, c10::toString(t.scalar_type())));
  }
  if (t.sizes() != shape) {
    throw Error(fmt::format("BertModel: {} has shape {}, expected [{}]", name, shape_text(t),
                            fmt::join(shape, ", ")));
  }
  torch::Tensor out = t.to(device, torch::kLong);
  if (out.numel() > 0) {
    const std::int64_t lo = out.min().item<std::int64_t>();
    const std::int64_t hi = out.max().item<std::int64_t>();
    if (lo < 0 || hi >= limit) {
      throw Error(fmt::format("BertModel: {} has values in [{}, {}], outside [0, {}) ({})", name, lo, hi,
                              limit, limit_name));
    }
  }
  return out;
}

}  // namespace

// ----------------------------------------------------------------- config

BertConfig BertConfig::from_json_string(const std::string& text, const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON: {}", name, e.what()));
  }
  if (!j.is_object()) throw IoError(fmt::format("{}: not a JSON object", name));

  BertConfig c;
  std::string model_type = "bert";
  read_string(j, "model_type", model_type, name);
  if (model_type != "bert") {
    config_fail(name,
                fmt::format("'model_type' is '{}'; only 'bert' is supported (other architectures differ in "
                            "embeddings or normalisation)",
                            model_type));
  }
  std::string position_type = "absolute";
  read_string(j, "position_embedding_type", position_type, name);
  if (position_type != "absolute") {
    config_fail(
        name, fmt::format("'position_embedding_type' is '{}'; only 'absolute' is supported", position_type));
  }
  read_int(j, "vocab_size", c.vocab_size, true, name);
  read_int(j, "hidden_size", c.hidden_size, true, name);
  read_int(j, "num_hidden_layers", c.num_hidden_layers, true, name);
  read_int(j, "num_attention_heads", c.num_attention_heads, true, name);
  read_int(j, "intermediate_size", c.intermediate_size, true, name);
  read_int(j, "max_position_embeddings", c.max_position_embeddings, true, name);
  read_int(j, "type_vocab_size", c.type_vocab_size, false, name);
  read_double(j, "layer_norm_eps", c.layer_norm_eps, name);
  read_double(j, "hidden_dropout_prob", c.hidden_dropout_prob, name);
  read_double(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, name);
  read_string(j, "hidden_act", c.hidden_act, name);
  read_double(j, "initializer_range", c.initializer_range, name);
  auto pad = j.find("pad_token_id");
  if (pad != j.end() && pad->is_null()) {
    c.pad_token_id = -1;
  } else {
    read_int(j, "pad_token_id", c.pad_token_id, false, name);
  }
  c.validate(name);
  return c;
}

BertConfig BertConfig::from_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("{}: read error", path));
  return from_json_string(text.str(), path);
}

std::string BertConfig::to_json(const std::string& architecture) const {
  nlohmann::ordered_json j;
  j["architectures"] = {architecture};
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["hidden_act"] = hidden_act;
  j["layer_norm_eps"] = layer_norm_eps;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  j["initializer_range"] = initializer_range;
  if (pad_token_id >= 0) {
    j["pad_token_id"] = pad_token_id;
  } else {
    j["pad_token_id"] = nullptr;
  }
  j["position_embedding_type"] = "absolute";
  return j.dump(2) + "\n";
}

void BertConfig::validate(const std::string& where) const {
  auto positive = [&](const char* key, std::int64_t v) {
    if (v < 1) config_fail(where, fmt::format("'{}' must be >= 1, got {}", key, v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_attention_heads", num_attention_heads);
  positive("intermediate_size", intermediate_size);
  positive("max_position_embeddings", max_position_embeddings);
  positive("type_vocab_size", type_vocab_size);
  if (num_hidden_layers < 0)
    config_fail(where, fmt::format("'num_hidden_layers' must be >= 0, got {}", num_hidden_layers));
  if (hidden_size % num_attention_heads != 0) {
    config_fail(where, fmt::format("'hidden_size' {} is not a multiple of 'num_attention_heads' {}",
                                   hidden_size, num_attention_heads));
  }
  if (!(layer_norm_eps > 0))
    config_fail(where, fmt::format("'layer_norm_eps' must be > 0, got {}", layer_norm_eps));
  for (auto [key, p] : {std::pair<const char*, double>{"hidden_dropout_prob", hidden_dropout_prob},
                        {"attention_probs_dropout_prob", attention_probs_dropout_prob}}) {
    if (!(p >= 0 && p < 1)) config_fail(where, fmt::format("'{}' must be in [0, 1), got {}", key, p));
  }
  if (!(initializer_range >= 0)) {
    config_fail(where, fmt::format("'initializer_range' must be >= 0, got {}", initializer_range));
  }
  if (hidden_act != "gelu") {
    config_fail(where,
                fmt::format("'hidden_act' is '{}'; only 'gelu' (the exact erf GELU of HF BERT) is supported",
                            hidden_act));
  }
  if (pad_token_id < -1 || pad_token_id >= vocab_size) {
    config_fail(where,
                fmt::format("'pad_token_id' {} is outside [0, vocab_size {})", pad_token_id, vocab_size));
  }
}

// ----------------------------------------------------------------- modules

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertEmbeddingsImpl::reset() {
  auto word = torch::nn::EmbeddingOptions(config.vocab_size, config.hidden_size);
  if (config.pad_token_id >= 0) word.padding_idx(config.pad_token_id);
  word_embeddings = register_module("word_embeddings", torch::nn::Embedding(word));
  position_embeddings = register_module(
      "position_embeddings", torch::nn::Embedding(config.max_position_embeddings, config.hidden_size));
  token_type_embeddings = register_module("token_type_embeddings",
                                          torch::nn::Embedding(config.type_vocab_size, config.hidden_size));
  LayerNorm = register_module(
      "LayerNorm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
  dropout = register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
  torch::NoGradGuard no_grad;
  for (auto* e : {&word_embeddings, &position_embeddings, &token_type_embeddings}) {
    (*e)->weight.normal_(0.0, config.initializer_range);
  }
  if (config.pad_token_id >= 0) word_embeddings->weight[config.pad_token_id].zero_();
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& input_ids,
                                          const torch::Tensor& token_type_ids) {
  const std::int64_t length = input_ids.size(1);
  torch::Tensor positions = torch::arange(length, input_ids.options().dtype(torch::kLong));
  torch::Tensor x = word_embeddings(input_ids) + token_type_embeddings(token_type_ids);
  x = x + position_embeddings(positions).unsqueeze(0);
  return dropout(LayerNorm(x));
}

BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertSelfAttentionImpl::reset() {
  const auto h = config.hidden_size;
  auto linear = [&](const char* name) {
    return register_module(name, LoraLinear(LoraLinearOptions(h, h).init_std(config.initializer_range)));
  };
  query = linear("query");
  key = linear("key");
  value = linear("value");
  dropout = register_module("dropout", torch::nn::Dropout(config.attention_probs_dropout_prob));
}

torch::Tensor BertSelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& additive_mask) {
  return attend(x, x, additive_mask);
}

torch::Tensor BertSelfAttentionImpl::attend(const torch::Tensor& xq, const torch::Tensor& x,
                                            const torch::Tensor& additive_mask) {
  return context(query(xq), key(x), value(x), additive_mask);
}

torch::Tensor BertSelfAttentionImpl::context(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v, const torch::Tensor& additive_mask) {
  const std::int64_t n = k.size(0);
  const std::int64_t heads = config.num_attention_heads;
  const std::int64_t head_size = config.head_size();
  // [N, L, H] -> [N, A, L, H/A]: head a owns features a*H/A .. (a+1)*H/A - 1.
  auto split = [&](const torch::Tensor& t) {
    return t.view({n, t.size(1), heads, head_size}).permute({0, 2, 1, 3});
  };
  torch::Tensor scores =
      batched_matmul(split(q), split(k).transpose(-1, -2)) / std::sqrt(static_cast<double>(head_size));
  scores = scores + additive_mask;
  torch::Tensor probs = dropout(torch::softmax(scores, -1));
  // The context stored as [N, L, A, H/A]: merging the heads is a view.
  return batched_matmul(probs, split(v), {0, 2, 1, 3})
      .permute({0, 2, 1, 3})
      .reshape({n, q.size(1), config.hidden_size});
}

BertResidualImpl::BertResidualImpl(const BertConfig& config_, std::int64_t in_features_)
    : config(config_), in_features(in_features_) {
  reset();
}

void BertResidualImpl::reset() {
  dense = register_module(
      "dense",
      LoraLinear(LoraLinearOptions(in_features, config.hidden_size).init_std(config.initializer_range)));
  LayerNorm = register_module(
      "LayerNorm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
  dropout = register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
}

torch::Tensor BertResidualImpl::forward(const torch::Tensor& h, const torch::Tensor& residual) {
  return LayerNorm(dropout(dense(h)) + residual);
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertAttentionImpl::reset() {
  self = register_module("self", BertSelfAttention(config));
  output = register_module("output", BertResidual(config, config.hidden_size));
}

torch::Tensor BertAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& additive_mask) {
  return output(self(x, additive_mask), x);
}

BertIntermediateImpl::BertIntermediateImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertIntermediateImpl::reset() {
  dense = register_module("dense", LoraLinear(LoraLinearOptions(config.hidden_size, config.intermediate_size)
                                                  .init_std(config.initializer_range)));
}

torch::Tensor BertIntermediateImpl::forward(const torch::Tensor& x) {
  return torch::gelu(dense(x));  // approximate = "none": the erf GELU
}

BertLayerImpl::BertLayerImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertLayerImpl::reset() {
  attention = register_module("attention", BertAttention(config));
  intermediate = register_module("intermediate", BertIntermediate(config));
  output = register_module("output", BertResidual(config, config.intermediate_size));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& additive_mask) {
  return from_context(attention->self(x, additive_mask), x);
}

torch::Tensor BertLayerImpl::from_context(const torch::Tensor& ctx, const torch::Tensor& input) {
  const torch::Tensor a = attention->output(ctx, input);
  return output(intermediate(a), a);
}

BertEncoderImpl::BertEncoderImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertEncoderImpl::reset() {
  layer = register_module("layer", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < config.num_hidden_layers; ++i) layer->push_back(BertLayer(config));
}

torch::Tensor BertEncoderImpl::forward(const torch::Tensor& x, const torch::Tensor& additive_mask) {
  torch::Tensor h = x;
  for (std::size_t i = 0; i < layer->size(); ++i) h = layer->at<BertLayerImpl>(i).forward(h, additive_mask);
  return h;
}

BertPoolerImpl::BertPoolerImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertPoolerImpl::reset() {
  dense = register_module(
      "dense",
      LoraLinear(
          LoraLinearOptions(config.hidden_size, config.hidden_size).init_std(config.initializer_range)));
}

torch::Tensor BertPoolerImpl::forward(const torch::Tensor& x) {
  return torch::tanh(dense(x.select(1, 0)));
}

BertModelImpl::BertModelImpl(const BertConfig& config, bool add_pooler)
    : config_(config), add_pooler_(add_pooler) {
  config_.validate("BertModel config");
  reset();
}

void BertModelImpl::reset() {
  embeddings = register_module("embeddings", BertEmbeddings(config_));
  encoder = register_module("encoder", BertEncoder(config_));
  if (add_pooler_) pooler = register_module("pooler", BertPooler(config_));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> BertModelImpl::inputs(
    const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
    const torch::Tensor& token_type_ids) const {
  if (!input_ids.defined() || input_ids.dim() != 2) {
    throw Error(fmt::format("BertModel: input_ids must be [N, L], got {}",
                            input_ids.defined() ? shape_text(input_ids) : "an undefined tensor"));
  }
  const torch::Tensor& word = embeddings->word_embeddings->weight;
  const torch::Device device = word.device();
  const auto shape = input_ids.sizes();
  if (shape[1] > config_.max_position_embeddings) {
    throw Error(fmt::format("BertModel: sequence length {} exceeds max_position_embeddings {}", shape[1],
                            config_.max_position_embeddings));
  }
  torch::Tensor ids = index_input(input_ids, "input_ids", shape, config_.vocab_size, "vocab_size", device);
  torch::Tensor types = token_type_ids.defined()
                            ? index_input(token_type_ids, "token_type_ids", shape, config_.type_vocab_size,
                                          "type_vocab_size", device)
                            : torch::zeros_like(ids);
  torch::Tensor mask = attention_mask;
  if (!mask.defined()) {
    mask = torch::ones_like(ids);
  } else if (mask.sizes() != shape) {
    throw Error(fmt::format("BertModel: attention_mask has shape {}, expected [{}]", shape_text(mask),
                            fmt::join(shape, ", ")));
  } else if (mask.is_complex()) {
    throw Error("BertModel: attention_mask must be integer, bool or floating point");
  }
  return {ids, types, mask.to(device)};
}

BertOutput BertModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                  const torch::Tensor& token_type_ids) {
  auto [ids, types, mask] = inputs(input_ids, attention_mask, token_type_ids);
  torch::Tensor x = embeddings(ids, types);
  x = encoder(x, bert_additive_mask(mask, x.scalar_type()));
  BertOutput out;
  out.last_hidden_state = x;
  if (add_pooler_) out.pooler_output = pooler(x);
  return out;
}

namespace {

/// The tokens a packed forward computes, [T] flat indices into N x L, and
/// the moves between [T, H] (token-wise work: projections, feed-forward,
/// LayerNorm) and [N, L, H] (attention; zeros at the tokens left out).
struct Packing {
  torch::Tensor index;
  std::int64_t n = 0, len = 0;

  torch::Tensor pad(const torch::Tensor& t) const {
    return torch::zeros({n * len, t.size(1)}, t.options()).index_copy_(0, index, t).view({n, len, t.size(1)});
  }
  torch::Tensor unpad(const torch::Tensor& t) const {
    return t.reshape({n * len, t.size(-1)}).index_select(0, index);
  }
};

/// BertLayer::forward on the packed tokens xt [T, H] -> [T, H].
torch::Tensor packed_layer(BertLayerImpl& layer, const torch::Tensor& xt, const Packing& p,
                           const torch::Tensor& additive_mask) {
  BertSelfAttentionImpl& self = *layer.attention->self;
  const torch::Tensor ctx =
      self.context(p.pad(self.query(xt)), p.pad(self.key(xt)), p.pad(self.value(xt)), additive_mask);
  return layer.from_context(p.unpad(ctx), xt);
}

/// The embeddings and the first `layers` layers of `model` on the tokens
/// `keep` ([N x L] bool) alone: xt [T, H] and what the rest needs.
struct PackedRun {
  Packing p;
  torch::Tensor xt, additive;
};

PackedRun run_packed(BertModelImpl& model, const torch::Tensor& ids, const torch::Tensor& types,
                     const torch::Tensor& mask, const torch::Tensor& keep, std::size_t layers) {
  PackedRun r;
  r.p.index = keep.nonzero().squeeze(1);
  r.p.n = ids.size(0);
  r.p.len = ids.size(1);
  const torch::Tensor x = model.embeddings(ids, types);
  r.additive = bert_additive_mask(mask, x.scalar_type());
  r.xt = r.p.unpad(x);
  auto& all = *model.encoder->layer;
  for (std::size_t i = 0; i < layers; ++i)
    r.xt = packed_layer(all.at<BertLayerImpl>(i), r.xt, r.p, r.additive);
  return r;
}

/// One past each row's last real token, [N] int64 (0 for a row without
/// any); L >= 1.
torch::Tensor row_ends(const torch::Tensor& mask) {
  const torch::Tensor positions = torch::arange(1, mask.size(1) + 1, mask.options().dtype(torch::kLong));
  return (mask.ne(0).to(torch::kLong) * positions).amax(1);
}

/// The length every row of a batch (N, L >= 1) fits in: one past the last
/// real token of the longest row, or all of L where a row has no real
/// token (its attention spreads over all of its padding). Tokens past it
/// never reach a kept one, so cutting them changes nothing but the work.
std::int64_t fitting_length(const torch::Tensor& mask) {
  const torch::Tensor ends = row_ends(mask);
  if (ends.eq(0).any().item<bool>()) return mask.size(1);
  return ends.max().item<std::int64_t>();
}

/// hidden_at on validated inputs.
torch::Tensor packed_hidden_at(BertModelImpl& model, const torch::Tensor& ids, const torch::Tensor& types,
                               const torch::Tensor& mask, const torch::Tensor& pos) {
  const std::int64_t n = ids.size(0), len = ids.size(1), m = pos.numel(), h = model.config().hidden_size;
  // Each position becomes query slot j of its row: a [N, Q] table of
  // columns (Q = the most positions of any row; unused slots ask for
  // column 0 and are dropped), and each position's flat slot n * Q + j.
  const torch::Tensor row = pos.div(len, "floor");
  const torch::Tensor order = std::get<1>(torch::sort(row, c10::optional<bool>(true), 0));  // stable
  const torch::Tensor counts = torch::bincount(row, {}, n);
  const torch::Tensor first = counts.cumsum(0) - counts;  // each row's first place in `order`
  torch::Tensor slot = torch::empty_like(pos);
  slot.index_put_({order},
                  torch::arange(m, pos.options()) - first.index_select(0, row.index_select(0, order)));
  const std::int64_t q = m > 0 ? std::max<std::int64_t>(1, counts.max().item<std::int64_t>()) : 1;
  torch::Tensor columns = torch::zeros({n, q}, pos.options());
  columns.index_put_({row, slot}, pos - row * len);

  // Token-wise work on the tokens that matter only: the real ones, the
  // asked ones and every token of a row without real tokens (whose
  // attention, as HF's, spreads over its padding). Padding never reaches
  // them, so leaving the rest out changes nothing but the work.
  const std::size_t layers = model.encoder->layer->size();
  if (layers == 0) return model.embeddings(ids, types).reshape({n * len, h}).index_select(0, pos);
  const torch::Tensor real = mask.ne(0);
  torch::Tensor keep = real.logical_or(real.any(1, /*keepdim=*/true).logical_not()).reshape({-1});
  if (m > 0) keep.index_fill_(0, pos, true);
  const std::size_t last = layers - 1;
  const PackedRun r = run_packed(model, ids, types, mask, keep, last);
  // The last layer: keys and values of the tokens, the rest at the queries.
  BertLayerImpl& top = model.encoder->layer->at<BertLayerImpl>(last);
  BertSelfAttentionImpl& self = *top.attention->self;
  const torch::Tensor xq = r.p.pad(r.xt).gather(1, columns.unsqueeze(2).expand({n, q, h}));
  const torch::Tensor ctx =
      self.context(self.query(xq), r.p.pad(self.key(r.xt)), r.p.pad(self.value(r.xt)), r.additive);
  return top.from_context(ctx, xq).reshape({n * q, h}).index_select(0, row * q + slot);
}

/// Rows grouped by their length (one past the last real token, rounded up
/// to 4), each group cut to it and given to `run` (ids, types, mask -> one
/// row each), the results back in the input order.
using RowsFn = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>;

torch::Tensor by_length(const torch::Tensor& ids, const torch::Tensor& types, const torch::Tensor& mask,
                        const RowsFn& run) {
  const std::int64_t n = ids.size(0), full = ids.size(1);
  if (n == 0 || full == 0) return run(ids, types, mask);
  // Length of each row: one past its last real token, rounded up to 4.
  torch::Tensor used = row_ends(mask).clamp_min(1);
  used = ((used + 3) / 4 * 4).clamp_max(full).cpu();
  const torch::Tensor sorted = std::get<0>(torch::_unique(used, /*sorted=*/true));
  if (sorted.numel() == 1 && sorted.item<std::int64_t>() == full) return run(ids, types, mask);
  std::vector<torch::Tensor> parts, rows;
  for (std::int64_t i = 0; i < sorted.numel(); ++i) {
    const std::int64_t len = sorted[i].item<std::int64_t>();
    torch::Tensor r = used.eq(len).nonzero().squeeze(1).to(ids.device());
    rows.push_back(r);
    parts.push_back(run(ids.index_select(0, r).narrow(1, 0, len), types.index_select(0, r).narrow(1, 0, len),
                        mask.index_select(0, r).narrow(1, 0, len)));
  }
  // Back to the input order (differentiable: a permutation of the rows).
  const torch::Tensor order = torch::cat(rows);
  const torch::Tensor inverse =
      torch::empty_like(order).index_put_({order}, torch::arange(n, order.options()));
  return torch::cat(parts).index_select(0, inverse);
}

}  // namespace

torch::Tensor BertModelImpl::first_token(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                         const torch::Tensor& token_type_ids) {
  auto [ids, types, mask] = inputs(input_ids, attention_mask, token_type_ids);
  const std::int64_t n = ids.size(0);
  if (n == 0) return torch::zeros({0, config_.hidden_size}, embeddings->word_embeddings->weight.options());
  if (ids.size(1) == 0) throw Error("BertModel: first_token needs sequences of length >= 1, got length 0");
  const std::int64_t len = fitting_length(mask);
  auto cut = [&](const torch::Tensor& t) { return t.narrow(1, 0, len); };
  return packed_hidden_at(*this, cut(ids), cut(types), cut(mask), torch::arange(n, ids.options()) * len);
}

torch::Tensor BertModelImpl::hidden_at(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                       const torch::Tensor& positions, const torch::Tensor& token_type_ids) {
  auto [ids, types, mask] = inputs(input_ids, attention_mask, token_type_ids);
  const std::int64_t n = ids.size(0), len = ids.size(1), m = positions.numel(), h = config_.hidden_size;
  const torch::Tensor pos = positions.reshape({-1}).to(torch::kLong).to(ids.device());
  if (m > 0) {
    const auto [lo, hi] = torch::aminmax(pos);
    if (lo.item<std::int64_t>() < 0 || hi.item<std::int64_t>() >= n * len) {
      throw Error(fmt::format("BertModel: positions must lie in [0, {}) (N x L of input_ids), got [{}, {}]",
                              n * len, lo.item<std::int64_t>(), hi.item<std::int64_t>()));
    }
  }
  if (n * len == 0) return torch::zeros({0, h}, embeddings->word_embeddings->weight.options());
  return packed_hidden_at(*this, ids, types, mask, pos);
}

torch::Tensor BertModelImpl::mean_pooled(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                         const torch::Tensor& token_type_ids) {
  auto [ids, types, mask] = inputs(input_ids, attention_mask, token_type_ids);
  return by_length(
      ids, types, mask,
      [&](const torch::Tensor& g_ids, const torch::Tensor& g_types, const torch::Tensor& g_mask) {
        torch::Tensor x = embeddings(g_ids, g_types);
        x = encoder(x, bert_additive_mask(g_mask, x.scalar_type()));
        const torch::Tensor m = g_mask.to(x.scalar_type()).unsqueeze(-1);
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0);
      });
}

torch::Tensor bert_additive_mask(const torch::Tensor& attention_mask, c10::ScalarType dtype) {
  return (1.0 - attention_mask.to(dtype)).unsqueeze(1).unsqueeze(2) * dtype_lowest(dtype);
}

}  // namespace llmrec
