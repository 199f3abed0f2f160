// Rank-tagged logging: console level by rank, per-rank file with its own level.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/logging.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LoggingTest, NonZeroRankConsoleShowsWarningsOnlyFileKeepsDebug) {
  auto path =
      (std::filesystem::temp_directory_path() / ("llmrec_log_" + std::to_string(::getpid())) / "rank-1.log")
          .string();
  LogConfig config;  // info on rank 0, warn elsewhere, debug in files
  ::testing::internal::CaptureStderr();
  init_logging(config, 1, 4);
  logging_add_file(path);
  spdlog::debug("debug line");
  spdlog::info("info line");
  spdlog::warn("warn line");
  logging_flush();
  std::string console = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(console, HasSubstr("[rank 1/4] warning warn line"));
  EXPECT_THAT(console, Not(HasSubstr("info line")));
  std::string file = read_file(path);
  EXPECT_THAT(file, HasSubstr("[rank 1/4] debug debug line"));
  EXPECT_THAT(file, HasSubstr("[rank 1/4] info info line"));
  EXPECT_EQ(logging_rank_tag(), "rank 1/4");
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST(LoggingTest, RankZeroConsoleShowsInfo) {
  ::testing::internal::CaptureStderr();
  init_logging(LogConfig{}, 0, 2);
  spdlog::info("hello from zero");
  spdlog::debug("hidden");
  logging_flush();
  std::string console = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(console, HasSubstr("[rank 0/2] info hello from zero"));
  EXPECT_THAT(console, Not(HasSubstr("hidden")));
}

TEST(LoggingTest, UnwritableLogFileNamesThePath) {
  init_logging(LogConfig{}, 0, 1);
  try {
    logging_add_file("/proc/llmrec-cannot-write-here/rank-0.log");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("/proc/llmrec-cannot-write-here/rank-0.log"));
  }
}

}  // namespace
}  // namespace llmrec
