#pragma once
// Adds -c/--config and --set to a subcommand.
#include <CLI/CLI.hpp>

#include "apps/app_context.h"

namespace llmrec {

inline void add_config_options(CLI::App& cmd, ConfigOptions& options) {
  cmd.add_option("-c,--config", options.config_path, "YAML config file (may `include:` others)")
      ->check(CLI::ExistingFile);
  cmd.add_option("--set", options.overrides, "Override one key, e.g. --set comm.timeout_s=60 (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
}

}  // namespace llmrec
