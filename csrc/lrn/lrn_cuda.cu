// LRN: CUDA kernels. See lrn.h for the math.
//
// One block computes a tile of up to 128 channels x 32 pixels, in three steps:
//  1. copy the tile plus its channel halo (the zero-padded window neighbours) from
//     global memory into shared memory as fp32 (double for double), warps running along
//     whichever dim is contiguous (pixels for NCHW, channels for channels-last): one
//     coalesced read of the input;
//  2. each thread sweeps one pixel column over a run of channels, keeping the last
//     `size` squares in registers (a shift register: one new square per output instead
//     of `size` shared-memory reads), and writes its results to a shared output tile;
//  3. copy the output tile to global memory, coalesced again.
// Windows wider than kMaxRing channels fall back to summing each window from shared
// memory. The input is read from DRAM once even though every element is in `size`
// windows, and all index arithmetic in the loops is multiply-add: no integer division.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lrn/lrn.h"

namespace alexnet_cuda {
namespace lrn {
namespace {

constexpr int kWarp = 32, kRowsPerPass = 8, kThreads = kWarp * kRowsPerPass;
constexpr int kTilePixels = 32;
constexpr int kMaxTileChannels = 128;
constexpr int kMaxRing = 8;            // register windows for size <= 8 (AlexNet: 5)
constexpr int kSmemBytes = 48 * 1024;  // no opt-in needed below 48 KiB

// A tile: pixels [p0, p0 + tp) of outer index o, channels [c0, c0 + tc).
struct Tile {
  int64_t o, p0;
  int c0, tc, tp;
  int valid;  // pixels of the tile inside the tensor
  __device__ int64_t global(const View& v, int c, int q) const {
    return o * v.outer_stride + int64_t(c) * v.channel_stride + (p0 + q) * v.pixel_stride;
  }
};

__device__ __forceinline__ Tile make_tile(const View& v, int tc, int tp) {
  const int64_t tiles_per_outer = (v.pixels + tp - 1) / tp;  // once per block
  Tile t;
  t.o = blockIdx.x / tiles_per_outer;
  t.p0 = (blockIdx.x - t.o * tiles_per_outer) * tp;
  t.c0 = blockIdx.y * tc;
  t.tc = min(tc, int(v.channels) - t.c0);
  t.tp = tp;
  t.valid = static_cast<int>(min(int64_t(tp), v.pixels - t.p0));
  return t;
}

// A shared-memory region of `rows` channels x tp pixels with the contiguous dim fastest:
// NCHW r * tp + q; channels-last q * pitch + r with an odd pitch, so that the column
// sweeps (lanes on consecutive pixels) hit distinct banks too.
template <bool CL, typename acc_t>
struct Shared {
  acc_t* base;
  int pitch;
  __device__ static int pitch_for(int rows, int tp) { return CL ? (rows | 1) : tp; }
  __device__ static int elems(int rows, int tp) { return CL ? tp * (rows | 1) : rows * tp; }
  __device__ acc_t& operator()(int r, int q) const { return CL ? base[q * pitch + r] : base[r * pitch + q]; }
};

template <bool CL, typename acc_t>
__device__ __forceinline__ Shared<CL, acc_t> carve(acc_t*& cursor, int rows, int tp) {
  Shared<CL, acc_t> s{cursor, Shared<CL, acc_t>::pitch_for(rows, tp)};
  cursor += Shared<CL, acc_t>::elems(rows, tp);
  return s;
}

// Calls fn(r, q) for r in [0, rows), q in [0, tp), consecutive lanes on the contiguous dim.
template <bool CL, typename Fn>
__device__ __forceinline__ void for_tile(int rows, int tp, Fn fn) {
  if (CL) {
    for (int q = threadIdx.y; q < tp; q += kRowsPerPass)
      for (int r = threadIdx.x; r < rows; r += kWarp) fn(r, q);
  } else {
#pragma unroll 4
    for (int r = threadIdx.y; r < rows; r += kRowsPerPass)
      for (int q = threadIdx.x; q < tp; q += kWarp) fn(r, q);
  }
}

// Copy channels [c_first, c_first + rows) of the tile's pixels into `dst` (zero outside
// [0, C) and past the last pixel).
template <bool CL, typename acc_t, typename scalar_t>
__device__ __forceinline__ void load_rows(Shared<CL, acc_t> dst, const scalar_t* __restrict__ src,
                                          const View& v, const Tile& t, int c_first, int rows) {
  for_tile<CL>(rows, t.tp, [&](int r, int q) {
    const int c = c_first + r;
    acc_t val = 0;
    if (c >= 0 && c < v.channels && q < t.valid) val = static_cast<acc_t>(src[t.global(v, c, q)]);
    dst(r, q) = val;
  });
}

// Copy the tile's tc x tp results to global memory.
template <bool CL, typename acc_t, typename scalar_t>
__device__ __forceinline__ void store_rows(scalar_t* __restrict__ dst, Shared<CL, acc_t> src, const View& v,
                                           const Tile& t) {
  for_tile<CL>(t.tc, t.tp, [&](int r, int q) {
    if (q < t.valid) dst[t.global(v, t.c0 + r, q)] = static_cast<scalar_t>(src(r, q));
  });
}

// This thread's column sweep: pixel column q, rows [begin, end) of an n-row range split
// into kThreads / tp runs (tp is a power of two <= 32).
struct Sweep {
  int q, begin, end;
};

__device__ __forceinline__ Sweep my_sweep(int n, int tp) {
  const int tid = threadIdx.y * kWarp + threadIdx.x;
  const int runs = kThreads / tp;
  const int per = (n + runs - 1) / runs;
  Sweep s;
  s.q = tid & (tp - 1);
  s.begin = min(n, (tid / tp) * per);
  s.end = min(n, s.begin + per);
  return s;
}

// Window sums along a column: emit(r, sum_{d=0}^{span} value(r + d)) for r in [begin, end).
// RING > 0: the last span+1 values live in a register shift register (span < RING; all
// indices are compile-time constants, so the array stays in registers). RING == 0: each
// window is summed from shared memory (any span).
template <int RING, typename acc_t, typename Value, typename Emit>
__device__ __forceinline__ void sweep_window_sums(int begin, int end, int span, Value value, Emit emit) {
  if constexpr (RING > 0) {
    acc_t ring[RING];
#pragma unroll
    for (int i = 0; i < RING; ++i) ring[i] = 0;
    auto push = [&](acc_t x) {
#pragma unroll
      for (int i = 0; i + 1 < RING; ++i) ring[i] = ring[i + 1];
      ring[RING - 1] = x;
    };
    if (begin < end)
      for (int d = 0; d < span; ++d) push(value(begin + d));  // rows begin .. begin + span - 1
    for (int r = begin; r < end; ++r) {
      push(value(r + span));
      acc_t sum = 0;
#pragma unroll
      for (int i = 0; i < RING; ++i)
        if (i >= RING - 1 - span) sum += ring[i];
      emit(r, sum);
    }
  } else {
    for (int r = begin; r < end; ++r) {
      acc_t sum = 0;
      for (int d = 0; d <= span; ++d) sum += value(r + d);
      emit(r, sum);
    }
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t* shared_buffer() {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  return reinterpret_cast<acc_t*>(smem_bytes);
}

// Forward. xs: x for channels [c0 - pre, c0 + tc + post), so channel c0 + cc has its
// window in rows cc .. cc + span and x_c in row cc + pre. ys: the tile's results.
template <bool CL, int RING, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    lrn_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, View v, Window w,
                       int tc, int tp, acc_t scale, acc_t beta, acc_t k) {
  const Tile t = make_tile(v, tc, tp);
  const int span = w.span();
  acc_t* cursor = shared_buffer<acc_t>();
  const auto xs = carve<CL>(cursor, t.tc + span, t.tp);
  const auto ys = carve<CL>(cursor, t.tc, t.tp);
  load_rows(xs, x, v, t, t.c0 - w.pre, t.tc + span);
  __syncthreads();
  const Sweep sw = my_sweep(t.tc, t.tp);
  const int q = sw.q;
  sweep_window_sums<RING, acc_t>(
      sw.begin, sw.end, span,
      [&](int r) { const acc_t xv = xs(r, q); return xv * xv; },
      [&](int cc, acc_t sumsq) { ys(cc, q) = forward_value(xs(cc + w.pre, q), sumsq, scale, beta, k); });
  __syncthreads();
  store_rows(y, ys, v, t);
}

// Backward. Shared regions (row -> channel):
//   xs: x  for channels [c0 - pre - post, c0 + tc + pre + post)   (tc + 2 span rows)
//   ts: dy, then t_j = dy_j x_j s_j^(-beta-1), for j in [c0 - post, c0 + tc + pre)
//   gs: dy_c s_c^(-beta), then dx_c, for the tile's own channels
// Phase 2 sweeps the t range: row tj is channel j = c0 - post + tj, whose window is xs
// rows tj .. tj + span, x_j is xs row tj + pre; t replaces dy in place (same thread).
// Phase 3 sweeps the tile's channels: channel c0 + cc sums t rows cc .. cc + span (the
// mirrored window j in [c - post, c + pre]) and has x_c in xs row cc + span.
template <bool CL, int RING, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    lrn_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                        scalar_t* __restrict__ dx, View v, Window w, int tc, int tp, acc_t scale,
                        acc_t beta, acc_t k) {
  const Tile t = make_tile(v, tc, tp);
  const int span = w.span();
  const int rows_t = t.tc + span;
  acc_t* cursor = shared_buffer<acc_t>();
  const auto xs = carve<CL>(cursor, t.tc + 2 * span, t.tp);
  const auto ts = carve<CL>(cursor, rows_t, t.tp);
  const auto gs = carve<CL>(cursor, t.tc, t.tp);
  load_rows(xs, x, v, t, t.c0 - span, t.tc + 2 * span);
  load_rows(ts, dy, v, t, t.c0 - w.post, rows_t);
  __syncthreads();
  // One power per element: p1 = s^(-beta-1), and s^(-beta) = p1 * s.
  const acc_t beta1 = beta + acc_t(1);
  const Sweep s2 = my_sweep(rows_t, t.tp);
  int q = s2.q;
  sweep_window_sums<RING, acc_t>(
      s2.begin, s2.end, span,
      [&](int r) { const acc_t xv = xs(r, q); return xv * xv; },
      [&](int tj, acc_t sumsq) {
        const acc_t s = k + scale * sumsq;
        const acc_t p1 = inv_pow(s, beta1);
        const acc_t dyj = ts(tj, q);
        const int j = t.c0 - w.post + tj, cc = tj - w.post;
        if (cc >= 0 && cc < t.tc) gs(cc, q) = dyj * p1 * s;
        // Channels outside [0, C) contribute nothing (their dy is zero, but s may be 0).
        ts(tj, q) = (j >= 0 && j < v.channels) ? dyj * xs(tj + w.pre, q) * p1 : acc_t(0);
      });
  __syncthreads();
  const acc_t coef = acc_t(2) * scale * beta;
  const Sweep s3 = my_sweep(t.tc, t.tp);
  q = s3.q;
  sweep_window_sums<RING, acc_t>(
      s3.begin, s3.end, span, [&](int r) { return ts(r, q); },
      [&](int cc, acc_t tsum) { gs(cc, q) = gs(cc, q) - coef * xs(cc + span, q) * tsum; });
  __syncthreads();
  store_rows(dx, gs, v, t);
}

// Tile shape: up to 128 channels (all of AlexNet's 96; more channels are split into tiles
// with a halo) x 32 pixels, halving the pixels until the tile fits in 48 KiB.
struct LaunchShape {
  int tc, tp;
  size_t smem;
};

LaunchShape pick_shape(const View& v, Window w, bool backward, size_t elem) {
  LaunchShape s;
  s.tc = static_cast<int>(std::min<int64_t>(v.channels, kMaxTileChannels));
  const int span = w.span();
  // Rows of every shared region (+1 per region for the channels-last odd pitch).
  const int64_t rows = backward ? (s.tc + 2 * span + 1) + (s.tc + span + 1) + (s.tc + 1)
                                : (s.tc + span + 1) + (s.tc + 1);
  int tp = kTilePixels;
  while (tp > 1 && size_t(rows) * tp * elem > kSmemBytes) tp /= 2;
  TORCH_CHECK(size_t(rows) * tp * elem <= kSmemBytes,
              "local_response_norm (CUDA): the window (size) is too large for the CUDA kernel's "
              "shared-memory tile (", rows, " channel rows); use a smaller size or run on CPU");
  s.tp = tp;
  s.smem = size_t(rows) * tp * elem;
  return s;
}

dim3 grid_for(const View& v, const LaunchShape& s) {
  const int64_t tiles = v.outer * ((v.pixels + s.tp - 1) / s.tp);
  TORCH_CHECK(tiles < (int64_t(1) << 31), "local_response_norm (CUDA): input too large");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>((v.channels + s.tc - 1) / s.tc));
}

const dim3 kBlock(kWarp, kRowsPerPass);

// kernel<CL, RING> for the tensor's layout and window width.
template <template <bool, int, typename, typename> class K, typename scalar_t, typename acc_t>
auto select(const View& v, Window w) {
  const bool ring = w.span() < kMaxRing;
  if (v.channels_last) return ring ? K<true, kMaxRing, scalar_t, acc_t>::fn : K<true, 0, scalar_t, acc_t>::fn;
  return ring ? K<false, kMaxRing, scalar_t, acc_t>::fn : K<false, 0, scalar_t, acc_t>::fn;
}
template <bool CL, int RING, typename scalar_t, typename acc_t>
struct Forward {
  static constexpr auto fn = lrn_forward_kernel<CL, RING, scalar_t, acc_t>;
};
template <bool CL, int RING, typename scalar_t, typename acc_t>
struct Backward {
  static constexpr auto fn = lrn_backward_kernel<CL, RING, scalar_t, acc_t>;
};

at::Tensor lrn_forward_cuda(const at::Tensor& input, int64_t size, double scale, double beta, double k) {
  check_args(input, size, "lrn_forward");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = kernel_layout(input);
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const View v = make_view(x);
  const Window w = make_window(size, v.channels);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const LaunchShape s = pick_shape(v, w, /*backward=*/false, sizeof(acc_t));
    auto kernel = select<Forward, scalar_t, acc_t>(v, w);
    kernel<<<grid_for(v, s), kBlock, s.smem, stream>>>(x.const_data_ptr<scalar_t>(),
                                                         y.mutable_data_ptr<scalar_t>(), v, w, s.tc, s.tp,
                                                         acc_t(scale), acc_t(beta), acc_t(k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, int64_t size,
                             double scale, double beta, double k) {
  check_backward_args(grad_output, input, size);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = kernel_layout(input);
  const at::Tensor dy = with_layout_of(grad_output, x);
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return dx;
  const View v = make_view(x);
  const Window w = make_window(size, v.channels);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const LaunchShape s = pick_shape(v, w, /*backward=*/true, sizeof(acc_t));
    auto kernel = select<Backward, scalar_t, acc_t>(v, w);
    kernel<<<grid_for(v, s), kBlock, s.smem, stream>>>(
        dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), v, w,
        s.tc, s.tp, acc_t(scale), acc_t(beta), acc_t(k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, CUDA, m) {
  m.impl("lrn_forward", &lrn_forward_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
}

}  // namespace lrn
}  // namespace alexnet_cuda
