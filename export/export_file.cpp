#include "export/export_file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/hdf5.h"
#include "common/pseudonym.h"
#include "common/utf8.h"
#include "models/ranker.h"

namespace llmrec {
namespace {

constexpr int kHours = kExportHours;

// Bounds on the attributes, so that no size computed from them can
// overflow and no hostile value asks for an absurd allocation.
constexpr std::int64_t kMaxDim = 1 << 16;
constexpr std::int64_t kMaxHistory = 1 << 16;
constexpr std::int64_t kMaxLayers = 64;
constexpr std::int64_t kMaxTextLen = 1 << 20;
constexpr std::int64_t kMaxRows = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t kMaxNeighbours = 1 << 20;
// |x| of every stored float: a dot product of two such d-vectors stays far
// below FLT_MAX (1e15 * 1e15 * 65536 < 3.4e38).
constexpr double kMaxAbs = 1e15;

std::string dims_str(const std::vector<std::uint64_t>& dims) {
  return fmt::format("[{}]", fmt::join(dims, ", "));
}

/// Validating reads from one export file; every error names the file and
/// the dataset or attribute.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), file_(h5::File::open(path)) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    // The writer stores every dataset uncompressed, so no dataset holds more
    // bytes than the file; the generous bound only rules out hostile sizes.
    byte_budget_ =
        ec ? std::uint64_t{1} << 40 : 64 * static_cast<std::uint64_t>(size) + (std::uint64_t{64} << 20);
  }

  [[noreturn]] void fail(const std::string& what) const { throw IoError(fmt::format("{}: {}", path_, what)); }

  const h5::File& file() const { return file_; }

  bool has_attr(const std::string& key) const { return file_.has_attr("/", key); }

  std::string attr_string(const std::string& key) const {
    if (!has_attr(key)) fail(fmt::format("missing root attribute '{}'", key));
    return file_.attr_string("/", key);
  }
  std::string attr_string_or_empty(const std::string& key) const {
    return has_attr(key) ? file_.attr_string("/", key) : std::string();
  }
  std::int64_t attr_int(const std::string& key, std::int64_t lo, std::int64_t hi) const {
    if (!has_attr(key)) fail(fmt::format("missing root attribute '{}'", key));
    const std::int64_t v = file_.attr_int("/", key);
    if (v < lo || v > hi)
      fail(fmt::format("root attribute '{}' is {}, expected a value in [{}, {}]", key, v, lo, hi));
    return v;
  }

  std::vector<std::uint64_t> shape(const std::string& name) const {
    if (!file_.exists(name)) fail(fmt::format("missing dataset '{}'", name));
    return file_.shape(name);
  }

  void expect_shape(const std::string& name, const std::vector<std::uint64_t>& want,
                    const char* meaning) const {
    const auto got = shape(name);
    if (got != want) {
      fail(fmt::format("dataset '{}' has shape {}, expected {} ({})", name, dims_str(got), dims_str(want),
                       meaning));
    }
  }

  /// Reads `name` after checking its shape is `want`.
  template <class T>
  std::vector<T> read(const std::string& name, const std::vector<std::uint64_t>& want, const char* meaning) {
    expect_shape(name, want, meaning);
    std::uint64_t elems = 1;
    for (auto d : want) elems *= d;  // bounded by the attribute checks
    reserve(name, elems * sizeof(T));
    try {
      return file_.read<T>(name);
    } catch (const std::bad_alloc&) {
      fail(fmt::format("dataset '{}' does not fit in memory ({} values)", name, elems));
    }
  }

  /// Reads `n` strings stored as `name/bytes` + `name/offsets`.
  std::vector<std::string> strings(const std::string& name, std::uint64_t n) {
    const std::string bytes_name = name + "/bytes";
    const std::string offsets_name = name + "/offsets";
    const auto bshape = shape(bytes_name);
    if (bshape.size() != 1)
      fail(fmt::format("dataset '{}' must be 1-dimensional, has shape {}", bytes_name, dims_str(bshape)));
    const auto offsets = read<std::int64_t>(offsets_name, {n + 1}, "one offset per string plus one");
    reserve(bytes_name, bshape[0]);
    std::vector<std::uint8_t> bytes;
    try {
      bytes = file_.read<std::uint8_t>(bytes_name);
    } catch (const std::bad_alloc&) {
      fail(fmt::format("dataset '{}' does not fit in memory", bytes_name));
    }
    if (offsets[0] != 0)
      fail(fmt::format("dataset '{}' must start at 0, starts at {}", offsets_name, offsets[0]));
    for (std::size_t j = 1; j < offsets.size(); ++j) {
      if (offsets[j] < offsets[j - 1]) {
        fail(fmt::format("dataset '{}' is not monotone: entry {} is {} after {}", offsets_name, j, offsets[j],
                         offsets[j - 1]));
      }
    }
    if (static_cast<std::uint64_t>(offsets.back()) != bytes.size()) {
      fail(fmt::format("dataset '{}' ends at {} but '{}' holds {} bytes", offsets_name, offsets.back(),
                       bytes_name, bytes.size()));
    }
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(n));
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j) {
      out.emplace_back(reinterpret_cast<const char*>(bytes.data()) + offsets[j],
                       static_cast<std::size_t>(offsets[j + 1] - offsets[j]));
      if (!utf8_valid(out.back())) fail(fmt::format("string {} of '{}' is not valid UTF-8", j, name));
    }
    return out;
  }

  void check_finite(const std::string& name, const std::vector<float>& v) const {
    for (std::size_t j = 0; j < v.size(); ++j) {
      if (!std::isfinite(v[j]) || std::fabs(v[j]) > kMaxAbs) {
        fail(fmt::format("dataset '{}' value {} is {} (values must be finite, |x| <= {:g})", name, j, v[j],
                         kMaxAbs));
      }
    }
  }

 private:
  void reserve(const std::string& name, std::uint64_t bytes) {
    if (bytes > byte_budget_) {
      fail(fmt::format("dataset '{}' claims {} bytes, more than the file can hold", name, bytes));
    }
    byte_budget_ -= bytes;
  }

  std::string path_;
  h5::File file_;
  std::uint64_t byte_budget_ = 0;
};

