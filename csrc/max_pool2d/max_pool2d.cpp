// alexnet_cuda::max_pool2d: the op as users call it (alexnet_cuda.ops.max_pool2d, or
// torch.ops.alexnet_cuda.max_pool2d with every argument given). It checks the arguments
// with PyTorch's conditions (aten/src/ATen/native/Pool.h, DilatedMaxPool2d.cpp), makes a
// 3-D (C, H, W) input one image, and calls max_pool2d_forward, whose autograd is in C++
// (max_pool2d_autograd.cpp). CompositeImplicitAutograd: torch.compile and torch.export
// trace through it to max_pool2d_forward, running these checks on the fake input.
#include <torch/library.h>

#include "checks.h"
#include "ops.h"

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

constexpr const char* kOp = "max_pool2d";

// PyTorch's pooling_output_shape.
c10::SymInt output_size(const c10::SymInt& size, int64_t kernel, int64_t pad, int64_t stride,
                        int64_t dilation, bool ceil_mode) {
  c10::SymInt out =
      floor_div(size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
  if (ceil_mode && (out - 1) * stride >= size + pad) out = out - 1;  // the last window would
  return out;                                                        // start in the padding
}

void check_input(const at::Tensor& input) {
  const auto shape = input.sym_sizes();
  const bool ok = (input.dim() == 3 && shape[0] != 0 && shape[1] != 0 && shape[2] != 0) ||
                  (input.dim() == 4 && shape[1] != 0 && shape[2] != 0 && shape[3] != 0);
  TORCH_CHECK_VALUE(ok, kOp, ": input must be 3-D (C, H, W) or 4-D (N, C, H, W) with only N allowed to be ",
                    "0, got shape ", python_tuple(shape));
  const auto dtype = input.scalar_type();
  const bool cuda = input.device().type() == c10::DeviceType::CUDA;
  // PyTorch: CPU pools every real dtype but bool; CUDA floating point only.
  TORCH_CHECK_TYPE(dtype != at::kBool && !at::isComplexType(dtype) && !(cuda && !at::isFloatingType(dtype)),
                   kOp, ": input dtype ", python_dtype(dtype), " is not supported on ",
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
                    ": padding should be smaller than or equal to half of kernel_size, got padding=",
                    pair(p), " and kernel_size=", pair(k));
}

void check_output(const at::Tensor& input, at::IntArrayRef k, at::IntArrayRef s, at::IntArrayRef p,
                  at::IntArrayRef d, bool ceil_mode) {
  const c10::SymInt H = input.sym_size(-2), W = input.sym_size(-1);
  const c10::SymInt Ho = output_size(H, k[0], p[0], s[0], d[0], ceil_mode);
  const c10::SymInt Wo = output_size(W, k[1], p[1], s[1], d[1], ceil_mode);
  TORCH_CHECK_VALUE(Ho >= 1 && Wo >= 1, kOp, ": kernel_size=", python_tuple(k), " with dilation=",
                    python_tuple(d), " does not fit the input of size ", H, "x", W, " padded by padding=",
                    python_tuple(p), ": calculated output size ", Ho, "x", Wo, " is too small");
}

void check_pairs(at::IntArrayRef k, at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d) {
  // alexnet_cuda.ops.max_pool2d reads each argument into a pair; a direct torch.ops call
  // may pass any length.
  for (auto [v, name] : {std::pair{k, "kernel_size"}, {s, "stride"}, {p, "padding"}, {d, "dilation"}})
    TORCH_CHECK_VALUE(v.size() == 2, kOp, ": ", name, " must be a pair of ints, got ", python_tuple(v));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode,
                                              bool return_indices) {
  check_pairs(kernel_size, stride, padding, dilation);
  check_input(input);
  check_window(kernel_size, stride, padding, dilation);
  check_output(input, kernel_size, stride, padding, dilation, ceil_mode);
  static auto forward = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("alexnet_cuda::max_pool2d_forward", "")
                            .typed<std::tuple<at::Tensor, at::Tensor>(
                                const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                at::IntArrayRef, bool, bool)>();
  if (input.dim() == 4)
    return forward.call(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices);
  // PyTorch computes 3-D inputs in contiguous format: make them so, then add N = 1.
  auto [out, argmax] = forward.call(input.contiguous().unsqueeze(0), kernel_size, stride, padding,
                                    dilation, ceil_mode, return_indices);
  return {out.squeeze(0), argmax.squeeze(0)};
}

TORCH_LIBRARY_FRAGMENT(alexnet_cuda, m) {
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode, bool return_indices) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(alexnet_cuda, CompositeImplicitAutograd, m) {
  m.impl("max_pool2d", &max_pool2d);
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda
