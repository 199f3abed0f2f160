// The one place that picks a backend; backend #ifdefs live here only.
#include "distributed/communicator.h"

#include "distributed/mpi_communicator.h"

namespace llmrec {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Min: return "min";
    case ReduceOp::Max: return "max";
  }
  return "unknown";
}

std::string communicator_build_features() {
#if LLMREC_WITH_CUDA
  const char* cuda = "on";
#else
  const char* cuda = "off";
#endif
#if LLMREC_WITH_NCCL
  const char* nccl = "on";
#else
  const char* nccl = "off";
#endif
  return fmt::format("CUDA {}, NCCL {}", cuda, nccl);
}

std::unique_ptr<Communicator> communicator_create(const CommConfig& config) {
  // "auto" is MPI on CPU; the NCCL backend joins here when it exists.
  if (config.backend == "auto" || config.backend == "mpi") return mpi_communicator_create(config);
  throw ConfigError(fmt::format("comm.backend '{}' is not available in this build", config.backend));
}

}  // namespace llmrec
