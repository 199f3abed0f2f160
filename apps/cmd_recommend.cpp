// `llmrec recommend`: top-k recommendations from an export file (one
// process, no MPI, no checkpoint, no dataset), as JSON or a table.
//
//   llmrec recommend --export runs/quickstart/export.h5 --user u12 --k 5
//   llmrec recommend --export X.h5 --history i1,i2,i3 --category Shoes --explain --table
//
// The JSON is the response document of `llmrec serve` (docs/serving.md).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "apps/ann_args.h"
#include "apps/commands.h"
#include "common/error.h"
#include "common/logging.h"
#include "common/pseudonym.h"
#include "common/utf8.h"
#include "serving/engine.h"
#include "serving/request.h"

namespace llmrec {
namespace {

struct RecommendArgs {
  std::string export_path;
  std::string pseudonym_key_file;
  std::string user;
  std::vector<std::string> history;
  int k = serving::kDefaultK;
  std::vector<std::string> categories;
  std::string exclude = "seen";
  int hour = -1;
  std::int64_t time = -1;
  std::vector<std::int64_t> history_times;
  std::vector<std::string> context;  ///< KEY=VALUE
  double hour_weight = -1;
  double cf_weight = -1;
  double popularity_weight = -1;
  double tfidf_weight = -1;
  double diversity = 0;
  AnnArgs ann;
  std::string search;
  bool explain = false;
  bool json = false;
  bool table = false;
};

std::string table_text(const ExportData& e, const serving::Recommendation& r) {
  std::string out;
  // A history item in an explanation: its id and the start of its text.
  auto named = [&e](std::int32_t item) {
    const auto i = static_cast<std::size_t>(item);
    return e.item_text[i].empty()
               ? e.item_ids[i]
               : fmt::format("{} \"{}\"", e.item_ids[i], utf8_truncate(e.item_text[i], 32));
  };
  const std::string who =
      r.user >= 0
          ? fmt::format("user {} ({} events)", e.user_ids[static_cast<std::size_t>(r.user)], r.history.size())
      : !r.unknown_user.empty()
          ? fmt::format("unknown user {} (not in the export: the most popular items)", r.unknown_user)
          : fmt::format("a history of {} items", r.history.size());
  out += fmt::format(
      "{}: k {}, exclude {}, cf_weight {:g}, popularity_weight {:g}, tfidf_weight {:g}{}{}{}; {} eligible "
      "items{}; {:.2f} ms\n",
      who, r.k, serving::exclude_name(r.exclude), r.cf_weight, r.popularity_weight, r.tfidf_weight,
      r.hour ? fmt::format(", hour {} (weight {:g})", *r.hour, r.hour_weight) : std::string(),
      r.diversity > 0 ? fmt::format(", diversity {:g}", r.diversity) : std::string(),
      !r.fallback.empty() ? ", training event counts"
      : r.fused           ? ", fused z-scores"
                          : ", model scores",
      r.eligible,
      r.search == "hnsw" ? fmt::format(" of {} proposed by the HNSW index", r.candidates) : std::string(),
      r.took_ms);
  out += fmt::format("{:>4}  {:<16} {:>10}  {:<16} {:<4}  {}\n", "rank", "id", "score", "category", "cold",
                     "text");
  for (std::size_t j = 0; j < r.items.size(); ++j) {
    const auto& it = r.items[j];
    const auto i = static_cast<std::size_t>(it.item);
    out += fmt::format("{:>4}  {:<16} {:>10.4f}  {:<16} {:<4}  {}\n", j + 1, utf8_truncate(e.item_ids[i], 16),
                       it.score, utf8_truncate(e.item_category[i], 16), e.item_cold[i] ? "*" : "",
                       utf8_truncate(e.item_text[i], 48));
    if (r.explain) {
      // The table shows the history items that raise this item above the
      // catalogue's average change (the JSON has the top 3 whatever their sign).
      std::string because;
      for (const auto& c : it.because) {
        if (c.value <= 0) continue;
        because += fmt::format("{}{} ({:+.4f})", because.empty() ? "" : ", ", named(c.item), c.value);
      }
      if (because.empty() && !it.because.empty())
        because = "no single history item (the user's taste as a whole)";
      std::string cf;
      for (const auto& c : it.cf) {
        cf += fmt::format("{}{} ({:.3f})", cf.empty() ? "" : ", ", named(c.item), c.similarity);
      }
      std::string matches;
      for (const auto& m : it.matches) matches += (matches.empty() ? "" : ", ") + m;
      out += fmt::format(
          "{:>6}because: {}{}{}\n", "", because.empty() ? std::string("(no history)") : because,
          r.cf_weight > 0 ? "; cf: " + (cf.empty() ? std::string("(no neighbour)") : cf) : std::string(),
          matches.empty() ? std::string() : "; matches: " + matches);
    }
  }
  return out;
}

void run_recommend(const RecommendArgs& a, bool has_user, bool has_history) {
  serving::RecommendRequest q;
  if (has_user) q.user = a.user;
  if (has_history) q.history = a.history;
  q.k = a.k;
  q.categories = a.categories;
  q.exclude = a.exclude == "purchased" ? serving::Exclude::kPurchased
              : a.exclude == "none"    ? serving::Exclude::kNone
                                       : serving::Exclude::kSeen;
  if (a.hour >= 0) q.hour = a.hour;
  if (a.time >= 0) q.time = a.time;
  q.history_times = a.history_times;
  for (const std::string& kv : a.context) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw serving::RequestError(400, "context", fmt::format("'{}' is not KEY=VALUE", kv));
    }
    q.context[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (a.hour_weight >= 0) q.hour_weight = a.hour_weight;
  if (a.cf_weight >= 0) q.cf_weight = a.cf_weight;
  if (a.popularity_weight >= 0) q.popularity_weight = a.popularity_weight;
  if (a.tfidf_weight >= 0) q.tfidf_weight = a.tfidf_weight;
  q.diversity = a.diversity;
  q.explain = a.explain;

  if (!a.search.empty()) q.search = a.search;
  const auto engine = serving::RecommendEngine::open(
      a.export_path, a.pseudonym_key_file.empty() ? "" : read_pseudonym_key(a.pseudonym_key_file),
      a.ann.index());
  const serving::Recommendation r = engine->recommend(q);
  std::string text = a.table ? table_text(engine->data(), r)
                             : serving::recommendation_json(engine->data(), r)
                                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                                   "\n";
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    throw IoError("cannot write standard output");
  }
}

}  // namespace

void add_recommend_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("recommend",
                                 "Top-k recommendations for a user or a fresh history, from an export file");
  auto a = std::make_shared<RecommendArgs>();
  cmd->add_option("--export", a->export_path, "Export file written by `llmrec export`")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--pseudonym-key-file", a->pseudonym_key_file,
                  "The key of `export --pseudonymise`: --user is a raw id, looked up by its pseudonym")
      ->check(CLI::ExistingFile);
  auto* user = cmd->add_option("--user", a->user, "A user id (unknown: the most popular items, flagged)");
  auto* history = cmd->add_option("--history", a->history, "Recent item ids, oldest first, comma-separated")
                      ->delimiter(',');
  user->excludes(history);
  cmd->add_option("--k", a->k, "How many items")->check(CLI::Range(1, serving::kMaxK))->capture_default_str();
  cmd->add_option("--category", a->categories,
                  "Only items of this category (exact match; repeat for several)")
      ->take_all();
  cmd->add_option("--exclude", a->exclude, "Leave out: seen (the history), purchased (purchase events), none")
      ->check(CLI::IsMember({"seen", "purchased", "none"}))
      ->capture_default_str();
  cmd->add_option("--hour", a->hour, "Hour of the day (0-23, UTC) for the time-of-day context")
      ->check(CLI::Range(0, 23));
  cmd->add_option("--time", a->time,
                  "Unix seconds the recommendation is for (a model with model.user.time_features adds "
                  "this moment's context vector; default: unknown)")
      ->check(CLI::Range(std::int64_t{0}, serving::kMaxRequestTime));
  cmd->add_option("--context", a->context,
                  "The request's context, KEY=VALUE for a context column of the model "
                  "(model.user.context_columns); may be repeated");
  cmd->add_option("--history-times", a->history_times,
                  "Unix seconds of each --history item, comma-separated (time features; default: unknown)")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{0}, serving::kMaxRequestTime));
  cmd->add_option(
         "--hour-weight", a->hour_weight,
         fmt::format("Weight of the time-of-day component (default {:g})", serving::kDefaultHourWeight))
      ->check(CLI::Range(0.0, serving::kMaxWeight));
  cmd->add_option("--cf-weight", a->cf_weight,
                  "Weight of the ItemKNN component (default: the export's fusion weight)")
      ->check(CLI::Range(0.0, serving::kMaxWeight));
  cmd->add_option("--popularity-weight", a->popularity_weight,
                  "Weight of the popularity component (default: the export's fusion weight)")
      ->check(CLI::Range(0.0, serving::kMaxWeight));
  cmd->add_option("--tfidf-weight", a->tfidf_weight,
                  "Weight of the TF-IDF content component (default: the export's fusion weight)")
      ->check(CLI::Range(0.0, serving::kMaxWeight));
  cmd->add_option("--diversity", a->diversity, "MMR lambda in [0, 1] (0: plain top-k)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_flag("--explain", a->explain, "Say why: leave-one-out history contributions and CF neighbours");
  add_ann_args(cmd, a->ann);
  cmd->add_option("--search", a->search, "exact or hnsw (default: hnsw with --ann hnsw, else exact)")
      ->check(CLI::IsMember({"exact", "hnsw"}));
  auto* json = cmd->add_flag("--json", a->json, "JSON on stdout (the default)");
  auto* table = cmd->add_flag("--pretty,--table", a->table, "A readable table instead of JSON");
  json->excludes(table);
  cmd->callback([a, user, history] {
    if (user->count() == 0 && history->count() == 0) {
      throw CLI::ValidationError("--user or --history",
                                 "give a known user id (--user) or recent items (--history)");
    }
    LogConfig log;
    init_logging(log, 0, 1);  // stderr: stdout carries only the result
    run_recommend(*a, user->count() > 0, history->count() > 0);
  });
}

}  // namespace llmrec
