#pragma once
// `llmrec bench` subcommands that run on the ranks of a job (train,
// allreduce, export) or serve; `bench tokenize` lives in cmd_bench.cpp.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace llmrec {

struct BenchOptions {
  std::string workload = "bench-tiny";
  std::int64_t seed = 1234;
  int steps = 30;
  int warmup = 5;
  std::int64_t batch = 0;  ///< 0 = the workload's
  std::string pooling = "cls";
  int lora_r = -1;      ///< -1 = the workload's; 0 = full fine-tuning
  std::string profile;  ///< bench train: a chrome trace of rank 0's measured steps, per operator
  int repeats = 3;
  int max_mb = 256;
  std::string export_path;  ///< bench serve
  int requests = 2000;
  int k = 10;
  double cf_weight = 0;
  std::int64_t synthetic_items = 0;  ///< bench serve without an export: this many random keys
  std::int64_t dim = 128;            ///< ... of this dimension
  std::string ann = "none";          ///< bench serve: none | hnsw (measured beside exact search)
  std::string ann_metric = "l2";
  int ann_m = 32, ann_ef_construction = 200, ann_ef_search = 128;
  std::vector<int> ann_ef_sweep;  ///< bench serve --synthetic-items: more efSearch values on the same graph
};

/// Adds train, allreduce, export and serve under `bench`.
void add_bench_distributed(CLI::App& bench);

}  // namespace llmrec
