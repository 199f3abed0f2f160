#pragma once
/// The `llmrec` subcommands; each registers its CLI11 options and returns
/// the exit code. main.cpp only wires them together.

#include <CLI/CLI.hpp>
#include <string>

namespace llmrec {

/// Multi-line build description for `llmrec --version`.
std::string version_text();

void add_config_command(CLI::App& app);
void add_check_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_synth_command(CLI::App& app);
void add_prepare_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_pretrain_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_encode_command(CLI::App& app);
void add_recommend_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_adapter_command(CLI::App& app);
void add_report_command(CLI::App& app);

}  // namespace llmrec
