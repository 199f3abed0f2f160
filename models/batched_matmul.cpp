#include "models/batched_matmul.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

namespace llmrec {
namespace {

// The Fortran BLAS entry point that libtorch itself links (OpenBLAS here).
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);

SgemmFn blas_sgemm() {
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}

bool fits_int(std::int64_t v) {
  return v >= 0 && v <= INT_MAX;
}

/// One operand as BLAS sees it: the [rows, cols] matrices of a batch, each
/// stored row-major (stride (ld, 1)) or column-major (stride (1, ld)).
struct Operand {
  at::Tensor t;  ///< keeps the storage alive (a contiguous copy if needed)
  const float* data = nullptr;
  bool column_major = false;
  std::int64_t ld = 0;
  std::vector<std::int64_t> offsets;  ///< of each matrix of the batch, in elements
};

Operand operand_of(const at::Tensor& x) {
  const std::int64_t dims = x.dim(), rows = x.size(-2), cols = x.size(-1);
  const std::int64_t rs = x.stride(-2), cs = x.stride(-1);
  Operand o;
  if ((cs == 1 || cols == 1) && rs >= std::max<std::int64_t>(1, cols)) {
    o.t = x;
    o.ld = rs;
  } else if ((rs == 1 || rows == 1) && cs >= std::max<std::int64_t>(1, rows)) {
    o.t = x;
    o.ld = cs;
    o.column_major = true;
  } else {
    o.t = x.contiguous();
    o.ld = std::max<std::int64_t>(1, cols);
  }
  o.data = o.t.data_ptr<float>();
  // Offsets of the batch's matrices: the batch dimensions in row-major order.
  std::int64_t count = 1;
  for (std::int64_t d = 0; d < dims - 2; ++d) count *= o.t.size(d);
  o.offsets.assign(static_cast<std::size_t>(count), 0);
  std::int64_t block = count;
  for (std::int64_t d = 0; d < dims - 2; ++d) {
    const std::int64_t size = o.t.size(d), stride = o.t.stride(d);
    block /= size;
    for (std::int64_t i = 0; i < count; ++i)
      o.offsets[static_cast<std::size_t>(i)] += (i / block) % size * stride;
  }
  return o;
}

/// C = A B for every matrix of the batch (no autograd).
at::Tensor blas_bmm(const at::Tensor& a, const at::Tensor& b) {
  std::vector<std::int64_t> shape = a.sizes().vec();
  const std::int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  shape.back() = N;
  at::Tensor c = at::empty(shape, a.options().memory_format(at::MemoryFormat::Contiguous));
  if (c.numel() == 0) return c;
  if (K == 0) return c.zero_();
  const Operand A = operand_of(a), B = operand_of(b);
  const std::int64_t count = c.numel() / (M * N);
  float* out = c.data_ptr<float>();
  SgemmFn sgemm = blas_sgemm();
  // BLAS is column-major: the row-major C [M, N] is the column-major C^T
  // [N, M] = B^T A^T. A row-major operand read column-major is already its
  // transpose ('N'); a column-major one needs 'T'.
  const char tb = B.column_major ? 'T' : 'N', ta = A.column_major ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int ldb = static_cast<int>(B.ld), lda = static_cast<int>(A.ld), ldc = static_cast<int>(N);
  const float one = 1.0F, zero = 0.0F;
  // About 256k multiply-adds per task: enough to pay for the hand-off.
  const std::int64_t grain =
      std::max<std::int64_t>(1, (std::int64_t{1} << 18) / std::max<std::int64_t>(1, M * N * K));
  at::parallel_for(0, count, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const auto s = static_cast<std::size_t>(i);
      sgemm(&tb, &ta, &m, &n, &k, &one, B.data + B.offsets[s], &ldb, A.data + A.offsets[s], &lda, &zero,
            out + i * M * N, &ldc);
    }
  });
  return c;
}

struct BatchedMatmul : public torch::autograd::Function<BatchedMatmul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return blas_bmm(a, b);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& a = saved[0];
    const torch::Tensor& b = saved[1];
    const torch::Tensor& g = grads[0];
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) ga = blas_bmm(g, b.transpose(-1, -2));
    if (ctx->needs_input_grad(1)) gb = blas_bmm(a.transpose(-1, -2), g);
    return {ga, gb};
  }
};

}  // namespace

bool batched_matmul_uses_blas(const torch::Tensor& a, const torch::Tensor& b) {
  if (blas_sgemm() == nullptr || !a.device().is_cpu() || !b.device().is_cpu()) return false;
  if (a.scalar_type() != torch::kFloat32 || b.scalar_type() != torch::kFloat32) return false;
  if (at::autocast::is_cpu_enabled()) return false;  // matmul would run in the autocast dtype
  if (a.dim() < 3 || a.dim() != b.dim() || a.size(-1) != b.size(-2)) return false;
  if (a.sizes().slice(0, a.dim() - 2) != b.sizes().slice(0, b.dim() - 2)) return false;
  for (const torch::Tensor& t : {a, b}) {
    for (std::int64_t d = 0; d < t.dim(); ++d) {
      if (!fits_int(t.size(d)) || !fits_int(t.stride(d))) return false;
    }
  }
  return true;
}

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b) {
  if (!batched_matmul_uses_blas(a, b)) return torch::matmul(a, b);
  return BatchedMatmul::apply(a, b);
}

}  // namespace llmrec
