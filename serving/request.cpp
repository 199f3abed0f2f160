#include "serving/request.h"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>

#include "common/utf8.h"

namespace llmrec::serving {
namespace {

/// Code points of a history item's text in an explanation's `because` / `cf` entry.
constexpr std::size_t kExplainedTextChars = 80;

using nlohmann::json;

/// A JSON value for messages, cut short.
std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

void require_object(const json& body) {
  if (!body.is_object()) {
    throw RequestError(400, "", fmt::format("the request must be a JSON object, got {}", shown(body)));
  }
}

void reject_unknown(const json& body, const std::set<std::string>& known) {
  for (const auto& [key, value] : body.items()) {
    if (known.count(key) == 0) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw RequestError(400, key, fmt::format("unknown field (known fields: {})", list));
    }
  }
}

std::int64_t get_int(const json& v, const char* field, std::int64_t lo, std::int64_t hi) {
  bool ok = false;
  std::int64_t x = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    ok = u <= static_cast<std::uint64_t>(hi);
    x = ok ? static_cast<std::int64_t>(u) : 0;
  } else if (v.is_number_integer()) {
    x = v.get<std::int64_t>();
    ok = true;
  }
  if (!ok || x < lo || x > hi) {
    throw RequestError(400, field, fmt::format("must be an integer in [{}, {}], got {}", lo, hi, shown(v)));
  }
  return x;
}

double get_number(const json& v, const char* field, double lo, double hi) {
  if (!v.is_number()) {
    throw RequestError(400, field, fmt::format("must be a number in [{:g}, {:g}], got {}", lo, hi, shown(v)));
  }
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    throw RequestError(400, field, fmt::format("must be a number in [{:g}, {:g}], got {}", lo, hi, shown(v)));
  }
  return x;
}

std::string get_string(const json& v, const char* field) {
  if (!v.is_string()) throw RequestError(400, field, fmt::format("must be a string, got {}", shown(v)));
  return v.get<std::string>();
}

std::vector<std::string> get_categories(const json& v) {
  if (v.is_string()) return {v.get<std::string>()};
  if (v.is_array() && !v.empty()) {
    std::vector<std::string> out;
    for (const auto& c : v) {
      if (!c.is_string()) {
        throw RequestError(400, "category", fmt::format("every element must be a string, got {}", shown(c)));
      }
      out.push_back(c.get<std::string>());
    }
    return out;
  }
  throw RequestError(400, "category",
                     fmt::format("must be a string or a non-empty list of strings, got {}", shown(v)));
}

// ---- query strings

enum class Kind { kString, kList, kInt, kNumber, kBool, kStrings };

