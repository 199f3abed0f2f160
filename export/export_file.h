#pragma once
/// The export file (`llmrec-export`, version 1, docs/export-format.md): its
/// one reader and its one writer. Serving loads it with read_export; the
/// trainer (trainer/export.h) fills an ExportData from a model and its
/// dataset and writes it with write_export_file, and a catalogue update
/// reads it back with read_export, changes it and writes it again. Below
/// both: this module links neither the trainer nor the data pipeline nor MPI.
///
///   std::shared_ptr<const ExportData> e = read_export("runs/x/export.h5");
///   std::int32_t i = e->find_item("i42");        // -1 when unknown
///   const float* key = e->key(i);                // items/keys row, d floats
///   write_export_file("runs/x/copy.h5", *e);     // the same file again
///
/// Contract of the reader: every attribute serving uses is present and of
/// its type; every dataset has the shape the attributes give; strings are
/// valid UTF-8 with offsets from 0, monotone and ending at the byte count;
/// ids are unique; history offsets are monotone CSR offsets over the
/// events; every item, neighbour and event-type index is in range; every
/// float is finite (and of a magnitude whose products cannot overflow);
/// counts are >= 0. Anything else (a truncated or damaged file, a checksum
/// failure, a wrong shape, a hostile value) is an IoError naming the file
/// and the dataset or attribute; reading never crashes and never allocates
/// from an unchecked size. The user tower is rebuilt from the ranker_*
/// attributes (export_tower_options) in eval mode, and every parameter and
/// buffer is loaded from `ranker/<module path>` (a missing tensor or a shape
/// mismatch names it).
///
/// The loaded data is immutable and safe to share between threads.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/time_features.h"
#include "export/export_format.h"
#include "export/fusion_math.h"
#include "export/tfidf_index.h"

namespace llmrec {
class UserTowerImpl;
class UserTowerOptions;

struct ExportData {
  std::string path;

  // ---- root attributes
  std::int64_t version = 0;
  std::int64_t dim = 0;        ///< d
  std::int64_t history = 0;    ///< T
  std::int64_t num_items = 0;  ///< I
  std::int64_t num_users = 0;  ///< U
  std::int64_t id_items = 0;
  std::int64_t ranker_heads = 0;
  std::int64_t ranker_layers = 0;
  std::int64_t ranker_ff_dim = 0;            ///< feed-forward width of the tower's layers; 0 = 4 x dim
  std::string ranker_pooling = "attention";  ///< absent in older exports: attention
  std::string ranker_activation = "gelu";    ///< absent in older exports: gelu
  /// 1: the tower reads a profile token (model.user.profile), and
  /// users/profile_vectors, users/has_profile hold each user's (absent: 0).
  std::int64_t ranker_profile = 0;
  /// The tower's time features (model.user.time_features; absent in older exports: none).
  std::vector<std::string> ranker_time_features;
  /// The tower's context columns (model.user.context_columns; absent: none)
  /// and each one's distinct values (`context/<name>/values`: codes index them).
  std::vector<std::string> ranker_context_columns;
  std::vector<std::vector<std::string>> context_values;
  std::int64_t catalogue_updates = 0;  ///< 0 when the attribute is absent
  std::int64_t text_len = 0;           ///< tokens per item text the export was prepared with
  std::string score = "dot";           ///< "dot"
  std::vector<std::string> event_types;
  std::map<std::string, double> fusion;  ///< `fusion` attribute, every key
  /// The `ranking` attribute as stored (JSON; "{}" when absent); the writer
  /// stores it as is, the reader also parses the fields below from it.
  std::string ranking = "{}";
  // `ranking` attribute (absent in older exports: scored, 0).
  FusionMissing fusion_missing = FusionMissing::kScored;  ///< `missing`
  std::map<std::string, double> fusion_cold_weights;      ///< `cold_weights` (with missing cold_weights)
  double cold_shift = 0;         ///< `cold_shift`: b, added to every cold item's model score
  int tfidf_profile_items = 20;  ///< `tfidf.profile_items`
  /// `user_ids`: "raw", or "hmac-sha256" when users/ids hold keyed
  /// pseudonyms (export --pseudonymise) checked by `pseudonym_check`.
  std::string user_ids_scheme = "raw";
  std::string pseudonym_check;
  // Descriptive attributes: empty when absent (serving does not need them).
  std::string model_sha256, model_config, config, config_sha256, checkpoint, dataset, dataset_sha256, created;

