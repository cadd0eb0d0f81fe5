// Fused ReLU -> LRN -> max-pool: CUDA kernels. See relu_lrn_max_pool2d.h for the math.
//
// Kernel variants (one line each):
//   forward_sweep_kernel<SPAN, V, CL, T>   3x3 pooling, LRN size <= 7, fp32/fp16/bf16,
//                                          beta = 0.75, k >= FLT_MIN, scale >= 0 (lrn::Pow34;
//                                          channels-last needs 16-byte vectors, see
//                                          sweep::vector_width): one work item per thread
//   backward_sweep_kernel<SPAN, V, CL, T>  the same cases, backward NCHW (stride 2)
//   backward_lanes_kernel<SPAN, V, G, T>   backward NHWC (SPAN <= V), warps sharing LRN halos
//   forward_kernel<CL, T>                  everything else (float64, other windows, any
//                                          beta/k): shared-memory tiles, exp2/log2 power
//   backward_kernel<CL, T>                 the same, backward
// AlexNet's stages run the sweep kernels (relu_lrn_max_pool2d_sweep.h). The tile kernels:
//
// Forward: ONE kernel. A block owns a tile of pooled outputs: tc channels (inside one LRN
// group) x nr pooled rows x nq pooled cols. It
//   1. loads the input patch those windows cover, (nr-1)*s_h + k_h rows x (nq-1)*s_w + k_w
//      cols, for the tile's channels plus the LRN halo (pre channels behind, post ahead;
//      zero outside the group) into shared memory as opmath, applying the ReLU on load;
//   2. computes the LRN value of every (channel, patch pixel) ONCE into shared memory
//      (overlapping 3/2 windows share rows and cols: 2.25 windows per pixel on average);
//   3. takes each window's max with PyTorch's tie/NaN rules and writes the pooled value
//      and a uint8 window-local argmax.
// The LRN result never touches global memory: x is read once (plus the tile halos,
// mostly L2 hits: channel tiles of one spatial tile are consecutive blocks), the output
// and 1 byte per output are written.
//
// Backward: ONE kernel. A block owns a tile of dx: tc channels x nr input rows x nq input
// cols. It
//   0. tabulates, per tile row/col, the range of pooling windows covering it (the only
//      integer divisions, once per block);
//   1. loads z = relu(x) for the tile's channels +- 2 * span halo channels;
//   2. for the t channels [c0 - post, c0 + tc + pre): gathers g (the pooled gradient
//      routed by the argmax, straight from dy/argmax in global memory: a few L1/L2 hits
//      per pixel, no atomics, deterministic order), recomputes s from z, and stores
//      t_j = g_j z_j s_j^(-beta-1) and, for its own channels, g_c s_c^(-beta);
//   3. dx_c = [x_c > 0 or NaN] * (g_c s_c^(-beta) - 2 scale beta z_c sum_{j in M(c)} t_j).
// Saved for backward: x and the uint8 argmax; nothing else (no LRN output, no scale).
//
// Threads: 32 x 8 blocks. threadIdx.x runs along the contiguous dim of the tensors (w for
// NCHW, c for channels_last) in every phase, so global loads and stores are coalesced and
// the shared tiles, stored with the same dim fastest, are free of bank conflicts (up to the
// stride-2 reads of the pooling phase). 2-D ranges are walked with an incremental carry,
// never a division. Element offsets are int64 (via the tensors' strides).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d_sweep.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {
namespace {

constexpr int kWarp = 32, kRows = 8, kThreads = kWarp * kRows;
constexpr size_t kSmemBytes = 48 * 1024;  // no opt-in needed at or below 48 KiB

// How blocks map to tiles. Forward: rows/cols are pooled outputs; backward: input pixels.
struct Tiling {
  int tc, th, tw;       // tile extents: channels, rows, cols
  int tiles_per_group;  // ceil(group_channels / tc)
  int nct, nth, ntw;    // tile counts along channels (all groups), rows, cols
};

struct Tile {
  int n;
  int c0, tc;      // channels [c0, c0 + tc), inside one group
  int gbeg, gend;  // that group's channels [gbeg, gend)
  int r0, nr;      // rows [r0, r0 + nr)
  int q0, nq;      // cols [q0, q0 + nq)
};

// blockIdx.x -> tile; channel tiles fastest, so the blocks sharing a spatial patch (and
// each other's channel halos) run together. Divisions once per block.
__device__ __forceinline__ Tile tile_of_block(const Tiling& t, int rows_total, int cols_total, int group_channels) {
  int64_t b = blockIdx.x;
  const int ct = static_cast<int>(b % t.nct);
  b /= t.nct;
  const int tx = static_cast<int>(b % t.ntw);
  b /= t.ntw;
  const int ty = static_cast<int>(b % t.nth);
  Tile r;
  r.n = static_cast<int>(b / t.nth);
  const int grp = ct / t.tiles_per_group;
  r.gbeg = grp * group_channels;
  r.gend = r.gbeg + group_channels;
  r.c0 = r.gbeg + (ct - grp * t.tiles_per_group) * t.tc;
  r.tc = min(t.tc, r.gend - r.c0);
  r.r0 = ty * t.th;
  r.nr = min(t.th, rows_total - r.r0);
  r.q0 = tx * t.tw;
  r.nq = min(t.tw, cols_total - r.q0);
  return r;
}

// fn(a, b, i) for a in [0, A), b in [0, B), i in [0, I): i along the lanes, the (a, b)
// pairs dealt round-robin to threadIdx.y, advanced with a carry instead of a division.
template <typename Fn>
__device__ __forceinline__ void walk(int A, int B, int I, Fn&& fn) {
  int a = 0, b = threadIdx.y;
  while (b >= B && a < A) {
    b -= B;
    ++a;
  }
  while (a < A) {
    for (int i = threadIdx.x; i < I; i += kWarp) fn(a, b, i);
    b += kRows;
    while (b >= B && a < A) {
      b -= B;
      ++a;
    }
  }
}

// fn(r, ph, pw) over rows (channels) x nh x nw pixels with the lanes along the
// contiguous dim: pw for NCHW, r (the channel) for channels-last.
template <bool CL, typename Fn>
__device__ __forceinline__ void tile_for(int rows, int nh, int nw, Fn&& fn) {
  if constexpr (CL) {
    walk(nh, nw, rows, [&](int ph, int pw, int r) { fn(r, ph, pw); });
  } else {
    walk(rows, nh, nw, fn);
  }
}

// Shared tiles: `rows` channel rows x P pixels (q = ph * width + pw), contiguous dim fastest.
template <bool CL>
__device__ __forceinline__ int sidx(int r, int q, int rows, int P) {
  return CL ? q * rows + r : r * P + q;
}

template <typename acc_t>
__device__ __forceinline__ acc_t* shared_buffer() {
  extern __shared__ __align__(16) unsigned char tile_smem[];
  return reinterpret_cast<acc_t*>(tile_smem);
}

// Shared: z rows for channels [c0 - pre, c0 + tc + post) x patch, then y rows for
// [c0, c0 + tc) x patch. Channel c0 + cc has its window in z rows cc .. cc + span.
template <bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, uint8_t* __restrict__ argmax, Geometry g,
                   Tiling t, acc_t scale, acc_t beta, acc_t k) {
  const Tile tl = tile_of_block(t, g.Ho, g.Wo, g.group_channels);
  const int pre = g.win.pre, span = g.win.span();
  const int pr = (tl.nr - 1) * g.SH + g.KH, pc = (tl.nq - 1) * g.SW + g.KW, P = pr * pc;
  const int zrows = tl.tc + span;
  acc_t* zs = shared_buffer<acc_t>();
  acc_t* ys = zs + zrows * P;
  const int h0 = tl.r0 * g.SH, w0 = tl.q0 * g.SW;
  const scalar_t* xn = x + int64_t(tl.n) * g.xs[0];
  const int cz = tl.c0 - pre;  // channel of z row 0

  // 1. z = relu(x), zero outside the group.
  tile_for<CL>(zrows, pr, pc, [&](int r, int ph, int pw) {
    const int c = cz + r;
    acc_t v = acc_t(0);
    if (c >= tl.gbeg && c < tl.gend) {
      v = relu(static_cast<acc_t>(xn[int64_t(c) * g.xs[1] + int64_t(h0 + ph) * g.xs[2] + int64_t(w0 + pw) * g.xs[3]]));
    }
    zs[sidx<CL>(r, ph * pc + pw, zrows, P)] = v;
  });
  __syncthreads();

  // 2. y = lrn(z) at every patch pixel of the tile's channels, once.
  tile_for<CL>(tl.tc, pr, pc, [&](int cc, int ph, int pw) {
    const int q = ph * pc + pw;
    acc_t ss = acc_t(0);
    for (int d = 0; d <= span; ++d) {
      const acc_t v = zs[sidx<CL>(cc + d, q, zrows, P)];
      ss += v * v;
    }
    ys[sidx<CL>(cc, q, tl.tc, P)] =
        as_stored<scalar_t>(lrn::forward_value<acc_t>(zs[sidx<CL>(cc + pre, q, zrows, P)], ss, scale, beta, k));
  });
  __syncthreads();

  // 3. max over each window (PyTorch's rules), value + uint8 argmax.
  const int rs = CL ? pc * tl.tc : pc, cs = CL ? tl.tc : 1;
  scalar_t* on = out + int64_t(tl.n) * g.os[0];
  uint8_t* an = argmax + int64_t(tl.n) * g.os[0];
  tile_for<CL>(tl.tc, tl.nr, tl.nq, [&](int cc, int oh, int ow) {
    acc_t best;
    int arg;
    pool_window<acc_t>(ys + sidx<CL>(cc, oh * g.SH * pc + ow * g.SW, tl.tc, P), rs, cs, g.KH, g.KW, &best, &arg);
    const int64_t off = int64_t(tl.c0 + cc) * g.os[1] + int64_t(tl.r0 + oh) * g.os[2] + int64_t(tl.q0 + ow) * g.os[3];
    on[off] = static_cast<scalar_t>(best);
    an[off] = static_cast<uint8_t>(arg);
  });
}

