#include "trainer/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace llmrec {

std::string format_duration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  auto t = static_cast<long long>(seconds + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

double eta_seconds(double elapsed, std::int64_t start, std::int64_t done, std::int64_t planned) {
  return elapsed / static_cast<double>(std::max<std::int64_t>(done - start, 1)) * static_cast<double>(planned - done);
}

void progress_bar(std::int64_t done, std::int64_t planned, double loss, double rate, const char* unit, double eta) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / std::max<std::int64_t>(planned, 1));
  std::fprintf(stderr, "\r[%s%s] %lld/%lld loss %.4f %.0f %s/s ETA %s   ",
               std::string(static_cast<std::size_t>(filled), '#').c_str(),
               std::string(static_cast<std::size_t>(width - filled), '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(planned), loss, rate, unit, format_duration(eta).c_str());
  if (done == planned) std::fprintf(stderr, "\n");
}

}  // namespace llmrec
