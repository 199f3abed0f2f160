// Strict JSON request validation: each bad field is an error naming it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "serving/request.h"

namespace llmrec::serving {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string bad_field(const json& body) {
  try {
    parse_recommend_request(body);
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status(), 400) << body.dump();
    if (!e.field().empty()) {
      EXPECT_THAT(e.what(), HasSubstr("'" + e.field() + "'")) << body.dump();
    }
    return e.field();
  }
  return "<accepted>";
}

TEST(Request, ValidRequestsParse) {
  const auto q = parse_recommend_request(json::parse(
      R"({"user":"u12","k":7,"category":"Shoes","exclude":"purchased","hour":20,"hour_weight":0.5,"cf_weight":0.5,"diversity":0.3,"explain":true})"));
  EXPECT_EQ(q.user, "u12");
  EXPECT_FALSE(q.history.has_value());
  EXPECT_EQ(q.k, 7);
  EXPECT_EQ(q.categories, std::vector<std::string>{"Shoes"});
  EXPECT_EQ(q.exclude, Exclude::kPurchased);
  EXPECT_EQ(q.hour, 20);
  EXPECT_EQ(q.hour_weight, 0.5);
  EXPECT_EQ(q.cf_weight, 0.5);
  EXPECT_DOUBLE_EQ(q.diversity, 0.3);
  EXPECT_TRUE(q.explain);
  const auto h =
      parse_recommend_request(json::parse(R"({"history":["i1","i2"],"category":["A","B"],"cf_weight":1})"));
  EXPECT_EQ(*h.history, (std::vector<std::string>{"i1", "i2"}));
  EXPECT_EQ(h.categories, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(h.k, kDefaultK);
  EXPECT_EQ(h.exclude, Exclude::kSeen);
  EXPECT_FALSE(h.hour.has_value());
  EXPECT_EQ(h.cf_weight, 1.0);
  EXPECT_EQ(parse_recommend_request(json::parse(R"({"history":[]})")).history->size(), 0u);
  const auto t = parse_recommend_request(
      json::parse(R"({"history":["i1","i2"],"history_times":[1700000000,1700003600],"time":1700007200})"));
  EXPECT_EQ(t.history_times, (std::vector<std::int64_t>{1700000000, 1700003600}));
  EXPECT_EQ(t.time, 1700007200);
  EXPECT_FALSE(h.time.has_value());
  EXPECT_TRUE(h.history_times.empty());
}

TEST(Request, EachBadFieldIsNamed) {
  EXPECT_EQ(bad_field(json::parse(R"({"k":10})")), "user");                        // neither
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","history":["i1"]})")), "user");  // both
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","kk":3})")), "kk");
  EXPECT_EQ(bad_field(json::parse(R"({"user":5})")), "user");
  EXPECT_EQ(bad_field(json::parse(R"({"user":null})")), "user");
  EXPECT_EQ(bad_field(json::parse(R"({"history":"i1"})")), "history");
  EXPECT_EQ(bad_field(json::parse(R"({"history":["i1",2]})")), "history");
  for (const char* k : {"0", "1001", "\"10\"", "10.5", "-3", "true", "18446744073709551615"}) {
    EXPECT_EQ(bad_field(json::parse(std::string(R"({"user":"u1","k":)") + k + "}")), "k") << k;
  }
  for (const char* c : {"5", "[]", "[\"A\",1]", "{}"}) {
    EXPECT_EQ(bad_field(json::parse(std::string(R"({"user":"u1","category":)") + c + "}")), "category") << c;
  }
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","exclude":"all"})")), "exclude");
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","exclude":1})")), "exclude");
  for (const char* h : {"24", "-1", "\"20\"", "20.5"}) {
    EXPECT_EQ(bad_field(json::parse(std::string(R"({"user":"u1","hour":)") + h + "}")), "hour") << h;
  }
  for (const char* t : {"-1", "\"1700000000\"", "1.5", "100000000001", "null"}) {
    EXPECT_EQ(bad_field(json::parse(std::string(R"({"user":"u1","time":)") + t + "}")), "time") << t;
  }
  for (const char* t : {"5", "[\"5\"]", "[-1]", "{}"}) {
    EXPECT_EQ(bad_field(json::parse(std::string(R"({"history":["i1"],"history_times":)") + t + "}")),
              "history_times")
        << t;
  }
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","hour_weight":0.2})")), "hour_weight");  // no hour
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","hour":3,"hour_weight":-1})")), "hour_weight");
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","cf_weight":-0.1})")), "cf_weight");
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","cf_weight":"x"})")), "cf_weight");
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","cf_weight":1e9})")), "cf_weight");
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","diversity":1.5})")), "diversity");
  EXPECT_EQ(bad_field(json::parse(R"({"user":"u1","explain":"yes"})")), "explain");
  EXPECT_EQ(bad_field(json::parse(R"([1,2])")), "");
  EXPECT_EQ(bad_field(json::parse(R"("u1")")), "");
  std::vector<std::string> many(kMaxRequestHistory + 1, "i1");
  EXPECT_EQ(bad_field(json{{"history", many}}), "history");
}

