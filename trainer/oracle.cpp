#include "trainer/oracle.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "data/csv.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

/// Interns names as 0, 1, 2, ... in order of first appearance.
struct Names {
  std::map<std::string, int> ids;
  int get(const std::string& name) { return ids.emplace(name, static_cast<int>(ids.size())).first->second; }
  int size() const { return static_cast<int>(ids.size()); }
};

/// A CSV file with a header, read row by row with named columns; every
/// problem is an IoError naming file:line and the column.
class LatentCsv {
 public:
  LatentCsv(const std::string& path, const std::vector<std::string>& required)
      : reader_(path, ','), path_(path) {
    std::string reason;
    if (reader_.next(header_, line_, reason) != CsvReader::Status::kRecord) {
      throw IoError(fmt::format("{}:1: no header row{}", path, reason.empty() ? "" : " (" + reason + ")"));
    }
    for (const auto& col : required) {
      auto it = std::find(header_.begin(), header_.end(), col);
      if (it == header_.end()) {
        throw IoError(
            fmt::format("{}:1: no column '{}' (written by `llmrec synth` of this version: generate the "
                        "shop again)",
                        path, col));
      }
      index_[col] = static_cast<std::size_t>(it - header_.begin());
    }
  }
  /// Next data row; false at the end.
  bool next() {
    std::string reason;
    switch (reader_.next(fields_, line_, reason)) {
      case CsvReader::Status::kEnd: return false;
      case CsvReader::Status::kMalformed:
        throw IoError(fmt::format("{}:{}: malformed row: {}", path_, line_, reason));
      case CsvReader::Status::kRecord: break;
    }
    if (fields_.size() != header_.size()) {
      throw IoError(
          fmt::format("{}:{}: {} fields, the header has {}", path_, line_, fields_.size(), header_.size()));
    }
    return true;
  }
  const std::string& text(const std::string& col) const { return fields_[index_.at(col)]; }
  int integer(const std::string& col, int lo, int hi) const {
    const std::string& s = text(col);
    int v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) {
      throw IoError(fmt::format("{}:{}: column '{}' is '{}', expected an integer in [{}, {}]", path_, line_,
                                col, s, lo, hi));
    }
    return v;
  }
  double positive(const std::string& col) const {
    const std::string& s = text(col);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v <= 0) {
      throw IoError(
          fmt::format("{}:{}: column '{}' is '{}', expected a positive number", path_, line_, col, s));
    }
    return v;
  }
  /// ';'-separated list of names (at least one).
  std::vector<std::string> list(const std::string& col) const {
    std::vector<std::string> out;
    std::stringstream ss(text(col));
    std::string part;
    while (std::getline(ss, part, ';')) {
      if (part.empty())
        throw IoError(fmt::format("{}:{}: column '{}' has an empty entry", path_, line_, col));
      out.push_back(part);
    }
    if (out.empty()) throw IoError(fmt::format("{}:{}: column '{}' is empty", path_, line_, col));
    return out;
  }
  std::int64_t line() const { return line_; }
  const std::string& path() const { return path_; }

 private:
  CsvReader reader_;
  std::string path_;
  std::vector<std::string> header_, fields_;
  std::map<std::string, std::size_t> index_;
  std::int64_t line_ = 0;
};

double json_number(const nlohmann::json& j, const std::string& path, const std::vector<std::string>& keys) {
  const nlohmann::json* at = &j;
  std::string name;
  for (const auto& k : keys) {
    name += (name.empty() ? "" : ".") + k;
    if (!at->is_object() || !at->contains(k)) throw IoError(fmt::format("{}: missing key '{}'", path, name));
    at = &(*at)[k];
  }
  if (!at->is_number())
    throw IoError(fmt::format("{}: key '{}' is {}, expected a number", path, name, at->dump()));
  return at->get<double>();
}

constexpr int kMaxBrand = 1 << 24;
constexpr int kMaxBand = 1000;

}  // namespace

double SynthTruth::match(const User& u, const Item& i) const {
  auto has = [](const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); };
  return w_leaf * has(u.leaves, i.leaf) + w_department * has(u.departments, i.department) +
         w_brand * has(u.brands, i.brand) + w_style * has(u.styles, i.style) +
         w_price_band_distance * std::abs(i.price_band - u.price_band);
}

