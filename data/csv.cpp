#include "data/csv.h"

#include "common/error.h"
#include "data/text.h"

namespace llmrec {

namespace {
constexpr std::size_t kBufferBytes = 1 << 16;
// A record longer than this is malformed (protects against a missing quote
// swallowing the rest of a huge file into one field).
constexpr std::size_t kMaxRecordBytes = 16 << 20;
}  // namespace

CsvReader::CsvReader(const std::string& path, char delimiter)
    : path_(path), in_(path, std::ios::binary), delimiter_(delimiter), buf_(kBufferBytes) {
  if (!in_) throw IoError(open_failure_message(path));
}

int CsvReader::peek() {
  if (pos_ == end_) {
    in_.read(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    end_ = static_cast<std::size_t>(in_.gcount());
    pos_ = 0;
    if (end_ == 0) return -1;
  }
  return static_cast<unsigned char>(buf_[pos_]);
}

int CsvReader::get() {
  int c = peek();
  if (c >= 0) ++pos_;
  return c;
}

CsvReader::Status CsvReader::next(std::vector<std::string>& fields, std::int64_t& line, std::string& reason) {
  fields.clear();
  if (first_) {
    first_ = false;
    // Skip a UTF-8 byte-order mark.
    if (peek() == 0xEF) {
      get();
      if (get() != 0xBB || get() != 0xBF) {
        reason = "invalid byte-order mark";
        line = 1;
        return Status::kMalformed;
      }
    }
  }
  if (peek() < 0) return Status::kEnd;
  line = line_;
  std::string field;
  std::size_t bytes = 0;
  bool quoted = false;      // inside quotes
  bool was_quoted = false;  // this field started with a quote
  auto skip_rest_of_line = [&] {
    int c;
    while ((c = get()) >= 0 && c != '\n') {
    }
    ++line_;
  };
  while (true) {
    int c = get();
    if (++bytes > kMaxRecordBytes) {
      reason = "record longer than 16 MiB (unterminated quote?)";
      skip_rest_of_line();
      return Status::kMalformed;
    }
    if (quoted) {
      if (c < 0) {
        reason = "unterminated quoted field at end of file";
        return Status::kMalformed;
      }
      if (c == '"') {
        if (peek() == '"') {
          get();
          field.push_back('"');
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line_;
        field.push_back(static_cast<char>(c));
      }
      continue;
    }
    if (c < 0 || c == '\n' || (c == '\r' && (peek() == '\n' || peek() < 0))) {
      if (c == '\r') get();
      if (c >= 0) ++line_;
      fields.push_back(std::move(field));
      return Status::kRecord;
    }
    if (c == delimiter_) {
      fields.push_back(std::move(field));
      field.clear();
      was_quoted = false;
      continue;
    }
    if (c == '"') {
      if (field.empty() && !was_quoted) {
        quoted = true;
        was_quoted = true;
        continue;
      }
      reason = was_quoted ? "text after a closing quote" : "quote inside an unquoted field";
      if (c != '\n') skip_rest_of_line();
      return Status::kMalformed;
    }
    if (was_quoted) {
      reason = "text after a closing quote";
      skip_rest_of_line();
      return Status::kMalformed;
    }
    field.push_back(static_cast<char>(c));
  }
}

void csv_append_field(std::string& out, const std::string& field, char delimiter) {
  bool quote = field.find_first_of(std::string("\"\r\n") + delimiter) != std::string::npos;
  if (!quote) {
    out += field;
    return;
  }
  out.push_back('"');
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
}

}  // namespace llmrec
