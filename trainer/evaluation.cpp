#include "trainer/evaluation.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "common/config.h"
#include "common/error.h"
#include "common/sha256.h"
#include "common/version.h"
#include "trainer/metrics.h"

namespace llmrec {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Layout of one user's row of metric values: [cold, reciprocal rank, then
// per K: hit, recall, ndcg, diversity, popularity].
constexpr int kColCold = 0;
constexpr int kColRr = 1;
constexpr int kColPerK = 2;
constexpr int kPerK = 5;
int row_width(std::size_t num_k) {
  return kColPerK + kPerK * static_cast<int>(num_k);
}

void check_split(const std::string& split) {
  if (split != "valid" && split != "test") {
    throw Error(fmt::format("evaluation split must be 'valid' or 'test', got '{}'", split));
  }
}

nlohmann::json node_to_json(const ConfigNode& node) {
  switch (node.kind) {
    case ConfigNode::Kind::kScalar: {
      // YAML scalars keep their text; numbers and booleans read as such.
      const std::string& t = node.scalar;
      if (t == "true" || t == "false") return t == "true";
      std::int64_t i = 0;
      auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), i);
      if (!t.empty() && ec == std::errc() && p == t.data() + t.size()) return i;
      char* end = nullptr;
      const double d = std::strtod(t.c_str(), &end);
      if (!t.empty() && end == t.c_str() + t.size() && std::isfinite(d)) return d;
      return t;
    }
    case ConfigNode::Kind::kMap: {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& [k, v] : node.map) j[k] = node_to_json(v);
      return j;
    }
    case ConfigNode::Kind::kSequence: {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& v : node.seq) j.push_back(node_to_json(v));
      return j;
    }
    case ConfigNode::Kind::kNull: break;
  }
  return nullptr;
}

nlohmann::json group_json(const EvalGroupMetrics& g, const std::vector<int>& ks, bool has_categories) {
  nlohmann::json j = {{"users", g.users}, {"mrr", g.mrr}};
  for (std::size_t i = 0; i < ks.size(); ++i) {
    const std::string at = "@" + std::to_string(ks[i]);
    j["ndcg" + at] = g.ndcg[i];
    j["recall" + at] = g.recall[i];
    j["hit_rate" + at] = g.hit_rate[i];
    j["coverage" + at] = g.coverage[i];
    if (has_categories) j["diversity" + at] = g.diversity[i];
    j["mean_popularity" + at] = g.mean_popularity[i];
  }
  return j;
}

/// Each row of `blk` ranked for its held-out item with its history excluded
/// (rows in parallel); an error names `what` and the user.
/// `skip` (empty or one per row): rows with 1 are not ranked (their
/// UserRanking stays default). `ndcg_only`: above and ties alone, enough
/// for NDCG@k_max (count_above).
std::vector<UserRanking> rank_rows(const Evaluator::Block& blk, const float* scores, std::int64_t n_items,
                                   int k_max, const std::string& what,
                                   const std::vector<std::uint8_t>& skip = {}, bool ndcg_only = false) {
  const std::int64_t rows = blk.request.size();
  std::vector<UserRanking> rankings(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, 1, [&](std::int64_t r0, std::int64_t r1) {
    ExclusionMask mask(n_items);
    for (std::int64_t r = r0; r < r1; ++r) {
      const auto b = static_cast<std::size_t>(r);
      if (!skip.empty() && skip[b] != 0) continue;
      mask.set(blk.request.history_items.data() + blk.request.history_begin(r), blk.request.history_size(r),
               blk.targets[b]);
      try {
        rankings[b] = ndcg_only
                          ? count_above(scores + r * n_items, n_items, mask.data(), blk.targets[b], k_max)
                          : rank_user(scores + r * n_items, n_items, mask.data(), blk.targets[b], k_max);
      } catch (const Error& e) {
        rethrow_with_context(e, fmt::format("{}, user {}", what, blk.request.users[b]));
      }
      mask.clear();
    }
  });
  return rankings;
}

}  // namespace

const std::vector<std::string>& eval_history_segments() {
  static const std::vector<std::string> names = {"0-2", "3-4", "5-9", "10-19", "20-49", "50+"};
  return names;
}

const std::vector<std::string>& eval_popularity_segments() {
  static const std::vector<std::string> names = {"0 (cold)", "1-9", "10-49", "50-199", "200+"};
  return names;
}

