// run.malloc (common/malloc_policy.h): `keep` serves large blocks from the
// heap and keeps them there once freed; an environment that tunes malloc
// itself is left alone; `system` changes nothing. Not under ASan, which
// brings its own allocator.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common/error.h"
#include "common/malloc_policy.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;

#if defined(__GLIBC__)
constexpr std::size_t kBig = std::size_t{64} << 20;  // above glibc's largest mmap threshold (32 MiB)

// Through a volatile pointer, so that no compiler elides the pair.
void* (*volatile g_alloc)(std::size_t) = std::malloc;
void (*volatile g_free)(void*) = std::free;

/// Bytes in mmapped blocks while a kBig block is live.
std::size_t mmapped_while_big_block_lives() {
  char* p = static_cast<char*>(g_alloc(kBig));
  static_cast<volatile char*>(p)[kBig - 1] = 1;
  const std::size_t mmapped = mallinfo2().hblkhd;
  g_free(p);
  return mmapped;
}

// Runs first: the other tests change this process's malloc for good.
TEST(MallocPolicy, AnEnvironmentThatTunesMallocIsLeftAlone) {
  ::setenv("MALLOC_TRIM_THRESHOLD_", "131072", 1);
  EXPECT_THAT(set_malloc_policy("keep"), HasSubstr("left as MALLOC_TRIM_THRESHOLD_"));
  ::unsetenv("MALLOC_TRIM_THRESHOLD_");
  ::setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=4", 1);
  EXPECT_THAT(set_malloc_policy("keep"), HasSubstr("left as GLIBC_TUNABLES"));
  ::unsetenv("GLIBC_TUNABLES");
  EXPECT_THAT(set_malloc_policy("system"), HasSubstr("defaults"));
  EXPECT_GE(mmapped_while_big_block_lives(), kBig) << "glibc's default mmaps a 64 MiB block";
}

TEST(MallocPolicy, KeepServesLargeBlocksFromTheHeapAndKeepsThem) {
  EXPECT_THAT(set_malloc_policy("keep"), HasSubstr("kept for reuse"));
  const std::size_t before = mallinfo2().hblkhd;
  EXPECT_EQ(mmapped_while_big_block_lives(), before) << "the 64 MiB block was mmapped";
  EXPECT_GE(mallinfo2().arena, kBig) << "the heap gave the freed block back";
}
#endif

TEST(MallocPolicy, OnlyKeepAndSystem) {
  EXPECT_THROW(set_malloc_policy("jemalloc"), Error);
}

}  // namespace
}  // namespace llmrec