/// The non-negative weights of a JSON object {"component": weight}.
std::map<std::string, double> parse_weights(const nlohmann::json& j, const char* what) {
  if (!j.is_object()) throw std::runtime_error("not a JSON object");
  std::map<std::string, double> out;
  for (const auto& [key, value] : j.items()) {
    if (!value.is_number()) throw std::runtime_error(fmt::format("{} '{}' is not a number", what, key));
    const double w = value.get<double>();
    if (!std::isfinite(w) || w < 0)
      throw std::runtime_error(fmt::format("{} '{}' is {}, not >= 0", what, key, w));
    out[key] = w;
  }
  return out;
}

/// format, version and score.
void read_identity(Reader& r, ExportData& e) {
  const std::string format = r.attr_string("format");
  if (format != kExportFormat) {
    r.fail(fmt::format("not an llmrec export: root attribute 'format' is '{}', expected '{}'", format,
                       kExportFormat));
  }
  e.version = r.attr_int("version", std::numeric_limits<std::int64_t>::min(),
                         std::numeric_limits<std::int64_t>::max());
  if (e.version != kExportVersion) {
    r.fail(fmt::format("export version {} is not supported (this llmrec reads version {})", e.version,
                       kExportVersion));
  }
  e.score = r.attr_string("score");
  if (e.score != "dot")
    r.fail(fmt::format("root attribute 'score' is '{}'; this llmrec serves 'dot' only", e.score));
}

// The root attributes held in plain fields, one list for the reader and the
// writer (docs/export-format.md). num_items and num_users are written from
// the id tables and read first (other bounds depend on them).

/// Integers, read in this order: a bound may depend on one read before it.
struct IntAttribute {
  const char* key;
  std::int64_t ExportData::*field;
  bool required;  ///< else absent (older exports) keeps the field's default
  std::int64_t lo;
  std::int64_t (*hi)(const ExportData&);
};
const IntAttribute kIntAttributes[] = {
    {"dim", &ExportData::dim, true, 1, [](const ExportData&) { return kMaxDim; }},
    {"history", &ExportData::history, true, 1, [](const ExportData&) { return kMaxHistory; }},
    {"id_items", &ExportData::id_items, true, 0, [](const ExportData& e) { return e.num_items; }},
    {"ranker_heads", &ExportData::ranker_heads, true, 1, [](const ExportData& e) { return e.dim; }},
    {"ranker_layers", &ExportData::ranker_layers, true, 0, [](const ExportData&) { return kMaxLayers; }},
    {"ranker_ff_dim", &ExportData::ranker_ff_dim, false, 0, [](const ExportData&) { return 16 * kMaxDim; }},
    {"text_len", &ExportData::text_len, true, 1, [](const ExportData&) { return kMaxTextLen; }},
    {"ranker_profile", &ExportData::ranker_profile, false, 0,
     [](const ExportData&) { return std::int64_t{1}; }},
    {"catalogue_updates", &ExportData::catalogue_updates, false, 0,
     [](const ExportData&) { return std::numeric_limits<std::int64_t>::max(); }},
};
/// Strings of the tower's spec and the user-id scheme; absent: the field's default.
const std::pair<const char*, std::string ExportData::*> kSpecStrings[] = {
    {"ranker_pooling", &ExportData::ranker_pooling},
    {"ranker_activation", &ExportData::ranker_activation},
    {"user_ids", &ExportData::user_ids_scheme},
};
/// JSON lists of names; absent: none.
const std::pair<const char*, std::vector<std::string> ExportData::*> kNameLists[] = {
    {"ranker_time_features", &ExportData::ranker_time_features},
    {"ranker_context_columns", &ExportData::ranker_context_columns},
};
/// Provenance (descriptive; serving does not need them): absent: empty.
const std::pair<const char*, std::string ExportData::*> kProvenance[] = {
    {"model_config", &ExportData::model_config},     {"config", &ExportData::config},
    {"config_sha256", &ExportData::config_sha256},   {"model_sha256", &ExportData::model_sha256},
    {"checkpoint", &ExportData::checkpoint},         {"dataset", &ExportData::dataset},
    {"dataset_sha256", &ExportData::dataset_sha256}, {"created", &ExportData::created},
};