std::size_t eval_history_segment(std::int64_t length) {
  return length < 3 ? 0 : length < 5 ? 1 : length < 10 ? 2 : length < 20 ? 3 : length < 50 ? 4 : 5;
}

std::size_t eval_popularity_segment(std::int64_t train_count) {
  return train_count <= 0 ? 0 : train_count < 10 ? 1 : train_count < 50 ? 2 : train_count < 200 ? 3 : 4;
}

EvalShard eval_shard(std::int64_t num_users, std::int64_t batch_users, int rank, int world) {
  LLMREC_CHECK(num_users >= 0 && batch_users >= 1 && world >= 1 && rank >= 0 && rank < world,
               "eval_shard: bad arguments (users {}, batch {}, rank {} of {})", num_users, batch_users, rank,
               world);
  const std::int64_t blocks = (num_users + batch_users - 1) / batch_users;
  EvalShard s;
  s.block_begin = blocks * rank / world;
  s.block_end = blocks * (rank + 1) / world;
  s.user_begin = std::min(num_users, s.block_begin * batch_users);
  s.user_end = std::min(num_users, s.block_end * batch_users);
  s.calls = (blocks + world - 1) / world;
  return s;
}

std::vector<std::pair<std::string, double>> eval_figures(const EvalResult& r) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto* g : {&r.all, &r.cold}) {
    const std::string prefix = g == &r.all ? "" : "cold.";
    out.emplace_back(prefix + "mrr", g->mrr);
    for (std::size_t i = 0; i < r.k.size(); ++i) {
      const std::string at = "@" + std::to_string(r.k[i]);
      out.emplace_back(prefix + "ndcg" + at, g->ndcg[i]);
      out.emplace_back(prefix + "recall" + at, g->recall[i]);
      out.emplace_back(prefix + "hit_rate" + at, g->hit_rate[i]);
      out.emplace_back(prefix + "coverage" + at, g->coverage[i]);
      if (r.has_categories) out.emplace_back(prefix + "diversity" + at, g->diversity[i]);
      out.emplace_back(prefix + "mean_popularity" + at, g->mean_popularity[i]);
    }
  }
  return out;
}

// ---------------------------------------------------------------- Evaluator

Evaluator::Evaluator(const DatasetFile& file, Communicator& comm, std::string split, EvalConfig config)
    : comm_(comm), split_(std::move(split)), config_(std::move(config)) {
  check_split(split_);
  LLMREC_CHECK(!config_.k.empty(), "eval.k must list at least one cut-off");
  num_users_ = file.num_users();
  shard_ = eval_shard(num_users_, config_.batch_users, comm_.rank(), comm_.size());
  items_ = file.read_items();
  // Category codes in order of first appearance: "" is a value like any other.
  std::map<std::string, std::int32_t> codes;
  category_code_.resize(items_.categories.size());
  for (std::size_t i = 0; i < items_.categories.size(); ++i) {
    auto it = codes.emplace(items_.categories[i], static_cast<std::int32_t>(codes.size())).first;
    category_code_[i] = it->second;
    has_categories_ = has_categories_ || !items_.categories[i].empty();
  }
  if (shard_.user_end > shard_.user_begin) {
    slice_ = file.read_users(shard_.user_begin, shard_.user_end, file.context_names());
  } else {
    slice_.begin = slice_.end = shard_.user_begin;
    slice_.users.offsets = {0};
    slice_.events.context.resize(file.context_names().size());
  }
  context_names_ = file.context_names();
  profile_len_ = file.text_len();
  const bool valid = split_ == "valid";
  for (std::int64_t u = 0; u < shard_.user_end - shard_.user_begin; ++u) {
    const auto su = static_cast<std::size_t>(u);
    const std::int64_t held = valid ? slice_.users.valid[su] : slice_.users.test[su];
    if (held < 0) {
      ++skipped_;
      continue;
    }
    const std::int32_t target = slice_.events.item[static_cast<std::size_t>(held)];
    const std::int64_t first = slice_.users.offsets[su];
    bool repeat = false;
    for (std::int64_t e = first; e < first + slice_.users.train_end[su]; ++e) {
      repeat = repeat || slice_.events.item[static_cast<std::size_t>(e)] == target;
    }
    const std::int64_t v = slice_.users.valid[su];
    if (!valid && v >= 0 && v != held)
      repeat = repeat || slice_.events.item[static_cast<std::size_t>(v)] == target;
    repeats_ += repeat;
  }
}

