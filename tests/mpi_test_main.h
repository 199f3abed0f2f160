#pragma once
// The communicator shared by the tests of one multi-rank test binary
// (created by mpi_test_main.cpp before RUN_ALL_TESTS).
#include "distributed/communicator.h"

namespace llmrec::testing {
Communicator& test_comm();
}  // namespace llmrec::testing