// Shared, in order (P = nr * nq tile pixels):
//   zs: z for channels [c0 - span, c0 + tc + span)           (tc + 2 span rows)
//   ts: t_j for j in [c0 - post, c0 + tc + pre)               (tc + span rows)
//   gs: g_c s_c^(-beta) for the tile's channels                (tc rows)
//   tab: per tile row: first/last+1 covering pooled row; per tile col: same for cols.
template <bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ dy, const uint8_t* __restrict__ am, const scalar_t* __restrict__ x,
                    scalar_t* __restrict__ dx, Geometry g, Tiling t, acc_t scale, acc_t beta, acc_t k) {
  const Tile tl = tile_of_block(t, g.H, g.W, g.group_channels);
  const int pre = g.win.pre, post = g.win.post, span = pre + post;
  const int nh = tl.nr, nw = tl.nq, P = nh * nw;
  const int zrows = tl.tc + 2 * span, trows = tl.tc + span;
  acc_t* zs = shared_buffer<acc_t>();
  acc_t* ts = zs + zrows * P;
  acc_t* gs = ts + trows * P;
  int* tab = reinterpret_cast<int*>(gs + tl.tc * P);  // [ohb | ohe] (nh each), [owb | owe] (nw each)
  int* owtab = tab + 2 * nh;
  const int h0 = tl.r0, w0 = tl.q0;

  // 0. covering windows per tile row and col.
  const max_pool2d::Axis ah{g.H, g.Ho, g.KH, g.SH, 0, 1}, aw{g.W, g.Wo, g.KW, g.SW, 0, 1};
  const int tid = threadIdx.y * kWarp + threadIdx.x;
  for (int i = tid; i < nh; i += kThreads) {
    tab[i] = max_pool2d::window_begin(ah, h0 + i);
    tab[nh + i] = max_pool2d::window_end(ah, h0 + i);
  }
  for (int i = tid; i < nw; i += kThreads) {
    owtab[i] = max_pool2d::window_begin(aw, w0 + i);
    owtab[nw + i] = max_pool2d::window_end(aw, w0 + i);
  }

  // 1. z = relu(x) with a 2 * span halo, zero outside the group.
  const scalar_t* xn = x + int64_t(tl.n) * g.xs[0];
  const int cz = tl.c0 - span;  // channel of z row 0
  tile_for<CL>(zrows, nh, nw, [&](int r, int ph, int pw) {
    const int c = cz + r;
    acc_t v = acc_t(0);
    if (c >= tl.gbeg && c < tl.gend) {
      v = relu(static_cast<acc_t>(xn[int64_t(c) * g.xs[1] + int64_t(h0 + ph) * g.xs[2] + int64_t(w0 + pw) * g.xs[3]]));
    }
    zs[sidx<CL>(r, ph * nw + pw, zrows, P)] = v;
  });
  __syncthreads();

  // 2. t row tr is channel j = c0 - post + tr: its LRN window is z rows tr .. tr + span,
  //    z_j is z row tr + pre. One power per element (lrn::inv_pows).
  const int cj = tl.c0 - post;
  const scalar_t* dyn = dy + int64_t(tl.n) * g.os[0];
  const uint8_t* amn = am + int64_t(tl.n) * g.os[0];
  tile_for<CL>(trows, nh, nw, [&](int tr, int ph, int pw) {
    const int q = ph * nw + pw;
    const int j = cj + tr;
    acc_t tv = acc_t(0);
    if (j >= tl.gbeg && j < tl.gend) {
      const int64_t pj = int64_t(j) * g.os[1];
      const acc_t gj = gather<scalar_t, acc_t>(dyn + pj, amn + pj, g.os[2], g.os[3], tab[ph], tab[nh + ph], owtab[pw],
                                               owtab[nw + pw], h0 + ph, w0 + pw, g.SH, g.SW, g.KW);
      acc_t ss = acc_t(0);
      for (int d = 0; d <= span; ++d) {
        const acc_t v = zs[sidx<CL>(tr + d, q, zrows, P)];
        ss += v * v;
      }
      const acc_t s = k + scale * ss;
      acc_t p0, p1;
      lrn::inv_pows(s, beta, p0, p1);
      tv = gj * zs[sidx<CL>(tr + pre, q, zrows, P)] * p1;
      const int cc = tr - post;
      if (cc >= 0 && cc < tl.tc) gs[sidx<CL>(cc, q, tl.tc, P)] = gj * p0;
    }
    ts[sidx<CL>(tr, q, trows, P)] = tv;
  });
  __syncthreads();

  // 3. channel c0 + cc: mirrored window = t rows cc .. cc + span; z_c = z row cc + span.
  const acc_t coef = acc_t(2) * scale * beta;
  scalar_t* dxn = dx + int64_t(tl.n) * g.xs[0];
  tile_for<CL>(tl.tc, nh, nw, [&](int cc, int ph, int pw) {
    const int q = ph * nw + pw;
    acc_t tsum = acc_t(0);
    for (int d = 0; d <= span; ++d) tsum += ts[sidx<CL>(cc + d, q, trows, P)];
    const acc_t zc = zs[sidx<CL>(cc + span, q, zrows, P)];
    // ReLU mask as torch's threshold_backward: zero where relu(x) <= 0 (a NaN passes).
    const acc_t v = zc <= acc_t(0) ? acc_t(0) : gs[sidx<CL>(cc, q, tl.tc, P)] - coef * zc * tsum;
    dxn[int64_t(tl.c0 + cc) * g.xs[1] + int64_t(h0 + ph) * g.xs[2] + int64_t(w0 + pw) * g.xs[3]] =
        static_cast<scalar_t>(v);
  });
}

