#include "trainer/model_scorer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "data/sampler.h"

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
    const auto [tokens, mask] = text_rows(items.tokens, items.length, full_len, lo, hi, text_len);
    torch::Tensor ids = item_ids.empty() ? torch::arange(lo, hi, torch::kLong)
                                         : torch::from_blob(const_cast<std::int64_t*>(item_ids.data()) + lo,
                                                            {hi - lo}, torch::kLong)
                                               .clone();
    torch::Tensor cold =
        torch::from_blob(const_cast<std::uint8_t*>(items.cold.data()) + lo, {hi - lo}, torch::kByte)
            .to(torch::kBool);
    // Cold: text only (an id that has no ID vector).
    ids = torch::where(cold, torch::full_like(ids, item_ids.empty() ? n : -1), ids);
    mine.push_back(model->encode_items(tokens.to(device), mask.to(device), ids.to(device))
                       .to(torch::kCPU, torch::kFloat));
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

ModelScorer::ModelScorer(Recommender model, const ItemTable& items, int text_len, Communicator& comm,
                         std::string name, const ColdScoring& cold)
    : model_(std::move(model)),
      name_(std::move(name)),
      history_(model_->options().config().user.history),
      cold_(cold) {
  LLMREC_CHECK(std::isfinite(cold.shift) && std::isfinite(cold.neighbour_weight),
               "ModelScorer: the cold shift ({}) and neighbour weight ({}) must be finite", cold.shift,
               cold.neighbour_weight);
  model_->eval();
  item_vecs_ = encode_all_items(model_, items, text_len, comm);
  const auto n = static_cast<std::int64_t>(items.cold.size());
  if (cold.neighbour_weight != 0 && !cold.neighbours.empty()) {
    LLMREC_CHECK(static_cast<std::int64_t>(cold.neighbours.size()) == n,
                 "ModelScorer: neighbours of {} items for {} items", cold.neighbours.size(), n);
    for (std::int64_t i = 0; i < n; ++i) {
      LLMREC_CHECK(cold.neighbours[static_cast<std::size_t>(i)].items.empty() ||
                       items.cold[static_cast<std::size_t>(i)] != 0,
                   "ModelScorer: item {} has an ID vector and neighbours", i);
    }
    item_vecs_.add_(neighbour_id_vectors(model_, cold.neighbours), cold.neighbour_weight);
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor p = model_->parameters().front();  // a copy: parameters() is a temporary
  item_vecs_model_ = item_vecs_.to(p.device(), p.scalar_type());
  item_keys_ = model_->item_keys(item_vecs_model_).to(torch::kCPU, torch::kFloat);
  if (cold_.shift != 0) {
    item_shift_ = torch::from_blob(const_cast<std::uint8_t*>(items.cold.data()), {n}, torch::kByte)
                      .to(torch::kFloat)
                      .mul_(cold_.shift);
  }
}

nlohmann::json ModelScorer::params() const {
  const ModelConfig& m = model_->options().config();
  nlohmann::json p = {{"dim", m.dim},
                      {"history", m.user.history},
                      {"text_len", m.text_len},
                      {"lora_r", m.lora.r},
                      {"bert_layers", m.bert.layers},
                      {"bert_hidden", m.bert.hidden},
                      {"item_id_embedding", m.item_id_embedding},
                      {"item_text", m.item_text},
                      {"user_pooling", m.user.pooling},
                      {"user_layers", m.user.layers},
                      {"cold_shift", cold_.shift},
                      {"cold_neighbour_weight", cold_.neighbour_weight}};
  if (!calibration_.is_null()) p["cold_calibration"] = calibration_;
  return p;
}

namespace {

/// Codes of the model's context columns (`columns`) picked from rows of
/// `width` codes laid out as `names` (-1 for every row when `codes` is
/// empty); Error for a column the request does not carry.
std::vector<std::int32_t> pick_codes(const std::vector<std::string>& columns,
                                     const std::vector<std::string>& names,
                                     const std::vector<std::int32_t>& codes, std::size_t rows) {
  std::vector<std::size_t> at;
  for (const std::string& column : columns) {
    const auto it = std::find(names.begin(), names.end(), column);
    LLMREC_CHECK(it != names.end(), "the model reads context column '{}', which the dataset does not have",
                 column);
    at.push_back(static_cast<std::size_t>(it - names.begin()));
  }
  std::vector<std::int32_t> out(rows * columns.size(), -1);
  if (codes.empty()) return out;
  LLMREC_CHECK(codes.size() == rows * names.size(), "{} context codes for {} rows of {}", codes.size(), rows,
               names.size());
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < at.size(); ++c) out[r * at.size() + c] = codes[r * names.size() + at[c]];
  }
  return out;
}

}  // namespace

