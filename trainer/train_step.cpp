#include "trainer/train_step.h"

#include <chrono>
#include <optional>

#include <torch/torch.h>

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

MicroStepResult train_micro_step(Recommender& model, const Batch& batch, const StepContext& ctx, bool sync) {
  const ModelConfig& mc = model->options().config();
  const std::int64_t b = batch.size();
  const std::int64_t d = mc.dim;
  const int world = ctx.comm != nullptr ? ctx.comm->size() : 1;
  const auto t_start = std::chrono::steady_clock::now();
  auto seconds = [](std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  auto t_forward = t_start;

  // Examples of this micro-step on every rank (the loss normaliser).
  std::int64_t n_global = b;
  if (ctx.comm != nullptr && world > 1) {
    at::Tensor n = at::tensor({b}, at::kLong);
    ctx.comm->all_reduce(n);
    n_global = n.item<std::int64_t>();
  }
  MicroStepResult result{0.0, b, n_global};
  if (n_global == 0) return result;
  const double scale = static_cast<double>(world) / (static_cast<double>(ctx.micro_batches) * static_cast<double>(n_global));

  // Cold items get no ID vector: their ids are mapped past the table (on the
  // CPU, before the batch moves to the model's device).
  Batch cpu = batch;
  cpu.item_tokens = batch.item_tokens.narrow(1, 0, ctx.text_len);
  cpu.item_mask = batch.item_mask.narrow(1, 0, ctx.text_len);
  torch::Tensor emb_ids = batch.item_ids;
  if (ctx.cold != nullptr && batch.item_ids.numel() > 0) {
    torch::Tensor cold = torch::from_blob(const_cast<std::uint8_t*>(ctx.cold->data()),
                                          {static_cast<std::int64_t>(ctx.cold->size())}, torch::kByte);
    torch::Tensor is_cold = cold.index_select(0, batch.item_ids).to(torch::kBool);
    emb_ids = torch::where(is_cold, torch::full_like(emb_ids, ctx.num_items), emb_ids);
  }
  const Batch dev = batch_to(cpu, ctx.device);
  emb_ids = emb_ids.to(ctx.device, /*non_blocking=*/true);
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(ctx.device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat).device(ctx.device);

  // Forward up to the loss; with run.precision bf16 under autocast.
  std::optional<AutocastGuard> autocast;
  autocast.emplace(ctx.device.type(), ctx.bf16);

  // Item tower over the batch's unique items (cold items: text only).
  const std::int64_t u = dev.item_ids.numel();
  torch::Tensor item_vecs = u > 0 ? model->encode_items(dev.item_tokens, dev.item_mask, emb_ids)
                                  : torch::zeros({0, d}, floats);

  // Candidates: the batch's targets (+ sampled negatives), or every item.
  torch::Tensor cand_rows;
  if (mc.loss.negatives == "batch_items") {
    cand_rows = torch::arange(u, longs);
  } else {
    std::vector<torch::Tensor> parts;
    if (b > 0) parts.push_back(dev.target);
    if (dev.negatives.defined() && dev.negatives.numel() > 0) parts.push_back(dev.negatives);
    cand_rows = parts.empty() ? torch::empty({0}, longs) : std::get<0>(torch::_unique(torch::cat(parts)));
  }
  torch::Tensor keys_local = model->item_keys(item_vecs.index_select(0, cand_rows));
  torch::Tensor ids_local = u > 0 ? dev.item_ids.index_select(0, cand_rows) : torch::empty({0}, longs);
  torch::Tensor logq_local = dev.item_log_q.defined() && dev.item_log_q.numel() > 0
                                 ? dev.item_log_q.index_select(0, cand_rows)
                                 : torch::zeros({cand_rows.numel()}, floats);

  torch::Tensor user_vecs =
      b > 0 ? model->user_vectors(dev.history, item_vecs, dev.target_slot) : torch::zeros({0, d}, floats);
  torch::Tensor target_ids = b > 0 ? dev.item_ids.index_select(0, dev.target) : torch::empty({0}, longs);
  torch::Tensor weights = b > 0 ? dev.weight : torch::empty({0}, floats);
  LossOptions loss_opts = model->loss_options();

  std::unique_ptr<GradientReducer::NoSync> no_sync;
  if (!sync && ctx.reducer != nullptr) no_sync = std::make_unique<GradientReducer::NoSync>(*ctx.reducer);

  if (ctx.global_negatives && ctx.comm != nullptr && world > 1) {
    auto key_parts = ctx.comm->all_gather_v(keys_local.detach().contiguous());
    auto id_parts = ctx.comm->all_gather_v(ids_local.contiguous());
    auto logq_parts = ctx.comm->all_gather_v(logq_local.contiguous());
    std::int64_t own_offset = 0;
    for (int r = 0; r < ctx.comm->rank(); ++r) own_offset += key_parts[static_cast<std::size_t>(r)].size(0);
    torch::Tensor all_keys = cat_or_empty(key_parts, keys_local).view({-1, d}).requires_grad_(true);
    torch::Tensor all_ids = cat_or_empty(id_parts, ids_local);
    torch::Tensor all_logq = cat_or_empty(logq_parts, logq_local);
    torch::Tensor grad_keys;
    torch::Tensor loss;
    if (b > 0) {
      LossResult lr = recommender_loss(user_vecs, all_keys, all_ids, target_ids, weights, loss_opts, all_logq);
      torch::Tensor weighted = (lr.nll * weights).sum();
      result.loss_sum = weighted.item<double>();
      loss = weighted * scale;
      autocast.reset();
      t_forward = std::chrono::steady_clock::now();
      grad_keys = torch::autograd::grad({loss}, {all_keys}, {}, /*retain_graph=*/true)[0];
    } else {
      autocast.reset();
      t_forward = std::chrono::steady_clock::now();
      grad_keys = torch::zeros_like(all_keys);
    }
    {  // every rank's users' gradient on every key, summed in float32 (bf16 keys under autocast)
      const bool low = grad_keys.scalar_type() == torch::kBFloat16 || grad_keys.scalar_type() == torch::kHalf;
      torch::Tensor sum = low ? grad_keys.to(torch::kFloat) : grad_keys;
      ctx.comm->all_reduce(sum);
      grad_keys = sum.to(grad_keys.scalar_type());
    }
    std::vector<torch::Tensor> roots, grads;
    if (b > 0) {
      roots.push_back(loss);
      grads.push_back(torch::ones_like(loss));
    }
    if (keys_local.numel() > 0) {
      roots.push_back(keys_local);
      grads.push_back(grad_keys.narrow(0, own_offset, keys_local.size(0)));
    }
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    result.forward_s = seconds(t_start, t_forward);
    result.backward_s = seconds(t_forward, std::chrono::steady_clock::now());
    return result;
  }

  if (b > 0) {
    LossResult lr = recommender_loss(user_vecs, keys_local, ids_local, target_ids, weights, loss_opts, logq_local);
    torch::Tensor weighted = (lr.nll * weights).sum();
    result.loss_sum = weighted.item<double>();
    torch::Tensor loss = weighted * scale;
    autocast.reset();
    t_forward = std::chrono::steady_clock::now();
    loss.backward();
  } else {
    autocast.reset();
    t_forward = std::chrono::steady_clock::now();
  }
  result.forward_s = seconds(t_start, t_forward);
  result.backward_s = seconds(t_forward, std::chrono::steady_clock::now());
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
  return out;  // example_user / example_event stay on the CPU: bookkeeping only
}

Batch batch_slice(const Batch& batch, std::int64_t begin, std::int64_t end) {
  const bool sequences = batch.target_slot.defined();
  // Sequences are sliced by rows (windows), with all their targets.
  const std::int64_t n = sequences ? batch.rows() : batch.size();
  LLMREC_CHECK(0 <= begin && begin <= end && end <= n, "batch_slice [{}, {}) of a batch of {}", begin, end, n);
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
  out.example_user = batch.example_user.index_select(0, picked);
  out.example_event = batch.example_event.index_select(0, picked);
  return out;
}

}  // namespace llmrec
