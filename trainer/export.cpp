#include "trainer/export.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/config.h"
#include "common/error.h"
#include "common/hdf5.h"
#include "common/pseudonym.h"
#include "common/sha256.h"
#include "data/data_config.h"
#include "data/prepare.h"
#include "data/sampler.h"
#include "data/wordpiece.h"
#include "distributed/agree.h"
#include "export/export_file.h"
#include "trainer/baselines.h"
#include "trainer/model_scorer.h"

namespace llmrec {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Hours of the day in items/hour_counts.
constexpr std::int64_t kHours = kExportHours;

/// Users read per hyperslab when rank 0 collects every history.
constexpr std::int64_t kHistoryReadUsers = 16 * kExportUserBlock;

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
/// u are items[offsets[u] .. offsets[u+1]); times parallel and the context
/// columns' codes C per event, nullptr when unknown), in blocks of
/// kExportUserBlock users; `item_vecs` [I, d] in the model's dtype. The
/// query's moment is unknown (serving adds its vector per request). With
/// model.user.profile, `profiles` [n, d] float and `has_profile` [n] bool
/// (undefined: nobody has one). float [n, d].
torch::Tensor user_vectors_of(Recommender& model, const torch::Tensor& item_vecs, const std::int64_t* offsets,
                              std::int64_t n, const std::int32_t* items, const std::int64_t* times,
                              const std::int32_t* codes, const torch::Tensor& profiles = {},
                              const torch::Tensor& has_profile = {}) {
  torch::NoGradGuard no_grad;
  const ModelConfig& mc = model->options().config();
  std::vector<torch::Tensor> out;
  for (std::int64_t lo = 0; lo < n; lo += kExportUserBlock) {
    const std::int64_t b = std::min(kExportUserBlock, n - lo);
    const HistoryInputs in = history_inputs(mc.user.history, model->context_spec(), offsets + lo, b, items,
                                            times, codes, nullptr, nullptr);
    UserContext context{in.context, in.query, {}, {}, {}, {}};
    if (profiles.defined()) {
      context.profile_vectors = profiles.narrow(0, lo, b);
      context.has_profile = has_profile.narrow(0, lo, b);
    }
    out.push_back(model->user_vectors(in.history, item_vecs, {}, context).to(torch::kFloat));
  }
  return out.empty() ? torch::zeros({0, mc.dim}) : torch::cat(out);
}

/// The profile vectors of users [0, n) of `users` (profile tokens of a
/// dataset slice) in blocks of kExportUserBlock: float [n, d] and [n] bool.
std::pair<torch::Tensor, torch::Tensor> profile_vectors_of(Recommender& model, const UserTable& users,
                                                           std::int64_t n, int text_len) {
  torch::NoGradGuard no_grad;
  const int len = std::min(text_len, model->options().config().text_len);
  std::vector<torch::Tensor> vecs, has;
  for (std::int64_t lo = 0; lo < n; lo += kExportUserBlock) {
    const std::int64_t b = std::min(kExportUserBlock, n - lo);
    const auto [tokens, mask] =
        text_rows(users.profile_tokens, users.profile_length, text_len, lo, lo + b, len);
    auto [v, h] = model->profile_vectors(tokens, mask);
    vecs.push_back(v.to(torch::kCPU, torch::kFloat));
    has.push_back(h.to(torch::kCPU));
  }
  if (vecs.empty())
    return {torch::zeros({0, model->options().config().dim}), torch::zeros({0}, torch::kBool)};
  return {torch::cat(vecs), torch::cat(has)};
}

/// Collective: the ranks' row blocks, concatenated in rank order.
torch::Tensor gather_rows(const torch::Tensor& mine, Communicator& comm) {
  return torch::cat(comm.all_gather_v(mine.contiguous())).contiguous();
}

/// A float tensor's values, row-major.
std::vector<float> floats_of(const torch::Tensor& t) {
  torch::Tensor c = t.detach().cpu().to(torch::kFloat).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

/// float [rows, d] from row-major values.
torch::Tensor matrix_of(const std::vector<float>& v, std::int64_t d) {
  const auto rows = static_cast<std::int64_t>(v.size()) / d;
  return torch::from_blob(const_cast<float*>(v.data()), {rows, d}, torch::kFloat).clone();
}

std::int64_t count_cold(const std::vector<std::uint8_t>& cold) {
  return static_cast<std::int64_t>(std::count(cold.begin(), cold.end(), std::uint8_t{1}));
}

/// The checks of write_export, the same on every rank (before any collective).
void check_export_fits(Recommender& model, const std::string& checkpoint_path, const DatasetFile& file,
                       const std::vector<std::string>& vocab) {
  const ModelConfig& mc = model->options().config();
  if (mc.text_len > file.text_len()) {
    throw ConfigError(
        fmt::format("{}: the model reads {} tokens per item, the dataset {} has {} (data.text_len)",
                    checkpoint_path, mc.text_len, file.path(), file.text_len()));
  }
  if (model->options().id_items() > file.num_items()) {
    throw ConfigError(
        fmt::format("{}: the model has ID vectors for {} items, the dataset {} has {} items: it was "
                    "trained on another dataset",
                    checkpoint_path, model->options().id_items(), file.path(), file.num_items()));
  }
  const auto& columns = mc.user.context_columns;
  for (std::size_t c = 0; c < columns.size(); ++c) {
    const auto values = static_cast<std::int64_t>(file.context_values(columns[c]).size());
    if (values != model->options().context_values()[c]) {
      throw ConfigError(fmt::format(
          "{}: the model's context column '{}' has {} values, the dataset {} has {}", checkpoint_path,
          columns[c], model->options().context_values()[c], file.path(), values));
    }
  }
  if (mc.item_text && static_cast<std::int64_t>(vocab.size()) > model->bert_config().vocab_size) {
    throw ConfigError(
        fmt::format("{}: the model's BERT has {} token embeddings, the vocabulary of the dataset {} has "
                    "{} tokens",
                    checkpoint_path, model->bert_config().vocab_size, file.path(), vocab.size()));
  }
}

/// Users and the hour-of-day counts of the items' training events.
struct ExportUsers {
  torch::Tensor vectors;            ///< float [U, d], every rank
  torch::Tensor profiles;           ///< float [U, d] with model.user.profile, else undefined
  torch::Tensor has_profile;        ///< [U] bool, the same
  std::vector<std::int64_t> hours;  ///< [I * kHours], summed over the ranks
};

/// Collective: u of every user from the last T events (all splits), each
/// rank its share of users; the hours of training events per item.
ExportUsers export_users(Recommender& model, const DatasetFile& file, const torch::Tensor& item_vecs,
                         Communicator& comm) {
  const std::int64_t I = file.num_items(), U = file.num_users(), d = model->options().config().dim;
  const auto [ub, ue] = user_share(U, comm);
  std::vector<std::int64_t> hours(static_cast<std::size_t>(I * kHours), 0);
  const bool profiles = model->options().config().user.profile;
  if (profiles && !file.has_profiles()) {
    throw ConfigError(
        fmt::format("the model reads user profiles (model.user.profile) but {} has none: "
                    "prepare it with data.users",
                    file.path()));
  }
  torch::Tensor mine = torch::zeros({0, d});
  torch::Tensor my_profiles = torch::zeros({0, d}), my_has = torch::zeros({0}, torch::kBool);
  if (ue > ub) {
    UserSlice slice = file.read_users(ub, ue, model->options().config().user.context_columns);
    const std::vector<std::int32_t> codes = context_codes_by_event(slice.events);
    if (profiles)
      std::tie(my_profiles, my_has) = profile_vectors_of(model, slice.users, ue - ub, file.text_len());
    mine = user_vectors_of(model, item_vecs, slice.users.offsets.data(), ue - ub, slice.events.item.data(),
                           slice.events.time.data(), codes.data(), profiles ? my_profiles : torch::Tensor(),
                           profiles ? my_has : torch::Tensor());
    for (std::int64_t u = 0; u < ue - ub; ++u) {
      const std::int64_t lo = slice.users.offsets[static_cast<std::size_t>(u)];
      const std::int64_t hi = lo + slice.users.train_end[static_cast<std::size_t>(u)];
      for (std::int64_t k = lo; k < hi; ++k) {
        const auto e = static_cast<std::size_t>(k);
        ++hours[static_cast<std::size_t>(slice.events.item[e] * kHours + utc_hour(slice.events.time[e]))];
      }
    }
  }
  ExportUsers out;
  out.vectors = gather_rows(mine, comm);
  if (profiles) {
    out.profiles = gather_rows(my_profiles, comm);
    out.has_profile = gather_rows(my_has.to(torch::kByte), comm).to(torch::kBool);
  }
  LLMREC_CHECK(out.vectors.size(0) == U, "export: gathered {} user vectors, expected {}", out.vectors.size(0),
               U);
  torch::Tensor hours_t = torch::from_blob(hours.data(), {I * kHours}, torch::kLong);
  comm.all_reduce(hours_t, {ReduceOp::kSum});
  out.hours = std::move(hours);
  return out;
}

/// The ranking settings the export carries (docs/export-format.md, "ranking").
std::string export_ranking_json(const ExportRanking& ranking) {
  nlohmann::json rank = {
      {"missing", fusion_missing_name(ranking.missing)},
      {"cold_shift", ranking.cold.shift},
      {"cold_neighbour_weight", ranking.cold.neighbour_weight},
      {"itemknn", {{"neighbours", ranking.itemknn.neighbours}, {"shrink", ranking.itemknn.shrink}}},
      {"tfidf", {{"profile_items", ranking.tfidf.profile_items}, {"max_df", ranking.tfidf.max_df}}},
      {"chosen", ranking.chosen}};
  if (ranking.missing == FusionMissing::kColdWeights) {
    LLMREC_CHECK(!ranking.cold_weights.empty(), "export: the cold_weights policy without cold weights");
    rank["cold_weights"] = ranking.cold_weights;
  }
  return rank.dump();
}

/// Every user's whole history (items, event types and times, CSR), read in blocks.
void export_histories(const DatasetFile& file, ExportData& c) {
  const std::int64_t U = file.num_users();
  c.history_offsets.reserve(static_cast<std::size_t>(U) + 1);
  c.history_offsets.push_back(0);
  for (std::int64_t lo = 0; lo < U; lo += kHistoryReadUsers) {
    UserSlice slice = file.read_users(lo, std::min(U, lo + kHistoryReadUsers), c.ranker_context_columns);
    const std::int64_t base = c.history_offsets.back();
    for (std::size_t u = 1; u < slice.users.offsets.size(); ++u)
      c.history_offsets.push_back(base + slice.users.offsets[u]);
    c.history_items.insert(c.history_items.end(), slice.events.item.begin(), slice.events.item.end());
    c.history_types.insert(c.history_types.end(), slice.events.type.begin(), slice.events.type.end());
    c.history_times.insert(c.history_times.end(), slice.events.time.begin(), slice.events.time.end());
    const std::vector<std::int32_t> codes = context_codes_by_event(slice.events);
    c.history_context.insert(c.history_context.end(), codes.begin(), codes.end());
  }
}

/// The ItemKNN neighbour table, K columns (-1 / 0 pad the shorter rows).
void export_cf_table(const ItemKnnScorer& knn, std::int64_t I, std::int64_t K, ExportData& c) {
  c.cf_k = K;
  c.cf_neighbours.assign(static_cast<std::size_t>(I * K), -1);
  c.cf_similarity.assign(static_cast<std::size_t>(I * K), 0.0f);
  const auto& rows = knn.rows();
  LLMREC_CHECK(static_cast<std::int64_t>(rows.size()) == I, "export: {} ItemKNN rows for {} items",
               rows.size(), I);
  for (std::int64_t i = 0; i < I; ++i) {
    const ItemNeighbours& row = rows[static_cast<std::size_t>(i)];
    const std::size_t n = std::min(row.items.size(), static_cast<std::size_t>(K));
    std::copy_n(row.items.begin(), n, c.cf_neighbours.begin() + i * K);
    std::copy_n(row.similarity.begin(), n, c.cf_similarity.begin() + i * K);
  }
}

/// The model of an export update must be the exported one, and fit it.
void update_check_model(const ExportData& c, Recommender& model, const std::string& checkpoint_path,
                        const std::string& export_path) {
  const std::string model_sha = sha256_file(checkpoint_path);
  if (model_sha != c.model_sha256) {
    throw ConfigError(fmt::format(
        "{}: this checkpoint (SHA-256 {}) is not the model {} was exported from "
        "(model_sha256 {}, checkpoint '{}'); export again instead of updating",
        checkpoint_path, model_sha.substr(0, 12), export_path, c.model_sha256.substr(0, 12), c.checkpoint));
  }
  const ModelConfig& mc = model->options().config();
  if (mc.dim != c.dim || mc.user.history != c.history || mc.text_len > c.text_len) {
    throw IoError(
        fmt::format("{}: dim {}, history {}, text_len {} do not fit the model (dim {}, history {}, text_len "
                    "{})",
                    export_path, c.dim, c.history, c.text_len, mc.dim, mc.user.history, mc.text_len));
  }
}

/// The catalogue columns, format and text limit the export was prepared
/// with (its stored configuration), with this update's bad-row policy.
DataConfig update_data_config(const ExportData& c, const std::string& export_path,
                              const CatalogueUpdateOptions& options) {
  DataConfig data;
  try {
    ConfigNode root = config_parse_string(c.config, export_path + " [config]");
    if (const ConfigNode* node = root.find("data")) ConfigReader::read(*node, data);
  } catch (const ConfigError& e) {
    throw IoError(fmt::format("{}: the stored configuration is invalid: {}", export_path, e.what()));
  }
  data.on_error = options.on_error;
  data.show_errors = options.show_errors;
  return data;
}

/// The rows of an update that change something: new items (ids after the
/// export's) and replaced ones (their text or category changed).
struct CatalogueChanges {
  ItemTable items;                ///< ids, texts, categories, cold
  std::vector<std::int64_t> ids;  ///< each row's item index in the updated export
};

/// Sorts the catalogue's rows into added, replaced and unchanged (counted in
/// s, with the skipped rows of `report`).
CatalogueChanges catalogue_changes(const ExportData& c, const Catalogue& cat,
                                   const PrepareReport::Source& report, ExportSummary& s) {
  // Which rows are new, which replace an item, which change nothing.
  std::unordered_map<std::string, std::int64_t> index;
  for (std::size_t i = 0; i < c.item_ids.size(); ++i)
    index.emplace(c.item_ids[i], static_cast<std::int64_t>(i));
  const auto I0 = static_cast<std::int64_t>(c.item_ids.size());
  s.catalogue_rows = static_cast<std::int64_t>(cat.ids.size());
  for (const auto& [reason, n] : report.skipped) {
    s.rows_skipped += n;
    s.skipped_report += fmt::format("    {:>9}  {}\n", n, reason);
    auto ex = report.examples.find(reason);
    if (ex != report.examples.end()) {
      for (const auto& e : ex->second) s.skipped_report += fmt::format("               e.g. {}\n", e);
    }
  }
  CatalogueChanges out;
  ItemTable& sub = out.items;
  std::vector<std::int64_t>& sub_ids = out.ids;
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
      cold = c.item_cold[i];
      ++s.items_replaced;
    } else {
      id = I0 + s.items_added++;
      index.emplace(cat.ids[j], id);  // read_catalogue already refused duplicate ids
    }
    sub.ids.push_back(cat.ids[j]);
    sub.texts.push_back(cat.texts[j]);
    sub.categories.push_back(cat.categories[j]);
    sub.cold.push_back(cold);
    sub_ids.push_back(id);
  }
  return out;
}

