#include "distributed/agree.h"

#include <ATen/ATen.h>

#include <cstring>

#include "common/error.h"
#include "common/sha256.h"
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

int first_rank_differing(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  Sha256 h;
  for (const at::Tensor& t : tensors) {
    const at::Tensor bytes = t.cpu().contiguous();
    h.update(bytes.data_ptr(), static_cast<std::size_t>(bytes.nbytes()));
  }
  const auto d = h.digest();
  std::vector<std::int64_t> words(d.size() / sizeof(std::int64_t));
  std::memcpy(words.data(), d.data(), d.size());
  const at::Tensor all = comm.all_gather(at::tensor(words, at::kLong));
  for (int r = 1; r < comm.size(); ++r) {
    if (!at::equal(all[r], all[0])) return r;
  }
  return -1;
}

}  // namespace llmrec
