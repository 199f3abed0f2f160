// The HTTP server in-process on an ephemeral port, driven by httplib's
// client: valid requests, every kind of bad one, /metrics counting them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "serving/http_server.h"
#include "serving/request.h"
#include "tests/export/export_fixture.h"

namespace llmrec::serving {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

/// A response's JSON body.
json body_of(const httplib::Result& r) {
  EXPECT_TRUE(r) << "no response";
  if (!r) return nullptr;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  return json::parse(r->body);
}

/// A JSON error with `status` whose message holds `needle`.
void expect_error(const httplib::Result& r, int status, const std::string& needle) {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  json j = body_of(r);
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr(needle));
}

class HttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(llmrec::testing::temp_dir("serving_http"));
    llmrec::testing::ExportSpec spec;
    spec.items = 500;
    spec.users = 20;
    auto fx = llmrec::testing::make_export_fixture(spec);
    llmrec::testing::write_export_fixture(*dir_ + "/export.h5", fx);
    engine_ = new std::shared_ptr<const RecommendEngine>(RecommendEngine::open(*dir_ + "/export.h5"));
  }
  static void TearDownTestSuite() {
    delete engine_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    HttpServerOptions o;
    o.port = 0;
    o.threads = 4;
    o.max_body_bytes = std::size_t{64} * 1024;
    server_ = std::make_unique<HttpServer>(*engine_, o);
    port_ = server_->bind();
    server_->start();
    ASSERT_TRUE(server_->running());
  }
  void TearDown() override { server_->stop(); }

  httplib::Client client() const { return httplib::Client("127.0.0.1", port_); }

  static std::string* dir_;
  static std::shared_ptr<const RecommendEngine>* engine_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

std::string* HttpTest::dir_ = nullptr;
std::shared_ptr<const RecommendEngine>* HttpTest::engine_ = nullptr;

TEST_F(HttpTest, ValidRequests) {
  auto cli = client();
  auto r =
      cli.Post("/recommend", R"({"user":"u3","k":5,"explain":true,"cf_weight":0.5})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  json j = body_of(r);
  EXPECT_EQ(j["user"], "u3");
  ASSERT_EQ(j["items"].size(), 5u);
  EXPECT_TRUE(j["items"][0].contains("text"));
  // Explanations name history items by id and the start of their text.
  ASSERT_FALSE(j["items"][0]["because"].empty()) << j.dump();
  for (const char* part : {"because", "cf"}) {
    for (const auto& h : j["items"][0][part]) {
      const std::string id = h["id"];
      const auto& data = (*engine_)->data();
      const std::int32_t row = data.find_item(id);
      ASSERT_GE(row, 0) << id;
      const std::string& text = data.item_text[static_cast<std::size_t>(row)];
      const std::string shown = h["text"];
      EXPECT_EQ(shown, text.size() <= 80 ? text : text.substr(0, 77) + "...") << part << " " << id;
      EXPECT_FALSE(shown.empty()) << part << " " << id;
    }
  }
  EXPECT_TRUE(j["items"][0].contains("cold"));
  EXPECT_TRUE(j["took_ms"].is_number());
  // The same request as a GET query string gives the same items.
  auto g = cli.Get("/recommend?user=u3&k=5&cf_weight=0.5");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->status, 200) << g->body;
  json gj = body_of(g);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(gj["items"][i]["id"], j["items"][i]["id"]);
  // A fresh history, with a category filter.
  auto h = cli.Post("/recommend", R"({"history":["i1","i2","i3"],"k":3,"category":["cat1","cat2"]})",
                    "application/json");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200) << h->body;
  const json hist = body_of(h);  // not a range-for over body_of(h)["items"]: the temporary dies first
  for (const auto& it : hist["items"])
    EXPECT_THAT(it["category"].get<std::string>(), ::testing::AnyOf("cat1", "cat2"));
  auto s = cli.Post("/similar", R"({"item":"i9","k":4})", "application/json");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200) << s->body;
  EXPECT_EQ(body_of(s)["items"].size(), 4u);
  auto sg = cli.Get("/similar?item=i9&k=2");
  ASSERT_TRUE(sg);
  EXPECT_EQ(sg->status, 200);
  EXPECT_EQ(body_of(sg)["items"].size(), 2u);
  auto health = cli.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  json hj = body_of(health);
  EXPECT_EQ(hj["status"], "ok");
  EXPECT_EQ(hj["items"], 500);
  EXPECT_EQ(hj["users"], 20);
  EXPECT_EQ(hj["model_sha256"], std::string(64, 'a'));
  EXPECT_THAT(hj["export"].get<std::string>(), HasSubstr("export.h5"));
}

