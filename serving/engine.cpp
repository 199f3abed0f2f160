#include "serving/engine.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "common/pseudonym.h"
#include "export/fusion_math.h"
#include "models/ranker.h"

namespace llmrec::serving {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

/// The ranking order: a higher score first, equal scores the smaller row
/// first (as in evaluation).
struct ByScore {
  const float* s;
  bool operator()(std::int32_t a, std::int32_t b) const { return s[a] > s[b] || (s[a] == s[b] && a < b); }
};

/// A [rows, d] view of a float table of the export (never written).
at::Tensor table(const std::vector<float>& v, std::int64_t rows, std::int64_t d) {
  return at::from_blob(const_cast<float*>(v.data()), {rows, d}, at::kFloat);
}

/// "'a', 'b' and 3 more" for error messages.
std::string quoted_list(const std::vector<std::string>& ids) {
  std::string out;
  const std::size_t shown = std::min<std::size_t>(ids.size(), 10);
  for (std::size_t j = 0; j < shown; ++j) out += (j > 0 ? ", '" : "'") + ids[j] + "'";
  if (ids.size() > shown) out += fmt::format(" and {} more", ids.size() - shown);
  return out;
}

void check_weight(const std::optional<double>& w, const char* field) {
  if (w && (!std::isfinite(*w) || *w < 0 || *w > kMaxWeight)) {
    throw RequestError(400, field, fmt::format("must be a number in [0, {:g}], got {}", kMaxWeight, *w));
  }
}

std::vector<std::int32_t> distinct_sorted(std::vector<std::int32_t> items) {
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  return items;
}

/// The top `count` of `candidates` in the ranking order, sorted.
void top_sorted(std::vector<std::int32_t>& candidates, std::size_t count, const float* score) {
  count = std::min(count, candidates.size());
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(count),
                    candidates.end(), ByScore{score});
  candidates.resize(count);
}

/// Per category code, 1 = allowed; empty = every category. 400 naming the
/// categories no item has.
std::vector<std::uint8_t> allowed_categories(const ExportData& e,
                                             const std::vector<std::string>& categories) {
  std::vector<std::uint8_t> allowed;
  if (categories.empty()) return allowed;
  allowed.assign(e.categories.size(), 0);
  std::vector<std::string> unknown;
  for (const auto& c : categories) {
    const std::int32_t code = e.find_category(c);
    if (code < 0) {
      unknown.push_back(c);
    } else {
      allowed[static_cast<std::size_t>(code)] = 1;
    }
  }
  if (!unknown.empty()) throw RequestError(400, "category", "no item has category " + quoted_list(unknown));
  return allowed;
}

/// The feature values (F per event) of events [begin, end) of `times`
/// and `codes` (C per event), each gap from the event before it; a time
/// kUnknownTime (older exports, live events and fresh histories without
/// times) has time values 0.
std::vector<std::int64_t> slot_context(const ContextSpec& spec, const std::vector<std::int64_t>& times,
                                       const std::vector<std::int32_t>& codes, std::size_t begin,
                                       std::size_t end) {
  const std::size_t F = spec.size();
  std::vector<std::int64_t> out(F * (end - begin), 0);
  if (F == 0) return out;
  for (std::size_t j = begin; j < end; ++j) {
    spec.event_values(times.data(), codes.empty() ? nullptr : codes.data(), 0, static_cast<std::int64_t>(j),
                      out.data() + (j - begin) * F);
  }
  return out;
}

/// The values of the moment `time` (time values 0 without it), the gap from
/// the last event of `times`, with the context `query_codes` (C).
std::vector<std::int64_t> query_context(const ContextSpec& spec, const std::vector<std::int64_t>& times,
                                        std::optional<std::int64_t> time,
                                        const std::vector<std::int32_t>& query_codes) {
  std::vector<std::int64_t> out(spec.size(), 0);
  if (spec.empty()) return out;
  spec.values(time.value_or(kUnknownTime), times.empty() ? kUnknownTime : times.back(),
              query_codes.empty() ? nullptr : query_codes.data(), out.data());
  return out;
}

}  // namespace

// RequestError and exclude_name() are defined in request.cpp, which needs no
// tensors (fuzz/fuzz_request.cpp links it alone).

/// A validated request, resolved to rows of the export.
struct RecommendEngine::Resolved {
  std::int32_t user = -1;
  std::vector<std::int32_t> events;    ///< the history: known user's events or the fresh items, oldest first
  std::vector<std::int32_t> window;    ///< the last T of `events` (the tower's input)
  std::vector<std::int32_t> excluded;  ///< item rows left out of the ranking
  std::vector<std::uint8_t> allowed;   ///< per category code; empty = every category
  int k = kDefaultK;
  Exclude exclude = Exclude::kSeen;
  std::optional<int> hour;
  double hour_weight = 0;
  double cf_weight = 0;
  double popularity_weight = 0;
  double tfidf_weight = 0;
  double diversity = 0;
  bool explain = false;
  std::vector<std::int64_t> times;           ///< parallel to `events`; kUnknownTime = unknown
  std::vector<std::int32_t> codes;           ///< context codes, C per event (-1 = unknown)
  std::vector<std::int64_t> window_context;  ///< the window's time feature values, F per slot
  std::vector<std::int64_t> query_context;   ///< the request time's values (F; zeros without a time)
  std::string unknown_user;                  ///< a user id the export does not know: the popularity fallback
  bool live = false;  ///< events received since the export are in `events`: the tower computes u
  bool ann = false;   ///< search "hnsw": rank the index's pool only
};

/// The items one request ranks, when it does not score the whole catalogue.
struct RecommendEngine::Pool {
  std::vector<std::int32_t> items;  ///< rows to rank (their model scores are in the scratch row)
  std::string search = "hnsw";  ///< "hnsw": proposed by the index; "exact": the quantised scan's candidates
  std::int64_t eligible = -1;   ///< the catalogue's eligible items (-1: count the pool's)
  double mean = 0, sd = 0;      ///< hnsw: the model score's exact catalogue mean and deviation
};

struct RecommendEngine::Components {
  bool fallback = false, cf = false, popularity = false, hour = false, tfidf = false;
  bool fused = false;  ///< any component beside the model (or the cold_weights policy)
};

