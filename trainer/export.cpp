#include "trainer/export.h"

#include "distributed/rank0.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <unordered_map>

#include "common/config.h"
#include "common/error.h"
#include "common/hdf5.h"
#include "common/pseudonym.h"
#include "common/sha256.h"
#include "data/data_config.h"
#include "data/prepare.h"
#include "data/wordpiece.h"
#include "trainer/baselines.h"
#include "trainer/model_scorer.h"

namespace llmrec {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// Hours of the day in items/hour_counts.
constexpr std::int64_t kHours = kExportHours;

/// Users read per hyperslab when rank 0 collects every history.
constexpr std::int64_t kHistoryReadUsers = 16 * kExportUserBlock;

/// Everything an export file holds (docs/export-format.md).
struct ExportContent {
  // root attributes
  std::int64_t dim = 0;
  std::int64_t history = 0;
  std::int64_t id_items = 0;
  std::int64_t text_len = 0;
  std::int64_t ranker_heads = 0;
  std::int64_t ranker_layers = 0;
  std::int64_t ranker_ff_dim = 0;  ///< 0 = 4 x dim
  std::string ranker_pooling = "attention";
  std::string ranker_activation = "gelu";
  std::int64_t catalogue_updates = 0;
  std::string model_config, config, config_sha256, model_sha256, checkpoint, dataset, dataset_sha256;
  std::string event_types, fusion, ranking, created;
  // items
  std::vector<std::string> item_ids, item_text, item_category;
  std::vector<std::uint8_t> cold;
  std::vector<std::int64_t> popularity;
  torch::Tensor item_vectors;  ///< float [I, d]
  torch::Tensor item_keys;     ///< float [I, d]
  std::vector<std::int32_t> hour_counts;  ///< [I * 24]
  // users
  std::vector<std::string> user_ids;
  std::string user_ids_scheme = "raw";  ///< or kPseudonymScheme: users/ids hold pseudonyms
  std::string pseudonym_check;          ///< pseudonym_key_check of the key (pseudonymised exports)
  torch::Tensor user_vectors;  ///< float [U, d]
  std::vector<std::int64_t> history_offsets;
  std::vector<std::int32_t> history_items;
  std::vector<std::uint8_t> history_types;
  // user tower, by module path
  std::vector<std::pair<std::string, torch::Tensor>> ranker;
  // CF
  std::int64_t neighbours = 0;  ///< K
  std::vector<std::int32_t> cf_items;    ///< [I * K]
  std::vector<float> cf_similarity;      ///< [I * K]
  // tokenizer
  std::vector<std::string> vocab;
  // TF-IDF rows (CSR over the vocabulary's term ids); empty = none (older exports)
  std::vector<std::int64_t> tfidf_offsets;
  std::vector<std::int32_t> tfidf_terms;
  std::vector<float> tfidf_weights;
};

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// Hour of the day (UTC) of a unix time.
std::int64_t utc_hour(std::int64_t t) {
  std::int64_t s = t % 86400;
  if (s < 0) s += 86400;
  return s / 3600;
}

/// Users [begin, end) of this rank: an even, contiguous share of the blocks
/// of kExportUserBlock users (block boundaries do not depend on W).
std::pair<std::int64_t, std::int64_t> user_share(std::int64_t users, const Communicator& comm) {
  const std::int64_t blocks = (users + kExportUserBlock - 1) / kExportUserBlock;
  const std::int64_t b0 = blocks * comm.rank() / comm.size(), b1 = blocks * (comm.rank() + 1) / comm.size();
  return {std::min(users, b0 * kExportUserBlock), std::min(users, b1 * kExportUserBlock)};
}

/// The user tower over the last T events of `n` users (CSR: events of user
/// u are items[offsets[u] .. offsets[u+1])), in blocks of kExportUserBlock
/// users; `item_vecs` [I, d] in the model's dtype. float [n, d].
torch::Tensor user_vectors_of(Recommender& model, const torch::Tensor& item_vecs, const std::int64_t* offsets,
                              std::int64_t n, const std::int32_t* items) {
  torch::NoGradGuard no_grad;
  const std::int64_t T = model->options().config().user.history;
  const std::int64_t d = model->options().config().dim;
  std::vector<torch::Tensor> out;
  for (std::int64_t lo = 0; lo < n; lo += kExportUserBlock) {
    const std::int64_t b = std::min(kExportUserBlock, n - lo);
    torch::Tensor history = torch::full({b, T}, -1, torch::kLong);
    auto* h = history.data_ptr<std::int64_t>();
    for (std::int64_t r = 0; r < b; ++r) {
      const std::int64_t end = offsets[lo + r + 1];
      const std::int64_t begin = std::max(offsets[lo + r], end - T);
      for (std::int64_t j = begin; j < end; ++j) h[r * T + (T - (end - j))] = items[j];  // most recent last
    }
    out.push_back(model->user_vectors(history, item_vecs).to(torch::kFloat));
  }
  return out.empty() ? torch::zeros({0, d}) : torch::cat(out);
}

/// Collective: the ranks' row blocks, concatenated in rank order.
torch::Tensor gather_rows(const torch::Tensor& mine, Communicator& comm) {
  return torch::cat(comm.all_gather_v(mine.contiguous())).contiguous();
}

std::vector<std::uint64_t> dims_of(const torch::Tensor& t) { return {t.sizes().begin(), t.sizes().end()}; }

void write_floats(h5::File& f, const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().cpu().to(torch::kFloat).contiguous();
  f.write<float>(name, c.data_ptr<float>(), dims_of(c));
}

void export_file_write(const std::string& path, const ExportContent& c) {
  const auto I = static_cast<std::uint64_t>(c.item_ids.size());
  const auto K = static_cast<std::uint64_t>(c.neighbours);
  auto f = h5::File::create(path);
  f.set_attr("/", "format", kExportFormat);
  f.set_attr("/", "version", kExportVersion);
  f.set_attr("/", "dim", c.dim);
  f.set_attr("/", "history", c.history);
  f.set_attr("/", "score", "dot");
  f.set_attr("/", "num_items", static_cast<std::int64_t>(c.item_ids.size()));
  f.set_attr("/", "num_users", static_cast<std::int64_t>(c.user_ids.size()));
  f.set_attr("/", "id_items", c.id_items);
  f.set_attr("/", "model_config", c.model_config);
  f.set_attr("/", "config", c.config);
  f.set_attr("/", "config_sha256", c.config_sha256);
  f.set_attr("/", "model_sha256", c.model_sha256);
  f.set_attr("/", "checkpoint", c.checkpoint);
  f.set_attr("/", "dataset", c.dataset);
  f.set_attr("/", "dataset_sha256", c.dataset_sha256);
  f.set_attr("/", "event_types", c.event_types);
  f.set_attr("/", "fusion", c.fusion);
  f.set_attr("/", "ranking", c.ranking);
  f.set_attr("/", "created", c.created);
  f.set_attr("/", "catalogue_updates", c.catalogue_updates);
  f.set_attr("/", "text_len", c.text_len);
  f.set_attr("/", "ranker_heads", c.ranker_heads);
  f.set_attr("/", "ranker_layers", c.ranker_layers);
  f.set_attr("/", "ranker_ff_dim", c.ranker_ff_dim);
  f.set_attr("/", "ranker_pooling", c.ranker_pooling);
  f.set_attr("/", "ranker_activation", c.ranker_activation);
  f.set_attr("/", "user_ids", c.user_ids_scheme);
  if (c.user_ids_scheme == kPseudonymScheme) f.set_attr("/", "pseudonym_check", c.pseudonym_check);

  f.write_strings("items/ids", c.item_ids);
  f.write_strings("items/text", c.item_text);
  f.write_strings("items/category", c.item_category);
  f.write("items/cold", c.cold);
  f.write("items/popularity", c.popularity);
  write_floats(f, "items/vectors", c.item_vectors);
  write_floats(f, "items/keys", c.item_keys);
  f.write<std::int32_t>("items/hour_counts", c.hour_counts.data(), {I, static_cast<std::uint64_t>(kHours)});

  f.write_strings("users/ids", c.user_ids);
  write_floats(f, "users/vectors", c.user_vectors);
  f.write("users/history_offsets", c.history_offsets);
  f.write("users/history_items", c.history_items);
  f.write("users/history_types", c.history_types);

  for (const auto& [name, t] : c.ranker) write_floats(f, "ranker/" + name, t);

  f.write<std::int32_t>("cf/neighbours", c.cf_items.data(), {I, K});
  f.write<float>("cf/similarity", c.cf_similarity.data(), {I, K});

  f.write_strings("tokenizer/vocab", c.vocab);
  if (!c.tfidf_offsets.empty()) {
    f.write("tfidf/offsets", c.tfidf_offsets);
    f.write("tfidf/terms", c.tfidf_terms);
    f.write<float>("tfidf/weights", c.tfidf_weights.data(), {static_cast<std::uint64_t>(c.tfidf_weights.size())});
  }
  f.commit();
}

/// The user tower's parameters and buffers by module path.
std::vector<std::pair<std::string, torch::Tensor>> ranker_tensors(Recommender& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model->user->named_parameters()) out.emplace_back(p.key(), p.value().detach());
  for (const auto& b : model->user->named_buffers()) out.emplace_back(b.key(), b.value().detach());
  return out;
}

