// Fused ReLU -> LRN -> max-pool: sweep kernels (the per-thread bodies), shared verbatim
// by the CUDA kernels (one call per GPU thread) and the CPU kernels (one call per work
// item), like lrn/lrn_sweep.h, whose backward they reuse. Math: relu_lrn_max_pool2d.h.
// The CPU runs the GPU's indexing and order of operations, not its last bits (the power
// and FMA contraction differ: lrn_sweep.h), so near-ties of the pooling may differ.
//
// Kernel variants (template <SPAN, V, CL, scalar_t>, one line each):
//   forward_channels_first    NCHW: one pooled pixel, a run of channels, 3x3 ring in registers
//   forward_channels_last     NHWC: one pooled pixel, V channels (+ halo vectors) per tap
//   backward_channels_first   NCHW: one input pixel, a run of channels (lrn::sweep::backward_sweep)
//   backward_channels_last    NHWC: one input pixel, V channels (lrn::sweep::backward_vector)
//
// Used for 3x3 pooling windows (AlexNet's 3/2, any stride) and LRN sizes <= 7 (SPAN <= 6,
// clamped to the group); other shapes take the shared-memory tile kernels. Channels
// outside the item's LRN group [gb, ge) read as zero.
//
// Forward, one pooled output per item, PyTorch's tie/NaN rules (pool_window's order):
//  * channels-first (NCHW): an item is one pooled pixel and a run of channels of one
//    group. A shift register holds z = relu(x) at the window's 9 pixels for the SPAN + 1
//    channels of the current LRN window; each step loads the 9 pixels of one new channel,
//    computes the 9 LRN values, and writes one pooled value and its uint8 argmax.
//    Adjacent GPU threads own adjacent pooled columns.
//  * channels-last (NHWC): an item is one pooled pixel and one vector of V channels; for
//    each of the 9 window pixels it loads that vector and its neighbours (the LRN halo,
//    L1 hits) and folds V LRN values into V running maxima. Adjacent threads own
//    adjacent channel vectors: coalesced.
// The LRN value of an input pixel is computed once per window that holds it (2.25 times
// on average for 3/2), one power each; nothing but the pooled outputs and argmax is
// written.
//
// Backward, one input pixel per item: lrn::sweep's backward with z = relu(x) loads, dy
// replaced by the gathered pooled gradient (relu_lrn_max_pool2d::gather: the windows whose argmax is
// this pixel, row-major, no atomics) and torch's ReLU mask applied to the result. NCHW
// sweeps a run of channels (V = 1: each pixel has its own windows); NHWC takes one
// vector of V channels with the vector's argmax bytes and dy read together.
#pragma once

#include <c10/macros/Macros.h>

