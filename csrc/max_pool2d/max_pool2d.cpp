// alexnet_cuda::max_pool2d: the op as users call it (alexnet_cuda.ops.max_pool2d, or
// torch.ops.alexnet_cuda.max_pool2d with every argument given). It checks the arguments
// with PyTorch's conditions (aten/src/ATen/native/Pool.h, DilatedMaxPool2d.cpp), makes a
// 3-D (C, H, W) input one image, and calls max_pool2d_forward, whose autograd is in C++
// (max_pool2d_autograd.cpp). CompositeImplicitAutograd: torch.compile and torch.export
// trace through it to max_pool2d_forward, running these checks on the fake input.
//
// Also the schemas of the three max-pool ops (max_pool2d.h) and the Meta kernels of the kernels'
// two, which torch.compile, torch.export and opcheck run on fake tensors: the shapes come
// from the output_size that the checks and the kernels use (max_pool2d.h).
#include <torch/library.h>

#include "checks.h"
#include "max_pool2d/max_pool2d.h"
#include "ops.h"

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

constexpr const char* kOp = "max_pool2d";

void check_input(const at::Tensor& input) {
  const auto shape = input.sym_sizes();
  const bool ok = (input.dim() == 3 && shape[0] != 0 && shape[1] != 0 && shape[2] != 0) ||
                  (input.dim() == 4 && shape[1] != 0 && shape[2] != 0 && shape[3] != 0);
  TORCH_CHECK_VALUE(ok, kOp, ": input must be 3-D (C, H, W) or 4-D (N, C, H, W) with only N allowed to be ",
                    "0, got shape ", python_tuple(shape));
  const auto dtype = input.scalar_type();
  const bool cuda = input.device().type() == c10::DeviceType::CUDA;
  // PyTorch: CPU pools every real dtype but bool; CUDA floating point only.
  TORCH_CHECK_TYPE(dtype != at::kBool && !at::isComplexType(dtype) && !(cuda && !at::isFloatingType(dtype)), kOp,
                   ": input dtype ", python_dtype(dtype), " is not supported on ",
                   cuda ? "CUDA" : c10::DeviceTypeName(input.device().type(), /*lower_case=*/true));
  check_device(input, "input", kOp);
}

void check_window(at::IntArrayRef k, at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d) {
  const auto pair = [](at::IntArrayRef v) { return python_tuple(v); };
  TORCH_CHECK_VALUE(k[0] > 0 && k[1] > 0, kOp, ": kernel_size should be greater than zero, got kernel_size=", pair(k));
  TORCH_CHECK_VALUE(s[0] != 0 && s[1] != 0, kOp, ": stride should not be zero, got stride=", pair(s));
  TORCH_CHECK_VALUE(s[0] > 0 && s[1] > 0, kOp, ": stride should be greater than zero, got stride=", pair(s));
  TORCH_CHECK_VALUE(d[0] > 0 && d[1] > 0, kOp, ": dilation should be greater than zero, got dilation=", pair(d));
  TORCH_CHECK_VALUE(p[0] >= 0 && p[1] >= 0, kOp, ": padding must be non-negative, got padding=", pair(p));
  TORCH_CHECK_VALUE(p[0] <= k[0] / 2 && p[1] <= k[1] / 2, kOp,
                    ": padding should be smaller than or equal to half of kernel_size, got padding=", pair(p),
                    " and kernel_size=", pair(k));
}

void check_output(const at::Tensor& input, const Pool& pool) {
  const c10::SymInt H = input.sym_size(-2), W = input.sym_size(-1);
  const auto [Ho, Wo] = output_hw(H, W, pool);
  TORCH_CHECK_VALUE(Ho >= 1 && Wo >= 1, kOp, ": kernel_size=", python_tuple(pool.kernel_size),
                    " with dilation=", python_tuple(pool.dilation), " does not fit the input of size ", H, "x", W,
                    " padded by padding=", python_tuple(pool.padding), ": calculated output size ", Ho, "x", Wo,
                    " is too small");
}

void check_lengths(const Pool& pool) {
  // alexnet_cuda.ops.max_pool2d reads each argument into a pair; a direct torch.ops call
  // may pass any length.
  for (auto [v, name] : {std::pair{pool.kernel_size, "kernel_size"},
                         {pool.stride, "stride"},
                         {pool.padding, "padding"},
                         {pool.dilation, "dilation"}})
    TORCH_CHECK_VALUE(v.size() == 2, kOp, ": ", name, " must be a pair of ints, got ", python_tuple(v));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, const Pool& pool) {
  check_lengths(pool);
  check_input(input);
  check_window(pool.kernel_size, pool.stride, pool.padding, pool.dilation);
  check_output(input, pool);
  if (input.dim() == 4) return call_pooled<Forward>(input, pool);
  // PyTorch computes 3-D inputs in contiguous format: make them so, then add N = 1.
  auto [out, argmax] = call_pooled<Forward>(input.contiguous().unsqueeze(0), pool);
  return {out.squeeze(0), argmax.squeeze(0)};
}

namespace {

// The kernels' shapes, dtypes and memory formats on meta (fake) tensors.
std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& input, const Pool& pool) {
  TORCH_CHECK(input.dim() == 4, "alexnet_cuda::max_pool2d_forward: expected a 4-D input");
  check_pairs(pool);
  const auto size = input.sym_sizes();
  const auto [Ho, Wo] = output_hw(size[2], size[3], pool);
  const std::vector<c10::SymInt> shape{size[0], size[1], Ho, Wo};
  const auto options = input.options().memory_format(input.suggest_memory_format());
  const auto argmax = argmax_dtype(pool.kernel_size[0], pool.kernel_size[1], pool.return_indices);
  return {at::empty_symint(shape, options), at::empty_symint(shape, options.dtype(argmax))};
}

at::Tensor backward_meta(const at::Tensor& grad_output, const at::Tensor& argmax, c10::SymIntArrayRef input_size,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, bool channels_last) {
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  return at::empty_symint(input_size, grad_output.options().memory_format(format));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(alexnet_cuda, m) { define<MaxPool2d, Forward, Backward>(m); }

TORCH_LIBRARY_IMPL(alexnet_cuda, CompositeImplicitAutograd, m) { impl_symbolic<MaxPool2d>(m, &pooled<&max_pool2d>); }

TORCH_LIBRARY_IMPL(alexnet_cuda, Meta, m) {
  impl_symbolic<Forward, Backward>(m, &pooled<&forward_meta>, &backward_meta);
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda
