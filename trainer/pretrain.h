#pragma once
/// `llmrec pretrain`: masked-language-model pre-training of the item encoder
/// on the catalogue's texts (models/mlm.h), data-parallel like training.
///
/// Per optimizer step, on every rank: the step's global batch (batch_size x
/// world texts, the epoch's permutation of the training texts) is masked by
/// BERT's rule with seeds that depend on the text and the epoch only; each
/// rank takes its batch_size texts, sums the cross-entropy over its masked
/// pieces, divides by the global batch's masked count and runs backward
/// while the GradientReducer sums the gradients. So W ranks x b texts step
/// exactly as one rank x W b texts (up to float rounding; dropout aside).
/// Then clipping, the learning rate of the schedule, AdamW, and one small
/// all-reduce of the step's loss, accuracy and stop signal.
///
/// Files under <run.dir>/pretrain: metrics.jsonl (loss and accuracy of the
/// masked pieces per log window; held-out loss and accuracy at each
/// evaluation), checkpoints/step-N.h5 (format `llmrec-pretrain-checkpoint`:
/// weights, AdamW state, every rank's RNG and the data position; an exact
/// resume). At the end rank 0 writes the HF directory `pretrain.out`.
///
///   Pretrainer p(setup, comm);
///   PretrainResult r = p.run();   // collective

#include <torch/optim/adamw.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/sampler.h"
#include "distributed/communicator.h"
#include "distributed/gradient_reducer.h"
#include "models/mlm.h"
#include "models/model_config.h"
#include "trainer/pretrain_config.h"
#include "trainer/progress.h"

namespace llmrec {

constexpr const char* kPretrainCheckpointFormat = "llmrec-pretrain-checkpoint";
constexpr std::int64_t kPretrainCheckpointVersion = 1;

struct PretrainSetup {
  PretrainConfig pretrain;
  ModelBertConfig bert;  ///< the architecture when pretrain.from is ""
  std::string dataset;
  std::string run_dir;
  std::string resume;  ///< a pre-training checkpoint, "" = start fresh
  std::string run_config_yaml;
  std::int64_t stop_after = 0;  ///< stop with a checkpoint after this many steps of this run; 0 = off
  torch::Device device = torch::kCPU;
};

struct PretrainResult {
  std::int64_t steps = 0;
  std::int64_t planned_steps = 0;
  int stop_signal = 0;
  bool stopped_after = false;
  double last_loss = 0;      ///< mean cross-entropy of the last step's masked pieces
  double heldout_loss = -1;  ///< at the last evaluation; -1 = none
  double heldout_accuracy = -1;
  double texts_per_s = 0;  ///< global, over this run
  std::int64_t resumed_step = -1;
  std::string last_checkpoint;
  std::string out_dir;  ///< the HF directory written ("" when stopped early)
};

/// The texts pre-training uses: catalogue items with at least one word
/// piece that can be masked, split into training and held-out texts (the
/// first round(holdout x n) of a seeded permutation, at least one when
/// holdout > 0 and n > 1), each list in item order. `empty` counts the
/// items left out for having no text.
struct PretrainTexts {
  std::vector<std::int64_t> train;
  std::vector<std::int64_t> heldout;
  std::int64_t empty = 0;
};
PretrainTexts pretrain_split_texts(const ItemTable& items, int text_len, const MlmVocab& vocab,
                                   double holdout, std::uint64_t seed);

/// A batch of masked texts as tensors: ids, attention mask and labels
/// [n, L] int64 (L = the longest text; labels -1 where nothing is
/// predicted), and how many pieces are predicted.
struct MlmBatch {
  torch::Tensor ids, attention, labels;
  std::int64_t predicted = 0;
};
MlmBatch mlm_batch(const std::vector<MaskedText>& texts, std::int32_t pad);

/// One optimizer step on this rank's `batch` (collective through the
/// reducer): backward of the batch's cross-entropy sum / `normaliser`,
/// reducer.finish(), clipping to `clip_norm` (0 = off), `lr`, AdamW. The
/// normaliser is the global batch's predicted count, so that the summed
/// gradients (ReduceOp::kSum) are those of the global mean. Returns the
/// batch's sums and sets `grad_norm` (before clipping).
MlmSums pretrain_step(BertForMaskedLMImpl& model, const MlmBatch& batch, double normaliser,
                      GradientReducer& reducer, torch::optim::AdamW& optimizer,
                      const std::vector<torch::Tensor>& trainable, double clip_norm, double lr,
                      double* grad_norm);

/// `<run_dir>/pretrain/checkpoints`.
std::string pretrain_checkpoint_dir(const std::string& run_dir);
/// Reads every dataset of a pre-training checkpoint (checksums, format,
/// shapes); IoError describing the first problem.
void verify_pretrain_checkpoint(const std::string& path);

class Pretrainer {
 public:
  /// Opens the dataset, builds (or loads `from`) the encoder with its MLM
  /// head, splits the texts. Collective only in what GradientReducer's
  /// construction checks. ConfigError for a model that cannot pre-train
  /// (no transformer layer, a vocabulary other than the dataset's, texts
  /// longer than its positions, too few texts for one step).
  Pretrainer(PretrainSetup setup, Communicator& comm);
  ~Pretrainer();
  PretrainResult run();
  BertForMaskedLM& model() { return model_; }
  const PretrainTexts& texts() const { return texts_; }
  std::int64_t planned_steps() const { return planned_steps_; }
  std::int64_t steps_per_epoch() const { return steps_per_epoch_; }
  /// Held-out loss and accuracy of the current weights (collective).
  std::pair<double, double> evaluate_heldout();

