// `llmrec pretrain`: masked-language-model pre-training of the item encoder
// on the catalogue text, data-parallel under mpirun (trainer/pretrain.h).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <limits>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "apps/run_train.h"
#include "trainer/pretrain.h"
#include "trainer/trainer.h"

namespace llmrec {
namespace {

struct PretrainCommand {
  ConfigOptions options;
  std::string resume = "none";
  std::int64_t stop_after = 0;
};

int run_pretrain(AppContext& ctx, const PretrainCommand& cmd) {
  const Config& cfg = ctx.config;
  Config resolved = cfg;
  PretrainSetup setup;
  setup.pretrain = cfg.pretrain;
  setup.bert = cfg.model.bert;
  setup.dataset = cfg.data.dataset;
  setup.run_dir = ctx.run_dir;
  setup.resume =
      resolve_resume(ctx, cmd.resume, pretrain_checkpoint_dir(ctx.run_dir), verify_pretrain_checkpoint);
  setup.run_config_yaml = ConfigWriter::write(resolved);
  setup.stop_after = cmd.stop_after;
  setup.device = ctx.device;
  Pretrainer pretrainer(setup, *ctx.comm);
  PretrainResult r = pretrainer.run();
  spdlog::info(
      "pretrain: {} of {} steps, {:.1f} texts/s, last loss {:.4f}; held-out loss {:.4f}, accuracy {:.4f}",
      r.steps, r.planned_steps, r.texts_per_s, r.last_loss, r.heldout_loss, r.heldout_accuracy);
  if (r.stop_signal != 0)
    return exit_after_stop_signal(r.stop_signal, r.steps, r.planned_steps, r.last_checkpoint);
  if (ctx.comm->rank() == 0 && !r.out_dir.empty()) {
    const std::string heldout = r.heldout_loss < 0
                                    ? std::string("no held-out texts (pretrain.holdout 0)")
                                    : fmt::format("held-out masked word pieces: loss {:.4f}, accuracy {:.4f}",
                                                  r.heldout_loss, r.heldout_accuracy);
    std::printf(
        "\nPre-trained encoder: %s (HF BertForMaskedLM directory)\n"
        "  %s (%s/pretrain/metrics.jsonl)\n"
        "  fine-tune from it: --set model.bert.pretrained=%s (with model.lora.r > 0 for adapters)\n",
        r.out_dir.c_str(), heldout.c_str(), ctx.run_dir.c_str(), r.out_dir.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

void add_pretrain_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "pretrain",
      "Pre-train the item encoder (masked language model) on the catalogue text of data.dataset and "
      "write an HF directory to fine-tune from (run it under mpirun for data parallelism)");
  auto args = std::make_shared<PretrainCommand>();
  add_config_options(*cmd, args->options);
  cmd->add_option(
         "--resume", args->resume,
         "none: start fresh (refused if <run.dir>/pretrain/checkpoints has checkpoints); auto: continue "
         "from the newest valid one (fresh if none); or a checkpoint file")
      ->default_str("none");
  cmd->add_option("--stop-after", args->stop_after,
                  "Stop after this many steps (>= 1) of this run, writing a checkpoint (time-sliced jobs)")
      ->check(CLI::Range(std::int64_t{1}, std::numeric_limits<std::int64_t>::max()));
  cmd->callback([args] {
    int rc = app_run_distributed(args->options, [args](AppContext& ctx) { return run_pretrain(ctx, *args); });
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
