// Collectives of every backend, checked exactly: in process (the local
// backend, world sizes 1 to 4, one thread per rank) and under mpirun (MPI,
// or NCCL on the stand-in library; np 1, 2, 3).
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/mpi_test_main.h"

namespace llmrec {
namespace {

using ::llmrec::testing::launched;
using ::llmrec::testing::on_every_rank;
using ::testing::HasSubstr;

TEST(CommunicatorTest, RanksAndSizesMatchTheLauncher) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    ASSERT_GE(r, 0);
    ASSERT_LT(r, w);
    if (const char* env = std::getenv("OMPI_COMM_WORLD_SIZE")) {
      EXPECT_EQ(w, std::atoi(env));
      EXPECT_EQ(r, std::atoi(std::getenv("OMPI_COMM_WORLD_RANK")));
      EXPECT_EQ(comm.local_rank(), std::atoi(std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")));
      EXPECT_EQ(comm.local_size(), std::atoi(std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")));
    } else if (!launched()) {  // in process: one host, every rank local
      EXPECT_EQ(comm.local_rank(), r);
      EXPECT_EQ(comm.local_size(), w);
      EXPECT_THAT(comm.describe(), HasSubstr("ranks as threads of one process"));
    }
    // Every rank sees the same size, and the ranks are a permutation of 0..w-1.
    at::Tensor ranks = comm.all_gather(at::tensor({r}, at::kInt));
    EXPECT_TRUE(at::equal(ranks.flatten(), at::arange(w, at::kInt)));
    if (launched() && std::getenv("LLMREC_TEST_COMM") == nullptr) {
      EXPECT_THAT(comm.describe(), HasSubstr("thread level"));
    }
  });
}

class AllReduceTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, ReduceOp>> {};

TEST_P(AllReduceTest, ExactForEveryDtypeAndOp) {
  const at::ScalarType dtype = std::get<0>(GetParam());
  const ReduceOp op = std::get<1>(GetParam());
  on_every_rank([&](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    const std::int64_t n = 1031;  // not a multiple of anything
    at::Tensor idx = at::arange(n, at::TensorOptions().dtype(dtype));
    // Rank k holds (i % 7 - 3) * (k + 1) + k: signs, growth and order differ per rank.
    auto value = [&](int k) { return (idx.remainder(7) - 3) * (k + 1) + k; };
    at::Tensor t = value(r);
    comm.all_reduce(t, {op});
    at::Tensor want = value(0);
    for (int k = 1; k < w; ++k) {
      at::Tensor v = value(k);
      switch (op) {
        case ReduceOp::kSum:
        case ReduceOp::kAvg: want = want + v; break;
        case ReduceOp::kMin: want = at::minimum(want, v); break;
        case ReduceOp::kMax: want = at::maximum(want, v); break;
      }
    }
    if (op == ReduceOp::kAvg) want = at::isFloatingType(dtype) ? want / w : at::div(want, w, "trunc");
    EXPECT_EQ(t.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(t, want.to(dtype))) << "dtype " << dtype << " op " << reduce_op_name(op);
  });
}

INSTANTIATE_TEST_SUITE_P(AllDtypesAndOps, AllReduceTest,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kDouble, at::kInt, at::kLong),
                                            ::testing::Values(ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin,
                                                              ReduceOp::kMax)));

TEST(CommunicatorTest, AllReduceNonContiguousWritesOnlyTheView) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    at::Tensor m = at::full({6, 5}, double(r + 1), at::kDouble);
    at::Tensor view = m.t().slice(0, 1, 5, 2);  // transposed, strided
    ASSERT_FALSE(view.is_contiguous());
    comm.all_reduce(view, {ReduceOp::kSum});
    at::Tensor want = at::full({6, 5}, double(r + 1), at::kDouble);
    want.t().slice(0, 1, 5, 2).fill_(double(w) * (w + 1) / 2);
    EXPECT_TRUE(at::equal(m, want));
  });
}

