#pragma once
/// What rank 0 shows while a training loop runs (`llmrec train`,
/// `llmrec pretrain`): durations and a one-line progress bar.

#include <cstdint>
#include <string>

namespace llmrec {

/// "42s", "3m05s", "1h02m"; "?" for a negative or infinite time.
std::string format_duration(double seconds);

/// Seconds left when `done` of `planned` steps took `elapsed` seconds, of
/// which the first `start` steps were done by an earlier run.
double eta_seconds(double elapsed, std::int64_t start, std::int64_t done, std::int64_t planned);

/// Redraws "[####......] done/planned loss L R <unit>/s ETA T" on stderr
/// (a newline after the last step).
void progress_bar(std::int64_t done, std::int64_t planned, double loss, double rate, const char* unit, double eta);

}  // namespace llmrec
