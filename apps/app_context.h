#pragma once
/// What every distributed subcommand starts with: the resolved config, the
/// communicator, rank-tagged logging and the run directory.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "apps/app_config.h"
#include "distributed/communicator.h"

namespace llmrec {

/// Command-line options shared by the subcommands that read a config.
struct ConfigOptions {
  std::string config_path;             ///< -c/--config FILE (empty: defaults)
  std::vector<std::string> overrides;  ///< --set a.b=c, in order
};

struct AppContext {
  Config config;
  std::unique_ptr<Communicator> comm;
  std::string run_dir;
  /// run.device resolved: cpu, or cuda:<local rank % GPUs>.
  c10::Device device = c10::Device(c10::DeviceType::CPU);
};

/// run.device's device type: "auto" is cuda when LibTorch sees a GPU;
/// "cuda" without one is a ConfigError. The GPU itself follows the local
/// rank (device_for_local_rank), once the communicator knows it.
c10::DeviceType app_device_type(const RunConfig& run);

/// Exit codes of llmrec.
constexpr int kExitError = 1;  ///< bad input, failed check
// kExitCommTimeout (3, a collective timed out: job aborted) is in distributed/communicator.h.

/// Loads the config (no MPI needed: errors come before any collective).
Config app_load_config(const ConfigOptions& options);

/// Runs `body` with a full context: config, communicator, logging, run
/// directory (created by rank 0, resolved config written to
/// <run.dir>/config.yaml, one log file per rank). Errors are logged; in a
/// multi-rank job a fatal error or a collective timeout on one rank aborts
/// every rank instead of leaving them blocked.
int app_run_distributed(const ConfigOptions& options, const std::function<int(AppContext&)>& body);

}  // namespace llmrec
