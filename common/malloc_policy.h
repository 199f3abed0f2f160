#pragma once
/// What the process's allocator does with large freed blocks (`run.malloc`,
/// docs/performance.md "Memory reuse").
///
/// A training step allocates and frees the same large activations every
/// step (on Games, 138 MB for the word pieces of the whole catalogue).
/// glibc serves every block above its mmap threshold (at most 32 MiB) with
/// mmap and hands it back with munmap when it is freed, so each step faults
/// every page in again and the kernel zeroes it: a third of the step was
/// spent in the kernel. `keep` turns both off (no mmap for large blocks, no
/// trimming of the heap's top): freed memory stays in the heap and the next
/// step reuses it. The peak resident size is the same; the memory goes back
/// to the system when the process ends. `system` keeps glibc's defaults.
///
///   spdlog::info("malloc: {}", set_malloc_policy("keep"));

#include <string>

namespace llmrec {

/// Applies `policy` ("keep" or "system"; Error otherwise) and says what was
/// done, for the log. Without glibc, or where the environment already tunes
/// glibc's malloc (GLIBC_TUNABLES naming glibc.malloc, MALLOC_MMAP_MAX_,
/// MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_), it changes nothing and
/// says so.
std::string set_malloc_policy(const std::string& policy);

}  // namespace llmrec
