#pragma once
/// The user tower (attention ranker) and the bilinear scorer of the
/// reference model (docs/architecture.md, "The model"; docs/ranker.md).
///
///   UserTower user(UserTowerOptions(128, 20).heads(2));
///   torch::Tensor u = user(history_vecs /*[B, T, d]*/, history_mask /*[B, T] bool*/);
///   BilinearScorer scorer(BilinearScorerOptions(128));
///   torch::Tensor s = scorer(u, item_vecs);            // [B, C] = u A l^T
///   torch::Tensor keys = scorer->item_keys(item_vecs); // A l per item: s = u . key
///
/// History convention: slot order is time order (oldest first, most recent
/// last); `mask` is true at real items. Padding may sit anywhere (the data
/// layer right-aligns: padding first, the most recent item in the last slot).
/// A real item's position embedding is chosen by its recency among the
/// real items only (row T-1 for the most recent, T-2 for the one before,
/// ...), so neither the values in padded slots nor the number or place of
/// padded slots change the output. Module and parameter names follow
/// torch.nn (`in_proj_weight`, `out_proj`, `self_attn`, `linear1`, `norm1`).

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/time_features.h"

namespace llmrec {

// --------------------------------------------------------------- attention

struct MaskedAttentionOptions {
  MaskedAttentionOptions(std::int64_t dim, std::int64_t heads) : dim_(dim), heads_(heads) {}
  TORCH_ARG(std::int64_t, dim);
  TORCH_ARG(std::int64_t, heads);
  /// Dropout on the attention probabilities (training mode only).
  TORCH_ARG(double, dropout) = 0.0;
};

/// Multi-head scaled dot-product attention with a key padding mask, with the
/// parameters of torch.nn.MultiheadAttention (in_proj_weight [3d, d],
/// in_proj_bias [3d], out_proj Linear(d, d); same initialisation).
/// Unlike torch's, a query whose keys are all padding gets a zero output
/// (not NaN), with zero gradients flowing back.
class MaskedAttentionImpl : public torch::nn::Cloneable<MaskedAttentionImpl> {
 public:
  MaskedAttentionImpl(std::int64_t dim, std::int64_t heads)
      : MaskedAttentionImpl(MaskedAttentionOptions(dim, heads)) {}
  explicit MaskedAttentionImpl(const MaskedAttentionOptions& options);

  void reset() override;

  /// query [B, Q, d], key_value [B, S, d], key_mask [B, S] bool (true = real
  /// key) -> [B, Q, d]. Padded keys get exactly zero weight; rows of B with
  /// no real key give zeros. `causal` (self-attention, Q == S): query q sees
  /// keys 0..q only, and a query with no real key among them gives zeros.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& key_value,
                        const torch::Tensor& key_mask, bool causal = false);

  MaskedAttentionOptions options;
  torch::Tensor in_proj_weight;
  torch::Tensor in_proj_bias;
  torch::nn::Linear out_proj{nullptr};
};
TORCH_MODULE(MaskedAttention);

// ------------------------------------------------------- encoder layers

struct HistoryEncoderLayerOptions {
  HistoryEncoderLayerOptions(std::int64_t dim, std::int64_t heads) : dim_(dim), heads_(heads) {}
  TORCH_ARG(std::int64_t, dim);
  TORCH_ARG(std::int64_t, heads);
  /// Feed-forward width; 0 = 4 x dim.
  TORCH_ARG(std::int64_t, ff_dim) = 0;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, eps) = 1e-5;
  /// Causal self-attention: slot t attends to slots 0..t only; the block is
  /// then pre-LN (SASRec's): x = x + drop(self_attn(norm1(x))),
  /// x = x + drop(linear2(drop(act(linear1(norm2(x)))))).
  TORCH_ARG(bool, causal) = false;
  /// The feed-forward activation act: "gelu" or "relu" (SASRec's).
  TORCH_ARG(std::string, activation) = "gelu";
};

/// One Transformer encoder block over a history, post-LN like
/// torch.nn.TransformerEncoderLayer(norm_first=False) but with GELU (or ReLU):
///   x = norm1(x + drop(self_attn(x, x, x, mask)))
///   x = norm2(x + drop(linear2(drop(act(linear1(x))))))
/// then padded slots are set to zero, so they never carry information.
class HistoryEncoderLayerImpl : public torch::nn::Cloneable<HistoryEncoderLayerImpl> {
 public:
  explicit HistoryEncoderLayerImpl(const HistoryEncoderLayerOptions& options);

  void reset() override;

  /// x [B, T, d], mask [B, T] bool (true = real item) -> [B, T, d].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  /// options.activation applied to x.
  torch::Tensor activation(const torch::Tensor& x) const;

