#pragma once
/// How OpenMP's idle threads wait (docs/performance.md "Small products and idle threads").
///
/// Every LibTorch operator large enough to split opens an OpenMP parallel
/// region. Between regions libgomp's default lets a worker sleep after a
/// short spin, so the next region first wakes it (a futex round trip): a
/// training step of bench-tiny-seq opens thousands of regions, and on two
/// threads this cost 15-20% of its examples/s. OMP_WAIT_POLICY=active keeps
/// the workers spinning instead, which is right for a process that owns
/// its cores. libgomp reads the variable once, when it is loaded, so the
/// only way to change it is to start again: a compute command that will run
/// several threads in a single process (not under an MPI launcher, whose
/// ranks may share cores; launch/mpirun.sh sets it when it binds ranks to
/// their own cores) re-executes itself once with OMP_WAIT_POLICY=active. A
/// policy the user set is kept.

#include <string>

namespace llmrec {

/// Re-executes this process with OMP_WAIT_POLICY=active when `threads` > 1
/// on the CPU, outside an MPI launcher, and no policy is set; returns (what
/// to log: the policy in force and why) when it does not.
std::string openmp_wait_policy(int threads, bool cpu);

}  // namespace llmrec
