#include "data/text.h"

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

namespace llmrec {

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

std::optional<std::int64_t> parse_number(std::string_view s, double scale) {
  if (s.empty()) return std::nullopt;
  std::int64_t whole = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), whole);
  if (ec == std::errc() && p == s.data() + s.size()) {
    return scale == 1.0 ? whole : static_cast<std::int64_t>(std::floor(static_cast<double>(whole) * scale));
  }
  // Decimal seconds: digits '.' digits, no exponent.
  std::string text(s);
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.' && c != '-') return std::nullopt;
  }
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return std::nullopt;
  // Beyond int64 (e.g. 25 digits, too long for from_chars above) is not a
  // time; converting it would be undefined behaviour.
  const double t = std::floor(v * scale);
  if (!(t >= -9223372036854775808.0 && t < 9223372036854775808.0)) return std::nullopt;
  return static_cast<std::int64_t>(t);
}

std::optional<std::int64_t> parse_iso(std::string_view s) {
  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (!digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d)) {
    return std::nullopt;
  }
  static constexpr int kDays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1]) return std::nullopt;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return std::nullopt;
  std::size_t pos = 10;
  std::int64_t offset = 0;
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
    if (!digits(s, pos + 1, 2, h) || pos + 3 >= s.size() || s[pos + 3] != ':' || !digits(s, pos + 4, 2, mi)) {
      return std::nullopt;
    }
    pos += 6;
    if (pos < s.size() && s[pos] == ':') {
      if (!digits(s, pos + 1, 2, sec)) return std::nullopt;
      pos += 3;
      if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
        ++pos;
        std::size_t start = pos;
        while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
        if (pos == start) return std::nullopt;
      }
    }
    if (h > 23 || mi > 59 || sec > 60) return std::nullopt;
    if (pos < s.size()) {
      if (s[pos] == 'Z' || s[pos] == 'z') {
        ++pos;
      } else if (s[pos] == '+' || s[pos] == '-') {
        int oh, om;
        int sign = s[pos] == '-' ? -1 : 1;
        if (!digits(s, pos + 1, 2, oh)) return std::nullopt;
        pos += 3;
        if (pos < s.size() && s[pos] == ':') ++pos;
        if (!digits(s, pos, 2, om)) return std::nullopt;
        pos += 2;
        if (oh > 23 || om > 59) return std::nullopt;
        offset = sign * (std::int64_t{oh} * 3600 + std::int64_t{om} * 60);
      }
    }
  }
  if (pos != s.size()) return std::nullopt;
  return days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
         std::int64_t{h} * 3600 + std::int64_t{mi} * 60 + sec - offset;
}

}  // namespace

std::string open_failure_message(const std::string& path) {
  const int err = errno;
  std::string msg = fmt::format("cannot open {} ({})", path, err != 0 ? std::strerror(err) : "unreadable");
  std::error_code ec;
  const std::filesystem::path p(path);
  if (p.is_relative()) {
    const auto abs = std::filesystem::absolute(p, ec);
    if (!ec) {
      msg += fmt::format("; a relative path is read from the working directory: tried {}", abs.string());
    }
  }
  return msg;
}

std::optional<std::int64_t> parse_timestamp(std::string_view text, std::string_view format) {
  if (format == "unix") return parse_number(text, 1.0);
  if (format == "unix_ms") return parse_number(text, 0.001);
  if (format == "iso8601") return parse_iso(text);
  if (auto n = parse_number(text, 1.0)) {
    // auto: the unit from the magnitude, so that a millisecond (or micro-,
    // nanosecond) clock is never read as seconds. Each unit covers the dates
    // 1973..5138 (|t| in [1e8, 1e11) seconds); smaller numbers are seconds.
    const double a = std::fabs(static_cast<double>(*n));
    if (a < 1e11) return n;
    if (a < 1e14) return parse_number(text, 1e-3);
    if (a < 1e17) return parse_number(text, 1e-6);
    return parse_number(text, 1e-9);
  }
  return parse_iso(text);
}

}  // namespace llmrec
