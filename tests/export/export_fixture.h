#pragma once
// Small export files for the serving tests, written with common/hdf5.h
// exactly as docs/export-format.md specifies (the exporter is written
// independently; these files are the contract as the spec states it).
//
//   ExportFixture fx = make_export_fixture({});   // random, deterministic contents
//   fx.neighbours[7] = 99999;                     // tamper with a field if needed
//   write_export_fixture(path, fx);                        // optional: skip / tamper hooks
//
// Contents: items in clusters (vectors = centre + noise, keys = A vectors
// with A near the identity, category = the cluster, some items without a
// category), users with 3..30 events of random types, users/vectors = the
// tower on their last T events, CF neighbours random (most similar first),
// the last ~5% items cold with no neighbours (a "catalogue update").
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/hdf5.h"
#include "common/sha256.h"
#include "models/ranker.h"

namespace llmrec::testing {

struct ExportSpec {
  std::int64_t items = 3000;
  std::int64_t users = 40;
  std::int64_t dim = 16;
  std::int64_t history = 8;
  std::int64_t heads = 2;
  std::int64_t layers = 0;
  std::string pooling = "attention";
  std::int64_t cf_k = 12;
  std::int64_t clusters = 12;
  std::uint64_t seed = 1;
  std::vector<std::string> event_types = {"view", "click", "cart", "purchase"};
  std::string fusion = R"({"model": 1, "itemknn": 0.5})";
  std::string ranking;  ///< the `ranking` attribute; "" = absent (an older export)
};

struct ExportFixture {
  ExportSpec spec;
  std::vector<std::string> item_ids, item_text, item_category, user_ids;
  std::vector<std::uint8_t> cold;
  std::vector<std::int64_t> popularity;
  std::vector<float> vectors, keys, user_vectors;  // row-major
  std::vector<std::int32_t> hour_counts;           // [I, 24]
  std::vector<std::int64_t> offsets;               // U + 1
  std::vector<std::int32_t> events;
  std::vector<std::uint8_t> types;
  std::vector<std::int32_t> neighbours;  // [I, K]
  std::vector<float> similarity;
  UserTower tower{nullptr};

  /// The tower's output for one history (its last T items), [d].
  std::vector<float> tower_vector(const std::vector<std::int32_t>& items) const {
    torch::NoGradGuard no_grad;
    const std::size_t T = static_cast<std::size_t>(spec.history);
    const std::size_t n = std::min(T, items.size());
    const auto d = spec.dim;
    if (n == 0) {
      at::Tensor u = tower.ptr()->forward(torch::zeros({1, 1, d}), torch::zeros({1, 1}, torch::kBool));
      return {u.data_ptr<float>(), u.data_ptr<float>() + d};
    }
    at::Tensor x = torch::empty({1, static_cast<std::int64_t>(n), d});
    for (std::size_t s = 0; s < n; ++s) {
      const std::int32_t i = items[items.size() - n + s];
      std::copy_n(vectors.data() + i * d, d, x.data_ptr<float>() + static_cast<std::int64_t>(s) * d);
    }
    at::Tensor u =
        tower.ptr()->forward(x, torch::ones({1, static_cast<std::int64_t>(n)}, torch::kBool)).contiguous();
    return {u.data_ptr<float>(), u.data_ptr<float>() + d};
  }
};

/// make_export_fixture's steps, in the order they draw from one stream.
namespace fixture_steps {

struct Rng {
  std::mt19937_64 engine;
  std::normal_distribution<float> normal{0.0f, 1.0f};
  std::uniform_real_distribution<double> uniform{0.0, 1.0};
  std::uint64_t operator()() { return engine(); }
  float gauss() { return normal(engine); }
  double unit() { return uniform(engine); }
};

/// Items in clusters around random centres; the last ~5% cold. Returns each
/// item's cluster.
inline std::vector<std::int64_t> add_items(ExportFixture& f, Rng& rng, std::int64_t warm) {
  const ExportSpec& spec = f.spec;
  const std::int64_t I = spec.items, d = spec.dim;
  std::vector<float> centres(static_cast<std::size_t>(spec.clusters * d));
  for (auto& c : centres) c = rng.gauss();
  std::vector<std::int64_t> cluster(static_cast<std::size_t>(I));
  for (std::int64_t i = 0; i < I; ++i) {
    const std::int64_t c = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(spec.clusters));
    cluster[static_cast<std::size_t>(i)] = c;
    f.item_ids.push_back("i" + std::to_string(i));
    f.item_text.push_back("item " + std::to_string(i) + " of cluster " + std::to_string(c) + " — crème");
    f.item_category.push_back(i % 17 == 0 ? std::string() : "cat" + std::to_string(c));
    for (std::int64_t k = 0; k < d; ++k)
      f.vectors.push_back(centres[static_cast<std::size_t>(c * d + k)] + 0.4f * rng.gauss());
    const bool is_cold = i >= warm;
    f.cold.push_back(is_cold ? 1 : 0);
    std::int64_t pop = 0;
    for (int h = 0; h < 24; ++h) {
      const std::int32_t n =
          is_cold ? 0 : static_cast<std::int32_t>(rng() % (h >= 18 && c % 2 == 0 ? 20 : 6));
      f.hour_counts.push_back(n);
      pop += n;
    }
    f.popularity.push_back(pop);
  }
  return cluster;
}

/// keys = vectors A^T, A = identity + noise.
inline void add_keys(ExportFixture& f, Rng& rng) {
  const std::int64_t I = f.spec.items, d = f.spec.dim;
  std::vector<float> A(static_cast<std::size_t>(d * d));
  for (std::int64_t r = 0; r < d; ++r) {
    for (std::int64_t c = 0; c < d; ++c)
      A[static_cast<std::size_t>(r * d + c)] = (r == c ? 1.0f : 0.0f) + 0.1f * rng.gauss();
  }
  f.keys.resize(f.vectors.size());
  for (std::int64_t i = 0; i < I; ++i) {
    for (std::int64_t r = 0; r < d; ++r) {
      double s = 0;
      for (std::int64_t c = 0; c < d; ++c)
        s += static_cast<double>(A[static_cast<std::size_t>(r * d + c)]) *
             f.vectors[static_cast<std::size_t>(i * d + c)];
      f.keys[static_cast<std::size_t>(i * d + r)] = static_cast<float>(s);
    }
  }
}

/// Users: events on warm items from one or two clusters, mostly.
inline void add_users(ExportFixture& f, Rng& rng, const std::vector<std::int64_t>& cluster,
                      std::int64_t warm) {
  const ExportSpec& spec = f.spec;
  f.offsets.push_back(0);
  for (std::int64_t u = 0; u < spec.users; ++u) {
    f.user_ids.push_back("u" + std::to_string(u));
    const std::int64_t n = 3 + static_cast<std::int64_t>(rng() % 28);
    const std::int64_t like = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(spec.clusters));
    for (std::int64_t j = 0; j < n; ++j) {
      std::int32_t item;
      do {
        item = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(warm));
      } while (rng.unit() < 0.7 && cluster[static_cast<std::size_t>(item)] != like);
      f.events.push_back(item);
      f.types.push_back(static_cast<std::uint8_t>(rng() % spec.event_types.size()));
    }
    f.offsets.push_back(static_cast<std::int64_t>(f.events.size()));
  }
}