/// A root attribute holding a JSON list of names; absent: none.
std::vector<std::string> attr_names(Reader& r, const std::string& key) {
  if (!r.has_attr(key)) return {};
  const nlohmann::json names = nlohmann::json::parse(r.attr_string(key), nullptr, false);
  if (!names.is_array() ||
      !std::all_of(names.begin(), names.end(), [](const auto& n) { return n.is_string(); }))
    r.fail(fmt::format("root attribute '{}' is not a JSON list of names", key));
  return names.get<std::vector<std::string>>();
}

/// The sizes, the user tower's spec and the user-id scheme.
void read_spec(Reader& r, ExportData& e) {
  e.num_items = r.attr_int("num_items", 1, kMaxRows);
  e.num_users = r.attr_int("num_users", 0, kMaxRows);
  for (const IntAttribute& a : kIntAttributes) {
    if (a.required || r.has_attr(a.key)) e.*a.field = r.attr_int(a.key, a.lo, a.hi(e));
  }
  for (const auto& [key, field] : kSpecStrings) {
    if (r.has_attr(key)) e.*field = r.attr_string(key);
  }
  for (const auto& [key, field] : kNameLists) e.*field = attr_names(r, key);
  if (e.dim % e.ranker_heads != 0) {
    r.fail(fmt::format("root attribute 'ranker_heads' ({}) must divide 'dim' ({})", e.ranker_heads, e.dim));
  }
  try {
    parse_time_features(e.ranker_time_features);
  } catch (const std::exception& ex) {
    r.fail(fmt::format("root attribute 'ranker_time_features': {}", ex.what()));
  }
  for (const auto& name : e.ranker_context_columns) {
    if (name.empty() || name.find('/') != std::string::npos)
      r.fail(fmt::format("root attribute 'ranker_context_columns' names the column '{}'", name));
  }
  if (e.user_ids_scheme == kPseudonymScheme) {
    e.pseudonym_check = r.attr_string("pseudonym_check");
  } else if (e.user_ids_scheme != "raw") {
    r.fail(
        fmt::format("attribute 'user_ids' is '{}', expected raw or {}", e.user_ids_scheme, kPseudonymScheme));
  }
  if (e.ranker_pooling != "attention" && e.ranker_pooling != "mean" && e.ranker_pooling != "causal") {
    r.fail(fmt::format("root attribute 'ranker_pooling' is '{}', expected 'attention', 'mean' or 'causal'",
                       e.ranker_pooling));
  }
}

void read_event_types(Reader& r, ExportData& e) {
  const std::string types = r.attr_string("event_types");
  try {
    const auto j = nlohmann::json::parse(types);
    if (!j.is_array()) throw std::runtime_error("not a JSON array");
    for (const auto& t : j) {
      if (!t.is_string()) throw std::runtime_error("an element is not a string");
      e.event_types.push_back(t.get<std::string>());
    }
  } catch (const std::exception& ex) {
    r.fail(fmt::format("root attribute 'event_types' must be a JSON array of strings: {}", ex.what()));
  }
  if (e.event_types.size() > 256) {
    r.fail(fmt::format("root attribute 'event_types' has {} types; uint8 indexes at most 256",
                       e.event_types.size()));
  }
}

