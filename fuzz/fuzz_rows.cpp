// libFuzzer target: the row readers of `llmrec prepare` (data/csv.cpp,
// data/prepare.cpp, data/text.cpp): CSV/TSV records, JSONL objects, the
// catalogue's row validation, and the interactions' (timestamps, event
// types, ratings, context, duplicates) through the whole preparation.
//
// Input: byte 0 picks the mode, the rest is the file.
//   mode 0-5: the file is a catalogue (csv, tsv, jsonl; on_error skip, then
//             error), read by read_catalogue() as `llmrec prepare` and
//             `llmrec export --update` read one; for csv/tsv the raw
//             CsvReader too, with a write/read round trip of its records;
//   mode 6-7: byte 1 picks settings (time format, split, k-core, rating and
//             context columns); the rest is an interactions file (csv, jsonl)
//             prepared against a fixed 6-item catalogue into a dataset file.
// The readers take paths, so the file is written to a RAM-backed scratch dir.
#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "data/csv.h"
#include "data/prepare.h"
#include "data/text.h"
#include "fuzz/fuzz_util.h"

using namespace llmrec;

namespace {

using Records = std::vector<std::vector<std::string>>;

/// Every well-formed record of `path`; checks that the reader always makes
/// progress, that line numbers never go back, and exercises the timestamp
/// parser on every field.
Records read_records(const std::string& path, char delimiter, std::string_view bytes) {
  Records out;
  CsvReader reader(path, delimiter);
  std::vector<std::string> fields;
  std::string reason;
  std::int64_t line = 0, last_line = 0;
  const std::int64_t max_line = 2 + static_cast<std::int64_t>(std::count(bytes.begin(), bytes.end(), '\n'));
  for (std::size_t calls = 0;; ++calls) {
    if (calls > bytes.size() + 2) fuzz::fuzz_fail("CsvReader makes no progress");
    reason.clear();
    const auto status = reader.next(fields, line, reason);
    if (status == CsvReader::Status::kEnd) break;
    if (line < last_line || line < 1 || line > max_line) {
      fuzz::fuzz_fail(
          fmt::format("CsvReader line {} after {} (file has {} lines)", line, last_line, max_line - 1));
    }
    last_line = line;
    if (status == CsvReader::Status::kMalformed) {
      if (reason.empty()) fuzz::fuzz_fail("a malformed record without a reason");
      continue;
    }
    for (const auto& f : fields) {
      for (const char* format : {"auto", "unix", "unix_ms", "iso8601"}) (void)parse_timestamp(f, format);
      if (utf8_valid(f) && utf8_length(f) > f.size()) fuzz::fuzz_fail("utf8_length longer than the bytes");
    }
    out.push_back(fields);
  }
  return out;
}

/// csv_append_field() output reads back as the same records.
void check_round_trip(const Records& records, char delimiter) {
  std::string text = "h\n";  // a first line, so that a record starting with a BOM is not one
  for (const auto& r : records) {
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (i) text.push_back(delimiter);
      csv_append_field(text, r[i], delimiter);
    }
    text.push_back('\n');
  }
  const std::string path = fuzz::write_scratch("roundtrip.csv", text);
  Records back = read_records(path, delimiter, text);
  if (back.empty() || back.front() != std::vector<std::string>{"h"})
    fuzz::fuzz_fail("round trip: header lost");
  back.erase(back.begin());
  if (back != records) {
    fuzz::fuzz_fail(
        fmt::format("round trip: {} records written, {} read back differently", records.size(), back.size()));
  }
}

void check_source(const PrepareReport::Source& s, bool skip) {
  std::int64_t skipped = 0;
  for (const auto& [reason, n] : s.skipped) skipped += n;
  if (skip && s.rows_read != s.rows_kept + skipped) {
    fuzz::fuzz_fail(
        fmt::format("{}: {} rows read but {} kept + {} skipped", s.path, s.rows_read, s.rows_kept, skipped));
  }
}

