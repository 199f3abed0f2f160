// `llmrec serve`: the HTTP recommendation server on an export file (one
// process, no MPI). SIGINT / SIGTERM stop it gracefully: it stops
// accepting, finishes the requests in flight and exits 0. SIGHUP (or POST
// /admin/reload) re-reads the export file and swaps it in without a pause.
//
//   llmrec serve --export runs/quickstart/export.h5 --port 8080
//   curl -s localhost:8080/recommend -d '{"user": "u12", "k": 5}'
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apps/ann_args.h"
#include "apps/commands.h"
#include "common/error.h"
#include "common/logging.h"
#include "common/pseudonym.h"
#include "serving/engine.h"
#include "serving/http_server.h"

namespace llmrec {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_reload = 0;

extern "C" void serve_on_signal(int sig) {
  g_stop_signal = sig;
}
extern "C" void serve_on_hangup(int) {
  g_reload = 1;
}

struct ServeArgs {
  std::string export_path;
  std::string host = "127.0.0.1";
  int port = 8080;
  int threads = 0;
  int intra_threads = 1;
  std::size_t max_body = 1 << 20;
  std::string token_file;
  std::string access_log;
  std::string pseudonym_key_file;
  std::string events_log;
  std::string events_fsync = "always";
  std::vector<std::string> arms;  ///< NAME=PATH[:SHARE]
  AnnArgs ann;
  std::string ab_salt = "llmrec";
  std::int64_t ab_click_window = 1800;
};

/// `--arm NAME=PATH[:SHARE]` (share default 1). ConfigError naming the value.
serving::ServingArm parse_arm(const std::string& spec, const std::string& pseudonym_key,
                              const std::optional<serving::AnnOptions>& ann) {
  const auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
    throw ConfigError(fmt::format("--arm '{}': expected NAME=PATH or NAME=PATH:SHARE", spec));
  }
  serving::ServingArm arm;
  arm.name = spec.substr(0, eq);
  std::string path = spec.substr(eq + 1);
  const auto colon = path.rfind(':');
  if (colon != std::string::npos) {
    const std::string share = path.substr(colon + 1);
    char* end = nullptr;
    arm.share = std::strtod(share.c_str(), &end);
    if (share.empty() || end != share.c_str() + share.size() || !(arm.share > 0) ||
        !std::isfinite(arm.share)) {
      throw ConfigError(fmt::format("--arm '{}': the share '{}' is not a positive number", spec, share));
    }
    path = path.substr(0, colon);
  }
  arm.engine = serving::RecommendEngine::open(path, pseudonym_key, ann);
  return arm;
}

/// The bearer token: the first line of `path` (read_secret_file), printable
/// ASCII without spaces.
std::string read_token(const std::string& path) {
  std::string token = read_secret_file(path, "--token-file", 1);
  for (unsigned char c : token) {
    if (c < 0x21 || c > 0x7e) {
      throw ConfigError(
          fmt::format("--token-file {}: the token must be printable ASCII without spaces", path));
    }
  }
  return token;
}

/// The engines to serve: one export, or two or more A/B arms.
std::vector<serving::ServingArm> open_arms(const ServeArgs& a, const std::string& pseudonym_key) {
  if (a.export_path.empty() == a.arms.empty()) {
    throw ConfigError("serve: give --export FILE, or two or more --arm NAME=PATH[:SHARE] for an A/B test");
  }
  std::vector<serving::ServingArm> arms;
  if (a.arms.empty()) {
    arms.push_back(
        {"default", 1.0, serving::RecommendEngine::open(a.export_path, pseudonym_key, a.ann.index())});
    return arms;
  }
  if (a.arms.size() < 2) throw ConfigError("serve: an A/B test needs two or more --arm");
  for (const auto& spec : a.arms) arms.push_back(parse_arm(spec, pseudonym_key, a.ann.index()));
  return arms;
}

void log_loaded(const std::vector<serving::ServingArm>& arms, bool have_pseudonym_key, double load_ms) {
  const auto& engine = arms.front().engine;
  const auto& e = engine->data();
  if (e.user_ids_scheme == kPseudonymScheme && !have_pseudonym_key) {
    spdlog::warn(
        "{}: user ids are pseudonymised and no --pseudonym-key-file was given: requests must name users by "
        "their pseudonyms (raw ids are unknown users)",
        e.path);
  }
  for (const auto& arm : arms) {
    if (arms.size() > 1) {
      spdlog::info("A/B arm {} (share {}): {}, {} items, model {}", arm.name, arm.share,
                   arm.engine->data().path, arm.engine->data().num_items,
                   arm.engine->data().model_sha256.substr(0, 12));
    }
  }
  spdlog::info("loaded {}: {} items, {} users, d = {}, T = {}, model {} ({:.0f} ms){}", e.path, e.num_items,
               e.num_users, e.dim, e.history,
               e.model_sha256.empty() ? std::string("?") : e.model_sha256.substr(0, 12), load_ms,
               engine->ann_index() == nullptr
                   ? std::string()
                   : fmt::format("; {} index built in {:.2f} s", engine->ann_index()->describe(),
                                 engine->ann_index()->build_seconds()));
}

/// The access log's file (stdout for "-"; null without --access-log).
std::FILE* open_access_log(const std::string& path) {
  if (path.empty()) return nullptr;
  std::FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "a");
  if (f == nullptr) {
    throw ConfigError(fmt::format("--access-log {}: cannot be opened: {}", path, std::strerror(errno)));
  }
  return f;
}

