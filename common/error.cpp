#include "common/error.h"

#include <exception>

namespace llmrec {

ErrorKind error_kind(const std::exception& e) {
  // Most derived first.
  if (dynamic_cast<const CommTimeout*>(&e) != nullptr) return ErrorKind::kCommTimeout;
  if (dynamic_cast<const CommError*>(&e) != nullptr) return ErrorKind::kComm;
  if (dynamic_cast<const ConfigError*>(&e) != nullptr) return ErrorKind::kConfig;
  if (dynamic_cast<const IoError*>(&e) != nullptr) return ErrorKind::kIo;
  if (dynamic_cast<const Error*>(&e) != nullptr) return ErrorKind::kError;
  return ErrorKind::kOther;
}

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kError: return "Error";
    case ErrorKind::kConfig: return "ConfigError";
    case ErrorKind::kIo: return "IoError";
    case ErrorKind::kComm: return "CommError";
    case ErrorKind::kCommTimeout: return "CommTimeout";
    case ErrorKind::kOther: return "other";
  }
  return "unknown";
}

namespace {

template <class Throw>
[[noreturn]] void by_kind(ErrorKind kind, const std::string& message, Throw&& raise) {
  if (kind == ErrorKind::kConfig) {
    raise(ConfigError(message));
  } else if (kind == ErrorKind::kIo) {
    raise(IoError(message));
  } else if (kind == ErrorKind::kComm) {
    raise(CommError(message));
  } else if (kind == ErrorKind::kCommTimeout) {
    raise(CommTimeout(message));
  } else {
    raise(Error(message));
  }
  std::terminate();  // not reached: raise throws
}

}  // namespace

void throw_error(ErrorKind kind, const std::string& message) {
  by_kind(kind, message, [](auto&& e) { throw std::forward<decltype(e)>(e); });
}

void rethrow_with_context(const std::exception& cause, const std::string& context, ErrorKind kind) {
  by_kind(kind, context + ": " + cause.what(),
          [](auto&& e) { std::throw_with_nested(std::forward<decltype(e)>(e)); });
}

void rethrow_with_context(const std::exception& cause, const std::string& context) {
  rethrow_with_context(cause, context, error_kind(cause));
}

std::vector<std::string> error_chain(const std::exception& e) {
  std::vector<std::string> out{e.what()};
  const auto* nested = dynamic_cast<const std::nested_exception*>(&e);
  if (nested == nullptr || !nested->nested_ptr()) return out;
  try {
    nested->rethrow_nested();
  } catch (const std::exception& cause) {
    auto rest = error_chain(cause);
    out.insert(out.end(), rest.begin(), rest.end());
  } catch (...) {
    out.emplace_back("(a cause that is not a std::exception)");
  }
  return out;
}

}  // namespace llmrec

namespace llmrec::detail {

void check_failed(const char* condition, const char* file, int line, const std::string& message) {
  throw Error(fmt::format("{} [check '{}' failed at {}:{}]", message, condition, file, line));
}

}  // namespace llmrec::detail