Evaluator::Block Evaluator::block(std::int64_t call) const {
  LLMREC_CHECK(call >= 0 && call < shard_.calls, "evaluation block call {} outside [0, {})", call,
               shard_.calls);
  Block out;
  const std::int64_t b = shard_.block_begin + call;
  if (b >= shard_.block_end) return out;
  const std::int64_t batch = config_.batch_users;
  const std::int64_t u0 = b * batch, u1 = std::min(num_users_, (b + 1) * batch);
  const bool valid = split_ == "valid";
  std::vector<std::int32_t> items;
  std::vector<std::int64_t> times;
  std::vector<std::int32_t> codes, query_codes;
  out.request.context_names = context_names_;
  if (!slice_.users.profile_length.empty()) out.request.profile_len = profile_len_;
  const std::size_t C = context_names_.size();
  auto codes_of = [&](std::int64_t event, std::vector<std::int32_t>& to) {
    for (std::size_t c = 0; c < C; ++c)
      to.push_back(slice_.events.context[c][static_cast<std::size_t>(event)]);
  };
  for (std::int64_t user = u0; user < u1; ++user) {
    const auto su = static_cast<std::size_t>(user - shard_.user_begin);
    const std::int64_t held = valid ? slice_.users.valid[su] : slice_.users.test[su];
    if (held < 0) continue;
    // History: the training events; for test also the validation event.
    const std::int64_t first = slice_.users.offsets[su];
    items.assign(slice_.events.item.begin() + first,
                 slice_.events.item.begin() + first + slice_.users.train_end[su]);
    times.assign(slice_.events.time.begin() + first,
                 slice_.events.time.begin() + first + slice_.users.train_end[su]);
    const std::int64_t v = slice_.users.valid[su];
    if (!valid && v >= 0 && v != held) {
      items.push_back(slice_.events.item[static_cast<std::size_t>(v)]);
      times.push_back(slice_.events.time[static_cast<std::size_t>(v)]);
    }
    codes.clear();
    query_codes.clear();
    if (C > 0) {
      for (std::int64_t e = first; e < first + slice_.users.train_end[su]; ++e) codes_of(e, codes);
      if (!valid && v >= 0 && v != held) codes_of(v, codes);
      codes_of(held, query_codes);
    }
    out.request.add_user(user, items.data(), times.data(), static_cast<std::int64_t>(items.size()),
                         slice_.events.time[static_cast<std::size_t>(held)], codes.data(),
                         query_codes.data());
    if (out.request.profile_len > 0) {
      out.request.add_profile(
          slice_.users.profile_tokens.data() + su * static_cast<std::size_t>(profile_len_),
          slice_.users.profile_length[su]);
    }
    out.targets.push_back(slice_.events.item[static_cast<std::size_t>(held)]);
  }
  return out;
}

std::vector<double> Evaluator::gather_user_rows(const std::vector<double>& local, int width) {
  LLMREC_CHECK(width >= 1 && local.size() % static_cast<std::size_t>(width) == 0,
               "gather_user_rows: {} values do not make rows of {}", local.size(), width);
  const auto rows = static_cast<std::int64_t>(local.size()) / width;
  at::Tensor t = at::empty({rows, width}, at::kDouble);
  std::copy(local.begin(), local.end(), t.data_ptr<double>());
  std::vector<at::Tensor> parts = comm_.all_gather_v(t);
  std::vector<double> all;
  for (const auto& p : parts) {
    at::Tensor c = p.contiguous();
    LLMREC_CHECK(c.dim() == 2 && c.size(1) == width,
                 "gathered evaluation rows have shape {}, expected [n, {}]",
                 fmt::format("{}", fmt::join(c.sizes(), ", ")), width);
    all.insert(all.end(), c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  }
  return all;
}

at::Tensor Evaluator::check_scores(const at::Tensor& scores, const Block& block,
                                   const std::string& scorer) const {
  const std::int64_t rows = block.request.size();
  if (!scores.defined() || scores.dim() != 2 || scores.size(0) != rows || scores.size(1) != num_items() ||
      scores.scalar_type() != at::kFloat || !scores.device().is_cpu()) {
    throw Error(
        fmt::format("scorer '{}' returned {}; expected [{}, {}] float32 scores on the CPU", scorer,
                    scores.defined()
                        ? fmt::format("shape [{}] {} on {}", fmt::join(scores.sizes(), ", "),
                                      std::string(c10::toString(scores.scalar_type())), scores.device().str())
                        : std::string("an undefined tensor"),
                    rows, num_items()));
  }
  return scores.contiguous();
}

std::vector<double> Evaluator::mean_ndcg(int k, int points, const PointScores& scores,
                                         const std::string& label, std::vector<double>* cold_mean,
                                         const std::vector<std::uint8_t>* cold_items, bool cold_only) {
  LLMREC_CHECK(k >= 1 && points >= 1, "mean_ndcg needs k >= 1 and points >= 1 (got {} and {})", k, points);
  const std::int64_t n_items = num_items();
  const std::vector<std::uint8_t>& is_cold = cold_items != nullptr ? *cold_items : items_.cold;
  LLMREC_CHECK(static_cast<std::int64_t>(is_cold.size()) == n_items,
               "mean_ndcg: a cold mask of {} items for {}", is_cold.size(), n_items);
  const auto gp = static_cast<std::size_t>(points);
  const std::size_t width = gp + 1;  // the points, then 1 for a cold held-out item
  std::vector<double> local;
  for (std::int64_t call = 0; call < shard_.calls; ++call) {
    const Block blk = block(call);
    const std::int64_t rows = blk.request.size();
    const std::size_t base = local.size();
    local.resize(base + static_cast<std::size_t>(rows) * width);
    std::vector<std::uint8_t> skip(cold_only ? static_cast<std::size_t>(rows) : 0);
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto target = static_cast<std::size_t>(blk.targets[static_cast<std::size_t>(r)]);
      local[base + static_cast<std::size_t>(r) * width + gp] = is_cold[target] != 0 ? 1.0 : 0.0;
      if (cold_only) skip[static_cast<std::size_t>(r)] = is_cold[target] == 0;
    }
    for (int g = 0; g < points; ++g) {
      const at::Tensor s = check_scores(scores(blk, g), blk, label);
      const std::vector<UserRanking> rankings =
          rank_rows(blk, s.data_ptr<float>(), n_items, k, fmt::format("{} (point {})", label, g), skip, true);
      for (std::size_t b = 0; b < rankings.size(); ++b) {
        if (!skip.empty() && skip[b] != 0) continue;
        local[base + b * width + static_cast<std::size_t>(g)] =
            expected_ndcg(rankings[b].above, rankings[b].ties, k);
      }
    }
  }
  const std::vector<double> all = gather_user_rows(local, static_cast<int>(width));
  const std::size_t users = all.size() / width;
  std::vector<double> mean(gp, 0.0), cold(gp, 0.0);
  std::size_t cold_users = 0;
  for (std::size_t u = 0; u < users; ++u) {
    const bool is_cold = all[u * width + gp] != 0;
    cold_users += is_cold ? 1 : 0;
    for (std::size_t g = 0; g < gp; ++g) {
      mean[g] += all[u * width + g];
      if (is_cold) cold[g] += all[u * width + g];
    }
  }
  for (auto& m : cold) m = cold_users > 0 ? m / static_cast<double>(cold_users) : 0.0;
  for (auto& m : mean) m = users > 0 ? m / static_cast<double>(users) : 0.0;
  if (cold_only) mean = cold;  // the other users' rows were not ranked
  if (cold_mean != nullptr) *cold_mean = std::move(cold);
  return mean;
}

std::vector<double> Evaluator::mean_ndcg(int k, const std::vector<Scorer*>& scorers) {
  std::string label;
  for (const Scorer* s : scorers) label += (label.empty() ? "" : ", ") + s->name();
  return mean_ndcg(
      k, static_cast<int>(scorers.size()),
      [&](const Block& blk, int g) { return scorers[static_cast<std::size_t>(g)]->score(blk.request); },
      label);
}

ScoreRequest swap_histories(const ScoreRequest& request) {
  const std::int64_t rows = request.size();
  ScoreRequest out;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t from = (r + 1) % rows;
    const auto begin = static_cast<std::size_t>(request.history_begin(from));
    const std::size_t C = request.context_names.size();
    out.context_names = request.context_names;
    out.profile_len = request.profile_len;
    out.add_user(request.users[static_cast<std::size_t>(from)], request.history_items.data() + begin,
                 request.history_times.data() + begin, request.history_size(from),
                 request.query_times[static_cast<std::size_t>(r)],
                 C > 0 ? request.history_context.data() + begin * C : nullptr,
                 C > 0 ? request.query_context.data() + static_cast<std::size_t>(r) * C : nullptr);
    if (request.profile_len > 0) {  // the profile goes with the user, as the history
      out.add_profile(request.profile_tokens.data() + static_cast<std::size_t>(from * request.profile_len),
                      request.profile_length[static_cast<std::size_t>(from)]);
    }
  }
  return out;
}

