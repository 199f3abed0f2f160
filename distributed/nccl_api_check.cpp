// Built only where nccl.h and cuda.h are found (LLMREC_NCCL_ENABLED): checks
// the declarations of nccl_api.h against the real headers. No code.
#include <cuda.h>
#include <nccl.h>

#include <type_traits>

#include "distributed/nccl_api.h"

namespace llmrec::nccl {

static_assert(sizeof(UniqueId) == sizeof(ncclUniqueId) && kUniqueIdBytes == NCCL_UNIQUE_ID_BYTES);
static_assert(kSuccess == ncclSuccess && kInProgress == ncclInProgress);
// Enumerators compared as ints (they are different enum types).
#define LLMREC_SAME(a, b) static_assert(static_cast<int>(a) == static_cast<int>(b), #a " != " #b)
LLMREC_SAME(kInt8, ncclInt8);
LLMREC_SAME(kUint8, ncclUint8);
LLMREC_SAME(kInt32, ncclInt32);
LLMREC_SAME(kUint32, ncclUint32);
LLMREC_SAME(kInt64, ncclInt64);
LLMREC_SAME(kUint64, ncclUint64);
LLMREC_SAME(kFloat16, ncclFloat16);
LLMREC_SAME(kFloat32, ncclFloat32);
LLMREC_SAME(kFloat64, ncclFloat64);
LLMREC_SAME(kBfloat16, ncclBfloat16);
LLMREC_SAME(kSum, ncclSum);
LLMREC_SAME(kProd, ncclProd);
LLMREC_SAME(kMax, ncclMax);
LLMREC_SAME(kMin, ncclMin);
LLMREC_SAME(kAvg, ncclAvg);
#undef LLMREC_SAME
static_assert(sizeof(ncclDataType_t) == sizeof(int) && sizeof(ncclRedOp_t) == sizeof(int) &&
              sizeof(ncclResult_t) == sizeof(Result));
static_assert(std::is_pointer_v<ncclComm_t> && sizeof(ncclComm_t) == sizeof(Comm));

static_assert(kCuSuccess == CUDA_SUCCESS && kCuNotReady == CUDA_ERROR_NOT_READY);
static_assert(sizeof(CUresult) == sizeof(CuResult) && sizeof(CUdevice) == sizeof(CuDevice));
static_assert(sizeof(CUstream) == sizeof(CuStream) && sizeof(CUevent) == sizeof(CuEvent) &&
              sizeof(CUcontext) == sizeof(CuContext));
static_assert(kCuStreamNonBlocking == CU_STREAM_NON_BLOCKING &&
              kCuEventDisableTiming == CU_EVENT_DISABLE_TIMING);

// The functions, with llmrec's types mapped to the real ones.
static_assert(
    std::is_same_v<decltype(&ncclCommInitRank), ncclResult_t (*)(ncclComm_t*, int, ncclUniqueId, int)>);
static_assert(
    std::is_same_v<decltype(&ncclAllReduce), ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t,
                                                              ncclRedOp_t, ncclComm_t, cudaStream_t)>);
static_assert(
    std::is_same_v<decltype(&ncclBroadcast), ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, int,
                                                              ncclComm_t, cudaStream_t)>);
static_assert(
    std::is_same_v<decltype(&ncclAllGather),
                   ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t)>);
static_assert(std::is_same_v<decltype(&cuEventRecord), CUresult (*)(CUevent, CUstream)>);
static_assert(std::is_same_v<decltype(&cuStreamWaitEvent), CUresult (*)(CUstream, CUevent, unsigned int)>);

}  // namespace llmrec::nccl