TEST_F(HttpTest, BadRequestsGetJsonErrorsAndAreCounted) {
  auto cli = client();
  expect_error(cli.Post("/recommend", "{\"user\": ", "application/json"), 400, "not valid JSON");
  expect_error(cli.Post("/recommend", R"({"user":"u1","bogus":1})", "application/json"), 400, "'bogus'");
  expect_error(cli.Post("/recommend", R"({"user":"u1","k":0})", "application/json"), 400, "'k'");
  expect_error(cli.Get("/recommend?user=u1&k=ten"), 400, "'k'");
  expect_error(cli.Post("/recommend", R"({"user":""})", "application/json"), 400, "'user'");
  {  // an unknown user: the popularity fallback, flagged
    auto r = cli.Post("/recommend", R"({"user":"nobody","k":3})", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    json j = body_of(r);
    EXPECT_EQ(j["fallback"], "popularity") << r->body;
    EXPECT_EQ(j["items"].size(), 3u);
  }
  expect_error(cli.Post("/recommend", R"({"history":["i1","zzz"]})", "application/json"), 404, "'zzz'");
  expect_error(cli.Post("/similar", R"({"item":"zzz"})", "application/json"), 404, "unknown item 'zzz'");
  auto del = cli.Delete("/recommend");
  expect_error(del, 405, "DELETE");
  EXPECT_EQ(del->get_header_value("Allow"), "GET, POST");
  expect_error(cli.Post("/health", "{}", "application/json"), 405, "POST");
  expect_error(cli.Get("/nowhere"), 404, "no such endpoint");
  expect_error(cli.Post("/recommend", std::string(std::size_t{200} * 1024, ' '), "application/json"), 413,
               "too large");

  auto m = cli.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  json j = body_of(m);
  EXPECT_EQ(j["requests"]["/recommend"]["400"], 5) << j.dump();
  EXPECT_EQ(j["requests"]["/recommend"]["404"], 1) << j.dump();
  EXPECT_EQ(j["requests"]["/recommend"]["405"], 1) << j.dump();
  EXPECT_EQ(j["requests"]["/recommend"]["413"], 1) << j.dump();
  EXPECT_EQ(j["requests"]["/similar"]["404"], 1) << j.dump();
  EXPECT_EQ(j["requests"]["/health"]["405"], 1) << j.dump();
  EXPECT_EQ(j["requests"]["other"]["404"], 1) << j.dump();
  EXPECT_EQ(j["requests_total"], 12);
  EXPECT_EQ(j["errors"]["client"], 11);
  EXPECT_EQ(j["errors"]["server"], 0);
  EXPECT_EQ(j["latency_ms"]["window"], 12);
  EXPECT_LE(j["latency_ms"]["p50"].get<double>(), j["latency_ms"]["p99"].get<double>());
  EXPECT_LE(j["latency_ms"]["p99"].get<double>(), j["latency_ms"]["max"].get<double>());
  EXPECT_GE(j["uptime_s"].get<double>(), 0.0);
  // The server is still fine.
  auto ok = cli.Get("/recommend?user=u1");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  auto m2 = body_of(cli.Get("/metrics"));
  EXPECT_EQ(m2["requests"]["/recommend"]["200"], 2);  // the unknown user's fallback and this one
  EXPECT_EQ(m2["requests"]["/metrics"]["200"], 1);    // the first /metrics call
}

TEST_F(HttpTest, ConcurrentClients) {
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto cli = client();
      for (int n = 0; n < 15; ++n) {
        const std::string body =
            json{{"user", "u" + std::to_string((t * 15 + n) % 20)}, {"k", 7}, {"diversity", 0.3}}.dump();
        auto r = cli.Post("/recommend", body, "application/json");
        if (r && r->status == 200 && json::parse(r->body)["items"].size() == 7) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 90);
  EXPECT_EQ(server_->metrics()["requests"]["/recommend"]["200"], 90);
}

TEST_F(HttpTest, MetricsInPrometheusTextWhenAsked) {
  auto cli = client();
  ASSERT_EQ(cli.Get("/recommend?user=u1")->status, 200);
  ASSERT_EQ(cli.Get("/nowhere")->status, 404);
  // Prometheus' scraper asks for OpenMetrics or text/plain.
  auto r = cli.Get("/metrics",
                   {{"Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(r->body, HasSubstr("# TYPE llmrec_requests_total counter\n"));
  EXPECT_THAT(r->body, HasSubstr("llmrec_requests_total{endpoint=\"/recommend\",status=\"200\"} 1\n"));
  EXPECT_THAT(r->body, HasSubstr("llmrec_requests_total{endpoint=\"other\",status=\"404\"} 1\n"));
  EXPECT_THAT(r->body, HasSubstr("llmrec_errors_total{kind=\"client\"} 1\n"));
  EXPECT_THAT(r->body, HasSubstr("llmrec_request_latency_ms{quantile=\"0.99\"} "));
  EXPECT_THAT(r->body, HasSubstr("llmrec_export_items 500\n"));
  // Every sample line is `name{labels} value` or `name value`.
  std::istringstream lines(r->body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_THAT(line, ::testing::MatchesRegex(
                          "llmrec_[a-z_]+(\\{[a-z]+=\"[^\"]*\"(,[a-z]+=\"[^\"]*\")*\\})? [0-9.e+-]+"))
        << line;
  }
  auto q = cli.Get("/metrics?format=prometheus");
  ASSERT_TRUE(q);
  EXPECT_THAT(q->body, HasSubstr("llmrec_uptime_seconds "));
  // curl's default (Accept: */*) and ?format=json keep the JSON document.
  EXPECT_EQ(body_of(cli.Get("/metrics"))["requests"]["/recommend"]["200"], 1);
  EXPECT_EQ(body_of(cli.Get("/metrics?format=json", {{"Accept", "text/plain"}}))["requests"]["other"]["404"],
            1);
  expect_error(cli.Get("/metrics?format=xml"), 400, "format must be json or prometheus");
}

TEST_F(HttpTest, BearerTokenOnAllButHealthAndAnAccessLogWithoutIds) {
  std::mutex mu;
  std::vector<std::string> log;
  HttpServerOptions o;
  o.port = 0;
  o.threads = 2;
  o.token = "s3cret-Token";
  o.access_log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    log.push_back(line);
  };
  HttpServer guarded(*engine_, o);
  const int port = guarded.bind();
  guarded.start();
  httplib::Client cli("127.0.0.1", port);
  EXPECT_EQ(cli.Get("/health")->status, 200);  // load balancers probe without a token
  auto none = cli.Get("/recommend?user=u3&k=5");
  expect_error(none, 401, "bearer token");
  EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer realm=\"llmrec\"");
  expect_error(cli.Get("/recommend?user=u3", {{"Authorization", "Bearer s3cret-Toke"}}), 401, "bearer token");
  expect_error(cli.Get("/recommend?user=u3", {{"Authorization", "Bearer s3cret-Token2"}}), 401,
               "bearer token");
  expect_error(cli.Get("/recommend?user=u3", {{"Authorization", "Basic s3cret-Token"}}), 401, "bearer token");
  expect_error(cli.Get("/metrics"), 401, "bearer token");
  const httplib::Headers auth = {{"Authorization", "Bearer s3cret-Token"}};
  auto ok = cli.Get("/recommend?user=u3&k=5", auth);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  ASSERT_EQ(cli.Post("/recommend", auth, R"({"history": ["i7", "i9"], "k": 3})", "application/json")->status,
            200);
  json m = body_of(cli.Get("/metrics", auth));
  EXPECT_EQ(m["requests"]["/recommend"]["401"], 4) << m.dump();
  EXPECT_EQ(m["requests"]["/metrics"]["401"], 1) << m.dump();
  guarded.stop();
  // One line per request, in the order answered; never an id, a history or
  // the token.
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(log.size(), 9u);
  EXPECT_THAT(log[0], ::testing::MatchesRegex(
                          "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z GET /health 200 [0-9.]+ ms -"));
  EXPECT_THAT(log[1], ::testing::MatchesRegex(".*Z GET /recommend 401 [0-9.]+ ms -"));
  EXPECT_THAT(log[7], ::testing::MatchesRegex(".*Z POST /recommend 200 [0-9.]+ ms default"));
  for (const auto& line : log) {
    EXPECT_THAT(line, ::testing::Not(HasSubstr("u3")));
    EXPECT_THAT(line, ::testing::Not(HasSubstr("i7")));
    EXPECT_THAT(line, ::testing::Not(HasSubstr("s3cret")));
    EXPECT_THAT(line, ::testing::Not(HasSubstr("?")));
  }
}

TEST_F(HttpTest, ReloadSwapsTheExportWhileRequestsGoOnAndRefusesABadOne) {
  namespace fs = std::filesystem;
  const std::string live = *dir_ + "/live.h5", a = *dir_ + "/a.h5", b = *dir_ + "/b.h5";
  llmrec::testing::ExportSpec spec;
  spec.items = 500;
  spec.users = 20;
  llmrec::testing::write_export_fixture(a, llmrec::testing::make_export_fixture(spec));
  spec.items = 300;
  llmrec::testing::write_export_fixture(b, llmrec::testing::make_export_fixture(spec));
  auto install = [&](const std::string& from) {  // a deploy: copy beside it, rename over it
    fs::copy_file(from, live + ".new", fs::copy_options::overwrite_existing);
    fs::rename(live + ".new", live);
  };
  install(a);
  HttpServerOptions o;
  o.port = 0;
  o.threads = 4;
  HttpServer server(RecommendEngine::open(live), o);
  const int port = server.bind();
  server.start();
  httplib::Client cli("127.0.0.1", port);
  EXPECT_EQ(body_of(cli.Get("/health"))["items"], 500);

  install(b);
  auto r = cli.Post("/admin/reload", "", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["items"], 300);
  EXPECT_EQ(body_of(cli.Get("/health"))["items"], 300);
  expect_error(cli.Post("/admin/reload", R"({"export": "/etc/passwd"})", "application/json"), 400,
               "takes no fields");

  // A damaged file: refused, the export loaded before keeps serving.
  std::ofstream(live, std::ios::binary | std::ios::trunc) << "not an export";
  expect_error(cli.Post("/admin/reload", "", "application/json"), 409,
               "still serving the export loaded before (300 items");
  EXPECT_EQ(body_of(cli.Get("/health"))["items"], 300);
  ASSERT_EQ(cli.Get("/recommend?user=u1&k=5")->status, 200);
  // An intact export of another format version: refused by name, the old one serves on.
  llmrec::testing::WriteHooks future;
  future.skip = {"version"};
  future.tamper = [](h5::File& g) { g.set_attr("/", "version", std::int64_t{2}); };
  llmrec::testing::write_export_fixture(live, llmrec::testing::make_export_fixture(spec), future);
  expect_error(cli.Post("/admin/reload", "", "application/json"), 409, "export version 2 is not supported");
  EXPECT_EQ(body_of(cli.Get("/health"))["items"], 300);
  ASSERT_EQ(cli.Get("/recommend?user=u1&k=5")->status, 200);

  // Ten reloads while four clients keep asking: not one request fails.
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      httplib::Client c("127.0.0.1", port);
      int n = 0;
      while (!stop.load()) {
        auto x = c.Get(("/recommend?user=u" + std::to_string((t * 7 + n++) % 20) + "&k=10").c_str());
        if (x && x->status == 200) {
          ++answered;
        } else {
          ++failed;
        }
      }
    });
  }
  for (int i = 0; i < 10; ++i) {
    install(i % 2 == 0 ? a : b);
    auto y = cli.Post("/admin/reload", "", "application/json");
    ASSERT_TRUE(y);
    EXPECT_EQ(y->status, 200) << y->body;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop.store(true);
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(answered.load(), 40);
  EXPECT_EQ(body_of(cli.Get("/health"))["items"], 300);  // the tenth install was b
  json m = server.metrics();
  EXPECT_EQ(m["reloads"]["ok"], 11);
  EXPECT_EQ(m["reloads"]["refused"], 2);
  server.stop();
}

