#pragma once
/// MPI_CHECK: turns an MPI error code into a CommError naming the call, the
/// source location and MPI's own message. MPI_COMM_WORLD is switched to
/// MPI_ERRORS_RETURN by MpiCommunicator so that errors come back as codes.

// The C API only: the deprecated MPI C++ bindings need an extra library.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <string>

#include "common/error.h"

namespace llmrec::detail {
[[noreturn]] void mpi_failed(int code, const char* call, const char* file, int line);
}  // namespace llmrec::detail

#define MPI_CHECK(call)                                                        \
  do {                                                                         \
    int llmrec_mpi_rc_ = (call);                                               \
    if (llmrec_mpi_rc_ != MPI_SUCCESS) {                                       \
      ::llmrec::detail::mpi_failed(llmrec_mpi_rc_, #call, __FILE__, __LINE__); \
    }                                                                          \
  } while (0)
