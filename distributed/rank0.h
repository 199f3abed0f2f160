#pragma once
/// Work only rank 0 does (writing a file every rank depends on), with its
/// outcome shared: collective, every rank returns rank 0's result or throws
/// rank 0's error with its message and kind (ConfigError, IoError, else
/// Error), so a failure on rank 0 never leaves the others waiting or going
/// on alone.
///
///   auto bytes = rank0_run(comm, [&] { write(path); return file_size(path); });

#include <ATen/ATen.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <string>

#include "common/error.h"
#include "distributed/broadcast_string.h"
#include "distributed/communicator.h"

namespace llmrec {

inline std::int64_t rank0_run(Communicator& comm, const std::function<std::int64_t()>& work) {
  std::int64_t status = 0;  // 0 ok, 1 IoError, 2 ConfigError, 3 other
  std::int64_t value = 0;
  std::string message;
  if (comm.rank() == 0) {
    try {
      value = work();
    } catch (const ConfigError& e) {
      status = 2;
      message = e.what();
    } catch (const IoError& e) {
      status = 1;
      message = e.what();
    } catch (const std::exception& e) {
      status = 3;
      message = e.what();
    }
  }
  at::Tensor st = at::tensor({status, value}, at::kLong);
  comm.broadcast(st);
  status = st[0].item<std::int64_t>();
  if (status != 0) {
    message = broadcast_string(comm, message);
    if (status == 2) throw ConfigError(message);
    if (status == 1) throw IoError(message);
    throw Error(message);
  }
  return st[1].item<std::int64_t>();
}

}  // namespace llmrec
