#pragma once
/// The training loop of `llmrec train`.
///
/// Per optimizer step, on every rank: micro_batches micro-steps (the last
/// synchronised), GradientReducer::finish, global-norm clipping, the
/// learning rate of the schedule, AdamW; then one small all-reduce that
/// carries the step's loss, example count and whether any rank received
/// SIGINT/SIGTERM, so that every rank stops after the same step. Metrics go
/// to <run.dir>/metrics.jsonl (rank 0), a progress bar with ETA to rank 0's
/// terminal. Validation (collective) runs every eval_every steps or at the
/// end of each epoch; early stopping keeps the best model by NDCG@10.
/// Training checkpoints (trainer/checkpoint.h) go to
/// <run.dir>/checkpoints every train.checkpoint_every steps, after the last
/// step, and when a signal or stop_after ends the run; the newest
/// train.keep_checkpoints are kept. Writing one is collective (every rank's
/// RNG state is gathered; rank 0 writes) and a failed write (full disk) is
/// an IoError on every rank, naming the path.

#include <algorithm>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include "data/sampler.h"
#include "distributed/communicator.h"
#include "distributed/gradient_reducer.h"
#include "models/model_config.h"
#include "models/recommender.h"
#include "trainer/checkpoint.h"
#include "trainer/progress.h"
#include "trainer/train_config.h"
#include "trainer/train_step.h"

namespace llmrec {

struct TrainerSetup {
  TrainConfig train;
  ModelConfig model;
  std::string dataset;
  std::string run_dir;
  /// Training checkpoint to resume from ("" = start fresh). Exact on the
  /// same world size; on another one the data position of the epoch is
  /// carried over proportionally (logged).
  std::string resume;
  /// The run's resolved YAML, stored in every checkpoint.
  std::string run_config_yaml;
  /// Stop (with a checkpoint) after this many optimizer steps of this run;
  /// 0 = run to the end. For time-sliced jobs and resume tests.
  std::int64_t stop_after = 0;
  /// run.device resolved (cuda:<i> or cpu) and run.precision bf16.
  torch::Device device = torch::kCPU;
  bool bf16 = false;
};

struct TrainResult {
  std::int64_t steps = 0;  ///< optimizer steps done
  std::int64_t planned_steps = 0;
  int stop_signal = 0;  ///< SIGINT/SIGTERM that stopped the run, 0 = none
  bool early_stopped = false;
  double best_score = -1;  ///< best validation NDCG@10 (-1 = never validated)
  std::int64_t best_step = -1;
  double examples_per_s = 0;  ///< global, over the whole run
  double last_loss = 0;
  std::int64_t resumed_step = -1;  ///< step the run resumed from, -1 = fresh start
  bool stopped_after = false;      ///< ended by TrainerSetup::stop_after
  std::string last_checkpoint;     ///< newest checkpoint written ("" = none)
};

/// One step's totals over every rank, in one small all-reduce (both
/// training loops): the loss sum, the count it is over, and whether any
/// rank received a stop signal.
struct StepTotals {
  double loss_sum = 0;
  double count = 0;
  bool stop = false;
  /// The step's mean loss (0 over no examples).
  double mean_loss() const { return loss_sum / std::max(count, 1.0); }
};
class Trainer {
 public:
  /// Opens the dataset, builds the model (vocab size 0 = the dataset's),
  /// the sampler, reducer and optimizer. Collective: every rank calls it.
  Trainer(TrainerSetup setup, Communicator& comm);
  ~Trainer();

  /// Runs to the end, an early stop or a signal. `validate` (optional,
  /// collective) returns the validation NDCG@10 of the model.
  TrainResult run(const std::function<double(Recommender&)>& validate = {});

  /// The trained model (the best by validation, when validated).
  Recommender& model() { return best_ ? best_ : model_; }
  /// The model after the last step (whatever validation said).
  Recommender& last_model() { return model_; }
  const BatchSampler& sampler() const { return *sampler_; }
  std::int64_t planned_steps() const { return planned_steps_; }

