#pragma once
/// Small text utilities of the importers: UTF-8 validation, timestamps.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmrec {

/// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or
/// code points past U+10FFFF).
bool utf8_valid(std::string_view s);
/// Number of code points of a valid UTF-8 string.
std::size_t utf8_length(std::string_view s);
/// Bytes of the first `chars` code points of valid UTF-8 `s` (all of it when shorter).
std::size_t utf8_prefix_bytes(std::string_view s, std::size_t chars);

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