// ------------------------------------------------------------- reading

void expect_shape(const h5::File& f, const std::string& name, const std::vector<std::uint64_t>& want) {
  if (!f.exists(name)) throw IoError(fmt::format("{}: dataset '{}' is missing", f.path(), name));
  const auto got = f.shape(name);
  if (got != want) {
    throw IoError(fmt::format("{}: dataset '{}' has shape [{}], expected [{}]", f.path(), name, fmt::join(got, ", "),
                              fmt::join(want, ", ")));
  }
}

std::vector<std::string> read_strings_n(const h5::File& f, const std::string& name, std::uint64_t n) {
  std::vector<std::string> s = f.read_strings(name);
  if (s.size() != n) {
    throw IoError(fmt::format("{}: '{}' holds {} strings, expected {}", f.path(), name, s.size(), n));
  }
  return s;
}

torch::Tensor read_matrix(const h5::File& f, const std::string& name, std::uint64_t rows, std::uint64_t cols) {
  expect_shape(f, name, {rows, cols});
  std::vector<float> v = f.read<float>(name);
  return torch::from_blob(v.data(), {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)}, torch::kFloat)
      .clone();
}

/// Reads an export. Every rank needs the attributes, the item table, the
/// item vectors, the history offsets and the vocabulary; `everything` adds
/// what only the writer needs (keys, user rows, histories, tower, CF).
ExportContent export_file_read(const std::string& path, Recommender& model, bool everything) {
  auto f = h5::File::open(path);
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != kExportFormat) {
    throw IoError(fmt::format("{}: not an llmrec export (attribute 'format' is not '{}')", path, kExportFormat));
  }
  const std::int64_t version = f.attr_int("/", "version");
  if (version != kExportVersion) {
    throw IoError(fmt::format("{}: export version {} is not supported (this llmrec reads {})", path, version,
                              kExportVersion));
  }
  ExportContent c;
  c.dim = f.attr_int("/", "dim");
  c.history = f.attr_int("/", "history");
  c.id_items = f.attr_int("/", "id_items");
  c.text_len = f.attr_int("/", "text_len");
  c.ranker_heads = f.attr_int("/", "ranker_heads");
  c.ranker_layers = f.attr_int("/", "ranker_layers");
  c.ranker_ff_dim = f.has_attr("/", "ranker_ff_dim") ? f.attr_int("/", "ranker_ff_dim") : 0;  // older exports: 4 x dim
  // Exports written before mean pooling existed have no such attribute.
  if (f.has_attr("/", "ranker_pooling")) c.ranker_pooling = f.attr_string("/", "ranker_pooling");
  if (f.has_attr("/", "ranker_activation")) c.ranker_activation = f.attr_string("/", "ranker_activation");
  c.catalogue_updates = f.attr_int("/", "catalogue_updates");
  // Exports written before pseudonyms hold raw ids.
  if (f.has_attr("/", "user_ids")) c.user_ids_scheme = f.attr_string("/", "user_ids");
  if (c.user_ids_scheme == kPseudonymScheme) c.pseudonym_check = f.attr_string("/", "pseudonym_check");
  const std::pair<const char*, std::string*> strings[] = {
      {"model_config", &c.model_config}, {"config", &c.config},   {"config_sha256", &c.config_sha256},
      {"model_sha256", &c.model_sha256}, {"checkpoint", &c.checkpoint}, {"dataset", &c.dataset},
      {"dataset_sha256", &c.dataset_sha256}, {"event_types", &c.event_types}, {"fusion", &c.fusion},
      {"created", &c.created}};
  for (const auto& [key, value] : strings) *value = f.attr_string("/", key);
  // Exports written before the ranking attribute: the plain fusion.
  c.ranking = f.has_attr("/", "ranking") ? f.attr_string("/", "ranking") : std::string("{}");
  const std::int64_t num_items = f.attr_int("/", "num_items"), num_users = f.attr_int("/", "num_users");
  if (num_items < 0 || num_users < 0 || c.dim <= 0) {
    throw IoError(fmt::format("{}: bad sizes (num_items {}, num_users {}, dim {})", path, num_items, num_users, c.dim));
  }
  const auto I = static_cast<std::uint64_t>(num_items), U = static_cast<std::uint64_t>(num_users);
  const auto d = static_cast<std::uint64_t>(c.dim);
  c.item_ids = read_strings_n(f, "items/ids", I);
  c.item_text = read_strings_n(f, "items/text", I);
  c.item_category = read_strings_n(f, "items/category", I);
  expect_shape(f, "items/cold", {I});
  c.cold = f.read<std::uint8_t>("items/cold");
  c.item_vectors = read_matrix(f, "items/vectors", I, d);
  expect_shape(f, "users/history_offsets", {U + 1});
  c.history_offsets = f.read<std::int64_t>("users/history_offsets");
  if (c.history_offsets.front() != 0 || !std::is_sorted(c.history_offsets.begin(), c.history_offsets.end())) {
    throw IoError(fmt::format("{}: users/history_offsets is not a sorted CSR from 0", path));
  }
  const auto E = static_cast<std::uint64_t>(c.history_offsets.back());
  expect_shape(f, "users/history_items", {E});
  c.vocab = f.read_strings("tokenizer/vocab");
  if (f.exists("tfidf/offsets")) {
    c.tfidf_offsets = f.read<std::int64_t>("tfidf/offsets");
    c.tfidf_terms = f.read<std::int32_t>("tfidf/terms");
    c.tfidf_weights = f.read<float>("tfidf/weights");
    if (c.tfidf_offsets.size() != I + 1 || c.tfidf_terms.size() != c.tfidf_weights.size() ||
        c.tfidf_offsets.back() != static_cast<std::int64_t>(c.tfidf_terms.size())) {
      throw IoError(fmt::format("{}: tfidf/ is not a CSR matrix of {} items", path, I));
    }
  }
  if (!everything) return c;

  expect_shape(f, "items/popularity", {I});
  c.popularity = f.read<std::int64_t>("items/popularity");
  c.item_keys = read_matrix(f, "items/keys", I, d);
  expect_shape(f, "items/hour_counts", {I, static_cast<std::uint64_t>(kHours)});
  c.hour_counts = f.read<std::int32_t>("items/hour_counts");
  c.user_ids = read_strings_n(f, "users/ids", U);
  c.user_vectors = read_matrix(f, "users/vectors", U, d);
  c.history_items = f.read<std::int32_t>("users/history_items");
  expect_shape(f, "users/history_types", {E});
  c.history_types = f.read<std::uint8_t>("users/history_types");
  for (const auto& [name, t] : ranker_tensors(model)) {
    const std::string key = "ranker/" + name;
    const std::vector<std::uint64_t> want = dims_of(t);
    expect_shape(f, key, want);
    std::vector<float> v = f.read<float>(key);
    c.ranker.emplace_back(name, torch::from_blob(v.data(), t.sizes(), torch::kFloat).clone());
  }
  const auto cf_shape = f.exists("cf/neighbours") ? f.shape("cf/neighbours") : std::vector<std::uint64_t>{};
  if (cf_shape.size() != 2) throw IoError(fmt::format("{}: dataset 'cf/neighbours' is missing or not [I, K]", path));
  c.neighbours = static_cast<std::int64_t>(cf_shape[1]);
  expect_shape(f, "cf/neighbours", {I, cf_shape[1]});
  expect_shape(f, "cf/similarity", {I, cf_shape[1]});
  c.cf_items = f.read<std::int32_t>("cf/neighbours");
  c.cf_similarity = f.read<float>("cf/similarity");
  return c;
}

