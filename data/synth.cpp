#include "data/synth.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "common/error.h"
#include "common/random.h"
#include "data/csv.h"

namespace llmrec {
namespace {

struct Leaf {
  const char* department;
  const char* name;                  // category leaf, also the noun of titles
  std::array<const char*, 4> words;  // descriptive words of the leaf
  double base_price;
};

// 10 departments x 5 leaves. Words are ordinary English so that a
// pretrained uncased vocabulary covers them.
const std::array<Leaf, 50> kLeaves = {{
    {"electronics", "headphones", {"wireless", "noise", "bass", "earcup"}, 80},
    {"electronics", "smartphone", {"camera", "screen", "battery", "unlocked"}, 400},
    {"electronics", "laptop", {"processor", "keyboard", "display", "memory"}, 900},
    {"electronics", "speaker", {"bluetooth", "sound", "portable", "waterproof"}, 60},
    {"electronics", "camera", {"lens", "zoom", "sensor", "tripod"}, 500},
    {"clothing", "jacket", {"warm", "hood", "zipper", "winter"}, 120},
    {"clothing", "jeans", {"denim", "slim", "stretch", "pocket"}, 60},
    {"clothing", "dress", {"summer", "floral", "sleeve", "party"}, 70},
    {"clothing", "sweater", {"wool", "knit", "cozy", "crew"}, 55},
    {"clothing", "shirt", {"cotton", "collar", "button", "office"}, 40},
    {"home", "lamp", {"light", "bulb", "desk", "shade"}, 45},
    {"home", "pillow", {"soft", "sleep", "memory", "cushion"}, 30},
    {"home", "blender", {"kitchen", "smoothie", "blade", "motor"}, 90},
    {"home", "cookware", {"pan", "skillet", "nonstick", "pot"}, 110},
    {"home", "rug", {"carpet", "floor", "woven", "living"}, 150},
    {"sports", "running shoes", {"cushion", "trail", "marathon", "grip"}, 110},
    {"sports", "yoga mat", {"stretch", "grip", "fitness", "thick"}, 35},
    {"sports", "bicycle", {"wheel", "gear", "frame", "mountain"}, 600},
    {"sports", "dumbbell", {"weight", "strength", "gym", "iron"}, 50},
    {"sports", "tent", {"camping", "outdoor", "shelter", "hiking"}, 200},
    {"beauty", "perfume", {"fragrance", "scent", "floral", "bottle"}, 75},
    {"beauty", "lipstick", {"matte", "color", "lasting", "lip"}, 20},
    {"beauty", "shampoo", {"hair", "repair", "volume", "natural"}, 15},
    {"beauty", "moisturizer", {"skin", "cream", "hydrating", "face"}, 30},
    {"beauty", "razor", {"shave", "blade", "smooth", "trimmer"}, 40},
    {"toys", "puzzle", {"pieces", "jigsaw", "family", "brain"}, 20},
    {"toys", "doll", {"play", "dress", "hair", "girls"}, 25},
    {"toys", "drone", {"flying", "remote", "camera", "propeller"}, 120},
    {"toys", "blocks", {"building", "bricks", "creative", "set"}, 40},
    {"toys", "board game", {"strategy", "cards", "dice", "players"}, 35},
    {"books", "novel", {"story", "mystery", "chapter", "author"}, 15},
    {"books", "cookbook", {"recipes", "baking", "dinner", "chef"}, 25},
    {"books", "biography", {"life", "history", "memoir", "famous"}, 20},
    {"books", "comic", {"hero", "illustrated", "series", "adventure"}, 12},
    {"books", "textbook", {"science", "lessons", "exercises", "edition"}, 80},
    {"garden", "hose", {"water", "spray", "nozzle", "hoses"}, 35},
    {"garden", "shovel", {"dig", "steel", "handle", "soil"}, 30},
    {"garden", "planter", {"pot", "flower", "ceramic", "plants"}, 25},
    {"garden", "grill", {"barbecue", "charcoal", "outdoor", "burner"}, 250},
    {"garden", "mower", {"lawn", "grass", "cutting", "engine"}, 300},
    {"automotive", "tire", {"tread", "wheel", "season", "road"}, 120},
    {"automotive", "car charger", {"usb", "fast", "vehicle", "socket"}, 20},
    {"automotive", "dash cam", {"recording", "video", "night", "parking"}, 90},
    {"automotive", "wiper", {"windshield", "rain", "blades", "clear"}, 25},
    {"automotive", "seat cover", {"seat", "protect", "fabric", "interior"}, 45},
    {"grocery", "coffee", {"beans", "roast", "aroma", "espresso"}, 15},
    {"grocery", "tea", {"green", "herbal", "leaves", "organic"}, 10},
    {"grocery", "chocolate", {"dark", "cocoa", "sweet", "bar"}, 8},
    {"grocery", "pasta", {"italian", "wheat", "noodles", "sauce"}, 6},
    {"grocery", "olive oil", {"virgin", "cold", "pressed", "bottle"}, 14},
}};
constexpr int kDepartments = 10;
constexpr int kLeavesPerDepartment = 5;

const std::array<const char*, 12> kStyles = {"classic",    "modern",       "vintage", "sporty",
                                             "minimalist", "rugged",       "elegant", "eco",
                                             "compact",    "professional", "playful", "smart"};
const std::array<const char*, 10> kColors = {"black", "white",  "red",   "blue", "green",
                                             "grey",  "silver", "brown", "pink", "yellow"};
const std::array<const char*, 8> kMaterials = {"steel",   "cotton", "wood",     "leather",
                                               "plastic", "glass",  "aluminum", "bamboo"};
const std::array<const char*, 5> kPriceBands = {"budget", "value", "mid", "premium", "luxury"};
const std::array<const char*, 20> kSyllables = {"nor", "vik", "zen", "tra", "lum", "ora", "kel",
                                                "dan", "mar", "sol", "vex", "ari", "tek", "bel",
                                                "cor", "fin", "gal", "hux", "jor", "pax"};
const std::array<const char*, 6> kAges = {"18-24", "25-34", "35-44", "45-54", "55-64", "65+"};
const std::array<const char*, 5> kRegions = {"north", "south", "east", "west", "central"};
const std::array<const char*, 4> kEvents = {"view", "click", "cart", "purchase"};
const std::array<double, 4> kEventShare = {0.50, 0.25, 0.15, 0.10};

constexpr double kMatchLeaf = 2.5;
constexpr double kMatchDepartment = 0.8;
constexpr double kMatchBrand = 1.2;
constexpr double kMatchStyle = 0.8;
constexpr double kMatchPrice = 0.5;
constexpr double kMatchMax = kMatchLeaf + kMatchDepartment + kMatchBrand + kMatchStyle;

/// Deterministic helpers on the raw mt19937_64 stream (the standard
/// distributions differ between library implementations).
struct Rng {
  std::mt19937_64 gen;
  explicit Rng(std::uint64_t seed) : gen(seed) {}
  double uniform() { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(uniform() * static_cast<double>(n)); }
  double normal() {
    double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  std::int64_t geometric(double mean) {  // >= 0, given mean
    if (mean <= 0) return 0;
    double p = 1.0 / (mean + 1.0);
    return static_cast<std::int64_t>(std::floor(std::log(std::max(uniform(), 1e-300)) / std::log(1.0 - p)));
  }
};

/// Walker's alias table: O(1) draws from a discrete distribution.
class AliasTable {
 public:
  explicit AliasTable(const std::vector<double>& weights) {
    const std::size_t n = weights.size();
    prob_.resize(n);
    alias_.resize(n);
    double total = std::accumulate(weights.begin(), weights.end(), 0.0);
    std::vector<double> scaled(n);
    std::vector<std::size_t> small, large;
    for (std::size_t i = 0; i < n; ++i) {
      scaled[i] = weights[i] * static_cast<double>(n) / total;
      (scaled[i] < 1.0 ? small : large).push_back(i);
    }
    while (!small.empty() && !large.empty()) {
      std::size_t s = small.back(), l = large.back();
      small.pop_back();
      prob_[s] = scaled[s];
      alias_[s] = l;
      scaled[l] -= 1.0 - scaled[s];
      if (scaled[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    for (auto i : small) prob_[i] = 1.0;
    for (auto i : large) prob_[i] = 1.0;
  }
  std::size_t draw(Rng& rng) const {
    std::size_t i = static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(prob_.size())));
    return rng.uniform() < prob_[i] ? i : alias_[i];
  }

 private:
  std::vector<double> prob_;
  std::vector<std::size_t> alias_;
};

struct Item {
  int leaf;
  int brand;
  int band;
  int style;
  int color;
  int material;
  double popularity;
  bool cold;
  double price;
};

struct User {
  std::vector<int> leaves;
  std::vector<int> departments;
  std::vector<int> brands;
  std::vector<int> styles;
  int band;
};

double match(const User& u, const Item& it) {
  auto has = [](const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); };
  return kMatchLeaf * has(u.leaves, it.leaf) +
         kMatchDepartment * has(u.departments, it.leaf / kLeavesPerDepartment) +
         kMatchBrand * has(u.brands, it.brand) + kMatchStyle * has(u.styles, it.style) -
         kMatchPrice * std::abs(it.band - u.band);
}

std::string capitalize(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

std::string iso_time(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string item_id(std::int64_t i) {
  return fmt::format("i{:06d}", i);
}
std::string user_id(std::int64_t u) {
  return fmt::format("u{:06d}", u);
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw IoError(fmt::format("cannot write {}", path.string()));
}

}  // namespace

SynthOptions SynthOptions::preset(const std::string& name) {
  SynthOptions o;
  if (name == "demo") return o;
  if (name == "bench-tiny") {
    o.items = 20000;
    o.users = 50000;
    return o;
  }
  if (name == "bench-small") {
    o.items = 100000;
    o.users = 200000;
    return o;
  }
  throw ConfigError(fmt::format("unknown synth size '{}': use demo, bench-tiny or bench-small", name));
}

namespace {

/// Brand names (from syllables) and the brands of each department (each
/// brand specialises in 1-3 departments).
struct Brands {
  std::vector<std::string> names;
  std::vector<std::vector<int>> of_department;
};

Brands draw_brands(const SynthOptions& o, Rng& rng) {
  // Brands: names from syllables, each specialised in 1-3 departments.
  const int n_brands = static_cast<int>(std::clamp<std::int64_t>(o.items / 50, 20, 2000));
  Brands out;
  std::vector<std::string>& brand_names = out.names;
  auto& brands_of_department = out.of_department;
  brands_of_department.resize(kDepartments);
  for (int b = 0; b < n_brands; ++b) {
    std::string name;
    int syll = 2 + static_cast<int>(rng.below(2));
    for (int s = 0; s < syll; ++s) name += kSyllables[static_cast<std::size_t>(rng.below(kSyllables.size()))];
    brand_names.push_back(capitalize(name));
    int n_dep = 1 + static_cast<int>(rng.below(3));
    for (int d = 0; d < n_dep; ++d)
      brands_of_department[static_cast<std::size_t>(rng.below(kDepartments))].push_back(b);
  }
  for (int d = 0; d < kDepartments; ++d) {
    if (brands_of_department[static_cast<std::size_t>(d)].empty())
      brands_of_department[static_cast<std::size_t>(d)].push_back(d % n_brands);
  }

  return out;
}

/// The items' attributes (Zipf popularity over a random rank, the cold
/// share), written as catalogue.csv and latent_items.csv under `dir`.
std::vector<Item> draw_items(const SynthOptions& o, Rng& rng, const Brands& brands,
                             const std::filesystem::path& dir, SynthSummary& summary) {
  const auto& brand_names = brands.names;
  const auto& brands_of_department = brands.of_department;
  // Items: attributes, Zipf popularity over a random rank, cold share.
  std::vector<Item> items(static_cast<std::size_t>(o.items));
  std::vector<std::int64_t> rank(static_cast<std::size_t>(o.items));
  std::iota(rank.begin(), rank.end(), 1);
  for (std::size_t i = rank.size(); i > 1; --i)
    std::swap(rank[i - 1], rank[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(i)))]);
  std::string catalogue = "item_id,title,description,category,brand,price,tags\n";
  // brand_id disambiguates brands that drew the same name; popularity is
  // written exactly (17 digits) so that the oracle reproduces the choice model.
  std::string latent_items = "item_id,department,leaf,brand,price_band,style,popularity,cold,brand_id\n";
  summary.items = o.items;
  for (std::int64_t i = 0; i < o.items; ++i) {
    Item& it = items[static_cast<std::size_t>(i)];
    it.leaf = static_cast<int>(rng.below(kLeaves.size()));
    const auto& dep_brands = brands_of_department[static_cast<std::size_t>(it.leaf / kLeavesPerDepartment)];
    it.brand = dep_brands[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(dep_brands.size())))];
    it.band = static_cast<int>(rng.below(kPriceBands.size()));
    it.style = static_cast<int>(rng.below(kStyles.size()));
    it.color = static_cast<int>(rng.below(kColors.size()));
    it.material = static_cast<int>(rng.below(kMaterials.size()));
    it.popularity = std::pow(static_cast<double>(rank[static_cast<std::size_t>(i)]), -o.zipf);
    it.cold = rng.uniform() < o.cold_share;
    summary.cold_items += it.cold;
    const Leaf& leaf = kLeaves[static_cast<std::size_t>(it.leaf)];
    it.price =
        std::round(leaf.base_price * std::pow(1.8, it.band - 2) * (0.85 + 0.3 * rng.uniform()) * 100) / 100;

