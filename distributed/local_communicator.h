#pragma once
/// An in-process job: W ranks as W threads of one process, collectives over
/// shared memory. The contract of every backend (communicator.h) holds:
/// the signature check before each call (always on: it is free here; a
/// mismatch throws CommError on every rank and the group stays usable),
/// FIFO order of one rank's calls (a queue and a thread per rank), and a
/// deadline on every call (CommTimeout naming rank and collective).
/// Reductions run in rank order, so results are deterministic.
///
/// For the logic above the transport (the gradient reducer, agreement on
/// errors, rank-0 steps) tested without mpirun, at any world size:
///
///   auto comms = create_local_communicators(3, config);   // comms[r] is rank r
///   std::vector<std::thread> ranks;
///   for (auto& c : comms) ranks.emplace_back([&c] { c->all_reduce(x); });
///
/// abort(code) ends the process (every rank is in it).

#include <memory>
#include <vector>

#include "distributed/communicator.h"

namespace llmrec {

/// `world` communicators of one group; hand each to one thread. They may be
/// destroyed in any order (each joins its own queue thread).
std::vector<std::unique_ptr<Communicator>> create_local_communicators(int world, const CommConfig& config);

}  // namespace llmrec
