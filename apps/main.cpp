// llmrec: train and serve language-model-driven recommenders.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "apps/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"llmrec: train and serve language-model-driven recommenders"};
  app.set_version_flag("--version", [] { return llmrec::version_text(); }, "Print build facts and exit");
  app.require_subcommand(1);
  app.fallthrough(false);
  llmrec::command_config_add(app);
  llmrec::command_check_add(app);
  llmrec::command_tokenize_add(app);
  llmrec::command_synth_add(app);
  llmrec::command_prepare_add(app);
  llmrec::command_eval_add(app);
  llmrec::command_pretrain_add(app);
  llmrec::command_train_add(app);
  llmrec::command_bench_add(app);
  llmrec::command_encode_add(app);
  llmrec::command_recommend_add(app);
  llmrec::command_serve_add(app);
  llmrec::command_export_add(app);
  llmrec::command_adapter_add(app);
  llmrec::command_report_add(app);
  // Exit codes (README.md, "Exit codes"): 0 done; 1 an error (bad input, a
  // failed check); 2 a usage error; 3 a collective timed out (every rank
  // aborted); 128 + N: train stopped by signal N after a checkpoint.
  constexpr int kExitUsage = 2;
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {  // a subcommand's own exit code
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {  // --help and --version: 0; a usage error: its message, 2
    return app.exit(e) == 0 ? 0 : kExitUsage;
  } catch (const llmrec::Error& e) {
    std::fprintf(stderr, "llmrec: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // LibTorch, the standard library: an error too, never std::terminate
    std::fprintf(stderr, "llmrec: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
