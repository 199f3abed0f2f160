#pragma once
/// UTF-8 checks shared by the importers (data/) and the export reader
/// (export/).

#include <cstddef>
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
/// At most `width` (>= 4) code points of valid UTF-8 `s`: cut to `width` - 3
/// and "..." appended when longer.
std::string utf8_truncate(std::string_view s, std::size_t width);

}  // namespace llmrec