json parse_query_value(const std::string& key, const std::string& value, Kind kind) {
  switch (kind) {
    case Kind::kString:
    case Kind::kStrings: return value;
    case Kind::kList: {
      json out = json::array();
      if (value.empty()) return out;
      std::size_t start = 0;
      while (true) {
        const std::size_t comma = value.find(',', start);
        out.push_back(value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      return out;
    }
    case Kind::kInt: {
      errno = 0;
      char* end = nullptr;
      const long long x = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || end != value.c_str() + value.size() || errno == ERANGE ||
          !(std::isdigit(static_cast<unsigned char>(value[0])) || value[0] == '-')) {
        throw RequestError(400, key, fmt::format("must be an integer, got '{}'", value));
      }
      return static_cast<std::int64_t>(x);
    }
    case Kind::kNumber: {
      errno = 0;
      char* end = nullptr;
      const double x = std::strtod(value.c_str(), &end);
      if (value.empty() || end != value.c_str() + value.size() || errno == ERANGE || !std::isfinite(x) ||
          std::isspace(static_cast<unsigned char>(value[0]))) {
        throw RequestError(400, key, fmt::format("must be a number, got '{}'", value));
      }
      return x;
    }
    case Kind::kBool: {
      if (value == "true" || value == "1" || value.empty()) return true;
      if (value == "false" || value == "0") return false;
      throw RequestError(400, key, fmt::format("must be true, false, 1 or 0, got '{}'", value));
    }
  }
  return nullptr;
}

json query_json(const QueryParams& params, const std::map<std::string, Kind>& kinds) {
  json out = json::object();
  for (const auto& [key, value] : params) {
    auto it = kinds.find(key);
    if (it == kinds.end()) {
      out[key] = value;  // reported as an unknown field by the parser
      continue;
    }
    json v = parse_query_value(key, value, it->second);
    if (out.contains(key)) {
      if (it->second != Kind::kStrings) throw RequestError(400, key, "given more than once");
      if (!out[key].is_array()) out[key] = json::array({out[key]});
      out[key].push_back(v);
    } else {
      out[key] = std::move(v);
    }
  }
  return out;
}

json item_json(const ExportData& e, std::int32_t i) {
  const auto r = static_cast<std::size_t>(i);
  return {{"id", e.item_ids[r]},
          {"text", e.item_text[r]},
          {"category", e.item_category[r]},
          {"cold", e.item_cold[r] != 0}};
}

/// A `context` field: an object of at most 32 strings.
std::map<std::string, std::string> get_context(const json& c) {
  if (!c.is_object() || c.size() > 32) {
    throw RequestError(400, "context",
                       fmt::format("must be an object of at most 32 strings, got {}", shown(c)));
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : c.items()) {
    if (!v.is_string())
      throw RequestError(400, "context", fmt::format("'{}' must be a string, got {}", k, shown(v)));
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

}  // namespace

// Declared in engine.h; defined here so that the request layer links without
// the engine's tensor code (fuzz/fuzz_request.cpp).
RequestError::RequestError(int status, std::string field, const std::string& message)
    : Error(field.empty() ? message : fmt::format("field '{}': {}", field, message)),
      status_(status),
      field_(std::move(field)) {}

const char* exclude_name(Exclude e) {
  switch (e) {
    case Exclude::kSeen: return "seen";
    case Exclude::kPurchased: return "purchased";
    case Exclude::kNone: return "none";
  }
  return "?";
}

EventRequest parse_event_request(const json& body) {
  require_object(body);
  reject_unknown(body, {"user", "item", "type", "time", "context"});
  EventRequest e;
  for (const char* field : {"user", "item"}) {
    if (!body.contains(field)) throw RequestError(400, field, "missing");
    const std::string v = get_string(body[field], field);
    if (v.empty() || v.size() > 256) {
      throw RequestError(400, field, fmt::format("must hold 1 to 256 bytes, got {}", v.size()));
    }
    (std::string(field) == "user" ? e.user : e.item) = v;
  }
  if (body.contains("type")) e.type = get_string(body["type"], "type");
  if (body.contains("time")) e.time = get_int(body["time"], "time", 0, std::int64_t{1} << 40);
  if (body.contains("context")) {
    get_context(body["context"]);
    e.context = body["context"];
  }
  return e;
}

json parse_json_body(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& ex) {  // parse_error, and out_of_range for a number like 1e400
    throw RequestError(400, "", fmt::format("the request body is not valid JSON: {}", ex.what()));
  }
}

namespace {

/// The `history_times` of a request: a list of times (the engine checks
/// them against the history).
std::vector<std::int64_t> get_history_times(const json& t) {
  if (!t.is_array() || t.size() > kMaxRequestHistory) {
    throw RequestError(400, "history_times",
                       fmt::format("must be a list of at most {} times (one per history item), got {}",
                                   kMaxRequestHistory, shown(t)));
  }
  std::vector<std::int64_t> out;
  for (const auto& v : t) out.push_back(get_int(v, "history_times", 0, kMaxRequestTime));
  return out;
}

}  // namespace

RecommendRequest parse_recommend_request(const json& body) {
  require_object(body);
  reject_unknown(body, {"user", "history", "history_times", "time", "context", "k", "category", "exclude",
                        "hour", "hour_weight", "cf_weight", "popularity_weight", "tfidf_weight", "diversity",
                        "explain", "search"});
  RecommendRequest q;
  if (body.contains("user") && body.contains("history")) {
    throw RequestError(400, "user", "give either 'user' or 'history', not both");
  }
  if (body.contains("user")) {
    q.user = get_string(body["user"], "user");
  } else if (body.contains("history")) {
    const json& h = body["history"];
    if (!h.is_array())
      throw RequestError(400, "history", fmt::format("must be a list of item ids, got {}", shown(h)));
    if (h.size() > kMaxRequestHistory) {
      throw RequestError(400, "history",
                         fmt::format("has {} items; at most {} are accepted", h.size(), kMaxRequestHistory));
    }
    std::vector<std::string> items;
    for (const auto& id : h) {
      if (!id.is_string()) {
        throw RequestError(400, "history", fmt::format("every item id must be a string, got {}", shown(id)));
      }
      items.push_back(id.get<std::string>());
    }
    q.history = std::move(items);
  } else {
    throw RequestError(400, "user", "missing: give 'user' (a known user id) or 'history' (recent item ids)");
  }
  if (body.contains("k")) q.k = static_cast<int>(get_int(body["k"], "k", 1, kMaxK));
  if (body.contains("category")) q.categories = get_categories(body["category"]);
  if (body.contains("exclude")) {
    const std::string x = get_string(body["exclude"], "exclude");
    if (x == "seen") {
      q.exclude = Exclude::kSeen;
    } else if (x == "purchased") {
      q.exclude = Exclude::kPurchased;
    } else if (x == "none") {
      q.exclude = Exclude::kNone;
    } else {
      throw RequestError(400, "exclude", fmt::format("must be one of seen, purchased, none; got '{}'", x));
    }
  }
  if (body.contains("hour")) q.hour = static_cast<int>(get_int(body["hour"], "hour", 0, kHours - 1));
  if (body.contains("time")) q.time = get_int(body["time"], "time", 0, kMaxRequestTime);
  if (body.contains("history_times")) q.history_times = get_history_times(body["history_times"]);
  if (body.contains("context")) q.context = get_context(body["context"]);
  if (body.contains("hour_weight"))
    q.hour_weight = get_number(body["hour_weight"], "hour_weight", 0, kMaxWeight);
  if (body.contains("cf_weight")) q.cf_weight = get_number(body["cf_weight"], "cf_weight", 0, kMaxWeight);
  if (body.contains("popularity_weight")) {
    q.popularity_weight = get_number(body["popularity_weight"], "popularity_weight", 0, kMaxWeight);
  }
  if (body.contains("tfidf_weight"))
    q.tfidf_weight = get_number(body["tfidf_weight"], "tfidf_weight", 0, kMaxWeight);
  if (body.contains("diversity")) q.diversity = get_number(body["diversity"], "diversity", 0, 1);
  if (body.contains("explain")) {
    if (!body["explain"].is_boolean()) {
      throw RequestError(400, "explain",
                         fmt::format("must be true or false, got {}", shown(body["explain"])));
    }
    q.explain = body["explain"].get<bool>();
  }
  if (body.contains("search")) {
    q.search = get_string(body["search"], "search");
    if (*q.search != "exact" && *q.search != "hnsw") {
      throw RequestError(400, "search", fmt::format("must be 'exact' or 'hnsw', got '{}'", *q.search));
    }
  }
  if (q.hour_weight && !q.hour) throw RequestError(400, "hour_weight", "has no effect without 'hour'");
  return q;
}

SimilarRequest parse_similar_request(const json& body) {
  require_object(body);
  reject_unknown(body, {"item", "k", "category", "cf_weight"});
  SimilarRequest q;
  if (!body.contains("item"))
    throw RequestError(400, "item", "missing: give the id of the item to find neighbours of");
  q.item = get_string(body["item"], "item");
  if (body.contains("k")) q.k = static_cast<int>(get_int(body["k"], "k", 1, kMaxK));
  if (body.contains("category")) q.categories = get_categories(body["category"]);
  if (body.contains("cf_weight")) q.cf_weight = get_number(body["cf_weight"], "cf_weight", 0, kMaxWeight);
  return q;
}

json recommend_query_json(const QueryParams& params) {
  return query_json(params, {{"user", Kind::kString},
                             {"history", Kind::kList},
                             {"k", Kind::kInt},
                             {"category", Kind::kStrings},
                             {"exclude", Kind::kString},
                             {"hour", Kind::kInt},
                             {"time", Kind::kInt},
                             {"hour_weight", Kind::kNumber},
                             {"cf_weight", Kind::kNumber},
                             {"popularity_weight", Kind::kNumber},
                             {"tfidf_weight", Kind::kNumber},
                             {"diversity", Kind::kNumber},
                             {"explain", Kind::kBool},
                             {"search", Kind::kString}});
}

json similar_query_json(const QueryParams& params) {
  return query_json(params, {{"item", Kind::kString},
                             {"k", Kind::kInt},
                             {"category", Kind::kStrings},
                             {"cf_weight", Kind::kNumber}});
}

json recommendation_json(const ExportData& e, const Recommendation& r) {
  json items = json::array();
  for (std::size_t j = 0; j < r.items.size(); ++j) {
    const RecommendedItem& it = r.items[j];
    json o = item_json(e, it.item);
    o["rank"] = j + 1;
    o["score"] = it.score;
    if (r.explain) {
      o["model_score"] = it.model_score;
      if (r.cf_weight > 0) o["cf_score"] = it.cf_score;
      if (r.hour) o["hour_score"] = it.hour_score;
      if (r.tfidf_weight > 0) o["tfidf_score"] = it.tfidf_score;
      o["matches"] = it.matches;
      // A history item in an explanation: its id and the start of its text.
      auto named = [&e](std::int32_t item) {
        const auto i = static_cast<std::size_t>(item);
        return json{{"id", e.item_ids[i]}, {"text", utf8_truncate(e.item_text[i], kExplainedTextChars)}};
      };
      json because = json::array();
      for (const auto& c : it.because) {
        json h = named(c.item);
        h["contribution"] = c.value;
        because.push_back(std::move(h));
      }
      o["because"] = std::move(because);
      if (r.cf_weight > 0) {
        json cf = json::array();
        for (const auto& c : it.cf) {
          json h = named(c.item);
          h["similarity"] = c.similarity;
          cf.push_back(std::move(h));
        }
        o["cf"] = std::move(cf);
      }
    }
    items.push_back(std::move(o));
  }
  json user = r.user >= 0 ? json(e.user_ids[static_cast<std::size_t>(r.user)])
                          : (r.unknown_user.empty() ? json(nullptr) : json(r.unknown_user));
  return {{"user", std::move(user)},
          {"fallback", r.fallback.empty() ? json(nullptr) : json(r.fallback)},
          {"history_length", r.history.size()},
          {"k", r.k},
          {"exclude", exclude_name(r.exclude)},
          {"hour", r.hour ? json(*r.hour) : json(nullptr)},
          {"hour_weight", r.hour_weight},
          {"cf_weight", r.cf_weight},
          {"popularity_weight", r.popularity_weight},
          {"tfidf_weight", r.tfidf_weight},
          {"diversity", r.diversity},
          {"fused", r.fused},
          {"search", r.search},
          {"candidates", r.candidates},
          {"eligible", r.eligible},
          {"items", std::move(items)},
          {"took_ms", r.took_ms}};
}

json similar_json(const ExportData& e, const SimilarResult& r) {
  json items = json::array();
  for (std::size_t j = 0; j < r.items.size(); ++j) {
    const SimilarItem& it = r.items[j];
    json o = item_json(e, it.item);
    o["rank"] = j + 1;
    o["score"] = it.score;
    o["cosine"] = it.cosine;
    if (r.cf_weight > 0) o["cf"] = it.cf;
    items.push_back(std::move(o));
  }
  return {{"item", e.item_ids[static_cast<std::size_t>(r.item)]},
          {"k", r.k},
          {"cf_weight", r.cf_weight},
          {"items", std::move(items)},
          {"took_ms", r.took_ms}};
}

}  // namespace llmrec::serving
