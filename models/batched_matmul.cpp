#include "models/batched_matmul.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <dlfcn.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "common/error.h"

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

/// Whether each matrix of `c` is row-major (stride (ld, 1)) or
/// column-major as it stands: then BLAS can write it in place.
bool blas_writable(const at::Tensor& c) {
  const std::int64_t rows = c.size(-2), cols = c.size(-1), rs = c.stride(-2), cs = c.stride(-1);
  return c.is_non_overlapping_and_dense() &&
         (((cs == 1 || cols == 1) && rs >= std::max<std::int64_t>(1, cols)) ||
          ((rs == 1 || rows == 1) && cs >= std::max<std::int64_t>(1, rows)));
}

/// c = a b for every matrix of the batch (no autograd); c is blas_writable.
void blas_bmm_into(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  const std::int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  if (c.numel() == 0) return;
  if (K == 0) {
    c.zero_();
    return;
  }
  const Operand C = operand_of(c);
  // A column-major C is the row-major C^T = B^T A^T.
  if (C.column_major) return blas_bmm_into(b.transpose(-1, -2), a.transpose(-1, -2), c.transpose(-1, -2));
  const Operand A = operand_of(a), B = operand_of(b);
  const std::int64_t count = c.numel() / (M * N);
  float* out = c.data_ptr<float>();
  SgemmFn sgemm = blas_sgemm();
  // BLAS is column-major: the row-major C [M, N] is the column-major C^T
  // [N, M] = B^T A^T. A row-major operand read column-major is already its
  // transpose ('N'); a column-major one needs 'T'.
  const char tb = B.column_major ? 'T' : 'N', ta = A.column_major ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int ldb = static_cast<int>(B.ld), lda = static_cast<int>(A.ld), ldc = static_cast<int>(C.ld);
  const float one = 1.0F, zero = 0.0F;
  // About 256k multiply-adds per task: enough to pay for the hand-off.
  const std::int64_t grain =
      std::max<std::int64_t>(1, (std::int64_t{1} << 18) / std::max<std::int64_t>(1, M * N * K));
  at::parallel_for(0, count, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const auto s = static_cast<std::size_t>(i);
      sgemm(&tb, &ta, &m, &n, &k, &one, B.data + B.offsets[s], &ldb, A.data + A.offsets[s], &lda, &zero,
            out + C.offsets[s], &ldc);
    }
  });
}

/// a b with the strides `strides` where BLAS can write them (dense, each
/// matrix row- or column-major), else contiguous.
at::Tensor blas_bmm(const at::Tensor& a, const at::Tensor& b, at::IntArrayRef strides) {
  std::vector<std::int64_t> shape = a.sizes().vec();
  shape.back() = b.size(-1);
  at::Tensor c;
  if (strides.size() == shape.size()) c = at::empty_strided(shape, strides, a.options());
  if (!c.defined() || !blas_writable(c)) c = at::empty(shape, a.options());
  blas_bmm_into(a, b, c);
  return c;
}

/// The strides a tensor of `sizes` has when its dimensions lie in memory in
/// the order `layout` (outermost first; empty: contiguous, empty strides).
std::vector<std::int64_t> layout_strides(at::IntArrayRef sizes, at::IntArrayRef layout) {
  if (layout.empty()) return {};
  const std::size_t dims = sizes.size();
  LLMREC_CHECK(layout.size() == dims, "batched_matmul: layout has {} dimensions, the result {}",
               layout.size(), dims);
  std::vector<std::int64_t> strides(dims, -1);
  std::int64_t step = 1;
  for (std::size_t i = dims; i-- > 0;) {
    const std::int64_t d = layout[i];
    LLMREC_CHECK(d >= 0 && d < static_cast<std::int64_t>(dims) && strides[static_cast<std::size_t>(d)] < 0,
                 "batched_matmul: layout must be a permutation of 0..{}, got [{}]", dims - 1,
                 fmt::join(layout, ", "));
    strides[static_cast<std::size_t>(d)] = step;
    step *= std::max<std::int64_t>(1, sizes[static_cast<std::size_t>(d)]);
  }
  return strides;
}

/// The strides of x where BLAS may write its layout (dense), else empty.
std::vector<std::int64_t> dense_strides(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x.strides().vec() : std::vector<std::int64_t>{};
}

struct BatchedMatmul : public torch::autograd::Function<BatchedMatmul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b, const std::vector<std::int64_t>& strides) {
    ctx->save_for_backward({a, b});
    return blas_bmm(a, b, strides);
  }

  /// Each gradient in the layout of its input: the gradient of a permuted
  /// view (attention's heads) needs no copy on its way back.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& a = saved[0];
    const torch::Tensor& b = saved[1];
    const torch::Tensor& g = grads[0];
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) ga = blas_bmm(g, b.transpose(-1, -2), dense_strides(a));
    if (ctx->needs_input_grad(1)) gb = blas_bmm(a.transpose(-1, -2), g, dense_strides(b));
    return {ga, gb, torch::Tensor()};
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

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, at::IntArrayRef layout) {
  std::vector<std::int64_t> shape = a.sizes().vec();
  if (!shape.empty() && b.dim() > 0) shape.back() = b.size(-1);
  const std::vector<std::int64_t> strides = layout_strides(shape, layout);  // checks it
  if (!batched_matmul_uses_blas(a, b)) return torch::matmul(a, b);
  return BatchedMatmul::apply(a, b, strides);
}

}  // namespace llmrec