void catalogue_mode(int mode, std::string_view file) {
  static const char* kExt[] = {"csv", "tsv", "jsonl"};
  const int format = mode % 3;
  const bool skip = mode < 3;
  const std::string path = fuzz::write_scratch(std::string("catalogue.") + kExt[format], file);
  if (format < 2) {
    const char delimiter = format == 1 ? '\t' : ',';
    fuzz::expect_clean([&] { check_round_trip(read_records(path, delimiter, file), delimiter); });
  }
  DataConfig cfg;
  cfg.format = kExt[format];
  cfg.on_error = skip ? "skip" : "error";
  cfg.max_text_chars = 200;
  PrepareReport report;
  fuzz::expect_clean([&] {
    Catalogue cat = read_catalogue(path, cfg, report.catalogue);
    const std::size_t n = cat.ids.size();
    if (cat.categories.size() != n || cat.texts.size() != n || cat.lines.size() != n) {
      fuzz::fuzz_fail("catalogue columns of different lengths");
    }
    if (std::set<std::string>(cat.ids.begin(), cat.ids.end()).size() != n)
      fuzz::fuzz_fail("duplicate item ids kept");
    for (std::size_t i = 0; i < n; ++i) {
      if (cat.ids[i].empty() || cat.texts[i].empty()) fuzz::fuzz_fail("an item without id or text kept");
      if (!utf8_valid(cat.ids[i]) || !utf8_valid(cat.texts[i])) fuzz::fuzz_fail("invalid UTF-8 kept");
      if (utf8_length(cat.texts[i]) > static_cast<std::size_t>(cfg.max_text_chars))
        fuzz::fuzz_fail("over-long text kept");
    }
    if (report.catalogue.rows_kept != static_cast<std::int64_t>(n)) fuzz::fuzz_fail("rows_kept != items");
    check_source(report.catalogue, skip);
  });
  // `llmrec prepare` prints and stores the report, whatever the rows held.
  fuzz::expect_clean([&] {
    (void)report.to_json();
    (void)report.to_text();
  });
}

void prepare_mode(int mode, std::uint8_t settings, std::string_view file) {
  static const std::string catalogue =
      fuzz::write_scratch("items.csv",
                          "item_id,title,category,brand,tags,description\n"
                          "i1,Red Running Shoes,sports > shoes,Acme,red,\"Light, fast\"\n"
                          "i2,Blue Jacket,clothing,Bolt,blue,\"Warm\nand dry\"\n"
                          "i3,Green Tea,grocery > tea,Cha,green,Loose leaves\n"
                          "i4,Crème brûlée,food,Chef,,Sweet\n"
                          "i5,\xe7\xba\xa2\xe8\x8c\xb6 tea,grocery > tea,Cha,,\n"
                          "i6,Old Lamp,home,Lux,vintage,Never bought\n");
  static const char* kTimeFormats[] = {"auto", "unix", "unix_ms", "iso8601"};
  DataConfig cfg;
  cfg.format = mode == 6 ? "csv" : "jsonl";
  cfg.catalogue = catalogue;
  cfg.interactions = fuzz::write_scratch(mode == 6 ? "events.csv" : "events.jsonl", file);
  cfg.dataset = (fuzz::scratch_dir() / "dataset.h5").string();
  cfg.on_error = "skip";
  cfg.time_format = kTimeFormats[settings & 3];
  if (settings & 4) {
    cfg.split = "temporal";
    cfg.cut = "1970-01-01T00:05:00Z";
    cfg.min_user_events = 1;
  }
  cfg.kcore = (settings & 8) ? 2 : 0;
  cfg.columns.rating = (settings & 16) ? "rating" : "";
  if (settings & 32) cfg.columns.context = {"device"};
  if (settings & 64) cfg.columns.event = "";
  cfg.vocab_size = 64;
  cfg.text_len = 8;
  fuzz::expect_clean([&] {
    PrepareReport report = prepare_dataset(cfg, "");
    check_source(report.catalogue, true);
    check_source(report.interactions, true);
    if (report.users <= 0 || report.events <= 0) fuzz::fuzz_fail("an empty dataset was written");
    if (cfg.split == "leave_last_out" &&
        report.events != report.train_events + report.valid_events + report.test_events) {
      fuzz::fuzz_fail("leave_last_out: events != train + valid + test");
    }
    (void)report.to_json();
    (void)report.to_text();
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int mode = data[0] % 8;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode < 6) {
    catalogue_mode(mode, rest);
  } else if (!rest.empty()) {
    prepare_mode(mode, static_cast<std::uint8_t>(rest[0]), rest.substr(1));
  }
  return 0;
}
