#pragma once
/// Small text utilities of the importers: file-open messages, timestamps
/// (and, from common/utf8.h, UTF-8 validation).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/utf8.h"

namespace llmrec {

/// "cannot open PATH (the reason)" and, for a relative PATH, the absolute
/// path tried: relative paths (in configs too) are read from the working
/// directory. Call right after the failed open (it reads errno).
std::string open_failure_message(const std::string& path);

/// Parses a timestamp to unix seconds. `format`: "unix" (integer or decimal
/// seconds), "unix_ms", "iso8601" (YYYY-MM-DD, optionally [T ]hh:mm[:ss[.f]]
/// and Z or +hh:mm), or "auto" (ISO 8601, or a number whose unit follows
/// from its magnitude |n|: below 1e11 unix seconds, below 1e14 milliseconds,
/// below 1e17 microseconds, else nanoseconds).
/// Returns nothing when the text is not a valid time of that format.
std::optional<std::int64_t> parse_timestamp(std::string_view text, std::string_view format);

}  // namespace llmrec