 private:
  /// Where a run starts: fresh, or a checkpoint's step, data position and
  /// held-out figures (setup.resume; weights, optimizer and RNGs restored).
  struct ResumePoint {
    std::int64_t step = 0;
    Cursor cursor{0, 0};
    double heldout_loss = -1;
    double heldout_accuracy = -1;
  };
  ResumePoint resume(torch::optim::AdamW& optimizer,
                     const std::vector<std::pair<std::string, torch::Tensor>>& params,
                     std::int64_t global_batch);
  /// The result before the first step: planned steps, and a resumed run's
  /// step and held-out figures.
  PretrainResult initial_result(const ResumePoint& at) const;
  /// Collective: writes the checkpoint after `steps_done` steps; its path.
  std::string write_checkpoint(std::int64_t steps_done, const Cursor& cursor, std::int64_t global_batch,
                               const PretrainResult& result, torch::optim::AdamW& optimizer,
                               const std::vector<std::pair<std::string, torch::Tensor>>& params);
  /// This rank's batch of a step's texts masked for `pass`; every rank's
  /// masked count into global_predicted.
  MlmBatch step_batch(const std::vector<std::int64_t>& step_texts, std::uint64_t pass,
                      std::int64_t* global_predicted) const;
  /// The step log's settings and the loop's schedule for a run from `start_step`.
  StepLogOptions step_log_options(std::int64_t start_step, std::ostream* metrics) const;
  StepSchedule step_schedule(std::int64_t start_step) const;
  /// The run's plan in the log: model, parameters, bytes reduced, texts, steps.
  void log_plan(const GradientReducer& reducer, std::int64_t global_batch) const;
  /// The global batch of training texts at `cursor` (the epoch's shuffled order).
  const std::vector<std::int64_t>& step_texts(const Cursor& cursor, std::int64_t global_batch);
  /// Collective: the held-out loss and accuracy after `steps_done` steps into
  /// `result`, the log and (rank 0) `metrics`.
  void record_heldout(std::int64_t steps_done, PretrainResult& result, std::ostream* metrics);
  /// Collective: rank 0 writes the HF directory (pretrain.out); its path.
  std::string save_pretrained();
  /// texts[begin, begin + count) masked for `pass` (a pure function of the
  /// seed, the pass and the item).
  std::vector<MaskedText> mask_texts(const std::vector<std::int64_t>& texts, std::uint64_t pass,
                                     std::int64_t begin, std::int64_t count) const;

  PretrainSetup setup_;
  Communicator& comm_;
  ItemTable items_;
  int text_len_ = 0;
  std::vector<std::string> vocab_;
  MlmVocab mlm_vocab_;
  PretrainTexts texts_;
  BertForMaskedLM model_{nullptr};
  std::int64_t steps_per_epoch_ = 0;
  std::int64_t planned_steps_ = 0;
  std::vector<std::int64_t> order_;  ///< the shuffled training texts of epoch order_epoch_
  std::int64_t order_epoch_ = -1;
  std::vector<std::int64_t> step_texts_;
};

}  // namespace llmrec