RecommendEngine::RecommendEngine(std::shared_ptr<const ExportData> data, std::optional<AnnOptions> ann)
    : data_(std::move(data)) {
  LLMREC_CHECK(data_ != nullptr && data_->tower != nullptr, "RecommendEngine needs a loaded export");
  context_spec_ = data_->context_spec();
  for (const auto& values : data_->context_values) {
    context_codes_.emplace_back();
    for (std::size_t v = 0; v < values.size(); ++v)
      context_codes_.back().emplace(values[v], static_cast<std::int32_t>(v));
  }
  const auto& f = data_->fusion;
  auto model = f.find("model");
  // Weights relative to the model's (serving keeps the model at 1).
  auto relative = [&](const char* name) {
    auto it = f.find(name);
    if (it == f.end()) return 0.0;
    return model != f.end() && model->second > 0 ? it->second / model->second : it->second;
  };
  default_cf_weight_ = relative("itemknn");
  default_popularity_weight_ = relative("popularity");
  default_tfidf_weight_ = data_->tfidf ? relative("tfidf") : 0.0;
  if (data_->fusion_missing == FusionMissing::kColdWeights) {  // relative to the model's warm weight as well
    const double m = model != f.end() && model->second > 0 ? model->second : 1.0;
    for (const auto& [name, w] : data_->fusion_cold_weights) cold_weights_[name] = w / m;
    if (!data_->tfidf) cold_weights_.erase("tfidf");
  }
  {
    std::vector<float> pop(data_->item_popularity.begin(), data_->item_popularity.end());
    popularity_z_.resize(pop.size());
    fusion_standardise(pop.data(), static_cast<std::int64_t>(pop.size()), popularity_z_.data());
  }
  for (std::size_t t = 0; t < data_->event_types.size(); ++t) {
    std::string name = data_->event_types[t];
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (name == "purchase") purchase_types_.push_back(static_cast<int>(t));
  }
  const std::int64_t d = data_->dim;
  vector_norms_.resize(static_cast<std::size_t>(data_->num_items));
  for (std::int64_t i = 0; i < data_->num_items; ++i) {
    const float* v = data_->vector(i);
    double s = 0;
    for (std::int64_t c = 0; c < d; ++c) s += static_cast<double>(v[c]) * v[c];
    vector_norms_[static_cast<std::size_t>(i)] = static_cast<float>(std::sqrt(s));
  }
  mean_key_ = data_->num_items > 0
                  ? table(data_->item_keys, data_->num_items, d).to(at::kDouble).mean(0).to(at::kFloat)
                  : at::zeros({d}, at::kFloat);
  quantised_ = std::make_unique<QuantisedKeys>(data_->item_keys.data(), data_->num_items, d);
  if (data_->cold_shift != 0) {
    cold_offset_.resize(static_cast<std::size_t>(data_->num_items));
    for (std::size_t i = 0; i < cold_offset_.size(); ++i) {
      cold_offset_[i] = data_->item_cold[i] ? static_cast<float>(data_->cold_shift) : 0.0f;
    }
  }
  if (ann) {
    const std::int64_t I = data_->num_items;
    ann_ = std::make_unique<AnnIndex>(data_->item_keys.data(), I, d, *ann);
    const at::Tensor K = table(data_->item_keys, I, d).to(at::kDouble);
    const at::Tensor G = at::mm(K.t(), K).div_(static_cast<double>(I)).contiguous();
    gram_.assign(G.data_ptr<double>(), G.data_ptr<double>() + d * d);
    const at::Tensor mu = K.mean(0).contiguous();
    mean_key_d_.assign(mu.data_ptr<double>(), mu.data_ptr<double>() + d);
    cold_key_mean_.assign(static_cast<std::size_t>(d), 0.0);
    std::int64_t cold = 0;
    for (std::int64_t i = 0; i < I; ++i) {
      if (!data_->item_cold[static_cast<std::size_t>(i)]) continue;
      ++cold;
      const float* k = data_->key(i);
      for (std::int64_t c = 0; c < d; ++c) cold_key_mean_[static_cast<std::size_t>(c)] += k[c];
    }
    for (auto& v : cold_key_mean_) v /= static_cast<double>(I);
    cold_share_ = static_cast<double>(cold) / static_cast<double>(I);
  }
}

RecommendEngine::~RecommendEngine() = default;

std::shared_ptr<const RecommendEngine> RecommendEngine::open(const std::string& path,
                                                             const std::string& pseudonym_key,
                                                             const std::optional<AnnOptions>& ann) {
  auto engine = std::make_shared<RecommendEngine>(read_export(path), ann);
  const ExportData& e = engine->data();
  if (!pseudonym_key.empty()) {
    if (e.user_ids_scheme != kPseudonymScheme) {
      throw ConfigError(
          fmt::format("{}: a pseudonym key was given but the export holds raw user ids (export it with "
                      "--pseudonymise)",
                      path));
    }
    if (check_pseudonym_key(pseudonym_key) != e.pseudonym_check) {
      throw ConfigError(
          fmt::format("{}: the pseudonym key is not the one the export was written with "
                      "(pseudonym_check differs)",
                      path));
    }
    engine->pseudonym_key_ = pseudonym_key;
  }
  return engine;
}

std::int32_t RecommendEngine::find_user(const std::string& id) const {
  return data_->find_user(pseudonym_key_.empty() ? id : pseudonymise(pseudonym_key_, id));
}

// ------------------------------------------------------------ validation

void RecommendEngine::resolve_options(const RecommendRequest& q, Resolved& r) const {
  const ExportData& e = *data_;
  if (q.user && q.history) throw RequestError(400, "user", "give either 'user' or 'history', not both");
  if (!q.history && !q.history_times.empty()) {
    throw RequestError(400, "history_times", "needs 'history' (a known user's times are stored)");
  }
  if (!q.user && !q.history) {
    throw RequestError(400, "user", "missing: give 'user' (a known user id) or 'history' (recent item ids)");
  }
  if (q.k < 1 || q.k > kMaxK)
    throw RequestError(400, "k", fmt::format("must be an integer in [1, {}], got {}", kMaxK, q.k));
  r.k = q.k;
  if (q.hour && (*q.hour < 0 || *q.hour >= kHours)) {
    throw RequestError(400, "hour",
                       fmt::format("must be an integer hour of the day in [0, 23], got {}", *q.hour));
  }
  for (const auto& [column, value] : q.context) {
    const auto& columns = data_->ranker_context_columns;
    if (std::find(columns.begin(), columns.end(), column) == columns.end()) {
      throw RequestError(400, "context",
                         fmt::format("'{}' is not a context column of this model (its columns: {})", column,
                                     columns.empty() ? std::string("none") : quoted_list(columns)));
    }
  }
  if (q.time && (*q.time < 0 || *q.time > kMaxRequestTime)) {
    throw RequestError(400, "time",
                       fmt::format("must be unix seconds in [0, {}], got {}", kMaxRequestTime, *q.time));
  }
  for (const std::int64_t t : q.history_times) {
    if (t < 0 || t > kMaxRequestTime) {
      throw RequestError(400, "history_times",
                         fmt::format("must hold unix seconds in [0, {}], got {}", kMaxRequestTime, t));
    }
  }
  check_weight(q.hour_weight, "hour_weight");
  check_weight(q.cf_weight, "cf_weight");
  check_weight(q.popularity_weight, "popularity_weight");
  check_weight(q.tfidf_weight, "tfidf_weight");
  if (q.tfidf_weight && *q.tfidf_weight > 0 && !e.tfidf) {
    throw RequestError(400, "tfidf_weight", "this export has no TF-IDF rows (export it again)");
  }
  if (q.hour_weight && !q.hour) throw RequestError(400, "hour_weight", "has no effect without 'hour'");
  if (!std::isfinite(q.diversity) || q.diversity < 0 || q.diversity > 1) {
    throw RequestError(400, "diversity", fmt::format("must be a number in [0, 1], got {}", q.diversity));
  }
  r.hour = q.hour;
  r.hour_weight = q.hour ? q.hour_weight.value_or(kDefaultHourWeight) : 0.0;
  r.cf_weight = q.cf_weight.value_or(default_cf_weight_);
  r.popularity_weight = q.popularity_weight.value_or(default_popularity_weight_);
  r.tfidf_weight = q.tfidf_weight.value_or(default_tfidf_weight_);
  r.diversity = q.diversity;
  r.explain = q.explain;
  r.exclude = q.exclude;
  if (q.search && *q.search != "exact" && *q.search != "hnsw") {
    throw RequestError(400, "search", fmt::format("must be 'exact' or 'hnsw', got '{}'", *q.search));
  }
  if (q.search && *q.search == "hnsw" && !ann_) {
    throw RequestError(400, "search",
                       "'hnsw': this server has no approximate index (start it with --ann hnsw)");
  }
  r.ann = ann_ != nullptr && q.search.value_or("hnsw") == "hnsw";
}

