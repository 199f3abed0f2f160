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

std::vector<std::int64_t> values(const std::vector<TimeFeature>& f, std::int64_t t, std::int64_t prev,
                                 bool has_prev) {
  std::vector<std::int64_t> out(f.size(), -1);
  time_feature_values(f, t, prev, has_prev, out.data());
  return out;
}

TEST(TimeFeatures, WeekdayAndHourOfKnownDates) {
  const auto f = parse_time_features({"weekday", "hour"});
  EXPECT_EQ(values(f, kMonday, 0, false), (std::vector<std::int64_t>{1, 1}));
  EXPECT_EQ(values(f, kMonday + 6 * 86400 + 23 * 3600 + 59, 0, false), (std::vector<std::int64_t>{7, 24}));
  EXPECT_EQ(values(f, 0, 0, false), (std::vector<std::int64_t>{4, 1}));    // 1970-01-01, a Thursday
  EXPECT_EQ(values(f, -1, 0, false), (std::vector<std::int64_t>{3, 24}));  // a Wednesday's last second
  EXPECT_EQ(time_feature_size(TimeFeature::kWeekday), 8);
  EXPECT_EQ(time_feature_size(TimeFeature::kHour), 25);
}

TEST(TimeFeatures, GapIsLog2MinutesPlusOneAndZeroWithoutAPreviousEvent) {
  const auto f = parse_time_features({"gap"});
  EXPECT_EQ(values(f, kMonday, kMonday, false)[0], 0);
  EXPECT_EQ(values(f, kMonday, kMonday + 60, true)[0], 0);      // out of order: unknown
  EXPECT_EQ(values(f, kMonday, kMonday, true)[0], 1);           // same second
  EXPECT_EQ(values(f, kMonday + 59, kMonday, true)[0], 1);      // under a minute
  EXPECT_EQ(values(f, kMonday + 60, kMonday, true)[0], 2);      // log2(2) = 1
  EXPECT_EQ(values(f, kMonday + 3600, kMonday, true)[0], 6);    // log2(61) = 5.9
  EXPECT_EQ(values(f, kMonday + 86400, kMonday, true)[0], 11);  // log2(1441) = 10.5
  const std::int64_t size = time_feature_size(TimeFeature::kGap);
  EXPECT_EQ(values(f, kMonday + 50LL * 365 * 86400, kMonday, true)[0], size - 1);  // the last bucket
}

TEST(TimeFeatures, NamesAreCheckedAndKeepTheirOrder) {
  EXPECT_EQ(time_feature_sizes({"hour", "gap"}), (std::vector<std::int64_t>{25, 25}));
  EXPECT_TRUE(parse_time_features({}).empty());
  EXPECT_THROW(parse_time_features({"minute"}), Error);
  EXPECT_THROW(parse_time_features({"gap", "gap"}), Error);
  EXPECT_EQ(time_feature_name(TimeFeature::kWeekday), "weekday");
}

}  // namespace
}  // namespace llmrec
