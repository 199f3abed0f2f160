#pragma once
/// What every backend shares: the record of what a collective looks like
/// from one rank (compared across ranks before each call when `comm.verify`
/// is on), its comparison and mismatch message, the message of a missed
/// deadline, and the one polling policy for waits against a deadline. So
/// the messages read the same on every backend.

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace llmrec {

enum class OpKind : std::int64_t { kAllReduce = 1, kBroadcast, kAllGather, kAllGatherV, kBarrier };

struct Signature {
  std::int64_t kind = 0;
  std::int64_t dtype = -1;
  std::int64_t op_or_root = 0;
  std::int64_t count = 0;       // elements; -1 where it may differ (all_gather_v)
  std::int64_t shape_hash = 0;  // full shape (all_gather) or trailing dims (all_gather_v)
};
constexpr int kSignatureLen = 5;
static_assert(sizeof(Signature) == kSignatureLen * sizeof(std::int64_t));

std::int64_t shape_hash(c10::IntArrayRef dims);

/// e.g. "all_reduce(sum) Float x 1031".
std::string describe(const Signature& s);

/// The error when the ranks passed different signatures to one collective:
/// "<tag>: collective <which> differs between ranks (...):" and what each
/// rank (in rank order, `all`) passed.
std::string signature_mismatch(const std::string& tag, const std::string& which,
                               const std::vector<Signature>& all);

/// The argument checks every backend makes before a collective; CommError
/// naming `tag` ("rank R/W") otherwise.
/// A defined CPU tensor (`backend` names who needs it: "the MPI backend").
void check_cpu_tensor(const at::Tensor& t, const char* op, const std::string& tag, const char* backend);
/// all_reduce of CPU tensors: float32, float64, int32 or int64.
void check_cpu_reducible(at::ScalarType t, const std::string& tag);
/// 0 <= root < size.
void check_broadcast_root(int root, int size, const std::string& tag);
/// all_gather_v needs a first dimension.
void check_gather_v_input(const at::Tensor& t, const std::string& tag);

/// True when every rank's signature equals the first's.
bool signatures_agree(const std::vector<Signature>& all);

/// "<who>: <what> did not complete within T s (comm.timeout_s): another
/// rank is dead, stalled, or called a different collective. The
/// communicator is unusable; abort the job." `who` names rank and host,
/// `what` the collective ("collective all_reduce(sum) Float x 4 #2").
std::string collective_timeout_message(const std::string& who, const std::string& what, double timeout_s);

/// Polls `done` until it returns true (then true) or `deadline` passes
/// (then false). Spins, yielding, for the first 200 us (low latency), then
/// sleeps with a backoff from 20 us to 1 ms, so that a waiting thread does
/// not take a core from compute. `every_100ms`, when given, runs about every
/// 100 ms while waiting (e.g. to check a library's asynchronous errors).
bool poll_until(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& done,
                const std::function<void()>& every_100ms = {});

}  // namespace llmrec
