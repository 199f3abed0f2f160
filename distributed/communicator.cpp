// The one place that picks a backend; backend #ifdefs live here only.
#include "distributed/communicator.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "distributed/collective_signature.h"
#include "distributed/mpi_communicator.h"
#include "distributed/nccl_communicator.h"

namespace llmrec {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
  }
  return "unknown";
}

std::int64_t shape_hash(c10::IntArrayRef dims) {
  std::uint64_t h = 1469598103934665603ULL;
  for (auto d : dims) h = (h ^ static_cast<std::uint64_t>(d) ^ 0x9e37) * 1099511628211ULL;
  return static_cast<std::int64_t>(h >> 1);
}

std::string describe(const Signature& s) {
  std::string dtype =
      s.dtype < 0 ? std::string("-") : std::string(c10::toString(static_cast<at::ScalarType>(s.dtype)));
  switch (static_cast<OpKind>(s.kind)) {
    case OpKind::kAllReduce:
      return fmt::format("all_reduce({}) {} x {}", reduce_op_name(static_cast<ReduceOp>(s.op_or_root)), dtype,
                         s.count);
    case OpKind::kBroadcast: return fmt::format("broadcast(root {}) {} x {}", s.op_or_root, dtype, s.count);
    case OpKind::kAllGather:
      return fmt::format("all_gather {} x {} (shape #{:x})", dtype, s.count, s.shape_hash & 0xffff);
    case OpKind::kAllGatherV:
      return fmt::format("all_gather_v {} (row shape #{:x})", dtype, s.shape_hash & 0xffff);
    case OpKind::kBarrier: return "barrier";
  }
  return fmt::format("unknown collective {}", s.kind);
}

std::string signature_mismatch(const std::string& tag, const std::string& which,
                               const std::vector<Signature>& all) {
  std::string detail;
  for (std::size_t r = 0; r < all.size(); ++r)
    detail += fmt::format("\n    rank {}: {}", r, describe(all[r]));
  return fmt::format(
      "{}: collective {} differs between ranks (every rank must call the same collective with the "
      "same dtype, size, op and root):{}",
      tag, which, detail);
}

void check_cpu_tensor(const at::Tensor& t, const char* op, const std::string& tag, const char* backend) {
  if (!t.defined()) throw CommError(fmt::format("{}: {} got an undefined tensor", tag, op));
  if (!t.device().is_cpu()) {
    throw CommError(
        fmt::format("{}: {}'s {} needs a CPU tensor, got one on {}", tag, backend, op, t.device().str()));
  }
}

void check_cpu_reducible(at::ScalarType t, const std::string& tag) {
  if (t == at::kFloat || t == at::kDouble || t == at::kInt || t == at::kLong) return;
  throw CommError(fmt::format("{}: all_reduce supports float32, float64, int32 and int64 tensors, got {}",
                              tag, c10::toString(t)));
}

void check_broadcast_root(int root, int size, const std::string& tag) {
  if (root < 0 || root >= size) {
    throw CommError(
        fmt::format("{}: broadcast root {} is not a rank of this job (size {})", tag, root, size));
  }
}

void check_gather_v_input(const at::Tensor& t, const std::string& tag) {
  if (t.dim() == 0) {
    throw CommError(fmt::format("{}: all_gather_v needs a tensor with a first dimension, got a scalar", tag));
  }
}

bool signatures_agree(const std::vector<Signature>& all) {
  for (const auto& s : all) {
    if (std::memcmp(&s, &all.front(), sizeof(Signature)) != 0) return false;
  }
  return true;
}

std::string collective_timeout_message(const std::string& who, const std::string& what, double timeout_s) {
  return fmt::format(
      "{}: {} did not complete within {:.3g} s (comm.timeout_s): another rank is dead, stalled, or "
      "called a different collective. The communicator is unusable; abort the job.",
      who, what, timeout_s);
}

bool poll_until(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& done,
                const std::function<void()>& every_100ms) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto nap = std::chrono::microseconds(20);
  auto next_check = start + std::chrono::milliseconds(100);
  while (!done()) {
    const auto now = Clock::now();
    if (every_100ms && now >= next_check) {
      every_100ms();
      next_check = now + std::chrono::milliseconds(100);
    }
    if (now >= deadline) return false;
    if (now - start < std::chrono::microseconds(200)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }
  return true;
}

std::string communicator_build_features() {
#if LLMREC_WITH_CUDA
  const char* cuda = "on";
#else
  const char* cuda = "off";
#endif
  // The NCCL backend is always built; it loads libnccl when a run asks for it.
  return fmt::format("CUDA {}, NCCL backend on (loaded at run time)", cuda);
}

std::unique_ptr<Communicator> create_communicator(const CommConfig& config, c10::DeviceType device) {
  const bool gpu = device == c10::DeviceType::CUDA;
  if (config.backend == "nccl" || (config.backend == "auto" && gpu)) {
    if (!gpu) {
      throw ConfigError(
          "comm.backend nccl reduces GPU tensors: it needs run.device cuda (this run is on the CPU); "
          "use comm.backend auto or mpi");
    }
    return create_nccl_communicator(config);
  }
  if (config.backend == "auto" || config.backend == "mpi") {
    if (gpu) {
      throw ConfigError(
          "comm.backend mpi reduces CPU tensors only; with run.device cuda use comm.backend nccl "
          "(or auto)");
    }
    return create_mpi_communicator(config);
  }
  throw ConfigError(fmt::format("comm.backend '{}' is not available in this build", config.backend));
}

}  // namespace llmrec
