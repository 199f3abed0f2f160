// `llmrec train`: data-parallel training under mpirun (or one process).
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstring>
#include <limits>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "apps/run_train.h"

namespace llmrec {

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Train the recommender on data.dataset (run it under mpirun for data parallelism)");
  auto options = std::make_shared<ConfigOptions>();
  auto run = std::make_shared<TrainRunOptions>();
  add_config_options(*cmd, *options);
  cmd->add_option(
         "--resume", run->resume,
         "none: start fresh (refused if run.dir has checkpoints); auto: continue from the newest valid "
         "checkpoint in <run.dir>/checkpoints (fresh if none); or a checkpoint file")
      ->default_str("none");
  cmd->add_option("--stop-after", run->stop_after,
                  "Stop after this many steps (>= 1) of this run, writing a checkpoint (time-sliced jobs)")
      ->check(CLI::Range(std::int64_t{1}, std::numeric_limits<std::int64_t>::max()));
  cmd->add_flag(
      "--dry-run", run->dry_run,
      "Check the config, the dataset and the model against each other (every problem listed), print "
      "parameter counts, steps, bytes all-reduced and a memory estimate; train nothing");
  cmd->callback([options, run] {
    int rc = app_run_distributed(*options, [run](AppContext& ctx) { return run_train(ctx, *run); });
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
