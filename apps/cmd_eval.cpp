// `llmrec eval`: full-ranking evaluation (docs/evaluation.md) of the
// baselines, the synthetic shop's oracle and their fusion, under mpirun.
//
// 1. Every rank builds the same scorers (build_eval_scorers: the extension
//    point where the trained model joins), then the fusion of
//    eval.fusion.weights, tuned on the validation split with eval.fusion.tune.
// 2. Each scorer is evaluated on the split over all ranks; results are
//    identical on every rank and to one rank.
// 3. Rank 0 prints the table and writes <run.dir>/eval_<split>.json.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "apps/eval_fusion.h"
#include "common/sha256.h"
#include "data/dataset.h"
#include "trainer/baselines.h"
#include "trainer/checkpoint.h"
#include "trainer/evaluation.h"
#include "trainer/fusion.h"
#include "trainer/model_scorer.h"

namespace llmrec {
namespace {

/// The command line of `llmrec eval`.
struct EvalCommand {
  ConfigOptions options;
  std::string split = "test";
  std::vector<std::string> baselines;  ///< --baseline; empty = eval.baselines (+ oracle with eval.oracle_dir)
  std::string checkpoint;              ///< --checkpoint: a trained model (model.h5 of `llmrec train`)
};

/// The baselines this run evaluates, in table order.
std::vector<std::string> eval_baselines_of(const EvalCommand& cmd, const EvalConfig& config) {
  if (!cmd.baselines.empty()) return cmd.baselines;
  std::vector<std::string> names = config.baselines;
  if (!config.oracle_dir.empty() && std::find(names.begin(), names.end(), "oracle") == names.end()) {
    names.push_back("oracle");
  }
  return names;
}

/// The scorers of one `llmrec eval` run, in table order, identical on every
/// rank (building them is collective). Extension point: the trained model
/// (a `--checkpoint` option of EvalCommand) joins here as one more scorer,
/// e.g. a ModelScorer named "model" put first; eval.fusion.weights can then
/// name it.
std::vector<std::shared_ptr<Scorer>> build_eval_scorers(const EvalCommand& cmd, AppContext& ctx,
                                                        const DatasetFile& file) {
  std::vector<std::shared_ptr<Scorer>> scorers;
  if (!cmd.checkpoint.empty()) {
    Recommender model = checkpoint_load_model(cmd.checkpoint);
    model->to(ctx.device);
    const int text_len = model->options().config().text_len;
    if (text_len > file.text_len()) {
      throw ConfigError(fmt::format("{}: the model reads {} tokens per item, the dataset {} has {}",
                                    cmd.checkpoint, text_len, file.path(), file.text_len()));
    }
    Evaluator valid(file, *ctx.comm, "valid", ctx.config.eval);
    scorers.push_back(calibrated_model_scorer(model, valid, valid.items(), text_len, file.vocab()));
  }
  for (auto& s :
       create_baseline_scorers(eval_baselines_of(cmd, ctx.config.eval), file, *ctx.comm, ctx.config.eval)) {
    scorers.push_back(s);
  }
  return scorers;
}

int run_eval(const EvalCommand& cmd, AppContext& ctx) {
  const EvalConfig& config = ctx.config.eval;
  DatasetFile file(ctx.config.data.dataset);
  std::vector<std::shared_ptr<Scorer>> scorers = build_eval_scorers(cmd, ctx, file);
  const auto& fusion = ctx.config.eval.fusion.weights;
  if (fusion.count("model") != 0 && cmd.checkpoint.empty()) {
    spdlog::warn(
        "eval.fusion.weights names 'model' but no --checkpoint was given: the fusion row is left out");
  } else if (auto fused = build_eval_fusion(scorers, ctx, file)) {
    scorers.push_back(fused);
  }
  if (scorers.empty()) {
    throw ConfigError(
        "nothing to evaluate: eval.baselines is empty, no --baseline was given and eval.oracle_dir is "
        "not set");
  }

  Evaluator ev(file, *ctx.comm, cmd.split, config);
  std::vector<EvalResult> results;
  for (const auto& s : scorers) {
    results.push_back(ev.evaluate(*s));
    const EvalResult& r = results.back();
    spdlog::info("eval {}: {} NDCG@{} {:.4f} Recall@{} {:.4f} MRR {:.4f}, cold NDCG@{} {:.4f} ({:.2f} s)",
                 cmd.split, r.scorer, r.k[0], r.all.ndcg[0], r.k[0], r.all.recall[0], r.all.mrr, r.k[0],
                 r.cold.ndcg[0], r.seconds);
  }
  if (ctx.comm->rank() != 0) return 0;

  const EvalResult& first = results.front();
  std::string out = fmt::format(
      "llmrec eval: split {}, {} rank(s); {} users evaluated ({} without a {} event skipped), {} on cold "
      "items; "
      "full ranking over {} items, history excluded\n\n",
      cmd.split, ctx.comm->size(), first.users_evaluated, first.users_skipped, cmd.split, first.cold.users,
      first.num_items);
  out += eval_table_note(config);
  out += eval_results_table(results);
  const std::string path = (std::filesystem::path(ctx.run_dir) / ("eval_" + cmd.split + ".json")).string();
  write_eval_results(
      path, results,
      eval_protocol(file, cmd.split, config, ConfigWriter::write(ctx.config), ctx.comm->size()));
  out += fmt::format("\n-> {}\n", path);
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

namespace {

/// The fused scorer of `weights` over `scorers` (by name), tuned on `valid`
/// when `tune`; nullptr when `weights` is empty.
std::shared_ptr<FusedScorer> build_fusion(const std::vector<std::shared_ptr<Scorer>>& scorers,
                                          const std::map<std::string, double>& weights, bool tune,
                                          Evaluator& valid, const std::vector<std::string>& vocab) {
  if (weights.empty()) return nullptr;
  std::vector<FusionComponent> components;
  std::string available;
  for (const auto& s : scorers) available += (available.empty() ? "" : ", ") + s->name();
  for (const auto& [key, weight] : weights) {  // by name: a fixed order
    const std::string& name = key;             // a structured binding cannot be captured in C++17
    auto it = std::find_if(scorers.begin(), scorers.end(), [&](const auto& s) { return s->name() == name; });
    if (it == scorers.end()) {
      throw ConfigError(fmt::format(
          "eval.fusion.weights names '{}', which this run does not evaluate (scorers: {})", name, available));
    }
    components.push_back({*it, weight});
  }
  if (!tune) return std::make_shared<FusedScorer>(std::move(components));
  std::size_t reference = 0;
  for (std::size_t k = 0; k < components.size(); ++k) {
    if (components[k].scorer->name() == "model") reference = k;
  }
  // The cold-target figures in the world where some training items play new ones.
  const std::optional<FusionColdWorld> world = fusion_cold_world(components, valid, vocab);
  FusionTuning t = tune_fusion(components, reference, valid, world ? &*world : nullptr);
  std::string picked;
  for (std::size_t k = 0; k < components.size(); ++k) {
    picked += fmt::format("{}{}={}", k ? ", " : "", components[k].scorer->name(), t.weights[k]);
  }
  std::string cold;
  for (std::size_t k = 0; k < components.size(); ++k) {
    cold += fmt::format("{}{}={:.3g}", k ? ", " : "", components[k].scorer->name(), t.cold_weights[k]);
  }
  spdlog::info(
      "fusion: tuned on valid over {} weightings: {}, cold items {} ({}) (NDCG@10 {:.4f}, on cold "
      "targets {:.4f}{}; cold tolerance {:g})",
      t.tried.size(), picked, fusion_missing_name(t.missing), cold, t.ndcg10, t.cold_ndcg10,
      t.cold_withheld > 0 ? fmt::format(" with {} training items withheld{}", t.cold_withheld,
                                        t.real_cold_left_out ? " as the new items, items without training "
                                                               "events left out, both figures there"
                                                             : "")
                          : "",
      t.cold_tolerance);
  return std::make_shared<FusedScorer>(fused_with_tuning(std::move(components), t, valid.items().cold));
}

}  // namespace

std::shared_ptr<Scorer> build_eval_fusion(const std::vector<std::shared_ptr<Scorer>>& scorers,
                                          AppContext& ctx, const DatasetFile& file) {
  const EvalFusionConfig& f = ctx.config.eval.fusion;
  if (f.weights.empty()) return nullptr;
  Evaluator valid(file, *ctx.comm, "valid", ctx.config.eval);
  return build_fusion(scorers, f.weights, f.tune, valid, file.vocab());
}

std::string eval_table_note(const EvalConfig& config) {
  if (!config.swap_histories) return "";
  return "DIAGNOSTIC (eval.swap_histories): every user is scored with the next user's history; these figures "
         "measure what each scorer owes to knowing the user, they are not its quality\n\n";
}

ExportRanking export_ranking_choose(Recommender model, AppContext& ctx, const DatasetFile& file) {
  const EvalConfig& eval = ctx.config.eval;
  ExportRanking r = export_ranking_of(eval);
  Evaluator valid(file, *ctx.comm, "valid", eval);
  const int text_len = model->options().config().text_len;
  auto model_scorer = calibrated_model_scorer(model, valid, valid.items(), text_len, file.vocab());
  r.cold = model_scorer->cold_scoring();

  // Serving's collaborative components, built (and tuned) as evaluation builds them.
  std::vector<std::string> names = {"itemknn"};
  for (const char* name : {"popularity", "tfidf"}) {
    if (r.fusion.count(name) != 0) names.push_back(name);
  }
  std::vector<std::shared_ptr<Scorer>> scorers = {model_scorer};
  for (auto& s : create_baseline_scorers(names, file, *ctx.comm, eval)) scorers.push_back(s);
  r.itemknn = std::dynamic_pointer_cast<ItemKnnScorer>(scorers[1])->options();

  nlohmann::json left_out = nlohmann::json::array();
  for (const auto& [name, weight] : eval.fusion.weights) {
    if (weight > 0 && r.fusion.count(name) == 0) left_out.push_back(name);
  }
  if (!left_out.empty()) {
    spdlog::warn(
        "export: serving computes model, itemknn, popularity and tfidf only; the default ranking leaves out "
        "{} of eval.fusion.weights",
        left_out.dump());
  }
  const bool fused = r.fusion.size() > 1 || r.fusion.count("model") == 0;
  std::shared_ptr<FusedScorer> fusion =
      fused ? build_fusion(scorers, r.fusion, eval.fusion.tune, valid, file.vocab()) : nullptr;
  if (fusion) {
    r.fusion.clear();
    const auto& components = fusion->components();
    for (std::size_t k = 0; k < components.size(); ++k) {
      r.fusion[components[k].scorer->name()] = components[k].weight;
      if (fusion->missing() == FusionMissing::kColdWeights) {
        r.cold_weights[components[k].scorer->name()] = fusion->cold_weights()[k];
      }
    }
    r.missing = fusion->missing();
  }
  const nlohmann::json params = fusion ? fusion->params() : nlohmann::json::object();
  r.chosen = {{"by", fusion && eval.fusion.tune ? "validation (eval.fusion.tune)" : "configuration"},
              {"left_out", left_out},
              {"cold_calibration", model_scorer->params().value("cold_calibration", nlohmann::json(nullptr))},
              {"itemknn", scorers[1]->params()}};
  if (params.contains("tuning")) r.chosen["fusion_tuning"] = params["tuning"];
  std::string weights;
  for (const auto& [name, w] : r.fusion)
    weights += fmt::format("{}{}={:g}", weights.empty() ? "" : ", ", name, w);
  spdlog::info(
      "export: default ranking {} (cold items {}), ItemKNN {} neighbours, shrink {:g}, cold shift {:g}, "
      "neighbour weight {:g}",
      weights, fusion_missing_name(r.missing), r.itemknn.neighbours, r.itemknn.shrink, r.cold.shift,
      r.cold.neighbour_weight);
  return r;
}

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "eval",
      "Evaluate the baselines (eval: section) with full ranking on the dataset's valid or test split; "
      "prints a table, writes <run.dir>/eval_<split>.json (run it under mpirun)");
  auto args = std::make_shared<EvalCommand>();
  add_config_options(*cmd, args->options);
  cmd->add_option("--split", args->split, "Which held-out events to rank")
      ->check(CLI::IsMember({"valid", "test"}))
      ->capture_default_str();
  cmd->add_option("--checkpoint", args->checkpoint, "A trained model (model.h5 written by `llmrec train`)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--baseline", args->baselines,
                  "Evaluate this baseline (repeatable): popularity, itemknn, bpr, tfidf, oracle; default: "
                  "eval.baselines, plus the oracle when eval.oracle_dir is set")
      ->check(CLI::IsMember(eval_baseline_names()))
      ->allow_extra_args(false);
  cmd->callback([args] {
    int rc = app_run_distributed(args->options, [args](AppContext& ctx) { return run_eval(*args, ctx); });
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
