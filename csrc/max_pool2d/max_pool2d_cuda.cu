// Overlapping max-pooling: CUDA kernels (schemas and CPU kernels: max_pool2d_cpu.cpp).
//
// Variants (the launchers pick one per call):
//   forward_3s2_kernel   AlexNet's pool (3x3, stride 2, no padding/dilation, windows inside,
//                        4 or >= 6 output rows: cuda_3s2): one thread = 3 or 4 outputs down one
//                        column (the rows split evenly: no output computed twice), up to 27
//                        loads in flight, row maxima shared by two windows, compile-time
//                        window (max_pool2d_3s2.h).
//   backward_3s2_kernel  the same pools: one thread = seven 2x2 input blocks in a row (four
//                        for channel pairs), 16 (10) windows loaded at once; each pixel's
//                        windows and argmax codes are
//                        compile-time constants: no division, no loop. kLanes = 2 in
//                        channels_last fp16/bf16 (uint8 argmax, even C): two channels a
//                        thread, one 4-byte access for both (channel_lanes_3s2).
//   forward_kernel       any other pool: one thread per output element, runtime window
//                        (pool_window, max_pool2d.h).
//   backward_kernel      any other pool: one thread per input element, gathering over the
//                        windows that contain it (gather_grad): no atomics, deterministic.
// Threads are flattened in the tensor's own memory order (NCHW: the W-side index fastest;
// NHWC: the channel fastest), so a warp's loads and stores touch consecutive addresses
// (NHWC) or rows that stay in L1 between taps (NCHW). Sums are in fp32 (opmath); every
// element is written once. No layout copies: a channels_last tensor is read and written as
// NHWC. The 3/2 kernels index with int (they run only when every tensor has < 2^31
// elements) and split item indices with IntDivider (multiply-high, not division); the general
// kernels use int32 or int64 indices as the tensors allow.
//
// The per-item math is shared with the CPU (max_pool2d.h, max_pool2d_3s2.h), where the
// tests run it through the alexnet_cuda_test ops (max_pool2d_cuda_items_cpu.cpp).
#include "max_pool2d/max_pool2d.h"
#include "max_pool2d/max_pool2d_3s2.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, typename argmax_t, typename index_t, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, argmax_t* __restrict__ argmax,
                   index_t total, index_t C, Axis ah, Axis aw) {
  const int64_t linear = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (linear >= total) return;
  const index_t i = static_cast<index_t>(linear);
  const index_t H = ah.size, W = aw.size, Ho = ah.out_size, Wo = aw.out_size;

  int oh, ow;
  const scalar_t* plane;  // input element (0, 0) of this output's (n, c) plane
  index_t sh, sw;         // input strides of h and w, in elements
  if constexpr (kChannelsLast) {
    // i = ((n * Ho + oh) * Wo + ow) * C + c
    const index_t c = i % C;
    index_t t = i / C;
    ow = static_cast<int>(t % Wo);
    t /= Wo;
    oh = static_cast<int>(t % Ho);
    const index_t n = t / Ho;
    plane = in + n * H * W * C + c;
    sh = W * C;
    sw = C;
  } else {
    // i = (nc * Ho + oh) * Wo + ow
    ow = static_cast<int>(i % Wo);
    const index_t t = i / Wo;
    oh = static_cast<int>(t % Ho);
    const index_t nc = t / Ho;
    plane = in + nc * H * W;
    sh = W;
    sw = 1;
  }
  // channels_last: PyTorch's CUDA NHWC index rule for windows with no maximum (max_pool2d.h).
  pool_window<1, scalar_t, argmax_t, index_t, kChannelsLast>(plane, sh, sw, ah, aw, oh, ow, out + i, argmax + i);
}

// Occupancy: room for 4 blocks of 256 threads per SM (50%, the budget's floor) so that
// the 3/2 kernels keep every load of an item in flight: 27 taps (forward), 16 windows'
// values and codes (backward), twice the values for channel pairs. (Their register
// counts: bench/SASS.md.)
template <typename scalar_t, typename argmax_t, bool kChannelsLast, int kLanes>
__global__ void __launch_bounds__(kThreads, 4) forward_3s2_kernel(const Forward3s2<scalar_t, argmax_t> a) {
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i < a.items) forward_3s2_item<kChannelsLast, kLanes>(a, i);
}