// Sweep kernels: one work item per thread (relu_lrn_max_pool2d_sweep.h).
constexpr int kSweepThreads = lrn::sweep::kThreads;  // (kThreads is the tile kernels')
static_assert(kSweepThreads == sweep::kRunBlock, "channels-first forward classes come in whole blocks");

// Launched only where lrn::Pow34 applies (lrn::pow34_applies, decided per launch). The
// forward is bounded to 4 blocks an SM (50% occupancy): left to itself nvcc issues the
// NCHW item's row streams far ahead and needs twice the registers (bench/SASS.md).
template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kSweepThreads, sweep::kForwardBlocksPerSM)
    forward_sweep_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, uint8_t* __restrict__ am,
                         Geometry g, sweep::FusedItems it, acc_t scale, lrn::Pow34 pw, acc_t k) {
  const int64_t i0 = int64_t(blockIdx.x) * kSweepThreads;
  // Channels-first: whole blocks of items (make_items pads each class to kRunBlock), every
  // lane runs (the lanes exchange columns by shuffles).
  if (CL && i0 + threadIdx.x >= it.count) return;
  sweep::forward_item<SPAN, V, CL>(x, out, am, g, it, i0, int(threadIdx.x), scale, pw, k);
}

// Backward NCHW (V = 1, CL = false): one item per thread, the items numbered by class
// (sweep::locate_pair: interior odd rows, interior even rows, odd and even edge pairs, each
// class padded to whole warps) so that all 32 lanes of a warp run one compiled variant;
// padding lanes store nothing. At AlexNet's LRN size 5 (SPAN 4) the register count is
// bounded to 4 blocks an SM (50% occupancy), where ptxas fits the 16-bit types' batches of
// 2 channels (fp32: 1) without spills. Under that bound other spans spilled, so there
// ptxas keeps its own count (bench/SASS.md has the figures).
template <int SPAN>
constexpr int backward_min_blocks() {
  return SPAN == 4 ? 4 : 1;
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kSweepThreads, backward_min_blocks<SPAN>())
    backward_sweep_kernel(const scalar_t* __restrict__ dy, const uint8_t* __restrict__ am,
                          const scalar_t* __restrict__ x, scalar_t* __restrict__ dx, Geometry g, sweep::FusedItems it,
                          acc_t scale, lrn::Pow34 pw, acc_t k) {
  static_assert(V == 1 && !CL, "channels-last runs backward_lanes_kernel");
  const int64_t i = int64_t(blockIdx.x) * kSweepThreads + threadIdx.x;
  if (i < it.count) sweep::backward_item<SPAN>(dy, am, x, dx, g, it, i, scale, pw, k);
}

