#pragma once
/// The `llmrec` subcommands; each registers its CLI11 options and returns
/// the exit code. main.cpp only wires them together.

#include <CLI/CLI.hpp>

#include <string>

namespace llmrec {

/// Multi-line build description for `llmrec --version`.
std::string version_text();

void command_config_add(CLI::App& app);
void command_check_add(CLI::App& app);
void command_tokenize_add(CLI::App& app);
void command_synth_add(CLI::App& app);
void command_prepare_add(CLI::App& app);
void command_eval_add(CLI::App& app);
void command_train_add(CLI::App& app);
void command_pretrain_add(CLI::App& app);
void command_bench_add(CLI::App& app);
void command_encode_add(CLI::App& app);
void command_recommend_add(CLI::App& app);
void command_serve_add(CLI::App& app);
void command_export_add(CLI::App& app);
void command_adapter_add(CLI::App& app);
void command_report_add(CLI::App& app);

}  // namespace llmrec
