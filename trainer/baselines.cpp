#include "trainer/baselines.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string_view>

#include "common/error.h"
#include "data/wordpiece.h"
#include "distributed/agree.h"
#include "trainer/oracle.h"

namespace llmrec {
namespace {

/// Deterministic draws from the raw mt19937_64 stream (the standard
/// distributions differ between library implementations).
struct Rng {
  std::mt19937_64 gen;
  explicit Rng(std::uint64_t seed) : gen(seed) {}
  double uniform() { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }
  std::int64_t below(std::int64_t n) {
    return std::min(n - 1, static_cast<std::int64_t>(uniform() * static_cast<double>(n)));
  }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
};

/// Each user's distinct items, sorted (CSR over the same users).
TrainingHistories distinct_sorted(const TrainingHistories& h) {
  TrainingHistories out;
  out.num_items = h.num_items;
  out.offsets.reserve(h.offsets.size());
  std::vector<std::int32_t> buf;
  for (std::int64_t u = 0; u < h.num_users(); ++u) {
    buf.assign(h.items.begin() + h.offsets[static_cast<std::size_t>(u)],
               h.items.begin() + h.offsets[static_cast<std::size_t>(u) + 1]);
    std::sort(buf.begin(), buf.end());
    buf.erase(std::unique(buf.begin(), buf.end()), buf.end());
    out.items.insert(out.items.end(), buf.begin(), buf.end());
    out.offsets.push_back(static_cast<std::int64_t>(out.items.size()));
  }
  return out;
}

void check_request_users(const ScoreRequest& request, std::int64_t num_users, const char* scorer) {
  for (std::int64_t u : request.users) {
    if (u < 0 || u >= num_users) {
      throw Error(
          fmt::format("{}: user {} is not one of the {} users it was trained on", scorer, u, num_users));
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- histories

TrainingHistories training_histories_of(const UserSlice& slice, std::int64_t num_items) {
  TrainingHistories h;
  h.num_items = num_items;
  const std::int64_t n = slice.end - slice.begin;
  for (std::int64_t u = 0; u < n; ++u) {
    const std::int64_t first = slice.users.offsets[static_cast<std::size_t>(u)];
    const std::int64_t train = slice.users.train_end[static_cast<std::size_t>(u)];
    h.items.insert(h.items.end(), slice.events.item.begin() + first,
                   slice.events.item.begin() + first + train);
    h.offsets.push_back(static_cast<std::int64_t>(h.items.size()));
  }
  return h;
}

TrainingHistories gather_training_histories(const DatasetFile& file, Communicator& comm) {
  const std::int64_t users = file.num_users();
  const std::int64_t begin = users * comm.rank() / comm.size();
  const std::int64_t end = users * (comm.rank() + 1) / comm.size();
  TrainingHistories mine;
  mine.num_items = file.num_items();
  if (end > begin) mine = training_histories_of(file.read_users(begin, end), file.num_items());
  // Lengths then items, each all-gathered in rank order = user order.
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(end - begin));
  for (std::size_t u = 0; u < lengths.size(); ++u) lengths[u] = mine.offsets[u + 1] - mine.offsets[u];
  auto lengths_all = comm.all_gather_v(at::tensor(lengths, at::kLong));
  auto items_all = comm.all_gather_v(at::tensor(mine.items, at::kInt));
  TrainingHistories h;
  h.num_items = file.num_items();
  for (std::size_t r = 0; r < lengths_all.size(); ++r) {
    at::Tensor len = lengths_all[r].contiguous(), it = items_all[r].contiguous();
    const std::int64_t* l = len.data_ptr<std::int64_t>();
    for (std::int64_t u = 0; u < len.numel(); ++u) h.offsets.push_back(h.offsets.back() + l[u]);
    h.items.insert(h.items.end(), it.data_ptr<std::int32_t>(), it.data_ptr<std::int32_t>() + it.numel());
  }
  LLMREC_CHECK(h.num_users() == users && h.offsets.back() == static_cast<std::int64_t>(h.items.size()),
               "gathered training histories of {} users ({} items), expected {} users", h.num_users(),
               h.items.size(), users);
  return h;
}

// ---------------------------------------------------------------- popularity

PopularityScorer::PopularityScorer(const std::vector<std::int64_t>& train_count) {
  counts_.reserve(train_count.size());
  for (auto c : train_count) counts_.push_back(static_cast<float>(c));
}

nlohmann::json PopularityScorer::params() const {
  return {{"score", "training events of the item"}};
}

at::Tensor PopularityScorer::score(const ScoreRequest& request) {
  const auto n = static_cast<std::int64_t>(counts_.size());
  at::Tensor row = at::from_blob(counts_.data(), {1, n}, at::kFloat);
  return row.expand({request.size(), n}).clone();
}

// ---------------------------------------------------------------- ItemKNN

std::vector<ItemNeighbours> itemknn_rows(const TrainingHistories& histories, std::int64_t begin,
                                         std::int64_t end, const ItemKnnOptions& options) {
  const std::int64_t n_items = histories.num_items;
  LLMREC_CHECK(begin >= 0 && begin <= end && end <= n_items, "itemknn rows [{}, {}) outside [0, {})", begin,
               end, n_items);
  LLMREC_CHECK(options.neighbours >= 1 && options.shrink >= 0,
               "itemknn needs neighbours >= 1 and shrink >= 0");
  const TrainingHistories sets = distinct_sorted(histories);
  // Inverted index: the users of each item, and |U_i|.
  std::vector<std::int64_t> item_offsets(static_cast<std::size_t>(n_items) + 1, 0);
  for (auto i : sets.items) {
    LLMREC_CHECK(i >= 0 && i < n_items, "training history item {} is not an item id", i);
    ++item_offsets[static_cast<std::size_t>(i) + 1];
  }
  std::partial_sum(item_offsets.begin(), item_offsets.end(), item_offsets.begin());
  std::vector<std::int64_t> item_users(sets.items.size());
  {
    std::vector<std::int64_t> at(item_offsets.begin(), item_offsets.end() - 1);
    for (std::int64_t u = 0; u < sets.num_users(); ++u) {
      for (auto k = sets.offsets[static_cast<std::size_t>(u)];
           k < sets.offsets[static_cast<std::size_t>(u) + 1]; ++k) {
        item_users[static_cast<std::size_t>(
            at[static_cast<std::size_t>(sets.items[static_cast<std::size_t>(k)])]++)] = u;
      }
    }
  }
  auto users_of = [&](std::int64_t i) {
    return item_offsets[static_cast<std::size_t>(i) + 1] - item_offsets[static_cast<std::size_t>(i)];
  };

  std::vector<ItemNeighbours> rows(static_cast<std::size_t>(end - begin));
  std::vector<std::int64_t> common(static_cast<std::size_t>(n_items), 0);
  std::vector<std::int32_t> touched;
  std::vector<std::pair<double, std::int32_t>> cand;
  for (std::int64_t i = begin; i < end; ++i) {
    touched.clear();
    for (auto k = item_offsets[static_cast<std::size_t>(i)];
         k < item_offsets[static_cast<std::size_t>(i) + 1]; ++k) {
      const auto u = static_cast<std::size_t>(item_users[static_cast<std::size_t>(k)]);
      for (auto e = sets.offsets[u]; e < sets.offsets[u + 1]; ++e) {
        const std::int32_t j = sets.items[static_cast<std::size_t>(e)];
        if (j == i) continue;
        if (common[static_cast<std::size_t>(j)]++ == 0) touched.push_back(j);
      }
    }
    cand.clear();
    const double ni = static_cast<double>(users_of(i));
    for (std::int32_t j : touched) {
      const double c = static_cast<double>(common[static_cast<std::size_t>(j)]);
      cand.emplace_back(c / (std::sqrt(ni * static_cast<double>(users_of(j))) + options.shrink), j);
      common[static_cast<std::size_t>(j)] = 0;
    }
    const auto keep = std::min<std::size_t>(cand.size(), static_cast<std::size_t>(options.neighbours));
    auto better = [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(keep), cand.end(), better);
    ItemNeighbours& row = rows[static_cast<std::size_t>(i - begin)];
    for (std::size_t k = 0; k < keep; ++k) {
      row.items.push_back(cand[k].second);
      row.similarity.push_back(static_cast<float>(cand[k].first));
    }
  }
  return rows;
}

ItemKnnScorer::ItemKnnScorer(const TrainingHistories& histories, const ItemKnnOptions& options,
                             Communicator& comm)
    : options_(options) {
  const std::int64_t n = histories.num_items;
  const std::int64_t begin = n * comm.rank() / comm.size(), end = n * (comm.rank() + 1) / comm.size();
  std::vector<ItemNeighbours> mine = itemknn_rows(histories, begin, end, options);
  std::vector<std::int64_t> lengths;
  std::vector<std::int32_t> items;
  std::vector<float> sims;
  for (const auto& r : mine) {
    lengths.push_back(static_cast<std::int64_t>(r.items.size()));
    items.insert(items.end(), r.items.begin(), r.items.end());
    sims.insert(sims.end(), r.similarity.begin(), r.similarity.end());
  }
  auto lengths_all = comm.all_gather_v(at::tensor(lengths, at::kLong));
  auto items_all = comm.all_gather_v(at::tensor(items, at::kInt));
  auto sims_all = comm.all_gather_v(at::tensor(sims, at::kFloat));
  rows_.reserve(static_cast<std::size_t>(n));
  for (std::size_t r = 0; r < lengths_all.size(); ++r) {
    at::Tensor len = lengths_all[r].contiguous(), it = items_all[r].contiguous(),
               si = sims_all[r].contiguous();
    const std::int64_t* l = len.data_ptr<std::int64_t>();
    const std::int32_t* ip = it.data_ptr<std::int32_t>();
    const float* sp = si.data_ptr<float>();
    std::int64_t at = 0;
    for (std::int64_t k = 0; k < len.numel(); ++k) {
      ItemNeighbours row;
      row.items.assign(ip + at, ip + at + l[k]);
      row.similarity.assign(sp + at, sp + at + l[k]);
      at += l[k];
      rows_.push_back(std::move(row));
    }
    LLMREC_CHECK(at == it.numel() && at == si.numel(), "itemknn: rank {} sent inconsistent rows", r);
  }
  LLMREC_CHECK(static_cast<std::int64_t>(rows_.size()) == n, "itemknn gathered {} rows, expected {}",
               rows_.size(), n);
}

ItemKnnScorer::ItemKnnScorer(std::vector<ItemNeighbours> rows, const ItemKnnOptions& options)
    : options_(options), rows_(std::move(rows)) {}

nlohmann::json ItemKnnScorer::params() const {
  nlohmann::json j = {{"neighbours", options_.neighbours},
                      {"shrink", options_.shrink},
                      {"similarity", "|U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink) over training events"}};
  if (!tuning_.is_null()) j["tuning"] = tuning_;
  return j;
}

at::Tensor ItemKnnScorer::score(const ScoreRequest& request) {
  const auto n = static_cast<std::int64_t>(rows_.size());
  at::Tensor out = at::zeros({request.size(), n}, at::kFloat);
  std::vector<double> acc(static_cast<std::size_t>(n));
  std::vector<std::int32_t> hist;
  for (std::int64_t b = 0; b < request.size(); ++b) {
    hist.assign(request.history_items.begin() + request.history_begin(b),
                request.history_items.begin() + request.history_end(b));
    std::sort(hist.begin(), hist.end());
    hist.erase(std::unique(hist.begin(), hist.end()), hist.end());
    std::fill(acc.begin(), acc.end(), 0.0);
    for (std::int32_t i : hist) {
      LLMREC_CHECK(i >= 0 && i < n, "itemknn: history item {} is not an item id", i);
      const ItemNeighbours& row = rows_[static_cast<std::size_t>(i)];
      for (std::size_t k = 0; k < row.items.size(); ++k)
        acc[static_cast<std::size_t>(row.items[k])] += row.similarity[k];
    }
    float* o = out.data_ptr<float>() + b * n;
    for (std::int64_t j = 0; j < n; ++j) o[j] = static_cast<float>(acc[static_cast<std::size_t>(j)]);
  }
  return out;
}

// ---------------------------------------------------------------- BPR

namespace {

/// BPR's SGD state between epochs: the factors, the random stream and the
/// event order. Epoch after epoch, the same arithmetic as one run of
/// config.epochs epochs.
class BprTraining {
 public:
  BprTraining(const TrainingHistories& histories, const EvalBprConfig& config)
      : h_(histories),
        sets_(distinct_sorted(histories)),
        rng_(static_cast<std::uint64_t>(config.seed)),
        dim_(config.dim),
        lr_(static_cast<float>(config.lr)),
        reg_(static_cast<float>(config.reg)) {
    const std::int64_t n_users = h_.num_users(), n_items = h_.num_items;
    LLMREC_CHECK(dim_ >= 1 && config.epochs >= 0 && n_items >= 1,
                 "bpr needs dim >= 1, epochs >= 0 and items");
    p_.resize(static_cast<std::size_t>(n_users * dim_));
    q_.resize(static_cast<std::size_t>(n_items * dim_));
    bias_.assign(static_cast<std::size_t>(n_items), 0.0f);
    constexpr double kInitStd = 0.01;
    for (auto& x : p_) x = static_cast<float>(kInitStd * rng_.normal());
    for (auto& x : q_) x = static_cast<float>(kInitStd * rng_.normal());
    event_user_.resize(h_.items.size());
    for (std::int64_t u = 0; u < n_users; ++u) {
      for (auto e = h_.offsets[static_cast<std::size_t>(u)]; e < h_.offsets[static_cast<std::size_t>(u) + 1];
           ++e) {
        event_user_[static_cast<std::size_t>(e)] = u;
      }
    }
    order_.resize(h_.items.size());
    std::iota(order_.begin(), order_.end(), 0);
  }

  /// One pass over the training events; its mean loss.
  double epoch() {
    const std::int64_t n_items = h_.num_items;
    const int dim = dim_;
    const float lr = lr_, reg = reg_;
    constexpr int kNegativeTries = 64;
    for (std::size_t k = order_.size(); k > 1; --k) {
      std::swap(order_[k - 1], order_[static_cast<std::size_t>(rng_.below(static_cast<std::int64_t>(k)))]);
    }
    double loss = 0;
    std::int64_t steps = 0;
    for (std::int64_t e : order_) {
      const std::int64_t u = event_user_[static_cast<std::size_t>(e)];
      const std::int32_t i = h_.items[static_cast<std::size_t>(e)];
      const auto s0 = sets_.items.begin() + sets_.offsets[static_cast<std::size_t>(u)];
      const auto s1 = sets_.items.begin() + sets_.offsets[static_cast<std::size_t>(u) + 1];
      std::int32_t j = -1;
      for (int t = 0; t < kNegativeTries && j < 0; ++t) {
        const auto c = static_cast<std::int32_t>(rng_.below(n_items));
        if (!std::binary_search(s0, s1, c)) j = c;
      }
      if (j < 0) continue;  // the user has (nearly) every item: no negative to learn from
      float* pu = p_.data() + u * dim;
      float* qi = q_.data() + static_cast<std::int64_t>(i) * dim;
      float* qj = q_.data() + static_cast<std::int64_t>(j) * dim;
      double x = static_cast<double>(bias_[static_cast<std::size_t>(i)]) - bias_[static_cast<std::size_t>(j)];
      for (int d = 0; d < dim; ++d) x += static_cast<double>(pu[d]) * (static_cast<double>(qi[d]) - qj[d]);
      loss += x > 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x));
      ++steps;
      const auto g = static_cast<float>(1.0 / (1.0 + std::exp(x)));  // sigmoid(-x)
      for (int d = 0; d < dim; ++d) {
        const float a = pu[d], bi = qi[d], bj = qj[d];
        pu[d] += lr * (g * (bi - bj) - reg * a);
        qi[d] += lr * (g * a - reg * bi);
        qj[d] += lr * (-g * a - reg * bj);
      }
      float& b_i = bias_[static_cast<std::size_t>(i)];
      float& b_j = bias_[static_cast<std::size_t>(j)];
      b_i += lr * (g - reg * b_i);
      b_j += lr * (-g - reg * b_j);
    }
    return steps > 0 ? loss / static_cast<double>(steps) : 0.0;
  }

  /// Copies of the factors: users [users, dim], items [items, dim], biases [items].
  at::Tensor users() const { return at::tensor(p_, at::kFloat).view({h_.num_users(), dim_}); }
  at::Tensor items() const { return at::tensor(q_, at::kFloat).view({h_.num_items, dim_}); }
  at::Tensor bias() const { return at::tensor(bias_, at::kFloat); }

 private:
  const TrainingHistories& h_;
  TrainingHistories sets_;
  Rng rng_;
  int dim_;
  float lr_, reg_;
  std::vector<float> p_, q_, bias_;
  std::vector<std::int64_t> event_user_, order_;
};

/// Collective: every rank trained the same factors; prove it with a digest
/// of the bytes (CommError naming the first rank that differs).
void check_bpr_same_on_every_rank(const BprScorer& bpr, Communicator& comm) {
  const int r = first_rank_differing(comm, {bpr.user_factors(), bpr.item_factors(), bpr.item_bias()});
  if (r >= 0) {
    throw CommError(
        fmt::format("bpr: rank {} trained different factors than rank 0 (same data and seed): the ranks "
                    "do not compute identically; run all ranks on one kind of CPU",
                    r));
  }
}

}  // namespace

BprScorer::BprScorer(const TrainingHistories& histories, const EvalBprConfig& config) : config_(config) {
  train(histories);
}

BprScorer::BprScorer(const TrainingHistories& histories, const EvalBprConfig& config, Communicator& comm)
    : config_(config) {
  train(histories);
  check_bpr_same_on_every_rank(*this, comm);
}

BprScorer::BprScorer(const EvalBprConfig& config, at::Tensor users, at::Tensor items, at::Tensor bias,
                     std::vector<double> epoch_loss, nlohmann::json tuning)
    : config_(config),
      users_(std::move(users)),
      items_(std::move(items)),
      bias_(std::move(bias)),
      epoch_loss_(std::move(epoch_loss)),
      tuning_(std::move(tuning)) {
  LLMREC_CHECK(users_.dim() == 2 && items_.dim() == 2 && users_.size(1) == items_.size(1) &&
                   bias_.dim() == 1 && bias_.size(0) == items_.size(0),
               "bpr: factors of inconsistent shapes");
}

void BprScorer::train(const TrainingHistories& histories) {
  BprTraining t(histories, config_);
  for (int epoch = 0; epoch < config_.epochs; ++epoch) epoch_loss_.push_back(t.epoch());
  users_ = t.users();
  items_ = t.items();
  bias_ = t.bias();
}

nlohmann::json BprScorer::params() const {
  nlohmann::json j = {{"dim", config_.dim},
                      {"epochs", config_.epochs},
                      {"lr", config_.lr},
                      {"reg", config_.reg},
                      {"seed", config_.seed},
                      {"negatives", "1 uniform per training event and epoch"},
                      {"final_train_loss", epoch_loss_.empty() ? 0.0 : epoch_loss_.back()}};
  if (!tuning_.is_null()) j["tuning"] = tuning_;
  return j;
}

at::Tensor BprScorer::score(const ScoreRequest& request) {
  check_request_users(request, users_.size(0), "bpr");
  if (request.size() == 0) return at::zeros({0, items_.size(0)}, at::kFloat);
  at::Tensor idx = at::tensor(request.users, at::kLong);
  return at::addmm(bias_.unsqueeze(0), users_.index_select(0, idx), items_.t());
}

// ---------------------------------------------------------------- TF-IDF

namespace {

/// Each item's distinct terms (ascending) and their raw counts, as a CSR
/// table: the token ids of its first length[i] tokens but the special ones.
struct TermCounts {
  std::vector<std::int64_t> offsets{0};
  std::vector<std::int32_t> terms, counts;
};

TermCounts count_terms(const ItemTable& items, int text_len, const std::vector<std::string>& vocab) {
  const auto n_items = static_cast<std::int64_t>(items.length.size());
  const auto n_terms = static_cast<std::int32_t>(vocab.size());
  LLMREC_CHECK(text_len >= 0 && static_cast<std::int64_t>(items.tokens.size()) == n_items * text_len,
               "tfidf: {} token ids for {} items of {} tokens", items.tokens.size(), n_items, text_len);
  std::vector<std::uint8_t> special(static_cast<std::size_t>(n_terms), 0);
  for (std::string_view token : {kPadToken, kUnkToken, kClsToken, kSepToken, kMaskToken}) {
    auto it = std::find(vocab.begin(), vocab.end(), token);
    if (it != vocab.end()) special[static_cast<std::size_t>(it - vocab.begin())] = 1;
  }
  TermCounts out;
  std::vector<std::int32_t> buf;
  for (std::int64_t i = 0; i < n_items; ++i) {
    const std::int32_t len = items.length[static_cast<std::size_t>(i)];
    LLMREC_CHECK(len >= 0 && len <= text_len, "tfidf: item {} has {} tokens, more than text_len {}", i, len,
                 text_len);
    const std::int32_t* tok = items.tokens.data() + i * text_len;
    buf.clear();
    for (std::int32_t k = 0; k < len; ++k) {
      if (tok[k] < 0 || tok[k] >= n_terms) {
        throw Error(fmt::format("tfidf: item {} holds token id {}, outside the vocabulary of {} tokens", i,
                                tok[k], n_terms));
      }
      if (!special[static_cast<std::size_t>(tok[k])]) buf.push_back(tok[k]);
    }
    std::sort(buf.begin(), buf.end());
    for (std::size_t a = 0; a < buf.size();) {
      std::size_t b = a;
      while (b < buf.size() && buf[b] == buf[a]) ++b;
      out.terms.push_back(buf[a]);
      out.counts.push_back(static_cast<std::int32_t>(b - a));
      a = b;
    }
    out.offsets.push_back(static_cast<std::int64_t>(out.terms.size()));
  }
  return out;
}

/// The rows of `m` from the counts: tf * idf, L2-normalised, dropped terms
/// (idf 0) left out.
void weigh_rows(const TermCounts& c, TfidfMatrix& m) {
  const auto n_items = static_cast<std::int64_t>(c.offsets.size()) - 1;
  m.offsets.assign(1, 0);
  m.offsets.reserve(static_cast<std::size_t>(n_items) + 1);
  std::vector<double> w;
  for (std::int64_t i = 0; i < n_items; ++i) {
    const auto a = static_cast<std::size_t>(c.offsets[static_cast<std::size_t>(i)]);
    const auto b = static_cast<std::size_t>(c.offsets[static_cast<std::size_t>(i) + 1]);
    w.clear();
    double norm2 = 0;
    for (std::size_t k = a; k < b; ++k) {
      w.push_back(c.counts[k] * m.idf[static_cast<std::size_t>(c.terms[k])]);
      norm2 += w.back() * w.back();
    }
    const double norm = std::sqrt(norm2);
    for (std::size_t k = a; k < b; ++k) {
      if (w[k - a] == 0) continue;  // a dropped term
      m.terms.push_back(c.terms[k]);
      m.weights.push_back(static_cast<float>(w[k - a] / norm));
    }
    m.offsets.push_back(static_cast<std::int64_t>(m.terms.size()));
  }
}

}  // namespace

TfidfMatrix tfidf_matrix(const ItemTable& items, int text_len, const std::vector<std::string>& vocab,
                         const TfidfOptions& options) {
  LLMREC_CHECK(options.profile_items >= 1 && options.max_df > 0 && options.max_df <= 1,
               "tfidf needs profile_items >= 1 and max_df in (0, 1] (got {} and {})", options.profile_items,
               options.max_df);
  const TermCounts counts = count_terms(items, text_len, vocab);
  const auto n_items = static_cast<std::int64_t>(items.length.size());
  const auto n_terms = static_cast<std::int32_t>(vocab.size());
  TfidfMatrix m;
  m.num_terms = n_terms;
  m.df.assign(static_cast<std::size_t>(n_terms), 0);
  for (const std::int32_t t : counts.terms) ++m.df[static_cast<std::size_t>(t)];
  // Stop terms: in more than max_df of the items (scikit-learn's max_df).
  const double max_count = options.max_df * static_cast<double>(n_items);
  m.idf.assign(static_cast<std::size_t>(n_terms), 0.0);
  for (std::int32_t t = 0; t < n_terms; ++t) {
    const auto df = m.df[static_cast<std::size_t>(t)];
    if (df >= 1 && static_cast<double>(df) <= max_count) {
      m.idf[static_cast<std::size_t>(t)] =
          std::log((1.0 + static_cast<double>(n_items)) / (1.0 + static_cast<double>(df))) + 1.0;
      ++m.terms_kept;
    }
  }
  weigh_rows(counts, m);
  return m;
}

TfidfMatrix tfidf_rows(const ItemTable& items, int text_len, const std::vector<std::string>& vocab,
                       const std::vector<double>& idf) {
  LLMREC_CHECK(idf.size() == vocab.size(), "tfidf_rows: {} idf weights for a vocabulary of {} tokens",
               idf.size(), vocab.size());
  TfidfMatrix m;
  m.num_terms = static_cast<std::int32_t>(vocab.size());
  m.idf = idf;
  weigh_rows(count_terms(items, text_len, vocab), m);
  return m;
}

std::vector<ItemNeighbours> tfidf_neighbours(const TfidfMatrix& m, const std::vector<std::uint8_t>& query,
                                             int k) {
  const std::int64_t n = m.num_items();
  LLMREC_CHECK(static_cast<std::int64_t>(query.size()) == n, "tfidf_neighbours: {} query flags for {} items",
               query.size(), n);
  LLMREC_CHECK(k >= 1, "tfidf_neighbours: k must be >= 1, got {}", k);
  // Inverted index of the candidate neighbours (query 0).
  std::vector<std::vector<std::pair<std::int32_t, float>>> postings(static_cast<std::size_t>(m.num_terms));
  for (std::int64_t j = 0; j < n; ++j) {
    if (query[static_cast<std::size_t>(j)] != 0) continue;
    for (auto p = m.offsets[static_cast<std::size_t>(j)]; p < m.offsets[static_cast<std::size_t>(j) + 1];
         ++p) {
      postings[static_cast<std::size_t>(m.terms[static_cast<std::size_t>(p)])].emplace_back(
          static_cast<std::int32_t>(j), m.weights[static_cast<std::size_t>(p)]);
    }
  }
  std::vector<ItemNeighbours> out(static_cast<std::size_t>(n));
  std::vector<double> sim(static_cast<std::size_t>(n), 0.0);
  std::vector<std::int32_t> touched;
  for (std::int64_t i = 0; i < n; ++i) {
    if (query[static_cast<std::size_t>(i)] != 0) {
      touched.clear();
      for (auto p = m.offsets[static_cast<std::size_t>(i)]; p < m.offsets[static_cast<std::size_t>(i) + 1];
           ++p) {
        const double w = m.weights[static_cast<std::size_t>(p)];
        for (const auto& [j, wj] : postings[static_cast<std::size_t>(m.terms[static_cast<std::size_t>(p)])]) {
          if (sim[static_cast<std::size_t>(j)] == 0.0) touched.push_back(j);
          sim[static_cast<std::size_t>(j)] += w * wj;
        }
      }
      auto better = [&](std::int32_t a, std::int32_t b) {
        const double sa = sim[static_cast<std::size_t>(a)], sb = sim[static_cast<std::size_t>(b)];
        return sa != sb ? sa > sb : a < b;
      };
      touched.erase(std::remove_if(touched.begin(), touched.end(),
                                   [&](std::int32_t j) { return !(sim[static_cast<std::size_t>(j)] > 0.0); }),
                    touched.end());
      const std::size_t keep = std::min(touched.size(), static_cast<std::size_t>(k));
      std::partial_sort(touched.begin(), touched.begin() + static_cast<std::ptrdiff_t>(keep), touched.end(),
                        better);
      ItemNeighbours& row = out[static_cast<std::size_t>(i)];
      for (std::size_t r = 0; r < keep; ++r) {
        row.items.push_back(touched[r]);
        row.similarity.push_back(static_cast<float>(sim[static_cast<std::size_t>(touched[r])]));
      }
      for (std::int32_t j : touched) sim[static_cast<std::size_t>(j)] = 0.0;
    }
  }
  return out;
}

TfidfScorer::TfidfScorer(const ItemTable& items, int text_len, const std::vector<std::string>& vocab,
                         const TfidfOptions& options)
    : options_(options), index_(tfidf_matrix(items, text_len, vocab, options)) {}

nlohmann::json TfidfScorer::params() const {
  return {
      {"profile_items", options_.profile_items},
      {"max_df", options_.max_df},
      {"vocabulary", matrix().terms_kept},
      {"terms", "token ids of the item text, [PAD] [UNK] [CLS] [SEP] [MASK] excluded; tf = raw count"},
      {"idf", fmt::format("ln((1 + N) / (1 + df)) + 1 over N = {} items; terms with df > max_df * N dropped",
                          matrix().num_items())},
      {"profile", "mean TF-IDF vector of the last profile_items history events, L2-normalised"},
      {"score", "cosine of the profile and the item's L2-normalised TF-IDF vector"}};
}

at::Tensor TfidfScorer::score(const ScoreRequest& request) {
  const std::int64_t n = matrix().num_items();
  for (std::int32_t i : request.history_items) {
    if (i < 0 || i >= n) throw Error(fmt::format("tfidf: history item {} is not an item id", i));
  }
  at::Tensor out = at::zeros({request.size(), n}, at::kFloat);
  float* o = out.data_ptr<float>();
  at::parallel_for(0, request.size(), 1, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      const std::int64_t begin = request.history_begin(b);
      index_.score(request.history_items.data() + begin, request.history_end(b) - begin,
                   options_.profile_items, o + b * n);
    }
  });
  return out;
}

