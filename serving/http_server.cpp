#include "serving/http_server.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/error.h"
#include "common/sha256.h"
#include "serving/request.h"

namespace llmrec::serving {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Per worker thread: when the request being handled started, and whether
// its metrics are recorded already. httplib handles one request at a time
// per thread, from the pre-routing handler to the logger.
thread_local Clock::time_point t_start;
thread_local bool t_started = false;
thread_local bool t_recorded = false;
thread_local int t_intra_threads = 0;
thread_local int t_arm = -1;  // the A/B arm that answered the request, -1 = none

const std::map<std::string, std::vector<std::string>>& allowed_methods() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"/recommend", {"GET", "POST"}}, {"/similar", {"GET", "POST"}}, {"/health", {"GET"}},
      {"/metrics", {"GET"}},           {"/admin/reload", {"POST"}},   {"/events", {"POST"}}};
  return m;
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void set_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void set_error(httplib::Response& res, int status, const std::string& message) {
  set_json(res, status, {{"error", message}});
}

QueryParams query_params(const httplib::Request& req) {
  QueryParams out;
  for (const auto& [k, v] : req.params) out.emplace_back(k, v);
  return out;
}

}  // namespace

/// Events received by POST /events: the durable log and each user's items
/// since the export, oldest first (item ids, so that they survive a reload).
struct LiveEvents {
  static constexpr std::size_t kPerUser = 1000;  ///< the most recent events kept per user
  std::mutex mu;
  struct Event {
    std::string item;
    std::int64_t time = 0;  ///< unix seconds
    std::map<std::string, std::string> context;
  };
  std::unordered_map<std::string, std::deque<Event>> items;
  int fd = -1;
  std::int64_t recorded = 0, replayed = 0, skipped = 0;

  void add(const EventRequest& e) {
    auto& q = items[e.user];
    q.push_back({e.item, e.time, e.context.get<std::map<std::string, std::string>>()});
    if (q.size() > kPerUser) q.pop_front();
  }
  ~LiveEvents() {
    if (fd >= 0) ::close(fd);
  }
};

/// The latencies of the last `size` requests (a ring buffer).
struct LatencyWindow {
  std::vector<double> ms;
  std::size_t next = 0;
  void add(double value, std::size_t size) {
    if (value < 0 || size == 0) return;
    if (ms.size() < size) {
      ms.push_back(value);
    } else {
      ms[next] = value;
      next = (next + 1) % size;
    }
  }
  std::vector<double> sorted() const {
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v;
  }
};

/// One A/B arm: its export (swapped by reloads) and what it answered.
struct ArmState {
  std::string name;
  double share = 1.0;
  /// The engine requests use; reload() swaps it while requests run (each
  /// request holds the one it started with until it is answered).
  std::shared_ptr<const RecommendEngine> engine_now;
  // under Impl::mu
  std::int64_t recommendations = 0, clicks = 0;
  LatencyWindow latency;
};

/// What a user was last shown, to credit a later click to the arm.
struct Shown {
  std::size_t arm = 0;
  std::int64_t time = 0;
  std::vector<std::string> items;
  bool clicked = false;
};