/// The fusion weights and the ranking policy training chose (optional).
void read_fusion(Reader& r, ExportData& e) {
  try {
    e.fusion = parse_weights(nlohmann::json::parse(r.attr_string("fusion")), "weight");
  } catch (const std::exception& ex) {
    r.fail(fmt::format("root attribute 'fusion' must be a JSON object of weights >= 0: {}", ex.what()));
  }
  if (r.has_attr("ranking")) {
    e.ranking = r.attr_string("ranking");
    try {
      const auto j = nlohmann::json::parse(e.ranking);
      if (!j.is_object()) throw std::runtime_error("not a JSON object");
      if (j.contains("missing")) {
        if (!j["missing"].is_string()) throw std::runtime_error("'missing' is not a string");
        e.fusion_missing = parse_fusion_missing(j["missing"].get<std::string>(), "missing");
      }
      if (e.fusion_missing == FusionMissing::kColdWeights) {
        if (!j.contains("cold_weights") || !j["cold_weights"].is_object()) {
          throw std::runtime_error("'missing' cold_weights needs an object 'cold_weights'");
        }
        e.fusion_cold_weights = parse_weights(j["cold_weights"], "cold weight");
      }
      if (j.contains("tfidf")) {
        const auto& t = j["tfidf"];
        if (!t.is_object() || !t.contains("profile_items") || !t["profile_items"].is_number_integer() ||
            t["profile_items"].get<std::int64_t>() < 1 || t["profile_items"].get<std::int64_t>() > 100000) {
          throw std::runtime_error("'tfidf' must hold an integer 'profile_items' in [1, 100000]");
        }
        e.tfidf_profile_items = t["profile_items"].get<int>();
      }
      if (j.contains("cold_shift")) {
        if (!j["cold_shift"].is_number()) throw std::runtime_error("'cold_shift' is not a number");
        e.cold_shift = j["cold_shift"].get<double>();
        if (!std::isfinite(e.cold_shift)) throw std::runtime_error("'cold_shift' is not finite");
      }
    } catch (const std::exception& ex) {
      r.fail(
          fmt::format("root attribute 'ranking' must be a JSON object with 'missing' (scored, renormalise or "
                      "cold_weights, then with 'cold_weights') "
                      "and a finite 'cold_shift': {}",
                      ex.what()));
    }
  }
}

void read_attributes(Reader& r, ExportData& e) {
  read_identity(r, e);
  read_spec(r, e);
  read_event_types(r, e);
  read_fusion(r, e);
  for (const auto& [key, field] : kProvenance) e.*field = r.attr_string_or_empty(key);
}

void read_items(Reader& r, ExportData& e) {
  const auto I = static_cast<std::uint64_t>(e.num_items);
  const auto d = static_cast<std::uint64_t>(e.dim);
  e.item_ids = r.strings("items/ids", I);
  e.item_text = r.strings("items/text", I);
  e.item_category = r.strings("items/category", I);
  e.item_cold = r.read<std::uint8_t>("items/cold", {I}, "one flag per item");
  for (std::size_t i = 0; i < e.item_cold.size(); ++i) {
    if (e.item_cold[i] > 1)
      r.fail(fmt::format("dataset 'items/cold' value {} is {}, expected 0 or 1", i, e.item_cold[i]));
  }
  e.item_popularity = r.read<std::int64_t>("items/popularity", {I}, "one count per item");
  for (std::size_t i = 0; i < e.item_popularity.size(); ++i) {
    if (e.item_popularity[i] < 0) {
      r.fail(
          fmt::format("dataset 'items/popularity' value {} is {}, counts are >= 0", i, e.item_popularity[i]));
    }
  }
  e.item_vectors = r.read<float>("items/vectors", {I, d}, "[num_items, dim]");
  r.check_finite("items/vectors", e.item_vectors);
  e.item_keys = r.read<float>("items/keys", {I, d}, "[num_items, dim]");
  r.check_finite("items/keys", e.item_keys);
  e.hour_counts =
      r.read<std::int32_t>("items/hour_counts", {I, static_cast<std::uint64_t>(kHours)}, "[num_items, 24]");
  for (std::size_t i = 0; i < e.hour_counts.size(); ++i) {
    if (e.hour_counts[i] < 0) {
      r.fail(fmt::format("dataset 'items/hour_counts' value [{}, {}] is {}, counts are >= 0", i / kHours,
                         i % kHours, e.hour_counts[i]));
    }
  }
}