/// CF neighbours: random distinct warm items, decreasing similarity; cold
/// items none, and some rows end early.
inline void add_neighbours(ExportFixture& f, Rng& rng, std::int64_t warm) {
  const std::int64_t I = f.spec.items, K = f.spec.cf_k;
  for (std::int64_t i = 0; i < I; ++i) {
    std::set<std::int32_t> chosen;
    std::vector<float> sims;
    const bool none = i >= warm;
    for (std::int64_t k = 0; k < K; ++k) sims.push_back(static_cast<float>(rng.unit()));
    std::sort(sims.rbegin(), sims.rend());
    for (std::int64_t k = 0; k < K; ++k) {
      if (none || k >= K - static_cast<std::int64_t>(i % 3)) {
        f.neighbours.push_back(-1);
        f.similarity.push_back(0.0f);
        continue;
      }
      std::int32_t j;
      do {
        j = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(warm));
      } while (j == i || chosen.count(j));
      chosen.insert(j);
      f.neighbours.push_back(j);
      f.similarity.push_back(sims[static_cast<std::size_t>(k)]);
    }
  }
}

/// The tower (fresh weights, perturbed so that every tensor matters) and
/// every user's vector from it.
inline void add_tower(ExportFixture& f) {
  const ExportSpec& spec = f.spec;
  torch::manual_seed(static_cast<std::uint64_t>(spec.seed));
  f.tower = UserTower(
      UserTowerOptions(spec.dim, spec.history).heads(spec.heads).layers(spec.layers).pooling(spec.pooling));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : f.tower->parameters()) p.add_(torch::randn_like(p) * 0.2);
  }
  f.tower->eval();
  for (std::int64_t u = 0; u < spec.users; ++u) {
    std::vector<std::int32_t> h(f.events.begin() + f.offsets[static_cast<std::size_t>(u)],
                                f.events.begin() + f.offsets[static_cast<std::size_t>(u) + 1]);
    auto v = f.tower_vector(h);
    f.user_vectors.insert(f.user_vectors.end(), v.begin(), v.end());
  }
}

}  // namespace fixture_steps

inline ExportFixture make_export_fixture(const ExportSpec& spec) {
  ExportFixture f;
  f.spec = spec;
  fixture_steps::Rng rng{std::mt19937_64(spec.seed)};
  const std::int64_t warm = spec.items - std::max<std::int64_t>(1, spec.items / 20);
  const std::vector<std::int64_t> cluster = fixture_steps::add_items(f, rng, warm);
  fixture_steps::add_keys(f, rng);
  fixture_steps::add_users(f, rng, cluster, warm);
  fixture_steps::add_neighbours(f, rng, warm);
  fixture_steps::add_tower(f);
  return f;
}

