#pragma once
/// Communicator on MPI, for CPU tensors. Internal to distributed/ (and its
/// tests): everyone else creates communicators with create_communicator().
///
/// Threading: MPI is initialised with MPI_THREAD_SERIALIZED (checked).
/// Collectives run in issue order, one at a time, as MPI calls with a
/// deadline: asynchronous ones (all_reduce_async) on a communication thread
/// owned by the communicator, so they progress while the caller computes;
/// a blocking one runs on the caller's thread when the communication thread
/// is idle with nothing queued (fewer thread hand-offs), else it is queued
/// behind the others and waited for.

#include <memory>

#include "distributed/communicator.h"

namespace llmrec {

/// Initialises MPI if needed (MPI_Init_thread, SERIALIZED) and returns a
/// communicator over MPI_COMM_WORLD. MPI is finalised when the last
/// communicator is destroyed.
std::unique_ptr<Communicator> create_mpi_communicator(const CommConfig& config);

}  // namespace llmrec
