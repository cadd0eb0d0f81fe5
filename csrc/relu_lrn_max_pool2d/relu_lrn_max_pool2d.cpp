// alexnet_cuda::relu_lrn_max_pool2d: the op as users call it (alexnet_cuda.ops.
// relu_lrn_max_pool2d, or torch.ops.alexnet_cuda.relu_lrn_max_pool2d with every argument
// given). It checks the arguments, turns alpha into the kernels' scale, makes a 3-D
// (C, H, W) input one image and calls relu_lrn_max_pool2d_forward, whose autograd is in
// C++ (relu_lrn_max_pool2d_autograd.cpp). CompositeImplicitAutograd: torch.compile and
// torch.export trace through it to the forward op, running these checks on the fake input.
//
// Also the schemas of the three ops (ops.h) and the Meta kernels of the kernels' two:
// shapes from max-pool's output_size, layouts the kernels' (kernel_format).
#include <torch/library.h>

#include "checks.h"
#include "max_pool2d/max_pool2d.h"  // kMaxLocalArgmaxWindow, output_size
#include "ops.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"  // kernel_format

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {
namespace {

constexpr const char* kOp = "relu_lrn_max_pool2d";

void check_input(const at::Tensor& input, at::IntArrayRef kernel, int64_t lrn_groups) {
  check_floating(input, kOp);
  const auto shape = input.sym_sizes();
  TORCH_CHECK_VALUE(input.dim() == 3 || input.dim() == 4, kOp,
                    ": input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape ", python_tuple(shape));
  const c10::SymInt C = input.sym_size(-3), H = input.sym_size(-2), W = input.sym_size(-1);
  TORCH_CHECK_VALUE(C != 0 && H != 0 && W != 0, kOp, ": only the batch dimension of input may be empty, got shape ",
                    python_tuple(shape));
  TORCH_CHECK_VALUE(C % lrn_groups == 0, kOp, ": input has ", C,
                    " channels, which do not split into lrn_groups=", lrn_groups, " equal groups");
  TORCH_CHECK_VALUE(kernel[0] <= H && kernel[1] <= W, kOp, ": kernel_size=", python_tuple(kernel),
                    " is larger than the input's spatial size ", H, "x", W, " (no padding)");
  check_device(input, "input", kOp);
}

}  // namespace

void check_args(int64_t size, at::IntArrayRef kernel_size, at::IntArrayRef stride, int64_t lrn_groups) {
  TORCH_CHECK_VALUE(size > 0, kOp, ": size must be positive, got ", size);
  TORCH_CHECK_VALUE(lrn_groups >= 1, kOp, ": lrn_groups must be >= 1, got ", lrn_groups);
  for (auto [v, name] : {std::pair{kernel_size, "kernel_size"}, {stride, "stride"}}) {
    TORCH_CHECK_VALUE(v.size() == 2, kOp, ": ", name, " must be a pair of ints, got ", python_tuple(v));
    TORCH_CHECK_VALUE(v[0] > 0 && v[1] > 0, kOp, ": ", name, " must be positive, got ", name, "=", python_tuple(v));
    TORCH_CHECK_VALUE(v[0] <= kMaxInt32 && v[1] <= kMaxInt32, kOp, ": ", name, "=", python_tuple(v),
                      " is too large: the kernels take at most ", kMaxInt32);
  }
  TORCH_CHECK_VALUE(kernel_size[0] * kernel_size[1] <= alexnet_cuda::max_pool2d::kMaxLocalArgmaxWindow, kOp,
                    ": kernel_size=", python_tuple(kernel_size), " has more than ",
                    alexnet_cuda::max_pool2d::kMaxLocalArgmaxWindow, " taps; the window-local argmax is a uint8 (use ",
                    "torch.nn.functional.max_pool2d for larger windows)");
}

at::Tensor relu_lrn_max_pool2d(const at::Tensor& input, int64_t size, double alpha, double beta, double k,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, int64_t lrn_groups,
                               bool paper_alpha) {
  check_args(size, kernel_size, stride, lrn_groups);
  check_input(input, kernel_size, lrn_groups);
  const double scale = paper_alpha ? alpha : alpha / static_cast<double>(size);
  if (input.dim() == 4) return std::get<0>(call<Forward>(input, size, scale, beta, k, kernel_size, stride, lrn_groups));
  return std::get<0>(call<Forward>(input.unsqueeze(0), size, scale, beta, k, kernel_size, stride, lrn_groups))
      .squeeze(0);
}

namespace {

std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& input, int64_t, double, double, double,
                                                at::IntArrayRef kernel_size, at::IntArrayRef stride, int64_t) {
  TORCH_CHECK(input.dim() == 4, "alexnet_cuda::relu_lrn_max_pool2d_forward: expected a 4-D input");
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2,
              "alexnet_cuda::relu_lrn_max_pool2d_forward: kernel_size and stride must have 2 elements");
  const auto size = input.sym_sizes();
  const std::vector<c10::SymInt> shape{size[0], size[1],
                                       max_pool2d::output_size(size[2], kernel_size[0], 0, stride[0], 1, false),
                                       max_pool2d::output_size(size[3], kernel_size[1], 0, stride[1], 1, false)};
  const auto options = input.options().memory_format(kernel_format(input));
  return {at::empty_symint(shape, options), at::empty_symint(shape, options.dtype(at::kByte))};
}

at::Tensor backward_meta(const at::Tensor&, const at::Tensor&, const at::Tensor& input, int64_t, double, double, double,
                         at::IntArrayRef, at::IntArrayRef, int64_t) {
  // The kernels make the input dense in its suggested format and give dx its strides.
  return at::empty_like(input.contiguous(kernel_format(input)));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(alexnet_cuda, m) { define<ReluLrnMaxPool2d, Forward, Backward>(m); }

TORCH_LIBRARY_IMPL(alexnet_cuda, CompositeImplicitAutograd, m) {
  impl_symbolic<ReluLrnMaxPool2d>(m, &relu_lrn_max_pool2d);
}

TORCH_LIBRARY_IMPL(alexnet_cuda, Meta, m) { impl_symbolic<Forward, Backward>(m, &forward_meta, &backward_meta); }

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
