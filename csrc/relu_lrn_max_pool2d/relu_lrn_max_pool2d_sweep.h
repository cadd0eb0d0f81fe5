// Fused ReLU -> LRN -> max-pool: sweep kernels (the per-thread bodies), shared verbatim
// by the CUDA kernels (one call per GPU thread) and the CPU kernels (one call per work
// item), like lrn/lrn_sweep.h, whose backward they reuse. Math: relu_lrn_max_pool2d.h.
// The CPU runs the GPU's indexing and order of operations, not its last bits (the power
// and FMA contraction differ: lrn_sweep.h), so near-ties of the pooling may differ.
//
// Kernel variants (template <SPAN, V, CL, scalar_t>, one line each):
//   forward_channels_first    NCHW: one pooled column, a run of rows, 4 channels; rows shared
//   forward_channels_last     NHWC: one pooled column, a run of rows, V channels; rows shared
//   backward_channels_first   NCHW, stride 2: a pixel pair of one row, a run of channels; loop-free gather
//   backward_lanes            NHWC, stride 2: V channels of a run of 4 pixels; lanes share LRN halos
//
// Used for 3x3 pooling windows (AlexNet's 3/2, any stride) and LRN sizes <= 7 (SPAN <= 6,
// clamped to the group); the NCHW forward also needs kPoolChannels (4) to divide the
// group's channels, the backward stride 2, and the NHWC backward SPAN <= V. Other shapes
// take the shared-memory tile kernels. Channels outside the item's LRN group [gb, ge)
// read as zero.
//
// Forward, PyTorch's tie/NaN rules (pool_window's order):
//  * channels-first (NCHW): an item is one pooled column ow, a run of up to kPoolRows
//    pooled rows and kPoolChannels channels of one group. Per pooled row it computes the
//    LRN at the window's middle and bottom input rows, streaming the channels
//    cb - PRE .. cb + 3 + POST of a row through a ring of SPAN + 1 (lrn_row); with stride
//    2 the window's top row is the previous window's bottom row, whose maximum is carried
//    (fold: a row's maximum is a segment of the window's scan). Adjacent GPU lanes own
//    adjacent pooled columns (locate_run), and with stride 2 across a window's right
//    column is the next window's left one: a lane computes its 2 left columns and takes
//    the right one from the next lane by a shuffle. So 4 LRN values per pooled output
//    instead of 9 (the unique pixels of a 3/2 window), and each input value is loaded
//    (KC + SPAN) / KC = 2 times per row. The CPU (and other strides) computes the third
//    column itself: the same values by the same code.
//  * channels-last (NHWC): an item is one pooled column, a run of pooled rows (as many
//    runs as fill the launch's waves best: channels_last_row_run) and one vector of V
//    channels, its rows walked as channels-first's (6 LRN values per pooled output and
//    channel). A tap loads the vector and its neighbours (the LRN halo, L1 hits) and folds
//    V LRN values into V running maxima. Adjacent threads own adjacent channel vectors:
//    coalesced.
// One power per LRN value; nothing but the pooled outputs and argmax is written.
//
// Backward: the LRN backward with z = relu(x), dy replaced by the gathered pooled
// gradient (relu_lrn_max_pool2d::gather: the windows whose argmax is the pixel,
// row-major, no atomics) and torch's ReLU mask applied to the result. Stride 2 fixes a
// pixel's windows and its tap codes in them by the parities of its row and column, so
// the gathers have no loops. NCHW sweeps a run of channels for two adjacent pixels of a
// row (lrn::sweep::backward_sweep with V = 2); NHWC gives each lane of a warp one vector
// of V channels of a run of pixels, and the lanes exchange their LRN halos by shuffles
// (backward_lanes).
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <type_traits>
#include <utility>

#include "int_divider.h"
#include "lrn/lrn_sweep.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {
namespace sweep {

using lrn::sweep::load_or_zero;
using lrn::sweep::shift;
using lrn::sweep::store;
using lrn::sweep::Vec;

constexpr int K = 3;  // pooling window (K x K) handled here
constexpr int KK = K * K;
// Channels per channels-first backward item: a group of up to kChannelRun channels is one
// run (AlexNet's groups of 48: SPAN = 4 priming steps per 48 outputs); larger groups split
// evenly into runs of at most kLongGroupRun. Each run pays its SPAN priming steps, but at
// the 256-channel stage (groups of 128) two runs of 64 made 768 blocks a batch of 128
// images: 1.45 waves of the 528 resident blocks (132 SMs x 4), a 1.38 tail factor; four
// runs of 32 make 1512 blocks, 2.86 waves (tail 1.05), for 6% more steps.
constexpr int kChannelRun = 64;
constexpr int kLongGroupRun = 32;

// The channels-first backward's run length for groups of group_channels channels.
inline int backward_run(int group_channels) {
  if (group_channels <= kChannelRun) return group_channels;
  const int runs = (group_channels + kLongGroupRun - 1) / kLongGroupRun;
  return (group_channels + runs - 1) / runs;
}

template <int V, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void relu_all(acc_t* v) {
  LRN_UNROLL
  for (int i = 0; i < V; ++i) v[i] = relu(v[i]);
}

// ---------------------------------------------------------------- forward

// Channels per channels-first forward item, and its most pooled rows (make_items splits
// the pooled rows evenly into runs of at most kPoolRows; the channels-last forward's runs
// follow from the launch's waves, channels_last_row_run).
constexpr int kPoolChannels = 4;
// Channels-last backward items (backward_lanes): a run of kLanePixels<V> pixels of one row,
// V channels each, 16 values in all (4 pixels fp32, 2 bf16/fp16), so its gathered
// gradients fit 16 registers; even, so each pixel's column parity is its place in the run.
constexpr int kRunValues = 16;
constexpr int lane_pixels(int V) { return kRunValues / V; }
template <int V>
constexpr int kLanePixels = lane_pixels(V);
constexpr int kPoolRows = 13;
// The forward sweep kernel's resident blocks an SM (its launch bound), and the resident
// blocks of an H100 (132 SMs), for which the CPU test ops lay out their items.
constexpr int kForwardBlocksPerSM = 4;
constexpr int kH100ForwardSlots = 132 * kForwardBlocksPerSM;

// a * b + c: one FMA on the GPU (what nvcc's contraction gives, asked for here: left to
// itself it squares each z once and adds, 20% more instructions in lrn_row), two
// roundings on the CPU, as the CPU build's other sums (lrn_sweep.h).
C10_HOST_DEVICE C10_ALWAYS_INLINE float mul_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return a * b + c;
#endif
}
C10_HOST_DEVICE C10_ALWAYS_INLINE double mul_add(double a, double b, double c) { return a * b + c; }

// The window sums of two neighbouring channels, c and c + 1 with c even (counted from the
// first channel of the group). Their windows share SPAN channels, so the sums take that
// shared part once: with w(0 .. SPAN + 1) the values of channels c - PRE .. c + 1 + POST,
//   shared = w(1)^2 + ... + w(SPAN)^2 (in that order),
//   s_c = w(0)^2 + shared,  s_{c+1} = w(SPAN + 1)^2 + shared,
// SPAN + 2 products for two windows instead of 2 (SPAN + 1). SQUARE = false sums the
// values themselves (the backward's t over the mirrored windows, w(0) then at c - POST).
// Every kernel of the fused op sums its windows in this order (all but the channels-first
// backward: backward_channels_first), so the CPU-native and the sweep kernels agree bit
// for bit; values outside the group are zeros here and absent there, the same sums.
template <int SPAN, bool SQUARE = true, typename acc_t, typename Get>
C10_HOST_DEVICE C10_ALWAYS_INLINE void pair_sums(Get&& w, acc_t& s0, acc_t& s1) {
  auto first = [&](int i) { return SQUARE ? w(i) * w(i) : w(i); };
  if constexpr (SPAN == 0) {
    s0 = first(0);
    s1 = first(1);
  } else {
    auto add = [&](int i, acc_t sum) { return SQUARE ? mul_add(w(i), w(i), sum) : w(i) + sum; };
    acc_t shared = first(1);
    LRN_UNROLL
    for (int t = 2; t <= SPAN; ++t) shared = add(t, shared);
    s0 = add(0, shared);
    s1 = add(SPAN + 1, shared);
  }
}

// PyTorch's pooling step (pool_window): v replaces the running maximum when v > best or v
// is NaN. The scan of a window splits into segments (here: its rows) whose own results
// fold in with this same step: a NaN in a later segment still wins (it is that
// segment's result), a NaN result of an earlier one is kept (v > NaN is false), and
// otherwise the later segment wins only with a strictly larger value: first max wins.
// A segment's scan may also start at its first value instead of -inf (arg = that tap):
// it gives the same result and argmax, -inf and NaN included.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void fold(acc_t& best, int& arg, acc_t v, int a) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<acc_t, float>::value) {
    // Two compares and two selects. Written as C++ (the CPU's form below), nvcc branched
    // around some of these (the bottom row's folds): ~16 more instructions per pooled row.
    asm("{\n\t.reg .pred take, nan;\n\t"
        "setp.gt.f32 take, %2, %0;\n\t"
        "setp.nan.f32 nan, %2, %2;\n\t"
        "or.pred take, take, nan;\n\t"
        "selp.f32 %0, %2, %0, take;\n\t"
        "selp.b32 %1, %3, %1, take;\n\t}"
        : "+f"(best), "+r"(arg)
        : "f"(v), "r"(a));
    return;
  }
#endif
  if (v > best || at::_isnan(v)) {  // strict >: first max wins; NaN always wins
    best = v;
    arg = a;
  }
}

// relu (torch.relu: NaN stays NaN) in one instruction on the GPU: max.NaN(v, 0). It
// differs from relu() only for v = -0, which it makes +0: the LRN value of either is a
// zero, the pooling compares them equal, and only the sign of an all-zero window's
// output can differ.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t relu_max(acc_t v) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<acc_t, float>::value) {
    float r;
    asm("max.NaN.f32 %0, %1, 0f00000000;" : "=f"(r) : "f"(v));
    return r;
  }
#endif
  return relu(v);
}

// y[i] = as_stored<scalar_t>(y[i]) for i < N. bf16 on the GPU: pairs in one packed
// conversion (cvt.rn.bf16x2.f32, the rounding of a single one), each half shifted back.
template <typename scalar_t, int N, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void as_stored_all(acc_t* y) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<scalar_t, c10::BFloat16>::value && std::is_same<acc_t, float>::value) {
    LRN_UNROLL
    for (int i = 0; i + 1 < N; i += 2) {
      unsigned u;
      asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(u) : "f"(y[i + 1]), "f"(y[i]));
      y[i] = __uint_as_float(u << 16);
      y[i + 1] = __uint_as_float(u & 0xffff0000u);
    }
    if constexpr (N % 2 == 1) y[N - 1] = as_stored<scalar_t>(y[N - 1]);
    return;
  }
#endif
  LRN_UNROLL
  for (int i = 0; i < N; ++i) y[i] = as_stored<scalar_t>(y[i]);
}

// One window row of the channels-first forward: the LRN values y (as stored, as_stored)
// of channels cb .. cb + KC - 1 at the first NT taps of one input row. p points at that
// row's first tap in channel cb - PRE; channel cb - PRE + i is at p + i * cs (the pointer
// steps by cs), a window row is NT adjacent elements at immediate offsets. The channels
// stream through a ring of SPAN + 1 channel tuples (a constant index after unrolling:
// register renaming, no moves); once channel j's window is in, its NT values go to
// tap(j, tw, y), tw = 0 .. NT - 1. FIRST: the item starts its LRN group, so the PRE
// stream channels behind it are outside; LAST: it ends the group, the POST channels after
// it are outside. Those read as zero, unloaded (known at compile time: no test per load).
template <int SPAN, int KC, int NT, bool FIRST, bool LAST, typename scalar_t, typename acc_t, typename Pow,
          typename Tap>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lrn_row(const scalar_t* p, int cs, acc_t scale, const Pow& pw, acc_t k,
                                               Tap&& tap) {
  constexpr int PRE = (SPAN + 1) / 2, NR = SPAN + 2;
  static_assert(KC % 2 == 0, "channels go in pairs (pair_sums)");
  acc_t ring[NR][NT];
  LRN_UNROLL
  for (int i = 0; i < KC + SPAN; ++i) {
    const bool in = !(FIRST && i < PRE) && !(LAST && i >= PRE + KC);
    LRN_UNROLL
    for (int tw = 0; tw < NT; ++tw) ring[i % NR][tw] = in ? relu_max(static_cast<acc_t>(p[tw])) : acc_t(0);
    p += cs;
    if (i < SPAN + 1 || (i - SPAN) % 2 == 0) continue;
    // Channels cb + j - 1 and cb + j (j odd): their windows are stream channels j - 1 ..
    // j + SPAN, summed as a pair.
    const int j = i - SPAN;
    acc_t y[2 * NT];  // channel j - 1's taps, then j's
    LRN_UNROLL
    for (int tw = 0; tw < NT; ++tw) {
      acc_t s0, s1;
      pair_sums<SPAN>([&](int t) { return ring[(j - 1 + t) % NR][tw]; }, s0, s1);
      y[tw] = lrn::forward_value(ring[(j - 1 + PRE) % NR][tw], s0, scale, pw, k);
      y[NT + tw] = lrn::forward_value(ring[(j + PRE) % NR][tw], s1, scale, pw, k);
    }
    // Compared as stored: rounded to scalar_t first (stock pools the stored LRN output).
    as_stored_all<scalar_t, 2 * NT>(y);
    LRN_UNROLL
    for (int tw = 0; tw < NT; ++tw) tap(j - 1, tw, y[tw]);
    LRN_UNROLL
    for (int tw = 0; tw < NT; ++tw) tap(j, tw, y[NT + tw]);
  }
}

// The value lane + 1 of the warp holds in v (lane 31: its own). The channels-first
// forward's neighbouring lanes own neighbouring pooled columns (locate_run), so with
// stride 2 a window's right tap column is the next lane's left one.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t from_next_lane(acc_t v) {
#if defined(__CUDA_ARCH__)
  return __shfl_down_sync(0xffffffffu, v, 1);
#else
  return v;  // (unused: the CPU computes the column itself, SHARE = false)
#endif
}

// x, out, am point at image n; the item is pooled column ow, pooled rows [ohb, ohe) and
// channels [cb, cb + kPoolChannels) of an LRN group (FIRST / LAST: the item starts / ends
// it). x is contiguous NCHW (xs[3] == 1; vector_width checks that, the 32-bit channel and
// row offsets, and that kPoolChannels divides the group). Each pooled row takes the
// window's middle and bottom input rows (lrn_row) and, with stride 2, the previous
// window's bottom row as its top row: that row's maximum (a segment, see fold) is carried
// over instead of recomputed. Other strides compute the top row too.
// SHARE (the GPU, stride 2 across): a 3/2 window's right column 2 ow + 2 is the left
// column of window ow + 1, which the next lane computes (locate_run): the lane computes
// its 2 left columns and takes the right one from the next lane (from_next_lane). So 4
// LRN values per pooled output and channel (the unique pixels of a 3/2 window: 2 x 2)
// instead of 6, 2 MUFU each. A lane that is its row's extra column (locate_run's helper,
// `shift`) has no window: it reads the columns 2 ow - 1 and 2 ow (inside the row) and
// passes on column 2 ow, its tap 1. Without SHARE (the CPU, other strides) an item
// computes all 3 columns: the same values, by the same code, as the next lane's. Per
// pooled row and channel (SHARE): 4 LRN values, 7 folds, 2 shuffles, 4 loads. Only
// `store` items write.
template <int SPAN, bool FIRST, bool LAST, bool SHARE, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_column(const scalar_t* x, scalar_t* out, uint8_t* am, const Geometry& g,
                                                      int cb, int ohb, int run, int ow, bool shift, bool store,
                                                      acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, KC = kPoolChannels, NT = SHARE ? 2 : K;
  const int cs = static_cast<int>(g.xs[1]), rs = static_cast<int>(g.xs[2]);
  const int ocs = static_cast<int>(g.os[1]), ors = static_cast<int>(g.os[2]);
  const scalar_t* px =
      x + int64_t(cb - PRE) * g.xs[1] + int64_t(ohb) * g.SH * g.xs[2] + int64_t(ow) * g.SW - (SHARE && shift ? 1 : 0);
  const int64_t obase = int64_t(cb) * g.os[1] + int64_t(ohb) * g.os[2] + int64_t(ow) * g.os[3];
  scalar_t* po = out + obase;
  uint8_t* pa = am + obase;
  // tap(j, tw, y) for the 3 columns of a window row, each channel's in order (the pooling
  // scan's); with SHARE the right column comes from the next lane after the row.
  auto row = [&](const scalar_t* p, auto&& tap) {
    if constexpr (SHARE) {
      acc_t left[KC];  // what the previous lane needs: column 0 (a helper's: tap 1)
      lrn_row<SPAN, KC, NT, FIRST, LAST, scalar_t>(p, cs, scale, pw, k, [&](int j, int tw, acc_t v) {
        if (tw == 0) left[j] = v;
        if (tw == 1 && shift) left[j] = v;
        tap(j, tw, v);
      });
      LRN_UNROLL
      for (int j = 0; j < KC; ++j) tap(j, 2, from_next_lane(left[j]));
    } else {
      lrn_row<SPAN, KC, NT, FIRST, LAST, scalar_t>(p, cs, scale, pw, k, tap);
    }
  };
  // best/arg: the running maximum of the current window; rb/ra: the maximum of its bottom
  // row alone (tap columns 0..2), the next window's top row when the stride is 2.
  acc_t best[KC], rb[KC];
  int arg[KC], ra[KC];
  // A row scan that starts at its first tap (fold): the window's top row, the bottom row.
  auto start_row = [](acc_t* b, int* a) {
    return [b, a](int j, int tw, acc_t v) {
      if (tw == 0) {
        b[j] = v;
        a[j] = 0;
      } else {
        fold(b[j], a[j], v, tw);
      }
    };
  };
  // `run` pooled rows (the items' row_run, the same for every lane: the shuffles need the
  // whole warp); rows past Ho (a shorter last run) repeat the last row and store nothing.
  row(px, start_row(best, arg));
  for (int oh = ohb, r = 0;;) {
    row(px + rs, [&](int j, int tw, acc_t v) { fold(best[j], arg[j], v, K + tw); });
    row(px + 2 * rs, start_row(rb, ra));
    const bool live = store && oh < g.Ho;
    LRN_UNROLL
    for (int j = 0; j < KC; ++j) {
      fold(best[j], arg[j], rb[j], ra[j] + 2 * K);  // the bottom row, as one segment
      if (live) {
        po[j * ocs] = static_cast<scalar_t>(best[j]);
        pa[j * ocs] = static_cast<uint8_t>(arg[j]);
      }
    }
    if (++r == run) break;
    const int step = ++oh < g.Ho ? 1 : 0;
    px += step * g.SH * rs;
    po += step * ors;
    pa += step * ors;
    if (g.SH == 2) {  // the new top row is the old bottom row
      LRN_UNROLL
      for (int j = 0; j < KC; ++j) {
        best[j] = rb[j];
        arg[j] = ra[j];
      }
    } else {
      row(px, start_row(best, arg));
    }
  }
}

// The item's variant is its class (locate_run): 0 neither, 1 FIRST (the run starts its
// group: with kPoolChannels | group_channels (vector_width) and PRE, POST < kPoolChannels only a
// group's first run has halo channels behind the group), 2 LAST (ends it: halo ahead
// outside), 3 both. SHARE: see forward_column (the caller's choice: the GPU with stride 2
// across).
template <int SPAN, bool SHARE, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_channels_first(const scalar_t* x, scalar_t* out, uint8_t* am,
                                                              const Geometry& g, int cls, int cb, int ohb, int run,
                                                              int ow, bool shift, bool store, acc_t scale,
                                                              const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, KC = kPoolChannels;
  static_assert(PRE < KC && POST < KC, "the halo reaches past the neighbouring item");
  if (cls == 0)
    forward_column<SPAN, false, false, SHARE>(x, out, am, g, cb, ohb, run, ow, shift, store, scale, pw, k);
  else if (cls == 1)
    forward_column<SPAN, true, false, SHARE>(x, out, am, g, cb, ohb, run, ow, shift, store, scale, pw, k);
  else if (cls == 2)
    forward_column<SPAN, false, true, SHARE>(x, out, am, g, cb, ohb, run, ow, shift, store, scale, pw, k);
  else
    forward_column<SPAN, true, true, SHARE>(x, out, am, g, cb, ohb, run, ow, shift, store, scale, pw, k);
}

