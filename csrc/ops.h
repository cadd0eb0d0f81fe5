// The public ops as C++ functions: what each op's CompositeImplicitAutograd kernel
// (csrc/<op>/<op>.cpp) runs, declared from the op's descriptor (csrc/<op>/<op>.h, with the
// descriptors of the kernels' ops: descriptor.h), and what python_module.cpp's native
// bindings call, their arguments derived from these declarations. The arguments are the
// Python function's after its Python-level reading (alexnet_cuda/ops/): pairs are [h, w],
// stride is filled in, floats are doubles.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "lrn/lrn.h"
#include "max_pool2d/max_pool2d.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"

namespace alexnet_cuda {
namespace lrn {

LocalResponseNorm::Signature local_response_norm;

}  // namespace lrn

namespace max_pool2d {

// The op with its pooling arguments read into a Pool (max_pool2d.h); pooled<&max_pool2d>
// has MaxPool2d::Signature.
std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, const Pool& pool);

}  // namespace max_pool2d

namespace relu_lrn_max_pool2d {

ReluLrnMaxPool2d::Signature relu_lrn_max_pool2d;

// The stage's checks of its arguments but the input (nn.ReLULRNMaxPool2d runs them when built).
void check_args(int64_t size, at::IntArrayRef kernel_size, at::IntArrayRef stride, int64_t lrn_groups);

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