    const std::string brand = brand_names[static_cast<std::size_t>(it.brand)];
    const char* w1 = leaf.words[static_cast<std::size_t>(rng.below(4))];
    const char* w2 = leaf.words[static_cast<std::size_t>(rng.below(4))];
    std::string title =
        fmt::format("{} {} {} {} {} {}{:03d}", brand, capitalize(kStyles[static_cast<std::size_t>(it.style)]),
                    capitalize(kColors[static_cast<std::size_t>(it.color)]), capitalize(w1),
                    capitalize(leaf.name), char('A' + it.leaf % 26), i % 1000);
    std::string description = fmt::format(
        "A {} {} {} from {}, made of {} in {}. {} and {} for {} lovers, {} range.",
        kStyles[static_cast<std::size_t>(it.style)], w2, leaf.name, brand,
        kMaterials[static_cast<std::size_t>(it.material)], kColors[static_cast<std::size_t>(it.color)],
        capitalize(w1), leaf.words[3], leaf.department, kPriceBands[static_cast<std::size_t>(it.band)]);
    std::string tags = fmt::format("{};{};{};{}", kStyles[static_cast<std::size_t>(it.style)],
                                   kColors[static_cast<std::size_t>(it.color)],
                                   kMaterials[static_cast<std::size_t>(it.material)], w2);
    std::string category = fmt::format("{} > {}", leaf.department, leaf.name);

