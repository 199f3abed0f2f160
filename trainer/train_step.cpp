#include "trainer/train_step.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "common/error.h"
#include "models/loss.h"
#include "trainer/autocast.h"

namespace llmrec {
namespace {

at::Tensor cat_or_empty(const std::vector<at::Tensor>& parts, const at::Tensor& like) {
  if (parts.empty()) return like.new_empty({0});
  return at::cat(parts, 0);
}

}  // namespace

namespace {

using StepClock = std::chrono::steady_clock;

double seconds_between(StepClock::time_point a, StepClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Examples of this micro-step on every rank (the loss normaliser).
std::int64_t global_examples(const StepContext& ctx, std::int64_t b) {
  if (ctx.comm == nullptr || ctx.comm->size() <= 1) return b;
  at::Tensor n = at::tensor({b}, at::kLong);
  ctx.comm->all_reduce(n);
  return n.item<std::int64_t>();
}

/// The ids the ID table sees: cold items get none (mapped past the table),
/// on the CPU before the batch moves to the model's device.
torch::Tensor embedding_ids(const Batch& batch, const StepContext& ctx) {
  torch::Tensor ids = batch.item_ids;
  if (ctx.cold == nullptr || batch.item_ids.numel() == 0) return ids;
  torch::Tensor cold = torch::from_blob(const_cast<std::uint8_t*>(ctx.cold->data()),
                                        {static_cast<std::int64_t>(ctx.cold->size())}, torch::kByte);
  torch::Tensor is_cold = cold.index_select(0, batch.item_ids).to(torch::kBool);
  return torch::where(is_cold, torch::full_like(ids, ctx.num_items), ids);
}

/// What the loss needs of one rank's micro-batch, on the model's device.
struct StepForward {
  torch::Tensor user_vecs;   ///< [targets, d]
  torch::Tensor keys;        ///< this rank's candidates' keys [C, d]
  torch::Tensor ids;         ///< their item ids [C]
  torch::Tensor log_q;       ///< their log q [C]
  torch::Tensor target_ids;  ///< [targets]
  torch::Tensor weights;     ///< [targets]
  /// Sharded item encoding (StepContext::shard_items): every rank's item
  /// vectors gathered, a leaf [U, d]; this rank's share of them with its
  /// graph, rows [own_offset, own_offset + own_items.size(0)).
  torch::Tensor shared_items;
  torch::Tensor own_items;
  std::int64_t own_offset = 0;
};

/// The rows (into item_ids) encoded again for the encoder's gradient when
/// every row's value is kept (train.item_cache_refresh), with their gradient
/// weights: the batch's own items (its histories' items and its targets,
/// weight 1) and as many of the other candidates, drawn uniformly without
/// replacement, weighted (other candidates) / (drawn), an unbiased estimate
/// of the other candidates' share of the encoder's gradient (all of them,
/// weight 1, when there are no more of them than own items).
std::pair<torch::Tensor, torch::Tensor> gradient_rows(const Batch& dev, const torch::Tensor& cand_rows) {
  const std::int64_t u = dev.item_ids.numel();
  const auto longs = dev.item_ids.options();
  torch::Tensor own = torch::zeros({u}, longs.dtype(torch::kBool));
  if (dev.history.defined() && dev.history.numel() > 0) {
    const torch::Tensor h = dev.history.flatten();
    own.index_fill_(0, h.masked_select(h >= 0), true);
  }
  if (dev.target.defined() && dev.target.numel() > 0) own.index_fill_(0, dev.target, true);
  torch::Tensor other = torch::zeros({u}, longs.dtype(torch::kBool));
  if (cand_rows.numel() > 0) other.index_fill_(0, cand_rows, true);
  other = other.logical_and(own.logical_not()).nonzero().view({-1});
  const torch::Tensor own_rows = own.nonzero().view({-1});
  const std::int64_t n_other = other.numel();
  const std::int64_t drawn = std::min(n_other, own_rows.numel());
  torch::Tensor rows = own_rows;
  torch::Tensor weight = torch::ones({own_rows.numel()}, longs.dtype(torch::kFloat));
  if (drawn > 0) {
    const torch::Tensor pick = other.index_select(0, torch::randperm(n_other, longs).narrow(0, 0, drawn));
    rows = torch::cat({own_rows, pick});
    weight =
        torch::cat({weight, torch::full({drawn}, static_cast<double>(n_other) / static_cast<double>(drawn),
                                        weight.options())});
  }
  return {rows, weight};
}

/// The candidates' rows (into item_ids): every item of the batch
/// (batch_items), or its targets and negatives.
torch::Tensor candidate_rows(const Batch& dev, const ModelConfig& mc, const torch::TensorOptions& longs) {
  if (mc.loss.negatives == "batch_items") return torch::arange(dev.item_ids.numel(), longs);
  std::vector<torch::Tensor> parts;
  if (dev.size() > 0) parts.push_back(dev.target);
  if (dev.negatives.defined() && dev.negatives.numel() > 0) parts.push_back(dev.negatives);
  return parts.empty() ? torch::empty({0}, longs) : std::get<0>(torch::_unique(torch::cat(parts)));
}

/// Sharded item encoding (StepContext::shard_items). The ranks holding
/// items must hold the same ones (checked by their count and id sums, the
/// same verdict on every rank); a rank without examples holds none and
/// encodes none. Each holding rank encodes its contiguous share; the shares
/// are all-gathered into f.shared_items. Returns this rank's item vectors
/// ([0, d] when it holds none).
torch::Tensor shard_encode(Recommender& model, const Batch& dev, const torch::Tensor& emb_ids,
                           const StepContext& ctx, std::int64_t d, StepForward& f) {
  Communicator& comm = *ctx.comm;
  const std::int64_t u = dev.item_ids.numel();
  std::int64_t id_sum = 0;
  std::int64_t id_squares = 0;
  if (u > 0) {
    const torch::Tensor ids = dev.item_ids.to(torch::kCPU);
    id_sum = ids.sum().item<std::int64_t>();
    id_squares = ids.mul(ids).sum().item<std::int64_t>();
  }
  const std::vector<at::Tensor> sigs = comm.all_gather_v(at::tensor({u, id_sum, id_squares}, at::kLong));
  std::vector<int> holders;
  at::Tensor first;
  for (std::size_t r = 0; r < sigs.size(); ++r) {
    const at::Tensor sig = sigs[r].to(torch::kCPU);
    if (sig[0].item<std::int64_t>() == 0) continue;
    if (!first.defined()) first = sig;
    LLMREC_CHECK(torch::equal(sig, first),
                 "sharded item encoding: rank {} holds other items than rank {} ({} against {} items)", r,
                 holders.front(), sig[0].item<std::int64_t>(), first[0].item<std::int64_t>());
    holders.push_back(static_cast<int>(r));
  }
  // Gathered in the parameters' dtype (float32 under bf16 autocast), which
  // a rank without items knows too.
  const auto floats = torch::TensorOptions().dtype(model->item_proj->weight.scalar_type()).device(ctx.device);
  if (holders.empty()) return torch::zeros({0, d}, floats);  // no rank has examples
  const std::int64_t total = first[0].item<std::int64_t>();
  const auto me = std::find(holders.begin(), holders.end(), comm.rank());
  const auto a = static_cast<std::int64_t>(holders.size());
  const std::int64_t k = me == holders.end() ? -1 : me - holders.begin();
  const std::int64_t lo = k < 0 ? 0 : k * total / a;
  const std::int64_t hi = k < 0 ? 0 : (k + 1) * total / a;
  f.own_offset = lo;
  f.own_items =
      hi > lo ? model->encode_items(dev.item_tokens.narrow(0, lo, hi - lo),
                                    dev.item_mask.narrow(0, lo, hi - lo), emb_ids.narrow(0, lo, hi - lo))
              : torch::zeros({0, d}, floats);
  const std::vector<at::Tensor> parts =
      comm.all_gather_v(f.own_items.detach().to(floats.dtype()).contiguous());
  f.shared_items = cat_or_empty(parts, parts.front()).view({-1, d});
  LLMREC_CHECK(f.shared_items.size(0) == total,
               "sharded item encoding: {} item vectors gathered for {} items", f.shared_items.size(0), total);
  f.shared_items.requires_grad_(true);
  return u > 0 ? f.shared_items : torch::zeros({0, d}, f.shared_items.options());
}

/// The item tower over the batch's unique items, the candidates (the
/// targets and sampled negatives, or every item of the batch) and the user
/// tower.
StepForward step_forward(Recommender& model, const Batch& dev, const torch::Tensor& emb_ids,
                         const StepContext& ctx) {
  const torch::Device& device = ctx.device;
  const ModelConfig& mc = model->options().config();
  const std::int64_t b = dev.size();
  const std::int64_t d = mc.dim;
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat).device(device);
  const std::int64_t u = dev.item_ids.numel();
  const torch::Tensor cand_rows = candidate_rows(dev, mc, longs);
  StepForward f;
  torch::Tensor item_vecs;
  if (ctx.shard_items && ctx.text_cache == nullptr && ctx.comm != nullptr && ctx.comm->size() > 1) {
    item_vecs = shard_encode(model, dev, emb_ids, ctx, d, f);
  } else if (u == 0) {
    item_vecs = torch::zeros({0, d}, floats);
  } else if (ctx.text_cache != nullptr && model->encoder_frozen()) {  // every row kept
    item_vecs = model->item_vectors(
        ctx.text_cache->features(model, dev.item_ids, dev.item_tokens, dev.item_mask), emb_ids);
  } else if (ctx.text_cache != nullptr) {  // kept values, the encoder's gradient through some rows
    const auto [rows, weight] = gradient_rows(dev, cand_rows);
    item_vecs = model->item_vectors(
        ctx.text_cache->features(model, dev.item_ids, dev.item_tokens, dev.item_mask, rows, weight), emb_ids);
  } else {
    item_vecs = model->encode_items(dev.item_tokens, dev.item_mask, emb_ids);
  }
  f.keys = model->item_keys(item_vecs.index_select(0, cand_rows));
  f.ids = u > 0 ? dev.item_ids.index_select(0, cand_rows) : torch::empty({0}, longs);
  f.log_q = dev.item_log_q.defined() && dev.item_log_q.numel() > 0
                ? dev.item_log_q.index_select(0, cand_rows)
                : torch::zeros({cand_rows.numel()}, floats);
  f.user_vecs =
      b > 0 ? model->user_vectors(
                  dev.history, item_vecs, dev.target_slot,
                  UserContext{
                      dev.history_context, dev.query_context, dev.profile_tokens, dev.profile_mask, {}, {}})
            : torch::zeros({0, d}, floats);
  f.target_ids = b > 0 ? dev.item_ids.index_select(0, dev.target) : torch::empty({0}, longs);
  f.weights = b > 0 ? dev.weight : torch::empty({0}, floats);
  return f;
}

/// The weighted loss sum over the targets against `keys` (with ids, log q).
torch::Tensor weighted_loss(Recommender& model, const StepForward& f, const torch::Tensor& keys,
                            const torch::Tensor& ids, const torch::Tensor& log_q) {
  LossResult lr =
      recommender_loss(f.user_vecs, keys, ids, f.target_ids, f.weights, model->loss_options(), log_q);
  return (lr.nll * f.weights).sum();
}

/// The loss's gradient on `gathered` (every rank's rows, a leaf without
/// their graph), summed over the ranks (in float32 for bf16 rows), pushed
/// into this rank's own rows [offset, offset + own.size(0)) in one backward
/// pass with the loss and the penalty, so the reducer's hooks fire once per
/// parameter. `loss` is undefined on a rank without targets.
void backward_through_gathered(Communicator& comm, const torch::Tensor& loss, const torch::Tensor& gathered,
                               const torch::Tensor& own, std::int64_t offset, const torch::Tensor& penalty) {
  torch::Tensor grad;
  if (loss.defined()) {
    grad = torch::autograd::grad({loss}, {gathered}, {}, /*retain_graph=*/true, /*create_graph=*/false,
                                 /*allow_unused=*/true)[0];
  }
  if (!grad.defined()) grad = torch::zeros_like(gathered);
  const bool low = grad.scalar_type() == torch::kBFloat16 || grad.scalar_type() == torch::kHalf;
  torch::Tensor sum = (low ? grad.to(torch::kFloat) : grad).contiguous();
  comm.all_reduce(sum);
  grad = sum.to(own.scalar_type());
  std::vector<torch::Tensor> roots, grads;
  if (loss.defined()) {
    roots.push_back(loss);
    grads.push_back(torch::ones_like(loss));
  }
  if (own.numel() > 0) {
    roots.push_back(own);
    grads.push_back(grad.narrow(0, offset, own.size(0)));
  }
  if (penalty.defined()) {
    roots.push_back(penalty);
    grads.push_back(torch::ones_like(penalty));
  }
  if (!roots.empty()) torch::autograd::backward(roots, grads);
}

}  // namespace

namespace {

/// Puts a module in inference mode for a scope and back (a frozen encoder
/// is in inference mode already and stays there).
class InferenceMode {
 public:
  explicit InferenceMode(torch::nn::Module& m) : m_(m), was_training_(m.is_training()) {
    if (was_training_) m_.eval();
  }
  ~InferenceMode() {
    if (was_training_) m_.train();
  }
  InferenceMode(const InferenceMode&) = delete;
  InferenceMode& operator=(const InferenceMode&) = delete;

