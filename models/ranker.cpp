#include "models/ranker.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "models/batched_matmul.h"

namespace llmrec {

namespace {

/// "Float [2, 3]" or "undefined", for error messages.
std::string shape_of(const at::Tensor& t) {
  return t.defined() ? c10::str(t.scalar_type(), " ", t.sizes()) : std::string("undefined");
}

void check_mask(const torch::Tensor& x, const torch::Tensor& mask, const char* what) {
  LLMREC_CHECK(x.dim() == 3, "{}: expected [B, S, d] vectors, got {} dims", what, x.dim());
  LLMREC_CHECK(mask.dim() == 2 && mask.size(0) == x.size(0) && mask.size(1) == x.size(1),
               "{}: mask must be [B, S] = [{}, {}], got {}", what, x.size(0), x.size(1), shape_of(mask));
  LLMREC_CHECK(mask.scalar_type() == torch::kBool, "{}: mask must be bool (true = real item), got {}", what,
               shape_of(mask));
}

}  // namespace

// --------------------------------------------------------------- attention

MaskedAttentionImpl::MaskedAttentionImpl(const MaskedAttentionOptions& options_) : options(options_) {
  reset();
}

void MaskedAttentionImpl::reset() {
  const std::int64_t d = options.dim();
  LLMREC_CHECK(d > 0 && options.heads() > 0 && d % options.heads() == 0,
               "attention: dim {} must be a positive multiple of heads {}", d, options.heads());
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * d, d}));
  in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * d}));
  out_proj = register_module("out_proj", torch::nn::Linear(d, d));
  // torch.nn.MultiheadAttention._reset_parameters
  torch::NoGradGuard no_grad;
  torch::nn::init::xavier_uniform_(in_proj_weight);
  out_proj->bias.zero_();
}

torch::Tensor MaskedAttentionImpl::forward(const torch::Tensor& query, const torch::Tensor& key_value,
                                           const torch::Tensor& key_mask, bool causal) {
  check_mask(key_value, key_mask, "attention");
  const std::int64_t d = options.dim();
  const std::int64_t h = options.heads();
  const std::int64_t dh = d / h;
  LLMREC_CHECK(
      query.dim() == 3 && query.size(0) == key_value.size(0) && query.size(2) == d && key_value.size(2) == d,
      "attention: query [B, Q, {}] and keys [B, S, {}] expected, got {} and {}", d, d, shape_of(query),
      shape_of(key_value));
  const std::int64_t B = query.size(0);
  const std::int64_t Q = query.size(1);
  const std::int64_t S = key_value.size(1);
  LLMREC_CHECK(!causal || Q == S, "attention: causal attention needs as many queries as keys, got {} and {}",
               Q, S);

  // Padded keys are zeroed first: whatever they held (even NaN) then
  // contributes neither to the output nor to any gradient.
  const torch::Tensor kv = key_value.masked_fill(~key_mask.unsqueeze(-1), 0.0);
  auto w = in_proj_weight.chunk(3, 0);
  auto b = in_proj_bias.chunk(3, 0);
  auto heads = [&](const torch::Tensor& t, std::int64_t n) {
    return t.view({B, n, h, dh}).transpose(1, 2);  // [B, h, n, dh]
  };
  torch::Tensor q = heads(torch::nn::functional::linear(query, w[0], b[0]), Q);
  torch::Tensor k = heads(torch::nn::functional::linear(kv, w[1], b[1]), S);
  torch::Tensor v = heads(torch::nn::functional::linear(kv, w[2], b[2]), S);

  // allowed [B, 1 or Q, S]: the real keys each query may see. A query with
  // none attends (uniformly, finitely) to its zeroed slots and its output
  // is replaced by zeros below: no NaN anywhere.
  torch::Tensor allowed = key_mask.unsqueeze(1);  // [B, 1, S]
  if (causal) {
    allowed = allowed.logical_and(torch::ones({Q, S}, key_mask.options()).tril().unsqueeze(0));  // [B, Q, S]
  }
  const torch::Tensor has_key = allowed.any(-1, /*keepdim=*/true);  // [B, 1 or Q, 1]
  const torch::Tensor attend = allowed.logical_or(has_key.logical_not());
  torch::Tensor logits = batched_matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(dh));
  logits = logits.masked_fill(attend.logical_not().unsqueeze(1), -std::numeric_limits<double>::infinity());
  torch::Tensor p = torch::softmax(logits, -1);
  p = torch::dropout(p, options.dropout(), is_training());
  torch::Tensor ctx = batched_matmul(p, v, {0, 2, 1, 3}).transpose(1, 2).reshape({B, Q, d});  // a view
  return out_proj(ctx).masked_fill(has_key.logical_not(), 0.0);
}

