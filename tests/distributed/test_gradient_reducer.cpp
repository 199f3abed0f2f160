// GradientReducer at world sizes 1 to 4 (in process, and under mpirun with
// the MPI and NCCL backends): reduced gradients equal the
// average of every rank's gradients, with accumulation, unused parameters,
// overlap during backward, and a clear error when ranks' parameters differ.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "distributed/gradient_reducer.h"
#include "tests/mpi_test_main.h"

namespace llmrec {
namespace {

using ::llmrec::testing::on_every_rank;
using ::testing::HasSubstr;

TEST(BucketAssignment, ReverseOrderCapAndDtypes) {
  std::vector<at::Tensor> p = {at::zeros({10}), at::zeros({10}), at::zeros({30}), at::zeros({5}, at::kDouble),
                               at::zeros({10})};
  auto b = compute_bucket_assignment(p, /*bucket_bytes=*/80);  // 20 floats
  // Walk: p4 (10) -> bucket0; p3 double -> bucket1; p2 (30 floats, too big
  // for bucket0) -> bucket2 alone; p1 (10) -> bucket3; p0 (10) -> bucket3.
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].params, (std::vector<std::size_t>{4}));
  EXPECT_EQ(b[1].params, (std::vector<std::size_t>{3}));
  EXPECT_EQ(b[1].dtype, at::kDouble);
  EXPECT_EQ(b[2].params, (std::vector<std::size_t>{2}));
  EXPECT_EQ(b[3].params, (std::vector<std::size_t>{1, 0}));
  EXPECT_EQ(b[3].offsets, (std::vector<std::int64_t>{0, 10}));
  EXPECT_EQ(b[3].numel, 20);
}

// Random values from a generator of their own: the ranks of an in-process
// job are threads, and the global generator is shared between them.
at::Tensor seeded_randn(at::IntArrayRef shape, std::uint64_t seed) {
  return at::randn(shape, at::make_generator<at::CPUGeneratorImpl>(seed), at::kDouble);
}

// A two-layer model; parameters identical on every rank (seeded).
std::vector<std::pair<std::string, at::Tensor>> make_params() {
  return {{"w1", seeded_randn({6, 4}, 71).requires_grad_()},
          {"b1", seeded_randn({6}, 72).requires_grad_()},
          {"w2", seeded_randn({3, 6}, 73).requires_grad_()},
          {"unused_on_rank0", seeded_randn({3}, 74).requires_grad_()}};
}
// Rank-dependent data; rank 0 does not use the last parameter.
at::Tensor loss(const std::vector<std::pair<std::string, at::Tensor>>& p, int rank, int micro) {
  at::Tensor x = seeded_randn({5, 4}, 100 + 10 * rank + micro);
  at::Tensor h = at::tanh(at::matmul(x, p[0].second.t()) + p[1].second);
  at::Tensor y = at::matmul(h, p[2].second.t());
  if (rank != 0) y = y * p[3].second;
  return y.pow(2).mean();
}
// What the reduced gradient must be: the mean over ranks of each rank's
// gradient summed over its micro-steps (computed without the reducer).
std::vector<at::Tensor> expected(int w, int micro_steps) {
  std::vector<at::Tensor> sum;
  for (int k = 0; k < w; ++k) {
    auto p = make_params();
    for (int m = 0; m < micro_steps; ++m) loss(p, k, m).backward();
    for (std::size_t i = 0; i < p.size(); ++i) {
      at::Tensor g = p[i].second.grad().defined() ? p[i].second.grad() : at::zeros_like(p[i].second);
      if (sum.size() <= i)
        sum.push_back(g.clone());
      else
        sum[i] += g;
    }
  }
  for (auto& s : sum) s /= w;
  return sum;
}

