#pragma once
/// The whole llmrec configuration: one section per subsystem.

#include "common/config.h"
#include "common/logging.h"
#include "data/data_config.h"
#include "distributed/communicator.h"
#include "models/model_config.h"
#include "trainer/eval_config.h"
#include "trainer/pretrain_config.h"
#include "trainer/train_config.h"

namespace llmrec {

/// The `run:` section: where a run keeps its files, and threads per rank.
struct RunConfig {
  std::string dir = "runs/llmrec";
  int threads = 0;
  std::string device = "auto";
  std::string precision = "fp32";
  std::string malloc_policy = "keep";

  template <class V>
  void visit(V& v) {
    v.field("dir", dir,
            "Run directory: resolved config (config.yaml), per-rank logs (logs/rank-R.log) and results");
    v.field("threads", threads,
            "Intra-op threads per rank (LibTorch/OpenMP); 0 keeps OMP_NUM_THREADS or the library default. "
            "More than one in a single process (no mpirun): OMP_WAIT_POLICY=active unless set, "
            "docs/performance.md",
            config_range(0, 1024));
    v.field("device", device,
            "Where the model runs: cuda (rank with local rank L uses GPU L % GPUs per node), cpu, or auto "
            "(cuda when LibTorch sees a GPU)",
            config_one_of({"auto", "cpu", "cuda"}));
    v.field("precision", precision,
            "Training arithmetic: fp32, or bf16 (autocast of the forward pass to bfloat16; weights, "
            "gradients and "
            "optimizer state stay float32). Meant for GPUs; CPUs without bf16 units run it slower than fp32",
            config_one_of({"fp32", "bf16"}));
    v.field("malloc", malloc_policy,
            "Large freed blocks: keep (stay in the process for the next step: no page faults and zeroing "
            "of every step's activations; 2.5x faster steps on Games) or system (glibc's defaults: "
            "returned to the kernel at once). docs/performance.md",
            config_one_of({"keep", "system"}));
  }
};

struct Config {
  RunConfig run;
  LogConfig log;
  CommConfig comm;
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  PretrainConfig pretrain;
  EvalConfig eval;

  template <class V>
  void visit(V& v) {
    v.section("run", run, "Run directory and threads");
    v.section("log", log, "Logging");
    v.section("comm", comm, "Collective communication between ranks");
    v.section("data", data, "Raw exports, validation, filtering, split and the prepared dataset file");
    v.section("model", model, "The recommender: BERT item tower with LoRA, attention ranker, loss");
    v.section("train", train, "Training: batches, AdamW, schedule, negatives, stopping, logging");
    v.section(
        "pretrain", pretrain,
        "`llmrec pretrain`: masked-language-model pre-training of the item encoder on the catalogue text");
    v.section("eval", eval, "Evaluation: full ranking, cut-offs, baselines, oracle, fusion");
  }
};

}  // namespace llmrec