template <typename scalar_t, typename argmax_t, bool kChannelsLast, int kLanes, int kBlocks>
__global__ void __launch_bounds__(kThreads, 4) backward_3s2_kernel(const Backward3s2<scalar_t, argmax_t> a) {
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i < a.items) backward_3s2_item<kChannelsLast, kLanes, kBlocks>(a, i);
}

template <typename scalar_t, typename argmax_t, typename index_t, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ grad_out, const argmax_t* __restrict__ argmax,
                    scalar_t* __restrict__ grad_in, index_t total, index_t C, Axis ah, Axis aw) {
  const int64_t linear = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (linear >= total) return;
  const index_t i = static_cast<index_t>(linear);
  const index_t H = ah.size, W = aw.size, Ho = ah.out_size, Wo = aw.out_size;

  int h, w;
  index_t plane;   // offset of output element (0, 0) of this input's (n, c) plane
  index_t sh, sw;  // output strides of oh and ow (grad_out and argmax share them)
  if constexpr (kChannelsLast) {
    // i = ((n * H + h) * W + w) * C + c
    const index_t c = i % C;
    index_t t = i / C;
    w = static_cast<int>(t % W);
    t /= W;
    h = static_cast<int>(t % H);
    const index_t n = t / H;
    plane = n * Ho * Wo * C + c;
    sh = Wo * C;
    sw = C;
  } else {
    // i = (nc * H + h) * W + w
    w = static_cast<int>(i % W);
    const index_t t = i / W;
    h = static_cast<int>(t % H);
    const index_t nc = t / H;
    plane = nc * Ho * Wo;
    sh = Wo;
    sw = 1;
  }
  grad_in[i] = static_cast<scalar_t>(
      gather_grad<scalar_t, argmax_t, index_t>(grad_out + plane, argmax + plane, sh, sw, ah, aw, h, w));
}

// One thread per element: ceil(total / kThreads) blocks on the x axis (at most 2^31 - 1).
unsigned int num_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "alexnet_cuda::max_pool2d: tensor too large (", total,
              " elements) for one launch");
  return static_cast<unsigned int>(blocks);
}

bool fits_int32(const at::Tensor& a, const at::Tensor& b) {
  return std::max(a.numel(), b.numel()) <= std::numeric_limits<int32_t>::max();
}

