#include "common/time_features.h"

#include <algorithm>

#include "common/error.h"

namespace llmrec {

namespace {

constexpr std::int64_t kGapBuckets = 24;  ///< log2 minute buckets 0..23, above them the last
constexpr std::int64_t kSecondsPerDay = 86400;

/// floor(log2(x)) for x >= 1.
std::int64_t floor_log2(std::uint64_t x) {
  std::int64_t n = 0;
  while (x > 1) {
    x >>= 1U;
    ++n;
  }
  return n;
}

/// Floor division and modulo for negative times too.
std::int64_t floor_mod(std::int64_t a, std::int64_t b) {
  const std::int64_t m = a % b;
  return m < 0 ? m + b : m;
}

}  // namespace

const std::vector<std::string>& time_feature_names() {
  static const std::vector<std::string> names = {"gap", "weekday", "hour"};
  return names;
}

std::int64_t time_feature_size(TimeFeature feature) {
  switch (feature) {
    case TimeFeature::kGap: return 1 + kGapBuckets;
    case TimeFeature::kWeekday: return 1 + 7;
    case TimeFeature::kHour: return 1 + 24;
  }
  return 0;
}

std::vector<TimeFeature> parse_time_features(const std::vector<std::string>& names) {
  std::vector<TimeFeature> out;
  const std::vector<std::string>& known = time_feature_names();
  for (const std::string& name : names) {
    const auto it = std::find(known.begin(), known.end(), name);
    LLMREC_CHECK(it != known.end(), "unknown time feature '{}' (known: gap, weekday, hour)", name);
    const auto f = static_cast<TimeFeature>(it - known.begin());
    LLMREC_CHECK(std::find(out.begin(), out.end(), f) == out.end(), "time feature '{}' listed twice", name);
    out.push_back(f);
  }
  return out;
}

void time_feature_values(const std::vector<TimeFeature>& features, std::int64_t time, std::int64_t previous,
                         std::int64_t* out) {
  if (time == kUnknownTime) {
    std::fill(out, out + features.size(), 0);
    return;
  }
  for (std::size_t k = 0; k < features.size(); ++k) {
    switch (features[k]) {
      case TimeFeature::kGap: {
        if (previous == kUnknownTime || time < previous) {
          out[k] = 0;
          break;
        }
        const auto minutes = static_cast<std::uint64_t>((time - previous) / 60);
        out[k] = 1 + std::min(floor_log2(minutes + 1), kGapBuckets - 1);
        break;
      }
      case TimeFeature::kWeekday:  // 1970-01-01 was a Thursday (weekday 4 of 1..7)
        out[k] = 1 + floor_mod(floor_mod(time, 7 * kSecondsPerDay) / kSecondsPerDay + 3, 7);
        break;
      case TimeFeature::kHour: out[k] = 1 + floor_mod(time, kSecondsPerDay) / 3600; break;
    }
  }
}

std::vector<std::int64_t> ContextSpec::sizes() const {
  std::vector<std::int64_t> out;
  for (const TimeFeature f : time) out.push_back(time_feature_size(f));
  for (const std::int64_t n : column_values) out.push_back(n + 1);
  return out;
}

void ContextSpec::values(std::int64_t t, std::int64_t previous, const std::int32_t* codes,
                         std::int64_t* out) const {
  time_feature_values(time, t, previous, out);
  std::int64_t* col = out + time.size();
  for (std::size_t c = 0; c < column_values.size(); ++c) {
    const std::int32_t code = codes == nullptr ? -1 : codes[c];
    LLMREC_CHECK(code < column_values[c], "context column {}: code {} outside its {} values", c, code,
                 column_values[c]);
    col[c] = code < 0 ? 0 : code + 1;
  }
}

void ContextSpec::event_values(const std::int64_t* times, const std::int32_t* codes, std::int64_t first,
                               std::int64_t j, std::int64_t* out) const {
  const auto C = static_cast<std::int64_t>(column_values.size());
  values(times == nullptr ? kUnknownTime : times[j],
         times == nullptr || j <= first ? kUnknownTime : times[j - 1],
         codes == nullptr ? nullptr : codes + j * C, out);
}

}  // namespace llmrec
