#pragma once
// Multi-rank tests. A binary linked with mpi_test_main.cpp has one process
// communicator (test_comm(); under mpirun the job's, created before
// RUN_ALL_TESTS; without a launcher a world of one, created on first use). Tests of collective logic run
// their body on every rank with on_every_rank: under mpirun (or with LLMREC_TEST_COMM set) once, on the job's
// communicator; started without a launcher, in this process at world sizes 1 to 4, each rank a thread of one
// create_local_communicators (distributed/local_communicator.h).
#include <functional>

#include "distributed/communicator.h"

namespace llmrec::testing {

Communicator& test_comm();

/// True when this process is one rank of a launched job (mpirun, srun) or
/// LLMREC_TEST_COMM chose a backend.
bool launched();

/// Runs body(comm) on `world` threads, rank r with rank r's communicator of
/// a fresh in-process group (collective timeout `timeout_s`). An exception
/// escaping a rank is a test failure naming the rank.
void run_ranks(int world, const std::function<void(Communicator&)>& body, double timeout_s = 30);

/// body on every rank: once per process when launched(), else run_ranks at
/// world sizes 1, 2, 3 and 4 (a failure names the rank and world size).
void on_every_rank(const std::function<void(Communicator&)>& body);

}  // namespace llmrec::testing
