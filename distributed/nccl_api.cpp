#include "distributed/nccl_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "common/error.h"

namespace llmrec::nccl {
namespace {

/// dlopen of the first loadable candidate; the errors of all of them when none is.
void* open_first(const std::vector<std::string>& candidates, std::string& chosen, std::string& errors) {
  for (const auto& name : candidates) {
    if (void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      chosen = name;
      return h;
    }
    const char* e = dlerror();
    errors += fmt::format("\n  {}: {}", name, e != nullptr ? e : "not found");
  }
  return nullptr;
}

template <class F>
void bind(void* lib, const std::string& path, const char* symbol, F& fn) {
  dlerror();
  void* p = dlsym(lib, symbol);
  if (p == nullptr) {
    throw CommError(fmt::format(
        "{} has no symbol '{}': not an NCCL (>= 2.10) / CUDA driver library, or too old", path, symbol));
  }
  fn = reinterpret_cast<F>(p);
}

/// $variable when set, else the default names.
std::vector<std::string> library_names(const char* variable, std::vector<std::string> defaults) {
  if (const char* env = std::getenv(variable); env != nullptr && *env != '\0') return {env};
  return defaults;
}

Api load() {
  Api a{};
  std::string errors;
  void* nccl_lib =
      open_first(library_names("LLMREC_NCCL_LIBRARY", {"libnccl.so.2", "libnccl.so"}), a.nccl_path, errors);
  if (nccl_lib == nullptr) {
    throw CommError(fmt::format(
        "comm.backend nccl: cannot load the NCCL library:{}\nInstall NCCL (e.g. the libnccl2 package of "
        "NVIDIA's "
        "CUDA repository, or your cluster's nccl module) or set LLMREC_NCCL_LIBRARY to its path; on CPU use "
        "comm.backend mpi (or auto).",
        errors));
  }
  errors.clear();
  void* cuda_lib =
      open_first(library_names("LLMREC_CUDA_DRIVER_LIBRARY", {"libcuda.so.1"}), a.driver_path, errors);
  if (cuda_lib == nullptr) {
    throw CommError(
        fmt::format("comm.backend nccl: cannot load the CUDA driver library:{}\nIs an NVIDIA driver "
                    "installed on this node "
                    "(nvidia-smi)? LLMREC_CUDA_DRIVER_LIBRARY overrides the path.",
                    errors));
  }
  const std::string& np = a.nccl_path;
  bind(nccl_lib, np, "ncclGetVersion", a.GetVersion);
  bind(nccl_lib, np, "ncclGetUniqueId", a.GetUniqueId);
  bind(nccl_lib, np, "ncclCommInitRank", a.CommInitRank);
  bind(nccl_lib, np, "ncclCommDestroy", a.CommDestroy);
  bind(nccl_lib, np, "ncclCommAbort", a.CommAbort);
  bind(nccl_lib, np, "ncclCommGetAsyncError", a.CommGetAsyncError);
  bind(nccl_lib, np, "ncclGetErrorString", a.GetErrorString);
  bind(nccl_lib, np, "ncclAllReduce", a.AllReduce);
  bind(nccl_lib, np, "ncclBroadcast", a.Broadcast);
  bind(nccl_lib, np, "ncclAllGather", a.AllGather);
  bind(nccl_lib, np, "ncclGroupStart", a.GroupStart);
  bind(nccl_lib, np, "ncclGroupEnd", a.GroupEnd);
  const std::string& dp = a.driver_path;
  bind(cuda_lib, dp, "cuInit", a.CuInit);
  bind(cuda_lib, dp, "cuDeviceGetCount", a.CuDeviceGetCount);
  bind(cuda_lib, dp, "cuDeviceGet", a.CuDeviceGet);
  bind(cuda_lib, dp, "cuDevicePrimaryCtxRetain", a.CuDevicePrimaryCtxRetain);
  bind(cuda_lib, dp, "cuDevicePrimaryCtxRelease_v2", a.CuDevicePrimaryCtxRelease);
  bind(cuda_lib, dp, "cuCtxSetCurrent", a.CuCtxSetCurrent);
  bind(cuda_lib, dp, "cuStreamCreate", a.CuStreamCreate);
  bind(cuda_lib, dp, "cuStreamDestroy_v2", a.CuStreamDestroy);
  bind(cuda_lib, dp, "cuEventCreate", a.CuEventCreate);
  bind(cuda_lib, dp, "cuEventDestroy_v2", a.CuEventDestroy);
  bind(cuda_lib, dp, "cuEventRecord", a.CuEventRecord);
  bind(cuda_lib, dp, "cuEventQuery", a.CuEventQuery);
  bind(cuda_lib, dp, "cuStreamWaitEvent", a.CuStreamWaitEvent);
  bind(cuda_lib, dp, "cuGetErrorString", a.CuGetErrorString);
  int version = 0;
  if (a.GetVersion(&version) != kSuccess || version < 21000) {
    throw CommError(fmt::format("{}: NCCL {} is too old: llmrec needs NCCL 2.10 or newer (ncclAvg)", np,
                                version_string(version)));
  }
  return a;
}

}  // namespace

std::string version_string(int code) {
  // Codes since 2.9: major * 10000 + minor * 100 + patch; before: major * 1000 + minor * 100 + patch.
  if (code >= 10000) return fmt::format("{}.{}.{}", code / 10000, code % 10000 / 100, code % 100);
  return fmt::format("{}.{}.{}", code / 1000, code % 1000 / 100, code % 100);
}

const Api& api() {
  // Not std::call_once: a failed load is retried (and reported) on the next call.
  static std::mutex mutex;
  static std::unique_ptr<Api> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (!loaded) loaded = std::make_unique<Api>(load());
  return *loaded;
}

}  // namespace llmrec::nccl