void RecommendEngine::resolve_history(const RecommendRequest& q, Resolved& r) const {
  const ExportData& e = *data_;
  if (q.user) {
    r.user = find_user(*q.user);
    if (r.user < 0) {
      if (q.user->empty()) throw RequestError(400, "user", "must not be empty");
      if (q.live.empty()) r.unknown_user = *q.user;  // no history: the most popular items (finish())
    } else {
      r.events.assign(e.history_items.begin() + e.events_begin(r.user),
                      e.history_items.begin() + e.events_end(r.user));
      if (e.history_times.empty()) {
        r.times.assign(r.events.size(), kUnknownTime);
      } else {
        r.times.assign(e.history_times.begin() + e.events_begin(r.user),
                       e.history_times.begin() + e.events_end(r.user));
      }
      const auto C = static_cast<std::int64_t>(context_codes_.size());
      r.codes.assign(e.history_context.begin() + e.events_begin(r.user) * C,
                     e.history_context.begin() + e.events_end(r.user) * C);
    }
    LLMREC_CHECK(q.live_times.empty() || q.live_times.size() == q.live.size(),
                 "{} live event times for {} live events", q.live_times.size(), q.live.size());
    LLMREC_CHECK(q.live_context.empty() || q.live_context.size() == q.live.size(),
                 "{} live event contexts for {} live events", q.live_context.size(), q.live.size());
    for (std::size_t j = 0; j < q.live.size(); ++j) {
      const std::int32_t i = q.live[j];
      LLMREC_CHECK(i >= 0 && i < e.num_items, "live event item row {} outside the export's {} items", i,
                   e.num_items);
      r.events.push_back(i);
      r.times.push_back(q.live_times.empty() ? kUnknownTime : q.live_times[j]);
      const std::vector<std::int32_t> codes =
          context_codes(q.live_context.empty() ? nullptr : &q.live_context[j]);
      r.codes.insert(r.codes.end(), codes.begin(), codes.end());
    }
    r.live = !q.live.empty();
  } else {
    if (q.history->size() > kMaxRequestHistory) {
      throw RequestError(
          400, "history",
          fmt::format("has {} items; at most {} are accepted", q.history->size(), kMaxRequestHistory));
    }
    std::vector<std::string> unknown;
    for (const auto& id : *q.history) {
      const std::int32_t i = e.find_item(id);
      if (i < 0) {
        unknown.push_back(id);
      } else {
        r.events.push_back(i);
      }
    }
    if (!unknown.empty()) throw RequestError(404, "history", "unknown item ids " + quoted_list(unknown));
    if (!q.history_times.empty() && q.history_times.size() != r.events.size()) {
      throw RequestError(
          400, "history_times",
          fmt::format("has {} times for {} history items", q.history_times.size(), r.events.size()));
    }
    if (!std::is_sorted(q.history_times.begin(), q.history_times.end())) {
      throw RequestError(400, "history_times", "must not decrease (the history is oldest first)");
    }
    r.times = q.history_times;
    if (r.times.empty()) r.times.assign(r.events.size(), kUnknownTime);
    r.codes.assign(r.events.size() * context_codes_.size(), -1);  // a fresh history's context is unknown
  }
}

std::vector<std::int32_t> RecommendEngine::context_codes(
    const std::map<std::string, std::string>* context) const {
  std::vector<std::int32_t> out(context_codes_.size(), -1);
  if (context == nullptr) return out;
  for (std::size_t c = 0; c < context_codes_.size(); ++c) {
    const auto it = context->find(data_->ranker_context_columns[c]);
    if (it == context->end()) continue;
    const auto code = context_codes_[c].find(it->second);
    if (code != context_codes_[c].end()) out[c] = code->second;  // a value training never saw: unknown
  }
  return out;
}

void RecommendEngine::resolve_exclusions(const RecommendRequest& q, Resolved& r) const {
  const ExportData& e = *data_;
  switch (q.exclude) {
    case Exclude::kNone: break;
    case Exclude::kSeen: r.excluded = distinct_sorted(r.events); break;
    case Exclude::kPurchased: {
      if (r.user < 0 && r.unknown_user.empty() && !r.live) {
        throw RequestError(
            400, "exclude",
            "'purchased' needs a known user: a fresh history has no event types (use 'seen' or 'none')");
      }
      if (r.user < 0) break;  // an unknown user has purchased nothing
      if (purchase_types_.empty()) {
        std::vector<std::string> types = e.event_types;
        throw RequestError(
            400, "exclude",
            fmt::format("'purchased': this export has no 'purchase' event type (its types: {})",
                        types.empty() ? std::string("none") : quoted_list(types)));
      }
      for (std::int64_t j = e.events_begin(r.user); j < e.events_end(r.user); ++j) {
        const int type = e.history_types[static_cast<std::size_t>(j)];
        if (std::find(purchase_types_.begin(), purchase_types_.end(), type) != purchase_types_.end()) {
          r.excluded.push_back(e.history_items[static_cast<std::size_t>(j)]);
        }
      }
      r.excluded = distinct_sorted(std::move(r.excluded));
      break;
    }
  }
}

