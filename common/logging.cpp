#include "common/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <mutex>

#include "common/error.h"

namespace llmrec {
namespace {

struct LoggingState {
  std::mutex mutex;
  std::string tag = "rank 0/1";
  spdlog::level::level_enum file_level = spdlog::level::debug;
};

LoggingState& state() {
  static LoggingState s;
  return s;
}

std::string pattern() {
  return "%Y-%m-%d %H:%M:%S.%e [" + state().tag + "] %^%l%$ %v";
}

}  // namespace

void init_logging(const LogConfig& config, int rank, int world_size) {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.tag = fmt::format("rank {}/{}", rank, world_size);
  s.file_level = spdlog::level::from_str(config.file_level);

  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(spdlog::level::from_str(rank == 0 ? config.level : config.other_ranks_level));
  auto logger = std::make_shared<spdlog::logger>("llmrec", console);
  logger->set_level(spdlog::level::trace);  // the sinks filter
  logger->set_pattern(pattern());
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

void logging_add_file(const std::string& path) {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> sink;
  try {
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  } catch (const spdlog::spdlog_ex& e) {
    throw IoError(fmt::format("cannot open log file {}: {}", path, e.what()));
  }
  sink->set_level(s.file_level);
  sink->set_pattern(pattern());
  spdlog::default_logger()->sinks().push_back(sink);
}

void logging_flush() {
  spdlog::default_logger()->flush();
}

std::string logging_rank_tag() {
  std::lock_guard<std::mutex> lock(state().mutex);
  return state().tag;
}

}  // namespace llmrec