struct HttpServer::Impl {
  mutable LiveEvents events;
  std::vector<std::unique_ptr<ArmState>> arms;
  std::mutex reload_mu;
  std::int64_t reloads_ok = 0, reloads_failed = 0;  // under mu
  std::unordered_map<std::string, Shown> shown;     // under mu
  std::shared_ptr<const RecommendEngine> current(std::size_t arm = 0) const {
    return std::atomic_load(&arms[arm]->engine_now);
  }
  std::size_t pick_arm(const RecommendRequest& q) const {
    std::string key;
    if (q.user) {
      key = *q.user;
    } else if (q.history) {
      for (const auto& id : *q.history) key += id + ",";
    }
    return arm_of(key);
  }
  /// The arm of a user id (or a fresh history's key).
  std::size_t arm_of(const std::string& key) const {
    if (arms.size() == 1) return 0;
    std::vector<double> shares;
    for (const auto& a : arms) shares.push_back(a->share);
    return ab_arm_of(key, shares, options.ab_salt);
  }
  static std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  /// A recommend request: its arm's engine with the user's live events;
  /// the answer names the arm when there are several.
  json recommend(RecommendRequest q) {
    const std::size_t a = pick_arm(q);
    const auto engine = current(a);
    add_live(*engine, q);
    const Recommendation rec = engine->recommend(q);
    json out = recommendation_json(engine->data(), rec);
    if (arms.size() > 1) {
      out["arm"] = arms[a]->name;
      if (q.user) {
        Shown s{a, unix_now(), {}, false};
        for (const auto& it : rec.items)
          s.items.push_back(engine->data().item_ids[static_cast<std::size_t>(it.item)]);
        std::lock_guard<std::mutex> lock(mu);
        if (shown.size() > 1000000) shown.clear();  // bounded memory: the oldest attributions are dropped
        shown[*q.user] = std::move(s);
      }
    }
    t_arm = static_cast<int>(a);
    return out;
  }
  HttpServerOptions options;
  httplib::Server server;
  int port = -1;
  bool bound = false;
  std::thread thread;
  std::mutex run_mu;
  Clock::time_point started = Clock::now();

  mutable std::mutex mu;
  std::map<std::string, std::map<int, std::int64_t>> counts;
  std::int64_t total = 0, client_errors = 0, server_errors = 0;
  LatencyWindow latency;  // the last latency_window requests

  void record(const httplib::Request& req, int status) {
    if (t_recorded) return;
    t_recorded = true;
    const double ms =
        t_started ? std::chrono::duration<double, std::milli>(Clock::now() - t_start).count() : -1.0;
    const std::string endpoint = allowed_methods().count(req.path) ? req.path : std::string("other");
    std::lock_guard<std::mutex> lock(mu);
    if (options.access_log) {
      // The path alone: a query string or a body would put user ids and
      // histories into the log. Unknown paths are logged as "other".
      const auto now = std::chrono::system_clock::now();
      const std::time_t secs = std::chrono::system_clock::to_time_t(now);
      const auto millis =
          std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
      std::tm utc{};
      gmtime_r(&secs, &utc);
      char stamp[32];
      std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
      const bool known_method = req.method == "GET" || req.method == "POST" || req.method == "HEAD" ||
                                req.method == "PUT" || req.method == "DELETE" || req.method == "OPTIONS" ||
                                req.method == "PATCH";
      // The arm that answered ("-" for requests no arm answers).
      const bool armed = t_arm >= 0 && static_cast<std::size_t>(t_arm) < arms.size();
      options.access_log(fmt::format("{}.{:03d}Z {} {} {} {:.3f} ms {}", stamp, millis,
                                     known_method ? req.method : std::string("OTHER"), endpoint, status,
                                     std::max(ms, 0.0),
                                     armed ? arms[static_cast<std::size_t>(t_arm)]->name : std::string("-")));
    }
    ++counts[endpoint][status];
    ++total;
    if (t_arm >= 0 && status == 200 && static_cast<std::size_t>(t_arm) < arms.size()) {
      ArmState& a = *arms[static_cast<std::size_t>(t_arm)];
      ++a.recommendations;
      a.latency.add(ms, options.latency_window);
    }
    t_arm = -1;
    if (status >= 500) {
      ++server_errors;
    } else if (status >= 400) {
      ++client_errors;
    }
    latency.add(ms, options.latency_window);
  }

  /// Runs `body`, turning every exception into a JSON error, and records
  /// the request's metrics before the response goes out.
  template <class F>
  httplib::Server::Handler guarded(F body) {
    return [this, body](const httplib::Request& req, httplib::Response& res) {
      try {
        body(req, res);
      } catch (const RequestError& e) {
        set_error(res, e.status(), e.what());
      } catch (const std::exception& e) {
        set_error(res, 500, std::string("internal error: ") + e.what());
      } catch (...) {
        set_error(res, 500, "internal error: unknown exception");
      }
      record(req, res.status);
    };
  }

