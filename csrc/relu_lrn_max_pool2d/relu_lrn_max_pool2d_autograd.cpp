// Fused ReLU -> LRN -> max-pool autograd (see csrc/autograd.h for why it is in C++).
// Saves the input (the convolution's output, alive anyway) and the uint8 window-local
// argmax: one byte per pooled output. The backward kernel recomputes the LRN from the
// input and routes the pooled gradient through the argmax.
#include <torch/library.h>

#include "autograd.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Params {  // everything but the tensors, as saved in the context
  int64_t size;
  double scale, beta, k;
  std::vector<int64_t> kernel_size, stride;
  int64_t lrn_groups;
};

Params load(const AutogradContext* ctx) {
  const auto& d = ctx->saved_data;
  return {d.at("size").toInt(),      d.at("scale").toDouble(),          d.at("beta").toDouble(),
          d.at("k").toDouble(),      d.at("kernel_size").toIntVector(), d.at("stride").toIntVector(),
          d.at("lrn_groups").toInt()};
}

struct ReluLrnMaxPool2dFunction : public torch::autograd::Function<ReluLrnMaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, int64_t size, double scale, double beta,
                               double k, at::IntArrayRef kernel_size, at::IntArrayRef stride, int64_t lrn_groups) {
    static const auto& op = handle<Forward>();
    at::Tensor out, argmax;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(out, argmax) = op.call(input, size, scale, beta, k, kernel_size, stride, lrn_groups);
    }
    ctx->save_for_backward({input, argmax});
    ctx->mark_non_differentiable({argmax});
    auto& d = ctx->saved_data;
    d["size"] = size;
    d["scale"] = scale;
    d["beta"] = beta;
    d["k"] = k;
    d["kernel_size"] = kernel_size.vec();
    d["stride"] = stride.vec();
    d["lrn_groups"] = lrn_groups;
    return {out, argmax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto& op = handle<Backward>();
    const auto saved = ctx->get_saved_variables();
    const Params p = load(ctx);
    at::Tensor grad_input =
        op.call(grads[0], saved[1], saved[0], p.size, p.scale, p.beta, p.k, p.kernel_size, p.stride, p.lrn_groups);
    return {grad_input,   at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> forward_autograd(const at::Tensor& input, int64_t size, double scale, double beta,
                                                    double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                    int64_t lrn_groups) {
  if (!records_grad(input)) {
    static const auto& op = handle<Forward>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(input, size, scale, beta, k, kernel_size, stride, lrn_groups);
  }
  auto r = ReluLrnMaxPool2dFunction::apply(input, size, scale, beta, k, kernel_size, stride, lrn_groups);
  return {r[0], r[1]};
}

at::Tensor backward_autograd(const at::Tensor& grad_output, const at::Tensor& argmax, const at::Tensor& input,
                             int64_t size, double scale, double beta, double k, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, int64_t lrn_groups) {
  static const auto& op = handle<Backward>();
  static const std::string message = no_double_backward_message(
      "relu_lrn_max_pool2d", "the stock composition (F.relu, F.local_response_norm, F.max_pool2d)");
  return no_double_backward(grad_output, input, message, std::function<at::Tensor()>([&] {
                              return op.call(grad_output, argmax, input, size, scale, beta, k, kernel_size, stride,
                                             lrn_groups);
                            }));
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, Autograd, m) {
  impl_symbolic<Forward, Backward>(m, &forward_autograd, &backward_autograd);
}

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