namespace {

/// The category names met so far (leaves, departments, styles), numbered.
struct LatentNames {
  Names departments, leaves, styles;
};

void read_latent_items(const std::string& dir, const std::string& json_path, std::int64_t n_items,
                       LatentNames& names, SynthTruth& t) {
  std::unordered_map<std::string, std::int64_t> seen;
  LatentCsv csv((fs::path(dir) / "latent_items.csv").string(),
                {"item_id", "department", "leaf", "brand_id", "price_band", "style", "popularity", "cold"});
  while (csv.next()) {
    SynthTruth::Item it;
    it.id = csv.text("item_id");
    if (!seen.emplace(it.id, csv.line()).second) {
      throw IoError(fmt::format("{}:{}: item '{}' again (first on line {})", csv.path(), csv.line(), it.id,
                                seen[it.id]));
    }
    it.department = names.departments.get(csv.text("department"));
    it.leaf = names.leaves.get(csv.text("leaf"));
    it.category = csv.text("department") + " > " + csv.text("leaf");
    it.brand = csv.integer("brand_id", 0, kMaxBrand);
    it.price_band = csv.integer("price_band", 0, kMaxBand);
    it.style = names.styles.get(csv.text("style"));
    it.popularity = csv.positive("popularity");
    it.cold = csv.integer("cold", 0, 1) == 1;
    t.num_brands = std::max(t.num_brands, it.brand + 1);
    t.items.push_back(std::move(it));
  }
  if (static_cast<std::int64_t>(t.items.size()) != n_items) {
    throw IoError(fmt::format("{} has {} items but {} says {}: the files come from different runs",
                              csv.path(), t.items.size(), json_path, n_items));
  }
}

void read_latent_users(const std::string& dir, const std::string& json_path, std::int64_t n_users,
                       LatentNames& names, SynthTruth& t) {
  std::unordered_map<std::string, std::int64_t> seen;
  LatentCsv csv((fs::path(dir) / "latent_users.csv").string(),
                {"user_id", "leaves", "departments", "brand_ids", "styles", "price_band"});
  while (csv.next()) {
    SynthTruth::User u;
    u.id = csv.text("user_id");
    if (!seen.emplace(u.id, csv.line()).second) {
      throw IoError(
          fmt::format("{}:{}: user '{}' again (first on line {})", csv.path(), csv.line(), u.id, seen[u.id]));
    }
    for (const auto& s : csv.list("leaves")) u.leaves.push_back(names.leaves.get(s));
    for (const auto& s : csv.list("departments")) u.departments.push_back(names.departments.get(s));
    for (const auto& s : csv.list("styles")) u.styles.push_back(names.styles.get(s));
    for (const auto& s : csv.list("brand_ids")) {
      int b = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), b);
      if (ec != std::errc() || p != s.data() + s.size() || b < 0 || b > kMaxBrand) {
        throw IoError(fmt::format("{}:{}: column 'brand_ids' has '{}', expected integers in [0, {}]",
                                  csv.path(), csv.line(), s, kMaxBrand));
      }
      u.brands.push_back(b);
    }
    u.price_band = csv.integer("price_band", 0, kMaxBand);
    t.users.push_back(std::move(u));
  }
  if (static_cast<std::int64_t>(t.users.size()) != n_users) {
    throw IoError(fmt::format("{} has {} users but {} says {}: the files come from different runs",
                              csv.path(), t.users.size(), json_path, n_users));
  }
}

}  // namespace

SynthTruth read_synth_truth(const std::string& dir) {
  SynthTruth t;
  t.dir = dir;
  const std::string json_path = (fs::path(dir) / "synth.json").string();
  std::ifstream in(json_path);
  if (!in)
    throw IoError(fmt::format("cannot open {} (eval.oracle_dir must be a `llmrec synth` output)", json_path));
  nlohmann::json meta = nlohmann::json::parse(in, nullptr, false);
  if (meta.is_discarded()) throw IoError(fmt::format("{}: not valid JSON", json_path));
  t.beta = json_number(meta, json_path, {"beta"});
  t.cut_time = static_cast<std::int64_t>(json_number(meta, json_path, {"cut_time"}));
  t.w_leaf = json_number(meta, json_path, {"match", "leaf"});
  t.w_department = json_number(meta, json_path, {"match", "department"});
  t.w_brand = json_number(meta, json_path, {"match", "brand"});
  t.w_style = json_number(meta, json_path, {"match", "style"});
  t.w_price_band_distance = json_number(meta, json_path, {"match", "price_band_distance"});
  const auto n_items = static_cast<std::int64_t>(json_number(meta, json_path, {"counts", "items"}));
  const auto n_users = static_cast<std::int64_t>(json_number(meta, json_path, {"counts", "users"}));

  LatentNames names;
  read_latent_items(dir, json_path, n_items, names, t);
  read_latent_users(dir, json_path, n_users, names, t);
  t.num_leaves = names.leaves.size();
  t.num_departments = names.departments.size();
  t.num_styles = names.styles.size();
  return t;
}

// ---------------------------------------------------------------- scorer

