#pragma once
// The body of `llmrec train` (also used by tests): train, validate, test.
#include <cstdint>
#include <functional>
#include <string>

#include "apps/app_context.h"

namespace llmrec {

/// Command-line options of `llmrec train` beyond the config.
struct TrainRunOptions {
  /// none: start fresh (an error if run.dir already has checkpoints);
  /// auto: the newest valid checkpoint of run.dir, fresh if none; or a path.
  std::string resume = "none";
  /// Stop with a checkpoint after this many steps of this run (0 = off).
  std::int64_t stop_after = 0;
  /// Check config, dataset and model, print the plan, train nothing.
  bool dry_run = false;
};

/// Trains with ctx.config, validating as train.eval_every says, then
/// evaluates the best model on the test split next to the baselines.
/// Returns the exit code: 0, or 128 + signal when stopped by SIGINT/SIGTERM
/// (after writing a checkpoint).
int run_train(AppContext& ctx, const TrainRunOptions& options = {});

/// The checkpoint of `dir` to resume from, the same on every rank
/// (collective): `resume` none = "" (a ConfigError when `dir` already holds
/// checkpoints), auto = the newest that passes `verify` (default
/// verify_checkpoint; "" when none) or a file path.
std::string resolve_resume(AppContext& ctx, const std::string& resume, const std::string& dir,
                           const std::function<void(const std::string&)>& verify = {});

}  // namespace llmrec
