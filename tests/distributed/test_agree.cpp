// The one error transport across ranks (distributed/agree.h), the check
// that every rank holds the same bytes, and the in-process backend's own
// failure paths, with ranks as threads.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "common/error.h"
#include "distributed/agree.h"
#include "distributed/broadcast_string.h"
#include "tests/mpi_test_main.h"

namespace llmrec {
namespace {

using ::llmrec::testing::on_every_rank;
using ::llmrec::testing::run_ranks;
using ::testing::HasSubstr;

std::exception_ptr error_of(ErrorKind kind, const std::string& message) {
  try {
    throw_error(kind, message);
  } catch (...) {
    return std::current_exception();
  }
}

TEST(AgreeTest, NoFailureReturnsOnEveryRank) {
  on_every_rank([](Communicator& comm) {
    agree_on_failure(comm, nullptr, "nothing");
    // Still in step: a collective after it works.
    at::Tensor t = at::ones({2}, at::kLong);
    comm.all_reduce(t);
    EXPECT_TRUE(at::equal(t, at::full({2}, comm.size(), at::kLong)));
  });
}

TEST(AgreeTest, FailedRanksKeepTheirErrorTheOthersGetTheLowestFailedRanks) {
  on_every_rank([](Communicator& comm) {
    const int r = comm.rank();
    const int w = comm.size();
    // The last rank fails with an IoError and (w >= 3) rank 1 with a
    // ConfigError: each keeps its own; the others get rank 1's (the lowest).
    std::exception_ptr mine;
    if (r == w - 1) mine = error_of(ErrorKind::kIo, "disk full writing part-" + std::to_string(r));
    if (w >= 3 && r == 1) mine = error_of(ErrorKind::kConfig, "rank one's bad key");
    const int lowest = w >= 3 ? 1 : w - 1;
    try {
      agree_on_failure(comm, mine, "writing the shards");
      ADD_FAILURE() << "rank " << r << " went on after rank " << lowest << " failed";
    } catch (const ConfigError& e) {
      if (r == 1 && w >= 3) {
        EXPECT_STREQ(e.what(), "rank one's bad key");  // its own exception, unchanged
      } else {
        EXPECT_NE(r, w - 1);
        EXPECT_EQ(lowest, 1);
        EXPECT_THAT(e.what(), HasSubstr("writing the shards failed on rank 1: rank one's bad key"));
      }
    } catch (const IoError& e) {
      if (r == w - 1) {
        EXPECT_EQ(std::string(e.what()), "disk full writing part-" + std::to_string(r));
      } else {
        EXPECT_EQ(lowest, w - 1);
        EXPECT_THAT(e.what(), HasSubstr(fmt::format("failed on rank {}: disk full", w - 1)));
      }
    }
    // Still in step afterwards.
    at::Tensor t = at::ones({1}, at::kLong);
    comm.all_reduce(t);
    EXPECT_EQ(t.item<std::int64_t>(), w);
  });
}

TEST(AgreeTest, ANonLlmrecErrorCrossesAsError) {
  on_every_rank([](Communicator& comm) {
    std::exception_ptr mine;
    if (comm.rank() == 0) mine = std::make_exception_ptr(std::out_of_range("vector::at"));
    try {
      agree_on_failure(comm, mine, "indexing");
      ADD_FAILURE() << "must throw";
    } catch (const std::out_of_range& e) {
      EXPECT_EQ(comm.rank(), 0);
    } catch (const Error& e) {
      EXPECT_NE(comm.rank(), 0);
      EXPECT_EQ(error_kind(e), ErrorKind::kError);
      EXPECT_THAT(e.what(), HasSubstr("indexing failed on rank 0: vector::at"));
    }
  });
}

TEST(Rank0RunTest, ResultReachesEveryRankAndTheWorkRunsOnce) {
  std::atomic<int> calls{0};
  on_every_rank([&](Communicator& comm) {
    const std::int64_t v = run_on_rank0(comm, [&] {
      ++calls;
      return std::int64_t{4242};
    });
    EXPECT_EQ(v, 4242);
  });
  EXPECT_EQ(calls.load(), 4);  // once per world size 1..4 in process (once per process when launched)
}

TEST(Rank0RunTest, Rank0sErrorKeepsItsTypeOnEveryRank) {
  on_every_rank([](Communicator& comm) {
    try {
      run_on_rank0(comm,
                   []() -> std::int64_t { throw IoError("runs/x/model.h5: cannot create (read-only)"); });
      ADD_FAILURE() << "must throw";
    } catch (const IoError& e) {
      EXPECT_THAT(e.what(), HasSubstr("runs/x/model.h5: cannot create"));
    }
  });
}

TEST(FirstRankDifferingTest, NamesTheLowestRankWhoseBytesDiffer) {
  on_every_rank([](Communicator& comm) {
    const at::Tensor same = at::arange(12, at::kFloat).view({3, 4});
    EXPECT_EQ(first_rank_differing(comm, {same, at::ones({2}, at::kLong)}), -1);
    // The same values, not contiguous: compared by value, not by layout.
    EXPECT_EQ(first_rank_differing(comm, {same.t().contiguous().t()}), -1);
    at::Tensor mine = same.clone();
    if (comm.rank() >= 2) mine[1][2] = 7.5F;  // one value on ranks 2 and up
    EXPECT_EQ(first_rank_differing(comm, {mine}), comm.size() > 2 ? 2 : -1);
    // The order of the tensors counts.
    const at::Tensor a = at::zeros({1}, at::kFloat), b = at::ones({1}, at::kFloat);
    EXPECT_EQ(first_rank_differing(
                  comm, comm.rank() == 1 ? std::vector<at::Tensor>{b, a} : std::vector<at::Tensor>{a, b}),
              comm.size() > 1 ? 1 : -1);
  });
}

TEST(BroadcastStringTest, FromAnyRoot) {
  on_every_rank([](Communicator& comm) {
    for (int root = 0; root < comm.size(); ++root) {
      const std::string s =
          broadcast_string(comm, comm.rank() == root ? "from " + std::to_string(root) : "x", root);
      EXPECT_EQ(s, "from " + std::to_string(root));
    }
  });
}

TEST(LocalBackendTest, AStalledRankGivesATimeoutNamingRankAndCollective) {
  // Rank 1 never joins the second collective: rank 0 times out naming it,
  // then refuses further calls.
  run_ranks(
      2,
      [](Communicator& comm) {
        at::Tensor t = at::ones({3});
        comm.all_reduce(t);
        if (comm.rank() == 1) return;
        try {
          comm.all_reduce(t, {ReduceOp::kMax, Seconds(0.2)});
          ADD_FAILURE() << "a collective no other rank entered must time out";
        } catch (const CommTimeout& e) {
          EXPECT_THAT(e.what(), HasSubstr("rank 0/2"));
          EXPECT_THAT(e.what(), HasSubstr("all_reduce(max) Float x 3 #2"));
          EXPECT_THAT(e.what(), HasSubstr("did not complete within 0.2 s"));
        }
        try {
          comm.barrier();
          ADD_FAILURE() << "a timed-out communicator must refuse further calls";
        } catch (const CommError& e) {
          EXPECT_THAT(e.what(), HasSubstr("failed earlier"));
        }
      },
      /*timeout_s=*/5);
}

TEST(LocalBackendTest, ErrorsAreChainedWithTheirKind) {
  // rethrow_with_context keeps the cause's kind and the cause itself.
  try {
    try {
      throw IoError("items.csv:7: 3 fields, expected 4");
    } catch (const std::exception& e) {
      rethrow_with_context(e, "loading the catalogue");
    }
  } catch (const IoError& e) {
    EXPECT_STREQ(e.what(), "loading the catalogue: items.csv:7: 3 fields, expected 4");
    const auto chain = error_chain(e);
    ASSERT_EQ(chain.size(), 2u);
    EXPECT_EQ(chain[1], "items.csv:7: 3 fields, expected 4");
    try {
      std::rethrow_if_nested(e);
      ADD_FAILURE() << "the cause must be nested";
    } catch (const IoError& cause) {
      EXPECT_STREQ(cause.what(), "items.csv:7: 3 fields, expected 4");
    }
  }
  // An explicit kind overrides the cause's.
  try {
    try {
      throw Error("bad module name");
    } catch (const std::exception& e) {
      rethrow_with_context(e, "adapter_config.json: target_modules", ErrorKind::kConfig);
    }
  } catch (const ConfigError& e) {
    EXPECT_EQ(error_kind(e), ErrorKind::kConfig);
    EXPECT_EQ(error_chain(e).size(), 2u);
  }
}

}  // namespace
}  // namespace llmrec