TEST(CommunicatorTest, EmptyAndScalarTensors) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    at::Tensor empty = at::empty({0, 3}, at::kFloat);
    comm.all_reduce(empty);
    EXPECT_EQ(empty.numel(), 0);
    comm.broadcast(empty);
    EXPECT_EQ(comm.all_gather(empty).sizes(), (std::vector<std::int64_t>{w, 0, 3}));
    auto parts = comm.all_gather_v(empty);
    ASSERT_EQ(static_cast<int>(parts.size()), w);
    for (const auto& p : parts) EXPECT_EQ(p.sizes(), (std::vector<std::int64_t>{0, 3}));

    at::Tensor scalar = at::scalar_tensor(double(r), at::kDouble);
    comm.all_reduce(scalar, {ReduceOp::kMax});
    EXPECT_EQ(scalar.dim(), 0);
    EXPECT_EQ(scalar.item<double>(), double(w - 1));
  });
}

TEST(CommunicatorTest, BroadcastFromEveryRootAnyDtype) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    for (int root = 0; root < w; ++root) {
      at::Tensor f = at::full({3, 4}, float(r * 100 + 1), at::kFloat);
      comm.broadcast(f, {root});
      EXPECT_TRUE(at::equal(f, at::full({3, 4}, float(root * 100 + 1))));
      at::Tensor b = at::full({5}, r == root, at::kBool);
      comm.broadcast(b, {root});
      EXPECT_TRUE(b.all().item<bool>());
      at::Tensor h = at::full({7}, float(root) + 0.5f, at::kBFloat16) * (r == root ? 1 : 0);
      comm.broadcast(h, {root});
      EXPECT_TRUE(at::equal(h, at::full({7}, float(root) + 0.5f, at::kBFloat16)));
      // Non-contiguous target.
      at::Tensor m = at::full({4, 4}, std::int64_t(r), at::kLong);
      comm.broadcast(m.diagonal(), {root});
      at::Tensor want = at::full({4, 4}, std::int64_t(r), at::kLong);
      want.diagonal().fill_(root);
      EXPECT_TRUE(at::equal(m, want));
    }
  });
}

TEST(CommunicatorTest, BroadcastRejectsARootOutsideTheJob) {
  on_every_rank([](Communicator& comm) {
    const int w = comm.size();
    at::Tensor t = at::zeros({2});
    EXPECT_THROW(
        {
          try {
            comm.broadcast(t, {w});
          } catch (const CommError& e) {
            EXPECT_THAT(e.what(), HasSubstr("broadcast root"));
            throw;
          }
        },
        CommError);
  });
}

TEST(CommunicatorTest, AllGatherEqualShapes) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    at::Tensor t = at::arange(6, at::kLong).view({2, 3}) + 10 * r;
    at::Tensor g = comm.all_gather(t.t());  // non-contiguous input
    ASSERT_EQ(g.sizes(), (std::vector<std::int64_t>{w, 3, 2}));
    for (int k = 0; k < w; ++k)
      EXPECT_TRUE(at::equal(g[k], (at::arange(6, at::kLong).view({2, 3}) + 10 * k).t()));
  });
}

TEST(CommunicatorTest, AllGatherVariableRows) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    // Rank k sends 2k rows (rank 0 sends none) of shape (2, 3) filled with k.
    at::Tensor t = at::full({2LL * r, 2, 3}, double(r), at::kDouble);
    auto parts = comm.all_gather_v(t);
    ASSERT_EQ(static_cast<int>(parts.size()), w);
    for (int k = 0; k < w; ++k) {
      EXPECT_EQ(parts[k].sizes(), (std::vector<std::int64_t>{2LL * k, 2, 3}));
      EXPECT_TRUE(at::equal(parts[k], at::full({2LL * k, 2, 3}, double(k), at::kDouble)));
    }
  });
}

