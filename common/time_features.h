#pragma once
/// Time features of an event, learned by the user tower (model.user.time_features,
/// docs/ranker.md "Time features"): each is a small categorical value, 0 when
/// unknown, whose embedding is added to the event's history slot; the same
/// features of the moment a recommendation is for are added to the user
/// vector.
///
///   gap      1 + min(floor(log2(1 + minutes since the previous event)), 23);
///            0 without a previous event (or a time earlier than it)
///   weekday  1 + day of the week in UTC (1 = Monday ... 7 = Sunday)
///   hour     1 + hour of the day in UTC (1..24)
///
///   std::vector<TimeFeature> f = parse_time_features({"gap", "weekday"});
///   std::int64_t row[2];
///   time_feature_values(f, t, t_previous, /*has_previous=*/true, row);
///
/// No tensors here: the data layer, the model and serving share it.

#include <cstdint>
#include <string>
#include <vector>

namespace llmrec {

enum class TimeFeature { kGap, kWeekday, kHour };

/// The names a config may list, in the order of the enum.
const std::vector<std::string>& time_feature_names();
/// Values a feature takes, 0 (unknown) included.
std::int64_t time_feature_size(TimeFeature feature);
/// The features named, in the given order; Error naming an unknown or
/// repeated name.
std::vector<TimeFeature> parse_time_features(const std::vector<std::string>& names);
/// time_feature_size of each named feature (parse_time_features' errors).
std::vector<std::int64_t> time_feature_sizes(const std::vector<std::string>& names);
/// The name of a feature.
const std::string& time_feature_name(TimeFeature feature);

/// The value of every feature of `features` for an event at `time` (unix
/// seconds) whose previous event was at `previous` (ignored without one),
/// written to out[0 .. features.size()).
void time_feature_values(const std::vector<TimeFeature>& features, std::int64_t time, std::int64_t previous,
                         bool has_previous, std::int64_t* out);

/// Every categorical feature of an event the user tower learns
/// (docs/ranker.md "Time and context features"): the time features, then
/// one per context column (model.user.context_columns), whose value is the
/// event's code in that column + 1 (0 = unknown).
struct ContextSpec {
  std::vector<TimeFeature> time;
  std::vector<std::int64_t> column_values;  ///< distinct values of each context column

  /// F: the features in all.
  std::size_t size() const { return time.size() + column_values.size(); }
  bool empty() const { return size() == 0; }
  /// Values each feature takes, 0 (unknown) included: the tower's context_sizes.
  std::vector<std::int64_t> sizes() const;
  /// The F values of an event at `time` (ignored unless `time_known`) whose
  /// previous event was at `previous` (ignored unless `has_previous`), with
  /// `codes` [column_values.size()] (nullptr or a code < 0: unknown; a code
  /// >= its column's values is an Error) -> out[0 .. F).
  void values(std::int64_t time, bool time_known, std::int64_t previous, bool has_previous,
              const std::int32_t* codes, std::int64_t* out) const;
};

}  // namespace llmrec