void read_users(Reader& r, ExportData& e) {
  const auto U = static_cast<std::uint64_t>(e.num_users);
  const auto d = static_cast<std::uint64_t>(e.dim);
  e.user_ids = r.strings("users/ids", U);
  e.user_vectors = r.read<float>("users/vectors", {U, d}, "[num_users, dim]");
  r.check_finite("users/vectors", e.user_vectors);
  e.history_offsets = r.read<std::int64_t>("users/history_offsets", {U + 1}, "num_users + 1 CSR offsets");
  const auto items_shape = r.shape("users/history_items");
  if (items_shape.size() != 1) {
    r.fail(fmt::format("dataset 'users/history_items' must be 1-dimensional, has shape {}",
                       dims_str(items_shape)));
  }
  const std::uint64_t E = items_shape[0];
  if (e.history_offsets[0] != 0) {
    r.fail(
        fmt::format("dataset 'users/history_offsets' must start at 0, starts at {}", e.history_offsets[0]));
  }
  for (std::size_t u = 1; u < e.history_offsets.size(); ++u) {
    if (e.history_offsets[u] < e.history_offsets[u - 1]) {
      r.fail(fmt::format("dataset 'users/history_offsets' is not monotone: entry {} is {} after {}", u,
                         e.history_offsets[u], e.history_offsets[u - 1]));
    }
  }
  if (static_cast<std::uint64_t>(e.history_offsets.back()) != E) {
    r.fail(fmt::format("dataset 'users/history_offsets' ends at {} but 'users/history_items' holds {} events",
                       e.history_offsets.back(), E));
  }
  e.history_items = r.read<std::int32_t>("users/history_items", {E}, "one item per event");
  for (std::size_t j = 0; j < e.history_items.size(); ++j) {
    if (e.history_items[j] < 0 || e.history_items[j] >= e.num_items) {
      r.fail(fmt::format("dataset 'users/history_items' value {} is {}, not an item index in [0, {})", j,
                         e.history_items[j], e.num_items));
    }
  }
  if (r.file().exists("users/history_times")) {
    e.history_times = r.read<std::int64_t>("users/history_times", {E}, "one time per event");
  }
  if (e.ranker_profile != 0) {
    e.user_profiles = r.read<float>("users/profile_vectors", {U, d}, "[num_users, dim]");
    r.check_finite("users/profile_vectors", e.user_profiles);
    e.user_has_profile = r.read<std::uint8_t>("users/has_profile", {U}, "a 0/1 flag per user");
    for (std::size_t u = 0; u < e.user_has_profile.size(); ++u) {
      if (e.user_has_profile[u] > 1)
        r.fail(
            fmt::format("dataset 'users/has_profile' value {} is {}, not 0 or 1", u, e.user_has_profile[u]));
    }
  }
  const auto C = static_cast<std::uint64_t>(e.ranker_context_columns.size());
  for (const auto& name : e.ranker_context_columns) {
    const std::string values = "context/" + name + "/values";
    const auto n = r.shape(values + "/offsets");
    if (n.size() != 1 || n[0] < 1 || n[0] > (std::uint64_t{1} << 31))
      r.fail(fmt::format("dataset '{}/offsets' must hold 1 to 2^31 offsets", values));
    e.context_values.push_back(r.strings(values, n[0] - 1));
  }
  if (C > 0) {
    e.history_context = r.read<std::int32_t>("users/history_context", {E, C}, "a code per event and column");
    for (std::size_t j = 0; j < e.history_context.size(); ++j) {
      const std::int32_t code = e.history_context[j];
      const auto& values = e.context_values[j % C];
      if (code < -1 || code >= static_cast<std::int64_t>(values.size())) {
        r.fail(fmt::format(
            "dataset 'users/history_context' value [{}, {}] is {}, not -1 or a code of its {} values", j / C,
            j % C, code, values.size()));
      }
    }
  }
  e.history_types = r.read<std::uint8_t>("users/history_types", {E}, "one event type per event");
  for (std::size_t j = 0; j < e.history_types.size(); ++j) {
    if (e.history_types[j] >= e.event_types.size()) {
      r.fail(fmt::format("dataset 'users/history_types' value {} is {}, but 'event_types' has {} types", j,
                         e.history_types[j], e.event_types.size()));
    }
  }
}

void read_vocab(Reader& r, ExportData& e) {
  const auto vshape = r.shape("tokenizer/vocab/offsets");
  if (vshape.size() != 1 || vshape[0] < 1) r.fail("dataset 'tokenizer/vocab/offsets' must be 1-dimensional");
  e.vocab = r.strings("tokenizer/vocab", vshape[0] - 1);
}

void read_tfidf(Reader& r, ExportData& e) {
  if (!r.file().exists("tfidf/offsets")) return;
  TfidfMatrix m;
  m.num_terms = static_cast<std::int32_t>(e.vocab.size());
  m.offsets =
      r.read<std::int64_t>("tfidf/offsets", {static_cast<std::uint64_t>(e.num_items) + 1}, "num_items + 1");
  const auto tshape = r.shape("tfidf/terms");
  if (tshape.size() != 1) r.fail("dataset 'tfidf/terms' must be 1-dimensional");
  m.terms = r.read<std::int32_t>("tfidf/terms", tshape, "one term id per entry");
  m.weights = r.read<float>("tfidf/weights", tshape, "the shape of 'tfidf/terms'");
  r.check_finite("tfidf/weights", m.weights);
  if (r.file().exists("tfidf/idf")) {  // absent in exports written before it was stored
    m.idf = r.read<double>("tfidf/idf", {static_cast<std::uint64_t>(e.vocab.size())},
                           "one weight per token of 'tokenizer/vocab'");
    for (std::size_t t = 0; t < m.idf.size(); ++t) {
      if (!std::isfinite(m.idf[t]) || m.idf[t] < 0 || m.idf[t] > kMaxAbs) {
        r.fail(
            fmt::format("dataset 'tfidf/idf' value {} is {} (weights must be finite and >= 0)", t, m.idf[t]));
      }
    }
  }
  if (m.offsets.front() != 0 || m.offsets.back() != static_cast<std::int64_t>(m.terms.size())) {
    r.fail(fmt::format("dataset 'tfidf/offsets' must run from 0 to {} (the entries of 'tfidf/terms')",
                       m.terms.size()));
  }
  for (std::size_t j = 1; j < m.offsets.size(); ++j) {
    if (m.offsets[j] < m.offsets[j - 1])
      r.fail(fmt::format("dataset 'tfidf/offsets' is not monotone at entry {}", j));
  }
  try {
    e.tfidf =
        std::make_shared<const TfidfIndex>(std::move(m));  // checks the terms: ascending, in the vocabulary
  } catch (const Error& ex) {
    r.fail(fmt::format("datasets 'tfidf/': {}", ex.what()));
  }
}

