// `llmrec train`: data-parallel training under mpirun (or one process).
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstring>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "apps/train_run.h"

namespace llmrec {

void command_train_add(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Train the recommender on data.dataset (run it under mpirun for data parallelism)");
  auto options = std::make_shared<ConfigOptions>();
  config_options_add(*cmd, *options);
  cmd->callback([options] {
    int rc = app_run_distributed(*options, [](AppContext& ctx) { return train_run(ctx); });
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
