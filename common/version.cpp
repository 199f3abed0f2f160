#include "common/version.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>

#include "llmrec_build_info.h"  // generated: LLMREC_VERSION, LLMREC_GIT_REVISION

namespace llmrec {
namespace {

struct BlasInfo {
  std::string path;
  std::string config;  // openblas_get_config(), when OpenBLAS
};

BlasInfo blas_probe() {
  BlasInfo info;
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info dl{};
  if (sgemm != nullptr && dladdr(sgemm, &dl) != 0 && dl.dli_fname != nullptr) {
    // Resolve the alternatives symlink: .../openblas-openmp/libblas.so.3 or .../blas/libblas.so.3.
    char resolved[PATH_MAX];
    info.path = realpath(dl.dli_fname, resolved) != nullptr ? resolved : dl.dli_fname;
  }
  using ConfigFn = char* (*)();
  if (auto fn = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    info.config = fn();
  }
  return info;
}

}  // namespace

std::string version_string() {
  return LLMREC_VERSION;
}
std::string version_git_revision() {
  return LLMREC_GIT_REVISION;
}

bool blas_is_reference() {
  BlasInfo b = blas_probe();
  return b.config.empty() && b.path.find("/blas/") != std::string::npos;
}

std::string blas_describe() {
  BlasInfo b = blas_probe();
  if (b.path.empty()) return "none loaded";
  if (!b.config.empty()) return fmt::format("{} ({})", b.config, b.path);
  if (blas_is_reference()) {
    return fmt::format("reference BLAS, ~40x slower: apt-get install libopenblas0-openmp ({})", b.path);
  }
  return fmt::format("unknown BLAS ({})", b.path);
}

}  // namespace llmrec
