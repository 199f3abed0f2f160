#include "data/prepare.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "common/hdf5.h"
#include "data/csv.h"
#include "data/dataset.h"
#include "data/text.h"
#include "data/vocab_builder.h"
#include "data/wordpiece.h"

namespace llmrec {
namespace {

std::string detect_format(const std::string& path, const std::string& configured) {
  if (configured != "auto") return configured;
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".csv") return "csv";
  if (ext == ".tsv" || ext == ".tab") return "tsv";
  if (ext == ".jsonl" || ext == ".ndjson") return "jsonl";
  throw ConfigError(
      fmt::format("{}: cannot tell the format from the extension '{}'; set data.format to csv, tsv "
                  "or jsonl",
                  path, ext));
}

/// Rows of a CSV/TSV/JSONL file as the values of the wanted columns.
class RowSource {
 public:
  enum class Status { kRow, kEnd, kBad };

  /// `wanted`: column name and the config key that names it (for messages);
  /// an empty name means "not used" and yields "".
  RowSource(const std::string& path, const std::string& format,
            const std::vector<std::pair<std::string, std::string>>& wanted)
      : path_(path), format_(format), wanted_(wanted) {
    if (format_ == "jsonl") {
      in_.open(path, std::ios::binary);
      if (!in_) throw IoError(open_failure_message(path));
      return;
    }
    csv_ = std::make_unique<CsvReader>(path, format_ == "tsv" ? '\t' : ',');
    std::vector<std::string> header;
    std::int64_t line = 0;
    std::string reason;
    auto st = csv_->next(header, line, reason);
    if (st == CsvReader::Status::kEnd) throw IoError(fmt::format("{}: empty file (no header line)", path));
    if (st == CsvReader::Status::kMalformed)
      throw IoError(fmt::format("{}:{}: bad header line: {}", path, line, reason));
    columns_ = header.size();
    for (const auto& [name, key] : wanted_) {
      if (name.empty()) {
        index_.push_back(-1);
        continue;
      }
      auto it = std::find(header.begin(), header.end(), name);
      if (it == header.end()) {
        std::string all;
        for (const auto& h : header) all += (all.empty() ? "" : ", ") + h;
        const bool tabs = format_ == "csv" && header.size() == 1 && header[0].find('\t') != std::string::npos;
        throw IoError(
            fmt::format("{}:1: no column '{}' in the header (columns: {}); set {} to the right name{}", path,
                        name, all, key,
                        tabs ? " (the header has tabs but is read as CSV: if the file is tab-separated, "
                               "set data.format: tsv)"
                             : ""));
      }
      index_.push_back(static_cast<int>(it - header.begin()));
    }
  }

  /// Reads rows until one is well-formed, valid UTF-8 in every wanted
  /// column; counts every row read and hands the others to `bad`. False
  /// at the end of the file.
  template <class Bad>
  bool next_valid(std::vector<std::string>& values, std::int64_t& line, Bad& bad, std::int64_t& rows_read) {
    std::string reason;
    while (true) {
      auto st = next(values, line, reason);
      if (st == Status::kEnd) return false;
      ++rows_read;
      if (st == Status::kBad) {
        bad.add(line, reason);
        continue;
      }
      std::size_t k = 0;
      while (k < values.size() && utf8_valid(values[k])) ++k;
      if (k == values.size()) return true;
      bad.add(line, "invalid UTF-8", fmt::format("in column '{}'", wanted_[k].first));
    }
  }

  Status next(std::vector<std::string>& values, std::int64_t& line, std::string& reason) {
    values.assign(wanted_.size(), std::string());
    if (csv_) {
      auto st = csv_->next(fields_, line, reason);
      // Blank lines are skipped in a loop: a file of millions of them must
      // not recurse that deep.
      while (st == CsvReader::Status::kRecord && columns_ != 1 && fields_.size() == 1 && fields_[0].empty()) {
        st = csv_->next(fields_, line, reason);
      }
      if (st == CsvReader::Status::kEnd) return Status::kEnd;
      if (st == CsvReader::Status::kMalformed) {
        reason = "malformed " + format_ + ": " + reason;
        return Status::kBad;
      }
      if (fields_.size() != columns_) {
        reason = fmt::format("expected {} fields, got {}", columns_, fields_.size());
        return Status::kBad;
      }
      for (std::size_t k = 0; k < index_.size(); ++k) {
        if (index_[k] >= 0)
          values[k] = fields_[static_cast<std::size_t>(index_[k])];  // a column may be wanted twice
      }
      return Status::kRow;
    }
    std::string text;
    while (true) {
      if (!std::getline(in_, text)) return Status::kEnd;
      line = ++jsonl_line_;
      if (!text.empty() && text.back() == '\r') text.pop_back();
      if (text.find_first_not_of(" \t") != std::string::npos) break;
    }
    nlohmann::json obj = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded() || !obj.is_object()) {
      reason = "malformed jsonl: not a JSON object";
      return Status::kBad;
    }
    for (std::size_t k = 0; k < wanted_.size(); ++k) {
      const std::string& name = wanted_[k].first;
      if (name.empty()) continue;
      auto it = obj.find(name);
      if (it == obj.end() || it->is_null())
        continue;  // missing: "" (required fields are checked by the caller)
      if (it->is_string()) {
        values[k] = it->get<std::string>();
      } else if (it->is_number()) {  // integers as written; floats in JSON's shortest form
        values[k] = it->dump();
      } else if (it->is_boolean()) {
        values[k] = it->get<bool>() ? "true" : "false";
      } else {
        reason = fmt::format("field '{}' is not a string or a number", name);
        return Status::kBad;
      }
    }
    return Status::kRow;
  }

