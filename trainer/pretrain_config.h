#pragma once
/// The `pretrain:` section: masked-language-model pre-training of the item
/// encoder on the catalogue text (`llmrec pretrain`, trainer/pretrain.h).
/// The encoder's architecture is `model.bert`'s (or `from`'s config.json);
/// the optimizer and schedule keys mean what they mean under `train:`.

#include <cstdint>
#include <string>

#include "common/config.h"
#include "trainer/train_config.h"

namespace llmrec {

struct PretrainConfig {
  std::string out;
  std::string from;
  double mask_prob = 0.15;
  bool whole_word = true;
  double holdout = 0.05;
  int batch_size = 32;
  int epochs = 20;
  std::int64_t max_steps = 0;
  double lr = 5e-4;
  double weight_decay = 0.01;
  double warmup = 0.06;
  std::string schedule = "linear";
  double clip_norm = 1.0;
  std::int64_t seed = 1234;
  double bucket_mb = 25.0;
  int log_every = 20;
  int eval_every = 0;
  bool progress = true;
  int checkpoint_every = 0;
  int keep_checkpoints = 3;

  template <class V>
  void visit(V& v) {
    v.field("out", out,
            "HF model directory written at the end (config.json, vocab.txt, model.safetensors with "
            "BertForMaskedLM names); \"\" = <run.dir>/pretrained. Fine-tune from it with "
            "model.bert.pretrained: <out>");
    v.field(
        "from", from,
        "Continue pre-training an HF BERT directory (its config.json sets the architecture; its vocab.txt "
        "must be the dataset's: prepare with data.vocab: <from>/vocab.txt); \"\" = a BERT initialised at "
        "random from model.bert");
    v.field(
        "mask_prob", mask_prob,
        "Share of each text's word pieces to predict; of those 80% become [MASK], 10% a random word piece, "
        "10% stay (BERT's rule)",
        config_range(0.01, 0.9));
    v.field("whole_word", whole_word,
            "Whole-word masking: a word's pieces (## continuations) are masked together");
    v.field("holdout", holdout,
            "Share of the catalogue's texts held out for the MLM loss and accuracy in metrics.jsonl (never "
            "trained on)",
            config_range(0.0, 0.5));
    v.field("batch_size", batch_size, "Texts per rank and step", config_range(1, 1 << 20));
    v.field("epochs", epochs, "Passes over the training texts (when max_steps is 0)",
            config_range(1, 1000000));
    v.field("max_steps", max_steps, "Optimizer steps in all; 0 = epochs x steps per epoch",
            config_range<std::int64_t>(0, std::int64_t{1} << 40));
    v.field("lr", lr, "Peak learning rate of AdamW", config_range(1e-9, 10.0));
    v.field("weight_decay", weight_decay, "AdamW decoupled weight decay (never on 1-D parameters)",
            config_range(0.0, 10.0));
    v.field("warmup", warmup, "Linear warm-up: a share of all steps (< 1) or a number of steps (>= 1)",
            config_range(0.0, 1e12));
    v.field("schedule", schedule, "Decay after warm-up", config_one_of({"cosine", "linear", "constant"}));
    v.field("clip_norm", clip_norm, "Clip the global gradient norm to this; 0 = off",
            config_range(0.0, 1e12));
    v.field("seed", seed, "Seed of initialisation, masking, dropout, data order and the held-out texts",
            config_range<std::int64_t>(0, INT64_MAX));
    v.field("bucket_mb", bucket_mb, "Gradient all-reduce bucket size in MiB", config_range(0.0001, 4096.0));
    v.field("log_every", log_every, "Steps between metrics lines", config_range(1, 1 << 30));
    v.field("eval_every", eval_every, "Steps between held-out evaluations; 0 = at the end of each epoch",
            config_range(0, 1 << 30));
    v.field("progress", progress, "Rank 0 shows a progress bar with ETA on a terminal");
    v.field("checkpoint_every", checkpoint_every,
            "Steps between checkpoints in <run.dir>/pretrain/checkpoints (also after the last step and on "
            "SIGINT/SIGTERM); 0 = only those",
            config_range(0, 1 << 30));
    v.field("keep_checkpoints", keep_checkpoints, "Checkpoints kept (the newest)", config_range(1, 1 << 20));
  }

  /// The optimizer and schedule keys as a TrainConfig (make_adamw,
  /// learning_rate).
  TrainConfig optimizer() const {
    TrainConfig t;
    t.lr = lr;
    t.weight_decay = weight_decay;
    t.warmup = warmup;
    t.schedule = schedule;
    t.min_lr_ratio = 0.0;
    t.clip_norm = clip_norm;
    t.seed = seed;
    return t;
  }
};

}  // namespace llmrec
