// Time features (common/time_features.h): the documented values for known
// dates, the gap's log2-minute buckets, unknown and repeated names.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/error.h"
#include "common/time_features.h"

namespace llmrec {
namespace {

constexpr std::int64_t kMonday = 1704067200;  // 2024-01-01T00:00:00Z, a Monday

std::vector<std::int64_t> values(const std::vector<TimeFeature>& f, std::int64_t t, std::int64_t prev) {
  std::vector<std::int64_t> out(f.size(), -1);
  time_feature_values(f, t, prev, out.data());
  return out;
}

TEST(TimeFeatures, WeekdayAndHourOfKnownDates) {
  const auto f = parse_time_features({"weekday", "hour"});
  EXPECT_EQ(values(f, kMonday, kUnknownTime), (std::vector<std::int64_t>{1, 1}));
  EXPECT_EQ(values(f, kMonday + 6LL * 86400 + 23LL * 3600 + 59, kUnknownTime),
            (std::vector<std::int64_t>{7, 24}));
  EXPECT_EQ(values(f, 0, kUnknownTime), (std::vector<std::int64_t>{4, 1}));    // 1970-01-01, a Thursday
  EXPECT_EQ(values(f, -1, kUnknownTime), (std::vector<std::int64_t>{3, 24}));  // a Wednesday's last second
  EXPECT_EQ(time_feature_size(TimeFeature::kWeekday), 8);
  EXPECT_EQ(time_feature_size(TimeFeature::kHour), 25);
}

TEST(TimeFeatures, GapIsLog2MinutesPlusOneAndZeroWithoutAPreviousEvent) {
  const auto f = parse_time_features({"gap"});
  EXPECT_EQ(values(f, kMonday, kUnknownTime)[0], 0);
  EXPECT_EQ(values(f, kMonday, kMonday + 60)[0], 0);      // out of order: unknown
  EXPECT_EQ(values(f, kMonday, kMonday)[0], 1);           // same second
  EXPECT_EQ(values(f, kMonday + 59, kMonday)[0], 1);      // under a minute
  EXPECT_EQ(values(f, kMonday + 60, kMonday)[0], 2);      // log2(2) = 1
  EXPECT_EQ(values(f, kMonday + 3600, kMonday)[0], 6);    // log2(61) = 5.9
  EXPECT_EQ(values(f, kMonday + 86400, kMonday)[0], 11);  // log2(1441) = 10.5
  const std::int64_t size = time_feature_size(TimeFeature::kGap);
  EXPECT_EQ(values(f, kMonday + 50LL * 365 * 86400, kMonday)[0], size - 1);  // the last bucket
}

TEST(TimeFeatures, UnknownTimesGiveZeros) {
  const auto f = parse_time_features({"gap", "weekday", "hour"});
  EXPECT_EQ(values(f, kUnknownTime, kMonday), (std::vector<std::int64_t>{0, 0, 0}));
  EXPECT_EQ(values(f, kMonday + 60, kUnknownTime), (std::vector<std::int64_t>{0, 1, 1}));
}

TEST(TimeFeatures, NamesAreCheckedAndKeepTheirOrder) {
  EXPECT_EQ(parse_time_features({"hour", "gap"}),
            (std::vector<TimeFeature>{TimeFeature::kHour, TimeFeature::kGap}));
  EXPECT_TRUE(parse_time_features({}).empty());
  EXPECT_THROW(parse_time_features({"minute"}), Error);
  EXPECT_THROW(parse_time_features({"gap", "gap"}), Error);
}

// A user's run of events: each slot's gap from the event before it within the
// run, none for the first; codes shifted by one, -1 and no codes unknown.
TEST(TimeFeatures, EventValuesWalkAUsersEvents) {
  ContextSpec spec;
  spec.time = parse_time_features({"gap", "hour"});
  spec.column_values = {2};
  const std::vector<std::int64_t> times = {kMonday, kMonday + 3600, kMonday + 7200};
  const std::vector<std::int32_t> codes = {1, -1, 0};
  std::vector<std::int64_t> out(3);
  spec.event_values(times.data(), codes.data(), 1, 1, out.data());  // the user's first event
  EXPECT_EQ(out, (std::vector<std::int64_t>{0, 2, 0}));
  spec.event_values(times.data(), codes.data(), 1, 2, out.data());
  EXPECT_EQ(out, (std::vector<std::int64_t>{6, 3, 1}));
  spec.event_values(times.data(), codes.data(), 0, 0, out.data());
  EXPECT_EQ(out, (std::vector<std::int64_t>{0, 1, 2}));
  spec.event_values(nullptr, nullptr, 0, 2, out.data());
  EXPECT_EQ(out, (std::vector<std::int64_t>{0, 0, 0}));
  const std::vector<std::int32_t> bad = {2};
  EXPECT_THROW(spec.values(kMonday, kUnknownTime, bad.data(), out.data()), Error);
}

}  // namespace
}  // namespace llmrec
