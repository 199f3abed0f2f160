// `llmrec report RUN_DIR`: the run's report as one self-contained HTML file
// (apps/report.h; docs/training.md, "The report").
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "apps/report.h"

namespace llmrec {

void add_report_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "report",
      "Write RUN_DIR/report.html: training curves, the test table with cold items, the dataset report, "
      "the protocol and the config in one file that opens offline");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("run_dir", *dir, "A training run directory (run.dir of `llmrec train`)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->callback([dir] {
    const std::string path = write_report(*dir);
    std::printf("llmrec report: %s\n", path.c_str());
    std::fflush(stdout);
  });
}

}  // namespace llmrec