 private:
  torch::nn::Module& m_;
  bool was_training_;
};

}  // namespace

torch::Tensor TextFeatureCache::features(Recommender& model, const torch::Tensor& item_ids,
                                         const torch::Tensor& tokens, const torch::Tensor& mask) {
  LLMREC_CHECK(item_ids.dim() == 1 && item_ids.scalar_type() == torch::kLong && tokens.dim() == 2 &&
                   tokens.size(0) == item_ids.size(0) && mask.sizes() == tokens.sizes(),
               "TextFeatureCache: item_ids [U] int64 with tokens and mask [U, L], got {}, {} and {}",
               c10::str(item_ids.sizes()), c10::str(tokens.sizes()), c10::str(mask.sizes()));
  if (!kept_rows_.defined()) kept_rows_ = torch::zeros({num_items_}, item_ids.options().dtype(torch::kBool));
  if (item_ids.numel() > 0) {
    const auto [lo, hi] = torch::aminmax(item_ids);
    LLMREC_CHECK(lo.item<std::int64_t>() >= 0 && hi.item<std::int64_t>() < num_items_,
                 "TextFeatureCache: item ids in [{}, {}] outside [0, {})", lo.item<std::int64_t>(),
                 hi.item<std::int64_t>(), num_items_);
  }
  const torch::Tensor missing = kept_rows_.index_select(0, item_ids).logical_not().nonzero().view({-1});
  if (missing.numel() > 0) {
    torch::NoGradGuard no_grad;
    InferenceMode inference(*model->bert);
    const torch::Tensor feats =
        model->text_features(tokens.index_select(0, missing), mask.index_select(0, missing));
    if (!table_.defined()) {
      table_ = torch::zeros({num_items_, feats.size(1)}, feats.options().dtype(torch::kFloat));
    }
    const torch::Tensor ids = item_ids.index_select(0, missing);
    table_.index_copy_(0, ids, feats.to(table_.scalar_type()));
    kept_rows_.index_fill_(0, ids, true);
    kept_ += missing.numel();
  }
  if (!table_.defined()) {  // U = 0
    torch::NoGradGuard no_grad;
    return model->text_features(tokens, mask).to(torch::kFloat);
  }
  return table_.index_select(0, item_ids);
}

torch::Tensor TextFeatureCache::features(Recommender& model, const torch::Tensor& item_ids,
                                         const torch::Tensor& tokens, const torch::Tensor& mask,
                                         const torch::Tensor& fresh, const torch::Tensor& weight) {
  torch::Tensor kept = features(model, item_ids, tokens, mask);
  if (fresh.numel() == 0) return kept;
  LLMREC_CHECK(weight.dim() == 1 && weight.size(0) == fresh.size(0),
               "TextFeatureCache: {} gradient weights for {} rows", weight.numel(), fresh.numel());
  const torch::Tensor now =
      model->text_features(tokens.index_select(0, fresh), mask.index_select(0, fresh)).to(kept.scalar_type());
  // The values stay the kept rows' (now - now.detach() is exactly 0), so no
  // candidate can be told from the others by its age or its dropout (the
  // targets are always the batch's own); the gradient flows through `now`,
  // times each row's weight.
  const torch::Tensor grad_path = (now - now.detach()) * weight.to(now.dtype()).unsqueeze(1);
  return kept.index_copy(0, fresh, kept.index_select(0, fresh) + grad_path);
}

void TextFeatureCache::clear() {
  if (kept_rows_.defined()) kept_rows_.fill_(false);
  kept_ = 0;
}

std::pair<torch::Tensor, torch::Tensor> TextFeatureCache::state() const {
  if (!table_.defined()) return {};
  return {table_, kept_rows_.to(torch::kUInt8)};
}

void TextFeatureCache::restore(const torch::Tensor& table, const torch::Tensor& kept, std::int64_t width,
                               const std::string& what) {
  if (table.dim() != 2 || table.size(0) != num_items_ || table.size(1) != width || kept.dim() != 1 ||
      kept.size(0) != num_items_) {
    throw IoError(fmt::format("{}: kept item features of shape {} and {}, expected [{}, {}] and [{}]", what,
                              c10::str(table.sizes()), c10::str(kept.sizes()), num_items_, width,
                              num_items_));
  }
  table_ = table.to(torch::kFloat).clone();
  kept_rows_ = kept.to(table.device()).ne(0);
  kept_ = kept_rows_.sum().item<std::int64_t>();
}

MicroStepResult train_micro_step(Recommender& model, const Batch& batch, const StepContext& ctx, bool sync) {
  const std::int64_t b = batch.size();
  const int world = ctx.comm != nullptr ? ctx.comm->size() : 1;
  const auto t_start = StepClock::now();
  const std::int64_t n_global = global_examples(ctx, b);
  MicroStepResult result{0.0, b, n_global};
  if (n_global == 0) return result;
  const double scale =
      static_cast<double>(world) / (static_cast<double>(ctx.micro_batches) * static_cast<double>(n_global));

  // What the adapters add to the loss (AdaLoRA's orthogonality penalty), a
  // share on every rank and micro-step: the reducer's average is it once.
  torch::Tensor penalty = model->adapter_regulariser();
  if (penalty.defined()) penalty = penalty / static_cast<double>(ctx.micro_batches);

  Batch cpu = batch;
  cpu.item_tokens = batch.item_tokens.narrow(1, 0, ctx.text_len);
  cpu.item_mask = batch.item_mask.narrow(1, 0, ctx.text_len);
  if (batch.profile_tokens.defined()) {
    cpu.profile_tokens = batch.profile_tokens.narrow(1, 0, ctx.text_len);
    cpu.profile_mask = batch.profile_mask.narrow(1, 0, ctx.text_len);
  }
  const torch::Tensor emb_ids = embedding_ids(batch, ctx).to(ctx.device, /*non_blocking=*/true);
  const Batch dev = batch_to(cpu, ctx.device);

  // Forward up to the loss; with run.precision bf16 under autocast.
  std::optional<AutocastGuard> autocast;
  autocast.emplace(ctx.device.type(), ctx.bf16);
  const StepForward f = step_forward(model, dev, emb_ids, ctx);
  std::unique_ptr<GradientReducer::NoSync> no_sync;
  if (!sync && ctx.reducer != nullptr) no_sync = std::make_unique<GradientReducer::NoSync>(*ctx.reducer);

  // The candidates the loss ranks: this rank's, or with global negatives
  // every rank's keys, gathered without their graph. Gathered rows (those
  // keys, or the shared-out item vectors) get their summed gradient pushed
  // back into this rank's own rows.
  torch::Tensor keys = f.keys, ids = f.ids, log_q = f.log_q;
  torch::Tensor gathered, own;
  std::int64_t own_offset = 0;
  if (ctx.global_negatives && ctx.comm != nullptr && world > 1) {
    LLMREC_CHECK(!f.shared_items.defined(), "sharded item encoding with global negatives");
    Communicator& comm = *ctx.comm;
    const std::int64_t d = f.keys.size(1);
    auto key_parts = comm.all_gather_v(f.keys.detach().contiguous());
    auto id_parts = comm.all_gather_v(f.ids.contiguous());
    auto logq_parts = comm.all_gather_v(f.log_q.contiguous());
    for (int r = 0; r < comm.rank(); ++r) own_offset += key_parts[static_cast<std::size_t>(r)].size(0);
    keys = gathered = cat_or_empty(key_parts, f.keys).view({-1, d}).requires_grad_(true);
    ids = cat_or_empty(id_parts, f.ids);
    log_q = cat_or_empty(logq_parts, f.log_q);
    own = f.keys;
  } else if (f.shared_items.defined()) {
    gathered = f.shared_items;
    own = f.own_items;
    own_offset = f.own_offset;
  }
  torch::Tensor loss;
  if (f.target_ids.numel() > 0) {
    const torch::Tensor weighted = weighted_loss(model, f, keys, ids, log_q);
    result.loss_sum = weighted.item<double>();
    loss = weighted * scale;
  }
  autocast.reset();
  const auto t_forward = StepClock::now();
  if (gathered.defined()) {
    backward_through_gathered(*ctx.comm, loss, gathered, own, own_offset, penalty);
  } else if (loss.defined()) {
    (penalty.defined() ? loss + penalty : loss).backward();
  } else if (penalty.defined()) {
    penalty.backward();
  }
  result.forward_s = seconds_between(t_start, t_forward);
  result.backward_s = seconds_between(t_forward, StepClock::now());
  return result;
}

Batch batch_to(const Batch& batch, const torch::Device& device) {
  if (device.is_cpu()) return batch;
  auto move = [&](const torch::Tensor& t) { return t.defined() ? t.to(device, /*non_blocking=*/true) : t; };
  Batch out = batch;
  out.item_ids = move(batch.item_ids);
  out.item_tokens = move(batch.item_tokens);
  out.item_mask = move(batch.item_mask);
  out.item_log_q = move(batch.item_log_q);
  out.history = move(batch.history);
  out.target = move(batch.target);
  out.negatives = move(batch.negatives);
  out.weight = move(batch.weight);
  out.target_slot = move(batch.target_slot);
  out.history_context = move(batch.history_context);
  out.query_context = move(batch.query_context);
  out.profile_tokens = move(batch.profile_tokens);
  out.profile_mask = move(batch.profile_mask);
  return out;  // example_user / example_event stay on the CPU: bookkeeping only
}

Batch batch_slice(const Batch& batch, std::int64_t begin, std::int64_t end) {
  const bool sequences = batch.target_slot.defined();
  // Sequences are sliced by rows (windows), with all their targets.
  const std::int64_t n = sequences ? batch.rows() : batch.size();
  LLMREC_CHECK(0 <= begin && begin <= end && end <= n, "batch_slice [{}, {}) of a batch of {}", begin, end,
               n);
  Batch out = batch;
  const std::int64_t b = end - begin;
  const std::int64_t t_len = batch.history.size(1);
  torch::Tensor hist = batch.history.narrow(0, begin, b);
  torch::Tensor picked;  // targets kept
  if (sequences) {
    const torch::Tensor row = batch.target_slot.div(t_len, "floor");
    picked = ((row >= begin).logical_and(row < end)).nonzero().view({-1});
    out.target_slot = batch.target_slot.index_select(0, picked) - begin * t_len;
  } else {
    picked = torch::arange(begin, end, torch::kLong);
  }
  torch::Tensor target = batch.target.index_select(0, picked);
  std::vector<torch::Tensor> used = {hist.flatten(), target};
  if (batch.negatives.defined()) used.push_back(batch.negatives);
  torch::Tensor rows = torch::cat(used);
  rows = std::get<0>(torch::_unique(rows.masked_select(rows >= 0)));  // sorted rows = sorted item ids
  torch::Tensor remap = torch::full({batch.item_ids.numel()}, -1, torch::kLong);
  remap.index_put_({rows}, torch::arange(rows.numel(), torch::kLong));
  out.item_ids = batch.item_ids.index_select(0, rows);
  out.item_tokens = batch.item_tokens.index_select(0, rows);
  out.item_mask = batch.item_mask.index_select(0, rows);
  if (batch.item_log_q.defined()) out.item_log_q = batch.item_log_q.index_select(0, rows);
  out.history = torch::where(hist >= 0, remap.index_select(0, hist.clamp_min(0).flatten()).view(hist.sizes()),
                             torch::full_like(hist, -1));
  out.target = remap.index_select(0, target);
  if (batch.negatives.defined()) out.negatives = remap.index_select(0, batch.negatives);
  out.weight = batch.weight.index_select(0, picked);
  if (batch.history_context.defined()) {
    out.history_context = batch.history_context.narrow(0, begin, b);
    out.query_context = batch.query_context.index_select(0, picked);
  }
  if (batch.profile_tokens.defined()) {
    out.profile_tokens = batch.profile_tokens.narrow(0, begin, b);
    out.profile_mask = batch.profile_mask.narrow(0, begin, b);
  }
  out.example_user = batch.example_user.index_select(0, picked);
  out.example_event = batch.example_event.index_select(0, picked);
  return out;
}

}  // namespace llmrec