// ------------------------------------------------------- encoder layers

HistoryEncoderLayerImpl::HistoryEncoderLayerImpl(const HistoryEncoderLayerOptions& options_)
    : options(options_) {
  reset();
}

void HistoryEncoderLayerImpl::reset() {
  LLMREC_CHECK(options.activation() == "gelu" || options.activation() == "relu",
               "encoder layer: activation must be 'gelu' or 'relu', got '{}'", options.activation());
  const std::int64_t d = options.dim();
  const std::int64_t ff = options.ff_dim() > 0 ? options.ff_dim() : 4 * d;
  self_attn = register_module(
      "self_attn", MaskedAttention(MaskedAttentionOptions(d, options.heads()).dropout(options.dropout())));
  linear1 = register_module("linear1", torch::nn::Linear(d, ff));
  linear2 = register_module("linear2", torch::nn::Linear(ff, d));
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(options.eps())));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(options.eps())));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

torch::Tensor HistoryEncoderLayerImpl::activation(const torch::Tensor& x) const {
  return options.activation() == "relu" ? torch::relu(x) : torch::gelu(x);
}

torch::Tensor HistoryEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  check_mask(x, mask, "history encoder layer");
  if (options.causal()) {
    // The sequence model's blocks are pre-LN, as SASRec's: attention sees
    // normalised inputs whatever the scale of the item vectors, and the
    // residual stream keeps the items (the tower's `norm` ends the stack).
    const torch::Tensor a = norm1(x);
    torch::Tensor y = x + dropout(self_attn(a, a, mask, /*causal=*/true));
    y = y + dropout(linear2(dropout(activation(linear1(norm2(y))))));
    return y.masked_fill(~mask.unsqueeze(-1), 0.0);
  }
  torch::Tensor y = norm1(x + dropout(self_attn(x, x, mask)));
  y = norm2(y + dropout(linear2(dropout(activation(linear1(y))))));
  return y.masked_fill(~mask.unsqueeze(-1), 0.0);
}

// ------------------------------------------------------------ user tower

UserTowerImpl::UserTowerImpl(const UserTowerOptions& options_) : options(options_) {
  reset();
}

void UserTowerImpl::reset() {
  const std::int64_t d = options.dim();
  LLMREC_CHECK(options.history() > 0, "user tower: history T must be positive, got {}", options.history());
  LLMREC_CHECK(options.layers() >= 0, "user tower: layers must be >= 0, got {}", options.layers());
  LLMREC_CHECK(
      options.pooling() == "attention" || options.pooling() == "mean" || options.pooling() == "causal",
      "user tower: pooling must be 'attention', 'mean' or 'causal', got '{}'", options.pooling());
  LLMREC_CHECK(options.activation() == "gelu" || options.activation() == "relu",
               "user tower: activation must be 'gelu' or 'relu', got '{}'", options.activation());
  const bool attention = options.pooling() == "attention";
  const bool causal = options.pooling() == "causal";
  if (attention) positions = register_parameter("positions", torch::randn({options.history(), d}) * 0.02);
  // SASRec's scales: item vectors enter at sqrt(d) times their size (forward_all),
  // positions at N(0, 1/d).
  if (causal)
    positions = register_parameter("positions",
                                   torch::randn({options.history(), d}) / std::sqrt(static_cast<double>(d)));
  if (attention) query = register_parameter("query", torch::randn({1, d}) * 0.02);
  std::int64_t context_rows = 0;
  for (const std::int64_t size : options.context_sizes()) {
    LLMREC_CHECK(size >= 1, "user tower: every context feature needs at least one value, got {}", size);
    context_rows += size;
  }
  if (context_rows > 0) {
    // Slot context at the positions' scale; the query's starts at zero.
    const double scale = causal ? 1.0 / std::sqrt(static_cast<double>(d)) : 0.02;
    context = register_parameter("context", torch::randn({context_rows, d}) * scale);
    query_context = register_parameter("query_context", torch::zeros({context_rows, d}));
  }
  if (options.profile()) {  // at the positions' scale
    const double scale = causal ? 1.0 / std::sqrt(static_cast<double>(d)) : 0.02;
    profile_tag = register_parameter("profile_tag", torch::randn({1, d}) * scale);
  }
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < options.layers(); ++i) {
    layers->push_back(HistoryEncoderLayer(HistoryEncoderLayerOptions(d, options.heads())
                                              .ff_dim(options.ff_dim())
                                              .dropout(options.dropout())
                                              .eps(options.eps())
                                              .causal(causal)
                                              .activation(options.activation())));
  }
  if (attention) {
    attn = register_module(
        "attn", MaskedAttention(MaskedAttentionOptions(d, options.heads()).dropout(options.dropout())));
  }
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(options.eps())));
  proj = register_module("proj", torch::nn::Linear(d, d));
  if (!options.projection()) {  // u = norm(h): proj fixed at the identity
    torch::NoGradGuard no_grad;
    proj->weight.copy_(torch::eye(d));
    proj->bias.zero_();
    proj->weight.set_requires_grad(false);
    proj->bias.set_requires_grad(false);
  }
}