  void routes() {
    server.Post("/recommend", guarded([this](const httplib::Request& req, httplib::Response& res) {
                  set_json(res, 200, recommend(parse_recommend_request(parse_json_body(req.body))));
                }));
    server.Get("/recommend", guarded([this](const httplib::Request& req, httplib::Response& res) {
                 set_json(res, 200,
                          recommend(parse_recommend_request(recommend_query_json(query_params(req)))));
               }));
    server.Post("/similar", guarded([this](const httplib::Request& req, httplib::Response& res) {
                  const SimilarRequest q = parse_similar_request(parse_json_body(req.body));
                  const auto engine = current();
                  set_json(res, 200, similar_json(engine->data(), engine->similar(q)));
                }));
    server.Get("/similar", guarded([this](const httplib::Request& req, httplib::Response& res) {
                 const SimilarRequest q = parse_similar_request(similar_query_json(query_params(req)));
                 const auto engine = current();
                 set_json(res, 200, similar_json(engine->data(), engine->similar(q)));
               }));
    server.Get("/health", guarded([this](const httplib::Request&, httplib::Response& res) {
                 set_json(res, 200, health());
               }));
    server.Post("/events", guarded([this](const httplib::Request& req, httplib::Response& res) {
                  set_json(res, 200, record_event(parse_event_request(parse_json_body(req.body))));
                }));
    server.Post("/admin/reload", guarded([this](const httplib::Request& req, httplib::Response& res) {
                  if (!req.body.empty() && parse_json_body(req.body) != json::object()) {
                    throw RequestError(
                        400, "body",
                        "/admin/reload takes no fields: it re-reads the export file the server "
                        "was started with");
                  }
                  set_json(res, 200, reload(""));
                }));
    server.Get("/metrics", guarded([this](const httplib::Request& req, httplib::Response& res) {
                 const std::string accept = req.get_header_value("Accept");
                 const bool text = req.get_param_value("format") == "prometheus" ||
                                   accept.find("text/plain") != std::string::npos ||
                                   accept.find("openmetrics") != std::string::npos;
                 if (req.has_param("format") && req.get_param_value("format") != "prometheus" &&
                     req.get_param_value("format") != "json") {
                   throw RequestError(400, "format", "format must be json or prometheus");
                 }
                 if (text && req.get_param_value("format") != "json") {
                   res.status = 200;
                   res.set_content(metrics_prometheus(), "text/plain; version=0.0.4; charset=utf-8");
                 } else {
                   set_json(res, 200, metrics());
                 }
               }));
  }