TEST(CommunicatorTest, AsyncAllReduceCompletesInIssueOrder) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    std::vector<at::Tensor> ts;
    std::vector<std::shared_ptr<Work>> works;
    for (int i = 0; i < 8; ++i) {
      ts.push_back(at::full({1000LL * (i + 1)}, float(i + r), at::kFloat));
      works.push_back(comm.all_reduce_async(ts.back(), {ReduceOp::kSum}));
    }
    // Waiting out of order is fine; the queue runs them in issue order.
    for (int i = 7; i >= 0; --i) {
      works[i]->wait(Seconds(30));
      EXPECT_TRUE(works[i]->completed());
      EXPECT_TRUE(at::equal(ts[i], at::full({1000LL * (i + 1)}, float(i * w) + float(w * (w - 1)) / 2)));
    }
  });
}

TEST(CommunicatorTest, BarrierAndUnsupportedDtype) {
  on_every_rank([](Communicator& comm) {
    comm.barrier();
    at::Tensor b = at::ones({3}, at::kBool);
    try {
      comm.all_reduce(b);
      FAIL() << "all_reduce of bool must be refused";
    } catch (const CommError& e) {
      EXPECT_THAT(e.what(), HasSubstr("float32, float64, int32 and int64"));
      EXPECT_THAT(e.what(), HasSubstr("Bool"));
    }
    comm.barrier();  // still usable
  });
}

// The remaining tests need several ranks that disagree.

// Expects a CommError on every rank whose message lists every rank's call,
// then checks that the communicator still works.
template <class F>
void expect_mismatch(Communicator& comm, F call, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "mismatched collective was not detected";
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("differs between ranks"));
    for (const auto& f : fragments) EXPECT_THAT(e.what(), HasSubstr(f));
  }
  at::Tensor t = at::ones({4}, at::kInt);
  comm.all_reduce(t);
  EXPECT_TRUE(at::equal(t, at::full({4}, comm.size(), at::kInt)));
}

TEST(MismatchTest, SizesDiffer) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    if (w < 2) return;  // needs ranks that disagree
    at::Tensor t = at::ones({4 + r});
    expect_mismatch(comm, [&] { comm.all_reduce(t); },
                    {"rank 0: all_reduce(sum) Float x 4", "rank 1: all_reduce(sum) Float x 5"});
  });
}

TEST(MismatchTest, DtypesDiffer) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    if (w < 2) return;  // needs ranks that disagree
    at::Tensor t = at::ones({4}, r == 0 ? at::kFloat : at::kDouble);
    expect_mismatch(comm, [&] { comm.all_reduce(t); },
                    {"rank 0: all_reduce(sum) Float", "rank 1: all_reduce(sum) Double"});
  });
}

TEST(MismatchTest, OpsDiffer) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    if (w < 2) return;  // needs ranks that disagree
    at::Tensor t = at::ones({4});
    expect_mismatch(comm, [&] { comm.all_reduce(t, {r == 0 ? ReduceOp::kSum : ReduceOp::kMax}); },
                    {"all_reduce(sum)", "all_reduce(max)"});
  });
}

TEST(MismatchTest, DifferentCollectives) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    if (w < 2) return;  // needs ranks that disagree
    at::Tensor t = at::ones({4});
    expect_mismatch(comm,
                    [&] {
                      if (r == 0)
                        comm.all_reduce(t);
                      else
                        comm.broadcast(t, {0});
                    },
                    {"rank 0: all_reduce", "rank 1: broadcast(root 0)"});
  });
}

TEST(MismatchTest, AllGatherShapesDiffer) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    if (w < 2) return;  // needs ranks that disagree
    at::Tensor t = r == 0 ? at::ones({2, 3}) : at::ones({3, 2});
    expect_mismatch(comm, [&] { comm.all_gather(t); }, {"all_gather"});
    at::Tensor v = at::ones({r + 1, r == 0 ? 4 : 5});
    expect_mismatch(comm, [&] { comm.all_gather_v(v); }, {"all_gather_v"});
  });
}

}  // namespace
}  // namespace llmrec