    std::string row;
    for (const std::string& f :
         {item_id(i), title, description, category, brand, fmt::format("{:.2f}", it.price), tags}) {
      if (!row.empty()) row += ',';
      csv_append_field(row, f);
    }
    catalogue += row + "\n";
    latent_items += fmt::format("{},{},{},{},{},{},{:.17g},{},{}\n", item_id(i), leaf.department, leaf.name,
                                brand, it.band, kStyles[static_cast<std::size_t>(it.style)], it.popularity,
                                it.cold ? 1 : 0, it.brand);
  }
  write_file(dir / "catalogue.csv", catalogue);
  write_file(dir / "latent_items.csv", latent_items);

  return items;
}

/// A user's latent tastes: 1-3 leaves (later ones in the first leaf's
/// department 60% of the time), their departments, 1-2 liked brands of those
/// departments, 1-2 styles and a price band.
User draw_user(Rng& rng, const AliasTable& leaf_table, const Brands& brands) {
  const auto& brands_of_department = brands.of_department;
  User user;
  int n_leaves = 1 + static_cast<int>(rng.below(3));
  while (static_cast<int>(user.leaves.size()) < n_leaves) {
    // Later leaves stay in the first leaf's department 60% of the time.
    int leaf = static_cast<int>(leaf_table.draw(rng));
    if (!user.leaves.empty() && rng.uniform() < 0.6) {
      leaf = user.leaves[0] / kLeavesPerDepartment * kLeavesPerDepartment +
             static_cast<int>(rng.below(kLeavesPerDepartment));
    }
    if (std::find(user.leaves.begin(), user.leaves.end(), leaf) == user.leaves.end())
      user.leaves.push_back(leaf);
  }
  for (int leaf : user.leaves) {
    int dep = leaf / kLeavesPerDepartment;
    if (std::find(user.departments.begin(), user.departments.end(), dep) == user.departments.end())
      user.departments.push_back(dep);
  }
  int n_brands_liked = 1 + static_cast<int>(rng.below(2));
  for (int k = 0; k < n_brands_liked; ++k) {
    const auto& pool =
        brands_of_department[static_cast<std::size_t>(user.departments[static_cast<std::size_t>(
            rng.below(static_cast<std::int64_t>(user.departments.size())))])];
    user.brands.push_back(pool[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(pool.size())))]);
  }
  int n_styles = 1 + static_cast<int>(rng.below(2));
  for (int k = 0; k < n_styles; ++k) user.styles.push_back(static_cast<int>(rng.below(kStyles.size())));
  user.band = static_cast<int>(rng.below(kPriceBands.size()));

  return user;
}

