# Finds every dependency and wraps each in one target our libraries link.

find_package(Threads REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json 3.9 REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT TARGET hdf5::hdf5)
  add_library(hdf5::hdf5 INTERFACE IMPORTED)
  target_include_directories(hdf5::hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
  target_link_libraries(hdf5::hdf5 INTERFACE ${HDF5_C_LIBRARIES} ${HDF5_LIBRARIES})
  target_compile_definitions(hdf5::hdf5 INTERFACE ${HDF5_DEFINITIONS})
endif()
find_package(CLI11 QUIET CONFIG)
if(NOT CLI11_FOUND)
  find_path(LLMREC_CLI11_INCLUDE CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 SYSTEM INTERFACE ${LLMREC_CLI11_INCLUDE})
endif()

# FAISS (Debian libfaiss-dev, a static library over BLAS and OpenMP):
# serving's approximate search (serving/ann_index.h).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(faiss REQUIRED)

# LibTorch: Debian's libtorch-dev (CPU) or an official CUDA LibTorch found
# through CMAKE_PREFIX_PATH (see docs/building.md).
find_package(Torch REQUIRED)
add_library(llmrec_torch INTERFACE)
target_include_directories(llmrec_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_link_libraries(llmrec_torch INTERFACE ${TORCH_LIBRARIES})
if(TORCH_CXX_FLAGS)
  separate_arguments(_llmrec_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(llmrec_torch INTERFACE ${_llmrec_torch_flags})
endif()

# CUDA: AUTO means "if this LibTorch was built with CUDA".
set(_llmrec_torch_has_cuda OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES OR CUDA_FOUND)
  set(_llmrec_torch_has_cuda ON)
endif()
if(LLMREC_CUDA STREQUAL "AUTO")
  set(LLMREC_CUDA_ENABLED ${_llmrec_torch_has_cuda})
elseif(LLMREC_CUDA)
  if(NOT _llmrec_torch_has_cuda)
    message(FATAL_ERROR "LLMREC_CUDA=ON but the LibTorch at ${TORCH_INSTALL_PREFIX} has no CUDA. "
                        "Point CMAKE_PREFIX_PATH at a CUDA LibTorch (docs/building.md).")
  endif()
  set(LLMREC_CUDA_ENABLED ON)
else()
  set(LLMREC_CUDA_ENABLED OFF)
endif()

# NCCL headers: the NCCL backend itself is always built (it loads libnccl
# and the CUDA driver at run time, distributed/nccl_api.h). Where nccl.h and
# cuda.h are found, distributed/nccl_api_check.cpp also checks llmrec's
# declarations against them at compile time. AUTO: when found; ON: required.
set(LLMREC_NCCL_ENABLED OFF)
if(NOT LLMREC_NCCL STREQUAL "OFF")
  find_path(LLMREC_NCCL_INCLUDE_DIR nccl.h HINTS ENV NCCL_HOME ENV CUDA_HOME PATH_SUFFIXES include)
  find_path(LLMREC_CUDA_INCLUDE_DIR cuda.h HINTS ENV CUDA_HOME PATHS /usr/local/cuda PATH_SUFFIXES include)
  if(LLMREC_NCCL_INCLUDE_DIR AND LLMREC_CUDA_INCLUDE_DIR)
    set(LLMREC_NCCL_ENABLED ON)
  endif()
endif()
if(LLMREC_NCCL STREQUAL "ON" AND NOT LLMREC_NCCL_ENABLED)
  message(FATAL_ERROR "LLMREC_NCCL=ON but nccl.h or cuda.h was not found (set NCCL_HOME or CUDA_HOME).")
endif()

if(LLMREC_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# cpp-httplib (Debian's libcpp-httplib-dev: a compiled library plus
# httplib.h) for `llmrec serve`. Its pkg-config flags must be used as they
# are: they set the CPPHTTPLIB_*_SUPPORT switches the library was built
# with, which change the layout of its classes.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LLMREC_HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
add_library(llmrec_httplib INTERFACE)
target_link_libraries(llmrec_httplib INTERFACE PkgConfig::LLMREC_HTTPLIB Threads::Threads)
