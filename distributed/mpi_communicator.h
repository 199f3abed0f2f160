#pragma once
/// Communicator on MPI, for CPU tensors.
///
/// Threading: MPI is initialised with MPI_THREAD_SERIALIZED (checked). All
/// collectives run on one worker thread owned by the communicator, in issue
/// order, as non-blocking MPI calls polled with MPI_Test; so an async
/// all_reduce progresses while the caller computes, and every collective has
/// a deadline. The caller's thread never calls MPI after construction.

#include <memory>

#include "distributed/communicator.h"

namespace llmrec {

/// Initialises MPI if needed (MPI_Init_thread, SERIALIZED) and returns a
/// communicator over MPI_COMM_WORLD. MPI is finalised when the last
/// communicator is destroyed.
std::unique_ptr<Communicator> mpi_communicator_create(const CommConfig& config);

/// The MPI library's version string, e.g. "Open MPI v4.1.4".
std::string mpi_library_version();

}  // namespace llmrec
