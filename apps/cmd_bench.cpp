// `llmrec bench`: benchmarks that print one JSON line per result
// (bench/README.md): tokenize here; train, allreduce, encode in bench_train.cpp.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/bench.h"
#include "apps/commands.h"
#include "common/version.h"
#include "data/csv.h"
#include "data/synth.h"
#include "data/vocab_builder.h"
#include "data/wordpiece.h"

namespace llmrec {
namespace {

/// Item texts of a synthetic catalogue, joined as `llmrec prepare` joins them.
std::vector<std::string> synthetic_texts(std::int64_t items) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("llmrec_bench_" + std::to_string(::getpid()));
  SynthOptions o;
  o.items = items;
  o.users = 0;
  write_synth_shop(o, dir.string());
  CsvReader csv((dir / "catalogue.csv").string(), ',');
  std::vector<std::string> fields, texts;
  std::int64_t line = 0;
  std::string reason;
  csv.next(fields, line, reason);  // header: item_id,title,description,category,brand,price,tags
  while (csv.next(fields, line, reason) == CsvReader::Status::kRecord) {
    texts.push_back(fields[1] + " ; " + fields[3] + " ; " + fields[4] + " ; " + fields[6] + " ; " +
                    fields[2]);
  }
  fs::remove_all(dir);
  return texts;
}

void bench_tokenize(const std::string& workload, const std::string& vocab, int repeats) {
  const std::int64_t items = workload == "bench-small" ? 100000 : workload == "bench-tiny" ? 20000 : 2000;
  std::vector<std::string> texts = synthetic_texts(items);
  WordPieceTokenizer tok = [&] {
    if (!vocab.empty()) return WordPieceTokenizer::from_file(vocab);
    VocabBuilder builder;
    for (const auto& t : texts) builder.add_text(t);
    return WordPieceTokenizer::from_tokens(builder.build());
  }();
  std::int64_t bytes = 0;
  for (const auto& t : texts) bytes += static_cast<std::int64_t>(t.size());
  std::vector<double> secs;
  std::int64_t tokens = 0;
  std::vector<std::int32_t> ids;
  for (int r = 0; r < repeats; ++r) {
    tokens = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& t : texts) {
      tok.encode_into(t, ids);
      tokens += static_cast<std::int64_t>(ids.size());
    }
    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  const double median = secs[secs.size() / 2];
  nlohmann::json line = {{"bench", "tokenize"},
                         {"workload", workload},
                         {"git", version_git_revision()},
                         {"world_size", 1},
                         {"threads", 1},
                         {"device", "cpu"},
                         {"vocab", vocab.empty() ? "built from the catalogue" : vocab},
                         {"vocab_size", tok.vocab_size()},
                         {"texts", texts.size()},
                         {"tokens", tokens},
                         {"bytes", bytes},
                         {"repeats", repeats},
                         {"seconds_median", median},
                         {"tokens_per_s", static_cast<double>(tokens) / median},
                         {"texts_per_s", static_cast<double>(texts.size()) / median},
                         {"mb_per_s", static_cast<double>(bytes) / median / 1e6}};
  std::printf("%s\n", line.dump().c_str());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("bench", "Benchmarks on the workloads of bench/README.md; each prints JSON lines");
  cmd->require_subcommand(1);
  auto* tok =
      cmd->add_subcommand("tokenize", "WordPiece speed over a synthetic catalogue's item texts (one thread)");
  auto workload = std::make_shared<std::string>("bench-tiny");
  auto vocab = std::make_shared<std::string>();
  auto repeats = std::make_shared<int>(5);
  tok->add_option("--workload", *workload, "demo (2k items), bench-tiny (20k), bench-small (100k)")
      ->check(CLI::IsMember({"demo", "bench-tiny", "bench-small"}))
      ->capture_default_str();
  tok->add_option("--vocab", *vocab, "vocab.txt; default: a vocabulary built from the texts")
      ->check(CLI::ExistingFile);
  tok->add_option("--repeats", *repeats, "Timed passes; the median is reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  tok->callback([=] { bench_tokenize(*workload, *vocab, *repeats); });
  add_bench_distributed(*cmd);
}

}  // namespace llmrec
