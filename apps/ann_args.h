#pragma once
/// The approximate-search options shared by `llmrec serve`, `recommend`
/// and `bench serve` (docs/serving.md, "Approximate search").

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "serving/ann_index.h"

namespace llmrec {

struct AnnArgs {
  std::string kind = "none";  ///< none | hnsw
  serving::AnnOptions options;

  /// The index to build, or nothing for kind none.
  std::optional<serving::AnnOptions> index() const {
    return kind == "hnsw" ? std::optional<serving::AnnOptions>(options) : std::nullopt;
  }
};

inline void add_ann_args(CLI::App* cmd, AnnArgs& a) {
  cmd->add_option(
         "--ann", a.kind,
         "Approximate search: hnsw builds a FAISS HNSW index over the item keys at load, and requests use "
         "it unless they ask for search=exact; none: every request scores every item")
      ->check(CLI::IsMember({"none", "hnsw"}))
      ->capture_default_str();
  cmd->add_option(
         "--ann-metric", a.options.metric,
         "HNSW graph: l2 (keys augmented to a sphere; recall reaches 1 as --ann-ef-search grows) or ip (on "
         "the inner product; often faster, but may not reach every item)")
      ->check(CLI::IsMember({"l2", "ip"}))
      ->capture_default_str();
  cmd->add_option("--ann-m", a.options.m, "HNSW: neighbours per node (M)")
      ->check(CLI::Range(4, 256))
      ->capture_default_str();
  cmd->add_option("--ann-ef-construction", a.options.ef_construction, "HNSW: candidate list while building")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd->add_option("--ann-ef-search", a.options.ef_search,
                  "HNSW: candidate list while searching; a request ranks max(this, 4 k) proposed items")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
}

}  // namespace llmrec