TEST(ReducerTest, ReducedGradientIsTheMeanOverRanks) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    auto p = make_params();
    GradientReducer reducer(comm, p, {/*bucket_mb=*/0.0001, ReduceOp::kAvg});  // ~100 bytes: several buckets
    EXPECT_GE(reducer.buckets().size(), 3u);
    loss(p, r, 0).backward();
    reducer.finish();
    auto want = expected(w, 1);
    for (std::size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(at::allclose(p[i].second.grad(), want[i], 1e-12, 1e-14)) << p[i].first;
    }
    EXPECT_EQ(reducer.bytes_per_step(), (24 + 6 + 18 + 3) * 8);
    if (w == 1) {  // nothing to reduce, nothing sent; the gradients are backward's
      EXPECT_EQ(reducer.stats().buckets, 0);
      EXPECT_EQ(reducer.stats().bytes, 0);
      return;
    }
    EXPECT_EQ(reducer.stats().buckets, static_cast<std::int64_t>(reducer.buckets().size()));
    EXPECT_EQ(reducer.stats().bytes, (24 + 6 + 18 + 3) * 8);
    // Buckets launch in bucket order. The first bucket holds the last
    // parameter: on ranks that use it, buckets fly during backward; on rank 0
    // it never gets a gradient, so nothing may launch before finish().
    if (r == 0) {
      EXPECT_EQ(reducer.stats().launched_in_backward, 0);
    } else {
      EXPECT_EQ(reducer.stats().launched_in_backward, static_cast<std::int64_t>(reducer.buckets().size()));
    }
  });
}

TEST(ReducerTest, AccumulatedMicroStepsAndASecondStep) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    auto p = make_params();
    GradientReducer reducer(comm, p, {});
    {
      auto guard = reducer.no_sync();
      loss(p, r, 0).backward();
      loss(p, r, 1).backward();
    }
    loss(p, r, 2).backward();
    reducer.finish();
    auto want = expected(w, 3);
    for (std::size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(at::allclose(p[i].second.grad(), want[i], 1e-12, 1e-14)) << p[i].first;
    }
    // Next step, after zeroing: one micro-step again.
    for (auto& [n, t] : p) t.mutable_grad().zero_();
    loss(p, r, 0).backward();
    reducer.finish();
    want = expected(w, 1);
    for (std::size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(at::allclose(p[i].second.grad(), want[i], 1e-12, 1e-14)) << p[i].first;
    }
  });
}

TEST(ReducerTest, ARankWithNoBackwardStillTakesPart) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    // An empty batch on the last rank: it calls finish() without backward.
    auto p = make_params();
    GradientReducer reducer(comm, p, {0.0001, ReduceOp::kSum});
    if (r != w - 1 || w == 1) loss(p, r, 0).backward();
    reducer.finish();
    std::vector<at::Tensor> want;
    for (int k = 0; k < w; ++k) {
      if (k == w - 1 && w > 1) continue;
      auto q = make_params();
      loss(q, k, 0).backward();
      for (std::size_t i = 0; i < q.size(); ++i) {
        at::Tensor g = q[i].second.grad().defined() ? q[i].second.grad() : at::zeros_like(q[i].second);
        if (want.size() <= i)
          want.push_back(g.clone());
        else
          want[i] += g;
      }
    }
    for (std::size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(at::allclose(p[i].second.grad(), want[i], 1e-12, 1e-14)) << p[i].first;
    }
  });
}

TEST(ReducerTest, SecondBackwardWithoutFinishIsAClearError) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    auto p = make_params();
    GradientReducer reducer(comm, p, {});
    loss(p, r, 0).backward();
    try {
      loss(p, r, 1).backward();
      ADD_FAILURE() << "a second synchronised backward must be refused";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("second gradient before finish()"));
    }
    reducer.finish();
  });
}

TEST(ReducerTest, RanksWithDifferentParametersAreNamed) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    if (w < 2) return;  // needs 2 ranks
    auto p = make_params();
    if (r == 1) p[2].second = at::randn({3, 7}, at::kDouble).requires_grad_();
    try {
      GradientReducer reducer(comm, p, {});
      ADD_FAILURE() << "different parameters went unnoticed";
    } catch (const CommError& e) {
      EXPECT_THAT(e.what(), HasSubstr("'w2' is [3, 7] Double on rank 1 but [3, 6] Double on rank 0"));
    }
  });
}

}  // namespace
}  // namespace llmrec
