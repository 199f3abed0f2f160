// `llmrec --version`: what this binary was built with and runs on.
#include <torch/version.h>

#include "apps/commands.h"
#include "common/version.h"
#include "distributed/communicator.h"

namespace llmrec {

std::string version_text() {
  return fmt::format(
      "llmrec {} (git {})\n"
      "LibTorch {}\n"
      "BLAS {}\n"
      "MPI {}\n"
      "{}",
      version_string(), version_git_revision(), TORCH_VERSION, blas_describe(), mpi_library_version(),
      communicator_build_features());
}

}  // namespace llmrec