// Channels-last (x, out, am channel-contiguous): pooled column ow, pooled rows
// [ohb, ohe), channels [c, c + V) inside the group [gb, ge) (group_channels a multiple of V). The
// rows are walked as in forward_column: per pooled row the window's middle and bottom
// input rows, the top row's maximum carried over from the previous window when the
// stride is 2. One tap = one input pixel: the item's vector and its H halo vectors on
// each side (the neighbours' own vectors: L1 hits), V LRN values.
// INSIDE: every halo vector is inside the group (all but a group's first and last
// vector): plain loads, no zeroing.
template <int SPAN, int V, bool INSIDE, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_pixels_last(const scalar_t* x, scalar_t* out, uint8_t* am,
                                                           const Geometry& g, int gb, int ge, int c, int ohb, int ohe,
                                                           int ow, acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, H = (PRE + V - 1) / V;
  const int ws = static_cast<int>(g.xs[3]), rs = static_cast<int>(g.xs[2]);  // 32-bit: vector_width
  // The halo vectors inside the group: fixed for the item.
  bool in[2 * H + 1];
  LRN_UNROLL
  for (int b = -H; b <= H; ++b) in[b + H] = INSIDE || (c + b * V >= gb && c + b * V < ge);
  // f(i, y) for the V LRN values of the input pixel at p (channel 0 of that pixel).
  auto lrn_tap = [&](const scalar_t* p, auto&& f) {
    acc_t r[(2 * H + 1) * V];
    LRN_UNROLL
    for (int b = -H; b <= H; ++b) load_or_zero<V>(p + c + b * V, in[b + H], r + (b + H) * V);
    LRN_UNROLL
    for (int i = 0; i < (2 * H + 1) * V; ++i) r[i] = relu_max(r[i]);
    acc_t y[V];
    static_assert(V % 2 == 0, "channels go in pairs (pair_sums)");
    LRN_UNROLL
    for (int i = 0; i < V; i += 2) {
      const acc_t* w = r + H * V + i - PRE;  // the window of channel c + i, and one more
      acc_t s0, s1;
      pair_sums<SPAN>([&](int t) { return w[t]; }, s0, s1);
      y[i] = lrn::forward_value(r[H * V + i], s0, scale, pw, k);
      y[i + 1] = lrn::forward_value(r[H * V + i + 1], s1, scale, pw, k);
    }
    as_stored_all<scalar_t, V>(y);
    LRN_UNROLL
    for (int i = 0; i < V; ++i) f(i, y[i]);
  };
  // A window row's maximum, the scan started at its first tap (fold). Taps 1 and 2 as a
  // runtime loop: unrolled, nvcc issues all taps' vector loads at once and the bf16
  // kernel no longer fits its register bound; one tap at a time keeps the registers at
  // one tap's vectors, whose 2H + 1 loads are still in flight together.
  auto row_max = [&](const scalar_t* p, acc_t* b, int* a) {
    lrn_tap(p, [&](int i, acc_t v) {
      b[i] = v;
      a[i] = 0;
    });
    LRN_NO_UNROLL
    for (int tw = 1; tw < K; ++tw) lrn_tap(p + tw * ws, [&](int i, acc_t v) { fold(b[i], a[i], v, tw); });
  };
  const scalar_t* px = x + int64_t(ohb) * g.SH * rs + int64_t(ow) * g.SW * ws;
  int64_t o = int64_t(ohb) * g.os[2] + int64_t(ow) * g.os[3] + c;
  acc_t best[V], rb[V];  // as forward_column's
  int arg[V], ra[V];
  row_max(px, best, arg);
  for (int oh = ohb;;) {
    LRN_NO_UNROLL
    for (int tw = 0; tw < K; ++tw)
      lrn_tap(px + rs + tw * ws, [&](int i, acc_t v) { fold(best[i], arg[i], v, K + tw); });
    row_max(px + 2 * rs, rb, ra);
    Vec<uint8_t, V> a;
    LRN_UNROLL
    for (int i = 0; i < V; ++i) {
      fold(best[i], arg[i], rb[i], ra[i] + 2 * K);  // the bottom row, as one segment
      a.v[i] = static_cast<uint8_t>(arg[i]);
    }
    store<V>(out + o, best);
    lrn::sweep::check_aligned<uint8_t, V>(am + o);
    *reinterpret_cast<Vec<uint8_t, V>*>(am + o) = a;
    if (++oh == ohe) break;
    px += g.SH * rs;
    o += g.os[2];
    if (g.SH == 2) {  // the new top row is the old bottom row
      LRN_UNROLL
      for (int i = 0; i < V; ++i) {
        best[i] = rb[i];
        arg[i] = ra[i];
      }
    } else {
      row_max(px, best, arg);
    }
  }
}

// inside: the item's halo vectors all lie inside its group, c - H V >= gb and
// c + (H + 1) V <= ge (its vector class: make_items, inside_halo_vectors).
template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_channels_last(const scalar_t* x, scalar_t* out, uint8_t* am,
                                                             const Geometry& g, int gb, int ge, int c, bool inside,
                                                             int ohb, int ohe, int ow, acc_t scale, const Pow& pw,
                                                             acc_t k) {
  // The INSIDE variant for 4-channel vectors (fp32) only: with 8 (fp16/bf16) the item's
  // 4 x 8 maxima and arguments leave too few registers for two variants (bench/SASS.md).
  if constexpr (V <= 4) {
    if (inside) {
      forward_pixels_last<SPAN, V, true>(x, out, am, g, gb, ge, c, ohb, ohe, ow, scale, pw, k);
      return;
    }
  }
  forward_pixels_last<SPAN, V, false>(x, out, am, g, gb, ge, c, ohb, ohe, ow, scale, pw, k);
}

// The halo vectors on each side of a channels-last forward item (forward_pixels_last's
// H), and whether the INSIDE variant exists for V (forward_channels_last).
constexpr int halo_vectors(int span, int V) { return ((span + 1) / 2 + V - 1) / V; }
constexpr bool has_inside_variant(int V) { return V <= 4; }

// ---------------------------------------------------------------- backward

// p += s, with s opaque to nvcc (an empty asm that "changes" it, no instruction): seeing
// the same s added step after step, nvcc rewrites the running pointers of an unrolled
// channel sweep as base + k s, one 64-bit register pair per k and pointer, and spills.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void advance(T*& p, int s) {
#if defined(__CUDA_ARCH__)
  asm("" : "+r"(s));
#endif
  p += s;
}

// 3/2 pooling (window 3, stride 2) along one axis: an odd input index i lies in N = 1
// window, (i - 1) / 2 at tap 1; an even one in N = 2 windows, i / 2 - 1 at tap 2 and
// i / 2 at tap 0. A window's argmax code is t_h * 3 + t_w.
template <int N>
C10_HOST_DEVICE C10_ALWAYS_INLINE int first_window_3s2(int i) {
  return N == 1 ? (i - 1) / 2 : i / 2 - 1;
}

// The tap of i in its r-th window (r < N).
template <int N>
C10_HOST_DEVICE constexpr int tap_3s2(int r) {
  return N == 1 ? 1 : 2 - 2 * r;
}

// Channels-first backward, 3/2 pooling (stride 2 both ways): the item is the pixel pair
// (h, w), (h, w + 1), w = 2q, over the channels [cb, ce) of the group [gb, ge). With
// stride 2 the pair's pooling windows, and the tap each pixel is in them, depend only on
// h's parity (a window's argmax code is t_h * 3 + t_w):
//   columns: window q - 1 holds w at t_w = 2 (w + 1 is past it); window q holds w at
//            t_w = 0 and w + 1 at t_w = 1;
//   rows:    odd h lies in window (h - 1) / 2 only, at t_h = 1 (NR = 1 window row); even h
//            in h / 2 - 1 at t_h = 2 and in h / 2 at t_h = 0 (NR = 2).
// So each channel's gather reads NR x 2 windows and compares with codes fixed at compile
// time: no loop over windows, no index arithmetic per channel (the loops with runtime
// bounds cost about 46 instructions per channel). EDGE: some window lies outside the
// pooled output (it loads nothing and matches nothing) or the second pixel outside the
// image; interior pairs (!EDGE) test neither, so their loads are not predicated. The
// sums run in row-major window order, as relu_lrn_max_pool2d::gather's. backward_sweep
// calls each load/store for consecutive channels, so each keeps a running pointer; a
// window row's right window is its left one's neighbour (os[3] == 1), and the pair's
// second pixel the first's (xs[3] == 1): immediate offsets (vector_width checks both).
template <int NR, bool EDGE, int SPAN, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_channels_first(const scalar_t* dy, const uint8_t* am, const scalar_t* x,
                                                               scalar_t* dx, const Geometry& g, int gb, int ge, int cb,
                                                               int ce, int h, int q, acc_t scale, const Pow& pw,
                                                               acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2;
  // Channels per batch of loads: a channel pair of backward_sweep (shared window sums,
  // 16-bit types) or 1 (fp32: batches of 2 spill under the launch's register bound, 50%
  // occupancy: the 8 bytes of x, 16 of argmax and 32 of dy a pair loads per channel).
  constexpr int U = sizeof(scalar_t) == 2 ? 2 : 1;
  const int w = 2 * q;
  const bool pair = !EDGE || w + 1 < g.W;   // the second pixel is inside the image
  const int oh0 = first_window_3s2<NR>(h);  // the first window row
  bool live[NR][2];                         // window (oh0 + r, q - 1 + side) exists
  LRN_UNROLL
  for (int r = 0; r < NR; ++r) {
    const bool row = oh0 + r >= 0 && oh0 + r < g.Ho;
    live[r][0] = !EDGE || (row && q >= 1 && q - 1 < g.Wo);
    live[r][1] = !EDGE || (row && q < g.Wo);
  }
  const int xcs = static_cast<int>(g.xs[1]), ocs = static_cast<int>(g.os[1]);  // 32-bit: vector_width
  const int osh = static_cast<int>(g.os[2]);
  const int64_t px = int64_t(h) * g.xs[2] + w;
  const int64_t o = int64_t(oh0) * osh + (q - 1) + int64_t(cb - POST) * ocs;  // window (oh0, q - 1)
  const scalar_t* xp = x + px + int64_t(cb - POST - PRE) * xcs;
  const scalar_t* dyp = dy + o;
  const uint8_t* amp = am + o;
  scalar_t* dxp = dx + px + int64_t(cb) * xcs;
  lrn::sweep::backward_sweep<SPAN, 2, U>(
      [&](acc_t* v, auto in) {
        v[0] = in ? relu(static_cast<acc_t>(xp[0])) : acc_t(0);
        v[1] = in && pair ? relu(static_cast<acc_t>(xp[1])) : acc_t(0);
        advance(xp, xcs);
      },
      [&](acc_t* v, auto in) {
        v[0] = v[1] = acc_t(0);
        if (in) {
          LRN_UNROLL
          for (int r = 0; r < NR; ++r) {
            const int th3 = 3 * tap_3s2<NR>(r);  // t_h * 3 of the pair in this row
            const int left = live[r][0] ? int(amp[r * osh]) : -1;
            const int right = live[r][1] ? int(amp[r * osh + 1]) : -1;
            const acc_t dl = live[r][0] ? static_cast<acc_t>(dyp[r * osh]) : acc_t(0);
            const acc_t dr = live[r][1] ? static_cast<acc_t>(dyp[r * osh + 1]) : acc_t(0);
            if (r == 0) {  // the first window of each sum: a select, not 0 + dy
              v[0] = left == th3 + 2 ? dl : acc_t(0);
              v[1] = right == th3 + 1 ? dr : acc_t(0);
            } else {
              if (left == th3 + 2) v[0] += dl;
              if (right == th3 + 1) v[1] += dr;
            }
            if (right == th3) v[0] += dr;
          }
        }
        advance(dyp, ocs);
        advance(amp, ocs);
      },
      [&](const acc_t* v, const acc_t* z) {
        // torch's ReLU mask (threshold_backward): 0 where relu(x) <= 0; NaN passes.
        dxp[0] = static_cast<scalar_t>(z[0] <= acc_t(0) ? acc_t(0) : v[0]);
        if (pair) dxp[1] = static_cast<scalar_t>(z[1] <= acc_t(0) ? acc_t(0) : v[1]);
        advance(dxp, xcs);
      },
      gb, ge, cb, ce, scale, pw, k);
}

// ---------------------------------------------------------------- work items
// Forward items run over pooled columns (a row is a run of row_run pooled rows), backward
// items over input pixels (a row is one input row; channels-first: pairs of pixels):
//   channels-first forward: per chunk of images, three classes of channel runs
//                   (locate_run; runs of kPoolChannels channels inside each group)
//   channels-first backward: per image, four classes of pixel pairs (locate_pair)
//   channels-last backward:  i = ((n * rows + r) * cols + col) * vecs + vec, input row
//                   lane_row(r): odd rows first
//   channels-last forward:   by vector class (lrn_sweep.h VectorClasses) over the
//                   positions p = (n * rows + row) * cols + col: the fp32 forward
//                   compiles an INSIDE variant for the vectors whose halo lies inside
//                   their LRN group (all but the first and last H of each group), so a
//                   chunk of 32 positions takes its INSIDE items first, then the others
//                   (fp16 / bf16 have one variant: lo = 0, plain position-major order).
//
// Channels-first backward classes. The compiled path of a pair (h, 2q), (h, 2q + 1)
// depends on h's parity (NR = 1 window row for odd h, 2 for even) and on whether it is
// an edge pair (backward_item): 4 variants. In row-major order a warp's 32 pairs would
// span two rows of opposite parity (a 55-wide row has 28 pairs) and the row ends, and
// the warp would run every variant in turn. So the pairs of an image are numbered by
// class, each class padded to whole warps (kPairWarp), so all lanes of a warp take one
// variant:
//   class 0: odd interior rows  h = 2r + 1, r < Ho - 1;  q = 1 .. Wo - 1    (NR 1)
//   class 1: even interior rows h = 2r + 2, r < Ho - 1;  q = 1 .. Wo - 1    (NR 2)
//   class 2: odd edge pairs:  q = 0 and q = Wo of the odd interior rows, then every
//            pair of the odd rows past the last interior one, h = 2 Ho - 1 + 2r
//                                                                          (NR 1, EDGE)
//   class 3: even edge pairs: q = 0 and q = Wo of the even interior rows, then every
//            pair of rows 0 and 2 Ho                                           (NR 2, EDGE)
// With 3/2 pooling, no padding, floor mode: H = 2 Ho + 1 or 2 Ho + 2, so the pair
// columns are cols = (W + 1) / 2 = Wo + 1 (the edge columns are exactly 0 and Wo), the
// odd edge rows number H - 2 Ho, the even ones 2. Per channel run a class holds
//   (Ho - 1)(Wo - 1)  (classes 0, 1),  2 (Ho - 1) + (H - 2 Ho) cols  (2),
//   2 (Ho - 1) + 2 cols  (3),
// which add up to H cols. Inside a class: i = run * per_run + m (all channel runs of the
// image, so the padding is paid once per image and class, not per run), m row-major.
// Interior classes: r = m / (Wo - 1), q = 1 + m % (Wo - 1). Edge classes: m < 2 (Ho - 1)
// is (interior row m / 2, q = Wo if m is odd else 0), the rest row-major over the edge
// rows. Padding lanes (m past the class) store nothing. AlexNet: (96, 55, 55) with groups
// of 48 has 2 runs, 1352 + 1352 + 160 + 216 = 3080 pairs per image in 3136 lanes (1.8%
// idle); (256, 27, 27) with runs of 32 (backward_run), 8 runs, 1152 + 1152 + 304 + 416 =
// 3024 in 3040 (0.5%).
// The classes of one image run in neighbouring blocks, so the pooled rows that odd and
// even rows both read (dy, argmax) are L2 hits the second time.
constexpr int kPairClasses = 4;
constexpr int kPairWarp = 32;  // lanes of a warp: each class starts at a multiple

// Channels-first forward classes. forward_channels_first compiles a variant per
// (FIRST, LAST): whether the item's run of kPoolChannels channels starts / ends its LRN
// group (its halo on that side is outside, unloaded). In run-major order a warp's 32
// items (pooled columns: 27 or 13 a row run) straddle runs, and one in 10 (55 x 55) to
// one in 6.5 (27 x 27) of them ran two variants. So the images go in chunks of
// K = gcd(N, kRunImages), and a chunk's items in four classes by variant:
//   class 0: the middle runs 1 .. rpg - 2 of each group   (neither)
//   class 1: the first run of each group                   (FIRST)
//   class 2: the last run of each group                    (LAST)
//   class 3: the only run of a group of one run            (FIRST and LAST)
// (rpg: runs per group). Inside class c with rc runs a group (rpg - 2, 1, 1, 1; zero
// where the class is empty): k = ((n * groups + group) * rc + u) * positions + p, p =
// row * cols + col over the positions (row runs x (Wo + 1) columns), u the run's place in
// the class. The GPU's lanes take a window's right column from the next lane
// (forward_column, SHARE), so the next lane must hold the next column of the same row:
//  * each row has one extra position, col = Wo (a helper: it computes the row's last
//    input column, 2 Wo, for the lane before it, and stores nothing);
//  * the warps of a class overlap by one position: warp w's lanes 0 .. 31 hold positions
//    31 w .. 31 w + 31, and lane 31 (the next warp's lane 0 again) only feeds lane 30.
// A class of P positions takes ceil(P / 31) warps; lanes past its positions (padding)
// repeat its last one and store nothing, so every lane of a warp runs to the end (the
// shuffles need all 32). Each class is then padded to whole blocks (kRunBlock). AlexNet,
// per chunk of 16 images: (96, 55, 55): groups of 12 runs, 84 positions: 27904 + 2816 +
// 2816 lanes for 31104 outputs (7% idle), 131 blocks, 1048 in all: 1.98 waves of 4 blocks
// an SM on 132 SMs; (256, 27, 27): 32 runs, 14 positions: 14080 + 512 + 512 lanes for
// 13312 (12%), 472 blocks: 0.89 waves. (Chunks of 8 took 1072 blocks at 55 x 55: a third
// wave for 16 of them.) A chunk of 16 images (18.6 / 12 MB of fp32 x) fits in L2, so the
// halo channels an item reads from its neighbour runs are L2 hits.
constexpr int kRunImages = 16;
constexpr int kRunLanes = 31;  // positions a warp owns (its lane 31 repeats the next warp's first)
// Classes are padded to whole blocks of the launch (lrn::sweep::kThreads), so a block's
// class, and so its compiled variant, follows from blockIdx alone: nvcc then knows every
// lane of a warp takes the same variant and row loop, and emits the shuffles as single
// instructions (with a lane-dependent variant it wraps each in a collective fallback).
constexpr int kRunBlock = lrn::sweep::kThreads;
constexpr int kRunClasses = 4;

struct FusedItems {
  int64_t count;
  int rows, cols;                 // forward: row runs, pooled columns; backward: input rows, columns
                                  // (channels-first: column pairs)
  int runs_per_group, runs, run;  // channels-first
  int row_run;                    // forward: pooled rows per item (backward: 1)
  int vecs;                       // channels-last: V-vectors per pixel (C / V)
  int vec;                        // V
  // locate()'s divisors, as multiplications (int_divider.h): vecs, cols, rows, runs,
  // runs_per_group, V-vectors per group
  IntDivider by_vecs, by_cols, by_rows, by_runs, by_runs_per_group, by_group_vecs;
  // Channels-first backward (locate_pair): class c of an image is the items
  // [pair_start[c], pair_start[c + 1]), pair_start[kPairClasses] the items per image;
  // divisors: items per image, pairs per run of classes 0 and 1, Wo - 1 (their pairs per
  // row), pairs per run of class 2, of class 3. Zero / unused otherwise.
  int pair_start[kPairClasses + 1];
  IntDivider by_image, by_inner, by_inner_cols, by_edge_odd, by_edge_even;
  // Channels-first forward (locate_run): run_images images a chunk; class c of a chunk is
  // the items [run_start[c], run_start[c + 1]), run_start[kRunClasses] the chunk's items;
  // divisors: items a chunk, positions (rows * cols), middle runs a group (rpg - 2), groups.
  int run_images;
  int run_start[kRunClasses + 1];
  IntDivider by_run_chunk, by_positions, by_middle_runs, by_groups;
  lrn::sweep::VectorClasses classes;  // channels-last forward (forward_item)
};

// Channels-last forward: the pooled rows go in runs of row_run = ceil(Ho / n) rows (the last
// shorter). A run of r pooled rows walks 2 r + 1 input rows with stride 2 (the first
// window's top row is the extra one; 3 r otherwise), so more runs are more work; but a
// launch of b blocks on `slots` resident ones takes ceil(b / slots) waves for b / slots of
// work. The choice minimizes (input rows walked) x ceil(b / slots) / (b / slots), fewer runs
// on a tie. AlexNet on 528 slots, batch 128: (96, 55, 55) 3 runs of 9 rows (fp32 972
// blocks, bf16 486: tail 1.09); (256, 27, 27) 5 runs of 3 (fp32 2080 blocks, bf16 1040: tail
// 1.015 instead of 1.27 and 2.54 for one run, for 31 input rows instead of 27).
inline int channels_last_row_run(const Geometry& g, int vecs, int slots) {
  auto walked = [&](int r) { return g.SH == 2 ? 2 * r + 1 : K * r; };
  int best_run = g.Ho;
  double best = -1;
  for (int n = 1; n <= g.Ho; ++n) {
    const int r = (g.Ho + n - 1) / n, runs = (g.Ho + r - 1) / r;
    const double rows = double(runs - 1) * walked(r) + walked(g.Ho - (runs - 1) * r);
    const double waves = std::ceil(double(g.N) * runs * g.Wo * vecs / kRunBlock) / slots;
    const double cost = rows * std::ceil(waves) / waves;
    if (best < 0 || cost < best) {
      best = cost;
      best_run = r;
    }
  }
  return best_run;
}

// slots: the forward launch's resident blocks (the device's SMs x kForwardBlocksPerSM;
// unused by the backward).
inline FusedItems make_items(const Geometry& g, bool channels_last, bool backward, int vec, int slots) {
  FusedItems it;
  it.rows = backward ? g.H : g.Ho;
  // backward: channels-first pixel pairs, channels-last runs of kLanePixels<V> pixels
  const int run_pixels = lane_pixels(vec);
  it.cols = backward ? (channels_last ? (g.W + run_pixels - 1) / run_pixels : (g.W + 1) / 2) : g.Wo;
  if (!backward && !channels_last) it.cols = g.Wo + 1;  // the helper column (locate_run)
  it.vec = vec;
  it.vecs = g.C / vec;
  it.row_run = 1;
  if (!backward) {
    if (channels_last) {
      it.row_run = channels_last_row_run(g, it.vecs, slots);
    } else {  // runs of at most kPoolRows rows, as even as can be
      const int n = (it.rows + kPoolRows - 1) / kPoolRows;
      it.row_run = (it.rows + n - 1) / n;
    }
    it.rows = (it.rows + it.row_run - 1) / it.row_run;
  }
  it.run =
      backward ? backward_run(g.group_channels) : (g.group_channels < kPoolChannels ? g.group_channels : kPoolChannels);
  it.runs_per_group = (g.group_channels + it.run - 1) / it.run;
  it.runs = it.runs_per_group * (g.C / g.group_channels);
  const int64_t pixels = int64_t(g.N) * it.rows * it.cols;
  it.count = channels_last ? pixels * it.vecs : pixels * it.runs;
  for (int c = 0; c <= kPairClasses; ++c) it.pair_start[c] = 0;
  it.classes = lrn::sweep::make_vector_classes(0, 1, 1, 0);
  it.run_images = 0;
  for (int c = 0; c <= kRunClasses; ++c) it.run_start[c] = 0;
  if (!backward && !channels_last) {  // the run classes (locate_run)
    int k = kRunImages;
    while (g.N % k != 0) k /= 2;
    it.run_images = k;
    const int rpg = it.runs_per_group, groups = g.C / g.group_channels, positions = it.rows * it.cols;
    const int per_group[kRunClasses] = {rpg > 2 ? rpg - 2 : 0, rpg >= 2, rpg >= 2, rpg == 1};
    for (int c = 0; c < kRunClasses; ++c) {
      const int items = k * groups * per_group[c] * positions;
      const int lanes = (items + kRunLanes - 1) / kRunLanes * kPairWarp;
      it.run_start[c + 1] = it.run_start[c] + (lanes + kRunBlock - 1) / kRunBlock * kRunBlock;
    }
    it.count = int64_t(g.N / k) * it.run_start[kRunClasses];
    it.by_run_chunk = IntDivider(it.run_start[kRunClasses]);
    it.by_positions = IntDivider(positions);
    it.by_middle_runs = IntDivider(per_group[0]);
    it.by_groups = IntDivider(groups);
  }
  if (!backward && channels_last)  // the INSIDE items' class (forward_channels_last)
    it.classes = lrn::sweep::make_vector_classes(pixels, it.vecs, g.group_channels / vec,
                                                 has_inside_variant(vec) ? halo_vectors(g.win.span(), vec) : 0);
  if (backward && !channels_last) {  // the pair classes (locate_pair; stride 2: vector_width)
    const int inner = (g.Ho - 1) * (g.Wo - 1), edge_rows = 2 * (g.Ho - 1);
    const int per_run[kPairClasses] = {inner, inner, edge_rows + (g.H - 2 * g.Ho) * it.cols, edge_rows + 2 * it.cols};
    for (int c = 0; c < kPairClasses; ++c) {
      const int items = it.runs * per_run[c];
      it.pair_start[c + 1] = it.pair_start[c] + (items + kPairWarp - 1) / kPairWarp * kPairWarp;
    }
    it.count = int64_t(g.N) * it.pair_start[kPairClasses];
    it.by_image = IntDivider(it.pair_start[kPairClasses]);
    it.by_inner = IntDivider(inner);
    it.by_inner_cols = IntDivider(g.Wo - 1);
    it.by_edge_odd = IntDivider(per_run[2]);
    it.by_edge_even = IntDivider(per_run[3]);
  }
  it.by_vecs = IntDivider(it.vecs);
  it.by_cols = IntDivider(it.cols);
  it.by_rows = IntDivider(it.rows);
  it.by_runs = IntDivider(it.runs);
  it.by_runs_per_group = IntDivider(it.runs_per_group);
  it.by_group_vecs = IntDivider(g.group_channels / vec);
  return it;
}

// Where item i is: image n, (row, col), and its channels: [cb, ce) (channels-first) or
// [cb, cb + V) (channels-last), inside the group [gb, ge).
struct Where {
  int n, row, col, gb, ge, cb, ce;
};

// Channel run `run` of image n: its group [gb, ge) and channels [cb, ce).
C10_HOST_DEVICE C10_ALWAYS_INLINE void run_channels(const Geometry& g, const FusedItems& it, int run, Where& wh) {
  const int grp = static_cast<int>(it.by_runs_per_group.div(run));
  wh.gb = grp * g.group_channels;
  wh.ge = wh.gb + g.group_channels;
  wh.cb = wh.gb + (run - grp * it.runs_per_group) * it.run;
  wh.ce = wh.cb + it.run < wh.ge ? wh.cb + it.run : wh.ge;
}

// Channels-last: position p = (n * rows + row) * cols + col, vector `vec` of its pixel.
C10_HOST_DEVICE C10_ALWAYS_INLINE Where locate_vector(const Geometry& g, const FusedItems& it, int64_t p, int vec) {
  Where wh;
  wh.cb = vec * it.vec;
  wh.gb = static_cast<int>(it.by_group_vecs.div(static_cast<uint32_t>(vec))) * g.group_channels;
  wh.ge = wh.gb + g.group_channels;
  wh.ce = wh.cb + it.vec;
  int64_t q = p, r;
  it.by_cols.divmod(q, q, r);
  wh.col = static_cast<int>(r);
  it.by_rows.divmod(q, q, r);
  wh.row = static_cast<int>(r);
  wh.n = static_cast<int>(q);
  return wh;
}

C10_HOST_DEVICE C10_ALWAYS_INLINE Where locate(const Geometry& g, const FusedItems& it, int64_t i, bool channels_last) {
  // Peel the indices innermost first: [vec (channels-last)], col, row, [run (channels-first)], n.
  int64_t q = i, r;
  if (channels_last) {
    it.by_vecs.divmod(q, q, r);
    return locate_vector(g, it, q, static_cast<int>(r));
  }
  Where wh;
  it.by_cols.divmod(q, q, r);
  wh.col = static_cast<int>(r);
  it.by_rows.divmod(q, q, r);
  wh.row = static_cast<int>(r);
  it.by_runs.divmod(q, q, r);
  run_channels(g, it, static_cast<int>(r), wh);
  wh.n = static_cast<int>(q);
  return wh;
}

// Channels-first forward item i = i0 + t, i0 the start of its block of kRunBlock items
// (t < kRunBlock): where it is, its class (the variant: 0 middle, 1 FIRST, 2 LAST, 3
// both; from i0 alone, see kRunBlock), and whether it stores (false: a helper column, a
// warp's lane 31, a padding lane; a padding lane repeats its class's last position).
C10_HOST_DEVICE C10_ALWAYS_INLINE Where locate_run(const Geometry& g, const FusedItems& it, int64_t i0, int t, int& cls,
                                                   bool& store) {
  Where wh;
  int64_t chunk, rem;
  it.by_run_chunk.divmod(i0, chunk, rem);
  const int r0 = static_cast<int>(rem);
  cls = (r0 >= it.run_start[1]) + (r0 >= it.run_start[2]) + (r0 >= it.run_start[3]);
  const int start = cls == 0 ? 0 : cls == 1 ? it.run_start[1] : cls == 2 ? it.run_start[2] : it.run_start[3];
  const uint32_t r = static_cast<uint32_t>(r0 - start + t);
  const uint32_t lane = r % kPairWarp;
  uint32_t k = r / kPairWarp * kRunLanes + lane;
  // The class's positions: run_images images x groups x its runs a group x positions.
  const uint32_t positions = it.by_positions.d, rc = cls == 0 ? it.by_middle_runs.d : 1;
  const uint32_t last = static_cast<uint32_t>(it.run_images) * it.by_groups.d * rc * positions - 1;
  store = lane != kRunLanes && k <= last;
  if (k > last) k = last;
  const uint32_t q = it.by_positions.div(k);
  const uint32_t p = k - q * positions;
  uint32_t rest = q, u = 0;  // u: the run's place in its group
  if (cls == 0) {
    rest = it.by_middle_runs.div(q);
    u = 1 + (q - rest * it.by_middle_runs.d);
  } else if (cls == 2) {
    u = static_cast<uint32_t>(it.runs_per_group - 1);
  }
  const uint32_t image = it.by_groups.div(rest), grp = rest - image * it.by_groups.d;
  wh.n = static_cast<int>(chunk) * it.run_images + static_cast<int>(image);
  wh.row = static_cast<int>(it.by_cols.div(p));
  wh.col = static_cast<int>(p) - wh.row * it.cols;
  store = store && wh.col < g.Wo;
  wh.gb = static_cast<int>(grp) * g.group_channels;
  wh.ge = wh.gb + g.group_channels;
  wh.cb = wh.gb + static_cast<int>(u) * it.run;
  wh.ce = wh.cb + it.run < wh.ge ? wh.cb + it.run : wh.ge;
  return wh;
}

// Channels-first backward item i (the classes above FusedItems): where it is, and its class
// (-1: a padding lane, no item).
C10_HOST_DEVICE C10_ALWAYS_INLINE Where locate_pair(const Geometry& g, const FusedItems& it, int64_t i, int& cls) {
  Where wh;
  int64_t n, rem;
  it.by_image.divmod(i, n, rem);
  wh.n = static_cast<int>(n);
  const int r = static_cast<int>(rem);
  cls = (r >= it.pair_start[1]) + (r >= it.pair_start[2]) + (r >= it.pair_start[3]);
  const int start = cls == 0 ? 0 : cls == 1 ? it.pair_start[1] : cls == 2 ? it.pair_start[2] : it.pair_start[3];
  const IntDivider& per_run = cls < 2 ? it.by_inner : cls == 2 ? it.by_edge_odd : it.by_edge_even;
  const uint32_t k = static_cast<uint32_t>(r - start), run = per_run.div(k), m = k - run * per_run.d;
  if (run >= static_cast<uint32_t>(it.runs)) {
    cls = -1;
    wh.row = wh.col = wh.gb = wh.ge = wh.cb = wh.ce = 0;
    return wh;
  }
  const int parity = cls & 1;  // 0: odd rows (classes 0, 2), 1: even rows (1, 3)
  const uint32_t edge_cols = 2 * static_cast<uint32_t>(g.Ho - 1);
  if (cls < 2) {  // interior rows and columns
    const uint32_t row = it.by_inner_cols.div(m);
    wh.row = static_cast<int>(2 * row) + 1 + parity;
    wh.col = static_cast<int>(m - row * it.by_inner_cols.d) + 1;
  } else if (m < edge_cols) {  // columns 0 and Wo of an interior row
    wh.row = static_cast<int>(m & ~1u) + 1 + parity;
    wh.col = (m & 1) ? g.Wo : 0;
  } else {  // the edge rows, every pair: odd 2 Ho - 1 + 2 e, even 0 and 2 Ho
    const uint32_t e = m - edge_cols, row = it.by_cols.div(e);
    wh.col = static_cast<int>(e - row * it.by_cols.d);
    wh.row = parity == 0 ? 2 * g.Ho - 1 + 2 * static_cast<int>(row) : 2 * g.Ho * static_cast<int>(row);
  }
  run_channels(g, it, static_cast<int>(run), wh);
  return wh;
}

// Item i0 + t, i0 the start of its block of kRunBlock items (the GPU: blockIdx.x *
// kRunBlock, t = threadIdx.x; then the channels-first class is block-uniform: kRunBlock).
template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_item(const scalar_t* x, scalar_t* out, uint8_t* am, const Geometry& g,
                                                    const FusedItems& it, int64_t i0, int t, acc_t scale, const Pow& pw,
                                                    acc_t k) {
  if constexpr (CL) {
    const lrn::sweep::VectorItem o = lrn::sweep::vector_item(it.classes, i0 + t);
    const Where wh = locate_vector(g, it, o.pixel, o.vec);
    const bool inside = it.classes.lo > 0 && o.interior;
    const int64_t on = int64_t(wh.n) * g.os[0];
    const int ohb = wh.row * it.row_run, ohe = ohb + it.row_run < g.Ho ? ohb + it.row_run : g.Ho;
    forward_channels_last<SPAN, V>(x + int64_t(wh.n) * g.xs[0], out + on, am + on, g, wh.gb, wh.ge, wh.cb, inside, ohb,
                                   ohe, wh.col, scale, pw, k);
  } else {
    int cls;
    bool store;
    const Where wh = locate_run(g, it, i0, t, cls, store);
    const int64_t on = int64_t(wh.n) * g.os[0];
    const scalar_t* xn = x + int64_t(wh.n) * g.xs[0];
    const int ohb = wh.row * it.row_run;
#if defined(__CUDA_ARCH__)
    if (g.SW == 2) {  // every lane runs, its right column from the next lane
      // A helper column (col == Wo) exists for the next-lane exchange only.
      const bool helper = wh.col == g.Wo;
      forward_channels_first<SPAN, true>(xn, out + on, am + on, g, cls, wh.cb, ohb, it.row_run, wh.col, helper, store,
                                         scale, pw, k);
      return;
    }
#endif
    if (!store) return;  // (without the exchange nothing needs it)
    forward_channels_first<SPAN, false>(xn, out + on, am + on, g, cls, wh.cb, ohb, it.row_run, wh.col, false, true,
                                        scale, pw, k);
  }
}

// Channels-first backward item (channels-last runs by warps: backward_lanes). Its class
// (locate_pair) is its compiled variant: the pair's window rows by its row's parity (one
// for odd rows, two for even) and EDGE. Interior pairs (classes 0, 1: rows 1 .. 2 Ho - 2,
// whose window rows (h - 1) / 2 or h / 2 - 1 and h / 2 lie inside [0, Ho); pair columns
// 1 .. Wo - 1, whose windows q - 1 and q lie inside [0, Wo), both pixels inside the
// image) test neither windows nor pixels.
template <int SPAN, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_item(const scalar_t* dy, const uint8_t* am, const scalar_t* x,
                                                     scalar_t* dx, const Geometry& g, const FusedItems& it, int64_t i,
                                                     acc_t scale, const Pow& pw, acc_t k) {
  int cls;
  const Where wh = locate_pair(g, it, i, cls);
  const int64_t xn = int64_t(wh.n) * g.xs[0], on = int64_t(wh.n) * g.os[0];
  auto run = [&](auto rows, auto edge) {
    backward_channels_first<decltype(rows)::value, decltype(edge)::value, SPAN>(
        dy + on, am + on, x + xn, dx + xn, g, wh.gb, wh.ge, wh.cb, wh.ce, wh.row, wh.col, scale, pw, k);
  };
  if (cls < 0) return;  // a padding lane
  // Two tests on the class's bits, not a switch (nvcc made that an indirect jump).
  auto rows_of = [&](auto edge) {
    if (cls & 1)
      run(std::integral_constant<int, 2>{}, edge);  // even rows
    else
      run(std::integral_constant<int, 1>{}, edge);  // odd rows
  };
  if (cls & 2)
    rows_of(std::true_type{});
  else
    rows_of(std::false_type{});
}

// Channels-last backward: the lanes of a warp share their LRN halos. A channel's
// gradient needs t_j = g_j z_j s_j^(-beta-1) of the SPAN channels around it, and t_j
// needs z of the SPAN channels around j; in NHWC adjacent threads own adjacent channel
// vectors of a pixel, so the halo channels are the neighbour lanes' own. Each lane
// gathers and powers only its own V channels (one gather and V powers per V outputs,
// where a lone item did 2 + 1 halo vectors' gathers and V + SPAN powers) and takes the
// neighbours' z and t by shuffles:
//   1. load:    the gathered pooled gradients g of the run's pixels (lane_gather, each
//               pooling window loaded once per run), then per pixel z = relu(x)
//   2. powers:  s_i = k + scale * sum z^2 over [c+i-PRE, c+i+POST] (halo z from lanes
//               l -+ 1), t_i = g_i z_i s_i^(-beta-1), g_i s_i^-beta
//   3. store:   dx_i = [x_i > 0] (g_i s_i^-beta - 2 scale beta z_i sum t over
//               [c+i-POST, c+i+PRE]) (halo t from lanes l -+ 1)
// Halo channels outside the item's group read as zero (its own channels never are:
// group_channels % V == 0). Where warps hold whole LRN groups (lanes_hold_groups: 32 items a warp,
// every warp boundary a group boundary) lane l of warp w owns item 32 w + l, and the
// halo beyond lanes 0 and 31 is zero padding. Otherwise lane l owns item
// w * kLaneItems + l - 1; lanes 0 and 31 own the items just outside the warp's share and
// store nothing: their own z and t, which are all the neighbours read of them, need only
// their one inner neighbour as long as SPAN <= V (vector_width), so one halo lane per
// side suffices. An item is a run of
// kLanePixels<V> pixels of a row, phases 2 and 3 taken pixel after pixel by the whole
// warp (locate's index arithmetic once per run). Every window sum runs in order from its
// first channel, and every gather in window order, as the CPU-native kernels sum: CPU
// native, CPU sweep and GPU agree bit for bit.
constexpr int kWarpLanes = 32;
constexpr int kLaneItems = kWarpLanes - 2;

// Whether every warp of 32 consecutive items starts and ends LRN groups: a pixel's vectors
// fill whole warps and a group's vectors divide 32 (AlexNet's 256 channels: groups of 32
// fp32 / 16 bf16 vectors; its 96: groups of 12 / 6, which do not). The launcher picks the
// kernel by it (GROUPS), so the lanes' item arithmetic has constants.
inline bool lanes_hold_groups(const FusedItems& it) {
  const int gv = it.by_group_vecs.d;
  return it.vecs % kWarpLanes == 0 && kWarpLanes % gv == 0;
}

// FusedItems a channels-last backward warp owns (all its lanes, or all but the halo lanes 0
// and 31), and the lane that owns the first.
constexpr int lane_items(bool groups) { return groups ? kWarpLanes : kLaneItems; }
constexpr int first_item_lane(bool groups) { return groups ? 0 : 1; }

// Warps (of kWarpLanes threads) a channels-last backward launch takes.
inline int64_t backward_lane_warps(const FusedItems& it) {
  const int n = lane_items(lanes_hold_groups(it));
  return (it.count + n - 1) / n;
}

// The item of `lane` in `warp` (for a halo lane, one just outside the warp's share), and
// whether the lane owns (stores) it.
C10_HOST_DEVICE C10_ALWAYS_INLINE int64_t lane_item(int64_t warp, int lane, bool groups) {
  return warp * lane_items(groups) + lane - first_item_lane(groups);
}
C10_HOST_DEVICE C10_ALWAYS_INLINE bool lane_owns(int lane, bool groups) {
  return lane >= first_item_lane(groups) && lane < first_item_lane(groups) + lane_items(groups);
}

// f(integral_constant<int, P>) for each pixel P of a lane's run, in order (P is a
// compile-time index: its column parity picks the gather).
template <typename F, int... P>
C10_HOST_DEVICE C10_ALWAYS_INLINE void for_each_pixel(F&& f, std::integer_sequence<int, P...>) {
  (f(std::integral_constant<int, P>{}), ...);
}

template <int V, typename F>
C10_HOST_DEVICE C10_ALWAYS_INLINE void for_each_pixel(F&& f) {
  for_each_pixel(f, std::make_integer_sequence<int, kLanePixels<V>>{});
}

// The pooling windows a lane's run gathers from (stride 2: first_window_3s2): window rows
// oh0 + r, r < 2 (odd h: r = 0 only, at tap row 1; even h: tap rows 2 and 0), window
// columns ow0 + s, s < kRunWindows, ow0 = w0 / 2 - 1. Pixel w0 + P lies at tap column 2
// of column P / 2 and at 0 of P / 2 + 1 when P is even, at 1 of (P + 1) / 2 when odd. The
// run loads each window once, a window row at a time, and adds it to the gradients of
// all its pixels (pixels alone loaded 6 windows per window row, 3 of them twice).
template <int V>
constexpr int kRunWindows = kLanePixels<V> / 2 + 1;

template <int V, typename scalar_t>
struct PooledWindow {
  Vec<uint8_t, V> a;   // argmax codes
  Vec<scalar_t, V> d;  // dy
};

template <int V, typename acc_t>
struct Lane {
  acc_t z[V], g[V];  // relu(x), the gathered gradient (phase 2: g s^-beta)
  acc_t t[V];        // g z s^(-beta-1)
  bool first, last;  // its V channels start / end their LRN group (so the halo
                     // channels on that side are outside it: group_channels % V == 0, SPAN <= V)
  int w0;            // first pixel of the item's run
  bool odd;          // its row is odd: one window row
  bool rows[2];      // window rows oh0, oh0 + 1 inside the pooled output
  int ow0;           // the run's first window column
  int o0;            // offset of window (oh0, ow0) from channel c of image n (dy, argmax)
  int64_t xn, on;    // offsets of channel c in image n: x / dx (row h), dy / argmax
  bool item, owner;  // an item of the launch; a lane that stores it
  bool store;        // the current pixel: in the image, and owner
  int64_t px;        // the current pixel's x / dx offset
};

// Item row r of an image -> its input row: the odd rows first (1, 3, ...), then the even
// ones (0, 2, ...). A lane's gather reads one window row for odd rows and two for even
// (lane_gather's branch), and a warp's 30 items span a row end about once in 11 (fp32,
// 336 items a 55-wide row): in row order every such warp would run both gathers. So
// parities change once per image, and warps straddling rows of one parity run one.
C10_HOST_DEVICE C10_ALWAYS_INLINE int lane_row(const Geometry& g, int r) {
  const int odd_rows = g.H / 2;
  return r < odd_rows ? 2 * r + 1 : 2 * (r - odd_rows);
}

// The lane's item (none: an empty group, nothing loaded or stored).
template <int V, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE Lane<V, acc_t> lane_locate(const Geometry& g, const FusedItems& it, int64_t item,
                                                             bool owner) {
  Lane<V, acc_t> L;
  L.w0 = L.ow0 = L.o0 = 0;
  L.first = L.last = L.odd = L.rows[0] = L.rows[1] = false;
  L.xn = L.on = L.px = 0;
  L.item = item >= 0 && item < it.count;
  L.owner = owner;
  L.store = false;
  if (!L.item) return L;
  Where wh = locate(g, it, item, true);
  wh.row = lane_row(g, wh.row);
  L.first = wh.cb == wh.gb;
  L.last = wh.cb + V == wh.ge;
  L.w0 = wh.col * kLanePixels<V>;
  L.odd = wh.row & 1;
  const int oh0 = L.odd ? first_window_3s2<1>(wh.row) : first_window_3s2<2>(wh.row);
  L.rows[0] = oh0 >= 0 && oh0 < g.Ho;
  L.rows[1] = !L.odd && oh0 + 1 < g.Ho;
  L.ow0 = wh.col * (kLanePixels<V> / 2) - 1;
  L.o0 = oh0 * static_cast<int>(g.os[2]) + L.ow0 * static_cast<int>(g.os[3]);  // 32-bit: vector_width
  L.xn = int64_t(wh.n) * g.xs[0] + int64_t(wh.row) * g.xs[2] + wh.cb;
  L.on = int64_t(wh.n) * g.os[0] + wh.cb;
  return L;
}

// sum[i] += dy of the run's window row `row` (argmax codes th3 + tap column there) whose
// argmax is pixel w0 + P, channels c .. c + V - 1, in window order.
template <int P, int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void gather_pixel(const PooledWindow<V, scalar_t>* row, int th3, acc_t* sum) {
  auto add = [&](const PooledWindow<V, scalar_t>& w, int code) {
    LRN_UNROLL
    for (int i = 0; i < V; ++i)
      if (int(w.a.v[i]) == code) sum[i] += static_cast<acc_t>(w.d.v[i]);
  };
  if constexpr (P % 2 == 1) {
    add(row[(P + 1) / 2], th3 + 1);
  } else {
    add(row[P / 2], th3 + 2);
    add(row[P / 2 + 1], th3);
  }
}

// PooledWindow row R of the lane's run (argmax codes th3 + tap column there), added to the
// gradients sum[P] of its pixels. A window outside the pooled output loads nothing and
// matches nothing (argmax 0xff).
template <int R, int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void gather_window_row(const Lane<V, acc_t>& L, const scalar_t* dy, const uint8_t* am,
                                                         const Geometry& g, int th3, acc_t (*sum)[V]) {
  PooledWindow<V, scalar_t> row[kRunWindows<V>];
  LRN_UNROLL
  for (int s = 0; s < kRunWindows<V>; ++s) {
    const int ow = L.ow0 + s;
    PooledWindow<V, scalar_t>& w = row[s];
    if (L.rows[R] && ow >= 0 && ow < g.Wo) {
      const int64_t o = L.on + (L.o0 + R * static_cast<int>(g.os[2]) + s * static_cast<int>(g.os[3]));
      lrn::sweep::check_aligned<uint8_t, V>(am + o);
      lrn::sweep::check_aligned<scalar_t, V>(dy + o);
      w.a = *reinterpret_cast<const Vec<uint8_t, V>*>(am + o);
      w.d = *reinterpret_cast<const Vec<scalar_t, V>*>(dy + o);
    } else {
      LRN_UNROLL
      for (int i = 0; i < V; ++i) {
        w.a.v[i] = uint8_t(0xff);
        w.d.v[i] = scalar_t(0);
      }
    }
  }
  for_each_pixel<V>([&](auto p) { gather_pixel<decltype(p)::value>(row, th3, sum[decltype(p)::value]); });
}

// Phase 1a: sum[P] = the gathered pooled gradient of pixel w0 + P of the run (the windows
// whose argmax it is, row-major as relu_lrn_max_pool2d::gather's); zeros for no item.
template <int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lane_gather(const Lane<V, acc_t>& L, const scalar_t* dy, const uint8_t* am,
                                                   const Geometry& g, acc_t (*sum)[V]) {
  LRN_UNROLL
  for (int p = 0; p < kLanePixels<V>; ++p) LRN_UNROLL
  for (int i = 0; i < V; ++i) sum[p][i] = acc_t(0);
  if (!L.item) return;
  if (L.odd) {
    gather_window_row<0>(L, dy, am, g, 3 * tap_3s2<1>(0), sum);
  } else {
    gather_window_row<0>(L, dy, am, g, 3 * tap_3s2<2>(0), sum);
    gather_window_row<1>(L, dy, am, g, 3 * tap_3s2<2>(1), sum);
  }
}

// Phase 1b for pixel w0 + P of the run: z = relu(x) and its gathered gradient gp; zeros
// for a pixel past the image.
template <int P, int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lane_load(Lane<V, acc_t>& L, const scalar_t* x, const acc_t* gp,
                                                 const Geometry& g) {
  LRN_UNROLL
  for (int i = 0; i < V; ++i) L.z[i] = L.g[i] = acc_t(0);
  const int w = L.w0 + P;
  const bool inside = L.item && w < g.W;
  L.store = inside && L.owner;
  if (!inside) return;
  L.px = L.xn + w * static_cast<int>(g.xs[3]);  // 32-bit: vector_width
  lrn::sweep::load<V>(x + L.px, L.z);
  relu_all<V>(L.z);
  LRN_UNROLL
  for (int i = 0; i < V; ++i) L.g[i] = gp[i];
}

