// LRN: CUDA kernels. See lrn.h for the math.
//
// Kernel variants (one line each):
//   lrn_forward_sweep_kernel<SPAN, V, CL, T>   size <= 7, fp32/fp16/bf16, beta = 0.75 with
//                                              k >= FLT_MIN, scale >= 0 (lrn.h Pow34):
//                                              lrn_sweep.h, one work item per thread
//   lrn_backward_sweep_kernel<SPAN, V, CL, T>  the same cases, backward
//   lrn_forward_kernel<CL, T>                  everything else (any size, beta, k; float64):
//                                              shared-memory tiles, PowAny (exp2/log2)
//   lrn_backward_kernel<CL, T>                 the same, backward
// The sweep kernels are the fast path (no shared memory, window sums in registers,
// vector loads and stores where the alignment allows, no per-element beta test); the
// tile kernels are the general one.
//
// General path: one block computes a tile of TC channels x TP pixels. It first copies the tile plus
// its channel halo (the zero-padded window neighbours) from global memory into shared
// memory as fp32, with consecutive threads on consecutive addresses of whichever dim
// is contiguous (pixels for NCHW, channels for channels-last): one coalesced read of the
// input, one coalesced write of the result. The window sums are then taken from shared
// memory, so the input is read from DRAM once even though every element belongs to
// `size` windows. The shared tile is stored with the contiguous dim fastest as well,
// which keeps the compute phase free of bank conflicts for both layouts.
//
// Limits and differences: a tile holds at least one pixel's channel rows in 48 KiB, so
// the CUDA backward refuses windows over about 3,900 channels in fp32 (1,900 in float64)
// with a clear error; PyTorch's composite and our CPU kernels have no such limit. The
// power: Pow34 (MUFU rsqrt and sqrt) in the sweep kernels, exp2(-beta * log2 s) with the
// hardware log2 in the tiles; the CPU takes correctly rounded roots (beta = 0.75) or pow():
// the sweep code is the same on both, the last bits of this power are not (lrn.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lrn/lrn.h"
#include "lrn/lrn_sweep.h"

