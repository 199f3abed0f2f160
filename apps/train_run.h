#pragma once
// The body of `llmrec train` (also used by tests): train, validate, test.
#include "apps/app_context.h"

namespace llmrec {

/// Trains with ctx.config, validating as train.eval_every says, then
/// evaluates the best model on the test split next to the baselines.
/// Returns the exit code: 0, or 128 + signal when stopped by SIGINT/SIGTERM.
int train_run(AppContext& ctx);

}  // namespace llmrec