serving::HttpServerOptions server_options(const ServeArgs& a, const std::string& pseudonym_key,
                                          std::FILE* access) {
  serving::HttpServerOptions o;
  o.host = a.host;
  o.port = a.port;
  o.threads = a.threads;
  o.intra_op_threads = a.intra_threads;
  o.max_body_bytes = a.max_body;
  if (!a.token_file.empty()) o.token = read_token(a.token_file);
  o.pseudonym_key = pseudonym_key;
  o.ann = a.ann.index();
  o.events_log = a.events_log;
  o.events_fsync = a.events_fsync == "always";
  if (access != nullptr) {
    o.access_log = [access](const std::string& line) {
      std::fprintf(access, "%s\n", line.c_str());
      std::fflush(access);
    };
  }
  o.ab_salt = a.ab_salt;
  o.ab_click_window_s = a.ab_click_window;
  return o;
}

/// SIGINT/SIGTERM stop the server, SIGHUP reloads the export.
void install_serve_signals() {
  struct sigaction sa {};
  sa.sa_handler = serve_on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction hup {};
  hup.sa_handler = serve_on_hangup;
  sigemptyset(&hup.sa_mask);
  sigaction(SIGHUP, &hup, nullptr);
}

/// Until `done`: stops the server after a signal (repeated until run()
/// returns: a signal may come before it listens) and reloads on SIGHUP,
/// swapped in while requests go on.
void watch_signals(serving::HttpServer& server, const std::atomic<bool>& done) {
  while (!done.load()) {
    if (g_stop_signal != 0) server.stop();
    if (g_reload != 0) {
      g_reload = 0;
      try {
        const auto r = server.reload();
        spdlog::info("SIGHUP: reloaded {}: {} items, {} users, model {}", r["export"].get<std::string>(),
                     r["items"].get<std::int64_t>(), r["users"].get<std::int64_t>(),
                     r["model_sha256"].get<std::string>().substr(0, 12));
      } catch (const std::exception& e) {
        spdlog::error("SIGHUP: {}", e.what());
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int run_serve(const ServeArgs& a) {
  LogConfig log;
  init_logging(log, 0, 1);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string pseudonym_key =
      a.pseudonym_key_file.empty() ? "" : read_pseudonym_key(a.pseudonym_key_file);
  std::vector<serving::ServingArm> arms = open_arms(a, pseudonym_key);
  log_loaded(arms, !pseudonym_key.empty(),
             std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  std::FILE* access = open_access_log(a.access_log);
  const serving::HttpServerOptions o = server_options(a, pseudonym_key, access);
  serving::HttpServer server(std::move(arms), o);
  const int port = server.bind();

  install_serve_signals();
  std::atomic<bool> done{false};
  std::thread watcher([&] { watch_signals(server, done); });
  spdlog::info(
      "listening on http://{}:{} ({} worker threads; POST /recommend, /similar; GET /health, /metrics){}",
      a.host, port,
      a.threads > 0 ? a.threads : std::max(2, static_cast<int>(std::thread::hardware_concurrency())),
      o.token.empty() ? "" : "; a bearer token is required on all but /health");
  server.run();
  done.store(true);
  watcher.join();
  if (g_stop_signal != 0) spdlog::info("signal {}: stopped", static_cast<int>(g_stop_signal));
  if (access != nullptr && access != stdout) std::fclose(access);
  logging_flush();
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "HTTP server for recommendations from an export file");
  auto a = std::make_shared<ServeArgs>();
  cmd->add_option("--export", a->export_path,
                  "Export file written by `llmrec export` (or --arm, two or more)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--arm", a->arms,
                  "An A/B arm NAME=PATH[:SHARE] (repeat; share default 1): users are split between the arms' "
                  "exports by a hash of their id, answers name their arm, /metrics reports each arm");
  cmd->add_option("--ab-salt", a->ab_salt, "A/B: the assignment's salt (another salt, another split)")
      ->capture_default_str();
  cmd->add_option(
         "--ab-click-window", a->ab_click_window,
         "A/B: seconds within which a click event (POST /events, type click) on an item counts for the arm "
         "that showed it")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "Port to listen on (0: any free port, logged)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Worker threads (0: one per core, at least 2)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd->add_option("--intra-threads", a->intra_threads, "BLAS/ATen threads per request")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--max-body", a->max_body, "Largest request body in bytes (larger: 413)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--token-file", a->token_file,
                  "File whose first line is a bearer token required on every endpoint but /health "
                  "(Authorization: Bearer <token>; 401 without it)")
      ->check(CLI::ExistingFile);
  cmd->add_option(
         "--pseudonym-key-file", a->pseudonym_key_file,
         "The key of `export --pseudonymise`: requests name users by their raw ids, looked up by pseudonym")
      ->check(CLI::ExistingFile);
  cmd->add_option(
      "--events-log", a->events_log,
      "Enable POST /events: each event is appended to this JSON-lines file before it is acknowledged "
      "(and replayed from it at start), and joins the user's history at once");
  cmd->add_option(
         "--events-fsync", a->events_fsync,
         "always: fdatasync before each acknowledgement (nothing acknowledged is lost, even on power loss); "
         "never: the operating system writes it (a killed server loses nothing, a crashed machine may)")
      ->check(CLI::IsMember({"always", "never"}))
      ->capture_default_str();
  add_ann_args(cmd, a->ann);
  cmd->add_option(
      "--access-log", a->access_log,
      "Append one line per request (UTC time, method, path, status, latency, the A/B arm or -; never the "
      "query string or the body) to this file; - = stdout");
  cmd->callback([a] {
    const int rc = run_serve(*a);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