torch::Tensor UserTowerImpl::position_rows(const torch::Tensor& mask) const {
  const torch::Tensor real = mask.to(torch::kLong);
  // Real items strictly after each slot: reverse cumulative sum minus self.
  const torch::Tensor later = real.flip({1}).cumsum(1).flip({1}) - real;
  const std::int64_t last = options.history() - 1;
  return torch::where(mask, last - later, torch::full_like(later, last));
}

namespace {

void check_history(const torch::Tensor& items, const torch::Tensor& mask, const UserTowerOptions& options) {
  check_mask(items, mask, "user tower");
  LLMREC_CHECK(items.size(2) == options.dim(), "user tower: item vectors must have d = {}, got {}",
               options.dim(), items.size(2));
  LLMREC_CHECK(items.size(1) <= options.history(),
               "user tower: {} history slots exceed model.user.history T = {}; keep the most "
               "recent T items",
               items.size(1), options.history());
}

}  // namespace

torch::Tensor UserTowerImpl::context_sum(const torch::Tensor& table, const torch::Tensor& values) const {
  const std::vector<std::int64_t>& sizes = options.context_sizes();
  const auto n = static_cast<std::int64_t>(sizes.size());
  LLMREC_CHECK(
      values.defined() && values.dim() >= 1 && values.size(-1) == n && values.scalar_type() == torch::kLong,
      "user tower: context values must be [..., F = {}] int64, got {}", n, shape_of(values));
  std::vector<std::int64_t> offsets(sizes.size(), 0);
  for (std::size_t f = 1; f < sizes.size(); ++f) offsets[f] = offsets[f - 1] + sizes[f - 1];
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(table.device());
  const torch::Tensor v = values.to(table.device());
  const torch::Tensor limit = torch::tensor(sizes, longs);
  LLMREC_CHECK(((v >= 0).logical_and(v < limit)).all().item<bool>(),
               "user tower: a context value is outside its feature's range (sizes {})",
               fmt::join(sizes, ", "));
  const torch::Tensor rows = v + torch::tensor(offsets, longs);
  std::vector<std::int64_t> shape = v.sizes().vec();
  shape.push_back(table.size(1));
  const torch::Tensor emb = table.index_select(0, rows.reshape({-1})).view(shape);
  return (emb * (v > 0).unsqueeze(-1).to(emb.scalar_type())).sum(-2);
}

torch::Tensor UserTowerImpl::add_context(const torch::Tensor& h, const torch::Tensor& values) const {
  if (!context.defined()) return h;
  LLMREC_CHECK(
      values.defined() && values.dim() == 3 && values.size(0) == h.size(0) && values.size(1) == h.size(1),
      "user tower: the slots' context must be [B = {}, S = {}, F] int64, got {}", h.size(0), h.size(1),
      shape_of(values));
  return h + context_sum(context, values);
}

