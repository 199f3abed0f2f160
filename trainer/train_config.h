#pragma once
/// The `train:` section: batches, optimizer, schedule, stopping, logging.

#include <cstdint>
#include <string>

#include "common/config.h"

namespace llmrec {

struct TrainConfig {
  int batch_size = 64;
  int micro_batches = 1;
  int epochs = 1;
  std::int64_t max_steps = 0;
  double lr = 1e-3;
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double warmup = 0.05;
  std::string schedule = "cosine";
  double min_lr_ratio = 0.0;
  double clip_norm = 1.0;
  std::int64_t seed = 1234;
  std::string negatives = "local";
  double bucket_mb = 25.0;
  int log_every = 20;
  int eval_every = 0;
  int patience = 0;
  bool progress = true;
  int checkpoint_every = 0;
  int keep_checkpoints = 3;
  int item_cache_refresh = 0;
  bool shard_item_encoding = true;
  std::string init_from;

  template <class V>
  void visit(V& v) {
    v.field("batch_size", batch_size, "Examples (users x target) per rank and micro-batch",
            config_range(1, 1 << 20));
    v.field("micro_batches", micro_batches,
            "Gradient accumulation: micro-batches per optimizer step (no communication on all but the last)",
            config_range(1, 4096));
    v.field("epochs", epochs, "Passes over the training examples (when max_steps is 0)",
            config_range(1, 100000));
    v.field("max_steps", max_steps, "Optimizer steps in all; 0 = epochs x steps per epoch",
            config_range<std::int64_t>(0, std::int64_t{1} << 40));
    v.field("lr", lr, "Peak learning rate of AdamW", config_range(1e-9, 10.0));
    v.field(
        "weight_decay", weight_decay,
        "AdamW decoupled weight decay; never applied to biases, LayerNorm weights or other 1-D parameters",
        config_range(0.0, 10.0));
    v.field("beta1", beta1, "AdamW beta1", config_range(0.0, 0.999999));
    v.field("beta2", beta2, "AdamW beta2", config_range(0.0, 0.999999999));
    v.field("eps", eps, "AdamW epsilon", config_range(1e-12, 1.0));
    v.field("warmup", warmup, "Linear warm-up: a share of all steps (< 1) or a number of steps (>= 1)",
            config_range(0.0, 1e12));
    v.field("schedule", schedule, "Decay after warm-up, from lr to lr x min_lr_ratio",
            config_one_of({"cosine", "linear", "constant"}));
    v.field("min_lr_ratio", min_lr_ratio, "Final learning rate as a share of lr", config_range(0.0, 1.0));
    v.field("clip_norm", clip_norm, "Clip the global gradient norm to this; 0 = off",
            config_range(0.0, 1e12));
    v.field("seed", seed, "Seed of initialisation, dropout and data order",
            config_range<std::int64_t>(0, INT64_MAX));
    v.field(
        "negatives", negatives,
        "local: each positive competes with its rank's candidates; global: with the candidates of every rank "
        "(all-gathered, gradients returned to the rank that encoded them; duplicates never negatives)",
        config_one_of({"local", "global"}));
    v.field("bucket_mb", bucket_mb, "Gradient all-reduce bucket size in MiB", config_range(0.0001, 4096.0));
    v.field("log_every", log_every, "Steps between metrics lines (metrics.jsonl and the log)",
            config_range(1, 1 << 30));
    v.field("eval_every", eval_every, "Steps between validations; 0 = at the end of each epoch",
            config_range(0, 1 << 30));
    v.field("patience", patience,
            "Early stopping: stop after this many validations without a better NDCG@10; 0 = off",
            config_range(0, 1 << 20));
    v.field("progress", progress, "Rank 0 shows a progress bar with ETA on a terminal");
    v.field(
        "checkpoint_every", checkpoint_every,
        "Steps between training checkpoints in <run.dir>/checkpoints (also written after the last step and "
        "on SIGINT/SIGTERM); 0 = only those",
        config_range(0, 1 << 30));
    v.field("keep_checkpoints", keep_checkpoints, "Training checkpoints kept (the newest)",
            config_range(1, 1 << 20));
    v.field("item_cache_refresh", item_cache_refresh,
            "With a trainable text encoder: every item is scored from a table of its encoder output, "
            "encoded again every this many steps and kept in checkpoints; the encoder's gradient flows "
            "through the batch's own items (its histories' items and targets) and as many other "
            "candidates drawn at random (weighted: unbiased), encoded at every step. A step then "
            "encodes twice the batch's items, not every candidate. 0 = every candidate encoded at "
            "every step",
            config_range(0, 1 << 30));
    v.field("shard_item_encoding", shard_item_encoding,
            "With model.loss.negatives: all, local negatives and more than one rank (every rank holds "
            "every item as a candidate) and the items encoded at every step: each rank encodes a 1/W share "
            "of them, the vectors are all-gathered and their gradient, summed over the ranks, flows back "
            "into each share (exact; the item tower's cost divided by W). false = every rank encodes "
            "every item");
    v.field("init_from", init_from,
            "Start from the weights of a model file of `llmrec train` (model.h5 or a training checkpoint) of "
            "the same model and dataset; only how the model trains may differ: new adapters (model.lora.* "
            "when the file has none; they start at zero, so the model starts as the file's), "
            "model.bert.freeze, model.loss.*, dropouts. Not its optimizer state or schedule. Its model is "
            "validated before step 1 and is the first best. \"\" = the initialisation; ignored when "
            "resuming");
  }
};

}  // namespace llmrec
