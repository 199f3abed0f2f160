#include "data/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <tuple>

#include "common/error.h"
#include "common/random.h"

namespace llmrec {

std::vector<Shard> shard_users(const std::vector<std::int64_t>& train_end, int world) {
  LLMREC_CHECK(world >= 1, "world size must be positive, got {}", world);
  const auto n = static_cast<std::int64_t>(train_end.size());
  std::vector<std::int64_t> prefix(train_end.size() + 1, 0);
  for (std::size_t u = 0; u < train_end.size(); ++u)
    prefix[u + 1] = prefix[u] + examples_of_user(train_end[u]);
  const std::int64_t total = prefix.back();
  std::vector<Shard> shards(static_cast<std::size_t>(world));
  std::int64_t begin = 0;
  for (int r = 0; r < world; ++r) {
    // End at the first user whose prefix reaches the rank's share.
    const std::int64_t goal = total * (r + 1) / world;
    std::int64_t end =
        r + 1 == world ? n : std::lower_bound(prefix.begin() + begin, prefix.end(), goal) - prefix.begin();
    end = std::clamp<std::int64_t>(end, begin, n);
    shards[static_cast<std::size_t>(r)] = {
        begin, end, prefix[static_cast<std::size_t>(end)] - prefix[static_cast<std::size_t>(begin)]};
    begin = end;
  }
  return shards;
}

BatchSampler::BatchSampler(const DatasetFile& dataset, int rank, int world, const SamplerOptions& options)
    : options_(options), rank_(rank) {
  LLMREC_CHECK(options.batch_size >= 1, "batch size must be positive, got {}", options.batch_size);
  LLMREC_CHECK(options.history >= 1, "history length must be positive, got {}", options.history);
  const std::vector<std::int64_t> train_end = dataset.read_train_end();
  auto shards = shard_users(train_end, world);
  shard_ = shards.at(static_cast<std::size_t>(rank));
  for (const auto& s : shards) {
    global_examples_ += s.examples;
    std::int64_t rows = s.examples;
    if (options.sequences) {
      rows = 0;
      for (std::int64_t u = s.user_begin; u < s.user_end; ++u) {
        rows += windows_of_user(train_end[static_cast<std::size_t>(u)], options.history);
      }
    }
    steps_per_epoch_ = std::max(steps_per_epoch_, (rows + options.batch_size - 1) / options.batch_size);
  }
  items_ = dataset.read_items();
  text_len_ = dataset.text_len();
  log_q_total_ = static_cast<double>(items_.ids.size());
  for (auto c : items_.train_count) log_q_total_ += static_cast<double>(c);
  LLMREC_CHECK(options.context.column_values.size() == options.context_columns.size(),
               "sampler: {} context columns named, values of {} given", options.context_columns.size(),
               options.context.column_values.size());
  slice_ = dataset.read_users(shard_.user_begin, shard_.user_end, options.context_columns);
  if (options.profiles && !dataset.has_profiles()) {
    throw ConfigError(fmt::format(
        "model.user.profile is on but {} has no user profiles: prepare it with data.users (a user table "
        "with profile text)",
        dataset.path()));
  }
  event_codes_ = context_codes_by_event(slice_.events);
  std::int64_t targets = 0;
  for (std::size_t u = 0; u + 1 < slice_.users.offsets.size(); ++u) {
    const std::int64_t first = slice_.users.offsets[u];
    const std::int64_t n = slice_.users.train_end[u];
    if (!options.sequences) {
      for (std::int64_t j = 1; j < n; ++j) {
        example_user_.push_back(static_cast<std::int32_t>(u));
        example_event_.push_back(first + j);
      }
      targets += examples_of_user(n);
      continue;
    }
    // Windows as documented in sampler.h: the first ends at event min(T, n-1),
    // each next one T/2 events later, the last at event n-1.
    if (n < 2) continue;
    const std::int64_t last = n - 1;
    const std::int64_t stride = std::max<std::int64_t>(1, options.history / 2);
    std::int64_t end = std::min(options.history, last);
    std::int64_t covered = 0;
    while (true) {
      example_user_.push_back(static_cast<std::int32_t>(u));
      example_event_.push_back(first + end);
      example_covered_.push_back(first + covered);
      targets += end - covered;
      covered = end;
      if (end == last) break;
      end = std::min(end + stride, last);
    }
  }
  LLMREC_CHECK(targets == shard_.examples, "rank {}: {} examples read, {} planned", rank, targets,
               shard_.examples);
}

std::shared_ptr<const std::vector<std::int64_t>> BatchSampler::permutation(std::int64_t epoch) const {
  std::lock_guard<std::mutex> lock(perm_mutex_);
  if (perm_ && perm_epoch_ == epoch) return perm_;
  // splitmix64 of (seed, epoch, rank) -> mt19937_64; Fisher-Yates with
  // Lemire's unbiased bounded draw, so the order is the same everywhere.
  std::mt19937_64 gen(splitmix64(splitmix64(options_.seed) ^ static_cast<std::uint64_t>(epoch)) ^
                      splitmix64(static_cast<std::uint64_t>(rank_) + 7));
  std::vector<std::int64_t> perm = random_permutation(static_cast<std::int64_t>(example_user_.size()), gen);
  perm_ = std::make_shared<const std::vector<std::int64_t>>(std::move(perm));
  perm_epoch_ = epoch;
  return perm_;
}

std::vector<std::int64_t> BatchSampler::batch_negatives(const Cursor& cursor, std::int64_t rows) const {
  std::vector<std::int64_t> negatives;
  if (rows == 0) return negatives;
  if (options_.all_items) {
    // Every item that can be a target: an item without training events
    // would only ever be pushed down, and with text that teaches the item
    // tower to bury cold items (Scientific: cold NDCG@10 0 with them).
    for (std::size_t i = 0; i < items_.ids.size(); ++i) {
      if (items_.train_count[i] > 0) negatives.push_back(static_cast<std::int64_t>(i));
    }
  } else if (options_.sampled_negatives > 0) {
    // Uniform over the catalogue, seeded by (seed, epoch, step, rank) so that
    // a batch stays a pure function of its cursor.
    std::mt19937_64 gen(
        options_.seed * 0x9e3779b97f4a7c15ULL ^ static_cast<std::uint64_t>(cursor.epoch) * 1000003ULL ^
        static_cast<std::uint64_t>(cursor.step) * 7919ULL ^ static_cast<std::uint64_t>(rank_ + 1) << 48);
    const auto n_items = static_cast<unsigned __int128>(items_.ids.size());
    for (std::int64_t k = 0; k < options_.sampled_negatives; ++k) {
      negatives.push_back(static_cast<std::int64_t>((static_cast<unsigned __int128>(gen()) * n_items) >> 64));
    }
  }
  return negatives;
}

std::pair<at::Tensor, at::Tensor> text_tensors(const std::vector<std::int32_t>& tokens,
                                               const std::vector<std::int32_t>& length, int text_len,
                                               const std::vector<std::int64_t>& rows) {
  const auto n = static_cast<std::int64_t>(rows.size());
  at::Tensor tok_t = at::zeros({n, text_len}, at::kLong);
  at::Tensor mask_t = at::zeros({n, text_len}, at::kLong);
  auto* tok = tok_t.data_ptr<std::int64_t>();
  auto* mask = mask_t.data_ptr<std::int64_t>();
  const auto L = static_cast<std::size_t>(text_len);
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t row = rows[static_cast<std::size_t>(r)];
    if (row < 0) continue;
    const auto at = static_cast<std::size_t>(row);
    LLMREC_CHECK(at < length.size() && (at + 1) * L <= tokens.size(), "text row {} outside the table's {}",
                 row, length.size());
    const std::int32_t len = length[at];
    for (int k = 0; k < text_len; ++k) {
      tok[r * text_len + k] = tokens[at * L + static_cast<std::size_t>(k)];
      mask[r * text_len + k] = k < len ? 1 : 0;
    }
  }
  return {tok_t, mask_t};
}