torch::Tensor UserTowerImpl::query_vectors(const torch::Tensor& values) {
  LLMREC_CHECK(values.defined() && values.dim() == 2, "user tower: query context must be [N, F], got {}",
               shape_of(values));
  if (!query_context.defined()) {
    return torch::zeros({values.size(0), options.dim()}, proj->weight.options());
  }
  return context_sum(query_context, values);
}

std::pair<torch::Tensor, torch::Tensor> UserTowerImpl::with_profile(const torch::Tensor& h,
                                                                    const torch::Tensor& mask,
                                                                    const torch::Tensor& profile,
                                                                    const torch::Tensor& profile_mask,
                                                                    double scale) const {
  if (!profile.defined()) return {h, mask};
  LLMREC_CHECK(options.profile(), "user tower: given a profile, but built without options.profile");
  const std::int64_t B = h.size(0);
  LLMREC_CHECK(profile.dim() == 2 && profile.size(0) == B && profile.size(1) == options.dim() &&
                   profile_mask.defined() && profile_mask.dim() == 1 && profile_mask.size(0) == B &&
                   profile_mask.scalar_type() == torch::kBool,
               "user tower: the profile must be [B = {}, d = {}] with a [B] bool mask, got {} and {}", B,
               options.dim(), shape_of(profile), shape_of(profile_mask));
  const torch::Tensor token = (profile.to(h.scalar_type()) * scale + profile_tag.to(h.scalar_type()))
                                  .masked_fill(profile_mask.logical_not().unsqueeze(-1), 0.0);
  return {torch::cat({token.unsqueeze(1), h}, 1), torch::cat({profile_mask.unsqueeze(1), mask}, 1)};
}

std::pair<torch::Tensor, torch::Tensor> UserTowerImpl::causal_states(const torch::Tensor& items,
                                                                     const torch::Tensor& mask,
                                                                     const torch::Tensor& context_values,
                                                                     const torch::Tensor& profile,
                                                                     const torch::Tensor& profile_mask) {
  const std::int64_t B = items.size(0);
  const std::int64_t S = items.size(1);
  const std::int64_t d = options.dim();
  const double scale = std::sqrt(static_cast<double>(d));
  torch::Tensor h = items * scale;
  if (S > 0) {
    h = add_context(h + positions.index_select(0, position_rows(mask).reshape({-1})).view({B, S, d}),
                    context_values);
  }
  auto [x, m] = with_profile(h, mask, profile, profile_mask, scale);
  x = torch::dropout(x.masked_fill(m.logical_not().unsqueeze(-1), 0.0), options.dropout(), is_training());
  for (const auto& layer : *layers) {
    x = layer->as<HistoryEncoderLayer>()->forward(x, m);
  }
  return {proj(norm(x.to(norm->weight.scalar_type()))), m};
}

torch::Tensor UserTowerImpl::forward_all(const torch::Tensor& items, const torch::Tensor& mask,
                                         const torch::Tensor& context_values, const torch::Tensor& profile,
                                         const torch::Tensor& profile_mask) {
  check_history(items, mask, options);
  LLMREC_CHECK(options.pooling() == "causal", "user tower: forward_all needs pooling 'causal', not '{}'",
               options.pooling());
  const torch::Tensor all = causal_states(items, mask, context_values, profile, profile_mask).first;
  // The profile's own slot predicts nothing: the outputs after each item.
  return profile.defined() ? all.narrow(1, 1, items.size(1)) : all;
}