 private:
  std::string path_;
  std::string format_;
  std::vector<std::pair<std::string, std::string>> wanted_;
  std::unique_ptr<CsvReader> csv_;
  std::ifstream in_;
  std::int64_t jsonl_line_ = 0;
  std::size_t columns_ = 0;
  std::vector<int> index_;
  std::vector<std::string> fields_;
};

/// Applies the bad-row policy and keeps the counts.
class BadRows {
 public:
  BadRows(const DataConfig& config, PrepareReport::Source& report) : config_(config), report_(report) {}

  void add(std::int64_t line, const std::string& reason, const std::string& detail = "") {
    std::string where = fmt::format("{}:{}", report_.path, line);
    if (config_.on_error == "error") {
      throw IoError(fmt::format("{}: {}{} (data.on_error: skip would skip and count such rows)", where,
                                reason, detail.empty() ? "" : ": " + detail));
    }
    ++report_.skipped[reason];
    auto& ex = report_.examples[reason];
    if (static_cast<int>(ex.size()) < config_.show_errors)
      ex.push_back(detail.empty() ? where : where + ": " + detail);
  }

 private:
  const DataConfig& config_;
  PrepareReport::Source& report_;
};

/// `s` (valid UTF-8) cut to about 60 bytes for a message, at a character
/// boundary: the report is JSON and must stay valid UTF-8.
std::string shorten(const std::string& s) {
  if (s.size() <= 60) return s;
  std::size_t cut = 57;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

struct Event {
  std::int32_t user;
  std::int32_t item;
  std::int64_t time;
  std::uint8_t type;
  float rating;
  std::int64_t line;
  std::vector<std::int32_t> context;
};

}  // namespace

