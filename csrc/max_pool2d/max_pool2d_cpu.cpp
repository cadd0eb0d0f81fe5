// Overlapping max-pooling: op schemas and CPU kernels.
//
// Two ops (schemas below); alexnet_cuda/ops/max_pool2d.py adds argument checking with
// PyTorch's conditions, 3-D (unbatched) inputs, fake kernels and autograd:
//
//   max_pool2d_forward(input, kernel_size, stride, padding, dilation, ceil_mode,
//                      return_indices) -> (out, argmax)
//     input is 4-D (N, C, H, W), any strides; computed in input.suggest_memory_format()
//     (contiguous or channels_last), and out/argmax come back in that format.
//     argmax is int64 flat indices h*W + w (exactly F.max_pool2d's indices) when
//     return_indices or kernel_h*kernel_w > 256, else uint8 window-local indices
//     t_h*kernel_w + t_w: 1 byte instead of 8 per output element, which is all the
//     backward needs.
//
//   max_pool2d_backward(grad_output, argmax, input_size, kernel_size, stride, padding,
//                       dilation, channels_last) -> grad_input
//     argmax is either encoding (told apart by its dtype). grad_input has shape
//     input_size, in channels_last or contiguous format as asked (the forward input's
//     format); nothing else of the input is needed.
//
// The per-element math lives in max_pool2d.h and is shared with the CUDA kernels.
#include "max_pool2d/max_pool2d.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

// Grain for at::parallel_for: hand each thread at least ~32K elements of work
// (ATen's usual GRAIN_SIZE), so small inputs do not pay for threading.
int64_t grain(int64_t elements_per_item) {
  constexpr int64_t kGrainElements = 32768;
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

template <typename scalar_t, typename argmax_t>
void forward_kernel(const at::Tensor& input, const Geometry& g, bool channels_last,
                    at::Tensor& out, at::Tensor& argmax) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  argmax_t* arg_p = argmax.mutable_data_ptr<argmax_t>();
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;

  if (!channels_last) {
    // NCHW: one task per (n, c) plane, output pixels in row-major order.
    at::parallel_for(0, g.N * C, grain(Ho * Wo), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* in_plane = in + plane * H * W;
        for (int oh = 0; oh < Ho; ++oh) {
          for (int ow = 0; ow < Wo; ++ow) {
            const int64_t o = (plane * Ho + oh) * Wo + ow;
            pool_window<scalar_t, argmax_t, int64_t>(in_plane, W, 1, g.h, g.w, oh, ow,
                                                     out_p + o, arg_p + o);
          }
        }
      }
    });
  } else {
    // NHWC: one task per output pixel (n, oh, ow), channels innermost (contiguous).
    at::parallel_for(0, g.N * Ho * Wo, grain(C), [&](int64_t begin, int64_t end) {
      for (int64_t pixel = begin; pixel < end; ++pixel) {
        const int64_t n = pixel / (Ho * Wo);
        const int oh = static_cast<int>(pixel / Wo % Ho);
        const int ow = static_cast<int>(pixel % Wo);
        const scalar_t* in_image = in + n * H * W * C;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t o = pixel * C + c;
          pool_window<scalar_t, argmax_t, int64_t>(in_image + c, W * C, C, g.h, g.w, oh, ow,
                                                   out_p + o, arg_p + o);
        }
      }
    });
  }
}

template <typename scalar_t, typename argmax_t>
void backward_kernel(const at::Tensor& grad_output, const at::Tensor& argmax, const Geometry& g,
                     bool channels_last, at::Tensor& grad_input) {
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const argmax_t* am = argmax.const_data_ptr<argmax_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;

  if (!channels_last) {
    // NCHW: one task per (n, c) plane; each input element gathers from its windows.
    at::parallel_for(0, g.N * C, grain(H * W), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t out_plane = plane * Ho * Wo;
        for (int h = 0; h < H; ++h) {
          for (int w = 0; w < W; ++w) {
            gi[(plane * H + h) * W + w] = static_cast<scalar_t>(gather_grad<scalar_t, argmax_t, int64_t>(
                go + out_plane, am + out_plane, Wo, 1, g.h, g.w, h, w));
          }
        }
      }
    });
  } else {
    // NHWC: one task per input pixel (n, h, w), channels innermost.
    at::parallel_for(0, g.N * H * W, grain(C), [&](int64_t begin, int64_t end) {
      for (int64_t pixel = begin; pixel < end; ++pixel) {
        const int64_t n = pixel / (H * W);
        const int h = static_cast<int>(pixel / W % H);
        const int w = static_cast<int>(pixel % W);
        const int64_t out_image = n * Ho * Wo * C;
        for (int64_t c = 0; c < C; ++c) {
          gi[pixel * C + c] = static_cast<scalar_t>(gather_grad<scalar_t, argmax_t, int64_t>(
              go + out_image + c, am + out_image + c, Wo * C, C, g.h, g.w, h, w));
        }
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_cpu(
    const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, bool return_indices) {
  TORCH_CHECK(input.device().is_cpu(), "max_pool2d_forward_cpu: input must be a CPU tensor");
  const Geometry g = forward_geometry(input, kernel_size, stride, padding, dilation, ceil_mode);
  const auto format = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(format);  // no copy when already in that format
  at::Tensor out, argmax;  // (not a structured binding: C++17 lambdas cannot capture one)
  std::tie(out, argmax) = allocate_forward(x, g, return_indices);
  if (out.numel() == 0) return {out, argmax};

  // Integer inputs are pooled too on CPU, like PyTorch's CPU kernel (CUDA: floating only).
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_forward_cpu", [&] {
    if (argmax.scalar_type() == at::kByte) {
      forward_kernel<scalar_t, uint8_t>(x, g, format == at::MemoryFormat::ChannelsLast, out, argmax);
    } else {
      forward_kernel<scalar_t, int64_t>(x, g, format == at::MemoryFormat::ChannelsLast, out, argmax);
    }
  });
  return {out, argmax};
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& argmax,
                                   at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool channels_last) {
  TORCH_CHECK(grad_output.device().is_cpu(), "max_pool2d_backward_cpu: grad_output must be a CPU tensor");
  const Geometry g = backward_geometry(grad_output, argmax, input_size, kernel_size, stride,
                                       padding, dilation);
  // (not a structured binding: C++17 lambdas cannot capture one)
  BackwardTensors t = prepare_backward(grad_output, argmax, input_size, channels_last);
  const at::Tensor &go = t.go, &am = t.am;
  at::Tensor& grad_input = t.grad_input;
  if (grad_input.numel() == 0) return grad_input;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "max_pool2d_backward_cpu", [&] {
    if (am.scalar_type() == at::kByte) {
      backward_kernel<scalar_t, uint8_t>(go, am, g, channels_last, grad_input);
    } else {
      backward_kernel<scalar_t, int64_t>(go, am, g, channels_last, grad_input);
    }
  });
  return grad_input;
}

}  // namespace
}  // namespace max_pool2d
}  // namespace alexnet_cuda

TORCH_LIBRARY_FRAGMENT(alexnet_cuda, m) {
  m.def(
      "max_pool2d_forward(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode, bool return_indices) -> (Tensor out, Tensor argmax)");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor argmax, SymInt[4] input_size, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool channels_last) -> Tensor");
}

TORCH_LIBRARY_IMPL(alexnet_cuda, CPU, m) {
  m.impl("max_pool2d_forward", &alexnet_cuda::max_pool2d::max_pool2d_forward_cpu);
  m.impl("max_pool2d_backward", &alexnet_cuda::max_pool2d::max_pool2d_backward_cpu);
}
