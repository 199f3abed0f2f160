// `llmrec adapter`: the trained item encoder as HF PEFT users expect it.
//
//   llmrec adapter --checkpoint runs/x/model.h5 -c x.yaml --out runs/x/hf
//
// writes, from a trained checkpoint and the vocabulary of its dataset:
//   <out>/adapter/  adapter_config.json + adapter_model.safetensors (PEFT's
//                   LoRA layout, or AdaLoRA's with its rank_pattern and only
//                   the kept triplets; only with model.lora.r > 0)
//   <out>/base/     the frozen encoder the adapter was trained on (an HF
//                   directory: config.json, model.safetensors, vocab.txt)
//   <out>/merged/   the encoder with the adapter folded in (or the fully
//                   fine-tuned encoder with r 0)
// so that `PeftModel.from_pretrained(BertModel.from_pretrained(base),
// adapter)` and `BertModel.from_pretrained(merged)` give the same encoder,
// as do `llmrec encode --model base --adapter adapter` and
// `llmrec encode --model merged`. The user tower and the scorer are
// llmrec's own and stay in the checkpoint and the export.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "common/error.h"
#include "data/dataset.h"
#include "data/vocab_builder.h"
#include "models/adalora.h"
#include "models/lora.h"
#include "trainer/checkpoint.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

struct AdapterCommand {
  ConfigOptions options;
  std::string checkpoint;
  std::string out;
};

int run_adapter(const AdapterCommand& cmd, const Config& config) {
  Recommender model = checkpoint_load_model(cmd.checkpoint);
  const ModelConfig& m = model->options().config();
  if (!m.item_text || !model->bert) {
    throw ConfigError(
        fmt::format("{}: the model has no item text encoder (model.item_text is false): there is "
                    "nothing to save for HF or PEFT",
                    cmd.checkpoint));
  }
  const std::vector<std::string> vocab = DatasetFile(config.data.dataset).vocab();
  if (static_cast<std::int64_t>(vocab.size()) != model->bert_config().vocab_size) {
    throw ConfigError(
        fmt::format("{} has {} tokens but the model of {} has a vocabulary of {}: give the config "
                    "of the run that trained it (-c)",
                    config.data.dataset, vocab.size(), cmd.checkpoint, model->bert_config().vocab_size));
  }
  const fs::path out(cmd.out);
  fs::create_directories(out);
  const fs::path vocab_path = out / "vocab.txt";
  write_vocab(vocab, vocab_path.string());
  torch::NoGradGuard no_grad;
  const BertModel& bert = model->bert;
  // AdaLoRA: the pruned triplets out, so that merged/ and adapter/ say the same.
  if (m.lora.adaptive.enabled) adalora_apply_rank_pattern(*model->bert);
  save_hf_directory((out / "merged").string(), bert, model->bert_config(), vocab_path.string());
  std::string written = fmt::format("{}/merged (the encoder{})", out.string(),
                                    m.lora.r > 0 ? " with the adapter folded in" : ", fully fine-tuned");
  if (m.lora.r > 0) {
    const LoraOptions lora = lora_options(m.lora);
    const std::string base = (out / "base").string();
    save_peft_adapter((out / "adapter").string(), bert, lora,
                      m.bert.pretrained.empty() ? base : m.bert.pretrained);
    // The base: the same encoder with every lora_B at zero, so that folding
    // adds nothing.
    BertModel frozen(std::dynamic_pointer_cast<BertModelImpl>(bert->clone()));
    for (auto& p : frozen->named_parameters()) {
      if (p.key().find("lora_B") != std::string::npos) p.value().zero_();
    }
    save_hf_directory(base, frozen, model->bert_config(), vocab_path.string());
    const std::string kind = lora.adaptive.enabled
                                 ? fmt::format("AdaLoRA init_r {}, {}", lora.r, adalora_rank_summary(*bert))
                                 : fmt::format("LoRA r {}", lora.r);
    written +=
        fmt::format(", {}/adapter (PEFT {}, alpha {}, on {}) and {}/base (the frozen encoder)", out.string(),
                    kind, lora.alpha, fmt::join(lora.target_modules, ", "), out.string());
  }
  fs::remove(vocab_path);
  std::printf("llmrec adapter: %s -> %s\n", cmd.checkpoint.c_str(), written.c_str());
  if (m.lora.r == 0) std::printf("no adapter: model.lora.r is 0 (full fine-tuning)\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace

void add_adapter_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "adapter",
      "Save a trained model's item encoder for HF/PEFT: the LoRA adapter in PEFT's layout, the frozen "
      "base and the merged encoder (HF directories with the dataset's vocab.txt)");
  auto args = std::make_shared<AdapterCommand>();
  add_config_options(*cmd, args->options);
  cmd->add_option("--checkpoint", args->checkpoint, "The trained model (model.h5 written by `llmrec train`)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", args->out, "Directory to write adapter/, base/ and merged/ into")->required();
  cmd->callback([args] { run_adapter(*args, app_load_config(args->options)); });
}

}  // namespace llmrec
