#include "common/malloc_policy.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common/error.h"

namespace llmrec {

namespace {

/// The variable of the environment that already tunes glibc's malloc, or nullptr.
const char* malloc_tuned_by_environment() {
  for (const char* name : {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"}) {
    if (std::getenv(name) != nullptr) return name;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return "GLIBC_TUNABLES";
  return nullptr;
}

}  // namespace

std::string set_malloc_policy(const std::string& policy) {
  LLMREC_CHECK(policy == "keep" || policy == "system", "malloc policy must be keep or system, got '{}'",
               policy);
  if (policy == "system") return "the system's defaults (run.malloc: system)";
#if defined(__GLIBC__)
  if (const char* name = malloc_tuned_by_environment()) {
    return std::string("left as ") + name + " sets it (run.malloc: keep not applied)";
  }
  // Both calls only fail for values outside glibc's range; these are in it.
  const bool ok =
      mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  return ok ? "freed blocks kept for reuse (no mmap for large blocks, no trimming; run.malloc: keep)"
            : "glibc refused the settings; the system's defaults stay";
#else
  return "the system's defaults (run.malloc: keep needs glibc)";
#endif
}

}  // namespace llmrec
