#pragma once
/// What rank 0 shows and records while a training loop runs (`llmrec
/// train`, `llmrec pretrain`): durations, a one-line progress bar, and the
/// per-step log both loops share (StepLogger), plus the loops' pure
/// decisions (when to validate, checkpoint and stop; early stopping).

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

namespace llmrec {

/// "42s", "3m05s", "1h02m"; "?" for a negative or infinite time.
std::string format_duration(double seconds);

/// Seconds left when `done` of `planned` steps took `elapsed` seconds, of
/// which the first `start` steps were done by an earlier run.
double eta_seconds(double elapsed, std::int64_t start, std::int64_t done, std::int64_t planned);

/// Redraws "[####......] done/planned loss L R <unit>/s ETA T" on stderr
/// (a newline after the last step).
void progress_bar(std::int64_t done, std::int64_t planned, double loss, double rate, const char* unit,
                  double eta);

struct StepLogOptions {
  std::string name = "step";                ///< log line prefix: "step", "pretrain step"
  std::string unit = "ex";                  ///< rate unit in the bar and the log line
  std::string rate_key = "examples_per_s";  ///< its metrics.jsonl key
  std::int64_t planned_steps = 0;
  std::int64_t start_step = 0;  ///< steps an earlier run did (resume)
  std::int64_t steps_per_epoch = 1;
  std::int64_t log_every = 50;
  bool bar = false;                 ///< a progress bar instead of log lines
  std::ostream* metrics = nullptr;  ///< metrics.jsonl (rank 0), else null
};

/// One optimizer step, summed over every rank.
struct StepRecord {
  std::int64_t done = 0;   ///< steps done, this one included
  double loss_sum = 0;     ///< the loss's numerator...
  double loss_count = 1;   ///< ...and denominator (1 per step; MLM: masked tokens)
  std::int64_t items = 0;  ///< examples (texts) of the step, all ranks
  double comm_wait_s = 0;  ///< the reducer's wait in finish()
  double step_s = 0;
  double lr = 0;
  double grad_norm = 0;
  double bar_loss = 0;                              ///< the loss the bar shows (this step's)
  nlohmann::json extra = nlohmann::json::object();  ///< more fields of the metrics line
};

/// Every `log_every` steps (and at the last planned step): one metrics.jsonl
/// line {step, epoch, loss (window mean), lr, grad_norm, <rate_key>,
/// comm_wait_s, comm_share, elapsed_s, extra...} and, without a bar, one log
/// line with the ETA; with a bar, the bar after every step.
class StepLogger {
 public:
  explicit StepLogger(StepLogOptions options);
  void record(const StepRecord& step);
  /// Ends a bar's line before other output (validation, a stop).
  void break_line() const;
  /// Items per second over this run.
  double rate() const;

 private:
  using Clock = std::chrono::steady_clock;
  StepLogOptions o_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point window_start_ = start_;
  double loss_sum_ = 0, loss_count_ = 0, wait_s_ = 0, step_s_ = 0;
  std::int64_t items_ = 0, steps_ = 0, total_items_ = 0;
};

/// What a validation score means for early stopping: a better score resets
/// the count; patience 0 never stops (and counts nothing).
struct ValidationVerdict {
  bool improved = false;
  int bad_evals = 0;  ///< validations in a row without improvement
  bool stop = false;
};
ValidationVerdict judge_validation(double score, double best_score, int bad_evals, int patience);

/// When the loop of `llmrec train` validates and checkpoints.
struct StepSchedule {
  std::int64_t planned_steps = 0;
  std::int64_t steps_per_epoch = 1;
  std::int64_t eval_every = 0;        ///< 0: at each epoch's end
  std::int64_t checkpoint_every = 0;  ///< 0: only at the end and on stops
  std::int64_t start_step = 0;
  std::int64_t stop_after = 0;  ///< stop after this many steps of this run (0: never)
  bool validates = true;        ///< a validation function was given
};
struct StepEnd {
  bool last = false;        ///< the last planned step
  bool validate = false;    ///< validate now (a signal defers it into the checkpoint)
  bool checkpoint = false;  ///< periodic, last, or stop_after (an early stop adds one)
  bool stop_after = false;  ///< this run's stop_after is reached
};
/// After `done` steps.
StepEnd step_end(const StepSchedule& s, std::int64_t done);

}  // namespace llmrec
