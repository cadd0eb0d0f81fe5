// Autograd in C++: what the ops' <op>_autograd.cpp files share.
//
// Each op registers its autograd at the dispatcher's Autograd key from C++ (a
// torch::autograd::Function), not from Python (torch.library.register_autograd): a call
// then costs what a native op's does, with no Python frame, context object or argument
// normalization on the way (about 10x less host time per forward+backward on a small
// input). torch.compile and torch.export trace through these kernels like any other:
// the Function's forward and backward call the ops below autograd, whose Meta kernels
// give the fake tensors' shapes (csrc/<op>/<op>.cpp).
#pragma once

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <functional>
#include <string>

#include "descriptor.h"

namespace alexnet_cuda {

// Whether a call must record a node for backward. When it need not (inference, or no input
// needing a gradient), the ops' autograd kernels call the op below autograd directly:
// no Function, no saved state (host time on every eval-mode call).
inline bool records_grad(const at::Tensor& input) { return at::GradMode::is_enabled() && input.requires_grad(); }

// A backward op's autograd: runs it, and raises NotImplementedError with `message` if
// its result is ever differentiated (gradients of gradients). `inputs` are the tensors
// the result depends on (so autograd records the node when one of them needs a gradient).
struct NoDoubleBackward : public torch::autograd::Function<NoDoubleBackward> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b,
                            const std::string& message, const std::function<at::Tensor()>& compute) {
    ctx->saved_data["message"] = message;
    at::AutoDispatchBelowADInplaceOrView guard;
    return compute();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list) {
    TORCH_CHECK_NOT_IMPLEMENTED(false, ctx->saved_data["message"].toStringRef());
  }
};

// A backward op's autograd kernel: the op itself when nothing records a graph (a plain
// backward pass: grad mode is off), else the op under NoDoubleBackward.
inline at::Tensor no_double_backward(const at::Tensor& a, const at::Tensor& b, const std::string& message,
                                     const std::function<at::Tensor()>& compute) {
  if (!records_grad(a) && !records_grad(b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return compute();
  }
  return NoDoubleBackward::apply(a, b, message, compute);
}

// "<op>: double backward ... not implemented by alexnet_cuda; use <stock> ...": the same
// words as every op's refusal.
inline std::string no_double_backward_message(const char* op, const char* stock) {
  return std::string(op) + ": double backward (gradients of gradients) is not implemented by alexnet_cuda; use " +
         stock + " for higher-order derivatives";
}

}  // namespace alexnet_cuda