namespace {

/// Appends one evaluated user's row (cold flag, expected RR, then per K:
/// hit rate, recall, NDCG, diversity, mean popularity; then its history
/// length and its target's training events) and counts its top-K items
/// (coverage; [group (all, cold)][K][item]).
struct UserRowWriter {
  const std::vector<int>& ks;
  std::int64_t n_items;
  bool has_categories;
  const std::vector<std::int32_t>& category_code;
  const std::vector<std::int64_t>& train_count;
  std::vector<double>& rows;
  std::vector<std::int64_t>& counts;

  void add(const UserRanking& rk, std::int32_t target, bool cold, std::int64_t history_size) {
    const std::size_t nk = ks.size();
    rows.push_back(cold ? 1.0 : 0.0);
    // The held-out item's figures are expectations under a random tie-break
    // (metrics.h); with one held-out item Recall@K = HitRate@K.
    rows.push_back(expected_reciprocal_rank(rk.above, rk.ties));
    for (std::size_t i = 0; i < nk; ++i) {
      rows.push_back(expected_hit_rate(rk.above, rk.ties, ks[i]));
      rows.push_back(expected_hit_rate(rk.above, rk.ties, ks[i]));
      rows.push_back(expected_ndcg(rk.above, rk.ties, ks[i]));
      rows.push_back(has_categories ? metric_diversity(rk.top, ks[i], category_code) : 0.0);
      rows.push_back(metric_mean_popularity(rk.top, ks[i], train_count));
      const std::size_t n = std::min(rk.top.size(), static_cast<std::size_t>(ks[i]));
      for (std::size_t a = 0; a < n; ++a) {
        const auto item = static_cast<std::size_t>(rk.top[a]);
        ++counts[i * static_cast<std::size_t>(n_items) + item];
        if (cold) ++counts[(nk + i) * static_cast<std::size_t>(n_items) + item];
      }
    }
    rows.push_back(static_cast<double>(history_size));
    rows.push_back(static_cast<double>(train_count[static_cast<std::size_t>(target)]));
  }
};

/// One group's means (all users, or those with a cold target) from the
/// column sums of its rows, and its coverage from the top-K counts.
void fill_group(EvalGroupMetrics& g, const std::vector<double>& sum, std::int64_t users, std::size_t group,
                const std::vector<int>& ks, std::int64_t n_items, bool has_categories,
                const std::vector<std::int64_t>& counts) {
  const std::size_t nk = ks.size();
  g.users = users;
  const double n = static_cast<double>(users);
  auto mean = [&](int col) { return users > 0 ? sum[static_cast<std::size_t>(col)] / n : kNaN; };
  g.mrr = mean(kColRr);
  for (std::size_t i = 0; i < nk; ++i) {
    const int base = kColPerK + kPerK * static_cast<int>(i);
    g.hit_rate.push_back(mean(base));
    g.recall.push_back(mean(base + 1));
    g.ndcg.push_back(mean(base + 2));
    g.diversity.push_back(has_categories ? mean(base + 3) : kNaN);
    g.mean_popularity.push_back(mean(base + 4));
    std::int64_t covered = 0;
    const std::int64_t* c = counts.data() + (group * nk + i) * static_cast<std::size_t>(n_items);
    for (std::int64_t item = 0; item < n_items; ++item) covered += c[item] > 0;
    g.coverage.push_back(users > 0 ? static_cast<double>(covered) / static_cast<double>(n_items) : kNaN);
  }
}

/// NDCG@K and Recall@K (K = 10 when evaluated, else the first K) by
/// history length and by the held-out item's popularity.
std::vector<EvalSegment> eval_segments(const std::vector<double>& all_rows, int width,
                                       const std::vector<int>& ks, int* segment_k) {
  const int metrics_width = row_width(ks.size());
  const auto n_rows = static_cast<std::int64_t>(all_rows.size() / static_cast<std::size_t>(width));
  std::size_t ki = 0;
  for (std::size_t i = 0; i < ks.size(); ++i) {
    if (ks[i] == 10) ki = i;
  }
  *segment_k = ks[ki];
  const int col_recall = kColPerK + kPerK * static_cast<int>(ki) + 1, col_ndcg = col_recall + 1;
  std::vector<EvalSegment> out;
  for (const char* by : {"history_length", "target_popularity"}) {
    const bool history = std::string(by) == "history_length";
    const std::vector<std::string>& names = history ? eval_history_segments() : eval_popularity_segments();
    std::vector<double> ndcg(names.size(), 0.0), recall(names.size(), 0.0);
    std::vector<std::int64_t> users(names.size(), 0);
    for (std::int64_t u = 0; u < n_rows; ++u) {
      const double* row = all_rows.data() + u * width;
      const auto value = static_cast<std::int64_t>(row[history ? metrics_width : metrics_width + 1]);
      const std::size_t g = history ? eval_history_segment(value) : eval_popularity_segment(value);
      ++users[g];
      ndcg[g] += row[col_ndcg];
      recall[g] += row[col_recall];
    }
    for (std::size_t g = 0; g < names.size(); ++g) {
      const double n = static_cast<double>(users[g]);
      out.push_back(
          {by, names[g], users[g], users[g] > 0 ? ndcg[g] / n : kNaN, users[g] > 0 ? recall[g] / n : kNaN});
    }
  }
  return out;
}

}  // namespace