OracleScorer::OracleScorer(SynthTruth truth, const ItemTable& items, const std::vector<std::string>& user_ids,
                           const std::string& dataset_path)
    : truth_(std::move(truth)) {
  std::unordered_map<std::string, std::int32_t> item_of, user_of;
  for (std::size_t i = 0; i < truth_.items.size(); ++i)
    item_of.emplace(truth_.items[i].id, static_cast<std::int32_t>(i));
  for (std::size_t u = 0; u < truth_.users.size(); ++u)
    user_of.emplace(truth_.users[u].id, static_cast<std::int32_t>(u));
  const std::string hint =
      fmt::format("the dataset was not prepared from the synthetic shop in {} (eval.oracle_dir)", truth_.dir);
  for (std::size_t i = 0; i < items.ids.size(); ++i) {
    auto it = item_of.find(items.ids[i]);
    if (it == item_of.end()) {
      throw IoError(fmt::format("{}: item '{}' (dataset item {}) is not in latent_items.csv: {}",
                                dataset_path, items.ids[i], i, hint));
    }
    const SynthTruth::Item& latent = truth_.items[static_cast<std::size_t>(it->second)];
    if (i < items.categories.size() && !items.categories[i].empty() &&
        items.categories[i] != latent.category) {
      throw IoError(fmt::format("{}: item '{}' has category '{}' but latent_items.csv says '{}': {}",
                                dataset_path, items.ids[i], items.categories[i], latent.category, hint));
    }
    item_row_.push_back(it->second);
    log_pop_.push_back(truth_.beta * std::log(latent.popularity));
  }
  for (std::size_t u = 0; u < user_ids.size(); ++u) {
    auto it = user_of.find(user_ids[u]);
    if (it == user_of.end()) {
      throw IoError(fmt::format("{}: user '{}' (dataset user {}) is not in latent_users.csv: {}",
                                dataset_path, user_ids[u], u, hint));
    }
    user_row_.push_back(it->second);
  }
}

std::unique_ptr<OracleScorer> OracleScorer::open(const std::string& dir, const DatasetFile& file) {
  return std::make_unique<OracleScorer>(read_synth_truth(dir), file.read_items(), file.read_user_ids(),
                                        file.path());
}

nlohmann::json OracleScorer::params() const {
  return {{"synth_dir", truth_.dir},
          {"beta", truth_.beta},
          {"cut_time", truth_.cut_time},
          {"match",
           {{"leaf", truth_.w_leaf},
            {"department", truth_.w_department},
            {"brand", truth_.w_brand},
            {"style", truth_.w_style},
            {"price_band_distance", truth_.w_price_band_distance}}},
          {"score", "beta * ln(popularity) + match(user, item); -inf for cold items before cut_time"}};
}

at::Tensor OracleScorer::score(const ScoreRequest& request) {
  const auto n = static_cast<std::int64_t>(item_row_.size());
  at::Tensor out = at::empty({request.size(), n}, at::kFloat);
  const std::size_t num_users = user_row_.size();
  // Per-user lookup tables over the interned names.
  std::vector<std::uint8_t> leaf(static_cast<std::size_t>(truth_.num_leaves)),
      dep(static_cast<std::size_t>(truth_.num_departments)),
      style(static_cast<std::size_t>(truth_.num_styles)), brand(static_cast<std::size_t>(truth_.num_brands));
  constexpr float kNever = -std::numeric_limits<float>::infinity();
  for (std::int64_t b = 0; b < request.size(); ++b) {
    const std::int64_t user = request.users[static_cast<std::size_t>(b)];
    if (user < 0 || static_cast<std::size_t>(user) >= num_users) {
      throw Error(fmt::format("oracle: user {} is not a dataset user (0..{})", user, num_users));
    }
    const SynthTruth::User& u =
        truth_.users[static_cast<std::size_t>(user_row_[static_cast<std::size_t>(user)])];
    std::fill(leaf.begin(), leaf.end(), 0);
    std::fill(dep.begin(), dep.end(), 0);
    std::fill(style.begin(), style.end(), 0);
    std::fill(brand.begin(), brand.end(), 0);
    for (int x : u.leaves) leaf[static_cast<std::size_t>(x)] = 1;
    for (int x : u.departments) dep[static_cast<std::size_t>(x)] = 1;
    for (int x : u.styles) style[static_cast<std::size_t>(x)] = 1;
    for (int x : u.brands) {
      if (x < truth_.num_brands) brand[static_cast<std::size_t>(x)] = 1;  // else a brand without items here
    }
    const bool before_cut = request.query_times[static_cast<std::size_t>(b)] < truth_.cut_time;
    float* o = out.data_ptr<float>() + b * n;
    for (std::int64_t i = 0; i < n; ++i) {
      const SynthTruth::Item& it =
          truth_.items[static_cast<std::size_t>(item_row_[static_cast<std::size_t>(i)])];
      if (it.cold && before_cut) {
        o[i] = kNever;
        continue;
      }
      const double m = truth_.w_leaf * leaf[static_cast<std::size_t>(it.leaf)] +
                       truth_.w_department * dep[static_cast<std::size_t>(it.department)] +
                       truth_.w_brand * brand[static_cast<std::size_t>(it.brand)] +
                       truth_.w_style * style[static_cast<std::size_t>(it.style)] +
                       truth_.w_price_band_distance * std::abs(it.price_band - u.price_band);
      o[i] = static_cast<float>(log_pop_[static_cast<std::size_t>(i)] + m);
    }
  }
  return out;
}

}  // namespace llmrec
