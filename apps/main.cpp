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
  llmrec::command_train_add(app);
  llmrec::command_bench_add(app);
  llmrec::command_encode_add(app);
  llmrec::command_recommend_add(app);
  llmrec::command_serve_add(app);
  llmrec::command_export_add(app);
  llmrec::command_adapter_add(app);
  llmrec::command_report_add(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const llmrec::Error& e) {
    std::fprintf(stderr, "llmrec: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // LibTorch, the standard library: an error too, never std::terminate
    std::fprintf(stderr, "llmrec: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