struct WriteHooks {
  std::set<std::string> skip;                       ///< datasets / attributes not to write
  std::function<void(h5::File&)> tamper = nullptr;  ///< writes replacements before commit
};

inline void write_export_fixture(const std::string& path, const ExportFixture& f,
                                 const WriteHooks& hooks = {}) {
  const ExportSpec& s = f.spec;
  auto g = h5::File::create(path);
  auto attr_s = [&](const char* k, const std::string& v) {
    if (!hooks.skip.count(k)) g.set_attr("/", k, v);
  };
  auto attr_i = [&](const char* k, std::int64_t v) {
    if (!hooks.skip.count(k)) g.set_attr("/", k, v);
  };
  auto rows = [](std::size_t n, std::int64_t width) {
    return static_cast<std::uint64_t>(n / static_cast<std::size_t>(width));
  };
  std::string types = "[";
  for (std::size_t t = 0; t < s.event_types.size(); ++t)
    types += (t ? ",\"" : "\"") + s.event_types[t] + "\"";
  types += "]";
  const std::string config = "model:\n  dim: " + std::to_string(s.dim) + "\n";
  Sha256 h;
  h.update(config);
  attr_s("format", "llmrec-export");
  attr_i("version", 1);
  attr_i("dim", s.dim);
  attr_i("history", s.history);
  attr_s("score", "dot");
  attr_i("num_items", static_cast<std::int64_t>(f.item_ids.size()));
  attr_i("num_users", static_cast<std::int64_t>(f.user_ids.size()));
  attr_i("id_items", static_cast<std::int64_t>(f.item_ids.size()) * 19 / 20);
  attr_s("model_config", "dim: " + std::to_string(s.dim) + "\n");
  attr_s("config", config);
  attr_s("config_sha256", h.hex_digest());
  attr_s("model_sha256", std::string(64, 'a'));
  attr_s("checkpoint", "runs/test/model.h5");
  attr_s("dataset", "runs/test/dataset.h5");
  attr_s("dataset_sha256", std::string(64, 'b'));
  attr_s("event_types", types);
  attr_s("fusion", s.fusion);
  if (!s.ranking.empty()) attr_s("ranking", s.ranking);
  attr_s("created", "2024-01-01T00:00:00Z");
  attr_i("catalogue_updates", 1);
  attr_i("ranker_heads", s.heads);
  attr_i("ranker_layers", s.layers);
  attr_s("ranker_pooling", s.pooling);
  attr_i("text_len", 32);
  auto strings = [&](const char* name, const std::vector<std::string>& v) {
    if (!hooks.skip.count(name)) g.write_strings(name, v);
  };
  auto write = [&](const char* name, const auto& v, std::vector<std::uint64_t> dims) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    if (!hooks.skip.count(name)) g.write<T>(name, v.data(), dims);
  };
  const auto d = s.dim;
  strings("items/ids", f.item_ids);
  strings("items/text", f.item_text);
  strings("items/category", f.item_category);
  write("items/cold", f.cold, {f.cold.size()});
  write("items/popularity", f.popularity, {f.popularity.size()});
  write("items/vectors", f.vectors, {rows(f.vectors.size(), d), static_cast<std::uint64_t>(d)});
  write("items/keys", f.keys, {rows(f.keys.size(), d), static_cast<std::uint64_t>(d)});
  write("items/hour_counts", f.hour_counts, {rows(f.hour_counts.size(), 24), 24});
  strings("users/ids", f.user_ids);
  write("users/vectors", f.user_vectors, {rows(f.user_vectors.size(), d), static_cast<std::uint64_t>(d)});
  write("users/history_offsets", f.offsets, {f.offsets.size()});
  write("users/history_items", f.events, {f.events.size()});
  write("users/history_types", f.types, {f.types.size()});
  const std::int64_t K = std::max<std::int64_t>(s.cf_k, 1);
  write("cf/neighbours", f.neighbours, {rows(f.neighbours.size(), K), static_cast<std::uint64_t>(s.cf_k)});
  write("cf/similarity", f.similarity, {rows(f.similarity.size(), K), static_cast<std::uint64_t>(s.cf_k)});
  strings("tokenizer/vocab", {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "item"});
  auto tensors = f.tower->named_parameters();
  for (const auto& p : tensors) {
    const std::string name = "ranker/" + p.key();
    if (hooks.skip.count(name)) continue;
    at::Tensor t = p.value().detach().contiguous();
    std::vector<std::uint64_t> dims(t.sizes().begin(), t.sizes().end());
    g.write<float>(name, t.data_ptr<float>(), dims);
  }
  if (hooks.tamper) hooks.tamper(g);
  g.commit();
}

/// A fresh temporary directory for one test binary.
inline std::string temp_dir(const std::string& tag) {
  auto dir = std::filesystem::temp_directory_path() / ("llmrec_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace llmrec::testing
