#pragma once
/// `llmrec prepare`: raw exports -> one validated HDF5 dataset file.
///
/// 1. Reads the catalogue and the interactions (CSV/TSV with header, or
///    JSONL), validating every row. A bad row is either an error naming
///    file:line and the reason (`on_error: error`) or skipped and counted by
///    reason, the first few shown with file:line (`on_error: skip`).
/// 2. Sorts each user's events by time, applies k-core and
///    `min_user_events` (counted, reported), makes the split.
/// 3. Tokenizes every catalogue item's text once (items without any event
///    included: they are the cold items only text can reach).
/// 4. Writes the dataset (layout: docs/data-format.md) atomically.
/// The report accounts for every row read: kept, or removed with a reason.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/data_config.h"

namespace llmrec {

struct PrepareReport {
  struct Source {
    std::string path;
    std::int64_t rows_read = 0;
    std::int64_t rows_kept = 0;
    std::map<std::string, std::int64_t> skipped;        ///< reason -> rows
    std::map<std::string, std::vector<std::string>> examples;  ///< reason -> "file:line: detail"
  };
  Source catalogue;
  Source interactions;
  std::int64_t events_after_validation = 0;
  std::int64_t users_seen = 0;
  std::int64_t kcore_events_removed = 0;
  std::int64_t kcore_users_removed = 0;
  std::int64_t kcore_items_removed = 0;  ///< items whose events k-core removed (they stay in the catalogue)
  std::int64_t min_events_users_removed = 0;
  std::int64_t min_events_events_removed = 0;
  std::int64_t no_train_users_removed = 0;   ///< temporal split: no event before the cut
  std::int64_t no_train_events_removed = 0;
  std::int64_t users = 0;
  std::int64_t items = 0;
  std::int64_t items_with_training_events = 0;
  std::int64_t cold_items = 0;
  std::int64_t events = 0;
  std::int64_t train_events = 0;
  std::int64_t valid_events = 0;
  std::int64_t test_events = 0;
  std::int64_t test_events_on_cold_items = 0;
  std::int64_t vocab_size = 0;
  std::int64_t truncated_texts = 0;  ///< item texts longer than text_len tokens
  double unk_token_share = 0;        ///< share of [UNK] among item tokens

  /// Human-readable, every count in and out.
  std::string to_text() const;
  /// The same as JSON (stored in the dataset's `report` attribute).
  std::string to_json() const;
};

/// Runs the whole preparation; `resolved_yaml` is stored in the file.
/// Throws IoError (with file:line) on the first bad row under
/// `on_error: error`, ConfigError for inconsistent settings.
PrepareReport prepare_dataset(const DataConfig& config, const std::string& resolved_yaml);

}  // namespace llmrec
