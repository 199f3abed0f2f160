#pragma once
/// Checkpoints (HDF5, format `llmrec-checkpoint`, version 2): the weights of
/// a recommender by module path with the `model:` configuration that builds
/// it and, in a training checkpoint, everything an exact resume needs.
///
/// Layout (docs/training.md, "Checkpoints"): root attributes `format`,
/// `version`, `model_config` (YAML of the model section), `id_items`,
/// `dtype` (float32|float64), `step`, `world_size`, `config` (the run's
/// resolved YAML), `training` (1 = the groups below are present);
/// `model/<module path>` for every parameter and buffer in the model's dtype;
/// a training checkpoint adds `optimizer/<parameter>/{exp_avg,exp_avg_sq}`
/// with attribute `step`, `rng/<rank>` (each rank's CPU generator state),
/// `best/<module path>` (the best model so far, when validated),
/// `item_features/{table,kept}` (with train.item_cache_refresh) and the
/// attributes `cursor_epoch`, `cursor_step`, `steps_per_epoch`,
/// `planned_steps`, `best_score`, `best_step`, `bad_evals`, `validation_due`. Every dataset is
/// checksummed (Fletcher32); files are written to a temporary name, fsynced
/// and renamed, so a crash never leaves a half file under a checkpoint name.
///
///   save_checkpoint(path, {model, &optimizer, &params, best, state, yaml});
///   auto dir = checkpoint_dir(run_dir);
///   std::string latest = checkpoint_latest_valid(dir, &skipped);  // "" = none
///   load_checkpoint(latest, {model, &optimizer, &params, best, &state});

#include <torch/optim/adamw.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/hdf5.h"
#include "data/sampler.h"
#include "distributed/communicator.h"
#include "models/recommender.h"

