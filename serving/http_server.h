#pragma once
/// The HTTP face of the engine (`llmrec serve`), on cpp-httplib.
///
///   HttpServer server(engine, HttpServerOptions{}.with_port(0));
///   int port = server.bind();      // port 0: an ephemeral port
///   server.start();                // serves on a background thread ...
///   server.stop();                 // ... until stopped (also from a signal watcher)
///
/// Endpoints (docs/serving.md lists every field):
///   POST /recommend   JSON body (serving/request.h)
///   GET  /recommend   the same fields as a query string (?user=u1&k=5)
///   POST /similar     {"item": ..., "k": ...};  GET /similar?item=..&k=..
///   GET  /health      status, items, users, export path, model_sha256, ...
///   POST /events      {"user", "item", "type", "time", "context"}: appended
///                     to the events log (durable before the answer) and
///                     to the user's history in memory, so that the next
///                     /recommend for the user reflects it
///   POST /admin/reload  re-reads the export file and swaps it in while
///                     requests go on (also reload(), e.g. on SIGHUP); a
///                     file that does not load is refused (409) and the
///                     export loaded before keeps serving
///   GET  /metrics     requests by endpoint and status, errors, latency
///                     percentiles over the recent requests, uptime: JSON,
///                     or Prometheus' text format when the Accept header
///                     asks for text/plain or OpenMetrics (as Prometheus'
///                     scraper does) or with ?format=prometheus
/// With a `token`, every endpoint but /health answers 401 unless the
/// request carries `Authorization: Bearer <token>`. With an `access_log`,
/// each request gives one line: time, method, path (never the query string
/// or the body: they carry user ids and histories), status, latency.
/// Every response is JSON. Errors are {"error": "..."} with 400 (invalid
/// request; the message names the field), 404 (unknown user/item id, or no
/// such endpoint), 405 (method not allowed, with an Allow header), 413 (body
/// over max_body_bytes) or 500 (anything unexpected: the handler catches
/// every exception, the server never goes down for one request).
/// Requests run on a pool of `threads` workers; each worker runs the
/// engine's tensor code with `intra_op_threads` threads.

#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "serving/engine.h"

namespace llmrec::serving {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                       ///< 0 = an ephemeral port (see bind())
  int threads = 0;                       ///< worker threads; 0 = the machine's cores (at least 2)
  int intra_op_threads = 1;              ///< ATen/BLAS threads per request
  std::size_t max_body_bytes = 1 << 20;  ///< larger bodies: 413
  std::size_t latency_window = 1024;     ///< requests the latency percentiles cover
  std::string token;                     ///< bearer token required on all but /health; "" = none
  std::string pseudonym_key;             ///< the export's pseudonym key, for reloads ("" = none)
  std::optional<AnnOptions> ann;         ///< the approximate index each (re)loaded export gets
  /// POST /events: each event is appended to this file (JSON lines) before
  /// it is acknowledged, and replayed from it at start; "" = /events off.
  std::string events_log;
  bool events_fsync = true;        ///< fdatasync the log before each acknowledgement
  std::string ab_salt = "llmrec";  ///< A/B: another salt, another assignment of users to arms
  std::int64_t ab_click_window_s =
      1800;  ///< A/B: a click counts for the arm that showed the item this recently
  /// Receives one access-log line per request (no newline); empty = none.
  /// Called from the worker threads, one call at a time.
  std::function<void(const std::string&)> access_log;

  HttpServerOptions& with_host(std::string h) {
    host = std::move(h);
    return *this;
  }
  HttpServerOptions& with_port(int p) {
    port = p;
    return *this;
  }
  HttpServerOptions& with_threads(int t) {
    threads = t;
    return *this;
  }
  HttpServerOptions& with_max_body_bytes(std::size_t b) {
    max_body_bytes = b;
    return *this;
  }
};

/// One arm of an A/B test: a name, its share of the traffic and its export.
struct ServingArm {
  std::string name;
  double share = 1.0;
  std::shared_ptr<const RecommendEngine> engine;
};

/// The arm of `key` (a user id; a fresh history's ids) among arms with
/// these traffic shares: the first 52 bits of SHA-256(salt + "\n" + key)
/// as a uniform number in [0, 1), so a user always lands in the same arm
/// (for the same salt) and the arms get their shares of the users.
std::size_t ab_arm_of(const std::string& key, const std::vector<double>& shares, const std::string& salt);

class HttpServer {
 public:
  HttpServer(std::shared_ptr<const RecommendEngine> engine, HttpServerOptions options);
  /// Several exports as A/B arms (docs/serving.md, "A/B arms"): every
  /// /recommend answer names its arm; /metrics reports per arm. The first
  /// arm also answers /similar and /health. ConfigError for empty or
  /// repeated names and shares that are not positive.
  HttpServer(std::vector<ServingArm> arms, HttpServerOptions options);
  ~HttpServer();  ///< stops and joins
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds host:port and returns the port (the chosen one for port 0).
  /// IoError when the address cannot be bound.
  int bind();
  /// Serves until stop() (binds first if needed). Blocks.
  void run();
  /// run() on a background thread; returns once the server accepts.
  void start();
  /// Stops accepting, finishes the requests in flight and returns; joins
  /// the thread of start(). Safe to call from any thread, more than once.
  void stop();
  bool running() const;
  int port() const;

  /// Loads `path` ("" = the current export's file again) and swaps it in
  /// for the requests that start afterwards; the requests in flight finish
  /// on the old one. RequestError (409) when it does not load: the old one
  /// keeps serving. Returns the /admin/reload answer.
  nlohmann::json reload(const std::string& path = "");
  /// The /metrics document.
  nlohmann::json metrics() const;
  /// The same in Prometheus' text exposition format (version 0.0.4).
  std::string metrics_prometheus() const;
  /// The /health document.
  nlohmann::json health() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmrec::serving
