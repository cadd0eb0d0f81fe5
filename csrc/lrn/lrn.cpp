// alexnet_cuda::local_response_norm: the op as users call it (alexnet_cuda.ops.
// local_response_norm, or torch.ops.alexnet_cuda.local_response_norm with every argument
// given). It checks the arguments, turns alpha into the kernels' scale (alpha / size,
// PyTorch's convention, or alpha itself: the paper's text) and calls lrn_forward, whose
// autograd is in C++ (lrn_autograd.cpp). CompositeImplicitAutograd: torch.compile and
// torch.export trace through it to lrn_forward, running these checks on the fake input.
//
// Also the schemas of the three LRN ops (ops.h) and the Meta kernels of the kernels' two:
// their output has the layout the kernels give it (lrn.h's kernel_layout).
#include <torch/library.h>

#include "checks.h"
#include "lrn/lrn.h"
#include "ops.h"

namespace alexnet_cuda {
namespace lrn {
namespace {

constexpr const char* kOp = "local_response_norm";

void check(const at::Tensor& input, int64_t size) {
  check_floating(input, kOp);
  TORCH_CHECK_VALUE(input.dim() >= 3, kOp, ": Expected 3D or higher dimensionality input (N, C, *), got ",
                    "input of shape ", python_tuple(input.sym_sizes()), " (", input.dim(), " dimensions)");
  TORCH_CHECK_VALUE(size > 0, kOp, ": size must be positive, got ", size);
  // The kernels index channels with 32-bit ints.
  TORCH_CHECK_VALUE(input.sym_size(1) < (int64_t(1) << 30), kOp, ": input has ", input.sym_size(1),
                    " channels; at most 2^30 - 1 are supported");
  check_device(input, "input", kOp);
}

}  // namespace

at::Tensor local_response_norm(const at::Tensor& input, int64_t size, double alpha, double beta, double k,
                               bool paper_alpha) {
  check(input, size);
  const double scale = paper_alpha ? alpha : alpha / static_cast<double>(size);
  return call<Forward>(input, size, scale, beta, k);
}

namespace {

at::Tensor forward_meta(const at::Tensor& input, int64_t, double, double, double) {
  return at::empty_like(kernel_layout(input));
}

at::Tensor backward_meta(const at::Tensor&, const at::Tensor& input, int64_t, double, double, double) {
  return at::empty_like(kernel_layout(input));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(alexnet_cuda, m) { define<LocalResponseNorm, Forward, Backward>(m); }

TORCH_LIBRARY_IMPL(alexnet_cuda, CompositeImplicitAutograd, m) {
  impl_symbolic<LocalResponseNorm>(m, &local_response_norm);
}

TORCH_LIBRARY_IMPL(alexnet_cuda, Meta, m) { impl_symbolic<Forward, Backward>(m, &forward_meta, &backward_meta); }

}  // namespace lrn
}  // namespace alexnet_cuda