// Phase 2: zl = z of channels c - PRE .. c - 1, zr = z of c + V .. c + V + POST - 1, as the
// neighbour lanes hold them (halo() zeroes those outside the group).
template <int SPAN, int V, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lane_powers(Lane<V, acc_t>& L, const acc_t* zl, const acc_t* zr, acc_t scale,
                                                   const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2;
  static_assert(V % 2 == 0, "channels go in pairs (pair_sums)");
  LRN_UNROLL
  for (int i = 0; i < V; i += 2) {
    acc_t s[2];
    pair_sums<SPAN>(
        [&](int t) {
          const int m = i + t - PRE;  // channel c + m
          return m < 0 ? zl[PRE + m] : m >= V ? zr[m - V] : L.z[m];
        },
        s[0], s[1]);
    LRN_UNROLL
    for (int h = 0; h < 2; ++h) {
      acc_t p0, p1;
      pw.both(k + scale * s[h], p0, p1);
      L.t[i + h] = L.g[i + h] * L.z[i + h] * p1;
      L.g[i + h] = L.g[i + h] * p0;
    }
  }
}

// Phase 3: tl = t of channels c - POST .. c - 1, tr = t of c + V .. c + V + PRE - 1.
template <int SPAN, int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lane_store(const Lane<V, acc_t>& L, const acc_t* tl, const acc_t* tr,
                                                  scalar_t* dx, acc_t coef) {
  constexpr int POST = SPAN / 2;
  if (!L.store) return;
  acc_t out[V];
  LRN_UNROLL
  for (int i = 0; i < V; i += 2) {
    acc_t tsum[2];
    pair_sums<SPAN, false>(
        [&](int t) {
          const int m = i + t - POST;  // channel c + m of the mirrored windows
          return m < 0 ? tl[POST + m] : m >= V ? tr[m - V] : L.t[m];
        },
        tsum[0], tsum[1]);
    LRN_UNROLL
    for (int h = 0; h < 2; ++h) {
      const acc_t v = L.g[i + h] - coef * L.z[i + h] * tsum[h];
      out[i + h] = L.z[i + h] <= acc_t(0) ? acc_t(0) : v;  // torch's ReLU mask (NaN passes)
    }
  }
  store<V>(dx + L.px, out);
}

// The halo of a lane: left[m] = own[V - NL + m] of lane l - 1 (channels c - NL .. c - 1),
// right[m] = own[m] of lane l + 1 (channels c + V .. c + V + NR - 1), zero for channels
// outside the lane's group; `up` and `down` are those lanes' arrays.
template <int NL, int NR, int V, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void halo(const Lane<V, acc_t>& L, const acc_t* up, const acc_t* down, acc_t* left,
                                            acc_t* right) {
  LRN_UNROLL
  for (int m = 0; m < NL; ++m) left[m] = L.first ? acc_t(0) : up[V - NL + m];
  LRN_UNROLL
  for (int m = 0; m < NR; ++m) right[m] = L.last ? acc_t(0) : down[m];
}

// Halo arrays of N values (at least one element: PRE or POST may be 0).
template <int N>
constexpr int halo_size() {
  return N > 0 ? N : 1;
}

#if defined(__CUDACC__)
// One GPU thread: lane `lane` of warp `warp`. Every lane of the warp runs to the end (the
// shuffles need all 32), items outside the launch included. GROUPS: lanes_hold_groups.
template <int SPAN, int V, bool GROUPS, typename scalar_t, typename acc_t, typename Pow>
__device__ __forceinline__ void backward_lanes(const scalar_t* dy, const uint8_t* am, const scalar_t* x, scalar_t* dx,
                                               const Geometry& g, const FusedItems& it, int64_t warp, int lane,
                                               acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2;
  constexpr unsigned kAll = 0xffffffffu;
  Lane<V, acc_t> L = lane_locate<V, acc_t>(g, it, lane_item(warp, lane, GROUPS), lane_owns(lane, GROUPS));
  acc_t gsum[kLanePixels<V>][V];
  lane_gather(L, dy, am, g, gsum);
  auto pixel = [&](auto p) {
    constexpr int P = decltype(p)::value;
    lane_load<P>(L, x, gsum[P], g);
    // This lane's z and t from lanes l - 1 and l + 1 (shuffled first: every lane takes part).
    auto shuffled = [&](const acc_t* own, acc_t* up, acc_t* down) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        up[i] = __shfl_up_sync(kAll, own[i], 1);
        down[i] = __shfl_down_sync(kAll, own[i], 1);
      }
    };
    acc_t up[V], down[V];
    shuffled(L.z, up, down);
    acc_t zl[halo_size<PRE>()], zr[halo_size<POST>()];
    halo<PRE, POST>(L, up, down, zl, zr);
    lane_powers<SPAN, V>(L, zl, zr, scale, pw, k);
    shuffled(L.t, up, down);
    acc_t tl[halo_size<POST>()], tr[halo_size<PRE>()];
    halo<POST, PRE>(L, up, down, tl, tr);
    lane_store<SPAN, V>(L, tl, tr, dx, acc_t(2) * scale * pw.beta);
  };
  for_each_pixel<V>(pixel);
}
#endif

// The CPU's run of one warp (tests and sanitizers): the lanes' phases in lockstep, each
// shuffle a read of the neighbour's value (lanes 0 and 31 read their own, as
// __shfl_up_sync / __shfl_down_sync give them).
template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
void backward_lanes_cpu(const scalar_t* dy, const uint8_t* am, const scalar_t* x, scalar_t* dx, const Geometry& g,
                        const FusedItems& it, int64_t warp, acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2;
  Lane<V, acc_t> L[kWarpLanes];
  const bool groups = lanes_hold_groups(it);
  for (int l = 0; l < kWarpLanes; ++l)
    L[l] = lane_locate<V, acc_t>(g, it, lane_item(warp, l, groups), lane_owns(l, groups));
  auto up = [](int l) { return l > 0 ? l - 1 : l; };
  auto down = [](int l) { return l < kWarpLanes - 1 ? l + 1 : l; };
  acc_t gsum[kWarpLanes][kLanePixels<V>][V];
  for (int l = 0; l < kWarpLanes; ++l) lane_gather(L[l], dy, am, g, gsum[l]);
  auto pixel = [&](auto p) {
    constexpr int P = decltype(p)::value;
    for (int l = 0; l < kWarpLanes; ++l) lane_load<P>(L[l], x, gsum[l][P], g);
    for (int l = 0; l < kWarpLanes; ++l) {  // phase 2 changes g and t only: z stays for the neighbours
      acc_t zl[halo_size<PRE>()], zr[halo_size<POST>()];
      halo<PRE, POST>(L[l], L[up(l)].z, L[down(l)].z, zl, zr);
      lane_powers<SPAN, V>(L[l], zl, zr, scale, pw, k);
    }
    for (int l = 0; l < kWarpLanes; ++l) {
      acc_t tl[halo_size<POST>()], tr[halo_size<PRE>()];
      halo<POST, PRE>(L[l], L[up(l)].t, L[down(l)].t, tl, tr);
      lane_store<SPAN, V>(L[l], tl, tr, dx, acc_t(2) * scale * pw.beta);
    }
  };
  for_each_pixel<V>(pixel);
}

// ---------------------------------------------------------------- host-side dispatch

// The sweep kernels take 3x3 pooling and LRN windows lrn::sweep covers.
inline bool covers(const Geometry& g) { return g.KH == K && g.KW == K && lrn::sweep::covers(g.win); }

// The items' width V, or 0 when the sweep kernels do not apply (then the tile
// kernels take over): they need covers(g); channels-first items are single pixels
// (V = 1); channels-last items are vectors of 16 bytes (V = 16 / sizeof), so each
// group's channel count must be a multiple of V and every tensor 16-byte aligned.
template <typename scalar_t>
int vector_width(const Geometry& g, bool channels_last, bool backward, std::initializer_list<const void*> ptrs) {
  if (!covers(g)) return 0;
  if (!channels_last && g.xs[3] != 1) return 0;  // forward_channels_first reads rows at immediate offsets
  // 32-bit offsets inside one plane (the window offsets of the forward, the gather's).
  const int64_t limit = int64_t(1) << 31;
  if (int64_t(g.H) * (g.xs[2] < 0 ? -g.xs[2] : g.xs[2]) + int64_t(g.W) * (g.xs[3] < 0 ? -g.xs[3] : g.xs[3]) >= limit ||
      int64_t(g.Ho) * (g.os[2] < 0 ? -g.os[2] : g.os[2]) + int64_t(g.Wo) * (g.os[3] < 0 ? -g.os[3] : g.os[3]) >= limit)
    return 0;
  if (!channels_last) {
    // The forward's items: kPoolChannels whole channels of one group, channel offsets
    // inside an item 32-bit too (forward_column).
    const int64_t cs = g.xs[1] < 0 ? -g.xs[1] : g.xs[1], ocs = g.os[1] < 0 ? -g.os[1] : g.os[1];
    if (!backward && (g.group_channels % kPoolChannels != 0 || (kPoolChannels + lrn::sweep::kMaxSpan) * cs >= limit ||
                      kPoolChannels * ocs >= limit))
      return 0;
    // The backward's pixel pairs: stride 2, right windows and second pixels at +1; its
    // channel strides 32-bit (backward_channels_first).
    if (backward && (g.SH != 2 || g.SW != 2 || g.os[3] != 1 || cs >= limit || ocs >= limit)) return 0;
    // make_items counts a chunk's class sizes in int: the forward's kRunImages images of
    // (C / kPoolChannels runs) x (Ho x (Wo + 1) positions), 32 lanes for 31 and each class
    // padded to a block; the backward's one image of runs x pixel pairs. Bounded by twice
    // the items here.
    const int64_t chunk_items = backward ? int64_t(g.C) * (g.H + 2) * (g.W + 2)
                                         : int64_t(kRunImages) * (g.C / kPoolChannels + 4) * (g.Ho + 1) * (g.Wo + 2);
    if (2 * chunk_items + 4 * kRunBlock >= limit) return 0;
    return 1;
  }
  constexpr int vec = 16 / sizeof(scalar_t);
  if (vec < 2 || g.group_channels % vec != 0 || g.xs[1] != 1 || g.os[1] != 1) return 0;
  // backward_lanes: one halo lane per side; the 3/2 gather.
  if (backward && (g.win.span() > vec || g.SH != 2 || g.SW != 2)) return 0;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 0;
  return vec;
}

// fn(integral_constant<SPAN>, integral_constant<V>, integral_constant<bool, CL>).
template <typename scalar_t, typename Fn>
void dispatch(const Geometry& g, bool channels_last, Fn&& fn) {
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
