# Build-wide settings. Nothing here adds global compile definitions: backend
# switches are set on the targets that need them (see distributed/).

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
# No -fPIC/-fPIE flags of our own: everything compiles with the toolchain's
# default (PIE on Debian), so one precompiled header fits libraries and
# executables alike.
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)

option(LLMREC_BUILD_TESTS "Build the GoogleTest suites" ON)
option(LLMREC_FUZZ "Build only the libFuzzer targets of fuzz/ (clang; make fuzz)" OFF)
set(LLMREC_CUDA "AUTO" CACHE STRING "Build the CUDA path: AUTO (if LibTorch has CUDA), ON, OFF")
set(LLMREC_NCCL "AUTO" CACHE STRING "Check the NCCL backend against nccl.h/cuda.h: AUTO (if found), ON, OFF")
set_property(CACHE LLMREC_CUDA PROPERTY STRINGS AUTO ON OFF)
set_property(CACHE LLMREC_NCCL PROPERTY STRINGS AUTO ON OFF)

# ccache, when present. Precompiled headers need the sloppiness below to hit;
# BASEDIR/NOHASHDIR let a fresh clone in another folder (CI) hit the cache.
find_program(LLMREC_CCACHE_PROGRAM ccache)
if(LLMREC_CCACHE_PROGRAM)
  set(LLMREC_CCACHE ON)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_CPP2=true CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} CCACHE_NOHASHDIR=true ${LLMREC_CCACHE_PROGRAM})
else()
  set(LLMREC_CCACHE OFF)
endif()

# Our own code is -Wall -Wextra clean; third-party headers come in as SYSTEM.
set(LLMREC_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# Sanitizers: LLMREC_SANITIZE=address,undefined builds every target of this
# build directory with -fsanitize=... (`make test-asan` uses build-asan/;
# docs/reliability.md). The tests then run with the options and
# suppression files of tools/ (LLMREC_SANITIZER_ENV, see llmrec_add_test).
set(LLMREC_SANITIZE "" CACHE STRING "Build with -fsanitize=<list>, e.g. address,undefined (make test-asan)")
set(LLMREC_SANITIZER_ENV "")
set(LLMREC_SANITIZER_MPI_ENV "")
if(LLMREC_SANITIZE)
  add_compile_options(-fsanitize=${LLMREC_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${LLMREC_SANITIZE})
  set(_asan "detect_leaks=1:check_initialization_order=1")
  set(_others "LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tools/lsan.supp:print_suppressions=0"
              "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=${PROJECT_SOURCE_DIR}/tools/ubsan.supp")
  set(LLMREC_SANITIZER_ENV "ASAN_OPTIONS=${_asan}" ${_others})
  # Under mpirun: Open MPI's plugins have no frame pointers, so the fast
  # unwinder stops inside them and their leaks could not be told from ours
  # by tools/lsan.supp; the slow unwinder records whole stacks (~3x slower).
  set(LLMREC_SANITIZER_MPI_ENV "ASAN_OPTIONS=${_asan}:fast_unwind_on_malloc=0" ${_others})
endif()