std::int64_t count_cold(const std::vector<std::uint8_t>& cold) {
  return static_cast<std::int64_t>(std::count(cold.begin(), cold.end(), std::uint8_t{1}));
}

}  // namespace

const std::vector<std::string>& export_fusion_components() {
  static const std::vector<std::string> names = {"model", "itemknn", "popularity", "tfidf"};
  return names;
}

ExportRanking export_ranking_of(const EvalConfig& eval) {
  ExportRanking r;
  r.fusion.clear();
  bool positive = false;
  for (const std::string& name : export_fusion_components()) {
    auto it = eval.fusion.weights.find(name);
    if (it == eval.fusion.weights.end()) continue;
    r.fusion[name] = it->second;
    positive = positive || it->second > 0;
  }
  if (!positive) r.fusion = {{"model", 1.0}};
  r.itemknn = {eval.itemknn.neighbours, eval.itemknn.shrink};
  r.tfidf = {eval.tfidf.profile_items, eval.tfidf.max_df};
  r.chosen = {{"by", "configuration (eval.fusion.weights, eval.itemknn), not tuned"}};
  return r;
}

ExportSummary export_write(const std::string& output, Recommender& model, const std::string& checkpoint_path,
                           const DatasetFile& file, const std::string& config_yaml, const ExportRanking& ranking,
                           Communicator& comm, const std::string& pseudonym_key) {
  const auto t0 = Clock::now();
  const ModelConfig& mc = model->options().config();
  // Checks first, the same on every rank (before any collective).
  if (mc.text_len > file.text_len()) {
    throw ConfigError(fmt::format("{}: the model reads {} tokens per item, the dataset {} has {} (data.text_len)",
                                  checkpoint_path, mc.text_len, file.path(), file.text_len()));
  }
  if (model->options().id_items() > file.num_items()) {
    throw ConfigError(fmt::format("{}: the model has ID vectors for {} items, the dataset {} has {} items: it was "
                                  "trained on another dataset", checkpoint_path, model->options().id_items(),
                                  file.path(), file.num_items()));
  }
  std::vector<std::string> vocab = file.vocab();
  if (mc.item_text && static_cast<std::int64_t>(vocab.size()) > model->bert_config().vocab_size) {
    throw ConfigError(fmt::format("{}: the model's BERT has {} token embeddings, the vocabulary of the dataset {} has "
                                  "{} tokens", checkpoint_path, model->bert_config().vocab_size, file.path(),
                                  vocab.size()));
  }
  model->eval();
  torch::NoGradGuard no_grad;
  const auto dtype = model->parameters().front().scalar_type();
  const std::int64_t I = file.num_items(), U = file.num_users(), d = mc.dim;

  ExportSummary s;
  s.path = output;
  s.items = I;
  s.users = U;

  // Items: l and A l of every catalogue item, cold items scored as
  // evaluation scores them (ModelScorer with ranking.cold).
  ItemTable items = file.read_items();
  const auto te = Clock::now();
  ModelScorer scorer(model, items, mc.text_len, comm, "model", ranking.cold);
  torch::Tensor vecs = scorer.item_vectors();
  s.encode_seconds = seconds_since(te);
  s.items_encoded = I;
  const torch::Tensor vecs_m = vecs.to(dtype);
  torch::Tensor keys = scorer.item_keys().contiguous();

  // Users: u from the last T events (all splits); hours of training events.
  const auto [ub, ue] = user_share(U, comm);
  std::vector<std::int64_t> hours(static_cast<std::size_t>(I * kHours), 0);
  torch::Tensor mine = torch::zeros({0, d});
  if (ue > ub) {
    UserSlice slice = file.read_users(ub, ue);
    mine = user_vectors_of(model, vecs_m, slice.users.offsets.data(), ue - ub, slice.events.item.data());
    for (std::int64_t u = 0; u < ue - ub; ++u) {
      const std::int64_t lo = slice.users.offsets[static_cast<std::size_t>(u)];
      const std::int64_t hi = lo + slice.users.train_end[static_cast<std::size_t>(u)];
      for (std::int64_t k = lo; k < hi; ++k) {
        const auto e = static_cast<std::size_t>(k);
        ++hours[static_cast<std::size_t>(slice.events.item[e] * kHours + utc_hour(slice.events.time[e]))];
      }
    }
  }
  torch::Tensor user_vecs = gather_rows(mine, comm);
  LLMREC_CHECK(user_vecs.size(0) == U, "export: gathered {} user vectors, expected {}", user_vecs.size(0), U);
  s.users_encoded = U;
  torch::Tensor hours_t = torch::from_blob(hours.data(), {I * kHours}, torch::kLong);
  comm.all_reduce(hours_t, {ReduceOp::Sum});

  // CF neighbours: ItemKNN over the training histories, as in evaluation.
  TrainingHistories histories = training_histories_gather(file, comm);
  ItemKnnScorer knn(histories, ranking.itemknn, comm);
  // K: the longest row kept (rows hold only items with a common user), so
  // the table is exact whatever the neighbour option ("all" included).
  std::int64_t K = 1;
  for (const ItemNeighbours& row : knn.rows()) K = std::max<std::int64_t>(K, static_cast<std::int64_t>(row.items.size()));
  s.neighbours = K;
  s.cold_items = count_cold(items.cold);

  ExportContent c;
  std::int64_t events = 0;
  if (comm.rank() == 0) {
    c.dim = d;
    c.history = mc.user.history;
    c.id_items = model->options().id_items();
    c.text_len = file.text_len();
    c.ranker_heads = model->user->options.heads();
    c.ranker_layers = model->user->options.layers();
    c.ranker_ff_dim = model->user->options.ff_dim();
    c.ranker_pooling = model->user->options.pooling();
    c.ranker_activation = model->user->options.activation();
    c.catalogue_updates = 0;
    ModelConfig m = mc;
    c.model_config = ConfigWriter::write(m);
    c.config = config_yaml;
    c.config_sha256 = sha256_hex(config_yaml);
    c.model_sha256 = sha256_file(checkpoint_path);
    c.checkpoint = checkpoint_path;
    c.dataset = file.path();
    c.dataset_sha256 = sha256_file(file.path());
    c.event_types = nlohmann::json(file.event_types()).dump();
    c.fusion = nlohmann::json(ranking.fusion).dump();
    nlohmann::json rank = {{"missing", fusion_missing_name(ranking.missing)},
                           {"cold_shift", ranking.cold.shift},
                           {"cold_neighbour_weight", ranking.cold.neighbour_weight},
                           {"itemknn", {{"neighbours", ranking.itemknn.neighbours}, {"shrink", ranking.itemknn.shrink}}},
                           {"tfidf", {{"profile_items", ranking.tfidf.profile_items}, {"max_df", ranking.tfidf.max_df}}},
                           {"chosen", ranking.chosen}};
    if (ranking.missing == FusionMissing::kColdWeights) {
      LLMREC_CHECK(!ranking.cold_weights.empty(), "export: the cold_weights policy without cold weights");
      rank["cold_weights"] = ranking.cold_weights;
    }
    c.ranking = rank.dump();
    c.created = utc_now_iso8601();
    c.item_ids = std::move(items.ids);
    c.item_text = std::move(items.texts);
    c.item_category = std::move(items.categories);
    c.cold = std::move(items.cold);
    c.popularity = std::move(items.train_count);
    c.item_vectors = vecs;
    c.item_keys = keys;
    c.hour_counts.resize(hours.size());
    for (std::size_t k = 0; k < hours.size(); ++k) c.hour_counts[k] = static_cast<std::int32_t>(hours[k]);
    c.user_ids = file.read_user_ids();
    if (!pseudonym_key.empty()) {  // the raw ids never reach the file
      for (auto& id : c.user_ids) id = pseudonymise(pseudonym_key, id);
      c.user_ids_scheme = kPseudonymScheme;
      c.pseudonym_check = pseudonym_key_check(pseudonym_key);
    }
    c.user_vectors = user_vecs;
    c.history_offsets.reserve(static_cast<std::size_t>(U) + 1);
    c.history_offsets.push_back(0);
    for (std::int64_t lo = 0; lo < U; lo += kHistoryReadUsers) {
      UserSlice slice = file.read_users(lo, std::min(U, lo + kHistoryReadUsers));
      const std::int64_t base = c.history_offsets.back();
      for (std::size_t u = 1; u < slice.users.offsets.size(); ++u) c.history_offsets.push_back(base + slice.users.offsets[u]);
      c.history_items.insert(c.history_items.end(), slice.events.item.begin(), slice.events.item.end());
      c.history_types.insert(c.history_types.end(), slice.events.type.begin(), slice.events.type.end());
    }
    c.ranker = ranker_tensors(model);
    c.neighbours = K;
    c.cf_items.assign(static_cast<std::size_t>(I * K), -1);
    c.cf_similarity.assign(static_cast<std::size_t>(I * K), 0.0f);
    const auto& rows = knn.rows();
    LLMREC_CHECK(static_cast<std::int64_t>(rows.size()) == I, "export: {} ItemKNN rows for {} items", rows.size(), I);
    for (std::int64_t i = 0; i < I; ++i) {
      const ItemNeighbours& row = rows[static_cast<std::size_t>(i)];
      const std::size_t n = std::min(row.items.size(), static_cast<std::size_t>(K));
      std::copy_n(row.items.begin(), n, c.cf_items.begin() + i * K);
      std::copy_n(row.similarity.begin(), n, c.cf_similarity.begin() + i * K);
    }
    // Content: the TF-IDF rows evaluation's tfidf scorer builds (also the
    // items' keywords in explanations).
    TfidfMatrix tm = tfidf_matrix(items, file.text_len(), vocab, ranking.tfidf);
    c.tfidf_offsets = std::move(tm.offsets);
    c.tfidf_terms = std::move(tm.terms);
    c.tfidf_weights = std::move(tm.weights);
    vocab.swap(c.vocab);
    events = static_cast<std::int64_t>(c.history_items.size());
  }
  s.file_bytes = rank0_run(comm, [&] {
    export_file_write(output, c);
    return static_cast<std::int64_t>(std::filesystem::file_size(output));
  });
  at::Tensor ev = at::tensor({events}, at::kLong);
  comm.broadcast(ev);
  s.events = ev.item<std::int64_t>();
  s.seconds = seconds_since(t0);
  return s;
}

