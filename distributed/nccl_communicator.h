#pragma once
/// Communicator on NCCL for GPU tensors, with MPI beside it for the rest.
/// Internal to distributed/ (and its tests): everyone else creates
/// communicators with create_communicator().
///
/// Each rank drives one GPU: local rank L uses device L % (GPUs on the node),
/// the device LibTorch should use too (`device_for_local_rank`). Rank 0's
/// ncclUniqueId is broadcast over MPI, then every rank joins the NCCL
/// communicator.
///
/// Tensors on the backend's device type go to NCCL; CPU tensors (step
/// counters, the loss, early-stopping votes) go to the MPI communicator it
/// holds, so callers use one communicator for both.
///
/// Ordering: NCCL runs on a stream of its own. A collective first makes that
/// stream wait for an event recorded on the caller's current compute stream
/// (so it reads the gradients the backward pass wrote), and makes the
/// compute stream wait for the collective's completion event (so later
/// kernels read the result); Work::wait() additionally blocks the host until
/// that event, polling it against the deadline, so a collective stuck on
/// another rank becomes CommTimeout naming the rank, host and operation.
/// A non-contiguous tensor is reduced in a contiguous copy that wait()
/// writes back (so, as on MPI, wait before reading an async result).
/// abort() calls ncclCommAbort before MPI_Abort.
///
/// With `comm.verify`, each NCCL collective's signature is compared across
/// ranks over MPI first (the same check and message as the MPI backend).

#include <memory>

#include "distributed/communicator.h"

namespace llmrec {

struct NcclOptions {
  /// The device type whose tensors go to NCCL. kCUDA in the product; the
  /// tests route CPU tensors through the backend (with a stand-in library).
  c10::DeviceType device_type = c10::DeviceType::CUDA;
};

/// Loads NCCL and the CUDA driver (distributed/nccl_api.h), initialises MPI
/// if needed and creates the NCCL communicator; CommError with the reason
/// (library missing, no GPU, init failure) otherwise.
std::unique_ptr<Communicator> create_nccl_communicator(const CommConfig& config,
                                                       const NcclOptions& options = {});

}  // namespace llmrec
