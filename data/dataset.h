#pragma once
/// The prepared dataset file (HDF5; layout in docs/data-format.md): writing
/// it, and reading it the way each rank needs it: the item table whole, the
/// users and their events only for the rank's slice (hyperslabs).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmrec {

constexpr const char* kDatasetFormat = "llmrec-dataset";
constexpr std::int64_t kDatasetVersion = 1;

/// Every item of the catalogue, in dataset item id order.
struct ItemTable {
  std::vector<std::string> ids;           ///< raw item ids
  std::vector<std::string> categories;    ///< "" when no category column
  std::vector<std::string> texts;         ///< joined text the tokens come from
  std::vector<std::int32_t> tokens;       ///< [items, text_len], [CLS] ... [SEP], padded with the pad id
  std::vector<std::int32_t> length;       ///< real tokens per item
  std::vector<std::int64_t> train_count;  ///< training events per item (popularity)
  std::vector<std::uint8_t> cold;         ///< 1 = no training event
};

/// Users in dataset order and their time-sorted events (CSR).
struct UserTable {
  std::vector<std::string> ids;
  std::vector<std::int64_t> offsets;    ///< users + 1; events of user u: [offsets[u], offsets[u+1])
  std::vector<std::int64_t> train_end;  ///< training events of user u: the first train_end of them
  std::vector<std::int64_t> valid;      ///< absolute event index, -1 = none
  std::vector<std::int64_t> test;       ///< absolute event index, -1 = none
  /// With a user table (data.users), else all empty: each user's profile
  /// text ("" = none), tokens [users, text_len] ([CLS] ... [SEP], padded;
  /// all padding without a profile) and real tokens (0 = no profile).
  std::vector<std::string> profile_texts;
  std::vector<std::int32_t> profile_tokens;
  std::vector<std::int32_t> profile_length;
};

struct EventTable {
  std::vector<std::int32_t> item;
  std::vector<std::int64_t> time;                  ///< unix seconds
  std::vector<std::uint8_t> type;                  ///< index into event_types
  std::vector<float> weight;                       ///< loss weight (data.event_weights)
  std::vector<float> rating;                       ///< NaN when none
  std::vector<std::vector<std::int32_t>> context;  ///< per context column: index into its values
};

/// The context codes of `events` event-major (C = events.context.size()
/// per event), from its per-column lists.
std::vector<std::int32_t> context_codes_by_event(const EventTable& events);

/// Everything a dataset file holds.
struct DatasetArrays {
  std::vector<std::string> vocab;
  int text_len = 0;
  std::vector<std::string> event_types;
  std::vector<std::string> context_names;
  std::vector<std::vector<std::string>> context_values;
  bool has_rating = false;
  bool has_profiles = false;  ///< users.profile_* are filled (data.users)
  ItemTable items;
  UserTable users;
  EventTable events;
};

/// Writes `data` to `path` atomically, with the resolved config and the
/// preparation report as attributes.
void write_dataset(const std::string& path, const DatasetArrays& data, const std::string& config_yaml,
                   const std::string& report_json, const std::string& split);

/// A slice of users [begin, end) with their events; offsets are relative
/// to the slice's first event, valid/test indices too (-1 = none).
struct UserSlice {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t first_event = 0;  ///< dataset index of the slice's first event
  UserTable users;  ///< ids, offsets (end-begin+1, from 0), train_end, valid, test, profile tokens and length
  EventTable events;  ///< item, time, type, weight, the context columns asked for (rating not read)
};

/// Read access; every read is checked (Fletcher32) and bounds-checked.
class DatasetFile {
 public:
  /// Opens and validates format, version and the consistency of the sizes.
  explicit DatasetFile(const std::string& path);
  ~DatasetFile();
  DatasetFile(DatasetFile&&) noexcept;
  DatasetFile& operator=(DatasetFile&&) noexcept;

  const std::string& path() const;
  std::int64_t num_users() const { return num_users_; }
  std::int64_t num_items() const { return num_items_; }
  std::int64_t num_events() const { return num_events_; }
  int text_len() const { return text_len_; }
  /// The users have profile text (prepared with data.users).
  bool has_profiles() const { return has_profiles_; }
  std::string split() const;
  std::string config_yaml() const;
  std::string report_json() const;

  std::vector<std::string> vocab() const;
  std::vector<std::string> event_types() const;
  /// The whole item table (every rank needs every item's text).
  ItemTable read_items() const;
  /// Per-user training event counts of all users (for sharding; U values).
  std::vector<std::int64_t> read_train_end() const;
  /// Raw ids of all users, in dataset user order (U strings).
  std::vector<std::string> read_user_ids() const;
  /// Users [begin, end) and only their events (hyperslab reads), with the
  /// codes of the context columns named (events.context, in that order).
  UserSlice read_users(std::int64_t begin, std::int64_t end,
                       const std::vector<std::string>& context_columns = {}) const;
  /// The context columns (data.columns.context) the dataset holds, in order
  /// (none for a dataset prepared before this list was stored).
  std::vector<std::string> context_names() const;
  /// The distinct values of a context column (data.columns.context): its
  /// codes index them. IoError when the dataset has no such column.
  std::vector<std::string> context_values(const std::string& column) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t num_users_ = 0;
  std::int64_t num_items_ = 0;
  std::int64_t num_events_ = 0;
  int text_len_ = 0;
  bool has_profiles_ = false;
};

}  // namespace llmrec