/// The user's `n` event times: n-1 before the cut, the last one after it.
void draw_times(const SynthOptions& o, Rng& rng, const SynthSummary& summary, std::int64_t n,
                std::vector<std::int64_t>& times) {
  const std::int64_t span = static_cast<std::int64_t>(o.days) * 86400;
  times.resize(static_cast<std::size_t>(n));
  const std::int64_t before = summary.cut_time - o.start_time;
  for (std::int64_t k = 0; k + 1 < n; ++k)
    times[static_cast<std::size_t>(k)] = o.start_time + rng.below(before);
  std::sort(times.begin(), times.end() - 1);
  times.back() = summary.cut_time + rng.below(o.start_time + span - summary.cut_time);
}

/// One accepted item for a user: popularity^beta proposals, accepted with
/// exp(match - max); never a repeat, never a cold item before the cut. -1
/// when 100,000 proposals found none.
std::int64_t draw_pick(Rng& rng, const AliasTable& by_popularity, const std::vector<Item>& items,
                       const User& user, const std::vector<std::int64_t>& chosen, bool after_cut) {
  std::int64_t pick = -1;
  for (int attempt = 0; attempt < 100000 && pick < 0; ++attempt) {
    auto cand = static_cast<std::int64_t>(by_popularity.draw(rng));
    const Item& it = items[static_cast<std::size_t>(cand)];
    if (it.cold && !after_cut) continue;
    if (std::find(chosen.begin(), chosen.end(), cand) != chosen.end()) continue;
    if (rng.uniform() < std::exp(match(user, it) - kMatchMax)) pick = cand;
  }
  return pick;
}

