#pragma once
// The shared reference folder (../shared beside the checkout: goldens, a
// real BERT vocabulary, the development sets), which CTest passes as
// LLMREC_SHARED_DIR. Tests that need it skip loudly where it is absent (a
// clone without it): the message below makes CTest report them as
// Skipped (SKIP_REGULAR_EXPRESSION in cmake/LlmrecTargets.cmake). A folder
// that is there but lacks a file the test needs is still a failure.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace llmrec::testing {

/// LLMREC_SHARED_DIR when it names an existing folder, else "".
inline std::string shared_dir() {
  const char* dir = std::getenv("LLMREC_SHARED_DIR");
  if (dir == nullptr || *dir == '\0' || !std::filesystem::is_directory(dir)) return "";
  return dir;
}

}  // namespace llmrec::testing

/// In a test body or SetUp: skips the test, loudly, without the shared folder.
#define LLMREC_SKIP_WITHOUT_SHARED()                                                         \
  if (::llmrec::testing::shared_dir().empty())                                               \
  GTEST_SKIP() << "SKIP (no shared reference data): LLMREC_SHARED_DIR='"                     \
               << (std::getenv("LLMREC_SHARED_DIR") ? std::getenv("LLMREC_SHARED_DIR") : "") \
               << "' is not a folder; put the shared/ folder beside the checkout or set LLMREC_SHARED_DIR"
