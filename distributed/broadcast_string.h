#pragma once
/// Sends a string from `root` (rank 0 by default) to every rank
/// (collective: two broadcasts, the length then the bytes), e.g. a path
/// only rank 0 chose.
///
///   std::string path = broadcast_string(comm, rank0_choice);

#include <ATen/ATen.h>

#include <cstring>
#include <string>

#include "distributed/communicator.h"

namespace llmrec {

inline std::string broadcast_string(Communicator& comm, const std::string& s, int root = 0) {
  const bool mine = comm.rank() == root;
  at::Tensor len = at::tensor({static_cast<std::int64_t>(mine ? s.size() : 0)}, at::kLong);
  comm.broadcast(len, {root});
  at::Tensor bytes = at::zeros({len.item<std::int64_t>()}, at::kByte);
  if (mine && !s.empty()) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  comm.broadcast(bytes, {root});
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()),
                     static_cast<std::size_t>(bytes.numel()));
}

}  // namespace llmrec