/// The event type of a pick (kEventShare) and, for a rating event, a rating
/// around 3 + match / 2: "<event>,<rating>".
std::string draw_event(Rng& rng, const User& user, const Item& it) {
  double r = rng.uniform();
  std::size_t e = 0;
  while (e + 1 < kEventShare.size() && r >= kEventShare[e]) r -= kEventShare[e++];
  std::string rating;
  if (e == 3) {
    double score = 3.0 + 0.5 * match(user, it) + 0.7 * rng.normal();
    rating = std::to_string(static_cast<int>(std::clamp(std::round(score), 1.0, 5.0)));
  }
  return fmt::format("{},{}", kEvents[e], rating);
}

/// The user's latent row of latent_users.csv.
std::string latent_user_row(std::int64_t u, const User& user, const Brands& brands) {
  const auto& brand_names = brands.names;
  auto join = [](const std::vector<int>& v, auto name) {
    std::string s;
    for (int x : v) s += (s.empty() ? "" : ";") + name(x);
    return s;
  };
  return fmt::format(
      "{},{},{},{},{},{},{}\n", user_id(u),
      join(user.leaves, [](int l) { return std::string(kLeaves[static_cast<std::size_t>(l)].name); }),
      join(user.brands, [&](int b) { return brand_names[static_cast<std::size_t>(b)]; }),
      join(user.styles, [](int s) { return std::string(kStyles[static_cast<std::size_t>(s)]); }), user.band,
      join(user.brands, [](int b) { return std::to_string(b); }), join(user.departments, [](int d) {
        return std::string(kLeaves[static_cast<std::size_t>(d) * kLeavesPerDepartment].department);
      }));
}

