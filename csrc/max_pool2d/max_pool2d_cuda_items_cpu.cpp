// Test ops: the CUDA max-pool kernels' per-item code, run on the CPU.
//
// CI has no GPU, so the tests check the CUDA kernels' arithmetic and indexing here: each
// parallel_for index does what one GPU thread does, in the CUDA launchers' choice of
// kernel (the 3/2 kernels of max_pool2d_3s2.h when they apply, else max_pool2d.h's
// per-element code). Nothing in the production ops calls them.
//
//   alexnet_cuda_test::max_pool2d_forward    the CUDA forward items (pool_window with
//                                            CUDA's channels_last rule, or the 3/2 columns)
//   alexnet_cuda_test::max_pool2d_backward   the CUDA backward items: a gather per input
//                                            element (gather_grad), or the 3/2 2x2 blocks
//
// Same schemas, arguments and results as alexnet_cuda::max_pool2d_forward/_backward
// (max_pool2d_cpu.cpp); tests/conftest.py routes the public op's CPU calls to them.
#include "max_pool2d/max_pool2d.h"
#include "max_pool2d/max_pool2d_3s2.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

// The CUDA launchers' condition for the 3/2 kernels: their item indices are 32-bit.
bool cuda_takes_3s2(const Geometry& g, const at::Tensor& a, const at::Tensor& b) {
  const int64_t limit = std::numeric_limits<int32_t>::max();
  return cuda_3s2(g) && a.numel() <= limit && b.numel() <= limit;
}

template <typename scalar_t, typename argmax_t>
void forward_items(const at::Tensor& input, const Geometry& g, bool channels_last, at::Tensor& out,
                   at::Tensor& argmax) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  argmax_t* arg_p = argmax.mutable_data_ptr<argmax_t>();
  if (cuda_takes_3s2(g, input, out)) {
    const int lanes = channel_lanes_3s2(in, arg_p, out_p, g, channels_last);  // as the CUDA launcher
    const auto a = make_forward_3s2(in, out_p, arg_p, g, channels_last, lanes);
    at::parallel_for(0, a.items, grain(9 * kRows3s2), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        lanes == 2      ? forward_3s2_item<true, 2>(a, static_cast<int>(i))
        : channels_last ? forward_3s2_item<true, 1>(a, static_cast<int>(i))
                        : forward_3s2_item<false, 1>(a, static_cast<int>(i));
      }
    });
    return;
  }
  // One output element per item, pool_window with CUDA's channels_last rule.
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  at::parallel_for(0, g.N * C * Ho * Wo, grain(9), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (channels_last) {  // i = ((n * Ho + oh) * Wo + ow) * C + c
        const int64_t c = i % C, ow = i / C % Wo, oh = i / C / Wo % Ho, n = i / C / Wo / Ho;
        pool_window<1, scalar_t, argmax_t, int64_t, true>(in + n * H * W * C + c, W * C, C, g.h, g.w, oh, ow, out_p + i,
                                                          arg_p + i);
      } else {  // i = (nc * Ho + oh) * Wo + ow
        const int64_t ow = i % Wo, oh = i / Wo % Ho, nc = i / Wo / Ho;
        pool_window<1, scalar_t, argmax_t, int64_t>(in + nc * H * W, W, 1, g.h, g.w, oh, ow, out_p + i, arg_p + i);
      }
    }
  });
}