std::pair<at::Tensor, at::Tensor> text_rows(const std::vector<std::int32_t>& tokens,
                                            const std::vector<std::int32_t>& length, std::int64_t full_len,
                                            std::int64_t lo, std::int64_t hi, std::int64_t keep) {
  LLMREC_CHECK(0 <= lo && lo <= hi && hi <= static_cast<std::int64_t>(length.size()) &&
                   hi * full_len <= static_cast<std::int64_t>(tokens.size()) && 0 <= keep && keep <= full_len,
               "text rows [{}, {}) x {} of {} outside a table of {} rows x {}", lo, hi, keep, full_len,
               length.size(), full_len);
  const at::Tensor all =
      at::from_blob(const_cast<std::int32_t*>(tokens.data()) + lo * full_len, {hi - lo, full_len}, at::kInt)
          .to(at::kLong);
  const at::Tensor len =
      at::from_blob(const_cast<std::int32_t*>(length.data()) + lo, {hi - lo}, at::kInt).to(at::kLong);
  return {all.narrow(1, 0, keep).contiguous(),
          (at::arange(keep, at::kLong).unsqueeze(0) < len.unsqueeze(1)).to(at::kLong)};
}

void BatchSampler::fill_items(const std::vector<std::int64_t>& ids, Batch& out) const {
  const auto u = static_cast<std::int64_t>(ids.size());
  out.item_ids = u == 0 ? at::empty({0}, at::kLong) : at::tensor(ids, at::kLong);
  std::tie(out.item_tokens, out.item_mask) = text_tensors(items_.tokens, items_.length, text_len_, ids);
  // log q: an item's share of training events (add-one smoothed), the
  // rate at which in-batch sampling meets it.
  out.item_log_q = at::empty({u}, at::kFloat);
  auto* log_q = out.item_log_q.data_ptr<float>();
  for (std::int64_t r = 0; r < u; ++r) {
    const auto item = static_cast<std::size_t>(ids[static_cast<std::size_t>(r)]);
    log_q[r] = static_cast<float>(std::log(static_cast<double>(items_.train_count[item] + 1) / log_q_total_));
  }
}

