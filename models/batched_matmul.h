#pragma once
/// The products of attention: many small matrices (per item and head,
/// q k^T is [L, d/h] x [d/h, L]), thousands of them per step.
///
/// LibTorch's CPU bmm without MKL multiplies such a batch one matrix at a
/// time through the dispatcher (a select, an as_strided and an addmm per
/// matrix and operand), on one thread: for the item tower of bench-tiny
/// that was a third of the step, and a second intra-op thread did not
/// shorten it. `batched_matmul` calls the BLAS sgemm once per matrix on the
/// operands' own strides (a permuted or transposed view needs no copy),
/// spread over the intra-op threads, and does the same in the backward
/// pass (dA = dC B^T, dB = A^T dC, each in its input's memory layout, so
/// the gradient of a permuted view needs no copy). Each matrix is one BLAS call whatever
/// the thread count, so results do not depend on it.
///
/// Float32 CPU tensors of equal batch shape with the BLAS found in the
/// process; anything else (a GPU, another dtype, broadcasting, no sgemm_)
/// is torch::matmul. The backward pass is not itself differentiable (no
/// double backward through it).

#include <torch/types.h>

namespace llmrec {

/// a [..., M, K] x b [..., K, N] -> [..., M, N], differentiable. `layout`
/// (a permutation of the result's dimensions, outermost first) asks for the
/// result's memory in that order, e.g. {0, 2, 1, 3} for attention's
/// [N, A, L, d] context stored as [N, L, A, d], so that merging the heads
/// back is a view; it changes no value, and the torch::matmul path ignores
/// it. Throws llmrec::Error when `layout` is not such a permutation.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, at::IntArrayRef layout = {});

/// Whether batched_matmul(a, b) takes the BLAS path (for tests and benches).
bool batched_matmul_uses_blas(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace llmrec