// Each input element gathers over the windows that contain it (gather_grad), or, for the
// 3/2 pool, each item gathers for its 2x2 blocks.
template <typename scalar_t, typename argmax_t>
void backward_items(const at::Tensor& grad_output, const at::Tensor& argmax, const Geometry& g, bool channels_last,
                    at::Tensor& grad_input) {
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const argmax_t* am = argmax.const_data_ptr<argmax_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  if (cuda_takes_3s2(g, grad_output, grad_input)) {
    const int lanes = channel_lanes_3s2(go, am, gi, g, channels_last);  // as the CUDA launcher
    const auto a = make_backward_3s2(go, am, gi, g, channels_last, lanes);
    const int blocks = backward_blocks_3s2(g.w.size, lanes);
    at::parallel_for(0, a.items, grain(4 * kBlocks3s2), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        lanes == 2 && blocks == 5 ? backward_3s2_item<true, 2, 5>(a, static_cast<int>(i))
        : lanes == 2              ? backward_3s2_item<true, 2, 4>(a, static_cast<int>(i))
        : channels_last           ? backward_3s2_item<true, 1, kBlocks3s2>(a, static_cast<int>(i))
                                  : backward_3s2_item<false, 1, kBlocks3s2>(a, static_cast<int>(i));
      }
    });
    return;
  }
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  // Element (h, w) of plane (n, c) is at gi[in0 + (h*W + w)*in_sw], output (oh, ow) at
  // [out0 + (oh*Wo + ow)*out_sw], as in the CUDA kernel.
  at::parallel_for(0, g.N * C, grain(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      const int64_t in0 = channels_last ? n * H * W * C + c : plane * H * W;
      const int64_t out0 = channels_last ? n * Ho * Wo * C + c : plane * Ho * Wo;
      const int64_t in_sw = channels_last ? C : 1, out_sw = channels_last ? C : 1;
      for (int h = 0; h < H; ++h) {
        for (int w = 0; w < W; ++w) {
          gi[in0 + (h * W + w) * in_sw] = static_cast<scalar_t>(
              gather_grad<scalar_t, argmax_t, int64_t>(go + out0, am + out0, Wo * out_sw, out_sw, g.h, g.w, h, w));
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& input, const Pool& pool) {
  TORCH_CHECK(input.device().is_cpu(), "max_pool2d_forward_cpu: input must be a CPU tensor");
  const Geometry g = forward_geometry(input, pool);
  const auto format = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(format);
  at::Tensor out, argmax;
  std::tie(out, argmax) = allocate_forward(x, g, pool.return_indices);
  if (out.numel() == 0) return {out, argmax};
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_forward_items", [&] {
    const bool channels_last = format == at::MemoryFormat::ChannelsLast;
    argmax.scalar_type() == at::kByte ? forward_items<scalar_t, uint8_t>(x, g, channels_last, out, argmax)
                                      : forward_items<scalar_t, int64_t>(x, g, channels_last, out, argmax);
  });
  return {out, argmax};
}

at::Tensor backward_cpu(const at::Tensor& grad_output, const at::Tensor& argmax, at::IntArrayRef input_size,
                        at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, bool channels_last) {
  TORCH_CHECK(grad_output.device().is_cpu(), "max_pool2d_backward_cpu: grad_output must be a CPU tensor");
  const Geometry g = backward_geometry(grad_output, argmax, input_size, kernel_size, stride, padding, dilation);
  BackwardTensors t = prepare_backward(grad_output, argmax, input_size, channels_last);
  if (t.grad_input.numel() == 0) return t.grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.go.scalar_type(), "max_pool2d_backward_items", [&] {
    t.am.scalar_type() == at::kByte ? backward_items<scalar_t, uint8_t>(t.go, t.am, g, channels_last, t.grad_input)
                                    : backward_items<scalar_t, int64_t>(t.go, t.am, g, channels_last, t.grad_input);
  });
  return t.grad_input;
}

}  // namespace
}  // namespace max_pool2d
}  // namespace alexnet_cuda

// The same schemas as the kernel ops (max_pool2d.h's descriptors), in the test namespace.
TORCH_LIBRARY_FRAGMENT(alexnet_cuda_test, m) {
  alexnet_cuda::define<alexnet_cuda::max_pool2d::Forward, alexnet_cuda::max_pool2d::Backward>(m);
}

TORCH_LIBRARY_IMPL(alexnet_cuda_test, CPU, m) {
  using namespace alexnet_cuda::max_pool2d;
  alexnet_cuda::impl<Forward, Backward>(m, &pooled<&forward_cpu>, &backward_cpu);
}
