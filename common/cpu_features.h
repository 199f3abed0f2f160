#pragma once
/// What the CPU running the process can do, for kernels written twice: with
/// AVX2 intrinsics (functions marked __attribute__((target("avx2")))) and
/// in plain C++ for other CPUs.
///
///   (cpu_has_avx2() ? dots_avx2 : dots_base)(...);

namespace llmrec {

/// Whether the CPU has AVX2 (asked once).
inline bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

}  // namespace llmrec
