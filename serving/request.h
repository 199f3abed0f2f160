#pragma once
/// The JSON face of the engine: strict parsing of recommend / similar
/// requests (bodies and GET query strings) and the response documents.
/// docs/serving.md lists every field, its type, range and default.
///
///   nlohmann::json body = parse_json_body(text);                   // RequestError 400 if not JSON
///   RecommendRequest q = parse_recommend_request(body);            // RequestError naming the field
///   nlohmann::json out = recommendation_json(engine.data(), engine.recommend(q));
///
/// Validation: the body is a JSON object; an unknown key, a value of the
/// wrong JSON type (e.g. 10.0 or "10" for k), a value out of range, both or
/// neither of `user` and `history` are RequestError(400) whose message names
/// the field. Unknown ids are found later by the engine (404).

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "serving/engine.h"

namespace llmrec::serving {

/// Parses a request body; RequestError(400) for text that is not JSON.
nlohmann::json parse_json_body(const std::string& text);

/// Fields: user | history (with history_times), time, k, category,
/// exclude, hour, hour_weight, cf_weight, popularity_weight, tfidf_weight,
/// diversity, explain, search.
RecommendRequest parse_recommend_request(const nlohmann::json& body);
/// Fields: item, k, category, cf_weight.
SimilarRequest parse_similar_request(const nlohmann::json& body);

/// A behaviour event (POST /events).
struct EventRequest {
  std::string user;
  std::string item;
  std::string type;                                   ///< "" = none given
  std::int64_t time = -1;                             ///< Unix seconds; -1 = none given (the server's clock)
  nlohmann::json context = nlohmann::json::object();  ///< string values only
};
/// Fields: user and item (strings of 1..256 bytes, required), type
/// (string), time (integer seconds >= 0), context (object of strings, at
/// most 32 keys). RequestError(400) naming the field otherwise.
EventRequest parse_event_request(const nlohmann::json& body);

using QueryParams = std::vector<std::pair<std::string, std::string>>;
/// The JSON object a GET query string stands for: `history` split on
/// commas, `category` a string (or a list when repeated), integers for k
/// and hour, numbers for the weights and diversity, explain as
/// true/false/1/0. A repeated key (other than category) or a value that
/// does not parse is RequestError(400) naming it; unknown keys are left for
/// the parser to report.
nlohmann::json recommend_query_json(const QueryParams& params);
nlohmann::json similar_query_json(const QueryParams& params);

/// The response documents (docs/serving.md, "Responses").
nlohmann::json recommendation_json(const ExportData& data, const Recommendation& r);
nlohmann::json similar_json(const ExportData& data, const SimilarResult& r);

}  // namespace llmrec::serving