void read_cf(Reader& r, ExportData& e) {
  const auto shape = r.shape("cf/neighbours");
  if (shape.size() != 2 || shape[0] != static_cast<std::uint64_t>(e.num_items) || shape[1] > kMaxNeighbours) {
    r.fail(fmt::format("dataset 'cf/neighbours' has shape {}, expected [{}, K] with K <= {}", dims_str(shape),
                       e.num_items, kMaxNeighbours));
  }
  e.cf_k = static_cast<std::int64_t>(shape[1]);
  e.cf_neighbours = r.read<std::int32_t>("cf/neighbours", shape, "[num_items, K]");
  e.cf_similarity = r.read<float>("cf/similarity", shape, "the shape of 'cf/neighbours'");
  r.check_finite("cf/similarity", e.cf_similarity);
  for (std::size_t j = 0; j < e.cf_neighbours.size(); ++j) {
    const std::int32_t n = e.cf_neighbours[j];
    const auto row = static_cast<std::int64_t>(j) / std::max<std::int64_t>(e.cf_k, 1);
    if (n < -1 || n >= e.num_items) {
      r.fail(fmt::format("dataset 'cf/neighbours' value [{}, {}] is {}, not an item index in [0, {}) or -1",
                         row, static_cast<std::int64_t>(j) % e.cf_k, n, e.num_items));
    }
    if (n == -1 && e.cf_similarity[j] != 0.0f) {
      r.fail(fmt::format("dataset 'cf/similarity' value [{}, {}] is {} where the neighbour is -1 (must be 0)",
                         row, static_cast<std::int64_t>(j) % e.cf_k, e.cf_similarity[j]));
    }
  }
}

void read_tower(Reader& r, ExportData& e) {
  UserTower tower{nullptr};
  try {
    tower = UserTower(export_tower_options(e));
  } catch (const std::exception& ex) {
    r.fail(fmt::format("cannot build the user tower from the root attributes: {}", ex.what()));
  }
  const std::string extra = fmt::format("ranker/layers.{}.self_attn.in_proj_weight", e.ranker_layers);
  if (r.file().exists(extra)) {
    r.fail(
        fmt::format("dataset '{}' exists but root attribute 'ranker_layers' is {}", extra, e.ranker_layers));
  }
  if (e.ranker_pooling != "attention" && r.file().exists("ranker/query")) {
    r.fail(fmt::format(
        "dataset 'ranker/query' (attention pooling) exists but root attribute 'ranker_pooling' is '{}'",
        e.ranker_pooling));
  }
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : tower->named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : tower->named_buffers()) tensors.emplace_back(b.key(), b.value());
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : tensors) {
    const std::string key = "ranker/" + name;
    if (!r.file().exists(key))
      r.fail(fmt::format("user tower tensor '{}' is missing (dataset '{}')", name, key));
    std::vector<std::uint64_t> want(t.sizes().begin(), t.sizes().end());
    const auto got = r.shape(key);
    if (got != want) {
      r.fail(fmt::format("user tower tensor '{}' (dataset '{}') has shape {}, the tower expects {}", name,
                         key, dims_str(got), dims_str(want)));
    }
    std::vector<float> values = r.read<float>(key, want, "the tower's tensor shape");
    r.check_finite(key, values);
    t.copy_(torch::from_blob(values.data(), t.sizes(), torch::kFloat).to(t.scalar_type()));
  }
  tower->eval();
  e.tower = tower.ptr();
}

void build_indexes(Reader& r, ExportData& e) {
  e.item_index.reserve(e.item_ids.size());
  for (std::size_t i = 0; i < e.item_ids.size(); ++i) {
    if (!e.item_index.emplace(e.item_ids[i], static_cast<std::int32_t>(i)).second) {
      r.fail(fmt::format("dataset 'items/ids' holds '{}' twice (items {} and {}); ids must be unique",
                         e.item_ids[i], e.item_index[e.item_ids[i]], i));
    }
  }
  e.user_index.reserve(e.user_ids.size());
  for (std::size_t u = 0; u < e.user_ids.size(); ++u) {
    if (!e.user_index.emplace(e.user_ids[u], static_cast<std::int32_t>(u)).second) {
      r.fail(fmt::format("dataset 'users/ids' holds '{}' twice (users {} and {}); ids must be unique",
                         e.user_ids[u], e.user_index[e.user_ids[u]], u));
    }
  }
  e.categories = e.item_category;
  std::sort(e.categories.begin(), e.categories.end());
  e.categories.erase(std::unique(e.categories.begin(), e.categories.end()), e.categories.end());
  e.item_category_code.resize(e.item_category.size());
  for (std::size_t i = 0; i < e.item_category.size(); ++i)
    e.item_category_code[i] = e.find_category(e.item_category[i]);
}

}  // namespace