at::Tensor ModelScorer::user_vectors(const ScoreRequest& request) {
  torch::NoGradGuard no_grad;
  const ContextSpec& spec = model_->context_spec();
  const std::vector<std::string>& columns = model_->options().config().user.context_columns;
  const bool timed = request.history_times.size() == request.history_items.size();
  const bool query_timed = static_cast<std::int64_t>(request.query_times.size()) == request.size();
  const std::vector<std::int32_t> codes =
      pick_codes(columns, request.context_names, request.history_context, request.history_items.size());
  const std::vector<std::int32_t> query_codes = pick_codes(
      columns, request.context_names, request.query_context, static_cast<std::size_t>(request.size()));
  const HistoryInputs in =
      history_inputs(history_, spec, request.history_offsets.data(), request.size(),
                     request.history_items.data(), timed ? request.history_times.data() : nullptr,
                     codes.data(), query_timed ? request.query_times.data() : nullptr, query_codes.data());
  const torch::Device device = item_vecs_model_.device();
  const auto on_device = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
  UserContext context{on_device(in.context), on_device(in.query), {}, {}, {}, {}};
  if (model_->options().config().user.profile) {
    LLMREC_CHECK(request.profile_len > 0 || request.size() == 0,
                 "the model reads user profiles (model.user.profile) but the dataset has none: prepare it "
                 "with data.users");
    const auto [tokens, mask] =
        text_rows(request.profile_tokens, request.profile_length, request.profile_len, 0, request.size(),
                  std::min<std::int64_t>(request.profile_len, model_->options().config().text_len));
    context.profile_tokens = tokens.to(device);
    context.profile_mask = mask.to(device);
  }
  return model_->user_vectors(in.history.to(device), item_vecs_model_, {}, context)
      .to(torch::kCPU, torch::kFloat);
}

at::Tensor ModelScorer::score(const ScoreRequest& request) {
  if (request.size() == 0) return torch::zeros({0, item_keys_.size(0)});
  torch::Tensor scores = torch::matmul(user_vectors(request), item_keys_.t());
  if (item_shift_.defined()) scores.add_(item_shift_.unsqueeze(0));
  return scores.contiguous();
}

at::Tensor neighbour_id_vectors(Recommender& model, const std::vector<ItemNeighbours>& neighbours) {
  torch::NoGradGuard no_grad;
  LLMREC_CHECK(model->item_id_embedding, "neighbour_id_vectors: the model has no ID vectors");
  const torch::Tensor table = model->item_id_embedding->weight.to(torch::kCPU, torch::kFloat);
  const auto n = static_cast<std::int64_t>(neighbours.size());
  const std::int64_t id_items = table.size(0);
  torch::Tensor out = torch::zeros({n, table.size(1)});
  for (std::int64_t i = 0; i < n; ++i) {
    const ItemNeighbours& row = neighbours[static_cast<std::size_t>(i)];
    LLMREC_CHECK(row.items.size() == row.similarity.size(),
                 "neighbour_id_vectors: item {} has {} neighbours and {} "
                 "similarities",
                 i, row.items.size(), row.similarity.size());
    double total = 0;
    for (float s : row.similarity) total += s;
    for (std::size_t k = 0; k < row.items.size(); ++k) {
      const std::int64_t j = row.items[k];
      LLMREC_CHECK(j >= 0 && j < id_items, "neighbour_id_vectors: neighbour {} of item {} has no ID vector",
                   j, i);
      out[i].add_(table[j], row.similarity[k] / total);
    }
  }
  return out;
}

nlohmann::json ColdCalibration::to_json() const {
  return {
      {"split", "valid"},         {"objective", "NDCG@10"}, {"neighbour_weight", scoring.neighbour_weight},
      {"shift", scoring.shift},   {"scale", scale},         {"weights", weights},
      {"shifts", shifts},         {"ndcg@10", ndcg10},      {"withheld", withheld},
      {"cold_users", cold_users}, {"real_cold", real_cold}, {"skipped", skipped}};
}

