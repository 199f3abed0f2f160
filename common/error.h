#pragma once
/// The one error model of llmrec: typed exceptions that carry a message
/// naming what failed and where (file:line of a data row or config key, the
/// rank and the collective), and that chain the earlier cause.
///
///   LLMREC_CHECK(n > 0, "batch_size must be positive, got {}", n);
///   throw ConfigError(fmt::format("{}: unknown key '{}'", where, key));

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace llmrec {

/// Base of every llmrec error. `what()` is the full message, ready to print.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Invalid configuration: a YAML file, an include, a --set override.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A file could not be read or written, or its contents are invalid.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A collective failed (MPI/NCCL error, ranks disagree on a call).
class CommError : public Error {
 public:
  using Error::Error;
};

/// A collective did not complete within its timeout: a peer rank is dead or
/// stalled. The communicator cannot be used afterwards; abort the job.
class CommTimeout : public CommError {
 public:
  using CommError::CommError;
};

/// The kind of an error, by its most derived llmrec type; what crosses
/// ranks with its message (distributed/agree.h) so that every rank throws
/// the same type. kOther: not an llmrec error (the standard library,
/// LibTorch, ...).
enum class ErrorKind : int { kError = 1, kConfig, kIo, kComm, kCommTimeout, kOther };

ErrorKind error_kind(const std::exception& e);
/// "Error", "ConfigError", "IoError", "CommError", "CommTimeout", "other".
const char* error_kind_name(ErrorKind kind);
/// Throws an exception of `kind`'s type (kOther: Error) with `message`.
[[noreturn]] void throw_error(ErrorKind kind, const std::string& message);

/// Wraps the exception being handled with context, keeping both its kind
/// (or `kind`, when given) and the exception itself as the nested cause
/// (std::nested_exception: std::rethrow_if_nested gives it back, with its
/// own type). what() reads "context: <cause's what()>". Call it inside the
/// catch block of `cause`:
///
///   try { load(path); } catch (const std::exception& e) { rethrow_with_context(e, path); }
[[noreturn]] void rethrow_with_context(const std::exception& cause, const std::string& context);
[[noreturn]] void rethrow_with_context(const std::exception& cause, const std::string& context,
                                       ErrorKind kind);

/// The messages of `e` and of every cause nested in it, outermost first.
std::vector<std::string> error_chain(const std::exception& e);

namespace detail {
[[noreturn]] void check_failed(const char* condition, const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace llmrec

/// Throws llmrec::Error with the formatted message, the failed condition and
/// the source location when `cond` is false.
#define LLMREC_CHECK(cond, ...)                                                            \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      ::llmrec::detail::check_failed(#cond, __FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
    }                                                                                      \
  } while (0)