namespace {

/// Unix seconds as "YYYY-MM-DDThh:mm:ssZ".
std::string utc_iso(std::int64_t t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (gmtime_r(&tt, &tm) == nullptr) return std::to_string(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

namespace {

/// What read_text_table() reads: an id column, an optional category column
/// and text columns, with the config keys that name them and the words its
/// messages use.
struct TextTableSpec {
  std::pair<std::string, std::string> id;        ///< column, config key
  std::pair<std::string, std::string> category;  ///< column ("" = none), config key
  const std::vector<std::string>& text;
  std::string text_key;   ///< config key of the text columns
  std::string noun;       ///< "item", "user"
  std::string text_noun;  ///< "item text", "profile text"
  std::string table;      ///< "catalogue", "user table"
};

/// Rows of (id, category, joined text), validated: well-formed, UTF-8, an
/// id, no duplicate id, some text, cut to data.max_text_chars characters.
Catalogue read_text_table(const std::string& path, const DataConfig& cfg, PrepareReport::Source& report,
                          const TextTableSpec& spec) {
  report.path = path;
  std::vector<std::pair<std::string, std::string>> cols = {spec.id, spec.category};
  for (const auto& t : spec.text) cols.emplace_back(t, spec.text_key);
  Catalogue out;
  std::unordered_map<std::string, std::int64_t> id_line;
  RowSource src(path, detect_format(path, cfg.format), cols);
  BadRows bad(cfg, report);
  std::vector<std::string> v;
  std::int64_t line = 0;
  while (src.next_valid(v, line, bad, report.rows_read)) {
    if (v[0].empty()) {
      bad.add(line, "missing " + spec.noun + " id", fmt::format("column '{}' is empty", cols[0].first));
      continue;
    }
    if (id_line.count(v[0])) {
      bad.add(line, "duplicate " + spec.noun + " id",
              fmt::format("'{}' first defined at line {}", shorten(v[0]), id_line[v[0]]));
      continue;
    }
    std::string text;
    for (std::size_t k = 2; k < v.size(); ++k) {
      if (v[k].empty()) continue;
      if (!text.empty()) text += " ; ";
      text += v[k];
    }
    if (text.empty()) {
      bad.add(line, "missing " + spec.text_noun,
              fmt::format("{} '{}' has no text in any text column", spec.noun, shorten(v[0])));
      continue;
    }
    // The model reads data.text_len tokens: a longer text is cut, not lost.
    const std::size_t keep = utf8_prefix_bytes(text, static_cast<std::size_t>(cfg.max_text_chars));
    if (keep < text.size()) {
      text.resize(keep);
      ++report.texts_cut;
    }
    id_line.emplace(v[0], line);
    out.ids.push_back(v[0]);
    out.categories.push_back(v[1]);
    out.texts.push_back(std::move(text));
    out.lines.push_back(line);
    ++report.rows_kept;
  }
  if (out.ids.empty()) throw IoError(fmt::format("{}: no valid {} rows", path, spec.table));
  return out;
}

}  // namespace

Catalogue read_catalogue(const std::string& path, const DataConfig& cfg, PrepareReport::Source& report) {
  const CatalogueColumns& c = cfg.catalogue_columns;
  return read_text_table(path, cfg, report,
                         {{c.item, "data.catalogue_columns.item"},
                          {c.category, "data.catalogue_columns.category"},
                          c.text,
                          "data.catalogue_columns.text",
                          "item",
                          "item text",
                          "catalogue"});
}

Catalogue read_user_profiles(const std::string& path, const DataConfig& cfg, PrepareReport::Source& report) {
  const UserProfileColumns& c = cfg.user_columns;
  return read_text_table(path, cfg, report,
                         {{c.user, "data.user_columns.user"},
                          {"", ""},
                          c.text,
                          "data.user_columns.text",
                          "user",
                          "profile text",
                          "user table"});
}

TokenizedTexts tokenize_item_texts(const WordPieceTokenizer& tokenizer, const std::vector<std::string>& texts,
                                   int text_len) {
  TokenizedTexts out;
  out.tokens.assign(texts.size() * static_cast<std::size_t>(text_len), tokenizer.pad_id());
  out.length.resize(texts.size());
  std::vector<std::int32_t> full, ids;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    tokenizer.encode_into(texts[i], full);
    tokenizer.encode_into(texts[i], ids, text_len);
    out.truncated += full.size() > ids.size();
    std::copy(ids.begin(), ids.end(), out.tokens.begin() + static_cast<std::ptrdiff_t>(i) * text_len);
    out.length[i] = static_cast<std::int32_t>(ids.size());
    for (auto id : ids) out.unk += id == tokenizer.unk_id();
    out.total += static_cast<std::int64_t>(ids.size());
  }
  return out;
}

namespace {

/// The events read from the interactions file, with the tables their
/// fields index.
struct RawEvents {
  std::vector<std::string> user_ids;
  std::vector<std::string> event_types;
  std::vector<float> event_weights;
  std::vector<std::vector<std::string>> context_values;
  std::vector<Event> events;
};

/// The config's own consistency; the temporal split's cut in unix seconds.
std::int64_t prepare_check_config(const DataConfig& cfg) {
  if (cfg.interactions.empty() || cfg.catalogue.empty()) {
    throw ConfigError("data.interactions and data.catalogue must name the raw files to prepare");
  }
  if (cfg.split == "leave_last_out" && cfg.min_user_events < 3) {
    throw ConfigError(
        fmt::format("data.min_user_events is {}, but the leave_last_out split needs at least 3 "
                    "events per user (train, valid, test)",
                    cfg.min_user_events));
  }
  if (cfg.weight == "rating" && cfg.columns.rating.empty()) {
    throw ConfigError(
        "data.weight is 'rating' but data.columns.rating is empty: name the rating column, or use "
        "data.weight: event");
  }
  if (cfg.split != "temporal") return 0;
  auto c = parse_timestamp(cfg.cut, "auto");
  if (!c) throw ConfigError(fmt::format("data.cut '{}' is not a time (unix seconds or ISO 8601)", cfg.cut));
  return *c;
}

/// The item, time, event type and rating of one interaction row.
struct RowFields {
  std::int32_t item = 0;
  std::int64_t time = 0;
  std::uint8_t type = 0;
  float rating = 0;
};

/// Parses and checks the fields of row `line` (v: user, item, time, event,
/// rating, context...); nothing when the row is bad (reported to `bad`).
std::optional<RowFields> parse_row_fields(const std::vector<std::string>& v, std::int64_t line,
                                          const DataConfig& cfg,
                                          const std::vector<std::pair<std::string, std::string>>& cols,
                                          const std::unordered_map<std::string, std::int32_t>& item_index,
                                          const std::vector<std::string>& event_types, BadRows& bad) {
  const auto& c = cfg.columns;
  for (std::size_t k = 0; k < 4; ++k) {
    if (!cols[k].first.empty() && v[k].empty()) {
      bad.add(line, "missing field", fmt::format("column '{}' is empty", cols[k].first));
      return std::nullopt;
    }
  }
  RowFields f;
  auto item = item_index.find(v[1]);
  if (item == item_index.end()) {
    bad.add(line, "unknown item id",
            fmt::format("'{}' is not in the catalogue {}", shorten(v[1]), cfg.catalogue));
    return std::nullopt;
  }
  f.item = item->second;
  auto t = parse_timestamp(v[2], cfg.time_format);
  if (!t) {
    bad.add(line, "bad timestamp",
            fmt::format("'{}' is not a {} time", shorten(v[2]),
                        cfg.time_format == "auto" ? "unix or ISO 8601" : cfg.time_format));
    return std::nullopt;
  }
  f.time = *t;
  if (!c.event.empty()) {
    auto it = std::find(event_types.begin(), event_types.end(), v[3]);
    if (it == event_types.end()) {
      std::string known;
      for (const auto& e : event_types) known += (known.empty() ? "" : ", ") + e;
      bad.add(line, "unknown event type",
              fmt::format("'{}' (data.event_weights has: {})", shorten(v[3]), known));
      return std::nullopt;
    }
    f.type = static_cast<std::uint8_t>(it - event_types.begin());
  }
  f.rating = std::nanf("");
  if (!c.rating.empty() && !v[4].empty()) {
    char* end = nullptr;
    double r = std::strtod(v[4].c_str(), &end);
    if (end != v[4].c_str() + v[4].size() || !std::isfinite(r)) {
      bad.add(line, "bad rating", fmt::format("'{}' is not a number", shorten(v[4])));
      return std::nullopt;
    }
    f.rating = static_cast<float>(r);
  }
  if (cfg.weight == "rating" && !(f.rating >= 0)) {
    bad.add(line, std::isnan(f.rating) ? "missing rating" : "negative rating",
            std::isnan(f.rating) ? fmt::format("column '{}' is empty and data.weight is 'rating'", c.rating)
                                 : fmt::format("{} cannot be a loss weight (data.weight: rating)", f.rating));
    return std::nullopt;
  }
  return f;
}

/// Reads and validates every interaction row (bad rows by data.on_error,
/// counted in report.interactions); duplicates are bad rows too.
RawEvents read_interactions(const DataConfig& cfg,
                            const std::unordered_map<std::string, std::int32_t>& item_index,
                            PrepareReport& report) {
  report.interactions.path = cfg.interactions;
  const auto& c = cfg.columns;
  std::vector<std::pair<std::string, std::string>> cols = {{c.user, "data.columns.user"},
                                                           {c.item, "data.columns.item"},
                                                           {c.time, "data.columns.time"},
                                                           {c.event, "data.columns.event"},
                                                           {c.rating, "data.columns.rating"}};
  for (const auto& x : c.context) cols.emplace_back(x, "data.columns.context");
  RawEvents raw;
  auto& event_types = raw.event_types;
  for (const auto& [name, w] : cfg.event_weights) {
    event_types.push_back(name);
    raw.event_weights.push_back(static_cast<float>(w));
  }
  if (c.event.empty()) {
    event_types = {"event"};
    raw.event_weights = {1.0f};
  }
  auto& user_ids = raw.user_ids;
  auto& events = raw.events;
  std::unordered_map<std::string, std::int32_t> user_index;
  raw.context_values.resize(c.context.size());
  auto& context_values = raw.context_values;
  std::vector<std::unordered_map<std::string, std::int32_t>> context_index(c.context.size());
  {
    RowSource src(cfg.interactions, detect_format(cfg.interactions, cfg.format), cols);
    BadRows bad(cfg, report.interactions);
    // Duplicate detection on (user, item, time, event) -> first line.
    struct KeyHash {
      std::size_t operator()(
          const std::tuple<std::int32_t, std::int32_t, std::int64_t, std::uint8_t>& k) const {
        std::size_t h = std::hash<std::int64_t>()(std::get<2>(k));
        h ^= std::hash<std::int64_t>()((std::int64_t(std::get<0>(k)) << 32) | std::uint32_t(std::get<1>(k))) +
             0x9e3779b9 + (h << 6) + (h >> 2);
        return h ^ std::get<3>(k);
      }
    };
    std::unordered_map<std::tuple<std::int32_t, std::int32_t, std::int64_t, std::uint8_t>, std::int64_t,
                       KeyHash>
        seen;
    std::vector<std::string> v;
    std::int64_t line = 0;
    while (src.next_valid(v, line, bad, report.interactions.rows_read)) {
      const std::optional<RowFields> f = parse_row_fields(v, line, cfg, cols, item_index, event_types, bad);
      if (!f) continue;
      auto [uit, inserted] = user_index.emplace(v[0], static_cast<std::int32_t>(user_ids.size()));
      if (inserted) user_ids.push_back(v[0]);
      auto key = std::make_tuple(uit->second, f->item, f->time, f->type);
      auto [dup, fresh] = seen.emplace(key, line);
      if (!fresh) {
        bad.add(line, "duplicate event",
                fmt::format("same user, item, time and event as line {}", dup->second));
        continue;
      }
      Event e{uit->second, f->item, f->time, f->type, f->rating, line, {}};
      for (std::size_t k = 0; k < c.context.size(); ++k) {
        auto [cit, added] =
            context_index[k].emplace(v[5 + k], static_cast<std::int32_t>(context_values[k].size()));
        if (added) context_values[k].push_back(v[5 + k]);
        e.context.push_back(cit->second);
      }
      events.push_back(std::move(e));
      ++report.interactions.rows_kept;
    }
  }
  return raw;
}

/// Sorts each user's events by time (then file line) and marks the events
/// that survive the k-core and min_user_events filters (counted in report).
std::vector<char> filter_events(const DataConfig& cfg, RawEvents& raw, std::size_t n_items,
                                PrepareReport& report) {
  auto& events = raw.events;
  const auto& user_ids = raw.user_ids;
  std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    return a.user != b.user ? a.user < b.user : (a.time != b.time ? a.time < b.time : a.line < b.line);
  });
  std::vector<char> alive(events.size(), 1);
  auto count_by = [&](auto key, std::size_t n) {
    std::vector<std::int64_t> cnt(n, 0);
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (alive[i]) ++cnt[static_cast<std::size_t>(key(events[i]))];
    }
    return cnt;
  };
  if (cfg.kcore > 0) {
    std::vector<char> item_had(n_items, 0), user_had(user_ids.size(), 0);
    for (const auto& e : events) item_had[e.item] = user_had[e.user] = 1;
    bool changed = true;
    while (changed) {
      changed = false;
      auto uc = count_by([](const Event& e) { return e.user; }, user_ids.size());
      auto ic = count_by([](const Event& e) { return e.item; }, n_items);
      for (std::size_t i = 0; i < events.size(); ++i) {
        if (alive[i] && (uc[events[i].user] < cfg.kcore || ic[events[i].item] < cfg.kcore)) {
          alive[i] = 0;
          ++report.kcore_events_removed;
          changed = true;
        }
      }
    }
    auto uc = count_by([](const Event& e) { return e.user; }, user_ids.size());
    auto ic = count_by([](const Event& e) { return e.item; }, n_items);
    for (std::size_t u = 0; u < uc.size(); ++u) report.kcore_users_removed += user_had[u] && uc[u] == 0;
    for (std::size_t i = 0; i < ic.size(); ++i) report.kcore_items_removed += item_had[i] && ic[i] == 0;
  }
  {
    auto uc = count_by([](const Event& e) { return e.user; }, user_ids.size());
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (alive[i] && uc[events[i].user] < cfg.min_user_events) {
        alive[i] = 0;
        ++report.min_events_events_removed;
      }
    }
    for (auto n : uc) report.min_events_users_removed += n > 0 && n < cfg.min_user_events;
  }

  return alive;
}