constexpr double kProfileShare = 0.85;     ///< users with a row in users.csv
constexpr double kProfileLeaf = 0.6;       ///< each liked leaf stated
constexpr double kProfileNoise = 0.3;      ///< one leaf stated that is not liked
constexpr double kProfileStyle = 0.5;      ///< each liked style stated
constexpr double kProfileBrand = 0.3;      ///< each liked brand stated
constexpr double kProfilePriceBand = 0.5;  ///< the preferred price band stated

/// The user's row of users.csv ("" = no profile): an age band and a region
/// that carry no taste, and stated interests drawn from the latent tastes
/// (each liked leaf, style, brand and the price band with a probability
/// above) plus one leaf the user does not like (kProfileNoise).
std::string profile_row(Rng& rng, std::int64_t u, const User& user, const Brands& brands) {
  if (rng.uniform() >= kProfileShare) return "";
  std::vector<std::string> interests;
  for (int leaf : user.leaves)
    if (rng.uniform() < kProfileLeaf) interests.emplace_back(kLeaves[static_cast<std::size_t>(leaf)].name);
  if (rng.uniform() < kProfileNoise)
    interests.emplace_back(kLeaves[static_cast<std::size_t>(rng.below(kLeaves.size()))].name);
  for (int style : user.styles)
    if (rng.uniform() < kProfileStyle) interests.emplace_back(kStyles[static_cast<std::size_t>(style)]);
  for (int brand : user.brands)
    if (rng.uniform() < kProfileBrand) interests.push_back(brands.names[static_cast<std::size_t>(brand)]);
  std::string price;
  if (rng.uniform() < kProfilePriceBand) price = kPriceBands[static_cast<std::size_t>(user.band)];
  const char* age = kAges[static_cast<std::size_t>(rng.below(kAges.size()))];
  const char* region = kRegions[static_cast<std::size_t>(rng.below(kRegions.size()))];
  std::string stated;
  for (const std::string& x : interests) stated += (stated.empty() ? "" : " ") + x;
  return fmt::format("{},{},{},{},{}\n", user_id(u), age, region, stated, price);
}

nlohmann::json synth_meta(const SynthOptions& o, const SynthSummary& summary) {
  return {
      {"generator", "llmrec synth"},
      {"seed", o.seed},
      {"items", o.items},
      {"users", o.users},
      {"mean_history", o.mean_history},
      {"min_history", o.min_history},
      {"cold_share", o.cold_share},
      {"zipf", o.zipf},
      {"beta", o.beta},
      {"start_time", o.start_time},
      {"cut_time", summary.cut_time},
      {"cut_time_iso", iso_time(summary.cut_time)},
      {"days", o.days},
      {"match",
       {{"leaf", kMatchLeaf},
        {"department", kMatchDepartment},
        {"brand", kMatchBrand},
        {"style", kMatchStyle},
        {"price_band_distance", -kMatchPrice}}},
      {"choice", "P(item|user) ~ popularity^beta * exp(match), no repeats; cold items only after cut_time"},
      {"device",
       "per event, after the item: mobile with probability 0.85 - 0.15 x price band (0-4), else desktop"},
      {"counts",
       {{"items", summary.items},
        {"cold_items", summary.cold_items},
        {"users", summary.users},
        {"events", summary.events},
        {"cold_events", summary.cold_events}}},
  };
}

/// The device an event came from: cheaper items are bought on phones more
/// often (mobile with probability 0.85 - 0.15 x price band), so the device
/// of the moment a recommendation is for says something about what fits.
const char* draw_device(Rng& rng, const Item& it) {
  return rng.uniform() < 0.85 - 0.15 * it.band ? "mobile" : "desktop";
}

}  // namespace

