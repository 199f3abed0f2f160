// llmrec: train and serve language-model-driven recommenders.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "apps/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"llmrec: train and serve language-model-driven recommenders"};
  app.set_version_flag(
      "--version", [] { return llmrec::version_text(); }, "Print build facts and exit");
  app.require_subcommand(1);
  app.fallthrough(false);
  llmrec::add_config_command(app);
  llmrec::add_check_command(app);
  llmrec::add_tokenize_command(app);
  llmrec::add_synth_command(app);
  llmrec::add_prepare_command(app);
  llmrec::add_eval_command(app);
  llmrec::add_pretrain_command(app);
  llmrec::add_train_command(app);
  llmrec::add_bench_command(app);
  llmrec::add_encode_command(app);
  llmrec::add_recommend_command(app);
  llmrec::add_serve_command(app);
  llmrec::add_export_command(app);
  llmrec::add_adapter_command(app);
  llmrec::add_report_command(app);
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
