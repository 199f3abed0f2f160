#pragma once
/// Rank-tagged logging on spdlog.
///
/// Every line carries "[rank R/W]". Rank 0 prints at `level` (info by
/// default), the other ranks at `other_ranks_level` (warn), so an 8-rank job
/// does not print everything 8 times; each rank's log file in the run
/// directory keeps its lines at `file_level`.
///
///   init_logging(cfg.log, comm.rank(), comm.size());
///   logging_add_file(run_dir + "/logs/rank-0.log");
///   spdlog::info("step {} loss {:.4f}", step, loss);

#include <string>
#include <vector>

#include "common/config.h"

namespace llmrec {

/// The `log:` section of the configuration.
struct LogConfig {
  std::string level = "info";              ///< console level on rank 0
  std::string other_ranks_level = "warn";  ///< console level on ranks > 0
  std::string file_level = "debug";        ///< level of the per-rank log files

  template <class V>
  void visit(V& v) {
    static const std::vector<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
    v.field("level", level, "Console log level on rank 0", config_one_of(levels));
    v.field("other_ranks_level", other_ranks_level, "Console log level on ranks other than 0",
            config_one_of(levels));
    v.field("file_level", file_level, "Level of the per-rank log files in <run.dir>/logs",
            config_one_of(levels));
  }
};

/// Installs the default spdlog logger: stderr, tagged with the rank.
/// Can be called again (e.g. once the rank is known); the last call wins.
void init_logging(const LogConfig& config, int rank, int world_size);

/// Adds a file sink at config.file_level to the default logger.
/// Creates missing parent directories; throws IoError naming the path.
void logging_add_file(const std::string& path);

/// Flushes every sink (call before exiting or aborting).
void logging_flush();

/// The rank tag used in log lines and error messages, e.g. "rank 1/4".
std::string logging_rank_tag();

}  // namespace llmrec