namespace llmrec {

constexpr const char* kCheckpointFormat = "llmrec-checkpoint";
constexpr std::int64_t kCheckpointVersion = 2;

/// Where training stands, besides the weights and the optimizer state.
struct TrainingState {
  std::int64_t step = 0;             ///< optimizer steps done
  Cursor cursor;                     ///< the next batch (same on every rank)
  std::int64_t steps_per_epoch = 0;  ///< batches per rank and epoch when saved
  std::int64_t planned_steps = 0;
  double best_score = -1;
  std::int64_t best_step = -1;
  int bad_evals = 0;
  bool validation_due = false;  ///< a validation was due at `step` but the run stopped first
  int world_size = 1;
  std::vector<at::Tensor> rng;  ///< uint8 CPU generator state of each rank
};

/// What a checkpoint holds; null members are absent (a model file has only
/// `model`).
struct CheckpointParts {
  Recommender model{nullptr};
  torch::optim::AdamW* optimizer = nullptr;
  /// The optimizer's parameters by name (the state's keys in the file).
  const std::vector<std::pair<std::string, torch::Tensor>>* params = nullptr;
  Recommender best{nullptr};
  TrainingState* state = nullptr;
  std::string run_config_yaml;
  /// A training checkpoint's kept item features (TextFeatureCache::state,
  /// train.item_cache_refresh): `item_features/table` [tables, items, H]
  /// float32 and `item_features/kept` [tables, items] uint8, one table per
  /// rank or one for all when the ranks' are the same; undefined = none.
  /// load_checkpoint sets them from a training checkpoint that has them.
  torch::Tensor item_features;
  torch::Tensor item_features_kept;
  /// The `step` attribute of a model file (without `state`).
  std::int64_t model_step = 0;
  int model_world_size = 1;
};

/// Writes `parts` to `path` (call on one rank). IoError naming the path
/// on failure (e.g. a full disk); the previous file of that name is kept.
void save_checkpoint(const std::string& path, const CheckpointParts& parts);

/// Loads a checkpoint into existing objects: the model (and best, state,
/// optimizer when given and present in the file; `best` is reset to null
/// when the file has none). Checks that the stored model configuration
/// equals `parts.model`'s (ConfigError listing every differing key) and
/// every tensor's shape; IoError naming the file and tensor otherwise.
void load_checkpoint(const std::string& path, CheckpointParts& parts);

/// Builds the recommender a checkpoint describes and loads its weights.
Recommender checkpoint_load_model(const std::string& path);

/// Loads the weights of the checkpoint `path` (a model file or a training
/// checkpoint) into `model`, to start a new run from them (train.init_from).
/// The stored model configuration may differ from `model`'s only in how the
/// model trains: model.bert.freeze, model.bert.dropout, model.user.dropout,
/// model.id_dropout, model.loss.*, and model.lora.* when the file has no
/// adapters (model.lora.r 0): `model`'s adapter tensors (lora_*) then keep
/// their initialisation and are appended to `fresh`. Any other difference
/// is a ConfigError listing the keys (a file with adapters into a model
/// without them would lose them); a different dataset (ID vectors, context
/// values) too. Returns the number of tensors loaded.
std::int64_t checkpoint_init_model(const std::string& path, Recommender& model,
                                   std::vector<std::string>* fresh);

/// Reads every dataset of a checkpoint (verifying checksums and the
/// format); IoError describing the first problem.
void verify_checkpoint(const std::string& path);

/// `<run_dir>/checkpoints`.
std::string checkpoint_dir(const std::string& run_dir);
/// `<dir>/step-<step, 8 digits>.h5`.
std::string checkpoint_path(const std::string& dir, std::int64_t step);
/// The checkpoints in `dir` (step-*.h5), newest (highest step) first.
std::vector<std::string> checkpoint_list(const std::string& dir);
/// The newest checkpoint of `dir` that passes `verify` (default
/// verify_checkpoint; it throws llmrec::Error on a bad file), "" if none;
/// each damaged one is appended to `skipped` as "path: reason".
std::string checkpoint_latest_valid(const std::string& dir, std::vector<std::string>* skipped,
                                    const std::function<void(const std::string&)>& verify = {});
/// Deletes all but the newest `keep` checkpoints of `dir` (keep >= 1).
void checkpoint_prune(const std::string& dir, int keep);

// The building blocks of every checkpoint kind (this one and pre-training's,
// trainer/pretrain.h): tensors keep their dtype (float32 or float64) and are
// read back into tensors of the same shape (IoError naming the file and the
// tensor otherwise).

/// Opens a checkpoint file and checks its `format` and `version`
/// attributes; IoError naming the file and `what` (e.g. "llmrec
/// checkpoint") otherwise.
h5::File open_checkpoint(const std::string& path, const std::string& format, std::int64_t version,
                         const std::string& what);
/// A double as exact text for a root attribute, and back (IoError naming
/// the file and the key when it is not a number).
std::string checkpoint_double_text(double v);
double checkpoint_attr_double(const h5::File& f, const std::string& key);
/// Every parameter and buffer of `m` as `<group>/<module path>`.
void checkpoint_write_module(h5::File& f, const std::string& group, const torch::nn::Module& m);
void checkpoint_read_module(const h5::File& f, const std::string& group, const std::string& dtype,
                            torch::nn::Module& m);
/// AdamW's moments and step as `optimizer/<name>/{exp_avg,exp_avg_sq}`
/// (parameters not stepped yet are absent).
void checkpoint_write_optimizer(h5::File& f, torch::optim::AdamW& optimizer,
                                const std::vector<std::pair<std::string, torch::Tensor>>& params);
void checkpoint_read_optimizer(const h5::File& f, torch::optim::AdamW& optimizer,
                               const std::vector<std::pair<std::string, torch::Tensor>>& params,
                               const std::string& dtype);
/// Each rank's CPU generator state as `rng/<rank>` (attribute ranks_rng).
void checkpoint_write_rng(h5::File& f, const std::vector<at::Tensor>& rng);
std::vector<at::Tensor> checkpoint_read_rng(const h5::File& f);
/// Collective: every rank's CPU generator state, in rank order.
std::vector<at::Tensor> gather_rng_states(Communicator& comm);
/// Sets this rank's CPU generator to its saved state (states of another
/// world size: rank % saved ranks).
void rng_restore(const std::vector<at::Tensor>& states, int rank);

/// Every key where two model configurations differ, as
/// "model.dim: checkpoint 64, config 128" (empty = same model).
std::vector<std::string> model_config_diff(const ModelConfig& stored, const ModelConfig& current);

}  // namespace llmrec
