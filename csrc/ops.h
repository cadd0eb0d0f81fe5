// The public ops as C++ functions: what each op's CompositeImplicitAutograd kernel
// (csrc/<op>/<op>.cpp) runs, and what python_module.cpp's native bindings call.
// Arguments are the Python function's after its Python-level reading (alexnet_cuda/ops/):
// pairs are [h, w], stride is filled in, floats are doubles.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace alexnet_cuda {
namespace lrn {
at::Tensor local_response_norm(const at::Tensor& input, int64_t size, double alpha, double beta,
                               double k, bool paper_alpha);
}  // namespace lrn

namespace max_pool2d {
std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode,
                                              bool return_indices);
}  // namespace max_pool2d

namespace relu_lrn_max_pool2d {
at::Tensor relu_lrn_max_pool2d(const at::Tensor& input, int64_t size, double alpha, double beta,
                               double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               int64_t lrn_groups, bool paper_alpha);

// The stage's checks of its arguments but the input (nn.ReLULRNMaxPool2d runs them when built).
void check_args(int64_t size, at::IntArrayRef kernel_size, at::IntArrayRef stride, int64_t lrn_groups);
}  // namespace relu_lrn_max_pool2d

}  // namespace alexnet_cuda
