#pragma once
/// The one way an error crosses ranks. When one rank fails and the others
/// must not go on alone (or wait for it forever), every rank calls the same
/// agreement: a rank that failed rethrows its own exception unchanged
/// (nested causes kept), every other rank throws the lowest failed rank's
/// error with its type (ErrorKind: ConfigError, IoError, CommError, ...) and
/// message.
///
///   std::exception_ptr failure;
///   try { load_my_part(); } catch (...) { failure = std::current_exception(); }
///   agree_on_failure(comm, failure, "loading the shards");  // collective
///   // rank 1 failed: rank 0 throws "loading the shards failed on rank 1: ..."
///
///   auto bytes = run_on_rank0(comm, [&] { write(path); return file_size(path); });
///   if (first_rank_differing(comm, {weights}) >= 0) ...  // not the same everywhere

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace llmrec {

/// Collective. Returns if no rank passed an error; otherwise every rank
/// throws: a failed rank its own exception, the others an error of the
/// lowest failed rank's kind whose message reads "<what> failed on rank R:
/// <its message>". A CommTimeout is rethrown at once without agreeing (the
/// communicator is unusable; the application aborts the job).
void agree_on_failure(Communicator& comm, const std::exception_ptr& error, const std::string& what);

/// Work only rank 0 does (writing a file every rank depends on), with its
/// outcome shared (collective): every rank returns rank 0's result or throws
/// rank 0's error, as agree_on_failure.
std::int64_t run_on_rank0(Communicator& comm, const std::function<std::int64_t()>& work);

/// Collective: the lowest rank whose `tensors` (their bytes, compared by
/// SHA-256 digest) differ from rank 0's, or -1 when every rank holds the
/// same. Only the 32-byte digests cross ranks.
int first_rank_differing(Communicator& comm, const std::vector<at::Tensor>& tensors);

}  // namespace llmrec