EvalResult Evaluator::evaluate(Scorer& scorer) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int>& ks = config_.k;
  const auto nk = ks.size();
  const int kmax = *std::max_element(ks.begin(), ks.end());
  const int width =
      row_width(nk) + 2;  // the metric columns, the history length, the target's training events
  const std::int64_t n_items = num_items();
  const std::string name = scorer.name();

  std::vector<double> local;
  // Coverage counts [group (all, cold)][K][item], then this rank's counters.
  const std::size_t counts_size = 2 * nk * static_cast<std::size_t>(n_items);
  std::vector<std::int64_t> counts(counts_size + 3, 0);
  UserRowWriter writer{ks, n_items, has_categories_, category_code_, items_.train_count, local, counts};
  std::int64_t evaluated = 0;
  for (std::int64_t call = 0; call < shard_.calls; ++call) {
    const Block blk = block(call);
    const at::Tensor scores = check_scores(
        scorer.score(config_.swap_histories ? swap_histories(blk.request) : blk.request), blk, name);
    const std::vector<UserRanking> rankings =
        rank_rows(blk, scores.data_ptr<float>(), n_items, kmax, fmt::format("scorer '{}'", name));
    for (std::int64_t r = 0; r < blk.request.size(); ++r) {
      const auto b = static_cast<std::size_t>(r);
      const std::int32_t target = blk.targets[b];
      writer.add(rankings[b], target, items_.cold[static_cast<std::size_t>(target)] != 0,
                 blk.request.history_size(r));
      ++evaluated;
    }
  }

  // Collectives, the same on every rank: rows (all_gather_v), counts and
  // counters (all_reduce sum, exact), time (max).
  const std::vector<double> all_rows = gather_user_rows(local, width);
  counts[counts_size] = evaluated;
  counts[counts_size + 1] = skipped_;
  counts[counts_size + 2] = repeats_;
  at::Tensor counts_t = at::from_blob(counts.data(), {static_cast<std::int64_t>(counts.size())}, at::kLong);
  comm_.all_reduce(counts_t, {ReduceOp::kSum});
  const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  at::Tensor secs = at::tensor({mine}, at::kDouble);
  comm_.all_reduce(secs, {ReduceOp::kMax});

  EvalResult res;
  res.scorer = name;
  res.params = scorer.params();
  res.split = split_;
  res.k = ks;
  res.num_items = n_items;
  res.users = num_users_;
  res.users_evaluated = counts[counts_size];
  res.users_skipped = counts[counts_size + 1];
  res.repeat_targets = counts[counts_size + 2];
  res.has_categories = has_categories_;
  res.seconds = secs.item<double>();
  const auto n_rows = static_cast<std::int64_t>(all_rows.size() / static_cast<std::size_t>(width));
  LLMREC_CHECK(n_rows == res.users_evaluated, "evaluation gathered {} user rows but counted {} users", n_rows,
               res.users_evaluated);

  // Sums in user order: the same additions in the same order for any W.
  std::vector<double> sum_all(static_cast<std::size_t>(width), 0.0),
      sum_cold(static_cast<std::size_t>(width), 0.0);
  std::int64_t n_cold = 0;
  for (std::int64_t u = 0; u < n_rows; ++u) {
    const double* row = all_rows.data() + u * width;
    const bool cold = row[kColCold] != 0.0;
    n_cold += cold;
    for (int c = 0; c < width; ++c) {
      sum_all[static_cast<std::size_t>(c)] += row[c];
      if (cold) sum_cold[static_cast<std::size_t>(c)] += row[c];
    }
  }
  fill_group(res.all, sum_all, n_rows, 0, ks, n_items, has_categories_, counts);
  fill_group(res.cold, sum_cold, n_cold, 1, ks, n_items, has_categories_, counts);
  res.segments = eval_segments(all_rows, width, ks, &res.segment_k);
  return res;
}