/// GET /recommend for `user`, k = 20.
json recommend(httplib::Client& c, const std::string& user) {
  auto r = c.Get(("/recommend?user=" + user + "&k=20").c_str());
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
  return json::parse(r->body);
}

/// The item ids of a recommendation, best first.
std::vector<std::string> ids(const json& rec) {
  std::vector<std::string> out;
  for (const auto& i : rec["items"]) out.push_back(i["id"].get<std::string>());
  return out;
}

/// Bad events are refused by field (nothing is recorded).
void expect_bad_events_refused(httplib::Client& cli) {
  expect_error(cli.Post("/events", R"({"user": "u3", "item": "nope"})", "application/json"), 404,
               "unknown item id 'nope'");
  expect_error(cli.Post("/events", R"({"user": "u3"})", "application/json"), 400, "missing");
  expect_error(cli.Post("/events", R"({"user": "u3", "item": "i7", "type": "teleport"})", "application/json"),
               400, "not an event type");
  expect_error(cli.Post("/events", R"({"user": "u3", "item": "i7", "time": -5})", "application/json"), 400,
               "time");
  expect_error(
      cli.Post("/events", R"({"user": "u3", "item": "i7", "context": {"device": 3}})", "application/json"),
      400, "context");
}

TEST_F(HttpTest, EventsJoinTheHistoryAtOnceAndSurviveARestart) {
  const std::string log = *dir_ + "/events.jsonl";
  std::filesystem::remove(log);
  HttpServerOptions o;
  o.port = 0;
  o.threads = 2;
  o.events_log = log;
  std::string first_choice;
  {
    HttpServer server(*engine_, o);
    const int port = server.bind();
    server.start();
    httplib::Client cli("127.0.0.1", port);
    const json before = recommend(cli, "u3");
    first_choice = before["items"][0]["id"].get<std::string>();
    // The user interacts with the top item: it is seen now, so it leaves the ranking at once.
    auto r = cli.Post("/events", json{{"user", "u3"}, {"item", first_choice}, {"time", 1700000000}}.dump(),
                      "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(json::parse(r->body)["events_since_export"], 1);
    const json after = recommend(cli, "u3");
    EXPECT_EQ(after["history_length"].get<int>(), before["history_length"].get<int>() + 1);
    const auto after_ids = ids(after);
    EXPECT_EQ(std::count(after_ids.begin(), after_ids.end(), first_choice), 0)
        << first_choice << " still ranked";
    // A user the export does not know is ranked from its events, not the popularity fallback.
    ASSERT_EQ(
        cli.Post("/events", json{{"user", "newcomer"}, {"item", "i7"}}.dump(), "application/json")->status,
        200);
    const json fresh = recommend(cli, "newcomer");
    EXPECT_TRUE(fresh["fallback"].is_null()) << fresh.dump();
    EXPECT_EQ(fresh["history_length"], 1);
    expect_bad_events_refused(cli);
    EXPECT_EQ(server.metrics()["events"]["recorded"], 2);
    server.stop();
  }
  // The log: one JSON line per acknowledged event, nothing else.
  {
    std::ifstream in(log);
    std::vector<json> lines;
    std::string line;
    while (std::getline(in, line)) lines.push_back(json::parse(line));
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0], (json{{"user", "u3"}, {"item", first_choice}, {"time", 1700000000}}));
    EXPECT_EQ(lines[1]["user"], "newcomer");
    EXPECT_GT(lines[1]["time"].get<std::int64_t>(), 1700000000);
  }
  // A crash cut the last line short: a restart replays the whole lines and skips the cut one.
  std::ofstream(log, std::ios::app) << R"({"user": "u3", "ite)";
  HttpServer again(*engine_, o);
  const int port = again.bind();
  again.start();
  httplib::Client cli("127.0.0.1", port);
  const json replayed = recommend(cli, "u3");
  const auto replayed_ids = ids(replayed);
  EXPECT_EQ(std::count(replayed_ids.begin(), replayed_ids.end(), first_choice), 0);
  json m = again.metrics();
  EXPECT_EQ(m["events"]["replayed"], 2);
  EXPECT_EQ(m["events"]["skipped_lines"], 1);
  ASSERT_EQ(cli.Post("/events", json{{"user", "u4"}, {"item", "i9"}}.dump(), "application/json")->status,
            200);
  again.stop();
  std::ifstream in(log);
  std::string line;
  int whole = 0;
  while (std::getline(in, line)) whole += json::accept(line) ? 1 : 0;
  EXPECT_EQ(whole, 3) << "the event after the cut line starts a line of its own";
}