std::int32_t ExportData::find_item(const std::string& id) const {
  auto it = item_index.find(id);
  return it == item_index.end() ? -1 : it->second;
}

std::int32_t ExportData::find_user(const std::string& id) const {
  auto it = user_index.find(id);
  return it == user_index.end() ? -1 : it->second;
}

std::int32_t ExportData::find_category(const std::string& category) const {
  auto it = std::lower_bound(categories.begin(), categories.end(), category);
  if (it == categories.end() || *it != category) return -1;
  return static_cast<std::int32_t>(it - categories.begin());
}

namespace {

/// The tables' sizes agree with the item and user ids (a writer's bug otherwise).
void check_export_sizes(const ExportData& e) {
  const auto I = static_cast<std::uint64_t>(e.item_ids.size());
  const auto U = static_cast<std::uint64_t>(e.user_ids.size());
  const auto d = static_cast<std::uint64_t>(e.dim);
  const auto K = static_cast<std::uint64_t>(e.cf_k);
  const std::uint64_t E = e.history_items.size();
  LLMREC_CHECK(e.dim > 0 && e.tower != nullptr, "export: dim {} and a user tower are needed", e.dim);
  LLMREC_CHECK(e.item_text.size() == I && e.item_category.size() == I && e.item_cold.size() == I &&
                   e.item_popularity.size() == I && e.item_vectors.size() == I * d &&
                   e.item_keys.size() == I * d && e.hour_counts.size() == I * kHours &&
                   e.cf_neighbours.size() == I * K && e.cf_similarity.size() == I * K,
               "export: the item tables disagree with the {} item ids", I);
  LLMREC_CHECK(
      e.user_vectors.size() == U * d && e.history_offsets.size() == U + 1 &&
          static_cast<std::uint64_t>(e.history_offsets.back()) == E && e.history_types.size() == E &&
          (e.history_times.empty() || e.history_times.size() == E) &&
          e.context_values.size() == e.ranker_context_columns.size() &&
          e.history_context.size() == E * e.ranker_context_columns.size() &&
          (e.ranker_profile == 0 || (e.user_profiles.size() == U * d && e.user_has_profile.size() == U)),
      "export: the user tables disagree with the {} user ids", U);
  LLMREC_CHECK(e.tfidf == nullptr || e.tfidf->matrix().num_items() == static_cast<std::int64_t>(I),
               "export: TF-IDF rows for {} items, the export has {}",
               e.tfidf ? e.tfidf->matrix().num_items() : 0, I);
  LLMREC_CHECK(
      e.tfidf == nullptr || e.tfidf->matrix().idf.empty() || e.tfidf->matrix().idf.size() == e.vocab.size(),
      "export: {} TF-IDF idf weights for a vocabulary of {} tokens",
      e.tfidf ? e.tfidf->matrix().idf.size() : 0, e.vocab.size());
}

/// The root attributes: format, version, sizes, the user tower's spec, provenance, ranking.
void write_root_attributes(h5::File& f, const ExportData& e) {
  f.set_attr("/", "format", kExportFormat);
  f.set_attr("/", "version", kExportVersion);
  f.set_attr("/", "score", e.score);
  f.set_attr("/", "num_items", static_cast<std::int64_t>(e.item_ids.size()));
  f.set_attr("/", "num_users", static_cast<std::int64_t>(e.user_ids.size()));
  for (const IntAttribute& a : kIntAttributes) f.set_attr("/", a.key, e.*a.field);
  for (const auto& [key, field] : kSpecStrings) f.set_attr("/", key, e.*field);
  for (const auto& [key, field] : kNameLists) f.set_attr("/", key, nlohmann::json(e.*field).dump());
  for (const auto& [key, field] : kProvenance) f.set_attr("/", key, e.*field);
  f.set_attr("/", "event_types", nlohmann::json(e.event_types).dump());
  f.set_attr("/", "fusion", nlohmann::json(e.fusion).dump());
  f.set_attr("/", "ranking", e.ranking);
  if (e.user_ids_scheme == kPseudonymScheme) f.set_attr("/", "pseudonym_check", e.pseudonym_check);
}

}  // namespace

