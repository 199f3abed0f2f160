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

}  // namespace llmrec