#include "lrn/lrn_sweep.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {
namespace sweep {

using lrn::sweep::load_or_zero;
using lrn::sweep::shift;
using lrn::sweep::store;
using lrn::sweep::Vec;

constexpr int K = 3;          // pooling window (K x K) handled here
constexpr int KK = K * K;
constexpr int kChannelRun = lrn::sweep::kChannelRun;

template <int V, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void relu_all(acc_t* v) {
LRN_UNROLL
  for (int i = 0; i < V; ++i) v[i] = relu(v[i]);
}

// ---------------------------------------------------------------- forward

// x, out, am point at image n; the item is pooled pixel (oh, ow), channels [cb, ce) of
// the group [gb, ge). ring[i * KK + p] = z of channel c - PRE + i (after the step's
// shift) at window pixel p = th * K + tw. x is contiguous NCHW (xs[3] == 1, vector_width
// checks it): a window row is three adjacent elements, read at immediate offsets from
// one row pointer; the pointers advance by the channel stride.
template <int SPAN, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_channels_first(const scalar_t* x, scalar_t* out, uint8_t* am,
                                                              const Geo& g, int gb, int ge, int cb, int ce, int oh,
                                                              int ow, acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, N = (SPAN + 1) * KK;
  const int64_t rs = g.xs[2], cs = g.xs[1];
  const scalar_t* px = x + int64_t(oh) * g.SH * rs + int64_t(ow) * g.SW + (cb - PRE) * cs;
  auto load_channel = [&](int c, acc_t* v) {  // channel c, at px; then px moves on
    const bool inside = c >= gb && c < ge;
LRN_UNROLL
    for (int th = 0; th < K; ++th) {
      const scalar_t* row = px + th * rs;
LRN_UNROLL
      for (int tw = 0; tw < K; ++tw) v[th * K + tw] = inside ? relu(static_cast<acc_t>(row[tw])) : acc_t(0);
    }
    px += cs;
  };
  acc_t ring[N];
LRN_UNROLL
  for (int i = 0; i < SPAN; ++i) load_channel(cb - PRE + i, ring + (i + 1) * KK);
  const int64_t obase = int64_t(oh) * g.os[2] + int64_t(ow) * g.os[3] + int64_t(cb) * g.os[1];
  scalar_t* po = out + obase;
  uint8_t* pa = am + obase;
  // Not unrolled: unrolling SPAN + 1 times turns the ring shift into register renaming
  // (-15% instructions) but takes 84-89 registers (25% occupancy; measured, bench/SASS.md).
  for (int c = cb; c < ce; ++c) {
    shift<N, KK>(ring);
    load_channel(c + POST, ring + SPAN * KK);
    acc_t best = max_pool2d::lowest_value<acc_t>();
    int arg = 0;
LRN_UNROLL
    for (int p = 0; p < KK; ++p) {
      acc_t sumsq = acc_t(0);
LRN_UNROLL
      for (int i = 0; i <= SPAN; ++i) sumsq += ring[i * KK + p] * ring[i * KK + p];
      // Compared as stored: rounded to scalar_t first (stock pools the stored LRN output).
      const acc_t v = as_stored<scalar_t>(lrn::forward_value(ring[PRE * KK + p], sumsq, scale, pw, k));
      if (v > best || at::_isnan(v)) {  // strict >: first max wins; NaN always wins
        best = v;
        arg = p;
      }
    }
    *po = static_cast<scalar_t>(best);
    *pa = static_cast<uint8_t>(arg);
    po += g.os[1];
    pa += g.os[1];
  }
}

// Channels-last (x, out, am channel-contiguous): pooled pixel (oh, ow), channels
// [c, c + V) inside the group [gb, ge) (Cg a multiple of V).
template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_channels_last(const scalar_t* x, scalar_t* out, uint8_t* am,
                                                             const Geo& g, int gb, int ge, int c, int oh, int ow,
                                                             acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, H = (PRE + V - 1) / V;
  acc_t best[V];
  int arg[V];
LRN_UNROLL
  for (int i = 0; i < V; ++i) {
    best[i] = max_pool2d::lowest_value<acc_t>();
    arg[i] = 0;
  }
  // Window taps as runtime loops: unrolled, nvcc issues all 9 taps' vector loads at once
  // (92 registers for bf16, 25% occupancy; one row at a time: 71, 38%). One tap at a
  // time keeps the registers at one tap's vectors; its loads (2H + 1 vectors of 16 bytes)
  // are still in flight together.
LRN_NO_UNROLL
  for (int th = 0; th < K; ++th) {
LRN_NO_UNROLL
    for (int tw = 0; tw < K; ++tw) {
      const scalar_t* px = x + int64_t(oh * g.SH + th) * g.xs[2] + int64_t(ow * g.SW + tw) * g.xs[3];
      acc_t r[(2 * H + 1) * V];
LRN_UNROLL
      for (int b = -H; b <= H; ++b) {
        const int cv = c + b * V;
        load_or_zero<V>(px + cv, cv >= gb && cv < ge, r + (b + H) * V);
      }
      relu_all<(2 * H + 1) * V>(r);
LRN_UNROLL
      for (int i = 0; i < V; ++i) {
        acc_t sumsq = acc_t(0);
LRN_UNROLL
        for (int d = -PRE; d <= POST; ++d) sumsq += r[H * V + i + d] * r[H * V + i + d];
        const acc_t v = as_stored<scalar_t>(lrn::forward_value(r[H * V + i], sumsq, scale, pw, k));
        if (v > best[i] || at::_isnan(v)) {
          best[i] = v;
          arg[i] = th * K + tw;
        }
      }
    }
  }
  const int64_t o = int64_t(oh) * g.os[2] + int64_t(ow) * g.os[3] + c;
  store<V>(out + o, best);
  Vec<uint8_t, V> a;
LRN_UNROLL
  for (int i = 0; i < V; ++i) a.v[i] = static_cast<uint8_t>(arg[i]);
  lrn::sweep::check_aligned<uint8_t, V>(am + o);
  *reinterpret_cast<Vec<uint8_t, V>*>(am + o) = a;
}

// ---------------------------------------------------------------- backward

// The pooling windows covering input pixel (h, w): [ohb, ohe) x [owb, owe).
struct Cover {
  int ohb, ohe, owb, owe;
};

C10_HOST_DEVICE C10_ALWAYS_INLINE Cover cover(const Geo& g, int h, int w) {
  const max_pool2d::Axis ah{g.H, g.Ho, g.KH, g.SH, 0, 1}, aw{g.W, g.Wo, g.KW, g.SW, 0, 1};
  return Cover{max_pool2d::window_begin(ah, h), max_pool2d::window_end(ah, h), max_pool2d::window_begin(aw, w),
               max_pool2d::window_end(aw, w)};
}

// dy, am, x, dx point at image n; the item is input pixel (h, w), channels [cb, ce) of
// the group [gb, ge). backward_sweep calls each load/store for consecutive channels, so
// each keeps a running pointer; the gather's window offsets are 32-bit (vector_width).
template <int SPAN, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_channels_first(const scalar_t* dy, const uint8_t* am,
                                                               const scalar_t* x, scalar_t* dx, const Geo& g, int gb,
                                                               int ge, int cb, int ce, int h, int w, acc_t scale,
                                                               const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2;
  const Cover cv = cover(g, h, w);
  const int64_t px = int64_t(h) * g.xs[2] + int64_t(w) * g.xs[3];
  const int64_t xcs = g.xs[1], ocs = g.os[1];
  const int osh = static_cast<int>(g.os[2]), osw = static_cast<int>(g.os[3]);
  const scalar_t* xp = x + px + (cb - POST - PRE) * xcs;
  const scalar_t* dyp = dy + (cb - POST) * ocs;
  const uint8_t* amp = am + (cb - POST) * ocs;
  scalar_t* dxp = dx + px + cb * xcs;
  lrn::sweep::backward_sweep<SPAN, 1, 1>(
      [&](int c, acc_t* v) {
        v[0] = c >= gb && c < ge ? relu(static_cast<acc_t>(*xp)) : acc_t(0);
        xp += xcs;
      },
      [&](int c, acc_t* v) {
        acc_t sum = acc_t(0);
        if (c >= gb && c < ge) {  // relu_lrn_max_pool2d::gather, row-major, 32-bit offsets
          for (int oh = cv.ohb; oh < cv.ohe; ++oh) {
            const int dh = (h - oh * g.SH) * g.KW;
            for (int ow = cv.owb; ow < cv.owe; ++ow) {
              const int off = oh * osh + ow * osw;
              if (int(amp[off]) == dh + (w - ow * g.SW)) sum += static_cast<acc_t>(dyp[off]);
            }
          }
        }
        v[0] = sum;
        dyp += ocs;
        amp += ocs;
      },
      [&](int, const acc_t* v, const acc_t* z) {
        // torch's ReLU mask (threshold_backward): 0 where relu(x) <= 0; NaN passes.
        *dxp = static_cast<scalar_t>(z[0] <= acc_t(0) ? acc_t(0) : v[0]);
        dxp += xcs;
      },
      gb, ge, cb, ce, scale, pw, k);
}

// Channels-last: input pixel (h, w), channels [c, c + V) of the group [gb, ge).
template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_channels_last(const scalar_t* dy, const uint8_t* am,
                                                              const scalar_t* x, scalar_t* dx, const Geo& g, int gb,
                                                              int ge, int c, int h, int w, acc_t scale, const Pow& pw,
                                                              acc_t k) {
  const Cover cv = cover(g, h, w);
  const int64_t px = int64_t(h) * g.xs[2] + int64_t(w) * g.xs[3];
  lrn::sweep::backward_vector<SPAN, V>(
      [&](int cc, acc_t* v) {
        load_or_zero<V>(x + px + cc, cc >= gb && cc < ge, v);
        relu_all<V>(v);
      },
      [&](int cc, acc_t* v) {
LRN_UNROLL
        for (int i = 0; i < V; ++i) v[i] = acc_t(0);
        if (cc < gb || cc >= ge) return;
        for (int oh = cv.ohb; oh < cv.ohe; ++oh) {  // row-major, as relu_lrn_max_pool2d::gather
          const int dh = (h - oh * g.SH) * g.KW;
          for (int ow = cv.owb; ow < cv.owe; ++ow) {
            const int64_t o = int64_t(oh) * g.os[2] + int64_t(ow) * g.os[3] + cc;
            lrn::sweep::check_aligned<uint8_t, V>(am + o);
            const Vec<uint8_t, V> a = *reinterpret_cast<const Vec<uint8_t, V>*>(am + o);
            acc_t d[V];
            load_or_zero<V>(dy + o, true, d);
            const int here = dh + (w - ow * g.SW);
LRN_UNROLL
            for (int i = 0; i < V; ++i)
              if (int(a.v[i]) == here) v[i] += d[i];
          }
        }
      },
      [&](int cc, const acc_t* v, const acc_t* z) {
        acc_t out[V];
LRN_UNROLL
        for (int i = 0; i < V; ++i) out[i] = z[i] <= acc_t(0) ? acc_t(0) : v[i];
        store<V>(dx + px + cc, out);
      },
      gb, ge, c, scale, pw, k);
}

// ---------------------------------------------------------------- work items
// Forward items run over pooled pixels, backward items over input pixels:
//   channels-first: i = ((n * runs + run) * rows + row) * cols + col
//                   (runs: channel runs of kChannelRun inside each group, all groups)
//   channels-last:  i = ((n * rows + row) * cols + col) * vecs + vec
struct Items {
  int64_t count;
  int rows, cols;  // pooled (forward) or input (backward) extent
  int runs_per_group, runs, run;  // channels-first
  int vecs;                       // channels-last: V-vectors per pixel (C / V)
  int vec;                        // V
};

inline Items make_items(const Geo& g, bool channels_last, bool backward, int vec) {
  Items it;
  it.rows = backward ? g.H : g.Ho;
  it.cols = backward ? g.W : g.Wo;
  it.vec = vec;
  it.run = g.Cg < kChannelRun ? g.Cg : kChannelRun;
  it.runs_per_group = (g.Cg + it.run - 1) / it.run;
  it.runs = it.runs_per_group * (g.C / g.Cg);
  it.vecs = g.C / vec;
  const int64_t pixels = int64_t(g.N) * it.rows * it.cols;
  it.count = channels_last ? pixels * it.vecs : pixels * it.runs;
  return it;
}

// Where item i is: image n, (row, col), and its channels: [cb, ce) (channels-first) or
// [cb, cb + V) (channels-last), inside the group [gb, ge).
struct Where {
  int n, row, col, gb, ge, cb, ce;
};

C10_HOST_DEVICE C10_ALWAYS_INLINE Where locate(const Geo& g, const Items& it, int64_t i, bool channels_last) {
  using lrn::sweep::divmod;
  // Peel the indices innermost first: [vec (channels-last)], col, row, [run (channels-first)], n.
  Where wh;
  int64_t q = i, r;
  if (channels_last) {
    divmod(q, it.vecs, q, r);
    wh.cb = static_cast<int>(r) * it.vec;
    wh.ce = wh.cb + it.vec;
    wh.gb = wh.cb / g.Cg * g.Cg;
  }
  divmod(q, it.cols, q, r);
  wh.col = static_cast<int>(r);
  divmod(q, it.rows, q, r);
  wh.row = static_cast<int>(r);
  if (!channels_last) {
    divmod(q, it.runs, q, r);
    const int run = static_cast<int>(r), grp = run / it.runs_per_group;
    wh.gb = grp * g.Cg;
    wh.cb = wh.gb + (run - grp * it.runs_per_group) * it.run;
    wh.ce = wh.cb + it.run < wh.gb + g.Cg ? wh.cb + it.run : wh.gb + g.Cg;
  }
  wh.n = static_cast<int>(q);
  wh.ge = wh.gb + g.Cg;
  return wh;
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_item(const scalar_t* x, scalar_t* out, uint8_t* am, const Geo& g,
                                                    const Items& it, int64_t i, acc_t scale, const Pow& pw, acc_t k) {
  const Where wh = locate(g, it, i, CL);
  const scalar_t* xn = x + int64_t(wh.n) * g.xs[0];
  const int64_t on = int64_t(wh.n) * g.os[0];
  if constexpr (CL) {
    forward_channels_last<SPAN, V>(xn, out + on, am + on, g, wh.gb, wh.ge, wh.cb, wh.row, wh.col, scale, pw, k);
  } else {
    forward_channels_first<SPAN>(xn, out + on, am + on, g, wh.gb, wh.ge, wh.cb, wh.ce, wh.row, wh.col, scale, pw,
                                 k);
  }
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_item(const scalar_t* dy, const uint8_t* am, const scalar_t* x,
                                                     scalar_t* dx, const Geo& g, const Items& it, int64_t i,
                                                     acc_t scale, const Pow& pw, acc_t k) {
  const Where wh = locate(g, it, i, CL);
  const int64_t xn = int64_t(wh.n) * g.xs[0], on = int64_t(wh.n) * g.os[0];
  if constexpr (CL) {
    backward_channels_last<SPAN, V>(dy + on, am + on, x + xn, dx + xn, g, wh.gb, wh.ge, wh.cb, wh.row, wh.col, scale,
                                    pw, k);
  } else {
    backward_channels_first<SPAN>(dy + on, am + on, x + xn, dx + xn, g, wh.gb, wh.ge, wh.cb, wh.ce, wh.row, wh.col,
                                  scale, pw, k);
  }
}

// ---------------------------------------------------------------- host-side dispatch

// The sweep kernels take 3x3 pooling and LRN windows lrn::sweep covers.
inline bool covers(const Geo& g) { return g.KH == K && g.KW == K && lrn::sweep::covers(g.win); }

// The items' width V, or 0 when the sweep kernels do not apply (then the tile
// kernels take over): they need covers(g); channels-first items are single pixels
// (V = 1); channels-last items are vectors of 16 bytes (V = 16 / sizeof), so each
// group's channel count must be a multiple of V and every tensor 16-byte aligned.
template <typename scalar_t>
int vector_width(const Geo& g, bool channels_last, std::initializer_list<const void*> ptrs) {
  if (!covers(g)) return 0;
  if (!channels_last && g.xs[3] != 1) return 0;  // forward_channels_first reads rows at immediate offsets
  // 32-bit offsets inside one plane (the window offsets of the forward, the gather's).
  const int64_t limit = int64_t(1) << 31;
  if (int64_t(g.H) * (g.xs[2] < 0 ? -g.xs[2] : g.xs[2]) + int64_t(g.W) * (g.xs[3] < 0 ? -g.xs[3] : g.xs[3]) >= limit ||
      int64_t(g.Ho) * (g.os[2] < 0 ? -g.os[2] : g.os[2]) + int64_t(g.Wo) * (g.os[3] < 0 ? -g.os[3] : g.os[3]) >= limit)
    return 0;
  if (!channels_last) return 1;
  constexpr int vec = 16 / sizeof(scalar_t);
  if (vec < 2 || g.Cg % vec != 0 || g.xs[1] != 1 || g.os[1] != 1) return 0;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 0;
  return vec;
}

// fn(integral_constant<SPAN>, integral_constant<V>, integral_constant<bool, CL>).
template <typename scalar_t, typename Fn>
void dispatch(const Geo& g, bool channels_last, Fn&& fn) {
  auto with_span = [&](auto span) {
    if (channels_last)
      fn(span, std::integral_constant<int, int(16 / sizeof(scalar_t))>{}, std::true_type{});
    else
      fn(span, std::integral_constant<int, 1>{}, std::false_type{});
  };
  lrn::sweep::dispatch_span(g.win.span(), with_span);
}

}  // namespace sweep
}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