SynthSummary write_synth_shop(const SynthOptions& o, const std::string& out_dir) {
  LLMREC_CHECK(o.items >= 10 && o.users >= 0, "synth needs at least 10 items and 0 users, got {} and {}",
               o.items, o.users);
  LLMREC_CHECK(o.min_history >= 2, "synth min_history must be at least 2, got {}", o.min_history);
  LLMREC_CHECK(o.cold_share >= 0 && o.cold_share < 0.9, "synth cold_share must be in [0, 0.9), got {}",
               o.cold_share);
  LLMREC_CHECK(o.mean_history >= o.min_history, "synth mean_history ({}) must be at least min_history ({})",
               o.mean_history, o.min_history);
  namespace fs = std::filesystem;
  fs::create_directories(out_dir);
  Rng rng(o.seed);
  const Brands brands = draw_brands(o, rng);
  SynthSummary summary;
  const std::vector<Item> items = draw_items(o, rng, brands, out_dir, summary);
  if (o.users == 0) return summary;  // catalogue only

  // Proposals come from popularity^beta; acceptance exp(match - max) makes
  // the draw exactly P ~ popularity^beta * exp(match).
  std::vector<double> proposal(items.size());
  std::vector<double> leaf_mass(kLeaves.size(), 0.0);
  for (std::size_t i = 0; i < items.size(); ++i) {
    proposal[i] = std::pow(items[i].popularity, o.beta);
    leaf_mass[static_cast<std::size_t>(items[i].leaf)] += items[i].popularity;
  }
  AliasTable by_popularity(proposal);
  AliasTable leaf_table(leaf_mass);

  const std::int64_t span = static_cast<std::int64_t>(o.days) * 86400;
  summary.cut_time =
      o.start_time + static_cast<std::int64_t>(static_cast<double>(span) * (1.0 - o.after_cut));
  summary.users = o.users;
  std::ofstream inter(fs::path(out_dir) / "interactions.csv", std::ios::binary);
  inter << "user_id,item_id,timestamp,event,rating,device\n";
  std::string latent_users = "user_id,leaves,brands,styles,price_band,brand_ids,departments\n";
  std::string profiles = "user_id,age,region,interests,price\n";
  std::string buf;
  std::vector<std::int64_t> chosen;
  std::vector<std::int64_t> times;
  // The device of each event comes from a stream of its own, so the rest
  // of the shop is what it was before the column existed.
  Rng device_rng(splitmix64(o.seed ^ 0xdeU));
  Rng profile_rng(splitmix64(o.seed ^ 0x9f0U));  // users.csv: a stream of its own too
  for (std::int64_t u = 0; u < o.users; ++u) {
    const User user = draw_user(rng, leaf_table, brands);
    std::int64_t n = o.min_history + rng.geometric(o.mean_history - o.min_history);
    n = std::min<std::int64_t>(n, std::max<std::int64_t>(o.min_history, o.items / 4));
    draw_times(o, rng, summary, n, times);
    chosen.clear();
    for (std::int64_t k = 0; k < n; ++k) {
      const std::int64_t pick = draw_pick(rng, by_popularity, items, user, chosen, /*after_cut=*/k + 1 == n);
      if (pick < 0) continue;  // practically unreachable; the history is one shorter
      chosen.push_back(pick);
      const Item& it = items[static_cast<std::size_t>(pick)];
      buf += fmt::format("{},{},{},{},{}\n", user_id(u), item_id(pick),
                         iso_time(times[static_cast<std::size_t>(k)]), draw_event(rng, user, it),
                         draw_device(device_rng, it));
      ++summary.events;
      summary.cold_events += it.cold;
    }
    latent_users += latent_user_row(u, user, brands);
    profiles += profile_row(profile_rng, u, user, brands);
    if (buf.size() > (1 << 20)) {
      inter << buf;
      buf.clear();
    }
  }
  inter << buf;
  if (!inter)
    throw IoError(fmt::format("cannot write {}", (fs::path(out_dir) / "interactions.csv").string()));
  write_file(fs::path(out_dir) / "latent_users.csv", latent_users);
  write_file(fs::path(out_dir) / "users.csv", profiles);
  write_file(fs::path(out_dir) / "synth.json", synth_meta(o, summary).dump(2) + "\n");
  return summary;
}

}  // namespace llmrec
