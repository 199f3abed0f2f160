#pragma once
/// CSV/TSV reading and writing (RFC 4180: quoted fields, "" escapes, quoted
/// newlines, CRLF, a UTF-8 byte-order mark). The reader never throws on a
/// malformed record: it reports it, with its line, and resynchronises at the
/// next line, so that the caller's error policy decides.

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace llmrec {

class CsvReader {
 public:
  enum class Status { kRecord, kEnd, kMalformed };

  /// Opens `path`; IoError if it cannot be read.
  CsvReader(const std::string& path, char delimiter);

  /// Reads the next record into `fields`. `line` is the 1-based line where
  /// the record starts; on Malformed, `reason` says what is wrong.
  Status next(std::vector<std::string>& fields, std::int64_t& line, std::string& reason);

  const std::string& path() const { return path_; }

 private:
  int get();
  int peek();

  std::string path_;
  std::ifstream in_;
  char delimiter_;
  std::int64_t line_ = 1;
  std::vector<char> buf_;
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
  bool first_ = true;
};

/// Appends `field` to `out`, quoted when it contains the delimiter, a quote,
/// CR or LF.
void csv_append_field(std::string& out, const std::string& field, char delimiter = ',');

}  // namespace llmrec