/// The TF-IDF rows after an update: the items it left as they were keep
/// theirs; new and changed items (`fresh`, at rows `fresh_ids`) get theirs,
/// weighted with the export's idf (empty rows when the export predates
/// `tfidf/idf`).
std::shared_ptr<const TfidfIndex> tfidf_updated(const TfidfIndex& index, std::int64_t I0, std::int64_t I,
                                                const std::vector<std::int64_t>& fresh_ids,
                                                const TfidfMatrix& fresh) {
  const TfidfMatrix& old = index.matrix();
  std::vector<std::int64_t> fresh_row(static_cast<std::size_t>(I), -1);
  for (std::size_t j = 0; j < fresh_ids.size(); ++j)
    fresh_row[static_cast<std::size_t>(fresh_ids[j])] = static_cast<std::int64_t>(j);
  TfidfMatrix m;
  m.num_terms = old.num_terms;
  m.idf = old.idf;
  auto copy_row = [&m](const TfidfMatrix& from, std::int64_t row) {
    const auto a = static_cast<std::ptrdiff_t>(from.offsets[static_cast<std::size_t>(row)]);
    const auto b = static_cast<std::ptrdiff_t>(from.offsets[static_cast<std::size_t>(row) + 1]);
    m.terms.insert(m.terms.end(), from.terms.begin() + a, from.terms.begin() + b);
    m.weights.insert(m.weights.end(), from.weights.begin() + a, from.weights.begin() + b);
  };
  for (std::int64_t i = 0; i < I; ++i) {
    const std::int64_t f = fresh_row[static_cast<std::size_t>(i)];
    if (f >= 0 && fresh.num_items() > 0) {
      copy_row(fresh, f);
    } else if (f < 0 && i < I0) {
      copy_row(old, i);
    }
    m.offsets.push_back(static_cast<std::int64_t>(m.terms.size()));
  }
  return std::make_shared<const TfidfIndex>(std::move(m));
}