// Backward NHWC: the lanes of a warp share their LRN halos (sweep::backward_lanes), so
// every thread runs to the end, those past the last item included. Registers bounded to
// 3 blocks an SM: at LRN size 5 ptxas stays within 4 blocks' worth (50% occupancy), and
// unbounded or bounded to 4 blocks it spilled bf16 at sizes 1 to 3 (bench/SASS.md).
template <int SPAN, int V, bool GROUPS, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kSweepThreads, 3)
    backward_lanes_kernel(const scalar_t* __restrict__ dy, const uint8_t* __restrict__ am,
                          const scalar_t* __restrict__ x, scalar_t* __restrict__ dx, Geometry g, sweep::FusedItems it,
                          acc_t scale, lrn::Pow34 pw, acc_t k) {
  static_assert(kSweepThreads % sweep::kWarpLanes == 0, "blocks of whole warps");
  const int64_t t = int64_t(blockIdx.x) * kSweepThreads + threadIdx.x;
  sweep::backward_lanes<SPAN, V, GROUPS>(dy, am, x, dx, g, it, t / sweep::kWarpLanes, int(t % sweep::kWarpLanes), scale,
                                         pw, k);
}

// ------------------------------------------------------------------------ host side

size_t forward_smem(const Geometry& g, int tc, int th, int tw, size_t elem) {
  const int64_t pr = int64_t(th - 1) * g.SH + g.KH, pc = int64_t(tw - 1) * g.SW + g.KW;
  return size_t(2 * tc + g.win.span()) * size_t(pr * pc) * elem;
}