/// The users with events left, sorted by raw id, their events (CSR) and the
/// split; the training events per item.
/// Users with at least one kept event, in raw user id order.
std::vector<std::int32_t> kept_users_in_id_order(const RawEvents& raw, const std::vector<char>& alive) {
  std::vector<char> has(raw.user_ids.size(), 0);
  for (std::size_t i = 0; i < raw.events.size(); ++i) {
    if (alive[i]) has[raw.events[i].user] = 1;
  }
  std::vector<std::int32_t> order;
  for (std::size_t u = 0; u < raw.user_ids.size(); ++u) {
    if (has[u]) order.push_back(static_cast<std::int32_t>(u));
  }
  std::sort(order.begin(), order.end(),
            [&](std::int32_t a, std::int32_t b) { return raw.user_ids[a] < raw.user_ids[b]; });
  return order;
}

/// A user's split of n time-ordered events: training events [0, train_end),
/// validation and test event indices (-1 = none). False for a temporal
/// split's user without an event before the cut.
struct UserSplit {
  std::int64_t train_end = 0;
  std::int64_t valid = -1;
  std::int64_t test = -1;
};
bool split_user(const DataConfig& cfg, std::int64_t cut, const std::vector<Event>& events,
                const std::vector<std::size_t>& evs, UserSplit& s) {
  const auto n = static_cast<std::int64_t>(evs.size());
  if (cfg.split == "leave_last_out") {
    s = {n - 2, n - 2, n - 1};
    return true;
  }
  std::int64_t k = 0;
  while (k < n && events[evs[static_cast<std::size_t>(k)]].time < cut) ++k;
  if (k == 0) return false;
  s = {k >= 2 ? k - 1 : k, k >= 2 ? k - 1 : -1, k < n ? k : -1};
  return true;
}