RecommendEngine::Resolved RecommendEngine::resolve(const RecommendRequest& q) const {
  const ExportData& e = *data_;
  Resolved r;
  resolve_options(q, r);
  r.allowed = allowed_categories(e, q.categories);
  resolve_history(q, r);
  const std::size_t T = static_cast<std::size_t>(e.history);
  r.window.assign(r.events.end() - static_cast<std::ptrdiff_t>(std::min(T, r.events.size())), r.events.end());
  r.window_context =
      slot_context(context_spec_, r.times, r.codes, r.events.size() - r.window.size(), r.events.size());
  r.query_context = query_context(context_spec_, r.times, q.time, context_codes(&q.context));

  resolve_exclusions(q, r);
  if (!r.unknown_user.empty()) r.ann = false;  // the popularity fallback scores no model
  return r;
}

// ------------------------------------------------------------ building blocks

namespace {

/// 1 for the items a request may return: in an allowed category (`allowed`
/// per category code, empty = all) and not excluded. [num_items].
std::vector<std::uint8_t> eligible_items(const ExportData& e, const std::vector<std::uint8_t>& allowed,
                                         const std::vector<std::int32_t>& excluded) {
  std::vector<std::uint8_t> eligible(static_cast<std::size_t>(e.num_items), 1);
  if (!allowed.empty()) {
    for (std::size_t i = 0; i < eligible.size(); ++i) {
      eligible[i] = allowed[static_cast<std::size_t>(e.item_category_code[i])] != 0;
    }
  }
  for (std::int32_t i : excluded) eligible[static_cast<std::size_t>(i)] = 0;
  return eligible;
}

/// One batched tower forward: row b reads the items of windows[b] (time
/// order, right-aligned, padding first), with `drop[b]` (if not -1) masked
/// out wherever it occurs, and the slots' time feature values contexts[b]
/// (F per slot; with time features). With a tower that reads profiles,
/// `users[b]` is row b's export user (its stored profile vector), -1 (or
/// `users` empty) for a fresh history without one. -> [B, d].
at::Tensor tower_forward(const ExportData& e, const std::vector<const std::vector<std::int32_t>*>& windows,
                         const std::vector<std::int32_t>& drop,
                         const std::vector<const std::vector<std::int64_t>*>& contexts,
                         const std::vector<std::int32_t>& users = {}) {
  torch::NoGradGuard no_grad;
  const auto B = static_cast<std::int64_t>(windows.size());
  const std::int64_t d = e.dim;
  const auto F = static_cast<std::int64_t>(e.ranker_time_features.size() + e.ranker_context_columns.size());
  std::int64_t S = 1;
  for (const auto* w : windows) S = std::max<std::int64_t>(S, static_cast<std::int64_t>(w->size()));
  at::Tensor items = at::zeros({B, S, d}, at::kFloat);
  at::Tensor mask = at::zeros({B, S}, at::kBool);
  at::Tensor context = F > 0 ? at::zeros({B, S, F}, at::kLong) : at::Tensor();
  float* x = items.data_ptr<float>();
  bool* m = mask.data_ptr<bool>();
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& w = *windows[static_cast<std::size_t>(b)];
    const std::int64_t pad = S - static_cast<std::int64_t>(w.size());
    for (std::size_t s = 0; s < w.size(); ++s) {
      const std::int64_t slot = pad + static_cast<std::int64_t>(s);
      std::copy_n(e.vector(w[s]), d, x + (b * S + slot) * d);
      m[b * S + slot] = drop.empty() || w[s] != drop[static_cast<std::size_t>(b)];
    }
    if (F > 0) {
      const std::vector<std::int64_t>& c = *contexts.at(static_cast<std::size_t>(b));
      LLMREC_CHECK(c.size() == w.size() * static_cast<std::size_t>(F),
                   "tower_forward: {} context values for {} slots", c.size(), w.size());
      std::copy(c.begin(), c.end(), context.data_ptr<std::int64_t>() + (b * S + pad) * F);
    }
  }
  at::Tensor profile, has_profile;
  if (e.ranker_profile != 0) {
    profile = at::zeros({B, d}, at::kFloat);
    has_profile = at::zeros({B}, at::kBool);
    for (std::size_t b = 0; b < users.size(); ++b) {
      const std::int32_t u = users[b];
      if (u < 0 || e.user_has_profile[static_cast<std::size_t>(u)] == 0) continue;
      std::copy_n(e.user_profile(u), d, profile.data_ptr<float>() + static_cast<std::int64_t>(b) * d);
      has_profile.data_ptr<bool>()[b] = true;
    }
  }
  return e.tower->forward(items, mask, context, profile, has_profile).contiguous();
}

/// The model scores of every item for the users' rows `exact` (keys . u,
/// cold items shifted by the export's cold_shift), [exact.size(), I];
/// undefined when there is none.
at::Tensor exact_scores(const ExportData& e, const at::Tensor& users, std::vector<std::int64_t>& exact) {
  at::Tensor scores;
  if (exact.empty()) return scores;
  const at::Tensor keys = table(e.item_keys, e.num_items, e.dim);
  if (exact.size() == 1) {  // one row: a matrix-vector product (BLAS's gemm would pack all the keys first)
    scores = at::mv(keys, users[exact.front()]).unsqueeze(0).contiguous();
  } else {
    const at::Tensor rows = at::from_blob(exact.data(), {static_cast<std::int64_t>(exact.size())}, at::kLong);
    scores = at::mm(users.index_select(0, rows), keys.t()).contiguous();
  }
  if (e.cold_shift != 0) {
    const at::Tensor cold =
        at::from_blob(const_cast<std::uint8_t*>(e.item_cold.data()), {e.num_items}, at::kByte);
    scores.add_(cold.to(at::kFloat).mul_(e.cold_shift).unsqueeze(0));
  }
  return scores;
}

/// users [B, d] += the tower's context vectors of the requests' times.
void add_query_vectors(const ExportData& e, const std::vector<const std::vector<std::int64_t>*>& values,
                       at::Tensor& users) {
  const auto F = static_cast<std::int64_t>(e.ranker_time_features.size() + e.ranker_context_columns.size());
  if (F == 0) return;
  torch::NoGradGuard no_grad;
  const auto B = static_cast<std::int64_t>(values.size());
  at::Tensor q = at::zeros({B, F}, at::kLong);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::vector<std::int64_t>& v = *values[static_cast<std::size_t>(b)];
    std::copy(v.begin(), v.end(), q.data_ptr<std::int64_t>() + b * F);
  }
  users.add_(e.tower->query_vectors(q).to(at::kFloat));
}

}  // namespace