  // ---- items (row-major [I, d] / [I, 24])
  std::vector<std::string> item_ids, item_text, item_category;
  std::vector<std::uint8_t> item_cold;
  std::vector<std::int64_t> item_popularity;
  std::vector<float> item_vectors;
  std::vector<float> item_keys;
  std::vector<std::int32_t> hour_counts;

  // ---- users
  std::vector<std::string> user_ids;
  std::vector<float> user_vectors;  ///< [U, d]
  /// With ranker_profile (else empty): each user's profile vector (the item
  /// tower's text vector of its profile text; zeros without one) and
  /// whether it has one.
  std::vector<float> user_profiles;            ///< [U, d]
  std::vector<std::uint8_t> user_has_profile;  ///< [U] 1 = has a profile
  std::vector<std::int64_t> history_offsets;   ///< U + 1
  std::vector<std::int32_t> history_items;     ///< E, oldest first per user
  std::vector<std::uint8_t> history_types;     ///< E
  std::vector<std::int64_t> history_times;     ///< E unix seconds (absent in older exports: empty)
  std::vector<std::int32_t>
      history_context;  ///< [E, C] codes of the context columns (-1 unknown); C = 0: empty

  // ---- the tokenizer's vocabulary (tokenizer/vocab), which also names the
  // TF-IDF terms; the items' TF-IDF rows (absent in older exports: nullptr)
  std::vector<std::string> vocab;
  std::shared_ptr<const TfidfIndex> tfidf;

  // ---- CF neighbours ([I, K] row-major; -1 = none)
  std::int64_t cf_k = 0;
  std::vector<std::int32_t> cf_neighbours;
  std::vector<float> cf_similarity;

  // ---- derived
  std::unordered_map<std::string, std::int32_t> item_index;  ///< id -> row
  std::unordered_map<std::string, std::int32_t> user_index;  ///< id -> row
  std::vector<std::int32_t> item_category_code;              ///< row -> index into categories
  std::vector<std::string> categories;                       ///< distinct categories, sorted
  /// The user tower (eval mode). The ranker_* attributes above describe it:
  /// export_set_tower keeps them in step.
  std::shared_ptr<UserTowerImpl> tower;

  const float* vector(std::int64_t item) const { return item_vectors.data() + item * dim; }
  const float* key(std::int64_t item) const { return item_keys.data() + item * dim; }
  const float* user_vector(std::int64_t user) const { return user_vectors.data() + user * dim; }
  const float* user_profile(std::int64_t user) const { return user_profiles.data() + user * dim; }
  const std::int32_t* neighbours(std::int64_t item) const { return cf_neighbours.data() + item * cf_k; }
  const float* similarity(std::int64_t item) const { return cf_similarity.data() + item * cf_k; }
  std::int64_t events_begin(std::int64_t user) const {
    return history_offsets[static_cast<std::size_t>(user)];
  }
  std::int64_t events_end(std::int64_t user) const {
    return history_offsets[static_cast<std::size_t>(user) + 1];
  }

  /// The tower's time and context features.
  ContextSpec context_spec() const;
  /// Row of an item / user id, -1 when unknown.
  std::int32_t find_item(const std::string& id) const;
  std::int32_t find_user(const std::string& id) const;
  /// Index into `categories`, -1 when no item has this category.
  std::int32_t find_category(const std::string& category) const;
};

/// Reads and validates `path` (contract above). IoError for anything wrong.
std::shared_ptr<const ExportData> read_export(const std::string& path);

/// Writes `e` to `path` (temporary name, fsync, rename; every dataset
/// Fletcher32-checksummed): the root attributes from the fields (format and
/// version this llmrec's; num_items, num_users from the id tables), the
/// datasets of docs/export-format.md, `ranker/<module path>` for every
/// parameter and buffer of e.tower as float32, tfidf/ when e.tfidf is set.
/// The derived fields (indexes, categories) are not stored. Error when the
/// tables disagree in size; IoError naming the file when writing fails.
void write_export_file(const std::string& path, const ExportData& e);

/// The user tower the ranker_* attributes of `e` describe (the one spec of
/// the tower in an export; Error for impossible values).
UserTowerOptions export_tower_options(const ExportData& e);

/// Sets e.tower and the ranker_* attributes from the tower's options.
void export_set_tower(ExportData& e, std::shared_ptr<UserTowerImpl> tower);

}  // namespace llmrec