/// The IoError of a preparation that kept no user, saying why with every
/// count in and out.
[[noreturn]] void throw_no_user_left(const DataConfig& cfg, std::int64_t cut, const RawEvents& raw,
                                     const std::vector<char>& alive, const PrepareReport& report) {
  std::string why;
  if (cfg.split != "leave_last_out" && report.no_train_users_removed > 0) {
    std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = std::numeric_limits<std::int64_t>::min();
    for (std::size_t i = 0; i < raw.events.size(); ++i) {
      if (!alive[i]) continue;
      lo = std::min(lo, raw.events[i].time);
      hi = std::max(hi, raw.events[i].time);
    }
    why = fmt::format(
        "; the temporal split's cut (data.cut '{}' = {}) is at or before every user's first event "
        "(the events span {} .. {}): move the cut into that range",
        cfg.cut, utc_iso(cut), utc_iso(lo), utc_iso(hi));
  }
  throw IoError(fmt::format("no user is left after validation and filtering: nothing to train on{}\n{}", why,
                            report.to_text()));
}

void build_users(const DataConfig& cfg, std::int64_t cut, const RawEvents& raw,
                 const std::vector<char>& alive, DatasetArrays& out, PrepareReport& report) {
  const auto& events = raw.events;
  const auto& user_ids = raw.user_ids;
  const auto& c = cfg.columns;
  const bool rating_weight = cfg.weight == "rating";
  const std::vector<std::int32_t> order = kept_users_in_id_order(raw, alive);
  std::vector<std::size_t> first(user_ids.size() + 1, events.size());
  for (std::size_t i = events.size(); i-- > 0;) first[events[i].user] = i;

  out.users.offsets.push_back(0);
  std::vector<std::int64_t> train_count(out.items.ids.size(), 0);
  for (std::int32_t u : order) {
    std::vector<std::size_t> evs;
    for (std::size_t i = first[static_cast<std::size_t>(u)]; i < events.size() && events[i].user == u; ++i) {
      if (alive[i]) evs.push_back(i);
    }
    const std::int64_t n = static_cast<std::int64_t>(evs.size());
    UserSplit split;
    if (!split_user(cfg, cut, events, evs, split)) {
      ++report.no_train_users_removed;
      report.no_train_events_removed += n;
      continue;
    }
    const std::int64_t train_end = split.train_end, valid = split.valid, test = split.test;
    const std::int64_t base = out.users.offsets.back();
    out.users.ids.push_back(user_ids[static_cast<std::size_t>(u)]);
    out.users.train_end.push_back(train_end);
    out.users.valid.push_back(valid >= 0 ? base + valid : -1);
    out.users.test.push_back(test >= 0 ? base + test : -1);
    for (std::int64_t k = 0; k < n; ++k) {
      const Event& e = events[evs[static_cast<std::size_t>(k)]];
      out.events.item.push_back(e.item);
      out.events.time.push_back(e.time);
      out.events.type.push_back(e.type);
      out.events.weight.push_back(rating_weight ? e.rating : raw.event_weights[e.type]);
      out.events.rating.push_back(e.rating);
      for (std::size_t x = 0; x < c.context.size(); ++x) out.events.context[x].push_back(e.context[x]);
      if (k < train_end) ++train_count[static_cast<std::size_t>(e.item)];
    }
    report.train_events += train_end;
    report.valid_events += valid >= 0;
    report.test_events += test >= 0;
    out.users.offsets.push_back(base + n);
  }
  if (out.users.ids.empty()) throw_no_user_left(cfg, cut, raw, alive, report);
  out.has_rating = !c.rating.empty();
  out.items.cold.resize(out.items.ids.size());
  for (std::size_t i = 0; i < out.items.ids.size(); ++i) out.items.cold[i] = train_count[i] == 0;
  out.items.train_count = std::move(train_count);
  for (std::size_t u = 0; u < out.users.test.size(); ++u) {
    auto t = out.users.test[u];
    if (t >= 0)
      report.test_events_on_cold_items +=
          out.items.cold[static_cast<std::size_t>(out.events.item[static_cast<std::size_t>(t)])];
  }
}

