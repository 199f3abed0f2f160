// `llmrec prepare`: raw exports -> the HDF5 dataset, with a full report.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "data/prepare.h"

namespace llmrec {

void add_prepare_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "prepare", "Validate the raw interactions and catalogue (data: section) and write the HDF5 dataset");
  auto options = std::make_shared<ConfigOptions>();
  add_config_options(*cmd, *options);
  cmd->callback([options] {
    Config config = app_load_config(*options);
    auto t0 = std::chrono::steady_clock::now();
    PrepareReport report = prepare_dataset(config.data, ConfigWriter::write(config));
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string report_path = config.data.dataset + ".report.json";
    std::ofstream(report_path) << report.to_json() << "\n";
    std::printf("%s-> %s (%.1f s; report also in %s)\n", report.to_text().c_str(),
                config.data.dataset.c_str(), secs, report_path.c_str());
  });
}

}  // namespace llmrec