void write_export_file(const std::string& path, const ExportData& e) {
  check_export_sizes(e);
  const auto I = static_cast<std::uint64_t>(e.item_ids.size());
  const auto U = static_cast<std::uint64_t>(e.user_ids.size());
  const auto d = static_cast<std::uint64_t>(e.dim);
  const auto K = static_cast<std::uint64_t>(e.cf_k);
  auto f = h5::File::create(path);
  write_root_attributes(f, e);

  f.write_strings("items/ids", e.item_ids);
  f.write_strings("items/text", e.item_text);
  f.write_strings("items/category", e.item_category);
  f.write("items/cold", e.item_cold);
  f.write("items/popularity", e.item_popularity);
  f.write<float>("items/vectors", e.item_vectors.data(), {I, d});
  f.write<float>("items/keys", e.item_keys.data(), {I, d});
  f.write<std::int32_t>("items/hour_counts", e.hour_counts.data(), {I, static_cast<std::uint64_t>(kHours)});

  f.write_strings("users/ids", e.user_ids);
  f.write<float>("users/vectors", e.user_vectors.data(), {U, d});
  f.write("users/history_offsets", e.history_offsets);
  f.write("users/history_items", e.history_items);
  f.write("users/history_types", e.history_types);
  if (!e.history_times.empty()) f.write("users/history_times", e.history_times);
  if (e.ranker_profile != 0) {
    f.write<float>("users/profile_vectors", e.user_profiles.data(), {U, d});
    f.write("users/has_profile", e.user_has_profile);
  }
  if (!e.ranker_context_columns.empty()) {
    const auto C = static_cast<std::uint64_t>(e.ranker_context_columns.size());
    f.write<std::int32_t>("users/history_context", e.history_context.data(),
                          {static_cast<std::uint64_t>(e.history_items.size()), C});
    for (std::size_t c = 0; c < e.ranker_context_columns.size(); ++c)
      f.write_strings("context/" + e.ranker_context_columns[c] + "/values", e.context_values[c]);
  }

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : e.tower->named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : e.tower->named_buffers()) tensors.emplace_back(b.key(), b.value());
  for (const auto& [name, t] : tensors) {
    torch::Tensor c = t.detach().cpu().to(torch::kFloat).contiguous();
    f.write<float>("ranker/" + name, c.data_ptr<float>(), {c.sizes().begin(), c.sizes().end()});
  }

  f.write<std::int32_t>("cf/neighbours", e.cf_neighbours.data(), {I, K});
  f.write<float>("cf/similarity", e.cf_similarity.data(), {I, K});

  f.write_strings("tokenizer/vocab", e.vocab);
  if (e.tfidf != nullptr) {
    const TfidfMatrix& m = e.tfidf->matrix();
    f.write("tfidf/offsets", m.offsets);
    f.write("tfidf/terms", m.terms);
    f.write<float>("tfidf/weights", m.weights.data(), {static_cast<std::uint64_t>(m.weights.size())});
    if (!m.idf.empty()) f.write("tfidf/idf", m.idf);
  }
  f.commit();
}

UserTowerOptions export_tower_options(const ExportData& e) {
  return UserTowerOptions(e.dim, e.history)
      .heads(e.ranker_heads)
      .layers(e.ranker_layers)
      .ff_dim(e.ranker_ff_dim)
      .activation(e.ranker_activation)
      .pooling(e.ranker_pooling)
      .context_sizes(e.context_spec().sizes())
      .profile(e.ranker_profile != 0);
}

ContextSpec ExportData::context_spec() const {
  ContextSpec spec;
  spec.time = parse_time_features(ranker_time_features);
  for (const auto& values : context_values)
    spec.column_values.push_back(static_cast<std::int64_t>(values.size()));
  return spec;
}

void export_set_tower(ExportData& e, std::shared_ptr<UserTowerImpl> tower) {
  LLMREC_CHECK(tower != nullptr, "export: no user tower");
  const UserTowerOptions& o = tower->options;
  LLMREC_CHECK(o.dim() == e.dim && o.history() == e.history,
               "export: a tower of dim {}, history {} for an export of dim {}, history {}", o.dim(),
               o.history(), e.dim, e.history);
  e.ranker_heads = o.heads();
  e.ranker_layers = o.layers();
  e.ranker_ff_dim = o.ff_dim();
  e.ranker_pooling = o.pooling();
  e.ranker_activation = o.activation();
  e.ranker_profile = o.profile() ? 1 : 0;
  LLMREC_CHECK(
      e.context_spec().sizes() == o.context_sizes(),
      "export: the tower's context features do not match ranker_time_features [{}] and the values of "
      "ranker_context_columns [{}]",
      fmt::join(e.ranker_time_features, ", "), fmt::join(e.ranker_context_columns, ", "));
  e.tower = std::move(tower);
}

std::shared_ptr<const ExportData> read_export(const std::string& path) {
  auto e = std::make_shared<ExportData>();
  e->path = path;
  try {
    Reader r(path);
    read_attributes(r, *e);
    read_items(r, *e);
    read_users(r, *e);
    read_cf(r, *e);
    read_vocab(r, *e);
    read_tfidf(r, *e);
    read_tower(r, *e);
    build_indexes(r, *e);
  } catch (const IoError&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw IoError(fmt::format("{}: out of memory while loading the export", path));
  } catch (const std::exception& ex) {
    throw IoError(fmt::format("{}: cannot load the export: {}", path, ex.what()));
  }
  return e;
}

}  // namespace llmrec
