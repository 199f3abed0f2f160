#pragma once
/// Model checkpoints (HDF5, format `llmrec-checkpoint`, version 1): the
/// weights of a trained recommender by module path, with the `model:`
/// configuration that builds it, so `llmrec eval --checkpoint` can score it.
///
/// Layout: root attributes `format`, `version`, `model_config` (YAML of the
/// model section), `id_items`, `step`, `world_size`, `config` (the run's
/// resolved YAML); one dataset per parameter and buffer under `model/`
/// (`model/bert.encoder.layer.0.attention.self.query.weight`, ...) as
/// float32, checksummed (Fletcher32). Written atomically.
///
/// Version 1 holds weights only: optimizer state, RNG states and the data
/// cursor (exact resume) are not stored yet.

#include <string>

#include "models/recommender.h"

namespace llmrec {

constexpr const char* kCheckpointFormat = "llmrec-checkpoint";
constexpr std::int64_t kCheckpointVersion = 1;

/// Writes `model` to `path` (call on one rank).
void checkpoint_save_model(const std::string& path, Recommender& model, std::int64_t step, int world_size,
                           const std::string& run_config_yaml);

/// Builds the recommender the checkpoint describes and loads its weights;
/// IoError naming the file and tensor for anything missing, of the wrong
/// shape, or corrupted (checksum).
Recommender checkpoint_load_model(const std::string& path);

}  // namespace llmrec
