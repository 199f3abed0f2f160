#pragma once
/// Sends a string from rank 0 to every rank (collective: two broadcasts,
/// the length then the bytes), e.g. a path only rank 0 chose or an error
/// only rank 0 saw.
///
///   std::string path = broadcast_string(comm, rank0_choice);

#include <ATen/ATen.h>

#include <cstring>
#include <string>

#include "distributed/communicator.h"

namespace llmrec {

inline std::string broadcast_string(Communicator& comm, const std::string& s) {
  at::Tensor len = at::tensor({static_cast<std::int64_t>(comm.rank() == 0 ? s.size() : 0)}, at::kLong);
  comm.broadcast(len);
  at::Tensor bytes = at::zeros({len.item<std::int64_t>()}, at::kByte);
  if (comm.rank() == 0 && !s.empty()) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  comm.broadcast(bytes);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()), static_cast<std::size_t>(bytes.numel()));
}

}  // namespace llmrec
