// alexnet_cuda::local_response_norm: the op as users call it (alexnet_cuda.ops.
// local_response_norm, or torch.ops.alexnet_cuda.local_response_norm with every argument
// given). It checks the arguments, turns alpha into the kernels' scale (alpha / size,
// PyTorch's convention, or alpha itself: the paper's text) and calls lrn_forward, whose
// autograd is in C++ (lrn_autograd.cpp). CompositeImplicitAutograd: torch.compile and
// torch.export trace through it to lrn_forward, running these checks on the fake input.
#include <torch/library.h>

#include "checks.h"
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

at::Tensor local_response_norm(const at::Tensor& input, int64_t size, double alpha, double beta,
                               double k, bool paper_alpha) {
  check(input, size);
  static auto forward = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("alexnet_cuda::lrn_forward", "")
                            .typed<at::Tensor(const at::Tensor&, int64_t, double, double, double)>();
  const double scale = paper_alpha ? alpha : alpha / static_cast<double>(size);
  return forward.call(input, size, scale, beta, k);
}

TORCH_LIBRARY_FRAGMENT(alexnet_cuda, m) {
  m.def("local_response_norm(Tensor input, int size, float alpha, float beta, float k, "
        "bool paper_alpha) -> Tensor");
}

TORCH_LIBRARY_IMPL(alexnet_cuda, CompositeImplicitAutograd, m) {
  m.impl("local_response_norm", &local_response_norm);
}

}  // namespace lrn
}  // namespace alexnet_cuda
