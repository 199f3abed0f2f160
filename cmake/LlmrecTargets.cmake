# Helpers that give every llmrec target the same shape.

# Precompiled ATen header, built once and reused by every target that uses
# tensors (the header costs ~5 s per translation unit otherwise).
add_library(llmrec_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(llmrec_pch PUBLIC llmrec_torch)
target_compile_options(llmrec_pch PRIVATE ${LLMREC_WARNINGS})
target_precompile_headers(llmrec_pch PRIVATE <ATen/ATen.h> <vector> <string> <memory>)

# The same for code that uses the LibTorch C++ frontend (torch::nn modules,
# autograd, optimizers): <torch/torch.h> costs ~15-40 s per translation unit.
add_library(llmrec_pch_nn STATIC ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(llmrec_pch_nn PUBLIC llmrec_torch)
target_compile_options(llmrec_pch_nn PRIVATE ${LLMREC_WARNINGS})
target_precompile_headers(llmrec_pch_nn PRIVATE <torch/torch.h> <vector> <string> <memory>)

# llmrec_add_library(<folder> SOURCES ... DEPS ... [TORCH | NN])
#   TORCH: links LibTorch and reuses the <ATen/ATen.h> precompiled header;
#   NN: the same with the <torch/torch.h> precompiled header.
#   Creates the static library llmrec_<folder>; headers are included as
#   "<folder>/<file>.h" from the project root.
function(llmrec_add_library folder)
  cmake_parse_arguments(ARG "TORCH;NN" "" "SOURCES;DEPS" ${ARGN})
  set(target llmrec_${folder})
  add_library(${target} STATIC ${ARG_SOURCES})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${target} PRIVATE ${LLMREC_WARNINGS})
  target_link_libraries(${target} PUBLIC ${ARG_DEPS})
  if(ARG_TORCH)
    target_link_libraries(${target} PUBLIC llmrec_torch)
    target_precompile_headers(${target} REUSE_FROM llmrec_pch)
  elseif(ARG_NN)
    target_link_libraries(${target} PUBLIC llmrec_torch)
    target_precompile_headers(${target} REUSE_FROM llmrec_pch_nn)
  endif()
endfunction()

# A test that needs ../shared and runs without it prints this and is reported
# as Skipped (tests/shared_data.h; the shell tests print it too).
set(LLMREC_SKIP_NO_SHARED "SKIP \\(no shared reference data\\)")

# Tests labelled `asan` (LABELS asan) are the subset `make test-asan` builds
# and runs under the sanitizers (docs/reliability.md); this target builds
# just them and what they link.
add_custom_target(llmrec_asan_tests)

# llmrec_add_test(<name> SOURCES ... DEPS ... [TORCH | NN] [NP n...] [IN_PROCESS] [LABELS ...])
#   One GoogleTest executable. Without NP it runs as one process; with NP it
#   is registered once per world size under mpirun (one OpenMP thread each);
#   IN_PROCESS adds a run without mpirun, where on_every_rank runs its ranks
#   as threads of one process (tests/mpi_test_main.h).
function(llmrec_add_test name)
  cmake_parse_arguments(ARG "TORCH;NN;IN_PROCESS" "TIMEOUT" "SOURCES;DEPS;NP;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${LLMREC_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock)
  if(ARG_TORCH)
    target_precompile_headers(${name} REUSE_FROM llmrec_pch)
  elseif(ARG_NN)
    target_precompile_headers(${name} REUSE_FROM llmrec_pch_nn)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if("asan" IN_LIST ARG_LABELS)
    add_dependencies(llmrec_asan_tests ${name})
  endif()
  set(env "LLMREC_SHARED_DIR=${LLMREC_SHARED_DIR};LLMREC_SOURCE_DIR=${PROJECT_SOURCE_DIR};OMP_NUM_THREADS=1")
  if(NOT ARG_NP OR ARG_IN_PROCESS)  # IN_PROCESS: also run without mpirun (ranks as threads)
    list(APPEND env ${LLMREC_SANITIZER_ENV})
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} ENVIRONMENT "${env}" LABELS "unit;${ARG_LABELS}"
                         SKIP_REGULAR_EXPRESSION "${LLMREC_SKIP_NO_SHARED}")
  endif()
  if(ARG_NP)
    llmrec_add_test_run(${name} NAME ${name} NP ${ARG_NP} TIMEOUT ${ARG_TIMEOUT} LABELS ${ARG_LABELS})
  endif()
endfunction()

# llmrec_add_test_run(<target> NAME <test name> NP n... [ENV VAR=value ...] [LABELS ...] [TIMEOUT s])
#   Registers a multi-rank test executable under mpirun, once per world size
#   (llmrec_add_test's NP; also a second registration of the same executable
#   under another name with extra environment, e.g. another backend).
function(llmrec_add_test_run target)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "NP;ENV;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set(env "LLMREC_SHARED_DIR=${LLMREC_SHARED_DIR};LLMREC_SOURCE_DIR=${PROJECT_SOURCE_DIR};OMP_NUM_THREADS=1")
  list(APPEND env ${LLMREC_SANITIZER_MPI_ENV} ${ARG_ENV})
  foreach(np IN LISTS ARG_NP)
    add_test(NAME ${ARG_NAME}_np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe
                     -np ${np} -x OMP_NUM_THREADS=1 $<TARGET_FILE:${target}>)
    set_tests_properties(${ARG_NAME}_np${np} PROPERTIES TIMEOUT ${ARG_TIMEOUT} ENVIRONMENT "${env}"
                         LABELS "mpi;${ARG_LABELS}" RUN_SERIAL ON PROCESSORS ${np}
                         SKIP_REGULAR_EXPRESSION "${LLMREC_SKIP_NO_SHARED}")
  endforeach()
endfunction()
