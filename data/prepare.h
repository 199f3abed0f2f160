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
#include "data/wordpiece.h"

namespace llmrec {

struct PrepareReport {
  struct Source {
    std::string path;
    std::int64_t rows_read = 0;
    std::int64_t rows_kept = 0;
    std::int64_t texts_cut = 0;                   ///< catalogue: texts cut to data.max_text_chars
    std::map<std::string, std::int64_t> skipped;  ///< reason -> rows
    std::map<std::string, std::vector<std::string>> examples;  ///< reason -> "file:line: detail"
  };
  Source catalogue;
  Source interactions;
  Source user_table;                         ///< data.users (path "" when none)
  std::int64_t users_with_profile = 0;       ///< dataset users with a profile row
  std::int64_t profiles_of_other_users = 0;  ///< profile rows of users the dataset does not have
  std::int64_t events_after_validation = 0;
  std::int64_t users_seen = 0;
  std::int64_t kcore_events_removed = 0;
  std::int64_t kcore_users_removed = 0;
  std::int64_t kcore_items_removed = 0;  ///< items whose events k-core removed (they stay in the catalogue)
  std::int64_t min_events_users_removed = 0;
  std::int64_t min_events_events_removed = 0;
  std::int64_t no_train_users_removed = 0;  ///< temporal split: no event before the cut
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

/// A validated catalogue, items in file order.
struct Catalogue {
  std::vector<std::string> ids;         ///< raw item ids (unique)
  std::vector<std::string> categories;  ///< "" without a category column
  std::vector<std::string> texts;       ///< the text columns joined (file order, " ; " between)
  std::vector<std::int64_t> lines;      ///< the file line each item was read from
};

/// Step 1 for the catalogue: reads `path` the way `llmrec prepare` reads
/// data.catalogue (format config.format, auto = by extension; columns
/// config.catalogue_columns) and validates every row: well-formed, UTF-8, an
/// item id, no duplicate id, some text, at most config.max_text_chars
/// characters. Bad rows follow config.on_error (IoError naming file:line and
/// the reason, or counted in `report` with examples); `report.path` is set to
/// `path`. IoError when no valid row is left.
Catalogue read_catalogue(const std::string& path, const DataConfig& config, PrepareReport::Source& report);

/// The same for data.users (columns config.user_columns): ids are user ids,
/// texts the joined profile columns, categories all "". The same checks
/// (a user id, no duplicate, some text, ...) and bad-row policy.
Catalogue read_user_profiles(const std::string& path, const DataConfig& config,
                             PrepareReport::Source& report);

/// Item texts tokenized as the dataset stores them (step 3).
struct TokenizedTexts {
  std::vector<std::int32_t> tokens;  ///< [texts, text_len]: [CLS] ... [SEP], padded with [PAD]
  std::vector<std::int32_t> length;  ///< real ids per text
  std::int64_t truncated = 0;        ///< texts longer than text_len ids
  std::int64_t unk = 0;              ///< [UNK] among the real ids
  std::int64_t total = 0;            ///< real ids in all
};

/// Step 3: every text as [CLS] pieces [SEP], truncated to text_len ids.
TokenizedTexts tokenize_item_texts(const WordPieceTokenizer& tokenizer, const std::vector<std::string>& texts,
                                   int text_len);

/// Runs the whole preparation; `resolved_yaml` is stored in the file.
/// Throws IoError (with file:line) on the first bad row under
/// `on_error: error`, ConfigError for inconsistent settings.
PrepareReport prepare_dataset(const DataConfig& config, const std::string& resolved_yaml);

}  // namespace llmrec
