#pragma once
/// Build facts of this binary, for `llmrec --version`, logs and benchmark lines.

#include <string>

namespace llmrec {

std::string version_string();        ///< "0.1.0"
std::string version_git_revision();  ///< short hash, "+dirty" when built from a changed tree

/// The BLAS that matrix products run on in this process, e.g.
/// "OpenBLAS 0.3.21 (openmp) /usr/lib/.../openblas-openmp/libblas.so.3", or
/// "reference BLAS (slow: apt-get install libopenblas0-openmp) ...".
std::string blas_describe();
/// True when blas_describe() found the unoptimised reference BLAS.
bool blas_is_reference();

}  // namespace llmrec
