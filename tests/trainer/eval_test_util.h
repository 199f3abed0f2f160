#pragma once
// Helpers of the evaluation tests: a one-process Communicator (the W = 1
// reference inside a multi-rank test), a synthetic shop prepared into a
// dataset on rank 0 and shared with every rank, a hand-made dataset, and
// scorers for tests.
#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/config.h"
#include "data/data_config.h"
#include "data/dataset.h"
#include "data/prepare.h"
#include "data/synth.h"
#include "distributed/broadcast_string.h"
#include "distributed/communicator.h"
#include "trainer/scorer.h"

namespace llmrec::testing {

/// World size 1, no MPI: every collective is the identity.
class LocalCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string host() const override { return "local"; }
  std::string describe() const override { return "local (one process, for tests)"; }
  void all_reduce(const at::Tensor&, const AllReduceOptions&) override {}
  std::shared_ptr<Work> all_reduce_async(const at::Tensor&, const AllReduceOptions&) override {
    struct Done : Work {
      bool completed() override { return true; }
      void wait(Seconds) override {}
    };
    return std::make_shared<Done>();
  }
  void broadcast(const at::Tensor&, const BroadcastOptions&) override {}
  at::Tensor all_gather(const at::Tensor& t, const CollectiveOptions&) override {
    return t.unsqueeze(0).clone();
  }
  std::vector<at::Tensor> all_gather_v(const at::Tensor& t, const CollectiveOptions&) override {
    return {t.clone()};
  }
  void barrier(const CollectiveOptions&) override {}
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

using ::llmrec::broadcast_string;

/// The resolved-YAML shape `prepare` stores (a `data:` section).
struct DataOnlyConfig {
  DataConfig data;
  template <class V>
  void visit(V& v) {
    v.section("data", data, "data");
  }
};

/// Rank 0 calls `write(path)` for path = <tmp>/llmrec_<tag>_<pid>/dataset.h5
/// (its directory made first); returns the path on every rank
/// (remove_dataset_dir deletes the directory).
template <class Write>
std::string make_dataset_with(Communicator& comm, const std::string& tag, Write write) {
  namespace fs = std::filesystem;
  std::string path;
  if (comm.rank() == 0) {
    fs::path dir = fs::temp_directory_path() / ("llmrec_" + tag + "_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    path = (dir / "dataset.h5").string();
    write(path);
  }
  return broadcast_string(comm, path);
}

/// A synthetic shop in <tmp>/llmrec_<tag>_<pid>/shop prepared into
/// <...>/dataset.h5 on rank 0; returns the dataset path on every rank (the
/// shop is its sibling directory "shop").
inline std::string make_synth_dataset(Communicator& comm, const std::string& tag,
                                      const SynthOptions& options) {
  return make_dataset_with(comm, tag, [&](const std::string& path) {
    const std::filesystem::path shop = std::filesystem::path(path).parent_path() / "shop";
    write_synth_shop(options, shop.string());
    DataOnlyConfig cfg;
    cfg.data.catalogue = (shop / "catalogue.csv").string();
    cfg.data.interactions = (shop / "interactions.csv").string();
    cfg.data.dataset = path;
    cfg.data.vocab_size = 400;
    cfg.data.text_len = 8;
    prepare_dataset(cfg.data, ConfigWriter::write(cfg));
  });
}

inline std::string shop_dir_of(const std::string& dataset) {
  return (std::filesystem::path(dataset).parent_path() / "shop").string();
}

inline void remove_dataset_dir(Communicator& comm, const std::string& dataset) {
  comm.barrier();
  if (comm.rank() == 0) std::filesystem::remove_all(std::filesystem::path(dataset).parent_path());
}

/// Writes a dataset from per-user event item lists (leave-last-out: the
/// last event is the test event, the one before the validation event, the
/// rest training), plus users with only training events (no held-out event).
/// Item i has category categories[i] and raw id "i<i>". Without `words`,
/// every item's tokens are [CLS] [SEP]; with them (one list of token ids
/// per item, ids into `vocab`, whose first four tokens must be [PAD] [UNK]
/// [CLS] [SEP]), item i's tokens are [CLS] words[i] [SEP].
inline void write_hand_dataset(const std::string& path, const std::vector<std::vector<std::int32_t>>& users,
                               const std::vector<std::vector<std::int32_t>>& train_only_users,
                               const std::vector<std::string>& categories,
                               const std::vector<std::string>& vocab = {},
                               const std::vector<std::vector<std::int32_t>>& words = {}) {
  DatasetArrays d;
  d.vocab = vocab.empty() ? std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "x"} : vocab;
  d.text_len = 4;
  for (const auto& w : words) d.text_len = std::max(d.text_len, static_cast<int>(w.size()) + 2);
  d.event_types = {"view"};
  const auto n_items = categories.size();
  for (std::size_t i = 0; i < n_items; ++i) {
    d.items.ids.push_back("i" + std::to_string(i));
    d.items.categories.push_back(categories[i]);
    std::vector<std::int32_t> row = {2};
    std::string text;
    if (i < words.size()) {
      for (auto w : words[i]) {
        row.push_back(w);
        text += (text.empty() ? "" : " ") + d.vocab[static_cast<std::size_t>(w)];
      }
    }
    row.push_back(3);
    d.items.texts.push_back(words.empty() ? "x" : text);
    d.items.length.push_back(static_cast<std::int32_t>(row.size()));
    row.resize(static_cast<std::size_t>(d.text_len), 0);
    d.items.tokens.insert(d.items.tokens.end(), row.begin(), row.end());
  }
  d.items.train_count.assign(n_items, 0);
  d.users.offsets.push_back(0);
  std::int64_t t = 1700000000;
  auto add = [&](const std::vector<std::int32_t>& events, bool held_out) {
    const auto base = d.users.offsets.back();
    const auto n = static_cast<std::int64_t>(events.size());
    const std::int64_t train_end = held_out ? n - 2 : n;
    d.users.ids.push_back("u" + std::to_string(d.users.ids.size()));
    d.users.train_end.push_back(train_end);
    d.users.valid.push_back(held_out ? base + n - 2 : -1);
    d.users.test.push_back(held_out ? base + n - 1 : -1);
    for (std::int64_t k = 0; k < n; ++k) {
      d.events.item.push_back(events[static_cast<std::size_t>(k)]);
      d.events.time.push_back(t++);
      d.events.type.push_back(0);
      d.events.weight.push_back(1.0f);
      d.events.rating.push_back(std::nanf(""));
      if (k < train_end) ++d.items.train_count[static_cast<std::size_t>(events[static_cast<std::size_t>(k)])];
    }
    d.users.offsets.push_back(base + n);
  };
  for (const auto& u : users) add(u, true);
  for (const auto& u : train_only_users) add(u, false);
  for (auto c : d.items.train_count) d.items.cold.push_back(c == 0 ? 1 : 0);
  write_dataset(path, d, "", "{}", "leave_last_out");
}

/// Scores given per item, the same for every user.
class FixedScorer : public Scorer {
 public:
  FixedScorer(std::string name, std::vector<float> scores)
      : name_(std::move(name)), scores_(std::move(scores)) {}
  std::string name() const override { return name_; }
  nlohmann::json params() const override { return {{"fixed", scores_}}; }
  at::Tensor score(const ScoreRequest& r) override {
    at::Tensor row = at::tensor(scores_, at::kFloat).unsqueeze(0);
    return row.expand({r.size(), static_cast<std::int64_t>(scores_.size())}).clone();
  }

 private:
  std::string name_;
  std::vector<float> scores_;
};

/// Pseudo-random scores from a hash of (user, item): a random ranking that
/// is the same for any block or world size.
class RandomScorer : public Scorer {
 public:
  explicit RandomScorer(std::int64_t num_items) : n_(num_items) {}
  std::string name() const override { return "random"; }
  nlohmann::json params() const override { return {{"hash", "splitmix64(user, item)"}}; }
  at::Tensor score(const ScoreRequest& r) override {
    at::Tensor out = at::empty({r.size(), n_}, at::kFloat);
    for (std::int64_t b = 0; b < r.size(); ++b) {
      for (std::int64_t i = 0; i < n_; ++i) {
        std::uint64_t x =
            static_cast<std::uint64_t>(r.users[static_cast<std::size_t>(b)]) * 0x9E3779B97F4A7C15ULL +
            static_cast<std::uint64_t>(i) + 1;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
        x ^= x >> 31;
        out[b][i] = static_cast<float>(x >> 40) / static_cast<float>(1 << 24);
      }
    }
    return out;
  }

 private:
  std::int64_t n_;
};

}  // namespace llmrec::testing
