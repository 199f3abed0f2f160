#pragma once
/// The parts of the NCCL and CUDA driver C APIs that the NCCL backend uses,
/// resolved at run time (dlopen) rather than at link time.
///
/// Why at run time: one llmrec binary runs on CPU-only machines and on GPU
/// nodes; NCCL is a separate library on clusters (module or nvidia packages),
/// whose copy need not be the one a CUDA LibTorch was built with. So the
/// backend always compiles, CPU machines never need NCCL, and a missing
/// library is a clear error at `comm.backend: nccl` time.
///
/// The declarations follow NCCL's documented C API (nccl.h, NCCL >= 2.10 for
/// ncclAvg) and the CUDA driver API (cuda.h); where the real headers are
/// found at configure time, distributed/nccl_api_check.cpp checks the values
/// and sizes below against them at compile time.
///
/// Libraries: $LLMREC_NCCL_LIBRARY, else libnccl.so.2, else libnccl.so;
/// $LLMREC_CUDA_DRIVER_LIBRARY, else libcuda.so.1. (The tests point both at
/// a stand-in that runs the collectives over shared memory.)

#include <cstddef>
#include <string>

namespace llmrec::nccl {

// ---- NCCL ----
using Result = int;  // ncclResult_t
constexpr Result kSuccess = 0;
constexpr Result kInProgress = 7;
constexpr int kUniqueIdBytes = 128;
struct UniqueId {  // ncclUniqueId
  char internal[kUniqueIdBytes];
};
using Comm = struct ncclComm*;  // ncclComm_t

enum DataType : int {  // ncclDataType_t
  kInt8 = 0,
  kUint8 = 1,
  kInt32 = 2,
  kUint32 = 3,
  kInt64 = 4,
  kUint64 = 5,
  kFloat16 = 6,
  kFloat32 = 7,
  kFloat64 = 8,
  kBfloat16 = 9,
};
enum RedOp : int { kSum = 0, kProd = 1, kMax = 2, kMin = 3, kAvg = 4 };  // ncclRedOp_t

// ---- CUDA driver ----
using CuResult = int;  // CUresult
constexpr CuResult kCuSuccess = 0;
constexpr CuResult kCuNotReady = 600;  // CUDA_ERROR_NOT_READY
using CuDevice = int;
using CuContext = struct CUctx_st*;
using CuStream = struct CUstream_st*;            // the same handle as cudaStream_t
using CuEvent = struct CUevent_st*;              // the same handle as cudaEvent_t
constexpr unsigned kCuStreamNonBlocking = 0x1;   // CU_STREAM_NON_BLOCKING
constexpr unsigned kCuEventDisableTiming = 0x2;  // CU_EVENT_DISABLE_TIMING

// The members carry the C API's names without their prefix (ncclAllReduce ->
// AllReduce, cuInit -> CuInit), so that the code reads like NCCL's own.
// NOLINTBEGIN(readability-identifier-naming)
struct Api {
  std::string nccl_path;  ///< what was loaded
  std::string driver_path;

  Result (*GetVersion)(int* version);
  Result (*GetUniqueId)(UniqueId* id);
  Result (*CommInitRank)(Comm* comm, int nranks, UniqueId id, int rank);
  Result (*CommDestroy)(Comm comm);
  Result (*CommAbort)(Comm comm);
  Result (*CommGetAsyncError)(Comm comm, Result* async_error);
  const char* (*GetErrorString)(Result result);
  Result (*AllReduce)(const void* send, void* recv, std::size_t count, int datatype, int op, Comm comm,
                      CuStream stream);
  Result (*Broadcast)(const void* send, void* recv, std::size_t count, int datatype, int root, Comm comm,
                      CuStream stream);
  Result (*AllGather)(const void* send, void* recv, std::size_t send_count, int datatype, Comm comm,
                      CuStream stream);
  Result (*GroupStart)();
  Result (*GroupEnd)();

  CuResult (*CuInit)(unsigned flags);
  CuResult (*CuDeviceGetCount)(int* count);
  CuResult (*CuDeviceGet)(CuDevice* device, int ordinal);
  CuResult (*CuDevicePrimaryCtxRetain)(CuContext* ctx, CuDevice device);
  CuResult (*CuDevicePrimaryCtxRelease)(CuDevice device);  // symbol cuDevicePrimaryCtxRelease_v2
  CuResult (*CuCtxSetCurrent)(CuContext ctx);
  CuResult (*CuStreamCreate)(CuStream* stream, unsigned flags);
  CuResult (*CuStreamDestroy)(CuStream stream);  // symbol cuStreamDestroy_v2
  CuResult (*CuEventCreate)(CuEvent* event, unsigned flags);
  CuResult (*CuEventDestroy)(CuEvent event);  // symbol cuEventDestroy_v2
  CuResult (*CuEventRecord)(CuEvent event, CuStream stream);
  CuResult (*CuEventQuery)(CuEvent event);
  CuResult (*CuStreamWaitEvent)(CuStream stream, CuEvent event, unsigned flags);
  CuResult (*CuGetErrorString)(CuResult result, const char** text);
};
// NOLINTEND(readability-identifier-naming)

/// Loads both libraries once per process; later calls return the same
/// table. Throws CommError naming the library (and symbol) that is missing
/// and how to point llmrec at it.
const Api& api();

/// "2.18.3" from ncclGetVersion's code.
std::string version_string(int code);

}  // namespace llmrec::nccl