size_t backward_smem(const Geometry& g, int tc, int th, int tw, size_t elem) {
  return size_t(3 * tc + 3 * g.win.span()) * size_t(th) * size_t(tw) * elem + size_t(2 * (th + tw)) * sizeof(int);
}

struct Launch {
  Tiling t;
  size_t smem;
  unsigned blocks;
};

// Tile shapes (fp32; fp64 tiles shrink to fit):
//   forward  NCHW: 16 channels x 2 pooled rows x up to 31 pooled cols (a 55-wide AlexNet
//                  row is one tile wide: 5 x 55 input patch); 39.6 KB at (96, 55, 55).
//            NHWC: 64 channels x 2 x 4 pooled outputs (5 x 9 patch).
//   backward NCHW: 32 channels x 1 row x up to 64 cols; NHWC: 64 channels x 2 x 8 pixels.
// Each extent shrinks (rows first) until the tile fits in 48 KiB.
Launch pick_launch(const Geometry& g, bool cl, bool backward, size_t elem) {
  int tc, th, tw;
  if (!backward) {
    tc = std::min(g.group_channels, cl ? 64 : 16);
    th = 2;
    tw = cl ? 4 : std::max(1, (64 - g.KW) / g.SW + 1);
  } else {
    tc = std::min(g.group_channels, cl ? 64 : 32);
    th = cl ? 2 : 1;
    tw = cl ? 8 : 64;
  }
  const int rows_total = backward ? g.H : g.Ho, cols_total = backward ? g.W : g.Wo;
  th = std::max(1, std::min(th, rows_total));
  tw = std::max(1, std::min(tw, cols_total));
  auto bytes = [&] { return backward ? backward_smem(g, tc, th, tw, elem) : forward_smem(g, tc, th, tw, elem); };
  while (bytes() > kSmemBytes) {
    if (th > 1) {
      th = (th + 1) / 2;
    } else if (cl ? tw > 1 : tc > 1) {
      (cl ? tw : tc) = ((cl ? tw : tc) + 1) / 2;
    } else if (cl ? tc > 1 : tw > 1) {
      (cl ? tc : tw) = ((cl ? tc : tw) + 1) / 2;
    } else {
      TORCH_CHECK(false, "relu_lrn_max_pool2d (CUDA): size=", g.win.span() + 1,
                  " (clamped to the group) with kernel_size (", g.KH, ", ", g.KW,
                  ") needs more than 48 KiB of shared memory for one tile; use a smaller LRN "
                  "size or pooling kernel, or run on CPU");
    }
  }
  Launch L;
  L.t.tc = tc;
  L.t.th = th;
  L.t.tw = tw;
  L.t.tiles_per_group = (g.group_channels + tc - 1) / tc;
  L.t.nct = L.t.tiles_per_group * (g.C / g.group_channels);
  L.t.nth = (rows_total + th - 1) / th;
  L.t.ntw = (cols_total + tw - 1) / tw;
  const int64_t blocks = int64_t(g.N) * L.t.nth * L.t.ntw * L.t.nct;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "relu_lrn_max_pool2d (CUDA): input too large (", blocks,
              " tiles) for one launch");
  L.blocks = static_cast<unsigned>(blocks);
  L.smem = bytes();
  return L;
}