/// Tokenizes every catalogue item (and user profile) once, with data.vocab
/// or a vocabulary built from the catalogue's (and the profiles') texts.
void tokenize_catalogue(const DataConfig& cfg, DatasetArrays& out, PrepareReport& report) {
  const std::vector<std::string>& item_texts = out.items.texts;
  WordPieceTokenizer tokenizer = [&] {
    if (!cfg.vocab.empty()) return WordPieceTokenizer::from_file(cfg.vocab);
    VocabBuilderOptions options;
    options.vocab_size = cfg.vocab_size;
    VocabBuilder builder(options);
    for (const auto& t : item_texts) builder.add_text(t);
    for (const auto& t : out.users.profile_texts) builder.add_text(t);
    return WordPieceTokenizer::from_tokens(builder.build());
  }();
  out.vocab = tokenizer.tokens();
  out.text_len = cfg.text_len;
  TokenizedTexts tokenized = tokenize_item_texts(tokenizer, item_texts, cfg.text_len);
  out.items.tokens = std::move(tokenized.tokens);
  out.items.length = std::move(tokenized.length);
  report.truncated_texts = tokenized.truncated;
  const std::int64_t unk = tokenized.unk, total = tokenized.total;
  report.unk_token_share = total > 0 ? static_cast<double>(unk) / static_cast<double>(total) : 0.0;
  report.vocab_size = static_cast<std::int64_t>(out.vocab.size());
  if (!out.has_profiles) return;
  // A user without a profile keeps an empty text: length 0, all padding.
  TokenizedTexts profiles = tokenize_item_texts(tokenizer, out.users.profile_texts, cfg.text_len);
  for (std::size_t u = 0; u < out.users.profile_texts.size(); ++u) {
    if (!out.users.profile_texts[u].empty()) continue;
    profiles.length[u] = 0;
    std::fill_n(profiles.tokens.begin() + static_cast<std::ptrdiff_t>(u) * cfg.text_len, cfg.text_len,
                tokenizer.pad_id());
  }
  out.users.profile_tokens = std::move(profiles.tokens);
  out.users.profile_length = std::move(profiles.length);
}