std::string ColdCalibration::summary() const {
  if (!skipped.empty()) return fmt::format("cold items: text vector only (not calibrated: {})", skipped);
  std::string curve;
  for (std::size_t a = 0; a < weights.size(); ++a) {
    curve += fmt::format("{}alpha {}:", a ? "; " : "", weights[a]);
    for (std::size_t g = 0; g < shifts.size(); ++g)
      curve += fmt::format(" {:.4f}", ndcg10[a * shifts.size() + g]);
  }
  return fmt::format(
      "cold items: neighbour weight alpha {} and shift {:.4f} ({} x sigma {:.4f}), chosen on valid "
      "with {} training items' IDs withheld ({} users with a text-only target{}); NDCG@10 by alpha, "
      "then b / sigma in {}: {}",
      scoring.neighbour_weight, scoring.shift, scale > 0 ? scoring.shift / scale : 0.0, scale, withheld,
      cold_users, real_cold == "leave_out" ? "; items without training events left out" : "",
      nlohmann::json(shifts).dump(), curve);
}

const std::vector<double>& cold_weight_grid() {
  static const std::vector<double> grid = {0, 0.5, 1, 2};
  return grid;
}

const std::vector<double>& cold_shift_grid() {
  static const std::vector<double> grid = {0, 0.25, 0.5, 1, 1.5, 2, 3};
  return grid;
}
std::vector<std::int64_t> cold_withheld_items(const std::vector<std::uint8_t>& cold, double share,
                                              std::int64_t seed) {
  LLMREC_CHECK(share >= 0 && share <= 1, "cold_withheld_items: share {} is not in [0, 1]", share);
  std::vector<std::int64_t> warm;
  for (std::size_t i = 0; i < cold.size(); ++i) {
    if (cold[i] == 0) warm.push_back(static_cast<std::int64_t>(i));
  }
  const auto take = static_cast<std::size_t>(std::llround(share * static_cast<double>(warm.size())));
  // A partial Fisher-Yates shuffle with an explicit draw (std::shuffle and
  // the distributions differ between standard libraries).
  std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
  for (std::size_t i = 0; i < take; ++i) {
    const std::size_t j = i + static_cast<std::size_t>(rng() % (warm.size() - i));
    std::swap(warm[i], warm[j]);
  }
  warm.resize(take);
  std::sort(warm.begin(), warm.end());
  return warm;
}

namespace {

/// The TF-IDF matrix of the catalogue text of `valid`'s items (eval.tfidf's
/// options): whose rows give cold items their neighbours.
TfidfMatrix items_tfidf(Evaluator& valid, const std::vector<std::string>& vocab) {
  const ItemTable& items = valid.items();
  const std::int64_t n = valid.num_items();
  const int full_len = n > 0 ? static_cast<int>(static_cast<std::int64_t>(items.tokens.size()) / n) : 0;
  return tfidf_matrix(items, full_len, vocab,
                      {valid.config().tfidf.profile_items, valid.config().tfidf.max_df});
}

/// The validation world where training items play new ones (the model's
/// cold calibration and the fusion's cold figures).
struct WithheldWorld {
  ItemTable items;                     ///< `valid`'s, the withheld items marked cold
  std::vector<std::int64_t> withheld;  ///< the items of cold_withheld_items(), sorted
  std::vector<std::uint8_t> hidden;    ///< [num_items]: 1 = withheld
  std::vector<std::uint8_t> left_out;  ///< real_cold leave_out: [num_items], 1 = without training
                                       ///< events (out of this world's rankings); else empty
};

/// `valid`'s world with eval.cold_calibration's share and seed withheld.
WithheldWorld withheld_world(Evaluator& valid) {
  const EvalColdCalibrationConfig& config = valid.config().cold_calibration;
  WithheldWorld w;
  w.items = valid.items();
  w.withheld = cold_withheld_items(w.items.cold, config.withhold, config.seed);
  w.hidden.assign(w.items.cold.size(), 0);
  for (std::int64_t i : w.withheld) {
    w.items.cold[static_cast<std::size_t>(i)] = 1;
    w.hidden[static_cast<std::size_t>(i)] = 1;
  }
  if (config.real_cold == "leave_out") w.left_out = valid.items().cold;
  return w;
}

}  // namespace

