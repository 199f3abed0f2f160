#pragma once
// Shared by the libFuzzer targets of fuzz/ (docs/reliability.md, "Fuzzing
// and sanitizers"). The contract every target checks: a parser given any
// bytes either succeeds or throws an llmrec::Error (common/error.h). A
// crash, a sanitizer report, a hang, or any other exception is a bug; so is
// a broken invariant, reported with fuzz_fail().

#include <cxxabi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <typeinfo>

#include "common/error.h"

namespace llmrec::fuzz {

/// Reports a broken invariant and aborts (libFuzzer saves the input).
[[noreturn]] inline void fuzz_fail(const std::string& what) {
  std::fprintf(stderr, "\n==llmrec-fuzz== invariant broken: %s\n", what.c_str());
  std::abort();
}

/// The readable name of an exception's type.
inline std::string type_name(const std::exception& e) {
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : typeid(e).name();
  std::free(name);
  return out;
}

/// Runs `body`; an llmrec::Error is an expected outcome (returns false),
/// any other exception aborts with its type and message.
template <class F>
bool expect_clean(F&& body) {
  try {
    body();
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    fuzz_fail("unexpected exception " + type_name(e) + ": " + e.what());
  } catch (...) {
    fuzz_fail("unexpected exception of a non-std type");
  }
}

/// A private directory for the targets whose parser reads a path:
/// llmrec-fuzz-<pid> in /dev/shm (RAM-backed, so a write costs no disk I/O)
/// or else the temp directory. libFuzzer ends with _Exit, which skips the
/// atexit handler below: tools/fuzz.sh removes the directory after a run.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    namespace fs = std::filesystem;
    fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("llmrec-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(scratch_dir(), ignored);
    });
    return d;
  }();
  return dir;
}

/// Writes `bytes` to scratch_dir()/name and returns the path.
inline std::string write_scratch(const std::string& name, std::string_view bytes) {
  std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) fuzz_fail("cannot write the scratch file " + path);
  return path;
}

}  // namespace llmrec::fuzz
