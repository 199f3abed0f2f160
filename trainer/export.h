#pragma once
/// The export file (HDF5, format `llmrec-export`, version 1; layout in
/// docs/export-format.md): everything serving needs, written from a trained
/// recommender and its dataset, and updated with a new catalogue file
/// without retraining.
///
///   Recommender model = checkpoint_load_model("runs/x/model.h5");
///   DatasetFile data(config.data.dataset);
///   ExportRanking ranking = export_ranking_of(config.eval);   // or what validation chose (cmd_export.cpp)
///   ExportSummary s = write_export("runs/x/export.h5", model, "runs/x/model.h5", data,
///                                  ConfigWriter::write(config), ranking, comm);   // collective
///   add_catalogue_to_export("runs/x/export.h5", "new_items.csv", model, "runs/x/model.h5", "", comm);
///
/// The work is spread over the ranks and the file is the same for any world
/// size: item vectors in fixed blocks (encode_all_items), user vectors in
/// fixed blocks of kExportUserBlock users (each rank an even, contiguous
/// share of the blocks), ItemKNN rows as in evaluation, hour counts summed
/// exactly. Rank 0 writes the file (temporary name, fsync, rename; every
/// dataset Fletcher32-checksummed).

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "data/dataset.h"
#include "distributed/communicator.h"
#include "export/export_format.h"
#include "models/recommender.h"
#include "trainer/baselines.h"
#include "trainer/eval_config.h"
#include "trainer/fusion.h"
#include "trainer/model_scorer.h"

namespace llmrec {

/// Users per user-tower call (fixed, so that the vectors do not depend on
/// the world size).
constexpr std::int64_t kExportUserBlock = 256;

/// What an export (or a catalogue update) wrote. Counts are the same on
/// every rank; file_bytes is set on rank 0 only.
struct ExportSummary {
  std::string path;                ///< the file written
  std::int64_t items = 0;          ///< I
  std::int64_t cold_items = 0;     ///< items/cold == 1
  std::int64_t users = 0;          ///< U
  std::int64_t events = 0;         ///< E: history events stored
  std::int64_t neighbours = 0;     ///< K: CF neighbours per item
  std::int64_t items_encoded = 0;  ///< items run through the item tower
  std::int64_t users_encoded = 0;  ///< users run through the user tower
  std::int64_t users_with_profile =
      -1;                       ///< with model.user.profile: users whose profile the tower reads; else -1
  double encode_seconds = 0;    ///< wall time of the item tower
  double seconds = 0;           ///< wall time of the whole call
  std::int64_t file_bytes = 0;  ///< size of the file written (rank 0)
  std::int64_t catalogue_updates = 0;
  // A catalogue update only:
  std::int64_t catalogue_rows = 0;   ///< valid rows of the new catalogue file
  std::int64_t items_added = 0;      ///< new item ids, appended
  std::int64_t items_replaced = 0;   ///< existing ids whose text or category changed (re-encoded)
  std::int64_t items_unchanged = 0;  ///< existing ids listed with the same text and category (kept)
  std::int64_t rows_skipped = 0;     ///< bad rows skipped (on_error: skip)
  std::string skipped_report;        ///< the skipped rows by reason, with file:line examples ("" = none)
};

/// The ranking an export carries by default (docs/export-format.md,
/// "Ranking"): the fusion weights of the components serving computes
/// (model, itemknn, popularity, tfidf), how items a collaborative component cannot
/// score enter the fusion, the ItemKNN rows' options and the model's
/// cold-item scoring. `llmrec export` fills it with what evaluation chooses
/// on the validation split, so that serving ranks what the test table
/// measured.
struct ExportRanking {
  std::map<std::string, double> fusion{{"model", 1.0}};  ///< the `fusion` attribute
  FusionMissing missing = FusionMissing::kScored;
  std::map<std::string, double>
      cold_weights;        ///< with kColdWeights: the cold items' weights (`cold_weights`)
  ItemKnnOptions itemknn;  ///< cf/ rows: ItemKNN with these options over the training histories
  TfidfOptions tfidf;      ///< tfidf/ rows and the profile length (eval.tfidf)
  ColdScoring cold;        ///< the model's cold items: alpha (baked into their vectors) and shift b
  nlohmann::json chosen;   ///< how it was chosen (stored in the `ranking` attribute)
};

/// The serving components (model, itemknn, popularity, tfidf).
const std::vector<std::string>& export_fusion_components();

/// The untuned ranking of a configuration: eval.fusion.weights restricted
/// to export_fusion_components() ({"model": 1} when none of them has a
/// positive weight), missing scores as scored, eval.itemknn's options, no
/// cold scoring.
ExportRanking export_ranking_of(const EvalConfig& eval);

/// Collective: writes the export of `model` (loaded from `checkpoint_path`,
/// whose SHA-256 is stored) and its dataset to `output`. `config_yaml` is the
/// resolved configuration of the run (stored with its SHA-256); `ranking`
/// the default ranking (item vectors and keys are the ModelScorer's with
/// ranking.cold; cf/ from ranking.itemknn, K = the longest row kept).
/// With a `pseudonym_key`, users/ids hold pseudonymise(key, id) instead of
/// the raw ids (attribute `user_ids` hmac-sha256 and the key's
/// `pseudonym_check`; common/pseudonym.h); the key is not stored.
/// ConfigError when the model does not fit the dataset (text length, ID
/// items, vocabulary); IoError naming the file when reading or writing fails.
ExportSummary write_export(const std::string& output, Recommender& model, const std::string& checkpoint_path,
                           const DatasetFile& file, const std::string& config_yaml,
                           const ExportRanking& ranking, Communicator& comm,
                           const std::string& pseudonym_key = "");

/// How the rows of a new catalogue file are validated.
struct CatalogueUpdateOptions {
  std::string on_error = "error";  ///< error: stop at the first bad row (file:line); skip: count and report
  int show_errors = 5;             ///< with skip: examples kept per reason
};

/// Collective: encodes the items of `catalogue_path` (CSV/TSV/JSONL with the
/// export's stored data.catalogue_columns, validated and tokenized exactly
/// as `llmrec prepare` does, with the export's vocabulary and text_len) with
/// `model` and writes a new export to `output` ("" = replace `export_path`,
/// atomically). New ids are appended (text-only vector, cold 1, popularity
/// 0, hour_counts 0, no neighbours); existing ids whose text or category
/// changed get the new text, category, vector and key (the ID vector of a
/// trained item is kept), and the user vectors are recomputed from the new
/// item vectors; `catalogue_updates` grows by one. ConfigError when
/// `checkpoint_path` is not the checkpoint the export was made from
/// (model_sha256); IoError naming file:line for a bad row.
ExportSummary add_catalogue_to_export(const std::string& export_path, const std::string& catalogue_path,
                                      Recommender& model, const std::string& checkpoint_path,
                                      const std::string& output, Communicator& comm,
                                      const CatalogueUpdateOptions& options = {});

}  // namespace llmrec