EvalResult evaluate(Scorer& scorer, const DatasetFile& file, Communicator& comm, const std::string& split,
                    const EvalConfig& config) {
  Evaluator ev(file, comm, split, config);
  return ev.evaluate(scorer);
}

// ---------------------------------------------------------------- result file

EvalProtocol eval_protocol(const DatasetFile& file, const std::string& split, const EvalConfig& config,
                           const std::string& resolved_yaml, int world_size) {
  check_split(split);
  EvalProtocol p;
  p.dataset_path = file.path();
  p.dataset_sha256 = sha256_file(file.path());
  p.split = split;
  p.history =
      split == "valid" ? "the user's training events" : "the user's training events and its validation event";
  if (config.swap_histories) {
    p.history += "; scored with the id and history of the next user of its block (eval.swap_histories)";
  }
  p.ranking = fmt::format("full ranking over {} items, history excluded", file.num_items());
  p.k = config.k;
  p.config_sha256 = sha256_hex(resolved_yaml);
  p.world_size = world_size;

  nlohmann::json s = {{"split_method", file.split()},
                      {"users", file.num_users()},
                      {"items", file.num_items()},
                      {"events", file.num_events()}};
  // The preparation settings that decide which users, items and events are
  // in the file, from the resolved config `prepare` stored.
  const std::string yaml = file.config_yaml();
  if (!yaml.empty()) {
    ConfigNode root = config_parse_string(yaml, file.path() + " (attribute 'config')");
    nlohmann::json data = nlohmann::json::object();
    if (const ConfigNode* d = root.find("data")) {
      for (const char* key : {"split", "cut", "min_user_events", "kcore", "on_error", "time_format",
                              "event_weights", "weight", "interactions", "catalogue"}) {
        if (const ConfigNode* v = d->find(key)) data[key] = node_to_json(*v);
      }
    }
    s["filtering"] = data;
  }
  // The counts of the preparation report (rows kept and removed, split sizes).
  auto report = nlohmann::json::parse(file.report_json(), nullptr, false);
  if (!report.is_discarded() && report.is_object()) {
    nlohmann::json counts = nlohmann::json::object();
    for (const char* key : {"users", "items", "cold_items", "events", "split", "kcore", "min_user_events",
                            "temporal_no_train"}) {
      if (report.contains(key)) counts[key] = report[key];
    }
    s["report"] = counts;
  }
  p.dataset_settings = s;
  return p;
}

namespace {

/// {"k": K, "history_length": [{"range", "users", "ndcg@K", "recall@K"}...], "target_popularity": [...]}
/// (an empty segment's figures are null).
nlohmann::json segments_json(const EvalResult& r) {
  nlohmann::json j = {{"k", r.segment_k},
                      {"history_length", nlohmann::json::array()},
                      {"target_popularity", nlohmann::json::array()}};
  auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  for (const EvalSegment& s : r.segments) {
    j[s.by].push_back({{"range", s.range},
                       {"users", s.users},
                       {fmt::format("ndcg@{}", r.segment_k), number(s.ndcg)},
                       {fmt::format("recall@{}", r.segment_k), number(s.recall)}});
  }
  return j;
}

}  // namespace