const dim3 kBlock(kWarp, kRows);

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& input, int64_t size, double scale, double beta,
                                                double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                int64_t lrn_groups) {
  const char* op = "relu_lrn_max_pool2d_forward";
  TORCH_CHECK(input.is_cuda(), op, ": input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(input.device());
  ForwardTensors t = prepare_forward(input, size, kernel_size, stride, lrn_groups, op);
  const at::Tensor &x = t.x, &out = t.out, &argmax = t.argmax;
  const Geometry& g = t.g;
  if (out.numel() == 0) return {out, argmax};
  const bool cl = kernel_format(input) == at::MemoryFormat::ChannelsLast;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "relu_lrn_max_pool2d_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if constexpr (lrn::sweep::has_cuda_sweep_kernels<scalar_t>()) {
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      uint8_t* ap = argmax.mutable_data_ptr<uint8_t>();
      const int vec = sweep::vector_width<scalar_t>(g, cl, /*backward=*/false, {xp, op, ap});
      if (vec != 0 && lrn::pow34_applies<acc_t>(scale, beta, k)) {
        const int slots = at::cuda::getCurrentDeviceProperties()->multiProcessorCount * sweep::kForwardBlocksPerSM;
        const sweep::FusedItems it = sweep::make_items(g, cl, /*backward=*/false, vec, slots);
        const unsigned blocks = lrn::sweep::blocks_for("relu_lrn_max_pool2d", it.count);
        sweep::dispatch<scalar_t>(g, cl, [&](auto span, auto V, auto CL) {
          forward_sweep_kernel<decltype(span)::value, decltype(V)::value, decltype(CL)::value, scalar_t>
              <<<blocks, kSweepThreads, 0, stream>>>(xp, op, ap, g, it, acc_t(scale), lrn::Pow34{0.75f}, acc_t(k));
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    const Launch L = pick_launch(g, cl, /*backward=*/false, sizeof(acc_t));
    auto kernel = cl ? forward_kernel<true, scalar_t> : forward_kernel<false, scalar_t>;
    kernel<<<L.blocks, kBlock, L.smem, stream>>>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                                 argmax.mutable_data_ptr<uint8_t>(), g, L.t, acc_t(scale), acc_t(beta),
                                                 acc_t(k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, argmax};
}

at::Tensor backward_cuda(const at::Tensor& grad_output, const at::Tensor& argmax, const at::Tensor& input, int64_t size,
                         double scale, double beta, double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         int64_t lrn_groups) {
  const char* op = "relu_lrn_max_pool2d_backward";
  TORCH_CHECK(input.is_cuda(), op, ": input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(input.device());
  BackwardTensors t = prepare_backward(grad_output, argmax, input, size, kernel_size, stride, lrn_groups, op);
  const at::Tensor &x = t.x, &dy = t.dy, &am = t.am, &dx = t.dx;
  const Geometry& g = t.g;
  if (dx.numel() == 0) return dx;
  const bool cl = kernel_format(input) == at::MemoryFormat::ChannelsLast;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "relu_lrn_max_pool2d_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if constexpr (lrn::sweep::has_cuda_sweep_kernels<scalar_t>()) {
      const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
      const uint8_t* ap = am.const_data_ptr<uint8_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
      const int vec = sweep::vector_width<scalar_t>(g, cl, /*backward=*/true, {dyp, ap, xp, dxp});
      if (vec != 0 && lrn::pow34_applies<acc_t>(scale, beta, k)) {
        const sweep::FusedItems it = sweep::make_items(g, cl, /*backward=*/true, vec, /*slots=*/0);
        const int64_t threads = cl ? sweep::backward_lane_warps(it) * sweep::kWarpLanes : it.count;
        const unsigned blocks = lrn::sweep::blocks_for("relu_lrn_max_pool2d", threads);
        sweep::dispatch<scalar_t>(g, cl, [&](auto span, auto V, auto CL) {
          constexpr int S = decltype(span)::value, VV = decltype(V)::value;
          if constexpr (decltype(CL)::value) {
            if constexpr (S <= VV) {  // (vector_width's condition: no other span comes here)
              auto kernel = sweep::lanes_hold_groups(it) ? backward_lanes_kernel<S, VV, true, scalar_t>
                                                         : backward_lanes_kernel<S, VV, false, scalar_t>;
              kernel<<<blocks, kSweepThreads, 0, stream>>>(dyp, ap, xp, dxp, g, it, acc_t(scale), lrn::Pow34{0.75f},
                                                           acc_t(k));
            }
          } else
            backward_sweep_kernel<S, VV, false, scalar_t><<<blocks, kSweepThreads, 0, stream>>>(
                dyp, ap, xp, dxp, g, it, acc_t(scale), lrn::Pow34{0.75f}, acc_t(k));
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    const Launch L = pick_launch(g, cl, /*backward=*/true, sizeof(acc_t));
    auto kernel = cl ? backward_kernel<true, scalar_t> : backward_kernel<false, scalar_t>;
    kernel<<<L.blocks, kBlock, L.smem, stream>>>(dy.const_data_ptr<scalar_t>(), am.const_data_ptr<uint8_t>(),
                                                 x.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), g, L.t,
                                                 acc_t(scale), acc_t(beta), acc_t(k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, CUDA, m) { impl<Forward, Backward>(m, &forward_cuda, &backward_cuda); }

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