torch::Tensor UserTowerImpl::forward(const torch::Tensor& items, const torch::Tensor& mask,
                                     const torch::Tensor& context_values, const torch::Tensor& profile,
                                     const torch::Tensor& profile_mask) {
  check_history(items, mask, options);
  const std::int64_t B = items.size(0);
  const std::int64_t S = items.size(1);
  const std::int64_t d = options.dim();

  if (options.pooling() == "causal" && (S > 0 || profile.defined())) {
    // The slot of the most recent real token (slot 0 for a user without
    // one: the learned no-history vector proj(norm(0))); the profile's
    // slot for a user with a profile and no history.
    const auto [all, m] = causal_states(items, mask, context_values, profile, profile_mask);
    const torch::Tensor slot_numbers = torch::arange(1, m.size(1) + 1, m.options().dtype(torch::kLong));
    const torch::Tensor last = (m.to(torch::kLong) * slot_numbers).argmax(1);  // [B]
    return all.gather(1, last.view({B, 1, 1}).expand({B, 1, d})).squeeze(1);
  }
  const bool attention = options.pooling() == "attention";
  torch::Tensor h = items;
  if (attention) h = h + positions.index_select(0, position_rows(mask).reshape({-1})).view({B, S, d});
  if (S > 0) h = add_context(h, context_values);
  h = h.masked_fill(mask.logical_not().unsqueeze(-1), 0.0);  // padded slots may hold anything, even NaN
  auto [x, m] = with_profile(h, mask, profile, profile_mask, 1.0);
  for (const auto& layer : *layers) {
    x = layer->as<HistoryEncoderLayer>()->forward(x, m);
  }
  torch::Tensor pooled;                 // [B, d]; zeros for a user with no real token
  if (options.pooling() == "causal") {  // no slot at all
    pooled = torch::zeros({B, d}, x.options());
  } else if (attention) {
    pooled = attn(query.expand({B, 1, d}), x, m).squeeze(1);
  } else {
    const torch::Tensor real = m.to(x.scalar_type()).sum(1, /*keepdim=*/true);
    pooled = x.sum(1) / real.clamp_min(1.0);
  }
  // In the LayerNorm's own dtype: under autocast the pooled vector is bf16,
  // and CPU autocast (LibTorch 1.13) does not cast LayerNorm's input.
  return proj(norm(pooled.to(norm->weight.scalar_type())));
}

HistoryInputs history_inputs(std::int64_t T, const ContextSpec& spec, const std::int64_t* offsets,
                             std::int64_t n, const std::int32_t* items, const std::int64_t* times,
                             const std::int32_t* codes, const std::int64_t* query_times,
                             const std::int32_t* query_codes) {
  const auto F = static_cast<std::int64_t>(spec.size());
  const auto C = static_cast<std::int64_t>(spec.column_values.size());
  HistoryInputs out;
  out.history = torch::full({n, T}, -1, torch::kLong);
  auto* h = out.history.data_ptr<std::int64_t>();
  std::int64_t* slot_values = nullptr;
  std::int64_t* query_values = nullptr;
  if (F > 0) {
    out.context = torch::zeros({n, T, F}, torch::kLong);
    out.query = torch::zeros({n, F}, torch::kLong);
    slot_values = out.context.data_ptr<std::int64_t>();
    query_values = out.query.data_ptr<std::int64_t>();
  }
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t first = offsets[r];
    const std::int64_t end = offsets[r + 1];
    for (std::int64_t j = std::max(first, end - T); j < end; ++j) {
      const std::int64_t at = r * T + (T - (end - j));  // most recent last
      h[at] = items[j];
      if (slot_values != nullptr) spec.event_values(times, codes, first, j, slot_values + at * F);
    }
    if (query_values == nullptr) continue;
    spec.values(query_times == nullptr ? kUnknownTime : query_times[r],
                times == nullptr || end == first ? kUnknownTime : times[end - 1],
                query_codes == nullptr ? nullptr : query_codes + r * C, query_values + r * F);
  }
  return out;
}

// -------------------------------------------------------------- scorer

BilinearScorerImpl::BilinearScorerImpl(const BilinearScorerOptions& options_) : options(options_) {
  reset();
}

void BilinearScorerImpl::reset() {
  LLMREC_CHECK(options.dim() > 0, "bilinear scorer: dim must be positive, got {}", options.dim());
  weight = register_parameter("weight", torch::eye(options.dim()), /*requires_grad=*/options.learned());
}

torch::Tensor BilinearScorerImpl::item_keys(const torch::Tensor& items) const {
  LLMREC_CHECK(items.dim() >= 1 && items.size(-1) == options.dim(),
               "bilinear scorer: item vectors must end in d = {}, got {}", options.dim(), shape_of(items));
  return torch::matmul(items, weight.t());
}

torch::Tensor BilinearScorerImpl::forward(const torch::Tensor& users, const torch::Tensor& items) {
  LLMREC_CHECK(users.dim() == 2 && users.size(1) == options.dim(),
               "bilinear scorer: users must be [B, {}], got {}", options.dim(), shape_of(users));
  return torch::matmul(users, item_keys(items).t());
}

}  // namespace llmrec