namespace alexnet_cuda {
namespace lrn {
namespace {

// A block is 32 x 8 threads. threadIdx.x runs along the contiguous dim (pixels for NCHW,
// channels for channels-last) so that each warp touches consecutive addresses; the tile
// loops below are plain strided loops: no integer division anywhere in the hot path.
constexpr int kWarp = 32, kRowsPerPass = 8;
constexpr int kSmemBytes = 48 * 1024;  // no opt-in needed below 48 KiB

// A tile: pixels [p0, p0 + tp) of outer index o, channels [c0, c0 + tc).
struct Tile {
  int64_t o, p0;
  int c0, tc, tp;
  __device__ int64_t global(const Geometry& v, int c, int q) const {
    return o * v.outer_stride + int64_t(c) * v.channel_stride + (p0 + q) * v.pixel_stride;
  }
};

// Shared tiles store rows (channels) x columns (pixels) with the contiguous dim fastest,
// so a warp reads consecutive shared words (no bank conflicts) in both layouts.
template <bool CL>
__device__ __forceinline__ int smem_at(int r, int q, int rows, int tp) {
  return CL ? q * rows + r : r * tp + q;
}

// Calls fn(r, q) for every r in [0, rows), q in [0, tp), warps along the contiguous dim.
template <bool CL, typename Fn>
__device__ __forceinline__ void for_tile(int rows, int tp, Fn fn) {
  if (CL) {
    for (int q = threadIdx.y; q < tp; q += kRowsPerPass)
#pragma unroll 4
      for (int r = threadIdx.x; r < rows; r += kWarp) fn(r, q);
  } else {
#pragma unroll 4
    for (int r = threadIdx.y; r < rows; r += kRowsPerPass)
      for (int q = threadIdx.x; q < tp; q += kWarp) fn(r, q);
  }
}

// Load channels [c_first, c_first + rows) x the tile's pixels into shared memory as acc_t
// (zero outside [0, C) and past the last pixel).
template <bool CL, typename acc_t, typename scalar_t>
__device__ __forceinline__ void load_rows(acc_t* dst, const scalar_t* __restrict__ src, const Geometry& v,
                                          const Tile& t, int c_first, int rows) {
  const int64_t valid = v.pixels - t.p0;
  for_tile<CL>(rows, t.tp, [&](int r, int q) {
    const int c = c_first + r;
    acc_t val = 0;
    if (c >= 0 && c < v.channels && q < valid) val = static_cast<acc_t>(src[t.global(v, c, q)]);
    dst[smem_at<CL>(r, q, rows, t.tp)] = val;
  });
}

__device__ __forceinline__ Tile make_tile(const Geometry& v, int tc, int tp) {
  const int64_t tiles_per_outer = (v.pixels + tp - 1) / tp;  // once per block
  Tile t;
  t.o = blockIdx.x / tiles_per_outer;
  t.p0 = (blockIdx.x - t.o * tiles_per_outer) * tp;
  t.c0 = blockIdx.y * tc;
  t.tc = min(tc, int(v.channels) - t.c0);
  t.tp = tp;
  return t;
}

// Shared memory holds acc_t (float, or double for double inputs).
template <typename acc_t>
__device__ __forceinline__ acc_t* shared_buffer() {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  return reinterpret_cast<acc_t*>(smem_bytes);
}

// Forward. Shared: x for channels [c0 - pre, c0 + tc + post); channel c0 + cc has its
// window in rows cc .. cc + span and x_c in row cc + pre.
template <bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kWarp* kRowsPerPass)
    lrn_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, Geometry v, Window w, int tc, int tp,
                       acc_t scale, acc_t beta, acc_t k) {
  acc_t* xs = shared_buffer<acc_t>();
  const Tile t = make_tile(v, tc, tp);
  const int rows = t.tc + w.span();
  load_rows<CL>(xs, x, v, t, t.c0 - w.pre, rows);
  __syncthreads();
  const int64_t valid = v.pixels - t.p0;
  for_tile<CL>(t.tc, t.tp, [&](int cc, int q) {
    if (q >= valid) return;
    acc_t sumsq = 0;
    for (int d = 0; d <= w.span(); ++d) {
      const acc_t xv = xs[smem_at<CL>(cc + d, q, rows, t.tp)];
      sumsq += xv * xv;
    }
    const acc_t xc = xs[smem_at<CL>(cc + w.pre, q, rows, t.tp)];
    y[t.global(v, t.c0 + cc, q)] = static_cast<scalar_t>(forward_value(xc, sumsq, scale, beta, k));
  });
}

// Backward. Shared, in three regions (row -> channel):
//   xs: x  for channels [c0 - pre - post, c0 + tc + pre + post)   (rows_x)
//   ts: dy, then t_j = dy_j x_j s_j^(-beta-1), for j in [c0 - post, c0 + tc + pre)  (rows_t)
//   gs: dy_c s_c^(-beta) for the tile's own channels                  (tc rows)
// Phase 2 turns dy into t in place (each element read and written by one thread).
template <bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kWarp* kRowsPerPass)
    lrn_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
                        Geometry v, Window w, int tc, int tp, acc_t scale, acc_t beta, acc_t k) {
  const Tile t = make_tile(v, tc, tp);
  const int span = w.span();
  const int rows_x = t.tc + 2 * span, rows_t = t.tc + span;
  acc_t* xs = shared_buffer<acc_t>();
  acc_t* ts = xs + rows_x * t.tp;
  acc_t* gs = ts + rows_t * t.tp;
  load_rows<CL>(xs, x, v, t, t.c0 - span, rows_x);
  load_rows<CL>(ts, dy, v, t, t.c0 - w.post, rows_t);
  __syncthreads();
  // Phase 2: s_j for every j in the t range. Row tj of ts is channel j = c0 - post + tj,
  // whose window is rows tj .. tj + span of xs; x_j is xs row tj + pre.
  // One power per element (inv_pows).
  for_tile<CL>(rows_t, t.tp, [&](int tj, int q) {
    acc_t sumsq = 0;
    for (int d = 0; d <= span; ++d) {
      const acc_t xv = xs[smem_at<CL>(tj + d, q, rows_x, t.tp)];
      sumsq += xv * xv;
    }
    const acc_t s = k + scale * sumsq;
    acc_t p0, p1;
    inv_pows(s, beta, p0, p1);
    const int ti = smem_at<CL>(tj, q, rows_t, t.tp);
    const acc_t dyj = ts[ti];
    const int j = t.c0 - w.post + tj, cc = j - t.c0;
    if (cc >= 0 && cc < t.tc) gs[smem_at<CL>(cc, q, t.tc, t.tp)] = dyj * p0;
    // Channels outside [0, C) contribute nothing (their dy is zero, but s may be 0 there).
    ts[ti] = (j >= 0 && j < v.channels) ? dyj * xs[smem_at<CL>(tj + w.pre, q, rows_x, t.tp)] * p1 : acc_t(0);
  });
  __syncthreads();
  // Phase 3: dx_c = dy_c s_c^-beta - 2 scale beta x_c sum_{j=c-post}^{c+pre} t_j; channel
  // c = c0 + cc has t rows cc .. cc + span and x at xs row cc + span.
  const acc_t coef = acc_t(2) * scale * beta;
  const int64_t valid = v.pixels - t.p0;
  for_tile<CL>(t.tc, t.tp, [&](int cc, int q) {
    if (q >= valid) return;
    acc_t tsum = 0;
    for (int d = 0; d <= span; ++d) tsum += ts[smem_at<CL>(cc + d, q, rows_t, t.tp)];
    const acc_t xc = xs[smem_at<CL>(cc + span, q, rows_x, t.tp)];
    dx[t.global(v, t.c0 + cc, q)] = static_cast<scalar_t>(gs[smem_at<CL>(cc, q, t.tc, t.tp)] - coef * xc * tsum);
  });
}