std::vector<float> RecommendEngine::history_vector(const std::vector<std::int32_t>& items,
                                                   const std::vector<std::int64_t>& times,
                                                   const std::vector<std::int32_t>& codes) const {
  for (std::int32_t i : items)
    LLMREC_CHECK(i >= 0 && i < data_->num_items, "history item row {} is out of range", i);
  LLMREC_CHECK(times.empty() || times.size() == items.size(), "history_vector: {} times for {} items",
               times.size(), items.size());
  const std::size_t T = static_cast<std::size_t>(data_->history);
  const std::size_t begin = items.size() - std::min(T, items.size());
  std::vector<std::int32_t> window(items.begin() + static_cast<std::ptrdiff_t>(begin), items.end());
  const std::vector<std::int64_t> all_times =
      times.empty() ? std::vector<std::int64_t>(items.size(), kUnknownTime) : times;
  LLMREC_CHECK(codes.empty() || codes.size() == items.size() * context_codes_.size(),
               "history_vector: {} context codes for {} items", codes.size(), items.size());
  const std::vector<std::int32_t> all_codes =
      codes.empty() ? std::vector<std::int32_t>(items.size() * context_codes_.size(), -1) : codes;
  const std::vector<std::int64_t> context =
      slot_context(context_spec_, all_times, all_codes, begin, items.size());
  at::Tensor u = tower_forward(*data_, {&window}, {}, {&context});
  return {u.data_ptr<float>(), u.data_ptr<float>() + data_->dim};
}

std::vector<float> RecommendEngine::cf_scores(const std::vector<std::int32_t>& history) const {
  const ExportData& e = *data_;
  std::vector<double> acc(static_cast<std::size_t>(e.num_items), 0.0);
  for (std::int32_t h : distinct_sorted(history)) {
    LLMREC_CHECK(h >= 0 && h < e.num_items, "history item row {} is out of range", h);
    const std::int32_t* nb = e.neighbours(h);
    const float* sim = e.similarity(h);
    for (std::int64_t c = 0; c < e.cf_k; ++c) {
      if (nb[c] >= 0) acc[static_cast<std::size_t>(nb[c])] += sim[c];
    }
  }
  return {acc.begin(), acc.end()};
}

std::vector<float> RecommendEngine::hour_scores(int hour) const {
  LLMREC_CHECK(hour >= 0 && hour < kHours, "hour {} is not in [0, 23]", hour);
  const ExportData& e = *data_;
  std::vector<float> out(static_cast<std::size_t>(e.num_items));
  for (std::int64_t i = 0; i < e.num_items; ++i) {
    const double c = e.hour_counts[static_cast<std::size_t>(i * kHours + hour)];
    const double pop = static_cast<double>(e.item_popularity[static_cast<std::size_t>(i)]);
    out[static_cast<std::size_t>(i)] = static_cast<float>(std::log((c + 1.0) / (pop + kHours)));
  }
  return out;
}

const std::vector<float>& RecommendEngine::hour_z(int hour) const {
  const auto h = static_cast<std::size_t>(hour);
  std::call_once(hour_once_[h], [&] {
    const std::vector<float> t = hour_scores(hour);
    std::vector<float> z(t.size());
    fusion_standardise(t.data(), static_cast<std::int64_t>(t.size()), z.data());
    hour_z_[h] = std::move(z);
  });
  return hour_z_[h];
}

// ------------------------------------------------------------ recommend

Recommendation RecommendEngine::recommend(const RecommendRequest& request) const {
  return std::move(recommend_batch({request}).front());
}

std::vector<Recommendation> RecommendEngine::recommend_batch(
    const std::vector<RecommendRequest>& requests) const {
  const auto t0 = Clock::now();
  const ExportData& e = *data_;
  std::vector<Resolved> rs;
  rs.reserve(requests.size());
  for (const auto& q : requests) rs.push_back(resolve(q));
  const auto B = static_cast<std::int64_t>(rs.size());
  std::vector<Recommendation> out(rs.size());
  if (B == 0) return out;

  // User vectors: known users from the export, fresh histories through one
  // batched tower forward.
  const std::int64_t d = e.dim;
  at::Tensor users = at::empty({B, d}, at::kFloat);
  std::vector<const std::vector<std::int32_t>*> windows;
  std::vector<const std::vector<std::int64_t>*> contexts, queries;
  std::vector<std::int64_t> fresh_rows;
  std::vector<std::int32_t> fresh_users;  // a live known user keeps its profile
  for (std::int64_t b = 0; b < B; ++b) {
    const Resolved& r = rs[static_cast<std::size_t>(b)];
    queries.push_back(&r.query_context);
    if (r.user >= 0 && !r.live) {
      std::copy_n(e.user_vector(r.user), d, users.data_ptr<float>() + b * d);
    } else {
      windows.push_back(&r.window);
      contexts.push_back(&r.window_context);
      fresh_rows.push_back(b);
      fresh_users.push_back(r.user);
    }
  }
  if (!windows.empty()) {
    at::Tensor u = tower_forward(e, windows, {}, contexts, fresh_users);
    for (std::size_t j = 0; j < fresh_rows.size(); ++j) {
      std::copy_n(u.data_ptr<float>() + static_cast<std::int64_t>(j) * d, d,
                  users.data_ptr<float>() + fresh_rows[j] * d);
    }
  }
  add_query_vectors(e, queries, users);  // the request's time and context (with such features)
  // Exact rows: s = keys . u for every item, one matrix product; cold items
  // get the export's cold_shift (evaluation's ModelScorer). Approximate
  // rows: the index's pool, scored alone.
  std::vector<std::int64_t> exact;
  std::vector<std::uint8_t> scan(static_cast<std::size_t>(B), 0);
  for (std::int64_t b = 0; b < B; ++b) {
    const Resolved& r = rs[static_cast<std::size_t>(b)];
    if (r.ann) continue;
    const Components c = components(r);
    if (!c.fused && !c.fallback) {
      scan[static_cast<std::size_t>(b)] = 1;
    } else {
      exact.push_back(b);
    }
  }
  const at::Tensor scores = exact_scores(e, users, exact);
  std::vector<float> scratch;
  for (std::int64_t b = 0, x = 0; b < B; ++b) {
    const Resolved& r = rs[static_cast<std::size_t>(b)];
    Recommendation& o = out[static_cast<std::size_t>(b)];
    if (r.ann) {
      const Pool pool = ann_pool(r, users.data_ptr<float>() + b * d, scratch);
      finish(r, scratch.data(), &pool, o);
    } else if (scan[static_cast<std::size_t>(b)]) {
      const Pool pool = scan_pool(r, users.data_ptr<float>() + b * d, scratch);
      finish(r, scratch.data(), &pool, o);
    } else {
      finish(r, scores.data_ptr<float>() + (x++) * e.num_items, nullptr, o);
    }
  }
  const double took = ms_since(t0);
  for (auto& o : out) o.took_ms = took;
  return out;
}

