// LRN autograd (see csrc/autograd.h for why it is in C++). Saves only the input: the
// backward recomputes the normalizing scale from it (lrn.h), so neither the scale nor
// the output is kept.
#include <torch/library.h>

#include "autograd.h"
#include "lrn/lrn.h"

namespace alexnet_cuda {
namespace lrn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LRNFunction : public torch::autograd::Function<LRNFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, int64_t size, double scale, double beta,
                            double k) {
    static const auto& op = handle<Forward>();
    ctx->save_for_backward({input});
    ctx->saved_data["size"] = size;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["k"] = k;
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(input, size, scale, beta, k);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto& op = handle<Backward>();
    const at::Tensor input = ctx->get_saved_variables()[0];
    const auto& d = ctx->saved_data;
    at::Tensor grad_input = op.call(grads[0], input, d.at("size").toInt(), d.at("scale").toDouble(),
                                    d.at("beta").toDouble(), d.at("k").toDouble());
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor lrn_forward_autograd(const at::Tensor& input, int64_t size, double scale, double beta, double k) {
  if (!records_grad(input)) {
    static const auto& op = handle<Forward>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(input, size, scale, beta, k);
  }
  return LRNFunction::apply(input, size, scale, beta, k);
}

at::Tensor lrn_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input, int64_t size, double scale,
                                 double beta, double k) {
  static const auto& op = handle<Backward>();
  static const std::string message =
      no_double_backward_message("local_response_norm", "torch.nn.functional.local_response_norm");
  return no_double_backward(grad_output, input, message, std::function<at::Tensor()>([&] {
                              return op.call(grad_output, input, size, scale, beta, k);
                            }));
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, Autograd, m) {
  impl_symbolic<Forward, Backward>(m, &lrn_forward_autograd, &lrn_backward_autograd);
}

}  // namespace lrn
}  // namespace alexnet_cuda