  void hooks() {
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_start = Clock::now();
      t_started = true;
      t_recorded = false;
      t_arm = -1;
      if (t_intra_threads != options.intra_op_threads && options.intra_op_threads > 0) {
        at::set_num_threads(options.intra_op_threads);
        t_intra_threads = options.intra_op_threads;
      }
      if (!options.token.empty() && req.path != "/health" && !authorised(req)) {
        res.set_header("WWW-Authenticate", "Bearer realm=\"llmrec\"");
        set_error(res, 401,
                  "missing or wrong bearer token: send 'Authorization: Bearer <token>' (serve --token-file)");
        record(req, 401);
        return httplib::Server::HandlerResponse::Handled;
      }
      auto it = allowed_methods().find(req.path);
      if (it == allowed_methods().end()) return httplib::Server::HandlerResponse::Unhandled;
      const auto& methods = it->second;
      const bool get_like =
          req.method == "HEAD" && std::find(methods.begin(), methods.end(), "GET") != methods.end();
      if (get_like || std::find(methods.begin(), methods.end(), req.method) != methods.end()) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      std::string allow;
      for (const auto& m : methods) allow += (allow.empty() ? "" : ", ") + m;
      res.set_header("Allow", allow);
      set_error(res, 405,
                fmt::format("method {} is not allowed on {} (allowed: {})", req.method, req.path, allow));
      record(req, 405);
      return httplib::Server::HandlerResponse::Handled;
    });
    // Errors httplib produces itself (no route, body too large, a request
    // it cannot parse) get a JSON body too; our own errors keep theirs.
    server.set_error_handler(
        httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
          if (res.body.empty()) {
            std::string message;
            switch (res.status) {
              case 404: message = fmt::format("no such endpoint: {} {}", req.method, req.path); break;
              case 413:
                message = fmt::format("request body too large: at most {} bytes are accepted",
                                      options.max_body_bytes);
                break;
              case 400: message = "malformed HTTP request"; break;
              default: message = fmt::format("HTTP error {}", res.status); break;
            }
            set_error(res, res.status, message);
          }
          record(req, res.status);
          return httplib::Server::HandlerResponse::Handled;
        }));
    server.set_exception_handler(
        [this](const httplib::Request& req, httplib::Response& res, const std::exception_ptr& ep) {
          std::string message = "internal error";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            message += std::string(": ") + e.what();
          } catch (...) {
          }
          set_error(res, 500, message);
          record(req, 500);
        });
    server.set_logger([](const httplib::Request&, const httplib::Response&) {
      t_started = false;
      t_recorded = false;
    });
  }

  /// Opens every arm's export file again (`path` replaces the first arm's
  /// file when given) and, when all load and validate, swaps them in;
  /// otherwise throws RequestError 409 and the exports loaded before keep
  /// serving. One reload at a time.
  json reload(const std::string& path) {
    std::lock_guard<std::mutex> one_at_a_time(reload_mu);
    std::vector<std::shared_ptr<const RecommendEngine>> old, fresh;
    for (std::size_t a = 0; a < arms.size(); ++a) old.push_back(current(a));
    try {
      for (std::size_t a = 0; a < arms.size(); ++a) {
        const std::string file = a == 0 && !path.empty() ? path : old[a]->data().path;
        fresh.push_back(RecommendEngine::open(file, options.pseudonym_key, options.ann));
      }
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++reloads_failed;
      }
      throw RequestError(
          409, "export",
          fmt::format("reload refused, still serving the export loaded before ({} items, "
                      "model {}): {}",
                      old[0]->data().num_items, old[0]->data().model_sha256.substr(0, 12), e.what()));
    }
    for (std::size_t a = 0; a < arms.size(); ++a) std::atomic_store(&arms[a]->engine_now, fresh[a]);
    {
      std::lock_guard<std::mutex> lock(mu);
      ++reloads_ok;
    }
    const ExportData& e = fresh[0]->data();
    json out = {{"status", "reloaded"},           {"export", e.path},
                {"items", e.num_items},           {"users", e.num_users},
                {"model_sha256", e.model_sha256}, {"previous_model_sha256", old[0]->data().model_sha256}};
    if (arms.size() > 1) out["arms"] = arms_json(false);
    return out;
  }

  /// Per arm: name, share, export; with `stats` its answers, clicks and latency.
  json arms_json(bool stats) const {
    json out = json::object();
    for (std::size_t a = 0; a < arms.size(); ++a) {
      const ArmState& arm = *arms[a];
      const auto engine = current(a);
      json j = {{"share", arm.share},
                {"export", engine->data().path},
                {"items", engine->data().num_items},
                {"model_sha256", engine->data().model_sha256}};
      if (stats) {  // caller holds mu
        const std::vector<double> v = arm.latency.sorted();
        j["recommendations"] = arm.recommendations;
        j["clicks"] = arm.clicks;
        j["click_through"] =
            arm.recommendations > 0
                ? json(static_cast<double>(arm.clicks) / static_cast<double>(arm.recommendations))
                : json(nullptr);
        j["latency_ms"] = latency_json(v);
      }
      out[arm.name] = std::move(j);
    }
    return out;
  }

  /// Nearest-rank percentiles of sorted latencies.
  static json latency_json(const std::vector<double>& v) {
    auto pct = [&](double p) -> json {
      if (v.empty()) return nullptr;
      const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
      return v[std::max<std::size_t>(rank, 1) - 1];
    };
    return {{"window", v.size()},
            {"p50", pct(0.50)},
            {"p99", pct(0.99)},
            {"max", v.empty() ? json(nullptr) : json(v.back())}};
  }

  /// The request's user's events since the export, as rows of `engine`'s
  /// export (items it does not hold, e.g. after a reload, left out).
  void add_live(const RecommendEngine& engine, RecommendRequest& q) {
    if (!q.user || options.events_log.empty()) return;
    std::lock_guard<std::mutex> lock(events.mu);
    auto it = events.items.find(*q.user);
    if (it == events.items.end()) return;
    for (const auto& event : it->second) {
      const std::int32_t i = engine.data().find_item(event.item);
      if (i < 0) continue;
      q.live.push_back(i);
      q.live_times.push_back(event.time);
      q.live_context.push_back(event.context);
    }
  }

  /// The line an event is stored as in the log.
  static std::string event_line(const EventRequest& e) {
    json j = {{"user", e.user}, {"item", e.item}, {"time", e.time}};
    if (!e.type.empty()) j["type"] = e.type;
    if (!e.context.empty()) j["context"] = e.context;
    return dump(j) + "\n";
  }

  /// Opens the events log for appending, after replaying what it holds
  /// (lines that do not parse, e.g. a line cut by a crash, are counted and
  /// skipped with their line number).
  void open_events_log() {
    const std::string& path = options.events_log;
    std::ifstream in(path, std::ios::binary);
    std::string line;
    std::int64_t number = 0;
    bool ends_in_newline = true;
    while (std::getline(in, line)) {
      ++number;
      ends_in_newline = !in.eof();
      try {
        const EventRequest e = parse_event_request(parse_json_body(line));
        if (e.time < 0) throw RequestError(400, "time", "missing");
        events.add(e);
        ++events.replayed;
      } catch (const std::exception& ex) {
        if (events.skipped++ < 5) {
          spdlog::warn("{}:{}: skipped, not an event ({})", path, number, ex.what());
        }
      }
    }
    events.fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (events.fd < 0)
      throw IoError(fmt::format("cannot open the events log {}: {}", path, std::strerror(errno)));
    if (!ends_in_newline && number > 0) write_all("\n");  // the next event starts a line of its own
    if (events.replayed > 0 || events.skipped > 0) {
      spdlog::info("{}: {} event(s) replayed into the users' histories, {} line(s) skipped", path,
                   events.replayed, events.skipped);
    }
  }

  void write_all(const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(events.fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw IoError(fmt::format("writing the events log {}: {}", options.events_log, std::strerror(errno)));
      done += static_cast<std::size_t>(n);
    }
  }

  /// POST /events: checked against the export, appended to the log (and
  /// synced) before it counts, then added to the user's history.
  json record_event(EventRequest e) {
    if (options.events_log.empty()) {
      throw RequestError(404, "", "events are not recorded by this server (start it with --events-log FILE)");
    }
    // Checked against the export of the user's arm: an arm may hold items
    // the others do not (a candidate catalogue).
    const auto engine = current(arm_of(e.user));
    const ExportData& d = engine->data();
    if (d.find_item(e.item) < 0) throw RequestError(404, "item", fmt::format("unknown item id '{}'", e.item));
    if (!e.type.empty() &&
        std::find(d.event_types.begin(), d.event_types.end(), e.type) == d.event_types.end()) {
      std::string types;
      for (const auto& t : d.event_types) types += (types.empty() ? "" : ", ") + t;
      throw RequestError(400, "type",
                         fmt::format("'{}' is not an event type of this export ({})", e.type, types));
    }
    if (e.time < 0) {
      e.time = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    }
    const std::string line = event_line(e);
    std::lock_guard<std::mutex> lock(events.mu);  // log order = memory order
    write_all(line);
    if (options.events_fsync && ::fdatasync(events.fd) != 0) {
      throw IoError(fmt::format("syncing the events log {}: {}", options.events_log, std::strerror(errno)));
    }
    events.add(e);
    ++events.recorded;
    if (e.type == "click" && arms.size() > 1) {  // credit the arm that showed the item within the window
      std::lock_guard<std::mutex> lock(mu);
      auto it = shown.find(e.user);
      if (it != shown.end() && !it->second.clicked && e.time >= it->second.time &&
          e.time - it->second.time <= options.ab_click_window_s &&
          std::find(it->second.items.begin(), it->second.items.end(), e.item) != it->second.items.end()) {
        it->second.clicked = true;
        ++arms[it->second.arm]->clicks;
      }
    }
    return {{"status", "recorded"},
            {"user", e.user},
            {"item", e.item},
            {"time", e.time},
            {"events_since_export", events.items[e.user].size()}};
  }

  /// `Authorization: Bearer <token>`, compared in constant time.
  bool authorised(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.size() != prefix.size() + options.token.size() ||
        header.compare(0, prefix.size(), prefix) != 0) {
      return false;
    }
    unsigned char diff = 0;
    for (std::size_t i = 0; i < options.token.size(); ++i) {
      diff |= static_cast<unsigned char>(header[prefix.size() + i] ^ options.token[i]);
    }
    return diff == 0;
  }

  std::string metrics_prometheus() const {
    const json m = metrics();
    std::string out;
    out += "# HELP llmrec_requests_total Requests answered, by endpoint and HTTP status.\n";
    out += "# TYPE llmrec_requests_total counter\n";
    for (const auto& [endpoint, by_status] : m["requests"].items()) {
      for (const auto& [status, n] : by_status.items()) {
        out += fmt::format("llmrec_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", endpoint, status,
                           n.get<std::int64_t>());
      }
    }
    out += "# HELP llmrec_errors_total Requests answered with a 4xx (client) or 5xx (server) status.\n";
    out += "# TYPE llmrec_errors_total counter\n";
    out +=
        fmt::format("llmrec_errors_total{{kind=\"client\"}} {}\n", m["errors"]["client"].get<std::int64_t>());
    out +=
        fmt::format("llmrec_errors_total{{kind=\"server\"}} {}\n", m["errors"]["server"].get<std::int64_t>());
    const json& l = m["latency_ms"];
    out +=
        "# HELP llmrec_request_latency_ms Latency percentiles (nearest rank; 1 = the maximum) over the last "
        "llmrec_request_latency_window requests.\n";
    out += "# TYPE llmrec_request_latency_ms gauge\n";
    for (const auto& [q, key] :
         {std::pair<const char*, const char*>{"0.5", "p50"}, {"0.99", "p99"}, {"1", "max"}}) {
      if (!l[key].is_null()) {
        out += fmt::format("llmrec_request_latency_ms{{quantile=\"{}\"}} {}\n", q, l[key].get<double>());
      }
    }
    out += "# HELP llmrec_request_latency_window Requests the latency percentiles cover.\n";
    out += "# TYPE llmrec_request_latency_window gauge\n";
    out += fmt::format("llmrec_request_latency_window {}\n", l["window"].get<std::int64_t>());
    out +=
        "# HELP llmrec_uptime_seconds Seconds since the server started.\n# TYPE llmrec_uptime_seconds "
        "gauge\n";
    out += fmt::format("llmrec_uptime_seconds {}\n", m["uptime_s"].get<double>());
    out += "# HELP llmrec_reloads_total Export reloads, by result.\n# TYPE llmrec_reloads_total counter\n";
    out += fmt::format("llmrec_reloads_total{{result=\"ok\"}} {}\n", m["reloads"]["ok"].get<std::int64_t>());
    out += fmt::format("llmrec_reloads_total{{result=\"refused\"}} {}\n",
                       m["reloads"]["refused"].get<std::int64_t>());
    if (m.contains("arms")) {
      out += "# HELP llmrec_arm_recommendations_total Recommendations answered by each A/B arm.\n";
      out += "# TYPE llmrec_arm_recommendations_total counter\n";
      for (const auto& [name, a] : m["arms"].items()) {
        out += fmt::format("llmrec_arm_recommendations_total{{arm=\"{}\"}} {}\n", name,
                           a["recommendations"].get<std::int64_t>());
      }
      out +=
          "# HELP llmrec_arm_clicks_total Clicks (POST /events type click) on an item the arm showed the "
          "user "
          "within the click window.\n# TYPE llmrec_arm_clicks_total counter\n";
      for (const auto& [name, a] : m["arms"].items()) {
        out +=
            fmt::format("llmrec_arm_clicks_total{{arm=\"{}\"}} {}\n", name, a["clicks"].get<std::int64_t>());
      }
      out +=
          "# HELP llmrec_arm_latency_ms Each arm's recommend latency percentiles.\n# TYPE "
          "llmrec_arm_latency_ms gauge\n";
      for (const auto& [name, a] : m["arms"].items()) {
        for (const auto& [q, key] : {std::pair<const char*, const char*>{"0.5", "p50"}, {"0.99", "p99"}}) {
          if (!a["latency_ms"][key].is_null()) {
            out += fmt::format("llmrec_arm_latency_ms{{arm=\"{}\",quantile=\"{}\"}} {}\n", name, q,
                               a["latency_ms"][key].get<double>());
          }
        }
      }
    }
    out += "# HELP llmrec_events_total Events recorded by POST /events since the start.\n";
    out += "# TYPE llmrec_events_total counter\n";
    out += fmt::format("llmrec_events_total {}\n", m["events"]["recorded"].get<std::int64_t>());
    const auto engine = current();
    const ExportData& e = engine->data();
    out += "# HELP llmrec_export_items Items in the loaded export.\n# TYPE llmrec_export_items gauge\n";
    out += fmt::format("llmrec_export_items {}\n", e.num_items);
    out += "# HELP llmrec_export_users Users in the loaded export.\n# TYPE llmrec_export_users gauge\n";
    out += fmt::format("llmrec_export_users {}\n", e.num_users);
    return out;
  }

  json health() const {
    const auto engine = current();
    const ExportData& e = engine->data();
    return {{"status", "ok"},
            {"export", e.path},
            {"items", e.num_items},
            {"users", e.num_users},
            {"dim", e.dim},
            {"history", e.history},
            {"model_sha256", e.model_sha256},
            {"created", e.created},
            {"catalogue_updates", e.catalogue_updates},
            {"uptime_s", std::chrono::duration<double>(Clock::now() - started).count()}};
  }

  json events_json() const {
    std::lock_guard<std::mutex> lock(events.mu);
    return {{"recorded", events.recorded},
            {"replayed", events.replayed},
            {"skipped_lines", events.skipped},
            {"users", events.items.size()}};
  }

  json metrics() const {
    std::lock_guard<std::mutex> lock(mu);
    json requests = json::object();
    for (const auto& [endpoint, by_status] : counts) {
      json s = json::object();
      for (const auto& [status, n] : by_status) s[std::to_string(status)] = n;
      requests[endpoint] = std::move(s);
    }
    const std::vector<double> v = latency.sorted();
    json out = {
        {"uptime_s", std::chrono::duration<double>(Clock::now() - started).count()},
        {"requests_total", total},
        {"requests", std::move(requests)},
        {"errors",
         {{"total", client_errors + server_errors}, {"client", client_errors}, {"server", server_errors}}},
        {"reloads", {{"ok", reloads_ok}, {"refused", reloads_failed}}},
        {"events", events_json()},
        {"latency_ms", latency_json(v)}};
    if (arms.size() > 1) out["arms"] = arms_json(true);
    return out;
  }
};

HttpServer::HttpServer(std::shared_ptr<const RecommendEngine> engine, HttpServerOptions options)
    : HttpServer(std::vector<ServingArm>{{"default", 1.0, std::move(engine)}}, std::move(options)) {}

std::size_t ab_arm_of(const std::string& key, const std::vector<double>& shares, const std::string& salt) {
  LLMREC_CHECK(!shares.empty(), "ab_arm_of: no arms");
  const std::string h = sha256_hex(salt + "\n" + key);
  const double u =
      static_cast<double>(std::stoull(h.substr(0, 13), nullptr, 16)) / static_cast<double>(1ULL << 52);
  double total = 0;
  for (double w : shares) total += w;
  double acc = 0;
  for (std::size_t a = 0; a < shares.size(); ++a) {
    acc += shares[a] / total;
    if (u < acc) return a;
  }
  return shares.size() - 1;
}

HttpServer::HttpServer(std::vector<ServingArm> arms, HttpServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  LLMREC_CHECK(!arms.empty(), "HttpServer needs an engine");
  std::set<std::string> names;
  for (auto& a : arms) {
    LLMREC_CHECK(a.engine != nullptr, "HttpServer: arm '{}' has no engine", a.name);
    if (a.name.empty() || !names.insert(a.name).second) {
      throw ConfigError(
          fmt::format("A/B arm names must be unique and not empty, got '{}' twice or empty", a.name));
    }
    // Names go into Prometheus labels and the access log as they are.
    if (a.name.size() > 64 || a.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                       "0123456789._-") != std::string::npos) {
      throw ConfigError(
          fmt::format("A/B arm '{}': a name is 1 to 64 letters, digits, '.', '_' or '-'", a.name));
    }
    if (!(a.share > 0) || !std::isfinite(a.share)) {
      throw ConfigError(
          fmt::format("A/B arm '{}': the traffic share must be a positive number, got {}", a.name, a.share));
    }
    auto state = std::make_unique<ArmState>();
    state->name = a.name;
    state->share = a.share;
    state->engine_now = std::move(a.engine);
    impl_->arms.push_back(std::move(state));
  }
  impl_->options = std::move(options);
  const int threads = impl_->options.threads > 0
                          ? impl_->options.threads
                          : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  impl_->server.new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<std::size_t>(threads));
  };
  impl_->server.set_payload_max_length(impl_->options.max_body_bytes);
  // TCP_NODELAY (inherited by the accepted sockets): httplib writes the
  // headers and the body of a response separately, and with Nagle's
  // algorithm the body then waits for the client's delayed ACK: ~40 ms per
  // request on a keep-alive connection instead of well under 1 ms.
  impl_->server.set_tcp_nodelay(true);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets
  // a second server bind the same port and silently share its traffic.
  impl_->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (!impl_->options.events_log.empty()) impl_->open_events_log();
  impl_->hooks();
  impl_->routes();
}