RecommendEngine::Pool RecommendEngine::scan_pool(const Resolved& r, const float* u,
                                                 std::vector<float>& scratch) const {
  const ExportData& e = *data_;
  const std::int64_t I = e.num_items, d = e.dim;
  const std::vector<std::uint8_t> eligible = eligible_items(e, r.allowed, r.excluded);
  Pool pool;
  pool.search = "exact";
  const std::int64_t m = static_cast<std::int64_t>(r.k) * (r.diversity > 0 ? kMmrPoolFactor : 1);
  pool.items = quantised_->candidates(u, m, eligible.data(),
                                      cold_offset_.empty() ? nullptr : cold_offset_.data(), &pool.eligible);
  if (scratch.size() != static_cast<std::size_t>(I)) scratch.resize(static_cast<std::size_t>(I));
  for (std::int32_t i : pool.items) {  // the exact scores of the candidates
    const float* k = e.key(i);
    double s = 0;
    for (std::int64_t c = 0; c < d; ++c) s += static_cast<double>(k[c]) * u[c];
    scratch[static_cast<std::size_t>(i)] =
        static_cast<float>(s) + (cold_offset_.empty() ? 0.0f : cold_offset_[static_cast<std::size_t>(i)]);
  }
  return pool;
}

RecommendEngine::Pool RecommendEngine::ann_pool(const Resolved& r, const float* u,
                                                std::vector<float>& scratch) const {
  const ExportData& e = *data_;
  const std::int64_t d = e.dim;
  Pool pool;
  const std::int64_t want = std::max<std::int64_t>(
      ann_->options().ef_search, static_cast<std::int64_t>(r.k) * (r.diversity > 0 ? kMmrPoolFactor : 4));
  std::vector<float> dots;
  ann_->search(u, want, pool.items, dots);
  // scratch[i] holds the model score of the pool's items only (the rest is
  // never read), so that a request costs O(pool), not O(items).
  if (scratch.size() != static_cast<std::size_t>(e.num_items))
    scratch.resize(static_cast<std::size_t>(e.num_items));
  for (std::size_t j = 0; j < pool.items.size(); ++j) {
    const std::int32_t i = pool.items[j];
    scratch[static_cast<std::size_t>(i)] =
        dots[j] + (cold_offset_.empty() ? 0.0f : cold_offset_[static_cast<std::size_t>(i)]);
  }
  // The exact moments of s over the catalogue (see engine.h).
  double mu_u = 0, cold_u = 0, quad = 0;
  for (std::int64_t a = 0; a < d; ++a) {
    mu_u += mean_key_d_[static_cast<std::size_t>(a)] * u[a];
    cold_u += cold_key_mean_[static_cast<std::size_t>(a)] * u[a];
    double row = 0;
    for (std::int64_t c = 0; c < d; ++c) row += gram_[static_cast<std::size_t>(a * d + c)] * u[c];
    quad += row * u[a];
  }
  const double b = e.cold_shift;
  pool.mean = mu_u + b * cold_share_;
  const double second = quad + 2 * b * cold_u + b * b * cold_share_;
  pool.sd = std::sqrt(std::max(0.0, second - pool.mean * pool.mean));
  return pool;
}

RecommendEngine::Components RecommendEngine::components(const Resolved& r) const {
  const ExportData& e = *data_;
  Components c;
  c.fallback = !r.unknown_user.empty();
  if (c.fallback) return c;
  auto tfidf_cold = cold_weights_.find("tfidf");
  c.cf = r.cf_weight > 0;
  c.popularity = r.popularity_weight > 0;
  c.hour = r.hour.has_value() && r.hour_weight > 0;
  c.tfidf = e.tfidf != nullptr &&
            (r.tfidf_weight > 0 || (tfidf_cold != cold_weights_.end() && tfidf_cold->second > 0));
  c.fused = c.cf || c.popularity || c.tfidf || c.hour || e.fusion_missing == FusionMissing::kColdWeights;
  return c;
}

struct RecommendEngine::Fused {
  std::vector<float> cf;     ///< ItemKNN scores (with the cf component)
  std::vector<float> tfidf;  ///< TF-IDF scores (with the tfidf component)
  std::vector<float> score;  ///< the ranking score (fused or fallback); empty: the model's
};

RecommendEngine::Fused RecommendEngine::fuse(const Resolved& r, const Components& comp, const float* model,
                                             const Pool* pool) const {
  const ExportData& e = *data_;
  const std::int64_t I = e.num_items;
  Fused f;
  if (comp.fallback) {  // the training event count of each item
    f.score.assign(e.item_popularity.begin(), e.item_popularity.end());
    return f;
  }
  if (!comp.fused) return f;
  // Fusion, exactly as evaluation: z-standardise each component over the
  // whole catalogue, then the weighted sum (export/fusion_math.h). Cold items
  // take the weights of the export's missing-score policy: with
  // `renormalise` or `cold_weights` the collaborative components (CF,
  // popularity, time of day: all counted from training events) leave them.
  auto cold_weight = [&](const char* name) {
    auto it = cold_weights_.find(name);
    return it == cold_weights_.end() ? 0.0 : it->second;
  };
  std::vector<float> z_model, z_cf, z_tf;
  if (pool == nullptr) {
    z_model.resize(static_cast<std::size_t>(I));
    fusion_standardise(model, I, z_model.data());
  } else {  // the pool's z with the exact moments; the rest never ranks
    z_model.assign(static_cast<std::size_t>(I), -std::numeric_limits<float>::infinity());
    for (std::int32_t i : pool->items) {
      z_model[static_cast<std::size_t>(i)] =
          pool->sd > 0 ? static_cast<float>((model[i] - pool->mean) / pool->sd) : 0.0f;
    }
  }
  std::vector<const float*> rows{z_model.data()};
  std::vector<double> weights{1.0}, tuned{cold_weight("model")};
  std::vector<bool> scores_cold{true};
  auto add = [&](const float* z, double weight, bool scores_cold_items, double tuned_weight) {
    rows.push_back(z);
    weights.push_back(weight);
    scores_cold.push_back(scores_cold_items);
    tuned.push_back(tuned_weight);
  };
  if (comp.cf) {
    f.cf = cf_scores(r.events);
    z_cf.resize(static_cast<std::size_t>(I));
    fusion_standardise(f.cf.data(), I, z_cf.data());
    add(z_cf.data(), r.cf_weight, false, 0.0);
  }
  if (comp.popularity) add(popularity_z_.data(), r.popularity_weight, false, 0.0);
  if (comp.tfidf) {  // content: every item has text, cold ones too
    f.tfidf.resize(static_cast<std::size_t>(I));
    e.tfidf->score(r.events.data(), static_cast<std::int64_t>(r.events.size()), e.tfidf_profile_items,
                   f.tfidf.data());
    z_tf.resize(static_cast<std::size_t>(I));
    fusion_standardise(f.tfidf.data(), I, z_tf.data());
    add(z_tf.data(), r.tfidf_weight, true, cold_weight("tfidf"));
  }
  if (comp.hour) add(hour_z(*r.hour).data(), r.hour_weight, false, 0.0);
  const FusionMissing policy = e.fusion_missing;
  const std::vector<double> cold_weights = fusion_cold_weights(policy, weights, scores_cold, tuned);
  f.score.resize(static_cast<std::size_t>(I));
  fusion_combine(rows, weights, I, f.score.data(),
                 policy == FusionMissing::kScored ? nullptr : e.item_cold.data(), cold_weights);
  return f;
}