TEST(AbArms, UsersStayInTheirArmAndArmsGetTheirShares) {
  int first = 0, tenth = 0, moved = 0;
  for (int u = 0; u < 10000; ++u) {
    const std::string id = "user-" + std::to_string(u);
    const std::size_t a = ab_arm_of(id, {1, 1}, "exp1");
    EXPECT_EQ(a, ab_arm_of(id, {1, 1}, "exp1"));
    first += a == 0 ? 1 : 0;
    tenth += ab_arm_of(id, {9, 1}, "exp1") == 1 ? 1 : 0;
    moved += a != ab_arm_of(id, {1, 1}, "exp2") ? 1 : 0;
  }
  EXPECT_NEAR(first, 5000, 200);
  EXPECT_NEAR(tenth, 1000, 120);
  EXPECT_NEAR(moved, 5000, 200) << "another salt, another assignment";
}

TEST_F(HttpTest, AbArmsNameThemselvesAndClicksAreCreditedToTheArmThatShowedTheItem) {
  const std::string b = *dir_ + "/arm_b.h5", log = *dir_ + "/ab_events.jsonl";
  std::filesystem::remove(log);
  llmrec::testing::ExportSpec spec;
  spec.items = 300;
  spec.users = 20;
  llmrec::testing::write_export_fixture(b, llmrec::testing::make_export_fixture(spec));
  HttpServerOptions o;
  o.port = 0;
  o.threads = 2;
  o.events_log = log;
  o.ab_salt = "test";
  std::mutex access_mu;
  std::vector<std::string> access;
  o.access_log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(access_mu);
    access.push_back(line);
  };
  HttpServer server({{"control", 1.0, *engine_}, {"candidate", 1.0, RecommendEngine::open(b)}}, o);
  const int port = server.bind();
  server.start();
  httplib::Client cli("127.0.0.1", port);
  std::map<std::string, int> answered;
  std::string clicker, clicked_item, clicker_arm;
  for (int u = 0; u < 20; ++u) {
    const std::string user = "u" + std::to_string(u);
    auto r = cli.Get(("/recommend?user=" + user + "&k=5").c_str());
    ASSERT_TRUE(r && r->status == 200);
    const json j = json::parse(r->body);
    const std::string expected = ab_arm_of(user, {1, 1}, "test") == 0 ? "control" : "candidate";
    EXPECT_EQ(j["arm"], expected) << user;
    ++answered[expected];
    if (clicker.empty()) {
      clicker = user;
      clicked_item = j["items"][0]["id"].get<std::string>();
      clicker_arm = expected;
    }
  }
  EXPECT_GT(answered["control"], 0);
  EXPECT_GT(answered["candidate"], 0);
  // A click on a shown item counts once; a click on an item not shown does not.
  const std::string other = clicked_item == "i1" ? "i2" : "i1";
  for (const auto& [item, type] : std::vector<std::pair<std::string, std::string>>{
           {other, "click"}, {clicked_item, "view"}, {clicked_item, "click"}, {clicked_item, "click"}}) {
    auto e = cli.Post("/events", json{{"user", clicker}, {"item", item}, {"type", type}}.dump(),
                      "application/json");
    ASSERT_TRUE(e);
    ASSERT_EQ(e->status, 200) << e->body;
  }
  // An item only the control's export holds (500 items, the candidate's
  // 300): an event is checked against the export of the user's arm.
  const std::string only_control = "i499";
  ASSERT_GE((*engine_)->data().find_item(only_control), 0);
  for (int u = 0; u < 20; ++u) {
    const std::string user = "u" + std::to_string(u);
    auto e = cli.Post("/events", json{{"user", user}, {"item", only_control}, {"type", "view"}}.dump(),
                      "application/json");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->status, ab_arm_of(user, {1, 1}, "test") == 0 ? 200 : 404) << user << " " << e->body;
  }
  const json m = server.metrics();
  ASSERT_TRUE(m.contains("arms")) << m.dump();
  for (const auto& name : {"control", "candidate"}) {
    EXPECT_EQ(m["arms"][name]["recommendations"], answered[name]) << name;
    EXPECT_EQ(m["arms"][name]["clicks"], std::string(name) == clicker_arm ? 1 : 0) << name;
  }
  EXPECT_EQ(m["arms"]["candidate"]["items"], 300);
  const std::string text = server.metrics_prometheus();
  EXPECT_THAT(text, HasSubstr("llmrec_arm_clicks_total{arm=\"" + clicker_arm + "\"} 1\n"));
  server.stop();
  // The access log names the arm of every answer ("-" where no arm answers).
  std::map<std::string, int> logged;
  for (const auto& line : access) {
    const std::string arm = line.substr(line.rfind(' ') + 1);
    EXPECT_EQ(arm, line.find(" /recommend 200 ") != std::string::npos ? arm : std::string("-")) << line;
    ++logged[arm];
  }
  EXPECT_EQ(logged["control"], answered["control"]);
  EXPECT_EQ(logged["candidate"], answered["candidate"]);
  EXPECT_EQ(logged["-"], 24) << "the four events and the twenty views";
  EXPECT_THROW(HttpServer({{"a", 1.0, *engine_}, {"a", 1.0, *engine_}}, o), ConfigError);
  EXPECT_THROW(HttpServer({{"a", 1.0, *engine_}, {"b", 0.0, *engine_}}, o), ConfigError);
  EXPECT_THROW(HttpServer({{"a", 1.0, *engine_}, {"b c", 1.0, *engine_}}, o), ConfigError);
  EXPECT_THROW(HttpServer({{"a", 1.0, *engine_}, {"b\"", 1.0, *engine_}}, o), ConfigError);
}

TEST_F(HttpTest, StopsAndCannotBindTwice) {
  HttpServerOptions o;
  o.port = port_;  // taken by the running server
  HttpServer other(*engine_, o);
  EXPECT_THROW(other.bind(), IoError);
  server_->stop();
  EXPECT_FALSE(server_->running());
  auto r = client().Get("/health");
  EXPECT_FALSE(r);
}

}  // namespace
}  // namespace llmrec::serving