/// The profile text of every dataset user from data.users ("" = none), and
/// the counts of the report: users with a profile, profile rows of users
/// the dataset does not have.
void attach_profiles(const DataConfig& cfg, DatasetArrays& out, PrepareReport& report) {
  if (cfg.users.empty()) return;
  const Catalogue table = read_user_profiles(cfg.users, cfg, report.user_table);
  std::unordered_map<std::string, std::size_t> row_of;
  for (std::size_t r = 0; r < table.ids.size(); ++r) row_of.emplace(table.ids[r], r);
  out.has_profiles = true;
  out.users.profile_texts.assign(out.users.ids.size(), std::string());
  std::int64_t matched = 0;
  for (std::size_t u = 0; u < out.users.ids.size(); ++u) {
    const auto it = row_of.find(out.users.ids[u]);
    if (it == row_of.end()) continue;
    out.users.profile_texts[u] = table.texts[it->second];
    ++matched;
  }
  report.users_with_profile = matched;
  report.profiles_of_other_users = static_cast<std::int64_t>(table.ids.size()) - matched;
}

}  // namespace

PrepareReport prepare_dataset(const DataConfig& cfg, const std::string& resolved_yaml) {
  const std::int64_t cut = prepare_check_config(cfg);
  PrepareReport report;
  Catalogue catalogue = read_catalogue(cfg.catalogue, cfg, report.catalogue);
  std::unordered_map<std::string, std::int32_t> item_index;
  for (std::size_t i = 0; i < catalogue.ids.size(); ++i) {
    item_index.emplace(catalogue.ids[i], static_cast<std::int32_t>(i));
  }
  RawEvents raw = read_interactions(cfg, item_index, report);
  report.events_after_validation = static_cast<std::int64_t>(raw.events.size());
  report.users_seen = static_cast<std::int64_t>(raw.user_ids.size());
  const std::vector<char> alive = filter_events(cfg, raw, catalogue.ids.size(), report);

  DatasetArrays out;
  out.event_types = raw.event_types;
  out.context_names = cfg.columns.context;
  out.context_values = raw.context_values;
  out.events.context.resize(cfg.columns.context.size());
  out.items.ids = catalogue.ids;
  out.items.categories = catalogue.categories;
  out.items.texts = catalogue.texts;
  build_users(cfg, cut, raw, alive, out, report);
  attach_profiles(cfg, out, report);
  tokenize_catalogue(cfg, out, report);

  report.users = static_cast<std::int64_t>(out.users.ids.size());
  report.items = static_cast<std::int64_t>(out.items.ids.size());
  report.events = static_cast<std::int64_t>(out.events.item.size());
  for (auto n : out.items.train_count) report.items_with_training_events += n > 0;
  report.cold_items = report.items - report.items_with_training_events;
  write_dataset(cfg.dataset, out, resolved_yaml, report.to_json(), cfg.split);
  return report;
}