TEST(Request, InvalidJsonIsA400) {
  try {
    parse_json_body("{\"user\": ");
    FAIL() << "no error";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));
  }
}

TEST(Request, SimilarRequests) {
  const auto q = parse_similar_request(json::parse(R"({"item":"i3","k":4,"category":"A","cf_weight":0})"));
  EXPECT_EQ(q.item, "i3");
  EXPECT_EQ(q.k, 4);
  EXPECT_EQ(q.cf_weight, 0.0);
  auto field = [](const char* body) {
    try {
      parse_similar_request(json::parse(body));
    } catch (const RequestError& e) {
      return e.field();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(field(R"({"k":4})"), "item");
  EXPECT_EQ(field(R"({"item":3})"), "item");
  EXPECT_EQ(field(R"({"item":"i3","user":"u1"})"), "user");
  EXPECT_EQ(field(R"({"item":"i3","k":0})"), "k");
}

TEST(Request, QueryStrings) {
  const json j = recommend_query_json({{"user", "u1"},
                                       {"k", "5"},
                                       {"hour", "7"},
                                       {"cf_weight", "0.25"},
                                       {"explain", "true"},
                                       {"category", "A"},
                                       {"category", "B"}});
  EXPECT_EQ(
      j, json::parse(R"({"user":"u1","k":5,"hour":7,"cf_weight":0.25,"explain":true,"category":["A","B"]})"));
  EXPECT_EQ(recommend_query_json({{"history", "i1,i2,i3"}})["history"], json::parse(R"(["i1","i2","i3"])"));
  auto field = [](const QueryParams& p) {
    try {
      parse_recommend_request(recommend_query_json(p));
    } catch (const RequestError& e) {
      return e.field();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(field({{"user", "u1"}, {"k", "abc"}}), "k");
  EXPECT_EQ(field({{"user", "u1"}, {"k", "5x"}}), "k");
  EXPECT_EQ(field({{"user", "u1"}, {"k", "1"}, {"k", "2"}}), "k");
  EXPECT_EQ(field({{"user", "u1"}, {"diversity", "lots"}}), "diversity");
  EXPECT_EQ(field({{"user", "u1"}, {"explain", "maybe"}}), "explain");
  EXPECT_EQ(field({{"user", "u1"}, {"colour", "red"}}), "colour");
  EXPECT_EQ(field({{"user", "u1"}, {"k", "7"}}), "<accepted>");
}

// Regression test of what fuzz/fuzz_request found (docs/reliability.md,
// "Fuzzing and sanitizers"): a number beyond double's range was nlohmann's
// out_of_range, not a parse_error, and got past parse_json_body: the server
// answered 500 "internal error" instead of 400.
TEST(Request, NumbersBeyondDoubleAreA400) {
  for (const char* body :
       {"66667e66666", R"({"user":"u1","k":1e400})", R"({"history":[],"cf_weight":-1E999})"}) {
    try {
      parse_json_body(body);
      ADD_FAILURE() << "accepted " << body;
    } catch (const RequestError& e) {
      EXPECT_EQ(e.status(), 400) << body;
      EXPECT_THAT(e.what(), HasSubstr("not valid JSON")) << body;
    }
  }
}

}  // namespace
}  // namespace llmrec::serving