std::vector<std::int32_t> RecommendEngine::candidates(const Resolved& r, const Pool* pool) const {
  const ExportData& e = *data_;
  const std::int64_t I = e.num_items;
  std::vector<std::int32_t> out;
  if (pool == nullptr) {
    const std::vector<std::uint8_t> eligible = eligible_items(e, r.allowed, r.excluded);
    out.reserve(static_cast<std::size_t>(I));
    for (std::int64_t i = 0; i < I; ++i) {
      if (eligible[static_cast<std::size_t>(i)]) out.push_back(static_cast<std::int32_t>(i));
    }
    return out;
  }
  for (std::int32_t i : pool->items) {  // r.excluded is sorted
    const bool allowed =
        r.allowed.empty() ||
        r.allowed[static_cast<std::size_t>(e.item_category_code[static_cast<std::size_t>(i)])] != 0;
    if (allowed && !std::binary_search(r.excluded.begin(), r.excluded.end(), i)) out.push_back(i);
  }
  return out;
}

void RecommendEngine::describe_items(const Resolved& r, const std::vector<std::int32_t>& picked,
                                     const float* model, const Fused& f, Recommendation& out) const {
  const ExportData& e = *data_;
  const float* score = f.score.empty() ? model : f.score.data();
  out.items.resize(picked.size());
  for (std::size_t j = 0; j < picked.size(); ++j) {
    RecommendedItem& it = out.items[j];
    const std::int32_t i = picked[j];
    it.item = i;
    it.score = score[i];
    it.model_score = model[i];
    it.cf_score = f.cf.empty() ? 0.0f : f.cf[static_cast<std::size_t>(i)];
    it.tfidf_score = f.tfidf.empty() ? 0.0f : f.tfidf[static_cast<std::size_t>(i)];
    if (r.explain && e.tfidf != nullptr && !r.events.empty()) {
      // Whole words only: a piece inside a word ("##7" of a product code) says little.
      for (const auto& [term, w] :
           e.tfidf->shared_terms(r.events.data(), static_cast<std::int64_t>(r.events.size()),
                                 e.tfidf_profile_items, i, std::numeric_limits<int>::max())) {
        const std::string& word = e.vocab[static_cast<std::size_t>(term)];
        if (word.rfind("##", 0) == 0) continue;
        it.matches.push_back(word);
        if (it.matches.size() == kExplainTop) break;
      }
    }
    if (r.hour) {
      const double c =
          e.hour_counts[static_cast<std::size_t>(i) * kHours + static_cast<std::size_t>(*r.hour)];
      it.hour_score = static_cast<float>(std::log(
          (c + 1.0) / (static_cast<double>(e.item_popularity[static_cast<std::size_t>(i)]) + kHours)));
    }
  }
}

void RecommendEngine::finish(const Resolved& r, const float* model, const Pool* pool,
                             Recommendation& out) const {
  out.user = r.user;
  out.history = r.events;
  out.k = r.k;
  out.exclude = r.exclude;
  out.hour = r.hour;
  out.hour_weight = r.hour_weight;
  out.cf_weight = r.cf_weight;
  out.popularity_weight = r.popularity_weight;
  out.tfidf_weight = r.tfidf_weight;
  out.diversity = r.diversity;
  out.explain = r.explain;
  out.search = pool != nullptr ? pool->search : "exact";
  out.candidates =
      pool != nullptr && pool->search == "hnsw" ? static_cast<std::int64_t>(pool->items.size()) : 0;
  const Components comp = components(r);
  out.unknown_user = r.unknown_user;
  out.fallback = comp.fallback ? "popularity" : "";
  out.fused = comp.fused;
  const Fused f = fuse(r, comp, model, pool);
  const float* score = f.score.empty() ? model : f.score.data();

  // Filters and exclusions, then the exact top of what is left (of the
  // pool, with approximate search).
  std::vector<std::int32_t> cands = candidates(r, pool);
  out.eligible =
      pool != nullptr && pool->eligible >= 0 ? pool->eligible : static_cast<std::int64_t>(cands.size());
  const auto k = static_cast<std::size_t>(r.k);
  std::vector<std::int32_t> picked;
  if (r.diversity > 0) {
    top_sorted(cands, k * kMmrPoolFactor, score);
    picked = mmr_select(cands, score, k, r.diversity);
  } else {
    top_sorted(cands, k, score);
    picked = std::move(cands);
  }
  describe_items(r, picked, model, f, out);
  if (r.explain && !picked.empty()) explain(r, comp.cf, out);
}

std::vector<std::int32_t> RecommendEngine::mmr_select(const std::vector<std::int32_t>& pool,
                                                      const float* score, std::size_t k,
                                                      double lambda) const {
  const ExportData& e = *data_;
  const auto P = static_cast<std::int64_t>(pool.size());
  const std::int64_t d = e.dim;
  if (P == 0) return {};
  // Relevance rescaled to [0, 1] over the pool, so that it weighs against
  // cosine similarities on one scale.
  const double top = score[pool.front()];
  const double bottom = score[pool.back()];
  std::vector<double> rel(static_cast<std::size_t>(P));
  for (std::int64_t p = 0; p < P; ++p) {
    rel[static_cast<std::size_t>(p)] =
        top > bottom ? (score[pool[static_cast<std::size_t>(p)]] - bottom) / (top - bottom) : 1.0;
  }
  // Unit item vectors of the pool (a zero vector stays zero: cosine 0).
  at::Tensor unit = at::empty({P, d}, at::kFloat);
  float* u = unit.data_ptr<float>();
  for (std::int64_t p = 0; p < P; ++p) {
    const std::int32_t i = pool[static_cast<std::size_t>(p)];
    const float n = vector_norms_[static_cast<std::size_t>(i)];
    const float* v = e.vector(i);
    for (std::int64_t c = 0; c < d; ++c) u[p * d + c] = n > 0 ? v[c] / n : 0.0f;
  }
  std::vector<double> max_sim(static_cast<std::size_t>(P), -std::numeric_limits<double>::infinity());
  std::vector<std::uint8_t> taken(static_cast<std::size_t>(P), 0);
  std::vector<std::int32_t> picked;
  const std::size_t want = std::min<std::size_t>(k, static_cast<std::size_t>(P));
  while (picked.size() < want) {
    std::int64_t best = -1;
    double best_value = 0;
    for (std::int64_t p = 0; p < P; ++p) {
      if (taken[static_cast<std::size_t>(p)]) continue;
      const double penalty = picked.empty() ? 0.0 : max_sim[static_cast<std::size_t>(p)];
      const double value = (1.0 - lambda) * rel[static_cast<std::size_t>(p)] - lambda * penalty;
      if (best < 0 || value > best_value) {  // ties: the better-ranked item
        best = p;
        best_value = value;
      }
    }
    taken[static_cast<std::size_t>(best)] = 1;
    picked.push_back(pool[static_cast<std::size_t>(best)]);
    const at::Tensor sims = at::mv(unit, unit[best]).contiguous();
    const float* s = sims.data_ptr<float>();
    for (std::int64_t p = 0; p < P; ++p) {
      max_sim[static_cast<std::size_t>(p)] =
          std::max(max_sim[static_cast<std::size_t>(p)], static_cast<double>(s[p]));
    }
  }
  return picked;
}