void BatchSampler::fill_profiles(const std::vector<std::int64_t>& perm, std::int64_t lo, std::int64_t hi,
                                 Batch& out) const {
  std::vector<std::int64_t> users;
  for (std::int64_t k = lo; k < hi; ++k)
    users.push_back(example_user_[static_cast<std::size_t>(perm[static_cast<std::size_t>(k)])]);
  std::tie(out.profile_tokens, out.profile_mask) =
      text_tensors(slice_.users.profile_tokens, slice_.users.profile_length, text_len_, users);
}

std::int64_t BatchSampler::window_begin(std::size_t e) const {
  const std::int64_t first = slice_.users.offsets[static_cast<std::size_t>(example_user_[e])];
  return std::max(first, example_event_[e] - options_.history);
}

std::vector<std::int64_t> BatchSampler::batch_item_ids(const std::vector<std::int64_t>& perm, std::int64_t lo,
                                                       std::int64_t hi,
                                                       const std::vector<std::int64_t>& negatives) const {
  std::vector<std::int64_t> ids;
  for (std::int64_t k = lo; k < hi; ++k) {
    const auto e = static_cast<std::size_t>(perm[static_cast<std::size_t>(k)]);
    for (std::int64_t j = window_begin(e); j <= example_event_[e]; ++j) {
      ids.push_back(slice_.events.item[static_cast<std::size_t>(j)]);
    }
  }
  ids.insert(ids.end(), negatives.begin(), negatives.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

std::int64_t BatchSampler::count_targets(const std::vector<std::int64_t>& perm, std::int64_t lo,
                                         std::int64_t hi) const {
  if (!options_.sequences) return hi - lo;
  std::int64_t n = 0;
  for (std::int64_t k = lo; k < hi; ++k) {
    const auto e = static_cast<std::size_t>(perm[static_cast<std::size_t>(k)]);
    n += example_event_[e] - std::max(example_covered_[e], window_begin(e));
  }
  return n;
}

void BatchSampler::event_features(std::size_t user, std::int64_t event, std::int64_t* out) const {
  options_.context.event_values(slice_.events.time.data(),
                                event_codes_.empty() ? nullptr : event_codes_.data(),
                                slice_.users.offsets[user], event, out);
}

Batch BatchSampler::batch(const Cursor& cursor) const {
  LLMREC_CHECK(cursor.step >= 0 && cursor.step < steps_per_epoch_, "step {} outside the epoch's {} steps",
               cursor.step, steps_per_epoch_);
  const auto perm_ptr = permutation(cursor.epoch);
  const std::vector<std::int64_t>& perm = *perm_ptr;
  const auto n = static_cast<std::int64_t>(perm.size());
  const std::int64_t lo = std::min(n, cursor.step * options_.batch_size);
  const std::int64_t hi = std::min(n, lo + options_.batch_size);
  const std::int64_t b = hi - lo;
  const std::int64_t t_len = options_.history;

  const std::vector<std::int64_t> negatives = batch_negatives(cursor, b);
  const std::vector<std::int64_t> ids = batch_item_ids(perm, lo, hi, negatives);
  auto row_of = [&](std::int64_t item) {
    return std::lower_bound(ids.begin(), ids.end(), item) - ids.begin();
  };

  Batch out;
  out.cursor = cursor;
  fill_items(ids, out);
  out.negatives = at::empty({static_cast<std::int64_t>(negatives.size())}, at::kLong);
  auto* neg = out.negatives.data_ptr<std::int64_t>();
  for (std::size_t k = 0; k < negatives.size(); ++k) neg[k] = row_of(negatives[k]);
  const std::int64_t n_targets = count_targets(perm, lo, hi);
  out.history = at::full({b, t_len}, -1, at::kLong);
  out.target = at::empty({n_targets}, at::kLong);
  out.weight = at::empty({n_targets}, at::kFloat);
  out.example_user = at::empty({n_targets}, at::kLong);
  out.example_event = at::empty({n_targets}, at::kLong);
  if (options_.sequences) out.target_slot = at::empty({n_targets}, at::kLong);
  auto* hist = out.history.data_ptr<std::int64_t>();
  auto* target_row = out.target.data_ptr<std::int64_t>();
  auto* weight = out.weight.data_ptr<float>();
  auto* ex_user = out.example_user.data_ptr<std::int64_t>();
  auto* ex_event = out.example_event.data_ptr<std::int64_t>();
  auto* slot = options_.sequences ? out.target_slot.data_ptr<std::int64_t>() : nullptr;
  const auto n_features = static_cast<std::int64_t>(options_.context.size());
  std::int64_t* slot_context = nullptr;
  std::int64_t* query_context = nullptr;
  if (n_features > 0) {
    out.history_context = at::zeros({b, t_len, n_features}, at::kLong);
    out.query_context = at::empty({n_targets, n_features}, at::kLong);
    slot_context = out.history_context.data_ptr<std::int64_t>();
    query_context = out.query_context.data_ptr<std::int64_t>();
  }
  std::int64_t t = 0;  // next target
  auto add_target = [&](std::size_t user, std::int64_t event) {
    if (query_context != nullptr) event_features(user, event, query_context + t * n_features);
    target_row[t] = row_of(slice_.events.item[static_cast<std::size_t>(event)]);
    weight[t] = slice_.events.weight[static_cast<std::size_t>(event)];
    ex_user[t] = slice_.begin + static_cast<std::int64_t>(user);
    ex_event[t] = slice_.first_event + event;
    ++t;
  };
  for (std::int64_t k = 0; k < b; ++k) {
    const auto e = static_cast<std::size_t>(perm[static_cast<std::size_t>(lo + k)]);
    const auto user = static_cast<std::size_t>(example_user_[e]);
    const std::int64_t end = example_event_[e];
    const std::int64_t start = window_begin(e);
    // Right-aligned: the event before `end` in slot T-1.
    for (std::int64_t j = start; j < end; ++j) {
      const std::int64_t at = k * t_len + (t_len - (end - j));
      hist[at] = row_of(slice_.events.item[static_cast<std::size_t>(j)]);
      if (slot_context != nullptr) event_features(user, j, slot_context + at * n_features);
    }
    if (!options_.sequences) {
      add_target(user, end);
      continue;
    }
    // Event j is predicted by the slot of event j-1.
    for (std::int64_t j = std::max(example_covered_[e], start) + 1; j <= end; ++j) {
      slot[t] = k * t_len + (t_len - (end - (j - 1)));
      add_target(user, j);
    }
  }
  LLMREC_CHECK(t == n_targets, "batch {}:{}: {} targets written, {} counted", cursor.epoch, cursor.step, t,
               n_targets);
  if (options_.profiles) fill_profiles(perm, lo, hi, out);
  return out;
}

BatchLoader::BatchLoader(std::shared_ptr<const BatchSampler> sampler, Cursor start, int depth,
                         bool pin_memory)
    : sampler_(std::move(sampler)),
      depth_(std::max(depth, 1)),
      pin_memory_(pin_memory),
      produce_(start),
      consume_(start) {
  LLMREC_CHECK(sampler_->steps_per_epoch() > 0,
               "no training examples: the dataset has no user with 2 or more "
               "training events");
  thread_ = std::thread([this] { run(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void BatchLoader::run() {
  while (true) {
    Cursor c;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || static_cast<int>(ready_.size()) < depth_; });
      if (stop_ || error_) return;
      c = produce_;
      produce_.step += 1;
      if (produce_.step == sampler_->steps_per_epoch()) produce_ = {produce_.epoch + 1, 0};
    }
    try {
      Batch b = sampler_->batch(c);
      if (pin_memory_) {  // page-locked: the copy to the GPU is asynchronous
        for (at::Tensor* t : {&b.item_ids, &b.item_tokens, &b.item_mask, &b.item_log_q, &b.history, &b.target,
                              &b.negatives, &b.weight, &b.target_slot, &b.history_context, &b.query_context,
                              &b.profile_tokens, &b.profile_mask}) {
          if (t->defined()) *t = t->pin_memory();
        }
      }
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.push_back(std::move(b));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    cv_.notify_all();
  }
}

Batch BatchLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty() && error_) std::rethrow_exception(error_);
  Batch b = std::move(ready_.front());
  ready_.pop_front();
  consume_ = b.cursor;
  consume_.step += 1;
  if (consume_.step == sampler_->steps_per_epoch()) consume_ = {consume_.epoch + 1, 0};
  cv_.notify_all();
  return b;
}

Cursor BatchLoader::cursor() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return consume_;
}

}  // namespace llmrec