 private:
  TrainerSetup setup_;
  Communicator& comm_;
  std::shared_ptr<BatchSampler> sampler_;
  Recommender model_{nullptr};
  Recommender best_{nullptr};
  std::int64_t planned_steps_ = 0;
  int text_len_ = 0;
  std::unique_ptr<TextFeatureCache> text_cache_;  ///< with model.bert.freeze or train.item_cache_refresh
  int cache_refresh_ = 0;     ///< train.item_cache_refresh with a trainable encoder (else 0)
  bool init_loaded_ = false;  ///< the weights came from train.init_from (not a resume)

  /// Where a run starts: a fresh start, or a checkpoint's state (setup.resume).
  struct ResumePoint {
    std::int64_t step = 0;
    Cursor cursor{0, 0};
    double best_score = -1;
    std::int64_t best_step = -1;
    int bad_evals = 0;
    bool validation_due = false;
  };
  /// One optimizer step's local sums and settings.
  struct StepSums {
    double loss_sum = 0;
    std::int64_t examples = 0;
    double grad_norm = 0;
    double lr = 0;
    std::int64_t adalora_budget = -1;  ///< AdaLoRA's budget after the step (-1 without)
  };

  /// What every micro-step needs (communicator, reducer, device, ...).
  StepContext step_context(GradientReducer& reducer);
  /// The step log's settings and the loop's schedule for a run from `start_step`.
  StepLogOptions step_log_options(std::int64_t start_step, std::ostream* metrics) const;
  StepSchedule step_schedule(std::int64_t start_step, bool validates) const;
  /// Logs the parameter counts, the all-reduce volume and the data plan.
  void log_plan(const GradientReducer& reducer,
                const std::vector<std::pair<std::string, torch::Tensor>>& params) const;
  /// Loads setup.resume into the model, best model, optimizer and RNGs.
  ResumePoint resume(torch::optim::AdamW& optimizer,
                     const std::vector<std::pair<std::string, torch::Tensor>>& params);
  /// The micro-steps of optimizer step `step`, the reducer, clipping, the
  /// schedule's learning rate and AdamW.
  StepSums optimizer_step(BatchLoader& loader, const StepContext& ctx, GradientReducer& reducer,
                          torch::optim::AdamW& optimizer, const std::vector<torch::Tensor>& trainable,
                          std::int64_t step);
  /// The step log's record of a step.
  static StepRecord step_record(std::int64_t steps_done, const StepTotals& totals, const StepSums& sums,
                                const ReducerStats& reducer, double step_s);
  /// Collective: validates after `steps_done` steps, logs and records the
  /// score (rank 0: `metrics`), keeps the best model and updates the early
  /// stopping count `bad_evals` and `result` (best, early_stopped).
  void validate_now(const std::function<double(Recommender&)>& validate, std::int64_t steps_done,
                    TrainResult& result, int& bad_evals, std::ostream* metrics);
  /// Collective: writes the checkpoint of `state` (after `state.step` steps).
  std::string write_checkpoint(TrainingState& state, torch::optim::AdamW& optimizer,
                               const std::vector<std::pair<std::string, torch::Tensor>>& params);
};

/// Installs SIGINT/SIGTERM handlers that only record the signal (restored
/// by the destructor); the loop checks it between steps.
class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  static int received();
};

StepTotals reduce_step_totals(Communicator& comm, double loss_sum, double count);
/// Rank 0 (`open`): `dir`/metrics.jsonl for appending (the folder made if
/// missing); other ranks: a closed stream.
std::ofstream open_metrics_file(const std::string& dir, bool open);

/// After a stop request reached some rank: ends the bar's line, logs that
/// every rank stops after `steps_done` of `planned`, and returns the signal
/// to report (this rank's, else SIGTERM).
int announce_stop_signal(StepLogger& logger, std::int64_t steps_done, std::int64_t planned);
/// A run ended by a signal: logs that it is incomplete, with the checkpoint
/// to resume from; the exit code 128 + signal.
int exit_after_stop_signal(int signal, std::int64_t steps, std::int64_t planned,
                           const std::string& checkpoint);
/// The log line of a run ended by run.stop_after (`prefix`: "" or "pretrain: ").
void announce_stop_after(const char* prefix, std::int64_t steps_this_run, std::int64_t steps_done,
                         std::int64_t planned);

}  // namespace llmrec
