#pragma once
/// The export file's identity (docs/export-format.md), shared by its writer
/// (trainer/export.h) and its reader (serving/export_reader.h).

#include <cstdint>

namespace llmrec {

constexpr const char* kExportFormat = "llmrec-export";
constexpr std::int64_t kExportVersion = 1;
/// Rows of items/hour_counts: hours of the day (UTC).
constexpr int kExportHours = 24;

}  // namespace llmrec