nlohmann::json eval_results_json(const std::vector<EvalResult>& results, const EvalProtocol& p) {
  nlohmann::json scorers = nlohmann::json::array();
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : results) {
    scorers.push_back({{"name", r.scorer}, {"params", r.params}});
    out.push_back({
        {"scorer", r.scorer},
        {"params", r.params},
        {"split", r.split},
        {"users",
         {{"dataset", r.users},
          {"evaluated", r.users_evaluated},
          {"skipped_without_" + r.split + "_event", r.users_skipped},
          {"cold", r.cold.users},
          {"repeat_targets", r.repeat_targets}}},
        {"all", group_json(r.all, r.k, r.has_categories)},
        {"cold", group_json(r.cold, r.k, r.has_categories)},
        {"segments", segments_json(r)},
        {"seconds", r.seconds},
    });
  }
  nlohmann::json protocol = {
      {"dataset", p.dataset_path},
      {"dataset_sha256", p.dataset_sha256},
      {"dataset_settings", p.dataset_settings},
      {"split", p.split},
      {"history", p.history},
      {"ranking", p.ranking},
      {"ties",
       "the held-out item's rank is uniform among the items with exactly its score, and each metric is "
       "its exact expectation (top-K lists: smaller item id first)"},
      {"held_out", "one event per user; users without one are skipped and counted; Recall@K == HitRate@K"},
      {"cold_subset", "users whose held-out item has no training event (items/cold == 1)"},
      {"k", p.k},
      {"scorers", scorers},
      {"config_sha256", p.config_sha256},
      {"world_size", p.world_size},
      {"llmrec", {{"version", version_string()}, {"git", version_git_revision()}}},
  };
  return {{"format", "llmrec-eval"}, {"version", 1}, {"protocol", protocol}, {"results", out}};
}

void write_eval_results(const std::string& path, const std::vector<EvalResult>& results,
                        const EvalProtocol& protocol) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << eval_results_json(results, protocol).dump(2) << "\n";
    out.flush();
    if (!out) throw IoError(fmt::format("cannot write {}", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw IoError(fmt::format("cannot rename {} to {}: {}", tmp, path, ec.message()));
}

void write_eval_result(const std::string& path, const EvalResult& result, const EvalProtocol& protocol) {
  write_eval_results(path, {result}, protocol);
}

std::string eval_results_table(const std::vector<EvalResult>& results) {
  if (results.empty()) return "";
  const std::vector<int>& ks = results.front().k;
  const std::string k0 = std::to_string(ks.front());
  std::vector<std::string> head = {"scorer"};
  for (int k : ks) {
    head.push_back("NDCG@" + std::to_string(k));
    head.push_back("Recall@" + std::to_string(k));
  }
  for (const std::string& h :
       std::vector<std::string>{"MRR", "Cov@" + k0, "ILD@" + k0, "Pop@" + k0, "cold-NDCG@" + k0,
                                "cold-Recall@" + k0, "cold-MRR", "seconds"}) {
    head.push_back(h);
  }
  std::size_t name_w = 6;
  for (const auto& r : results) name_w = std::max(name_w, r.scorer.size());
  auto num = [](double v, const char* f) { return std::isnan(v) ? std::string("-") : fmt::format(f, v); };
  std::vector<std::vector<std::string>> rows = {head};
  for (const auto& r : results) {
    std::vector<std::string> row = {r.scorer};
    for (std::size_t i = 0; i < ks.size(); ++i) {
      row.push_back(num(r.all.ndcg[i], "{:.4f}"));
      row.push_back(num(r.all.recall[i], "{:.4f}"));
    }
    row.push_back(num(r.all.mrr, "{:.4f}"));
    row.push_back(num(r.all.coverage[0], "{:.4f}"));
    row.push_back(num(r.has_categories ? r.all.diversity[0] : kNaN, "{:.4f}"));
    row.push_back(num(r.all.mean_popularity[0], "{:.1f}"));
    row.push_back(num(r.cold.ndcg[0], "{:.4f}"));
    row.push_back(num(r.cold.recall[0], "{:.4f}"));
    row.push_back(num(r.cold.mrr, "{:.4f}"));
    row.push_back(fmt::format("{:.2f}", r.seconds));
    rows.push_back(row);
  }
  std::vector<std::size_t> w(head.size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) w[c] = std::max(w[c], row[c].size());
  }
  std::string s;
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      s += c == 0 ? fmt::format("{:<{}}", row[c], w[c]) : fmt::format("  {:>{}}", row[c], w[c]);
    }
    s += "\n";
  }
  return s;
}

}  // namespace llmrec
