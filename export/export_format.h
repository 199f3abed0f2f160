#pragma once
/// The export file's identity (docs/export-format.md): its one reader and
/// writer are export/export_file.h; trainer/export.h fills it from a model.

#include <cstdint>

namespace llmrec {

constexpr const char* kExportFormat = "llmrec-export";
constexpr std::int64_t kExportVersion = 1;
/// Rows of items/hour_counts: hours of the day (UTC).
constexpr int kExportHours = 24;

}  // namespace llmrec