/// Collective: the users' vectors from the updated item vectors (every
/// user: an item they may have seen changed).
torch::Tensor update_user_vectors(const ExportData& c, Recommender& model, const torch::Tensor& item_vecs,
                                  Communicator& comm) {
  const auto U = static_cast<std::int64_t>(c.history_offsets.size()) - 1;
  const auto dtype = model->parameters().front().scalar_type();
  const auto [ub, ue] = user_share(U, comm);
  torch::Tensor mine = torch::zeros({0, c.dim});
  if (ue > ub) {
    const std::int64_t e0 = c.history_offsets[static_cast<std::size_t>(ub)];
    const std::int32_t* hist = c.history_items.data() + e0;  // item indexes checked by read_export
    std::vector<std::int64_t> offsets(c.history_offsets.begin() + ub, c.history_offsets.begin() + ue + 1);
    for (auto& o : offsets) o -= e0;
    const std::int64_t* times = c.history_times.empty() ? nullptr : c.history_times.data() + e0;
    const std::int32_t* codes =
        c.history_context.empty()
            ? nullptr
            : c.history_context.data() + e0 * static_cast<std::int64_t>(c.ranker_context_columns.size());
    torch::Tensor profiles, has_profile;
    if (c.ranker_profile != 0) {  // the profiles' text did not change: their stored vectors
      profiles = matrix_of(c.user_profiles, c.dim).narrow(0, ub, ue - ub);
      has_profile = torch::tensor(std::vector<std::uint8_t>(c.user_has_profile.begin() + ub,
                                                            c.user_has_profile.begin() + ue),
                                  torch::kByte)
                        .to(torch::kBool);
    }
    mine = user_vectors_of(model, item_vecs.to(dtype), offsets.data(), ue - ub, hist, times, codes, profiles,
                           has_profile);
  }
  return gather_rows(mine, comm);
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

namespace {

/// Where the export comes from: model, configs, checkpoint and dataset
/// (with digests), event types, the ranking training chose, the time.
void export_set_provenance(ExportData& c, const ModelConfig& mc, const std::string& config_yaml,
                           const std::string& checkpoint_path, const DatasetFile& file,
                           const ExportRanking& ranking) {
  ModelConfig m = mc;
  c.model_config = ConfigWriter::write(m);
  c.config = config_yaml;
  c.config_sha256 = sha256_hex(config_yaml);
  c.model_sha256 = sha256_file(checkpoint_path);
  c.checkpoint = checkpoint_path;
  c.dataset = file.path();
  c.dataset_sha256 = sha256_file(file.path());
  c.event_types = file.event_types();
  c.fusion = ranking.fusion;
  c.ranking = export_ranking_json(ranking);
  c.created = utc_now_iso8601();
}

/// The users' ids (keyed hashes with a pseudonym key: the raw ids never
/// reach the file) and vectors.
void export_set_users(ExportData& c, const DatasetFile& file, const ExportUsers& users,
                      const std::string& pseudonym_key) {
  c.hour_counts.assign(users.hours.begin(), users.hours.end());
  c.user_ids = file.read_user_ids();
  if (!pseudonym_key.empty()) {
    for (auto& id : c.user_ids) id = pseudonymise(pseudonym_key, id);
    c.user_ids_scheme = kPseudonymScheme;
    c.pseudonym_check = check_pseudonym_key(pseudonym_key);
  }
  c.user_vectors = floats_of(users.vectors);
  if (users.profiles.defined()) {
    c.user_profiles = floats_of(users.profiles);
    torch::Tensor has = users.has_profile.to(torch::kByte).contiguous();
    c.user_has_profile.assign(has.data_ptr<std::uint8_t>(), has.data_ptr<std::uint8_t>() + has.numel());
  }
}

}  // namespace

ExportSummary write_export(const std::string& output, Recommender& model, const std::string& checkpoint_path,
                           const DatasetFile& file, const std::string& config_yaml,
                           const ExportRanking& ranking, Communicator& comm,
                           const std::string& pseudonym_key) {
  const auto t0 = Clock::now();
  const ModelConfig& mc = model->options().config();
  std::vector<std::string> vocab = file.vocab();
  check_export_fits(model, checkpoint_path, file, vocab);
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
  const torch::Tensor& vecs = scorer.item_vectors();
  s.encode_seconds = seconds_since(te);
  s.items_encoded = I;
  const torch::Tensor vecs_m = vecs.to(dtype);
  torch::Tensor keys = scorer.item_keys().contiguous();

  const ExportUsers users = export_users(model, file, vecs_m, comm);
  s.users_encoded = U;
  if (users.has_profile.defined()) s.users_with_profile = users.has_profile.sum().item<std::int64_t>();
  // CF neighbours: ItemKNN over the training histories, as in evaluation.
  TrainingHistories histories = gather_training_histories(file, comm);
  ItemKnnScorer knn(histories, ranking.itemknn, comm);
  // K: the longest row kept (rows hold only items with a common user), so
  // the table is exact whatever the neighbour option ("all" included).
  std::int64_t K = 1;
  for (const ItemNeighbours& row : knn.rows())
    K = std::max<std::int64_t>(K, static_cast<std::int64_t>(row.items.size()));
  s.neighbours = K;
  s.cold_items = count_cold(items.cold);

  ExportData c;
  std::int64_t events = 0;
  if (comm.rank() == 0) {
    c.dim = d;
    c.history = mc.user.history;
    c.id_items = model->options().id_items();
    c.text_len = file.text_len();
    c.ranker_time_features = mc.user.time_features;
    c.ranker_context_columns = mc.user.context_columns;
    for (const auto& column : c.ranker_context_columns)
      c.context_values.push_back(file.context_values(column));
    export_set_tower(c, model->user.ptr());
    c.catalogue_updates = 0;
    export_set_provenance(c, mc, config_yaml, checkpoint_path, file, ranking);
    // Content: the TF-IDF rows evaluation's tfidf scorer builds (also the
    // items' keywords in explanations).
    c.tfidf = std::make_shared<const TfidfIndex>(tfidf_matrix(items, file.text_len(), vocab, ranking.tfidf));
    c.item_ids = std::move(items.ids);
    c.item_text = std::move(items.texts);
    c.item_category = std::move(items.categories);
    c.item_cold = std::move(items.cold);
    c.item_popularity = std::move(items.train_count);
    c.item_vectors = floats_of(vecs);
    c.item_keys = floats_of(keys);
    export_set_users(c, file, users, pseudonym_key);
    export_histories(file, c);
    export_cf_table(knn, I, K, c);
    vocab.swap(c.vocab);
    events = static_cast<std::int64_t>(c.history_items.size());
  }
  s.file_bytes = run_on_rank0(comm, [&] {
    write_export_file(output, c);
    return static_cast<std::int64_t>(std::filesystem::file_size(output));
  });
  at::Tensor ev = at::tensor({events}, at::kLong);
  comm.broadcast(ev);
  s.events = ev.item<std::int64_t>();
  s.seconds = seconds_since(t0);
  return s;
}

namespace {

WordPieceTokenizer export_tokenizer(const ExportData& c, const std::string& export_path) {
  try {
    return WordPieceTokenizer::from_tokens(c.vocab);
  } catch (const Error& e) {
    throw IoError(fmt::format("{}: tokenizer/vocab: {}", export_path, e.what()));
  }
}

/// Rank 0: the changed and added items' rows (`sub`, at rows `sub_ids`)
/// written into the export's tables, which grow from I0 to I items.
void apply_item_changes(ExportData& c, const ItemTable& sub, const std::vector<std::int64_t>& sub_ids,
                        const torch::Tensor& item_vecs, const torch::Tensor& changed_keys, std::int64_t I0,
                        std::int64_t I) {
  const std::int64_t d = c.dim;
  c.item_vectors = floats_of(item_vecs);
  torch::Tensor item_keys = torch::cat({matrix_of(c.item_keys, d), torch::zeros({I - I0, d})});
  item_keys.index_copy_(0, torch::tensor(sub_ids, torch::kLong), changed_keys);
  c.item_keys = floats_of(item_keys);
  c.item_ids.resize(static_cast<std::size_t>(I));
  c.item_text.resize(static_cast<std::size_t>(I));
  c.item_category.resize(static_cast<std::size_t>(I));
  for (std::size_t j = 0; j < sub_ids.size(); ++j) {
    const auto i = static_cast<std::size_t>(sub_ids[j]);
    c.item_ids[i] = sub.ids[j];
    c.item_text[i] = sub.texts[j];
    c.item_category[i] = sub.categories[j];
  }
  if (c.tfidf != nullptr) {
    const std::vector<double>& idf = c.tfidf->matrix().idf;
    if (idf.empty()) {
      spdlog::warn(
          "export --update: this export has no tfidf/idf (written before llmrec stored it): the {} new and "
          "changed items get no TF-IDF row (no content score, no keywords) until the next full export",
          sub_ids.size());
    }
    const TfidfMatrix fresh =
        idf.empty() ? TfidfMatrix{} : tfidf_rows(sub, static_cast<int>(c.text_len), c.vocab, idf);
    c.tfidf = tfidf_updated(*c.tfidf, I0, I, sub_ids, fresh);
  }
  c.item_cold.resize(static_cast<std::size_t>(I), 1);
  c.item_popularity.resize(static_cast<std::size_t>(I), 0);
  c.hour_counts.resize(static_cast<std::size_t>(I * kHours), 0);
  c.cf_neighbours.resize(static_cast<std::size_t>(I * c.cf_k), -1);
  c.cf_similarity.resize(static_cast<std::size_t>(I * c.cf_k), 0.0f);
}

}  // namespace

ExportSummary add_catalogue_to_export(const std::string& export_path, const std::string& catalogue_path,
                                      Recommender& model, const std::string& checkpoint_path,
                                      const std::string& output, Communicator& comm,
                                      const CatalogueUpdateOptions& options) {
  const auto t0 = Clock::now();
  const std::string out_path = output.empty() ? export_path : output;
  if (options.on_error != "error" && options.on_error != "skip") {
    throw ConfigError(
        fmt::format("catalogue update: on_error must be error or skip, got '{}'", options.on_error));
  }
  ExportData c = *read_export(export_path);
  update_check_model(c, model, checkpoint_path, export_path);
  DataConfig data = update_data_config(c, export_path, options);
  PrepareReport::Source report;
  Catalogue cat = read_catalogue(catalogue_path, data, report);
  WordPieceTokenizer tokenizer = export_tokenizer(c, export_path);

  const auto I0 = static_cast<std::int64_t>(c.item_ids.size());
  ExportSummary s;
  s.path = out_path;
  CatalogueChanges changes = catalogue_changes(c, cat, report, s);
  ItemTable& sub = changes.items;
  const std::vector<std::int64_t>& sub_ids = changes.ids;
  TokenizedTexts tokens = tokenize_item_texts(tokenizer, sub.texts, static_cast<int>(c.text_len));
  sub.tokens = std::move(tokens.tokens);
  sub.length = std::move(tokens.length);

  model->eval();
  torch::NoGradGuard no_grad;
  const auto dtype = model->parameters().front().scalar_type();
  const auto te = Clock::now();
  torch::Tensor vecs = encode_all_items(model, sub, model->options().config().text_len, comm, sub_ids);
  s.encode_seconds = seconds_since(te);
  s.items_encoded = static_cast<std::int64_t>(sub_ids.size());
  torch::Tensor keys = model->item_keys(vecs.to(dtype)).to(torch::kFloat);

  const std::int64_t I = I0 + s.items_added, d = c.dim;
  const torch::Tensor rows = torch::tensor(sub_ids, torch::kLong);
  torch::Tensor item_vecs = torch::cat({matrix_of(c.item_vectors, d), torch::zeros({s.items_added, d})});
  item_vecs.index_copy_(0, rows, vecs);

  // Users: recomputed from the new item vectors when an item they may have
  // seen changed (new items are in no history).
  const auto U = static_cast<std::int64_t>(c.history_offsets.size()) - 1;
  torch::Tensor user_vecs;
  if (s.items_replaced > 0) {
    user_vecs = update_user_vectors(c, model, item_vecs, comm);
    s.users_encoded = U;
  }

  s.items = I;
  s.users = U;
  s.events = c.history_offsets.back();
  s.neighbours = c.cf_k;
  s.catalogue_updates = c.catalogue_updates + 1;
  if (comm.rank() == 0) {
    apply_item_changes(c, sub, sub_ids, item_vecs, keys, I0, I);
    if (user_vecs.defined()) c.user_vectors = floats_of(user_vecs);
    c.catalogue_updates = s.catalogue_updates;
    c.created = utc_now_iso8601();
  }
  s.cold_items = count_cold(c.item_cold) + (comm.rank() == 0 ? 0 : s.items_added);
  s.file_bytes = run_on_rank0(comm, [&] {
    write_export_file(out_path, c);
    return static_cast<std::int64_t>(std::filesystem::file_size(out_path));
  });
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace llmrec
