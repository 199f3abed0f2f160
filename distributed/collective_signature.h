#pragma once
/// What a collective looks like from one rank: compared across ranks before
/// each call when `comm.verify` is on (every backend uses the same record, so
/// the messages read the same).

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>
#include <vector>

namespace llmrec {

enum class OpKind : std::int64_t { AllReduce = 1, Broadcast, AllGather, AllGatherV, Barrier };

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
std::string signature_mismatch(const std::string& tag, const std::string& which, const std::vector<Signature>& all);

}  // namespace llmrec