namespace {

/// sigma: the per-user standard deviation of `probe`'s scores, averaged over
/// the validation users in user order (the same on every world size); the
/// users whose target is text-only (`cold`) counted into `cold_users`.
double mean_score_spread(ModelScorer& probe, Evaluator& valid, const std::vector<std::uint8_t>& cold,
                         std::int64_t& cold_users) {
  std::vector<double> local;  // rows of [std, target text-only] per user
  for (std::int64_t call = 0; call < valid.calls(); ++call) {
    const Evaluator::Block blk = valid.block(call);
    if (blk.request.size() == 0) continue;
    const torch::Tensor sd = probe.score(blk.request).to(torch::kDouble).std(/*dim=*/1, /*unbiased=*/false);
    for (std::int64_t r = 0; r < blk.request.size(); ++r) {
      local.push_back(sd[r].item<double>());
      local.push_back(cold[static_cast<std::size_t>(blk.targets[static_cast<std::size_t>(r)])]);
    }
  }
  const std::vector<double> rows = valid.gather_user_rows(local, 2);
  const std::size_t users = rows.size() / 2;
  double sum = 0;
  cold_users = 0;
  for (std::size_t u = 0; u < users; ++u) {
    sum += rows[2 * u];
    cold_users += static_cast<std::int64_t>(rows[2 * u + 1]);
  }
  return users == 0 ? 0.0 : sum / static_cast<double>(users);
}

}  // namespace

ColdCalibration calibrate_cold(Recommender model, Evaluator& valid, int text_len,
                               const std::vector<std::string>& vocab) {
  LLMREC_CHECK(valid.split() == "valid", "the cold scoring is chosen on the validation split, not '{}'",
               valid.split());
  const EvalColdCalibrationConfig& config = valid.config().cold_calibration;
  ColdCalibration c;
  const ModelConfig& m = model->options().config();
  if (!config.enabled) {
    c.skipped = "eval.cold_calibration.enabled is false";
    return c;
  }
  if (!m.item_text || !m.item_id_embedding) {
    c.skipped = "the model needs model.item_text and model.item_id_embedding";
    return c;
  }

  // The real cold items and the withheld ones: scored as cold, their
  // neighbours among the other items.
  const ItemTable& real = valid.items();
  const std::int64_t n = valid.num_items();
  const TfidfMatrix tfidf = items_tfidf(valid, vocab);
  const WithheldWorld world = withheld_world(valid);
  const ItemTable& items = world.items;
  c.withheld = static_cast<std::int64_t>(world.withheld.size());
  // One scorer per alpha (the neighbours' ID vectors enter the history's
  // item vectors too).
  ColdScoring lent;
  lent.neighbours = tfidf_neighbours(tfidf, items.cold, config.neighbours);
  c.weights = cold_weight_grid();
  std::vector<std::unique_ptr<ModelScorer>> probes;
  for (double alpha : c.weights) {
    lent.neighbour_weight = alpha;
    probes.push_back(
        std::make_unique<ModelScorer>(model, items, text_len, valid.comm(), "model (IDs withheld)", lent));
  }
  ModelScorer& probe = *probes.front();
  const torch::Tensor text_only =
      torch::from_blob(const_cast<std::uint8_t*>(items.cold.data()), {n}, torch::kByte).to(torch::kFloat);
  // real_cold leave_out: the items without training events are not in this
  // world's ranking (score -inf, the same at every point), so the withheld
  // items alone play the new ones.
  c.real_cold = config.real_cold;
  torch::Tensor left_out;
  if (!world.left_out.empty()) {
    left_out = torch::from_blob(const_cast<std::uint8_t*>(world.left_out.data()), {n}, torch::kByte)
                   .to(torch::kBool);
  }

  c.scale = mean_score_spread(probe, valid, world.left_out.empty() ? items.cold : world.hidden, c.cold_users);
  if (!(c.scale > 0)) {
    c.skipped = "every validation user's scores are equal";
    return c;
  }
  c.shifts = cold_shift_grid();

  // Each alpha scores a block once; its shifts are added to that.
  torch::Tensor base;
  const auto per_weight = static_cast<int>(c.shifts.size());
  auto point = [&](const Evaluator::Block& blk, int g) {
    if (g % per_weight == 0) base = probes[static_cast<std::size_t>(g / per_weight)]->score(blk.request);
    const double b = c.scale * c.shifts[static_cast<std::size_t>(g % per_weight)];
    torch::Tensor scores = base + text_only.unsqueeze(0) * b;
    if (left_out.defined())
      scores = scores.masked_fill(left_out.unsqueeze(0), -std::numeric_limits<float>::infinity());
    return scores.contiguous();
  };
  c.ndcg10 = valid.mean_ndcg(10, static_cast<int>(c.weights.size() * c.shifts.size()), point, "cold scoring");
  std::size_t best = 0;
  for (std::size_t g = 0; g < c.ndcg10.size(); ++g) {
    if (c.ndcg10[g] > c.ndcg10[best]) best = g;
  }
  c.scoring.neighbour_weight = c.weights[best / c.shifts.size()];
  c.scoring.shift = c.scale * c.shifts[best % c.shifts.size()];
  // The real cold items borrow from every training item.
  if (c.scoring.neighbour_weight != 0)
    c.scoring.neighbours = tfidf_neighbours(tfidf, real.cold, config.neighbours);
  return c;
}

