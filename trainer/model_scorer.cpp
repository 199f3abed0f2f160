#include "trainer/model_scorer.h"

#include <torch/torch.h>

namespace llmrec {

at::Tensor encode_all_items(Recommender& model, const ItemTable& items, int text_len, Communicator& comm,
                            const std::vector<std::int64_t>& item_ids) {
  torch::NoGradGuard no_grad;
  const torch::Device device = model->parameters().front().device();  // inputs go there, vectors come back
  const auto n = static_cast<std::int64_t>(items.ids.size());
  LLMREC_CHECK(item_ids.empty() || static_cast<std::int64_t>(item_ids.size()) == n,
               "encode_all_items: {} item ids for {} items", item_ids.size(), n);
  const std::int64_t full_len = n > 0 ? static_cast<std::int64_t>(items.tokens.size()) / n : 0;
  const std::int64_t blocks = (n + kEncodeBlock - 1) / kEncodeBlock;
  std::vector<torch::Tensor> mine;
  for (std::int64_t blk = comm.rank(); blk < blocks; blk += comm.size()) {
    const std::int64_t lo = blk * kEncodeBlock, hi = std::min(n, lo + kEncodeBlock);
    torch::Tensor all_tokens = torch::from_blob(const_cast<std::int32_t*>(items.tokens.data()) + lo * full_len,
                                                {hi - lo, full_len}, torch::kInt)
                                   .to(torch::kLong);
    torch::Tensor tokens = all_tokens.narrow(1, 0, text_len).contiguous();
    torch::Tensor len = torch::from_blob(const_cast<std::int32_t*>(items.length.data()) + lo, {hi - lo}, torch::kInt)
                            .to(torch::kLong);
    torch::Tensor mask = (torch::arange(text_len, torch::kLong).unsqueeze(0) < len.unsqueeze(1)).to(torch::kLong);
    torch::Tensor ids = item_ids.empty()
                            ? torch::arange(lo, hi, torch::kLong)
                            : torch::from_blob(const_cast<std::int64_t*>(item_ids.data()) + lo, {hi - lo}, torch::kLong)
                                  .clone();
    torch::Tensor cold = torch::from_blob(const_cast<std::uint8_t*>(items.cold.data()) + lo, {hi - lo}, torch::kByte)
                             .to(torch::kBool);
    // Cold: text only (an id that has no ID vector).
    ids = torch::where(cold, torch::full_like(ids, item_ids.empty() ? n : -1), ids);
    mine.push_back(model->encode_items(tokens.to(device), mask.to(device), ids.to(device)).to(torch::kCPU, torch::kFloat));
  }
  const std::int64_t d = model->options().config().dim;
  torch::Tensor local = mine.empty() ? torch::zeros({0, d}) : torch::cat(mine);
  auto parts = comm.all_gather_v(local);
  // Reassemble: rank r holds blocks r, r + W, ... in order.
  torch::Tensor out = torch::empty({n, d});
  std::vector<std::int64_t> taken(parts.size(), 0);
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const auto r = static_cast<std::size_t>(blk % comm.size());
    const std::int64_t lo = blk * kEncodeBlock, rows = std::min(n, lo + kEncodeBlock) - lo;
    out.narrow(0, lo, rows).copy_(parts[r].narrow(0, taken[r], rows));
    taken[r] += rows;
  }
  return out;
}

ModelScorer::ModelScorer(Recommender model, const ItemTable& items, int text_len, Communicator& comm, std::string name)
    : model_(std::move(model)), name_(std::move(name)), history_(model_->options().config().user.history) {
  model_->eval();
  item_vecs_ = encode_all_items(model_, items, text_len, comm);
  torch::NoGradGuard no_grad;
  const torch::Tensor p = model_->parameters().front();  // a copy: parameters() is a temporary
  item_vecs_model_ = item_vecs_.to(p.device(), p.scalar_type());
  item_keys_ = model_->item_keys(item_vecs_model_).to(torch::kCPU, torch::kFloat);
}

nlohmann::json ModelScorer::params() const {
  const ModelConfig& m = model_->options().config();
  return {{"dim", m.dim}, {"history", m.user.history}, {"text_len", m.text_len}, {"lora_r", m.lora.r},
          {"bert_layers", m.bert.layers}, {"bert_hidden", m.bert.hidden}, {"item_id_embedding", m.item_id_embedding},
          {"item_text", m.item_text}, {"user_pooling", m.user.pooling}, {"user_layers", m.user.layers}};
}

at::Tensor ModelScorer::score(const ScoreRequest& request) {
  torch::NoGradGuard no_grad;
  const std::int64_t b = request.size();
  if (b == 0) return torch::zeros({0, item_keys_.size(0)});
  torch::Tensor history = torch::full({b, history_}, -1, torch::kLong);
  auto* h = history.data_ptr<std::int64_t>();
  for (std::int64_t row = 0; row < b; ++row) {
    const std::int64_t end = request.history_end(row);
    const std::int64_t begin = std::max(request.history_begin(row), end - history_);
    for (std::int64_t j = begin; j < end; ++j) {
      h[row * history_ + (history_ - (end - j))] = request.history_items[static_cast<std::size_t>(j)];
    }
  }
  torch::Tensor u = model_->user_vectors(history.to(item_vecs_model_.device()), item_vecs_model_)
                        .to(torch::kCPU, torch::kFloat);
  return torch::matmul(u, item_keys_.t()).contiguous();
}

}  // namespace llmrec