// Picks the int32/int64 and NCHW/NHWC instantiation. `total` elements, one per thread.
template <typename scalar_t, typename argmax_t>
void launch_forward(const at::Tensor& x, const Geometry& g, bool channels_last, at::Tensor& out, at::Tensor& argmax) {
  const int64_t total = out.numel();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const scalar_t* in_p = x.const_data_ptr<scalar_t>();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  argmax_t* arg_p = argmax.mutable_data_ptr<argmax_t>();
  if (cuda_3s2(g) && fits_int32(x, out)) {
    const int lanes = channel_lanes_3s2(in_p, arg_p, out_p, g, channels_last);
    const auto a = make_forward_3s2(in_p, out_p, arg_p, g, channels_last, lanes);
    if constexpr (sizeof(scalar_t) == 2 && std::is_same_v<argmax_t, uint8_t>) {
      if (lanes == 2) {
        forward_3s2_kernel<scalar_t, argmax_t, true, 2><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    if (channels_last) {
      forward_3s2_kernel<scalar_t, argmax_t, true, 1><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
    } else {
      forward_3s2_kernel<scalar_t, argmax_t, false, 1><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  auto launch = [&](auto index_zero, auto channels_last_tag) {
    using index_t = decltype(index_zero);
    constexpr bool kCL = decltype(channels_last_tag)::value;
    forward_kernel<scalar_t, argmax_t, index_t, kCL><<<num_blocks(total), kThreads, 0, stream>>>(
        in_p, out_p, arg_p, static_cast<index_t>(total), static_cast<index_t>(g.C), g.h, g.w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (fits_int32(x, out)) {
    channels_last ? launch(int32_t{}, std::true_type{}) : launch(int32_t{}, std::false_type{});
  } else {
    channels_last ? launch(int64_t{}, std::true_type{}) : launch(int64_t{}, std::false_type{});
  }
}

template <typename scalar_t, typename argmax_t>
void launch_backward(const at::Tensor& go, const at::Tensor& am, const Geometry& g, bool channels_last,
                     at::Tensor& grad_input) {
  const int64_t total = grad_input.numel();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const scalar_t* go_p = go.const_data_ptr<scalar_t>();
  const argmax_t* am_p = am.const_data_ptr<argmax_t>();
  scalar_t* gi_p = grad_input.mutable_data_ptr<scalar_t>();
  if (cuda_3s2(g) && fits_int32(go, grad_input)) {
    const int lanes = channel_lanes_3s2(go_p, am_p, gi_p, g, channels_last);
    const auto a = make_backward_3s2(go_p, am_p, gi_p, g, channels_last, lanes);
    if constexpr (sizeof(scalar_t) == 2 && std::is_same_v<argmax_t, uint8_t>) {
      if (lanes == 2) {
        if (backward_blocks_3s2(g.w.size, lanes) == 5) {
          backward_3s2_kernel<scalar_t, argmax_t, true, 2, 5><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
        } else {
          backward_3s2_kernel<scalar_t, argmax_t, true, 2, 4><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    if (channels_last) {
      backward_3s2_kernel<scalar_t, argmax_t, true, 1, kBlocks3s2><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
    } else {
      backward_3s2_kernel<scalar_t, argmax_t, false, 1, kBlocks3s2><<<num_blocks(a.items), kThreads, 0, stream>>>(a);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  auto launch = [&](auto index_zero, auto channels_last_tag) {
    using index_t = decltype(index_zero);
    constexpr bool kCL = decltype(channels_last_tag)::value;
    backward_kernel<scalar_t, argmax_t, index_t, kCL><<<num_blocks(total), kThreads, 0, stream>>>(
        go_p, am_p, gi_p, static_cast<index_t>(total), static_cast<index_t>(g.C), g.h, g.w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (fits_int32(go, grad_input)) {
    channels_last ? launch(int32_t{}, std::true_type{}) : launch(int32_t{}, std::false_type{});
  } else {
    channels_last ? launch(int64_t{}, std::true_type{}) : launch(int64_t{}, std::false_type{});
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_cuda(const at::Tensor& input, const Pool& pool) {
  TORCH_CHECK(input.is_cuda(), "max_pool2d_forward_cuda: input must be a CUDA tensor");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "max_pool2d_forward_cuda: input must be floating point (as in PyTorch's CUDA ", "max-pool), got ",
              input.scalar_type());
  const c10::cuda::CUDAGuard guard(input.device());
  const Geometry g = forward_geometry(input, pool);
  const auto format = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(format);  // no copy when already in that format
  at::Tensor out, argmax;                         // (not a structured binding: C++17 lambdas cannot capture one)
  std::tie(out, argmax) = allocate_forward(x, g, pool.return_indices);
  if (out.numel() == 0) return {out, argmax};  // N == 0: nothing to launch

  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_forward_cuda", [&] {
    if (argmax.scalar_type() == at::kByte) {
      launch_forward<scalar_t, uint8_t>(x, g, channels_last, out, argmax);
    } else {
      launch_forward<scalar_t, int64_t>(x, g, channels_last, out, argmax);
    }
  });
  return {out, argmax};
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& argmax, at::IntArrayRef input_size,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool channels_last) {
  TORCH_CHECK(grad_output.is_cuda(), "max_pool2d_backward_cuda: grad_output must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const Geometry g = backward_geometry(grad_output, argmax, input_size, kernel_size, stride, padding, dilation);
  // (not a structured binding: C++17 lambdas cannot capture one)
  BackwardTensors t = prepare_backward(grad_output, argmax, input_size, channels_last);
  const at::Tensor &go = t.go, &am = t.am;
  at::Tensor& grad_input = t.grad_input;
  if (grad_input.numel() == 0) return grad_input;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "max_pool2d_backward_cuda", [&] {
    if (am.scalar_type() == at::kByte) {
      launch_backward<scalar_t, uint8_t>(go, am, g, channels_last, grad_input);
    } else {
      launch_backward<scalar_t, int64_t>(go, am, g, channels_last, grad_input);
    }
  });
  return grad_input;
}

}  // namespace
}  // namespace max_pool2d
}  // namespace alexnet_cuda

TORCH_LIBRARY_IMPL(alexnet_cuda, CUDA, m) {
  using namespace alexnet_cuda::max_pool2d;
  alexnet_cuda::impl<Forward, Backward>(m, &pooled<&max_pool2d_forward_cuda>, &max_pool2d_backward_cuda);
}
