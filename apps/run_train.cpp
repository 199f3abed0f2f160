#include "apps/run_train.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "apps/eval_fusion.h"
#include "apps/report.h"
#include "distributed/agree.h"
#include "distributed/broadcast_string.h"
#include "models/recommender.h"
#include "trainer/baselines.h"
#include "trainer/checkpoint.h"
#include "trainer/evaluation.h"
#include "trainer/model_scorer.h"
#include "trainer/trainer.h"

namespace llmrec {
namespace {

/// NDCG at the first configured K of 10, else at the first K.
double ndcg_at_10(const EvalResult& r) {
  auto it = std::find(r.k.begin(), r.k.end(), 10);
  const std::size_t i = it == r.k.end() ? 0 : static_cast<std::size_t>(it - r.k.begin());
  return r.all.ndcg.at(i);
}

std::string mib(double bytes) {
  return fmt::format("{:.1f} MiB", bytes / (1024.0 * 1024.0));
}

/// `train --dry-run`: every check training makes before its first step
/// (the model keys against each other, then the dataset, the model and the
/// world size against them), all problems listed in one ConfigError; then
/// the plan on rank 0. The checks are the same on every rank.
int dry_run_train(AppContext& ctx, const TrainerSetup& setup) {
  std::vector<std::string> problems;
  try {
    check_recommender_config(setup.model);
  } catch (const ConfigError& e) {
    problems.push_back(e.what());
  }
  std::unique_ptr<Trainer> trainer;
  if (problems.empty()) {  // a model that cannot be built is not checked against the data
    try {
      trainer = std::make_unique<Trainer>(setup, *ctx.comm);
      DatasetFile file(setup.dataset);
      Evaluator valid(file, *ctx.comm, "valid", ctx.config.eval);
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += "\n  - " + p;
    throw ConfigError(fmt::format("train --dry-run: {} problem(s):{}", problems.size(), all));
  }
  Recommender& model = trainer->model();
  std::int64_t total = 0, trainable = 0, tensors = 0;
  std::size_t elem = 4;
  for (const auto& p : model->parameters()) {
    total += p.numel();
    if (p.requires_grad()) {
      trainable += p.numel();
      ++tensors;
      elem = p.element_size();
    }
  }
  const BatchSampler& sampler = trainer->sampler();
  const TrainConfig& tc = setup.train;
  const double params_bytes = static_cast<double>(total) * static_cast<double>(elem);
  const double state_bytes =
      3.0 * static_cast<double>(trainable) * static_cast<double>(elem);  // grad, AdamW m, v
  if (ctx.comm->rank() == 0) {
    std::string out = fmt::format(
        "llmrec train --dry-run: every check passed on {} rank(s); nothing trained\n", ctx.comm->size());
    out += fmt::format("model: {} parameters, {} trainable in {} tensors\n", total, trainable, tensors);
    out += fmt::format(
        "data: {} training examples ({} on rank 0), {} batches of {} per rank and epoch; "
        "{} optimizer steps planned ({})\n",
        sampler.global_examples(), sampler.local_examples(), sampler.steps_per_epoch(), tc.batch_size,
        trainer->planned_steps(),
        tc.max_steps > 0 ? fmt::format("train.max_steps") : fmt::format("{} epochs", tc.epochs));
    out += fmt::format("all-reduce: {} per step ({} gradient values)\n",
                       mib(static_cast<double>(trainable) * static_cast<double>(elem)), trainable);
    out += fmt::format(
        "memory per rank (estimate): {} parameters + {} gradients and AdamW moments + {} best-model "
        "copy = {}; activations and the dataset not included\n",
        mib(params_bytes), mib(state_bytes), mib(params_bytes), mib(2 * params_bytes + state_bytes));
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

std::string resolve_resume(AppContext& ctx, const std::string& resume, const std::string& dir,
                           const std::function<void(const std::string&)>& verify) {
  std::string chosen;
  run_on_rank0(*ctx.comm, [&] {
    if (resume == "none") {
      auto existing = checkpoint_list(dir);
      if (!existing.empty()) {
        throw ConfigError(
            fmt::format("{} already holds {} checkpoint(s) (newest {}): pass --resume auto to continue "
                        "that run, or use another run.dir",
                        dir, existing.size(), existing.front()));
      }
    } else if (resume == "auto") {
      std::vector<std::string> skipped;
      chosen = checkpoint_latest_valid(dir, &skipped, verify);
      for (const auto& s : skipped) spdlog::warn("skipping a damaged checkpoint: {}", s);
      if (chosen.empty()) {
        spdlog::info("--resume auto: no valid checkpoint in {}{}; starting fresh", dir,
                     skipped.empty() ? "" : fmt::format(" ({} damaged)", skipped.size()));
      }
    } else {
      if (!std::filesystem::is_regular_file(resume))
        throw ConfigError(fmt::format("--resume {}: no such file", resume));
      chosen = resume;
    }
    return std::int64_t{0};
  });
  return broadcast_string(*ctx.comm, chosen);
}

int run_train(AppContext& ctx, const TrainRunOptions& options) {
  const Config& cfg = ctx.config;
  Config resolved = cfg;
  const std::string resolved_yaml = ConfigWriter::write(resolved);
  TrainerSetup setup;
  setup.train = cfg.train;
  setup.model = cfg.model;
  setup.dataset = cfg.data.dataset;
  setup.run_dir = ctx.run_dir;
  setup.resume = resolve_resume(ctx, options.resume, checkpoint_dir(ctx.run_dir));
  setup.run_config_yaml = resolved_yaml;
  setup.stop_after = options.stop_after;
  setup.device = ctx.device;
  setup.bf16 = cfg.run.precision == "bf16";
  if (options.dry_run) return dry_run_train(ctx, setup);
  Trainer trainer(setup, *ctx.comm);
  DatasetFile file(cfg.data.dataset);
  Evaluator valid(file, *ctx.comm, "valid", cfg.eval);
  const int text_len = cfg.model.text_len;
  auto validate = [&](Recommender& model) {
    ModelScorer scorer(model, valid.items(), text_len, *ctx.comm);
    return ndcg_at_10(valid.evaluate(scorer));
  };
  TrainResult r = trainer.run(validate);
  spdlog::info(
      "trained {} of {} steps, {:.1f} examples/s, last loss {:.4f}; best validation NDCG@10 {:.4f} at step "
      "{}",
      r.steps, r.planned_steps, r.examples_per_s, r.last_loss, r.best_score, r.best_step);
  if (r.stop_signal != 0)
    return exit_after_stop_signal(r.stop_signal, r.steps, r.planned_steps, r.last_checkpoint);
  if (r.stopped_after) return 0;

  if (ctx.comm->rank() == 0) {
    const std::string path = ctx.run_dir + "/model.h5";
    CheckpointParts parts;
    parts.model = trainer.model();
    parts.run_config_yaml = resolved_yaml;
    parts.model_step = r.best_step >= 0 ? r.best_step : r.steps;
    parts.model_world_size = ctx.comm->size();
    save_checkpoint(path, parts);
    spdlog::info("wrote the {} model to {} (llmrec eval --checkpoint {})",
                 r.best_step >= 0 ? "best" : "final", path, path);
  }

  // Test split: the best model next to the baselines (and the oracle).
  std::vector<std::string> names = cfg.eval.baselines;
  if (!cfg.eval.oracle_dir.empty() && std::find(names.begin(), names.end(), "oracle") == names.end()) {
    names.push_back("oracle");
  }
  std::vector<std::shared_ptr<Scorer>> scorers;
  scorers.push_back(calibrated_model_scorer(trainer.model(), valid, valid.items(), text_len, file.vocab()));
  for (auto& s : create_baseline_scorers(names, file, *ctx.comm, cfg.eval)) scorers.push_back(s);
  if (auto fused = build_eval_fusion(scorers, ctx, file)) scorers.push_back(fused);
  Evaluator test(file, *ctx.comm, "test", cfg.eval);
  std::vector<EvalResult> results;
  for (auto& s : scorers) results.push_back(test.evaluate(*s));
  if (ctx.comm->rank() == 0) {
    const std::string path = ctx.run_dir + "/eval_test.json";
    write_eval_results(path, results, eval_protocol(file, "test", cfg.eval, resolved_yaml, ctx.comm->size()));
    std::printf("\nTest split, full ranking over %lld items (%s):\n%s%s\n",
                static_cast<long long>(results[0].num_items), path.c_str(), eval_table_note(cfg.eval).c_str(),
                eval_results_table(results).c_str());
    std::fflush(stdout);
    // The run is done and saved: a report that cannot be written is an
    // error in the log, not a failed run (`llmrec report` retries it).
    try {
      const std::string report = write_report(ctx.run_dir);
      std::printf("Report: %s\n", report.c_str());
      std::fflush(stdout);
    } catch (const std::exception& e) {
      spdlog::error("the run report was not written: {} (run `llmrec report {}`)", e.what(), ctx.run_dir);
    }
  }
  return 0;
}

}  // namespace llmrec
