// Max-pool autograd (see csrc/autograd.h for why it is in C++). Forward saves only the
// argmax (uint8 window-local unless indices were asked for) plus the input's shape and
// memory format: nothing input-sized. Backward is alexnet_cuda::max_pool2d_backward.
//
// Double backward: grad_input is linear in grad_output (each output's gradient goes to
// its argmax), so the gradient w.r.t. grad_output is the incoming gradient read at each
// window's argmax, where backward routes it: a gather, written with ATen ops.
#include <torch/library.h>

#include "autograd.h"
#include "max_pool2d/max_pool2d.h"

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void save_geometry(AutogradContext* ctx, c10::SymIntArrayRef input_size, at::IntArrayRef kernel_size,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  auto& d = ctx->saved_data;
  d["input_size"] = input_size.vec();
  d["kernel_size"] = kernel_size.vec();
  d["stride"] = stride.vec();
  d["padding"] = padding.vec();
  d["dilation"] = dilation.vec();
}

std::vector<int64_t> saved_ints(const AutogradContext* ctx, const char* name) {
  return ctx->saved_data.at(name).toIntVector();
}

// The argmax as flat int64 indices h * W + w, and a mask of the windows whose gradient
// the backward routes there: all but some empty windows (the rule of argmax_position in
// max_pool2d.h; see alexnet_cuda/ops/max_pool2d.py's docstring).
std::pair<at::Tensor, at::Tensor> flat_argmax(const at::Tensor& argmax, int64_t H, int64_t W, at::IntArrayRef k,
                                              at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d) {
  const int64_t Ho = argmax.size(-2), Wo = argmax.size(-1);
  const auto opts = argmax.options().dtype(at::kLong);
  const at::Tensor h0 = (at::arange(Ho, opts) * s[0] - p[0]).view({Ho, 1});  // window starts
  const at::Tensor w0 = (at::arange(Wo, opts) * s[1] - p[1]).view({1, Wo});
  const at::Tensor a = argmax.to(at::kLong);
  if (argmax.scalar_type() == at::kLong) {
    // In the plane, and the pixel inside the window's span (an empty window's index can
    // alias a pixel outside it).
    const at::Tensor h = at::div(a, W, "floor");
    const at::Tensor w = a - h * W;
    at::Tensor keep = (a >= 0) & (a < H * W) & (h >= h0) & (h <= h0 + (k[0] - 1) * d[0]);
    keep = keep & (w >= w0) & (w <= w0 + (k[1] - 1) * d[1]);
    return {a, keep};
  }
  const at::Tensor h = h0 + at::div(a, k[1], "floor") * d[0];
  const at::Tensor w = w0 + at::remainder(a, k[1]) * d[1];
  const at::Tensor inside = (h >= 0) & (h < H) & (w >= 0) & (w < W);  // all but empty windows
  return {h * W + w, inside};
}

struct MaxPool2dBackwardFunction : public torch::autograd::Function<MaxPool2dBackwardFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& argmax,
                            c10::SymIntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool channels_last) {
    static const auto& op = handle<Backward>();
    ctx->save_for_backward({argmax});
    save_geometry(ctx, input_size, kernel_size, stride, padding, dilation);
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(grad_output, argmax, input_size, kernel_size, stride, padding, dilation, channels_last);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor argmax = ctx->get_saved_variables()[0];
    const auto size = ctx->saved_data.at("input_size").toSymIntVector();
    auto [flat, keep] = flat_argmax(argmax, size[2].guard_int(__FILE__, __LINE__),
                                    size[3].guard_int(__FILE__, __LINE__), saved_ints(ctx, "kernel_size"),
                                    saved_ints(ctx, "stride"), saved_ints(ctx, "padding"), saved_ints(ctx, "dilation"));
    const int64_t N = argmax.size(0), C = argmax.size(1);
    const at::Tensor src = grads[0].reshape({N, C, -1});
    const at::Tensor idx = at::where(keep, flat, 0).reshape({N, C, -1});
    at::Tensor ggo = at::gather(src, 2, idx).view(argmax.sizes());
    ggo = at::where(keep, ggo, at::zeros({}, ggo.options()));
    return {ggo, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct MaxPool2dFunction : public torch::autograd::Function<MaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const Pool& pool) {
    at::Tensor out, argmax;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(out, argmax) = call_pooled<Forward>(input, pool);
    }
    ctx->save_for_backward({argmax});
    ctx->mark_non_differentiable({argmax});
    save_geometry(ctx, input.sym_sizes(), pool.kernel_size, pool.stride, pool.padding, pool.dilation);
    ctx->saved_data["channels_last"] = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    return {out, argmax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto& op = handle<Backward>();
    const at::Tensor argmax = ctx->get_saved_variables()[0];
    const auto size = ctx->saved_data.at("input_size").toSymIntVector();
    at::Tensor grad_input =
        op.call(grads[0], argmax, size, saved_ints(ctx, "kernel_size"), saved_ints(ctx, "stride"),
                saved_ints(ctx, "padding"), saved_ints(ctx, "dilation"), ctx->saved_data.at("channels_last").toBool());
    return {grad_input, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> forward_autograd(const at::Tensor& input, const Pool& pool) {
  if (!records_grad(input)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_pooled<Forward>(input, pool);
  }
  auto r = MaxPool2dFunction::apply(input, pool);
  return {r[0], r[1]};
}

at::Tensor backward_autograd(const at::Tensor& grad_output, const at::Tensor& argmax, c10::SymIntArrayRef input_size,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, bool channels_last) {
  if (!records_grad(grad_output)) {  // a plain backward pass: no double backward to record
    static const auto& op = handle<Backward>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(grad_output, argmax, input_size, kernel_size, stride, padding, dilation, channels_last);
  }
  return MaxPool2dBackwardFunction::apply(grad_output, argmax, input_size, kernel_size, stride, padding, dilation,
                                          channels_last);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, Autograd, m) {
  impl_symbolic<Forward, Backward>(m, &pooled<&forward_autograd>, &backward_autograd);
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda
