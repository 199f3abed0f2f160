// Driver for test_comm_stall.sh: both ranks all-reduce a 128 MiB tensor in
// a loop (blocking calls, run on the caller's thread), with comm.timeout_s
// 1. The script stops rank 1 with SIGSTOP while the loop runs, most often
// in the middle of a transfer, where the caller is inside MPI and only the
// communicator's watchdog can end the job (else the signature check times
// out). Either way rank 0 must end the job with exit code 3 within a few
// seconds, naming the collective.
#include <ATen/ATen.h>

#include <cstdio>

#include "common/logging.h"
#include "distributed/communicator.h"

int main() {
  llmrec::CommConfig config;
  config.timeout_s = 1.0;
  auto comm = llmrec::create_communicator(config);
  llmrec::init_logging(llmrec::LogConfig{}, comm->rank(), comm->size());
  at::Tensor t = at::ones({32 << 20}, at::kFloat);
  try {
    for (int i = 0; i < 100000; ++i) {
      comm->all_reduce(t, {llmrec::ReduceOp::kAvg});
      if (i == 0) {
        std::printf("rank %d: looping\n", comm->rank());
        std::fflush(stdout);
      }
    }
  } catch (const llmrec::CommTimeout& e) {
    std::fprintf(stderr, "%s\n", e.what());
    comm->abort(llmrec::kExitCommTimeout);
  }
  return 0;
}
