// main() for multi-rank GoogleTest binaries: one communicator for the whole
// process; only rank 0 prints the test progress, every rank's failures are
// printed with its rank, and the exit code is the worst over the ranks.
#include "tests/mpi_test_main.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "distributed/local_communicator.h"
#include "distributed/nccl_communicator.h"

namespace llmrec::testing {
namespace {
std::unique_ptr<Communicator> g_comm;

// On ranks other than 0: print failed assertions only, tagged with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
  }

 private:
  int rank_;
};
}  // namespace
Communicator& test_comm() {
  if (!g_comm) {
    CommConfig config;
    config.timeout_s = 60;  // a wrong test must fail, not hang CTest
    // LLMREC_TEST_COMM=nccl: the same tests through the NCCL backend, with
    // CPU tensors routed to it (run against the stand-in library, see
    // tests/distributed/fake_nccl.cpp).
    const char* backend = std::getenv("LLMREC_TEST_COMM");
    if (backend != nullptr && std::string(backend) == "nccl") {
      NcclOptions nccl;
      nccl.device_type = c10::DeviceType::CPU;
      g_comm = create_nccl_communicator(config, nccl);
    } else {
      g_comm = create_communicator(config);
    }
  }
  return *g_comm;
}

namespace {
// Read before MPI starts: an Open MPI singleton sets OMPI_COMM_WORLD_* itself.
bool launched_from_environment() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "LLMREC_TEST_COMM"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}
const bool kLaunched = launched_from_environment();
}  // namespace

bool launched() {
  return kLaunched;
}

void run_ranks(int world, const std::function<void(Communicator&)>& body, double timeout_s) {
  CommConfig config;
  config.timeout_s = timeout_s;
  auto comms = create_local_communicators(world, config);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      SCOPED_TRACE(::testing::Message() << "in-process rank " << r << " of " << world);
      try {
        body(*comms[static_cast<std::size_t>(r)]);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << " of " << world << " threw: " << e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
}

void on_every_rank(const std::function<void(Communicator&)>& body) {
  if (launched()) {
    body(test_comm());
    return;
  }
  for (int world = 1; world <= 4; ++world) {
    run_ranks(world, body);
  }
}
}  // namespace llmrec::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!llmrec::testing::launched()) {
    // No launcher: the ranks of on_every_rank are threads of this process,
    // and MPI starts (as a world of one) only if a test asks for test_comm().
    llmrec::init_logging(llmrec::LogConfig{}, 0, 1);
    const int rc = RUN_ALL_TESTS();
    llmrec::testing::g_comm.reset();
    return rc;
  }
  auto& comm = llmrec::testing::test_comm();
  llmrec::init_logging(llmrec::LogConfig{}, comm.rank(), comm.size());
  if (comm.rank() != 0) {
    // Keep rank 0's full report; other ranks print failures only.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new llmrec::testing::FailurePrinter(comm.rank()));
  }
  int rc = RUN_ALL_TESTS();
  at::Tensor worst = at::tensor({rc}, at::kInt);
  comm.all_reduce(worst, {llmrec::ReduceOp::kMax});
  rc = worst.item<int>();
  if (comm.rank() == 0 && rc != 0) std::fprintf(stderr, "a test failed on at least one rank\n");
  llmrec::testing::g_comm.reset();
  return rc;
}
