// A stalled rank: rank 1 joins an all-reduce 3 s late while rank 0 waits at
// most 1 s. Rank 0 must get CommTimeout naming its rank, host and the
// collective, and refuse further collectives; rank 1's late call completes
// (rank 0's request was posted), so both ranks still end cleanly.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "distributed/communicator.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;

TEST(CommTimeoutTest, StalledRankGivesATimeoutNamingRankAndCollective) {
  CommConfig config;
  config.timeout_s = 1.0;
  config.verify = false;  // one collective, so that the late rank completes it
  auto comm = create_communicator(config);
  ASSERT_EQ(comm->size(), 2) << "run under mpirun -np 2";
  at::Tensor t = at::ones({1000}, at::kFloat);
  if (comm->rank() == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    comm->all_reduce(t);
    EXPECT_TRUE(at::equal(t, at::full({1000}, 2.0f)));
    return;
  }
  auto t0 = std::chrono::steady_clock::now();
  try {
    comm->all_reduce(t);
    FAIL() << "rank 0 must time out";
  } catch (const CommTimeout& e) {
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(waited, 0.9);
    EXPECT_LT(waited, 2.9);  // gave up before the late rank arrived
    EXPECT_THAT(e.what(), HasSubstr("rank 0/2"));
    EXPECT_THAT(e.what(), HasSubstr(comm->host()));
    EXPECT_THAT(e.what(), HasSubstr("all_reduce(sum) Float x 1000 #1"));
    EXPECT_THAT(e.what(), HasSubstr("did not complete within 1 s"));
  }
  try {
    comm->barrier();
    FAIL() << "a communicator that timed out must refuse further collectives";
  } catch (const CommTimeout&) {
    FAIL() << "expected the 'failed earlier' CommError, not a new timeout";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("failed earlier"));
  }
}

}  // namespace
}  // namespace llmrec
