#include "distributed/agree.h"

#include <ATen/ATen.h>

#include "common/error.h"
#include "distributed/broadcast_string.h"

namespace llmrec {

void agree_on_failure(Communicator& comm, const std::exception_ptr& error, const std::string& what) {
  std::string message;
  ErrorKind kind = ErrorKind::kError;
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const CommTimeout&) {
      throw;  // no collective can follow a timeout
    } catch (const std::exception& e) {
      kind = error_kind(e);
      message = e.what();
    } catch (...) {
      message = "an exception that is not a std::exception";
    }
  }
  // The lowest failed rank (size() if none), then its kind and message.
  at::Tensor first = at::tensor({static_cast<std::int64_t>(error ? comm.rank() : comm.size())}, at::kLong);
  comm.all_reduce(first, {ReduceOp::kMin});
  const auto failed = static_cast<int>(first.item<std::int64_t>());
  if (failed >= comm.size()) return;
  at::Tensor kind_t = at::tensor({static_cast<std::int64_t>(kind)}, at::kLong);
  comm.broadcast(kind_t, {failed});
  message = broadcast_string(comm, message, failed);
  if (error) std::rethrow_exception(error);  // a rank that failed reports its own error
  throw_error(static_cast<ErrorKind>(kind_t.item<std::int64_t>()),
              fmt::format("{} failed on rank {}: {}", what, failed, message));
}

std::int64_t run_on_rank0(Communicator& comm, const std::function<std::int64_t()>& work) {
  std::exception_ptr error;
  std::int64_t value = 0;
  if (comm.rank() == 0) {
    try {
      value = work();
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree_on_failure(comm, error, "the rank-0 step");
  at::Tensor v = at::tensor({value}, at::kLong);
  comm.broadcast(v, {0});
  return v.item<std::int64_t>();
}

}  // namespace llmrec