HttpServer::~HttpServer() {
  stop();
}

int HttpServer::bind() {
  if (impl_->bound) return impl_->port;
  const auto& o = impl_->options;
  if (o.port < 0 || o.port > 65535) throw ConfigError(fmt::format("port {} is not in [0, 65535]", o.port));
  errno = 0;
  if (o.port == 0) {
    impl_->port = impl_->server.bind_to_any_port(o.host);
    if (impl_->port < 0)
      throw IoError(fmt::format("cannot listen on {} (any port): {}", o.host, std::strerror(errno)));
  } else {
    if (!impl_->server.bind_to_port(o.host, o.port)) {
      throw IoError(fmt::format("cannot listen on {}:{}: {}", o.host, o.port,
                                errno != 0 ? std::strerror(errno) : "address unavailable"));
    }
    impl_->port = o.port;
  }
  impl_->bound = true;
  return impl_->port;
}

void HttpServer::run() {
  bind();
  impl_->started = Clock::now();
  impl_->server.listen_after_bind();  // returns when stop() closes the socket
}

void HttpServer::start() {
  bind();
  std::lock_guard<std::mutex> lock(impl_->run_mu);
  if (impl_->thread.joinable()) return;
  impl_->thread = std::thread([this] { run(); });
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!impl_->server.is_running() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void HttpServer::stop() {
  if (!impl_) return;
  impl_->server.stop();
  std::lock_guard<std::mutex> lock(impl_->run_mu);
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool HttpServer::running() const {
  return impl_->server.is_running();
}
int HttpServer::port() const {
  return impl_->port;
}
nlohmann::json HttpServer::metrics() const {
  return impl_->metrics();
}
std::string HttpServer::metrics_prometheus() const {
  return impl_->metrics_prometheus();
}
nlohmann::json HttpServer::reload(const std::string& path) {
  return impl_->reload(path);
}
nlohmann::json HttpServer::health() const {
  return impl_->health();
}

}  // namespace llmrec::serving
