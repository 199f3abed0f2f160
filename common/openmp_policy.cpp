#include "common/openmp_policy.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

namespace llmrec {
namespace {

/// Set beside OMP_WAIT_POLICY when llmrec chose it (for the log).
constexpr const char* kChosen = "LLMREC_CHOSE_OMP_WAIT_POLICY";

bool under_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

/// This process's arguments, as the kernel holds them.
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::size_t begin = 0;
  while (begin < all.size()) {
    const std::size_t end = all.find('\0', begin);
    args.push_back(all.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return args;
}

}  // namespace

std::string openmp_wait_policy(int threads, bool cpu) {
  if (const char* set = std::getenv("OMP_WAIT_POLICY")) {
    return fmt::format("{} ({})", set, std::getenv(kChosen) != nullptr ? "set by llmrec" : "OMP_WAIT_POLICY");
  }
  if (threads <= 1 || !cpu) return "default";
  if (under_mpi_launcher())
    return "default (under an MPI launcher: launch/mpirun.sh sets it when ranks own cores)";
  std::vector<std::string> args = own_arguments();
  if (args.empty()) return "default (cannot read /proc/self/cmdline to start again with it active)";
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  setenv("OMP_WAIT_POLICY", "active", 1);
  setenv(kChosen, "1", 1);
  std::fflush(stdout);
  std::fflush(stderr);
  execv("/proc/self/exe", argv.data());
  const int err = errno;  // still here: the exec failed
  unsetenv("OMP_WAIT_POLICY");
  unsetenv(kChosen);
  return fmt::format("default (starting again with it active failed: {})", std::strerror(err));
}

}  // namespace llmrec