ExportSummary export_add_catalogue(const std::string& export_path, const std::string& catalogue_path,
                                   Recommender& model, const std::string& checkpoint_path, const std::string& output,
                                   Communicator& comm, const CatalogueUpdateOptions& options) {
  const auto t0 = Clock::now();
  const std::string out_path = output.empty() ? export_path : output;
  if (options.on_error != "error" && options.on_error != "skip") {
    throw ConfigError(fmt::format("catalogue update: on_error must be error or skip, got '{}'", options.on_error));
  }
  ExportContent c = export_file_read(export_path, model, comm.rank() == 0);
  const std::string model_sha = sha256_file(checkpoint_path);
  if (model_sha != c.model_sha256) {
    throw ConfigError(fmt::format("{}: this checkpoint (SHA-256 {}) is not the model {} was exported from "
                                  "(model_sha256 {}, checkpoint '{}'); export again instead of updating",
                                  checkpoint_path, model_sha.substr(0, 12), export_path, c.model_sha256.substr(0, 12),
                                  c.checkpoint));
  }
  const ModelConfig& mc = model->options().config();
  if (mc.dim != c.dim || mc.user.history != c.history || mc.text_len > c.text_len) {
    throw IoError(fmt::format("{}: dim {}, history {}, text_len {} do not fit the model (dim {}, history {}, text_len "
                              "{})", export_path, c.dim, c.history, c.text_len, mc.dim, mc.user.history, mc.text_len));
  }

  // The catalogue columns, format and text limit the export was prepared with.
  DataConfig data;
  try {
    ConfigNode root = config_parse_string(c.config, export_path + " [config]");
    if (const ConfigNode* node = root.find("data")) ConfigReader::read(*node, data);
  } catch (const ConfigError& e) {
    throw IoError(fmt::format("{}: the stored configuration is invalid: {}", export_path, e.what()));
  }
  data.on_error = options.on_error;
  data.show_errors = options.show_errors;
  PrepareReport::Source report;
  Catalogue cat = catalogue_read(catalogue_path, data, report);
  WordPieceTokenizer tokenizer = [&] {
    try {
      return WordPieceTokenizer::from_tokens(c.vocab);
    } catch (const Error& e) {
      throw IoError(fmt::format("{}: tokenizer/vocab: {}", export_path, e.what()));
    }
  }();

  // Which rows are new, which replace an item, which change nothing.
  std::unordered_map<std::string, std::int64_t> index;
  for (std::size_t i = 0; i < c.item_ids.size(); ++i) index.emplace(c.item_ids[i], static_cast<std::int64_t>(i));
  const auto I0 = static_cast<std::int64_t>(c.item_ids.size());
  ExportSummary s;
  s.path = out_path;
  s.catalogue_rows = static_cast<std::int64_t>(cat.ids.size());
  for (const auto& [reason, n] : report.skipped) {
    s.rows_skipped += n;
    s.skipped_report += fmt::format("    {:>9}  {}\n", n, reason);
    auto ex = report.examples.find(reason);
    if (ex != report.examples.end()) {
      for (const auto& e : ex->second) s.skipped_report += fmt::format("               e.g. {}\n", e);
    }
  }
  ItemTable sub;
  std::vector<std::int64_t> sub_ids;
  for (std::size_t j = 0; j < cat.ids.size(); ++j) {
    auto it = index.find(cat.ids[j]);
    std::int64_t id;
    std::uint8_t cold = 1;
    if (it != index.end()) {
      id = it->second;
      const auto i = static_cast<std::size_t>(id);
      if (c.item_text[i] == cat.texts[j] && c.item_category[i] == cat.categories[j]) {
        ++s.items_unchanged;
        continue;
      }
      cold = c.cold[i];
      ++s.items_replaced;
    } else {
      id = I0 + s.items_added++;
      index.emplace(cat.ids[j], id);  // catalogue_read already refused duplicate ids
    }
    sub.ids.push_back(cat.ids[j]);
    sub.texts.push_back(cat.texts[j]);
    sub.categories.push_back(cat.categories[j]);
    sub.cold.push_back(cold);
    sub_ids.push_back(id);
  }
  TokenizedTexts tokens = item_texts_tokenize(tokenizer, sub.texts, static_cast<int>(c.text_len));
  sub.tokens = std::move(tokens.tokens);
  sub.length = std::move(tokens.length);

  model->eval();
  torch::NoGradGuard no_grad;
  const auto dtype = model->parameters().front().scalar_type();
  const auto te = Clock::now();
  torch::Tensor vecs = encode_all_items(model, sub, mc.text_len, comm, sub_ids);
  s.encode_seconds = seconds_since(te);
  s.items_encoded = static_cast<std::int64_t>(sub_ids.size());
  torch::Tensor keys = model->item_keys(vecs.to(dtype)).to(torch::kFloat);

  const std::int64_t I = I0 + s.items_added, d = c.dim;
  const torch::Tensor rows = torch::tensor(sub_ids, torch::kLong);
  torch::Tensor item_vecs = torch::cat({c.item_vectors, torch::zeros({s.items_added, d})});
  item_vecs.index_copy_(0, rows, vecs);

  // Users: recomputed from the new item vectors when an item they may have
  // seen changed (new items are in no history).
  const auto U = static_cast<std::int64_t>(c.history_offsets.size()) - 1;
  torch::Tensor user_vecs;
  if (s.items_replaced > 0) {
    const auto [ub, ue] = user_share(U, comm);
    torch::Tensor mine = torch::zeros({0, d});
    if (ue > ub) {
      const std::int64_t e0 = c.history_offsets[static_cast<std::size_t>(ub)];
      const std::int64_t e1 = c.history_offsets[static_cast<std::size_t>(ue)];
      std::vector<std::int32_t> hist = h5::File::open(export_path)
                                           .read_rows<std::int32_t>("users/history_items", static_cast<std::uint64_t>(e0),
                                                                    static_cast<std::uint64_t>(e1 - e0));
      for (std::int32_t item : hist) {
        if (item < 0 || item >= I0) {
          throw IoError(fmt::format("{}: users/history_items holds {}, not an item index", export_path, item));
        }
      }
      std::vector<std::int64_t> offsets(c.history_offsets.begin() + ub, c.history_offsets.begin() + ue + 1);
      for (auto& o : offsets) o -= e0;
      mine = user_vectors_of(model, item_vecs.to(dtype), offsets.data(), ue - ub, hist.data());
    }
    user_vecs = gather_rows(mine, comm);
    s.users_encoded = U;
  }

  s.items = I;
  s.users = U;
  s.events = c.history_offsets.back();
  s.neighbours = c.neighbours;
  s.catalogue_updates = c.catalogue_updates + 1;
  if (comm.rank() == 0) {
    c.item_vectors = item_vecs;
    c.item_keys = torch::cat({c.item_keys, torch::zeros({s.items_added, d})});
    c.item_keys.index_copy_(0, rows, keys);
    if (user_vecs.defined()) c.user_vectors = user_vecs;
    c.item_ids.resize(static_cast<std::size_t>(I));
    c.item_text.resize(static_cast<std::size_t>(I));
    c.item_category.resize(static_cast<std::size_t>(I));
    for (std::size_t j = 0; j < sub_ids.size(); ++j) {
      const auto i = static_cast<std::size_t>(sub_ids[j]);
      c.item_ids[i] = sub.ids[j];
      c.item_text[i] = sub.texts[j];
      c.item_category[i] = sub.categories[j];
    }
    if (!c.tfidf_offsets.empty()) {  // new and changed items: no TF-IDF row until the next export
      std::vector<std::uint8_t> stale(static_cast<std::size_t>(I), 0);
      for (auto id : sub_ids) stale[static_cast<std::size_t>(id)] = 1;
      std::vector<std::int64_t> offsets{0};
      std::vector<std::int32_t> terms;
      std::vector<float> weights;
      for (std::int64_t i = 0; i < I; ++i) {
        if (i < I0 && !stale[static_cast<std::size_t>(i)]) {
          const auto a = static_cast<std::size_t>(c.tfidf_offsets[static_cast<std::size_t>(i)]);
          const auto b = static_cast<std::size_t>(c.tfidf_offsets[static_cast<std::size_t>(i) + 1]);
          terms.insert(terms.end(), c.tfidf_terms.begin() + a, c.tfidf_terms.begin() + b);
          weights.insert(weights.end(), c.tfidf_weights.begin() + a, c.tfidf_weights.begin() + b);
        }
        offsets.push_back(static_cast<std::int64_t>(terms.size()));
      }
      c.tfidf_offsets.swap(offsets);
      c.tfidf_terms.swap(terms);
      c.tfidf_weights.swap(weights);
    }
    c.cold.resize(static_cast<std::size_t>(I), 1);
    c.popularity.resize(static_cast<std::size_t>(I), 0);
    c.hour_counts.resize(static_cast<std::size_t>(I * kHours), 0);
    c.cf_items.resize(static_cast<std::size_t>(I * c.neighbours), -1);
    c.cf_similarity.resize(static_cast<std::size_t>(I * c.neighbours), 0.0f);
    c.catalogue_updates = s.catalogue_updates;
    c.created = utc_now_iso8601();
  }
  s.cold_items = count_cold(c.cold) + (comm.rank() == 0 ? 0 : s.items_added);
  s.file_bytes = rank0_run(comm, [&] {
    export_file_write(out_path, c);
    return static_cast<std::int64_t>(std::filesystem::file_size(out_path));
  });
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace llmrec