// Sweep kernels: one work item per thread (lrn_sweep.h).
using sweep::kThreads;

// Blocks per SM the sweep kernels ask for (__launch_bounds__'s second argument caps the
// registers at 64K / (256 n) a thread: 6 -> 40, 4 -> 64). Without a cap ptxas keeps the
// NCHW sweeps' registers low by interleaving a batch's loads with the previous channels'
// math, so only a few of a batch's loads are in flight at once; with the room to hold a
// batch it issues them before the first use, which is what keeps 32 KB per SM in flight
// (bench/SASS.md has the counts). The NHWC items (one vector per thread, no batches) keep
// the default. NCHW items of V = 4 pixels (planes whose H * W is a multiple of 4, not
// AlexNet's) have batches 4 times wider: they need 2 blocks (128 registers) not to spill.
template <bool CL, bool BACKWARD, int V>
constexpr int sweep_min_blocks() {
  return CL ? 0 : V > 1 ? 2 : BACKWARD ? 4 : 6;
}

// Launched only where Pow34 applies (pow34_applies: the power is chosen per launch).
// The NCHW 16-bit forward sweep (one element a channel, batches of 32 loads:
// lrn_sweep.h forward_batch_channels) asks for 4 blocks: 64 registers a thread hold the
// whole batch, so every load of it is issued before the batch's math.
template <bool CL, int V, typename scalar_t>
constexpr int forward_sweep_min_blocks() {
  return !CL && V == 1 && sizeof(scalar_t) == 2 ? 4 : sweep_min_blocks<CL, false, V>();
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads, forward_sweep_min_blocks<CL, V, scalar_t>())
    lrn_forward_sweep_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, Geometry v, sweep::Items it,
                             acc_t scale, Pow34 pw, acc_t k) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < it.count) sweep::forward_item<SPAN, V, CL>(x, y, v, it, i, scale, pw, k);
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads, sweep_min_blocks<CL, true, V>())
    lrn_backward_sweep_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                              scalar_t* __restrict__ dx, Geometry v, sweep::Items it, acc_t scale, Pow34 pw, acc_t k) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < it.count) sweep::backward_item<SPAN, V, CL>(dy, x, dx, v, it, i, scale, pw, k);
}

// Tile shape: up to 128 channels per tile (all of AlexNet's 96; more channels are split
// into tiles with a halo). Channels-first tiles are 32 pixels wide (one 128-byte line per
// channel row), wider when there are few channels; channels-last tiles take ~2K outputs.
// The pixel count shrinks until the shared tile fits in 48 KiB.
struct LaunchShape {
  int tc, tp;
  size_t smem;
};

LaunchShape pick_shape(const Geometry& v, Window w, bool backward, size_t elem) {
  LaunchShape s;
  s.tc = static_cast<int>(std::min<int64_t>(v.channels, 128));
  const int rows = backward ? 3 * s.tc + 3 * w.span() : s.tc + w.span();
  int tp;
  if (v.channels_last) {
    tp = std::max(1, 2048 / s.tc);
    tp = static_cast<int>(std::min<int64_t>(tp, v.pixels));
  } else {
    tp = kWarp;
    while (tp < 512 && tp * s.tc < 2048 && tp < v.pixels) tp *= 2;
  }
  while (tp > 1 && size_t(rows) * tp * elem > kSmemBytes) tp /= 2;
  TORCH_CHECK(size_t(rows) * tp * elem <= kSmemBytes,
              "local_response_norm (CUDA): the window (size) is too large for the CUDA kernel's "
              "shared-memory tile (",
              rows, " channel rows); use a smaller size or run on CPU");
  s.tp = tp;
  s.smem = size_t(rows) * tp * elem;
  return s;
}