std::string PrepareReport::to_json() const {
  auto source = [](const Source& s) {
    nlohmann::json j = {{"path", s.path}, {"rows_read", s.rows_read}, {"rows_kept", s.rows_kept}};
    if (s.texts_cut > 0) j["texts_cut"] = s.texts_cut;
    j["skipped"] = nlohmann::json::object();
    for (const auto& [k, n] : s.skipped) j["skipped"][k] = n;
    j["examples"] = nlohmann::json::object();
    for (const auto& [k, v] : s.examples) j["examples"][k] = v;
    return j;
  };
  nlohmann::json j = {
      {"catalogue", source(catalogue)},
      {"interactions", source(interactions)},
      {"events_after_validation", events_after_validation},
      {"users_seen", users_seen},
      {"kcore",
       {{"events_removed", kcore_events_removed},
        {"users_removed", kcore_users_removed},
        {"items_losing_all_events", kcore_items_removed}}},
      {"min_user_events",
       {{"users_removed", min_events_users_removed}, {"events_removed", min_events_events_removed}}},
      {"temporal_no_train",
       {{"users_removed", no_train_users_removed}, {"events_removed", no_train_events_removed}}},
      {"users", users},
      {"items", items},
      {"items_with_training_events", items_with_training_events},
      {"cold_items", cold_items},
      {"events", events},
      {"split",
       {{"train", train_events},
        {"valid", valid_events},
        {"test", test_events},
        {"test_on_cold_items", test_events_on_cold_items}}},
      {"vocab_size", vocab_size},
      {"truncated_texts", truncated_texts},
      {"unk_token_share", unk_token_share},
  };
  if (!user_table.path.empty()) {
    j["user_table"] = source(user_table);
    j["users_with_profile"] = users_with_profile;
    j["profiles_of_other_users"] = profiles_of_other_users;
  }
  // Paths and examples hold bytes from the input; never throw over them.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string PrepareReport::to_text() const {
  std::string s;
  auto source = [&](const char* what, const Source& src) {
    std::int64_t skipped = 0;
    for (const auto& [k, n] : src.skipped) skipped += n;
    s += fmt::format("{} {}: {} rows read, {} kept, {} skipped\n", what, src.path, src.rows_read,
                     src.rows_kept, skipped);
    if (src.texts_cut > 0)
      s += fmt::format("    {:>9}  texts cut to data.max_text_chars characters (kept)\n", src.texts_cut);
    for (const auto& [k, n] : src.skipped) {
      s += fmt::format("    {:>9}  {}\n", n, k);
      for (const auto& ex : src.examples.at(k)) s += fmt::format("               e.g. {}\n", ex);
    }
  };
  source("catalogue", catalogue);
  source("interactions", interactions);
  if (!user_table.path.empty()) source("user table", user_table);
  s += fmt::format("events after validation: {} from {} users\n", events_after_validation, users_seen);
  if (kcore_events_removed > 0) {
    s += fmt::format("k-core: removed {} events, {} users; {} items lost all their events\n",
                     kcore_events_removed, kcore_users_removed, kcore_items_removed);
  }
  s += fmt::format("fewer than min_user_events: removed {} users with {} events\n", min_events_users_removed,
                   min_events_events_removed);
  if (no_train_users_removed > 0) {
    s += fmt::format("temporal split, no event before the cut: removed {} users with {} events\n",
                     no_train_users_removed, no_train_events_removed);
  }
  s += fmt::format("dataset: {} users, {} items ({} with training events, {} cold), {} events\n", users,
                   items, items_with_training_events, cold_items, events);
  s += fmt::format("split: {} train, {} valid, {} test events ({} of the test events on cold items)\n",
                   train_events, valid_events, test_events, test_events_on_cold_items);
  s += fmt::format("text: vocabulary {} tokens, {} item texts truncated, {:.2f}% [UNK] tokens\n", vocab_size,
                   truncated_texts, 100.0 * unk_token_share);
  if (!user_table.path.empty()) {
    s += fmt::format(
        "profiles: {} of {} users have one ({} without); {} profile rows name users the dataset does not "
        "have (not in the interactions, or filtered out: unused)\n",
        users_with_profile, users, users - users_with_profile, profiles_of_other_users);
  }
  return s;
}

}  // namespace llmrec
