#pragma once
/// Collectives on tensors across the ranks of a job. The public interface
/// of distributed/: code outside it includes this header (and agree.h,
/// gradient_reducer.h, broadcast_string.h, local_communicator.h), never a
/// backend's (mpi_communicator.h, nccl_communicator.h, mpi_check.h,
/// nccl_api.h: tools/check_layers.sh enforces it).
///
/// Contract (every backend):
///  1. Every rank calls the same collectives in the same order, with the same
///     dtype, element count, op and root. With `comm.verify: true` (default)
///     this is checked before each call and a mismatch throws CommError on
///     every rank, naming what each rank passed.
///  2. Calls made from several threads of one rank are executed in the order
///     they were issued (one FIFO queue per communicator); keep that order
///     the same on every rank.
///  3. A collective that does not complete within its timeout (per call, or
///     `comm.timeout_s`) throws CommTimeout naming the rank and the
///     operation. The communicator is unusable afterwards: log the error and
///     call abort(), which ends every rank of the job.
///  4. Tensors may be non-contiguous or empty; results are written in place
///     (all_reduce, broadcast) or returned (all_gather).
///
///   auto comm = create_communicator(cfg.comm);
///   at::Tensor g = at::ones({4});
///   comm->all_reduce(g, {ReduceOp::kAvg});
///   auto work = comm->all_reduce_async(g);   // overlaps with the caller
///   work->wait();

#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"

namespace llmrec {

enum class ReduceOp { kSum, kAvg, kMin, kMax };

/// Exit code of a job aborted because a collective timed out (by the
/// application, or by a communicator's own watchdog).
constexpr int kExitCommTimeout = 3;
const char* reduce_op_name(ReduceOp op);

using Seconds = std::chrono::duration<double>;

/// Per-call options; a zero timeout means the communicator's default.
struct AllReduceOptions {
  ReduceOp op = ReduceOp::kSum;
  Seconds timeout{0};
};
struct BroadcastOptions {
  int root = 0;
  Seconds timeout{0};
};
struct CollectiveOptions {
  Seconds timeout{0};
};

/// Handle of a non-blocking collective.
class Work {
 public:
  virtual ~Work() = default;
  /// True once the collective has finished, successfully or not. Never blocks.
  virtual bool completed() = 0;
  /// Blocks until the collective has finished and rethrows its error. A
  /// positive `timeout` bounds this wait (CommTimeout if exceeded; the
  /// collective itself keeps running and can be waited again).
  virtual void wait(Seconds timeout = Seconds{0}) = 0;
};

/// The `comm:` section of the configuration.
struct CommConfig {
  std::string backend = "auto";  ///< auto | mpi | nccl
  double timeout_s = 300.0;      ///< default collective timeout
  bool verify = true;            ///< check every call's signature across ranks

  template <class V>
  void visit(V& v) {
    v.field("backend", backend,
            "Collective backend: auto picks NCCL when run.device is cuda (GPU tensors; CPU ones over MPI), "
            "else MPI",
            config_one_of({"auto", "mpi", "nccl"}));
    v.field("timeout_s", timeout_s,
            "Seconds a collective may take before the job is declared hung and aborted",
            config_range(0.01, 604800.0));
    v.field("verify", verify,
            "Before each collective, check that all ranks pass the same op, dtype and size "
            "(one small extra all-reduce per call)");
  }
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Rank among the processes on this host, and how many there are.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  /// Host name of this rank.
  virtual std::string host() const = 0;
  /// e.g. "mpi (Open MPI v4.1.4, thread level serialized)".
  virtual std::string describe() const = 0;

  /// In place. float32, float64, int32, int64. Avg on integers truncates.
  virtual void all_reduce(const at::Tensor& tensor, const AllReduceOptions& opts = {}) = 0;
  /// Starts an all_reduce and returns at once; `tensor` must stay alive and
  /// untouched until the work completes.
  virtual std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor,
                                                 const AllReduceOptions& opts = {}) = 0;
  /// In place: every rank gets the root's values. Any dtype.
  virtual void broadcast(const at::Tensor& tensor, const BroadcastOptions& opts = {}) = 0;
  /// Same shape on every rank; returns shape [size(), *tensor.shape]. Any dtype.
  virtual at::Tensor all_gather(const at::Tensor& tensor, const CollectiveOptions& opts = {}) = 0;
  /// First dimension may differ per rank (even 0), the rest must agree;
  /// returns one tensor per rank, in rank order. Any dtype.
  virtual std::vector<at::Tensor> all_gather_v(const at::Tensor& tensor,
                                               const CollectiveOptions& opts = {}) = 0;
  virtual void barrier(const CollectiveOptions& opts = {}) = 0;

  /// Ends every rank of the job at once with `code` (after a timeout or a
  /// fatal error on one rank, when the others may be blocked).
  [[noreturn]] virtual void abort(int code) = 0;
};

/// Which device backends this build has, e.g. "CUDA off, NCCL off".
std::string communicator_build_features();

/// The MPI library's version string, e.g. "Open MPI v4.1.4".
std::string mpi_library_version();

/// The GPU of the rank with local rank `local_rank` on a node with `devices`
/// GPUs (> 0): local_rank % devices. The NCCL backend and LibTorch's device
/// follow the same rule.
int device_for_local_rank(int local_rank, int devices);

/// A plain MPI_Allreduce (sum, in place) of n floats on MPI_COMM_WORLD, with
/// no communicator around it: no queue, signature check or deadline. The
/// ceiling `llmrec bench allreduce` compares the communicator with; never
/// for the product's own collectives. Collective over every rank of the job.
void raw_mpi_all_reduce_sum(float* data, std::int64_t n);

/// Creates the communicator `config.backend` names for tensors on `device`
/// (auto: NCCL for CUDA, MPI for CPU). Works without mpirun (world size 1).
/// Call once per process.
std::unique_ptr<Communicator> create_communicator(const CommConfig& config,
                                                  c10::DeviceType device = c10::DeviceType::CPU);

}  // namespace llmrec