std::shared_ptr<ModelScorer> calibrated_model_scorer(Recommender model, Evaluator& valid,
                                                     const ItemTable& items, int text_len,
                                                     const std::vector<std::string>& vocab) {
  const ColdCalibration cold = calibrate_cold(model, valid, text_len, vocab);
  spdlog::info("{}", cold.summary());
  auto scorer =
      std::make_shared<ModelScorer>(std::move(model), items, text_len, valid.comm(), "model", cold.scoring);
  scorer->set_calibration_record(cold.to_json());
  return scorer;
}

namespace {

/// `inner` with no evidence on the items of `hidden`: their scores are the
/// row's lowest finite score among the other items.
class WithoutEvidenceScorer : public Scorer {
 public:
  WithoutEvidenceScorer(std::shared_ptr<Scorer> inner, const std::vector<std::uint8_t>& hidden)
      : inner_(std::move(inner)),
        hidden_(torch::from_blob(const_cast<std::uint8_t*>(hidden.data()),
                                 {static_cast<std::int64_t>(hidden.size())}, torch::kByte)
                    .to(torch::kBool)) {}
  std::string name() const override { return inner_->name(); }
  nlohmann::json params() const override { return inner_->params(); }
  bool scores_cold_items() const override { return inner_->scores_cold_items(); }
  at::Tensor score(const ScoreRequest& request) override {
    at::Tensor s = inner_->score(request).contiguous().clone();
    if (s.dim() != 2 || s.size(1) != hidden_.size(0)) return s;  // the fusion names the bad shape
    const float inf = std::numeric_limits<float>::infinity();
    const at::Tensor known = s.masked_fill(hidden_.unsqueeze(0), inf).masked_fill(s == -inf, inf);
    at::Tensor low = std::get<0>(known.min(/*dim=*/1, /*keepdim=*/true));
    low = low.masked_fill(low == inf, 0.0f);
    return torch::where(hidden_.unsqueeze(0), low.expand_as(s), s);
  }

 private:
  std::shared_ptr<Scorer> inner_;
  at::Tensor hidden_;  ///< [I] bool
};

}  // namespace

std::optional<FusionColdWorld> fusion_cold_world(const std::vector<FusionComponent>& components,
                                                 Evaluator& valid, const std::vector<std::string>& vocab) {
  const EvalColdCalibrationConfig& config = valid.config().cold_calibration;
  std::shared_ptr<ModelScorer> model;
  for (const auto& c : components) {
    if (auto m = std::dynamic_pointer_cast<ModelScorer>(c.scorer)) model = m;
  }
  if (!config.enabled || model == nullptr) return std::nullopt;
  const ModelConfig& m = model->model()->options().config();
  if (!m.item_text || !m.item_id_embedding) return std::nullopt;
  const WithheldWorld withheld = withheld_world(valid);
  if (withheld.withheld.empty()) return std::nullopt;
  const ItemTable& items = withheld.items;
  ColdScoring scoring = model->cold_scoring();
  if (scoring.neighbour_weight != 0) {
    scoring.neighbours = tfidf_neighbours(items_tfidf(valid, vocab), items.cold, config.neighbours);
  }
  FusionColdWorld world;
  world.cold = items.cold;
  world.withheld = static_cast<std::int64_t>(withheld.withheld.size());
  world.left_out = withheld.left_out;
  for (const auto& c : components) {
    if (c.scorer == model) {
      world.scorers.push_back(std::make_shared<ModelScorer>(model->model(), items, m.text_len, valid.comm(),
                                                            model->name(), scoring));
    } else if (!c.scorer->scores_cold_items()) {
      world.scorers.push_back(std::make_shared<WithoutEvidenceScorer>(c.scorer, withheld.hidden));
    } else {
      world.scorers.push_back(c.scorer);
    }
  }
  return world;
}

}  // namespace llmrec