dim3 grid_for(const Geometry& v, const LaunchShape& s) {
  const int64_t tiles = v.outer * ((v.pixels + s.tp - 1) / s.tp);
  const int64_t channel_tiles = (v.channels + s.tc - 1) / s.tc;
  TORCH_CHECK(tiles < (int64_t(1) << 31), "local_response_norm (CUDA): input too large");
  // gridDim.y is limited to 65535: more than ~8.4M channels (possible: the limit is 2^30).
  TORCH_CHECK(channel_tiles <= 65535, "local_response_norm (CUDA): ", v.channels,
              " channels are too many for the tile kernel (at most ", 65535 * s.tc, ")");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(channel_tiles));
}

const dim3 kBlock(kWarp, kRowsPerPass);

at::Tensor lrn_forward_cuda(const at::Tensor& input, int64_t size, double scale, double beta, double k) {
  check_args(input, size, "lrn_forward");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = kernel_layout(input);
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const Geometry v = make_geometry(x);
  const Window w = make_window(size, v.channels);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if constexpr (sweep::has_cuda_sweep_kernels<scalar_t>()) {
      if (sweep::covers(w) && pow34_applies<acc_t>(scale, beta, k)) {
        const int vec = sweep::vector_width<scalar_t>(v, {xp, yp});
        const sweep::Items it = sweep::make_items(v, vec, w.span());
        const unsigned blocks = sweep::blocks_for("local_response_norm", it.count);
        sweep::dispatch<scalar_t>(w, vec, v.channels_last, [&](auto span, auto V, auto cl) {
          lrn_forward_sweep_kernel<decltype(span)::value, decltype(V)::value, decltype(cl)::value, scalar_t>
              <<<blocks, kThreads, 0, stream>>>(xp, yp, v, it, acc_t(scale), Pow34{0.75f}, acc_t(k));
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    const LaunchShape s = pick_shape(v, w, /*backward=*/false, sizeof(acc_t));
    auto kernel = v.channels_last ? lrn_forward_kernel<true, scalar_t> : lrn_forward_kernel<false, scalar_t>;
    kernel<<<grid_for(v, s), kBlock, s.smem, stream>>>(xp, yp, v, w, s.tc, s.tp, acc_t(scale), acc_t(beta), acc_t(k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, int64_t size, double scale,
                             double beta, double k) {
  check_backward_args(grad_output, input, size);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = kernel_layout(input);
  const at::Tensor dy = with_layout_of(grad_output, x);
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return dx;
  const Geometry v = make_geometry(x);
  const Window w = make_window(size, v.channels);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    if constexpr (sweep::has_cuda_sweep_kernels<scalar_t>()) {
      if (sweep::covers(w) && pow34_applies<acc_t>(scale, beta, k)) {
        const int vec = sweep::vector_width<scalar_t>(v, {dyp, xp, dxp});
        const sweep::Items it = sweep::make_backward_items(v, vec, w.span());
        const unsigned blocks = sweep::blocks_for("local_response_norm", it.count);
        sweep::dispatch<scalar_t>(w, vec, v.channels_last, [&](auto span, auto V, auto cl) {
          lrn_backward_sweep_kernel<decltype(span)::value, decltype(V)::value, decltype(cl)::value, scalar_t>
              <<<blocks, kThreads, 0, stream>>>(dyp, xp, dxp, v, it, acc_t(scale), Pow34{0.75f}, acc_t(k));
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    const LaunchShape s = pick_shape(v, w, /*backward=*/true, sizeof(acc_t));
    auto kernel = v.channels_last ? lrn_backward_kernel<true, scalar_t> : lrn_backward_kernel<false, scalar_t>;
    kernel<<<grid_for(v, s), kBlock, s.smem, stream>>>(dyp, xp, dxp, v, w, s.tc, s.tp, acc_t(scale), acc_t(beta),
                                                       acc_t(k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, CUDA, m) { impl<Forward, Backward>(m, &lrn_forward_cuda, &lrn_backward_cuda); }

}  // namespace lrn
}  // namespace alexnet_cuda
