// The NCCL backend's failure paths, at world size 2: a missing library, the
// real NCCL without a GPU driver, one rank failing set-up (no rank may be
// left in ncclCommInitRank), and a collective stalled on one rank (both get
// CommTimeout naming rank, host and collective, then refuse further work).
// Collectives run on the stand-in library (fake_nccl.cpp) with CPU tensors.
// The tests run in this order: a failed load is not cached, a good one is.
#include <ATen/ATen.h>
#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "distributed/mpi_communicator.h"
#include "distributed/nccl_communicator.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;

NcclOptions on_cpu() {
  NcclOptions o;
  o.device_type = c10::DeviceType::CPU;
  return o;
}

CommConfig quick() {
  CommConfig c;
  c.timeout_s = 20;
  return c;
}

// Keeps MPI initialised across the tests (each communicator dups the world).
Communicator& world() {
  static auto comm = create_mpi_communicator(quick());
  return *comm;
}

TEST(NcclBackendTest, MissingLibraryIsAClearErrorOnEveryRank) {
  ASSERT_EQ(world().size(), 2) << "run under mpirun -np 2";
  setenv("LLMREC_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
  try {
    create_nccl_communicator(quick(), on_cpu());
    FAIL() << "must not start without NCCL";
  } catch (const CommError& e) {  // every rank failed: each reports its own error
    EXPECT_THAT(e.what(), HasSubstr(fmt::format("rank {}/2", world().rank())));
    EXPECT_THAT(e.what(), HasSubstr("cannot load the NCCL library"));
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/libnccl.so.2"));
    EXPECT_THAT(e.what(), HasSubstr("LLMREC_NCCL_LIBRARY"));
  }
}

TEST(NcclBackendTest, RealNcclWithoutADriverSaysSo) {
  const char* real = "/usr/local/cuda/lib/libnccl.so.2";  // the CUDA toolkit's NCCL, where installed
  if (!std::filesystem::exists(real)) GTEST_SKIP() << real << " not installed";
  setenv("LLMREC_NCCL_LIBRARY", real, 1);
  setenv("LLMREC_CUDA_DRIVER_LIBRARY", "/nonexistent/libcuda.so.1", 1);
  try {
    create_nccl_communicator(quick(), on_cpu());
    FAIL() << "must not start without a CUDA driver";
  } catch (const CommError& e) {
    // Loading the real library, binding its symbols and its version check passed.
    EXPECT_THAT(e.what(), HasSubstr("cannot load the CUDA driver library"));
    EXPECT_THAT(e.what(), HasSubstr("nvidia-smi"));
  }
}

TEST(NcclBackendTest, OneRankFailingSetUpStopsBothWithoutHanging) {
  setenv("LLMREC_CUDA_DRIVER_LIBRARY", LLMREC_FAKE_NCCL, 1);
  setenv("LLMREC_NCCL_LIBRARY", world().rank() == 1 ? "/nonexistent/libnccl.so.2" : LLMREC_FAKE_NCCL, 1);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    create_nccl_communicator(quick(), on_cpu());
    FAIL() << "rank 1 cannot load NCCL: no rank may start";
  } catch (const CommError& e) {
    if (world().rank() == 1) {
      EXPECT_THAT(e.what(), HasSubstr("cannot load the NCCL library"));
    } else {
      // Rank 1's own reason reaches rank 0.
      EXPECT_THAT(e.what(), HasSubstr("setting up NCCL failed on rank 1"));
      EXPECT_THAT(e.what(), HasSubstr("cannot load the NCCL library"));
    }
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST(NcclBackendTest, EveryHandleIsFreedWithTheCommunicator) {
  setenv("LLMREC_NCCL_LIBRARY", LLMREC_FAKE_NCCL, 1);
  setenv("LLMREC_CUDA_DRIVER_LIBRARY", LLMREC_FAKE_NCCL, 1);
  void* fake = dlopen(LLMREC_FAKE_NCCL, RTLD_NOW | RTLD_LOCAL);  // the instance the backend loads too
  ASSERT_NE(fake, nullptr) << dlerror();
  auto live = reinterpret_cast<int (*)()>(dlsym(fake, "llmrec_fake_live_handles"));
  ASSERT_NE(live, nullptr);
  const int before = live();
  {
    auto comm = create_nccl_communicator(quick(), on_cpu());
    at::Tensor t = at::ones({100}, at::kFloat);
    comm->all_reduce(t);
    auto work = comm->all_reduce_async(t);
    work->wait();
    // The NCCL communicator, its stream and the context reference at least.
    EXPECT_GE(live(), before + 3);
  }
  // The communicator, its stream, every event and the primary context's
  // reference are gone (cuDevicePrimaryCtxRelease).
  EXPECT_EQ(live(), before);
  dlclose(fake);
}

TEST(NcclBackendTest, StalledCollectiveTimesOutOnEveryRankNamingIt) {
  setenv("LLMREC_NCCL_LIBRARY", LLMREC_FAKE_NCCL, 1);
  setenv("LLMREC_CUDA_DRIVER_LIBRARY", LLMREC_FAKE_NCCL, 1);
  setenv("LLMREC_FAKE_NCCL_STALL", "1:1", 1);  // rank 1's second collective never completes
  CommConfig config;
  config.timeout_s = 1.0;
  auto comm = create_nccl_communicator(config, on_cpu());
  EXPECT_THAT(comm->describe(), HasSubstr("nccl 2.18.3"));
  at::Tensor t = at::ones({1000}, at::kFloat);
  comm->all_reduce(t);  // the first completes
  EXPECT_TRUE(at::equal(t, at::full({1000}, 2.0f)));
  const auto t0 = std::chrono::steady_clock::now();
  try {
    comm->all_reduce(t);
    FAIL() << "the stalled all-reduce must time out";
  } catch (const CommTimeout& e) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(waited, 0.9);
    EXPECT_LT(waited, 5.0);
    EXPECT_THAT(e.what(), HasSubstr(fmt::format("rank {}/2", comm->rank())));
    EXPECT_THAT(e.what(), HasSubstr(comm->host()));
    EXPECT_THAT(e.what(), HasSubstr("NCCL collective all_reduce(sum) Float x 1000 #2"));
    EXPECT_THAT(e.what(), HasSubstr("did not complete within 1 s"));
  }
  try {
    comm->all_reduce(t);
    FAIL() << "a communicator that timed out must refuse further collectives";
  } catch (const CommTimeout&) {
    FAIL() << "expected the 'failed earlier' CommError, not a new timeout";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("failed earlier"));
  }
  // CPU tensors of a CUDA-routed backend still go over MPI; here every
  // tensor is routed, so check MPI through the world communicator.
  at::Tensor ok = at::ones({3}, at::kInt);
  world().all_reduce(ok);
  EXPECT_TRUE(at::equal(ok, at::full({3}, 2, at::kInt)));
  comm.reset();  // ncclCommAbort, not Destroy: must not wait for the stuck collective
  unsetenv("LLMREC_FAKE_NCCL_STALL");
}

}  // namespace
}  // namespace llmrec