void RecommendEngine::explain(const Resolved& r, bool use_cf, Recommendation& out) const {
  const ExportData& e = *data_;
  const auto k = static_cast<std::int64_t>(out.items.size());
  // Leave-one-out: the tower on the window, and on the window without each
  // distinct history item (every occurrence masked), in one batch.
  const std::vector<std::int32_t> distinct = distinct_sorted(r.window);
  if (!distinct.empty()) {
    const auto n = static_cast<std::int64_t>(distinct.size());
    std::vector<const std::vector<std::int32_t>*> windows(static_cast<std::size_t>(n + 1), &r.window);
    std::vector<std::int32_t> drop{-1};
    drop.insert(drop.end(), distinct.begin(), distinct.end());
    const std::vector<const std::vector<std::int64_t>*> contexts(static_cast<std::size_t>(n + 1),
                                                                 &r.window_context);
    const at::Tensor users = tower_forward(
        e, windows, drop, contexts, std::vector<std::int32_t>(static_cast<std::size_t>(n + 1), r.user));
    std::vector<std::int64_t> rows;
    for (const auto& it : out.items) rows.push_back(it.item);
    // Centred keys: removing h moves every item's score; what is specific
    // to item i is its change beyond the catalogue's average change.
    const at::Tensor keys =
        table(e.item_keys, e.num_items, e.dim).index_select(0, at::tensor(rows, at::kLong)) -
        mean_key_;                                              // [k, d]
    const at::Tensor s = at::mm(users, keys.t()).contiguous();  // [n + 1, k]
    const float* sp = s.data_ptr<float>();
    for (std::int64_t j = 0; j < k; ++j) {
      std::vector<Contribution> c(static_cast<std::size_t>(n));
      for (std::int64_t h = 0; h < n; ++h) {
        c[static_cast<std::size_t>(h)] = {distinct[static_cast<std::size_t>(h)], sp[j] - sp[(h + 1) * k + j]};
      }
      std::sort(c.begin(), c.end(), [](const Contribution& a, const Contribution& b) {
        return a.value > b.value || (a.value == b.value && a.item < b.item);
      });
      c.resize(std::min(c.size(), kExplainTop));
      out.items[static_cast<std::size_t>(j)].because = std::move(c);
    }
  }
  if (use_cf) {
    std::unordered_map<std::int32_t, std::size_t> where;
    for (std::size_t j = 0; j < out.items.size(); ++j) where.emplace(out.items[j].item, j);
    for (std::int32_t h : distinct_sorted(r.events)) {
      const std::int32_t* nb = e.neighbours(h);
      const float* sim = e.similarity(h);
      for (std::int64_t c = 0; c < e.cf_k; ++c) {
        if (nb[c] < 0) continue;
        auto it = where.find(nb[c]);
        if (it != where.end()) out.items[it->second].cf.push_back({h, sim[c]});
      }
    }
    for (auto& it : out.items) {
      std::sort(it.cf.begin(), it.cf.end(), [](const CfEvidence& a, const CfEvidence& b) {
        return a.similarity > b.similarity || (a.similarity == b.similarity && a.item < b.item);
      });
      if (it.cf.size() > kExplainTop) it.cf.resize(kExplainTop);
    }
  }
}

// ------------------------------------------------------------ similar

SimilarResult RecommendEngine::similar(const SimilarRequest& q) const {
  const auto t0 = Clock::now();
  const ExportData& e = *data_;
  const std::int64_t I = e.num_items;
  SimilarResult out;
  out.item = e.find_item(q.item);
  if (out.item < 0) throw RequestError(404, "item", fmt::format("unknown item '{}'", q.item));
  if (q.k < 1 || q.k > kMaxK)
    throw RequestError(400, "k", fmt::format("must be an integer in [1, {}], got {}", kMaxK, q.k));
  check_weight(q.cf_weight, "cf_weight");
  out.k = q.k;
  out.cf_weight = q.cf_weight.value_or(default_cf_weight_);
  std::vector<std::uint8_t> allowed = allowed_categories(e, q.categories);

  // Cosine of items/vectors: one matrix-vector product, then the norms.
  const at::Tensor vectors = table(e.item_vectors, I, e.dim);
  const at::Tensor dots = at::mv(vectors, vectors[out.item]).contiguous();
  const float* dp = dots.data_ptr<float>();
  const float self_norm = vector_norms_[static_cast<std::size_t>(out.item)];
  std::vector<float> cosine(static_cast<std::size_t>(I));
  for (std::int64_t i = 0; i < I; ++i) {
    const float n = vector_norms_[static_cast<std::size_t>(i)] * self_norm;
    cosine[static_cast<std::size_t>(i)] = n > 0 ? dp[i] / n : 0.0f;
  }
  std::vector<float> cf, fused;
  const float* score = cosine.data();
  if (out.cf_weight > 0) {
    cf = cf_scores({out.item});
    std::vector<float> z_cos(static_cast<std::size_t>(I)), z_cf(static_cast<std::size_t>(I));
    fusion_standardise(cosine.data(), I, z_cos.data());
    fusion_standardise(cf.data(), I, z_cf.data());
    fused.resize(static_cast<std::size_t>(I));
    fusion_combine({z_cos.data(), z_cf.data()}, {1.0, out.cf_weight}, I, fused.data());
    score = fused.data();
  }
  std::vector<std::int32_t> candidates;
  candidates.reserve(static_cast<std::size_t>(I));
  for (std::int64_t i = 0; i < I; ++i) {
    if (i == out.item) continue;
    if (!allowed.empty() &&
        !allowed[static_cast<std::size_t>(e.item_category_code[static_cast<std::size_t>(i)])])
      continue;
    candidates.push_back(static_cast<std::int32_t>(i));
  }
  top_sorted(candidates, static_cast<std::size_t>(q.k), score);
  for (std::int32_t i : candidates) {
    out.items.push_back({i, score[i], cosine[static_cast<std::size_t>(i)],
                         cf.empty() ? 0.0f : cf[static_cast<std::size_t>(i)]});
  }
  out.took_ms = ms_since(t0);
  return out;
}

}  // namespace llmrec::serving
