// libFuzzer target: the HTTP request layer of `llmrec serve`
// (serving/request.cpp): JSON bodies of POST /recommend, /similar and
// /events, and the query strings of GET /recommend and /similar as
// cpp-httplib hands them over. The engine is not involved (it needs an export); what reaches
// it must be a valid request.
//
// Input: byte 0 picks the endpoint (POST/GET x recommend/similar, POST
// events; an event is also what the events log replays), the rest
// is the body or the query string. A bad request must be RequestError with
// status 400: any other exception would be answered 500.
#include <httplib.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "serving/request.h"

using namespace llmrec;
using namespace llmrec::serving;

namespace {

serving::QueryParams query_params(const std::string& query) {
  httplib::Params params;  // what the server's handlers see as req.params
  httplib::detail::parse_query_text(query, params);
  serving::QueryParams out;
  for (const auto& [k, v] : params) out.emplace_back(k, v);
  return out;
}

void check_weight(const std::optional<double>& w, const char* name) {
  if (w && (!std::isfinite(*w) || *w < 0 || *w > kMaxWeight))
    fuzz::fuzz_fail(std::string("accepted ") + name);
}

void check(const RecommendRequest& q) {
  if (q.user.has_value() == q.history.has_value())
    fuzz::fuzz_fail("accepted both or neither of user and history");
  if (q.history && q.history->size() > kMaxRequestHistory) fuzz::fuzz_fail("accepted an over-long history");
  if (q.k < 1 || q.k > kMaxK) fuzz::fuzz_fail("accepted k out of range");
  if (q.hour && (*q.hour < 0 || *q.hour >= kHours)) fuzz::fuzz_fail("accepted an hour out of range");
  if (q.hour_weight && !q.hour) fuzz::fuzz_fail("accepted hour_weight without hour");
  check_weight(q.hour_weight, "hour_weight");
  check_weight(q.cf_weight, "cf_weight");
  if (!(q.diversity >= 0 && q.diversity <= 1)) fuzz::fuzz_fail("accepted diversity out of range");
}

void check(const SimilarRequest& q) {
  if (q.k < 1 || q.k > kMaxK) fuzz::fuzz_fail("accepted k out of range");
  check_weight(q.cf_weight, "cf_weight");
}

void check(const EventRequest& e) {
  if (e.user.empty() || e.user.size() > 256 || e.item.empty() || e.item.size() > 256) {
    fuzz::fuzz_fail("accepted an empty or over-long user or item");
  }
  if (e.time < -1 || e.time > (std::int64_t{1} << 40)) fuzz::fuzz_fail("accepted a time out of range");
  if (!e.context.is_object() || e.context.size() > 32)
    fuzz::fuzz_fail("accepted a context that is no small object");
  for (const auto& [k, v] : e.context.items()) {
    if (!v.is_string()) fuzz::fuzz_fail("accepted a context value that is no string");
  }
}

template <class F>
void expect_400(F&& body) {
  fuzz::expect_clean([&] {
    try {
      body();
    } catch (const RequestError& e) {
      if (e.status() != 400)
        fuzz::fuzz_fail(fmt::format("a parse error with status {}: {}", e.status(), e.what()));
      // The server sends the message as JSON; it must survive any bytes.
      const nlohmann::json doc = {{"error", e.what()}};
      (void)doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
    } catch (const Error& e) {
      fuzz::fuzz_fail(std::string("not a RequestError (answered 500): ") + e.what());
    }
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int mode = data[0] % 5;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  expect_400([&] {
    switch (mode) {
      case 0: check(parse_recommend_request(parse_json_body(rest))); break;
      case 1: check(parse_similar_request(parse_json_body(rest))); break;
      case 2: check(parse_recommend_request(recommend_query_json(query_params(rest)))); break;
      case 3: check(parse_similar_request(similar_query_json(query_params(rest)))); break;
      default: check(parse_event_request(parse_json_body(rest))); break;
    }
  });
  return 0;
}