std::vector<std::pair<std::int32_t, float>> TfidfScorer::tfidf_top_terms(std::int64_t item, int k) const {
  return index_.top_terms(item, k);
}

// ---------------------------------------------------------------- tuning

namespace {

constexpr int kTuneK = 10;  // the objective: validation NDCG@10 (as fusion tuning)

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

const std::vector<int>& itemknn_tune_neighbours() {
  static const std::vector<int> grid = {50, 200, 0};  // 0 = all items
  return grid;
}

const std::vector<double>& itemknn_tune_shrinks() {
  static const std::vector<double> grid = {0.0, 10.0};
  return grid;
}

std::shared_ptr<ItemKnnScorer> tune_itemknn(const TrainingHistories& histories, Evaluator& valid) {
  LLMREC_CHECK(valid.split() == "valid", "itemknn is tuned on the validation split, not '{}'", valid.split());
  const auto t0 = Clock::now();
  const std::int64_t n_items = histories.num_items;
  const int all = static_cast<int>(std::max<std::int64_t>(1, n_items));
  nlohmann::json tried = nlohmann::json::array();
  std::shared_ptr<ItemKnnScorer> best;
  double best_ndcg = -1;
  for (double shrink : itemknn_tune_shrinks()) {
    // Every neighbour once (collective); the smaller neighbourhoods are prefixes.
    ItemKnnScorer full(histories, {all, shrink}, valid.comm());
    std::vector<std::shared_ptr<ItemKnnScorer>> points;
    for (int k : itemknn_tune_neighbours()) {
      const int keep = k == 0 ? all : k;
      std::vector<ItemNeighbours> rows = full.rows();
      for (auto& r : rows) {
        const auto m = std::min(r.items.size(), static_cast<std::size_t>(keep));
        r.items.resize(m);
        r.similarity.resize(m);
      }
      points.push_back(std::make_shared<ItemKnnScorer>(std::move(rows), ItemKnnOptions{keep, shrink}));
    }
    std::vector<Scorer*> scorers;
    for (auto& p : points) scorers.push_back(p.get());
    const std::vector<double> ndcg = valid.mean_ndcg(kTuneK, scorers);
    for (std::size_t g = 0; g < points.size(); ++g) {
      const int k = itemknn_tune_neighbours()[g];
      spdlog::info("itemknn: neighbours {}, shrink {}: valid NDCG@10 {:.4f}",
                   k == 0 ? fmt::format("all ({})", all) : std::to_string(k), shrink, ndcg[g]);
      tried.push_back(
          {{"neighbours", points[g]->options().neighbours}, {"shrink", shrink}, {"valid_ndcg@10", ndcg[g]}});
      if (ndcg[g] > best_ndcg) {
        best_ndcg = ndcg[g];
        best = points[g];
      }
    }
  }
  nlohmann::json neighbours = nlohmann::json::array();
  for (int k : itemknn_tune_neighbours())
    neighbours.push_back(k == 0 ? nlohmann::json("all") : nlohmann::json(k));
  best->set_tuning({{"split", "valid"},
                    {"objective", "NDCG@10"},
                    {"grid", {{"neighbours", neighbours}, {"shrink", itemknn_tune_shrinks()}}},
                    {"tried", tried},
                    {"best_valid_ndcg@10", best_ndcg}});
  spdlog::info(
      "itemknn: tuned on valid over {} points: neighbours {}, shrink {} (NDCG@10 {:.4f}) in {:.2f} s",
      tried.size(), best->options().neighbours, best->options().shrink, best_ndcg, seconds_since(t0));
  return best;
}

const std::vector<double>& bpr_tune_lrs() {
  static const std::vector<double> grid = {0.05, 0.2};
  return grid;
}

const std::vector<double>& bpr_tune_regs() {
  static const std::vector<double> grid = {0.0003, 0.003, 0.03};
  return grid;
}

std::shared_ptr<BprScorer> tune_bpr(const TrainingHistories& histories, const EvalBprConfig& config,
                                    Evaluator& valid, const std::vector<double>& lrs,
                                    const std::vector<double>& regs) {
  LLMREC_CHECK(valid.split() == "valid", "bpr is tuned on the validation split, not '{}'", valid.split());
  LLMREC_CHECK(config.tune_max_epochs >= 1 && config.tune_eval_every >= 1 && config.tune_patience >= 1 &&
                   !lrs.empty() && !regs.empty(),
               "bpr tuning needs tune_max_epochs, tune_eval_every, tune_patience >= 1 and a grid");
  const auto t0 = Clock::now();
  struct Best {
    double ndcg = -1;
    EvalBprConfig config;
    at::Tensor users, items, bias;
    std::vector<double> loss;
  } best;
  nlohmann::json tried = nlohmann::json::array();
  for (double lr : lrs) {
    for (double reg : regs) {
      const auto t1 = Clock::now();
      EvalBprConfig c = config;
      c.lr = lr;
      c.reg = reg;
      BprTraining training(histories, c);
      std::vector<double> loss;
      nlohmann::json curve = nlohmann::json::array();
      double point_best = -1;
      int point_epoch = 0, bad = 0;
      for (int epoch = 1; epoch <= config.tune_max_epochs; ++epoch) {
        loss.push_back(training.epoch());
        if (epoch % config.tune_eval_every != 0 && epoch != config.tune_max_epochs) continue;
        // The same evaluation, hence the same decision, on every rank.
        c.epochs = epoch;
        BprScorer now(c, training.users(), training.items(), training.bias(), loss);
        Scorer* one = &now;
        const double ndcg = valid.mean_ndcg(kTuneK, std::vector<Scorer*>{one}).front();
        curve.push_back({epoch, ndcg});
        if (ndcg > point_best) {
          point_best = ndcg;
          point_epoch = epoch;
          bad = 0;
          if (ndcg > best.ndcg) {
            best = {ndcg, c, now.user_factors(), now.item_factors(), now.item_bias(), loss};
          }
        } else if (++bad >= config.tune_patience) {
          break;
        }
      }
      spdlog::info("bpr: lr {}, reg {}: valid NDCG@10 {:.4f} at epoch {} ({} epochs trained, {:.2f} s)", lr,
                   reg, point_best, point_epoch, loss.size(), seconds_since(t1));
      tried.push_back({{"lr", lr},
                       {"reg", reg},
                       {"best_epoch", point_epoch},
                       {"valid_ndcg@10", point_best},
                       {"epochs_trained", loss.size()},
                       {"valid_ndcg@10_by_epoch", curve}});
    }
  }
  nlohmann::json tuning = {{"split", "valid"},
                           {"objective", "NDCG@10"},
                           {"grid", {{"lr", lrs}, {"reg", regs}}},
                           {"max_epochs", config.tune_max_epochs},
                           {"eval_every", config.tune_eval_every},
                           {"patience", config.tune_patience},
                           {"tried", tried},
                           {"best_valid_ndcg@10", best.ndcg}};
  auto bpr = std::make_shared<BprScorer>(best.config, best.users, best.items, best.bias, best.loss, tuning);
  check_bpr_same_on_every_rank(*bpr, valid.comm());
  spdlog::info("bpr: tuned on valid over {} points: lr {}, reg {}, {} epochs (NDCG@10 {:.4f}) in {:.2f} s",
               tried.size(), best.config.lr, best.config.reg, best.config.epochs, best.ndcg,
               seconds_since(t0));
  return bpr;
}

// ---------------------------------------------------------------- factory

std::vector<std::shared_ptr<Scorer>> create_baseline_scorers(const std::vector<std::string>& names,
                                                             const DatasetFile& file, Communicator& comm,
                                                             const EvalConfig& config) {
  const auto& known = eval_baseline_names();
  bool need_histories = false;
  for (const auto& n : names) {
    if (std::find(known.begin(), known.end(), n) == known.end()) {
      throw ConfigError(
          fmt::format("unknown baseline '{}': choose out of popularity, itemknn, bpr, tfidf, oracle", n));
    }
    if (n == "oracle" && config.oracle_dir.empty()) {
      throw ConfigError(
          "baseline 'oracle' needs eval.oracle_dir: the `llmrec synth` directory the dataset came from");
    }
    need_histories = need_histories || n == "itemknn" || n == "bpr";
  }
  TrainingHistories histories;
  if (need_histories) histories = gather_training_histories(file, comm);
  // The validation split, for tuning (whatever split is evaluated later).
  std::unique_ptr<Evaluator> valid;
  auto validation = [&]() -> Evaluator& {
    if (!valid) valid = std::make_unique<Evaluator>(file, comm, "valid", config);
    return *valid;
  };
  std::vector<std::shared_ptr<Scorer>> out;
  for (const auto& n : names) {
    const auto t0 = Clock::now();
    if (n == "popularity") {
      out.push_back(std::make_shared<PopularityScorer>(file.read_items().train_count));
    } else if (n == "itemknn" && config.itemknn.tune) {
      out.push_back(tune_itemknn(histories, validation()));
    } else if (n == "itemknn") {
      out.push_back(std::make_shared<ItemKnnScorer>(
          histories, ItemKnnOptions{config.itemknn.neighbours, config.itemknn.shrink}, comm));
      spdlog::info("itemknn: similarity rows of {} items in {:.2f} s", histories.num_items,
                   seconds_since(t0));
    } else if (n == "bpr" && config.bpr.tune) {
      out.push_back(tune_bpr(histories, config.bpr, validation()));
    } else if (n == "bpr") {
      auto bpr = std::make_shared<BprScorer>(histories, config.bpr, comm);
      spdlog::info("bpr: {} epochs over {} training events in {:.2f} s, loss {:.4f} -> {:.4f}",
                   config.bpr.epochs, histories.items.size(), seconds_since(t0),
                   bpr->epoch_loss().empty() ? 0.0 : bpr->epoch_loss().front(),
                   bpr->epoch_loss().empty() ? 0.0 : bpr->epoch_loss().back());
      out.push_back(std::move(bpr));
    } else if (n == "tfidf") {
      auto tfidf =
          std::make_shared<TfidfScorer>(file.read_items(), file.text_len(), file.vocab(),
                                        TfidfOptions{config.tfidf.profile_items, config.tfidf.max_df});
      spdlog::info("tfidf: vectors of {} items over {} terms (max_df {}) in {:.2f} s",
                   tfidf->matrix().num_items(), tfidf->matrix().terms_kept, config.tfidf.max_df,
                   seconds_since(t0));
      out.push_back(std::move(tfidf));
    } else {
      out.push_back(OracleScorer::open(config.oracle_dir, file));
    }
  }
  return out;
}

}  // namespace llmrec
