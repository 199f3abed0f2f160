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
/// Every value is 0 when the event's time is not known (kUnknownTime).
///
///   std::vector<TimeFeature> f = parse_time_features({"gap", "weekday"});
///   std::int64_t row[2];
///   time_feature_values(f, t, t_previous, row);   // t_previous: kUnknownTime if none
///
/// No tensors here: the data layer, the model and serving share it.

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace llmrec {

enum class TimeFeature { kGap, kWeekday, kHour };

/// A time that is not known: an event's (serving's live events may come
/// without one) or a previous event's (there is none).
constexpr std::int64_t kUnknownTime = std::numeric_limits<std::int64_t>::min();

/// The names a config may list, in the order of the enum.
const std::vector<std::string>& time_feature_names();
/// Values a feature takes, 0 (unknown) included.
std::int64_t time_feature_size(TimeFeature feature);
/// The features named, in the given order; Error naming an unknown or
/// repeated name.
std::vector<TimeFeature> parse_time_features(const std::vector<std::string>& names);

/// The value of every feature of `features` for an event at `time` (unix
/// seconds) whose previous event was at `previous` (either kUnknownTime:
/// not known), written to out[0 .. features.size()).
void time_feature_values(const std::vector<TimeFeature>& features, std::int64_t time, std::int64_t previous,
                         std::int64_t* out);

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
  /// The F values of an event at `time` whose previous event was at
  /// `previous` (either kUnknownTime: not known), with `codes`
  /// [column_values.size()] (nullptr or a code < 0: unknown; a code >= its
  /// column's values is an Error) -> out[0 .. F).
  void values(std::int64_t time, std::int64_t previous, const std::int32_t* codes, std::int64_t* out) const;
  /// The values of event `j` of a user whose events start at `first` in
  /// `times` (nullptr: no time known) and `codes` (C per event; nullptr:
  /// none known): its gap is from event j - 1 when j > first. The one walk
  /// over a history the sampler, the model's inputs and serving share.
  void event_values(const std::int64_t* times, const std::int32_t* codes, std::int64_t first, std::int64_t j,
                    std::int64_t* out) const;
};

}  // namespace llmrec