  HistoryEncoderLayerOptions options;
  MaskedAttention self_attn{nullptr};
  torch::nn::Linear linear1{nullptr};
  torch::nn::Linear linear2{nullptr};
  torch::nn::LayerNorm norm1{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(HistoryEncoderLayer);

// ------------------------------------------------------------ user tower

struct UserTowerOptions {
  UserTowerOptions(std::int64_t dim, std::int64_t history) : dim_(dim), history_(history) {}
  /// d: item and user vector size.
  TORCH_ARG(std::int64_t, dim);
  /// T: history slots (rows of the position embedding).
  TORCH_ARG(std::int64_t, history);
  /// Heads of the pooling attention and of the encoder layers; divides dim.
  TORCH_ARG(std::int64_t, heads) = 2;
  /// Encoder layers before the pooling (0 = the pooling alone).
  TORCH_ARG(std::int64_t, layers) = 0;
  /// "attention": one learned query attends over the position-tagged items;
  /// "mean": the average of the items, no positions (order-blind);
  /// "causal": causal encoder layers over the position-tagged items, and
  /// the output at each slot is the user vector after that slot's item
  /// (SASRec): the last real slot at inference, every slot in training.
  TORCH_ARG(std::string, pooling) = "attention";
  TORCH_ARG(double, dropout) = 0.0;
  /// Feed-forward width of the encoder layers; 0 = 4 x dim.
  TORCH_ARG(std::int64_t, ff_dim) = 0;
  /// Feed-forward activation of the encoder layers: "gelu" or "relu".
  TORCH_ARG(std::string, activation) = "gelu";
  /// false: proj is fixed at the identity (not trained), so u = norm(h),
  /// SASRec's output.
  TORCH_ARG(bool, projection) = true;
  /// LayerNorm epsilon (torch.nn.LayerNorm's default, as the peer).
  TORCH_ARG(double, eps) = 1e-5;
  /// Categorical context features of each history slot and of the query
  /// (common/time_features.h): the number of values of each, 0 = unknown
  /// included. Empty: none.
  TORCH_ARG(std::vector<std::int64_t>, context_sizes) = {};
  /// The user's profile vector (model.user.profile) enters as one more
  /// token, before the history: forward() and forward_all() take it.
  TORCH_ARG(bool, profile) = false;
};

/// u = proj(norm(pool(h))).
///
/// pooling "attention": h = encoder^layers(items + positions), and pool is
/// multi-head attention of one learned query over the real items.
/// Parameters: positions [T, d] (normal, std 0.02), query [1, d] (normal,
/// std 0.02), layers (ModuleList of HistoryEncoderLayer), attn
/// (MaskedAttention), norm (LayerNorm(d)), proj (Linear(d, d)).
///
/// pooling "mean": h = encoder^layers(items), and pool is the mean of the
/// real items (the YouTube-DNN user tower); no positions, query or attn.
///
/// pooling "causal": h = causal-encoder^layers(dropout(sqrt(d) items +
/// positions)) with pre-LN blocks (SASRec's scales: positions N(0, 1/d)),
/// u_t = proj(norm(h_t)) at every slot t (forward_all); forward() returns
/// u at the last real slot. Parameters as "attention" without query and
/// attn. Slot t's output depends on the items of slots 0..t only, so one
/// pass over a user's sequence trains the next-item prediction after each
/// of its prefixes.
///
/// A user with no real item (all slots padding) has a zero pooled vector, so
/// u = proj(norm(0)) = proj.weight . norm.bias + proj.bias: a learned
/// "no history" vector, never NaN.
///
/// With options.context_sizes (F features): each slot's input adds
/// sum_f context[offset_f + value_f] (`context` [sum of sizes, d], at the
/// positions' scale), and query_vectors() gives sum_f
/// query_context[offset_f + value_f] (initialised to zero), which the caller
/// adds to u for the time the recommendation is for. A value 0 (unknown)
/// adds nothing.
///
/// With options.profile: `profile` [B, d] (the user's profile text through
/// the item tower) and `profile_mask` [B] bool (false = the user has none)
/// add a token before the first slot, profile + profile_tag (parameter
/// [1, d], at the positions' scale; with pooling causal the profile enters
/// at sqrt(d) times its size, as the items). Every slot attends to it (the
/// causal mask included) and the pooling reads it: a user with a profile
/// and no history gets a vector from the profile alone. Without a profile
/// (mask false) the token is padding, so the output is what it would be
/// without the option.
class UserTowerImpl : public torch::nn::Cloneable<UserTowerImpl> {
 public:
  explicit UserTowerImpl(const UserTowerOptions& options);

  void reset() override;

  /// items [B, S, d] history item vectors in time order (S <= T), mask
  /// [B, S] bool (true = real item; padded slots may hold anything, even
  /// NaN) -> u [B, d].
  /// `context` [B, S, F] int64: each slot's feature values (needed when
  /// options.context_sizes is not empty, else ignored).
  /// `profile` [B, d], `profile_mask` [B] bool: with options.profile
  /// (undefined = no user has one).
  torch::Tensor forward(const torch::Tensor& items, const torch::Tensor& mask,
                        const torch::Tensor& context = {}, const torch::Tensor& profile = {},
                        const torch::Tensor& profile_mask = {});

  /// pooling "causal" only: the user vector after each slot, [B, S, d]
  /// (slot t reads slots 0..t and the profile; padded slots hold
  /// proj(norm(0))).
  torch::Tensor forward_all(const torch::Tensor& items, const torch::Tensor& mask,
                            const torch::Tensor& context = {}, const torch::Tensor& profile = {},
                            const torch::Tensor& profile_mask = {});

  /// The query's context vector: values [N, F] int64 -> [N, d] (zeros
  /// without context features).
  torch::Tensor query_vectors(const torch::Tensor& values);

  /// Position-embedding rows used by each slot: T-1 for the most recent real
  /// item, T-1-k for the item with k more recent real items; padded slots
  /// get T-1 (their value is discarded). [B, S] int64. The causal tower
  /// uses the same rows: in a training window they count from the window's
  /// most recent item, as SASRec's left-padded positions do.
  torch::Tensor position_rows(const torch::Tensor& mask) const;

  UserTowerOptions options;
  torch::Tensor positions;
  torch::Tensor query;
  torch::Tensor context;        ///< [sum of context_sizes, d]; undefined without context features
  torch::Tensor query_context;  ///< [sum of context_sizes, d]; undefined without context features
  torch::Tensor profile_tag;    ///< [1, d]; undefined without options.profile
  torch::nn::ModuleList layers{nullptr};
  MaskedAttention attn{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear proj{nullptr};

 private:
  /// sum_f table[offset_f + values[..., f]] over the features with a value
  /// > 0: values [..., F] -> [..., d]. Error for a value outside its range.
  torch::Tensor context_sum(const torch::Tensor& table, const torch::Tensor& values) const;
  /// The slot inputs `h` [B, S, d] plus the slots' context vectors.
  torch::Tensor add_context(const torch::Tensor& h, const torch::Tensor& values) const;
  /// With options.profile and a defined `profile`: h [B, S, d] and mask
  /// [B, S] with the profile token (profile x scale + profile_tag) before
  /// slot 0 -> [B, S + 1, ...]; else h and mask as they are.
  std::pair<torch::Tensor, torch::Tensor> with_profile(const torch::Tensor& h, const torch::Tensor& mask,
                                                       const torch::Tensor& profile,
                                                       const torch::Tensor& profile_mask, double scale) const;
  /// pooling "causal": the outputs of every slot of with_profile()'s
  /// sequence, and its mask.
  std::pair<torch::Tensor, torch::Tensor> causal_states(const torch::Tensor& items, const torch::Tensor& mask,
                                                        const torch::Tensor& context,
                                                        const torch::Tensor& profile,
                                                        const torch::Tensor& profile_mask);
};
TORCH_MODULE(UserTower);

/// The user tower's inputs for `n` histories given as CSR: history r is
/// items[offsets[r] .. offsets[r+1]) (dataset item rows, oldest first), with
/// per event `times` (nullptr: unknown) and `codes` (C = the spec's context
/// columns per event, event-major; nullptr: unknown).
struct HistoryInputs {
  torch::Tensor history;  ///< [n, T] int64 the last T items, most recent last, -1 = padding
  torch::Tensor context;  ///< [n, T, F] int64 each slot's feature values; undefined without features
  torch::Tensor query;    ///< [n, F] int64 the values of the moment recommended for; the same
};

/// Builds HistoryInputs for a tower of `T` slots and the features of
/// `spec`: a slot's gap is measured from the event before it in the history
/// (also when that event is older than the window), the query's from the
/// last event. `query_times` [n] and `query_codes` [n, C] (nullptr: unknown).
HistoryInputs history_inputs(std::int64_t T, const ContextSpec& spec, const std::int64_t* offsets,
                             std::int64_t n, const std::int32_t* items, const std::int64_t* times,
                             const std::int32_t* codes, const std::int64_t* query_times,
                             const std::int32_t* query_codes);

// -------------------------------------------------------------- scorer

struct BilinearScorerOptions {
  explicit BilinearScorerOptions(std::int64_t dim) : dim_(dim) {}
  TORCH_ARG(std::int64_t, dim);
  /// false: A stays the identity (not trained): s(u, l) = u . l, SASRec's score.
  TORCH_ARG(bool, learned) = true;
};

/// s(u, l) = u^T A l with A [d, d] learned (options.learned), initialised
/// to the identity (parameter `weight`). `item_keys(l) = l A^T` is what an export stores:
/// then s(u, l) = u . key(l), a plain inner product.
class BilinearScorerImpl : public torch::nn::Cloneable<BilinearScorerImpl> {
 public:
  explicit BilinearScorerImpl(std::int64_t dim) : BilinearScorerImpl(BilinearScorerOptions(dim)) {}
  explicit BilinearScorerImpl(const BilinearScorerOptions& options);

  void reset() override;

  /// items [..., d] -> keys [..., d] (each row A l).
  torch::Tensor item_keys(const torch::Tensor& items) const;

  /// users [B, d], items [C, d] -> scores [B, C], s_bc = u_b^T A l_c.
  torch::Tensor forward(const torch::Tensor& users, const torch::Tensor& items);

  BilinearScorerOptions options;
  torch::Tensor weight;
};
TORCH_MODULE(BilinearScorer);

}  // namespace llmrec
