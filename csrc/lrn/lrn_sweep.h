// LRN sweep kernels: the per-thread bodies, shared verbatim by the CUDA kernels (one
// call per GPU thread) and the CPU kernels (one call per work item of a parallel_for), so
// CPU-only CI runs the GPU's indexing, loop structure and order of every sum. Not its
// last bits: the power differs (lrn.h: Pow34's MUFU rsqrt/sqrt on the GPU, correctly
// rounded roots on the CPU; PowAny: exp2/log2 vs pow), and nvcc contracts a * b + c into
// FMA where the CPU build keeps two roundings (baseline x86-64 has no FMA instruction). So CPU and GPU
// agree to a few ulp, not bit for bit, and a near-tie of two pooled values may resolve
// differently (tests/test_relu_lrn_max_pool2d.py::test_near_ties_documented).
//
// Kernel variants (template <SPAN, V, CL, scalar_t>, one line each):
//   forward_channels_first   NCHW column of V pixels, channel run, batches of U channel loads
//                            (unchecked while a batch lies inside [0, C))
//   forward_channels_last    NHWC vector of V channels + halo vectors, one pixel
//   backward_sweep           NCHW column (generic loads: the fused stage's NCHW bwd)
//   backward_channels_first  NCHW column, the LRN's own loop over backward_sweep's steps:
//                            unchecked batches inside [0, C), steps two channels at a time
//   backward_vector          NHWC vector + halo vectors (generic loads), paired window sums
//   backward_channels_last   the LRN's NHWC bwd: backward_vector, interior vectors without
//                            bounds tests
// The power is a functor chosen once per launch (lrn.h: Pow34 on the GPU, PowAny on the
// CPU and the general CUDA path): no per-element test of beta.
//
// Every window sum is taken from registers. The window width is a compile-time SPAN
// (= size - 1, clamped to C - 1; PRE = (SPAN + 1) / 2 channels behind, POST = SPAN / 2
// ahead, which is make_window's placement), so every array index below is a constant
// after unrolling and the arrays live in registers.
//
// Two shapes of work item, one per layout, each reading whole vectors of V elements where
// the alignment allows (vector_width; V = 1 otherwise):
//
//  * channels-first (NCHW: pixels contiguous): a column of V adjacent pixels sweeps a run
//    of channels [cb, ce). A shift register holds x for the SPAN + 1 channels of the
//    current window, so each step loads ONE new channel vector, sums SPAN + 1 squares
//    from registers, and stores one output vector. Adjacent GPU threads own adjacent
//    columns: every load and store of a warp is one contiguous span.
//
//  * channels-last (NHWC: channels contiguous): one pixel's V adjacent channels
//    [c, c + V). The item loads its own vector and H = ceil(halo / V) neighbour vectors
//    on each side (the neighbours' own vectors: L1 hits on the GPU), then computes V
//    outputs. Adjacent GPU threads own adjacent vectors: coalesced again.
//
// Channels outside [0, C) read as zero, exactly the zero padding of the definition.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "int_divider.h"
#include "lrn/lrn.h"

// Full unrolling makes every register-array index a constant (nvcc and gcc alike).
#if defined(__CUDACC__)
#define LRN_UNROLL _Pragma("unroll")
#define LRN_NO_UNROLL _Pragma("unroll 1")
#else
#define LRN_UNROLL _Pragma("GCC unroll 32")
#define LRN_NO_UNROLL _Pragma("GCC unroll 1")
#endif

namespace alexnet_cuda {
namespace lrn {
namespace sweep {

// Window sizes with sweep kernels: SPAN <= kMaxSpan (size <= 7). Wider windows use
// the general kernels (shared-memory tiles on CUDA, lrn_cpu.cpp's blocks on CPU).
constexpr int kMaxSpan = 6;

// V elements of 16 bytes total, aligned so the compiler emits one 128-bit access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// On the CPU, which tolerates misaligned accesses, check the alignment a GPU would need:
// the CPU tests run these very functions, so a misaligned vector fails there loudly.
template <typename T, int V>
C10_HOST_DEVICE C10_ALWAYS_INLINE void check_aligned(const void* p) {
#if !defined(__CUDA_ARCH__)
  TORCH_CHECK(reinterpret_cast<uintptr_t>(p) % alignof(Vec<T, V>) == 0, "alexnet_cuda internal error: misaligned ", V,
              "-element vector access");
#endif
}

// out[i] = p[i] for i < V, one vector access (p is V-aligned whenever V > 1).
template <int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void load(const scalar_t* p, acc_t* out) {
  check_aligned<scalar_t, V>(p);
  const Vec<scalar_t, V> a = *reinterpret_cast<const Vec<scalar_t, V>*>(p);
  LRN_UNROLL
  for (int i = 0; i < V; ++i) out[i] = static_cast<acc_t>(a.v[i]);
}

// load(), or zeros when `inside` is false (a channel in the zero padding).
template <int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void load_or_zero(const scalar_t* p, bool inside, acc_t* out) {
  if (inside) {
    load<V>(p, out);
  } else {
    LRN_UNROLL
    for (int i = 0; i < V; ++i) out[i] = acc_t(0);
  }
}

template <int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void store(scalar_t* p, const acc_t* in) {
  check_aligned<scalar_t, V>(p);
  Vec<scalar_t, V> a;
  LRN_UNROLL
  for (int i = 0; i < V; ++i) a.v[i] = static_cast<scalar_t>(in[i]);
  *reinterpret_cast<Vec<scalar_t, V>*>(p) = a;
}

// Shift a register array down by `by` slots (the oldest drop out); unrolled to moves.
template <int N, int by, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void shift(acc_t* r) {
  LRN_UNROLL
  for (int i = 0; i + by < N; ++i) r[i] = r[i + by];
}

// ---------------------------------------------------------------- channels-first
// x, y / dy, dx point at channel 0 of the column's first pixel; channel c is at c * cs.
// Outputs channels [cb, ce) of C. Register layout: r[i * V + p] = pixel p of channel i.

// Loads per batch of a channels-first sweep: enough channels that a thread has 32 bytes
// of loads in flight (one 4-byte load per step left ~8 KB in flight per SM; the budget is
// 32 KB at 50-75% occupancy).
template <typename scalar_t, int V>
constexpr int batch_channels() {
  return int(sizeof(scalar_t)) * V >= 32 ? 1 : 32 / (int(sizeof(scalar_t)) * V);
}

// U channels' raw elements for a batch, all loads issued before any use: out[u * V + p]
// = channel u's pixel p, p advancing by cs per channel. CHECK: channel c0 + u outside
// [0, C) reads as zero (only a run's priming and last batch need it: the steady state's
// batches lie wholly inside and take plain loads, without the per-load compare, zeroing
// move and predicated address arithmetic, ~5 instructions a load in the bf16 SASS).
template <int U, int V, bool CHECK, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void load_batch(const scalar_t*& p, int64_t cs, int c0, int C, scalar_t* out) {
  LRN_UNROLL
  for (int u = 0; u < U; ++u) {
    check_aligned<scalar_t, V>(p);
    if (!CHECK || (c0 + u >= 0 && c0 + u < C)) {
      const Vec<scalar_t, V> a = *reinterpret_cast<const Vec<scalar_t, V>*>(p);
      LRN_UNROLL
      for (int i = 0; i < V; ++i) out[u * V + i] = a.v[i];
    } else {
      LRN_UNROLL
      for (int i = 0; i < V; ++i) out[u * V + i] = scalar_t(0);
    }
    p += cs;
  }
}

// load_batch for a batch whose channels c0 .. c0 + FROM - 1 lie in [0, C) and whose
// later ones are >= 0 but may pass C - 1: only those FROM .. U - 1 are tested.
template <int U, int V, int FROM, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void load_batch_end(const scalar_t*& p, int64_t cs, int c0, int C, scalar_t* out) {
  LRN_UNROLL
  for (int u = 0; u < U; ++u) {
    check_aligned<scalar_t, V>(p);
    if (u < FROM || c0 + u < C) {
      const Vec<scalar_t, V> a = *reinterpret_cast<const Vec<scalar_t, V>*>(p);
      LRN_UNROLL
      for (int i = 0; i < V; ++i) out[u * V + i] = a.v[i];
    } else {
      LRN_UNROLL
      for (int i = 0; i < V; ++i) out[u * V + i] = scalar_t(0);
    }
    p += cs;
  }
}

// Forward: window of channel c = channels [c - PRE, c + POST] = ring slots 0 .. SPAN,
// x_c in slot PRE. Before the step for channel c the ring holds channels
// c - PRE - 1 .. c + POST - 1; the step shifts one slot and takes channel c + POST. Loads
// go in batches of U channels (load_batch: all issued before the batch's math); pointers
// advance by the channel stride instead of c * cs. A batch of channels [c, c + U) inside
// its run loads channels c + POST .. c + U - 1 + POST, of which only the last POST may pass
// C - 1 (in the last run): only those are tested, in every batch, so that every batch
// (and every run: AlexNet's runs are one batch) takes the same compiled path and a warp
// whose items span two runs does not run two. A batch steps two channels
// at a time: the windows of c and c + 1 share SPAN channels, so the two sums of squares
// take that common sum plus one square each, SPAN + 2 products for two outputs instead of
// 2 (SPAN + 1) (the backward's backward_step2 does the same; the order of the additions
// differs from one window at a time, so the last bits may).
template <typename scalar_t, int V>
constexpr int forward_batch_channels() {
  // 16-bit channels-first: 32 loads of one element a batch. With 4 blocks per SM
  // (sweep_min_blocks) that keeps over 32 KB per SM in flight while a batch's math waits.
  return sizeof(scalar_t) == 2 && V == 1 ? 2 * batch_channels<scalar_t, V>() : batch_channels<scalar_t, V>();
}

template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_channels_first(const scalar_t* x, scalar_t* y, int64_t cs, int C, int cb,
                                                              int ce, acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, N = (SPAN + 1) * V;
  constexpr int U = forward_batch_channels<scalar_t, V>();
  acc_t ring[N];
  LRN_UNROLL
  for (int i = 0; i < SPAN; ++i) {
    const int c = cb - PRE + i;
    load_or_zero<V>(x + c * cs, c >= 0 && c < C, ring + (i + 1) * V);
  }
  const scalar_t* xn = x + (cb + POST) * cs;  // channel c + POST
  scalar_t* yc = y + cb * cs;
  auto step = [&](const scalar_t* fresh) {
    shift<N, V>(ring);
    LRN_UNROLL
    for (int p = 0; p < V; ++p) ring[SPAN * V + p] = static_cast<acc_t>(fresh[p]);
    acc_t out[V];
    LRN_UNROLL
    for (int p = 0; p < V; ++p) {
      acc_t sumsq = acc_t(0);
      LRN_UNROLL
      for (int i = 0; i <= SPAN; ++i) sumsq += ring[i * V + p] * ring[i * V + p];
      out[p] = forward_value(ring[PRE * V + p], sumsq, scale, pw, k);
    }
    store<V>(yc, out);
    yc += cs;
  };
  // Channels c and c + 1 (fresh: channels c + POST, c + 1 + POST): e = x_{c-PRE .. c+1+POST}.
  auto step2 = [&](const scalar_t* fresh) {
    acc_t e[N + V];
    LRN_UNROLL
    for (int i = 0; i < SPAN * V; ++i) e[i] = ring[V + i];
    LRN_UNROLL
    for (int i = 0; i < 2 * V; ++i) e[SPAN * V + i] = static_cast<acc_t>(fresh[i]);
    acc_t out0[V], out1[V];
    LRN_UNROLL
    for (int p = 0; p < V; ++p) {
      acc_t common = acc_t(0);  // x_{c+1-PRE .. c+POST}^2: both windows
      LRN_UNROLL
      for (int i = 1; i <= SPAN; ++i) common += e[i * V + p] * e[i * V + p];
      const acc_t s0 = common + e[p] * e[p], s1 = common + e[(SPAN + 1) * V + p] * e[(SPAN + 1) * V + p];
      out0[p] = forward_value(e[PRE * V + p], s0, scale, pw, k);
      out1[p] = forward_value(e[(PRE + 1) * V + p], s1, scale, pw, k);
    }
    store<V>(yc, out0);
    store<V>(yc + cs, out1);
    yc += 2 * cs;
    LRN_UNROLL
    for (int i = 0; i < N; ++i) ring[i] = e[V + i];
  };
  auto batch = [&](const scalar_t* fresh) {
    LRN_UNROLL
    for (int u = 0; u + 1 < U; u += 2) step2(fresh + u * V);
    if constexpr (U % 2 == 1) step(fresh + (U - 1) * V);
  };
  int c = cb;
  for (; c + U <= ce; c += U) {  // c + U <= C: channels below c + U are inside
    scalar_t fresh[U * V];
    load_batch_end<U, V, (U > POST ? U - POST : 0)>(xn, cs, c + POST, C, fresh);
    batch(fresh);
  }
  for (; c < ce; ++c) {
    scalar_t fresh[V];
    load_batch<1, V, true>(xn, cs, c + POST, C, fresh);
    step(fresh);
  }
}

// Backward, one step per channel j from cb - POST to ce - 1 + PRE:
//   xr: x for channels j - PRE .. j + POST (the window of j; slot 0 is x_c, c = j - PRE)
//   s_j, p1 = s_j^(-beta-1);  t_j = dy_j x_j p1 (0 outside [lo, hi));  g_j = dy_j s_j^-beta
//   tr: t for channels j - SPAN .. j = c - POST .. c + PRE (the mirrored window of c)
//   gr: g for channels j - PRE .. j (slot 0 is g_c = dy_c s_c^-beta)
// and once c = j - PRE >= cb:  dx_c = g_c - 2 scale beta x_c sum(tr).
// backward_step is one step (shared by backward_sweep and the LRN's own NCHW loop):
// xnew = x_{j+POST}, dyj = dy_j, inside = j in [lo, hi); with EMIT it writes dx_c to out.
template <int SPAN, int V, bool EMIT, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_step(acc_t* xr, acc_t* tr, acc_t* gr, const acc_t* xnew,
                                                     const acc_t* dyj, bool inside, acc_t* out, acc_t scale,
                                                     const Pow& pw, acc_t k, acc_t coef) {
  constexpr int PRE = (SPAN + 1) / 2, N = (SPAN + 1) * V, NG = (PRE + 1) * V;
  shift<N, V>(xr);
  LRN_UNROLL
  for (int p = 0; p < V; ++p) xr[SPAN * V + p] = xnew[p];
  shift<N, V>(tr);
  shift<NG, V>(gr);
  LRN_UNROLL
  for (int p = 0; p < V; ++p) {
    acc_t sumsq = acc_t(0);
    LRN_UNROLL
    for (int i = 0; i <= SPAN; ++i) sumsq += xr[i * V + p] * xr[i * V + p];
    acc_t p0, p1;
    pw.both(k + scale * sumsq, p0, p1);
    // Outside [lo, hi) s may be 0 (k = 0): select, never multiply, the zero.
    tr[SPAN * V + p] = inside ? dyj[p] * xr[PRE * V + p] * p1 : acc_t(0);
    gr[PRE * V + p] = dyj[p] * p0;
  }
  if (EMIT) {
    LRN_UNROLL
    for (int p = 0; p < V; ++p) {
      acc_t tsum = acc_t(0);
      LRN_UNROLL
      for (int i = 0; i <= SPAN; ++i) tsum += tr[i * V + p];
      out[p] = gr[p] - coef * xr[p] * tsum;
    }
  }
}

// Two steps at once, channels j and j + 1 (the LRN's NCHW loop): what two backward_step
// calls compute, with the sums shared (so added in another order: last bits may differ).
// The windows of j and j + 1 overlap in SPAN channels, so s_j and s_{j+1} take that
// common sum of squares plus one square each (SPAN + 2 squares for two windows instead
// of 2 (SPAN + 1)); likewise the mirrored t sums of c and c + 1. Extended rings:
// e = x_{j-PRE .. j+1+POST}, te = t_{j-SPAN .. j+1}, ge = g_{j-PRE .. j+1}; afterwards the
// rings hold their last SPAN + 1 / PRE + 1.
template <int SPAN, int V, bool EMIT, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_step2(acc_t* xr, acc_t* tr, acc_t* gr, const acc_t* xnew,
                                                      const acc_t* dyj, bool inside0, bool inside1, acc_t* out,
                                                      acc_t scale, const Pow& pw, acc_t k, acc_t coef) {
  constexpr int PRE = (SPAN + 1) / 2, N = (SPAN + 1) * V, NG = (PRE + 1) * V;
  acc_t e[N + V], te[N + V], ge[NG + V];
  LRN_UNROLL
  for (int i = 0; i < SPAN * V; ++i) e[i] = xr[V + i];
  LRN_UNROLL
  for (int i = 0; i < 2 * V; ++i) e[SPAN * V + i] = xnew[i];
  LRN_UNROLL
  for (int i = 0; i < SPAN * V; ++i) te[i] = tr[V + i];
  LRN_UNROLL
  for (int i = 0; i < PRE * V; ++i) ge[i] = gr[V + i];
  LRN_UNROLL
  for (int p = 0; p < V; ++p) {
    acc_t common = acc_t(0);  // x_{j+1-PRE .. j+POST}^2: both windows
    LRN_UNROLL
    for (int i = 1; i <= SPAN; ++i) common += e[i * V + p] * e[i * V + p];
    const acc_t s0 = common + e[p] * e[p], s1 = common + e[(SPAN + 1) * V + p] * e[(SPAN + 1) * V + p];
    acc_t p0, p1, q0, q1;
    pw.both(k + scale * s0, p0, p1);
    pw.both(k + scale * s1, q0, q1);
    const acc_t d0 = dyj[p], d1 = dyj[V + p];
    // Outside [lo, hi) s may be 0 (k = 0): select, never multiply, the zero.
    te[SPAN * V + p] = inside0 ? d0 * e[PRE * V + p] * p1 : acc_t(0);
    te[(SPAN + 1) * V + p] = inside1 ? d1 * e[(PRE + 1) * V + p] * q1 : acc_t(0);
    ge[PRE * V + p] = d0 * p0;
    ge[(PRE + 1) * V + p] = d1 * q0;
  }
  if (EMIT) {
    LRN_UNROLL
    for (int p = 0; p < V; ++p) {
      acc_t common = acc_t(0);  // t_{j+1-SPAN .. j}: both mirrored windows
      LRN_UNROLL
      for (int i = 1; i <= SPAN; ++i) common += te[i * V + p];
      out[p] = ge[p] - coef * e[p] * (common + te[p]);
      out[V + p] = ge[V + p] - coef * e[V + p] * (common + te[(SPAN + 1) * V + p]);
    }
  }
  LRN_UNROLL
  for (int i = 0; i < N; ++i) xr[i] = e[V + i];
  LRN_UNROLL
  for (int i = 0; i < N; ++i) tr[i] = te[V + i];
  LRN_UNROLL
  for (int i = 0; i < NG; ++i) gr[i] = ge[V + i];
}

// c in [lo, hi) (backward_sweep's priming: after it every channel loaded lies at or above
// lo, so the steady state tests nothing and a run's last batches only the upper end).
C10_HOST_DEVICE C10_ALWAYS_INLINE bool in_range(int c, int lo, int hi) { return c >= lo && c < hi; }

// Generic over where the values come from (the fused ReLU -> LRN -> max-pool reuses it):
// load_x(v, in) / load_dy(v, in) fill v[0..V) for the next channel, zeros where `in` is
// false, and store(dx, x) receives the next channel's V results and x values; `in` (the
// channel lies in [lo, hi)) is a bool, or std::true_type where it is known to. Each of the
// three is called for consecutive channels only (so it advances its own pointers). The
// first SPAN steps only prime the registers; then the loads come in batches of U steps (x
// and dy of U channels issued before their math). The steady state's batches, whose
// channels all lie in [lo, hi), load untested and take no t select.
template <int SPAN, int V, int U, typename acc_t, typename Pow, typename LoadX, typename LoadDy, typename Store>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_sweep(LoadX&& load_x, LoadDy&& load_dy, Store&& store_dx, int lo,
                                                      int hi, int cb, int ce, acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, N = (SPAN + 1) * V, NG = (PRE + 1) * V;
  const acc_t coef = acc_t(2) * scale * pw.beta;
  acc_t xr[N], tr[N], gr[NG];
  LRN_UNROLL
  for (int i = 0; i < N; ++i) tr[i] = acc_t(0);
  LRN_UNROLL
  for (int i = 0; i < NG; ++i) gr[i] = acc_t(0);
  const int j0 = cb - POST;
  LRN_UNROLL
  for (int i = 0; i < SPAN; ++i) load_x(xr + (i + 1) * V, in_range(j0 - PRE + i, lo, hi));
  // B steps with x_{j+POST..} and dy_j.. loaded (in(u): channel j + u lies in [lo, hi)):
  // pairs of channels (backward_step2, whose windows share their common sums: SPAN + 2
  // squares and t terms for two channels instead of 2 (SPAN + 1); the order of the
  // additions differs from one channel at a time, so the last bits may), and a single step
  // for an odd B.
  constexpr bool PAIRS = SPAN >= 2;  // (z below reads ring slots 1 and 2)
  auto steps = [&](auto b, auto emit, const acc_t* xn, const acc_t* d, auto&& in) {
    constexpr int B = decltype(b)::value;
    constexpr bool EMIT = decltype(emit)::value;
    constexpr int B2 = PAIRS ? B / 2 * 2 : 0;
    LRN_UNROLL
    for (int u = 0; u < B2; u += 2) {
      acc_t z[2 * V], out[2 * V];  // x of the two channels it emits: ring slots 1, 2 before
      LRN_UNROLL
      for (int p = 0; p < 2 * V; ++p) z[p] = xr[V + p];
      backward_step2<SPAN, V, EMIT>(xr, tr, gr, xn + u * V, d + u * V, bool(in(u)), bool(in(u + 1)), out, scale, pw, k,
                                    coef);
      if (EMIT) {
        store_dx(out, z);
        store_dx(out + V, z + V);
      }
    }
    LRN_UNROLL
    for (int u = B2; u < B; ++u) {
      acc_t out[V];
      backward_step<SPAN, V, EMIT>(xr, tr, gr, xn + u * V, d + u * V, bool(in(u)), out, scale, pw, k, coef);
      if (EMIT) store_dx(out, xr);
    }
  };
  // A batch of B steps: in_x(u) / in_dy(u) whether x_{j+POST+u} / dy_{j+u} lie in [lo, hi).
  auto batch = [&](auto b, auto emit, auto&& in_x, auto&& in_dy) {
    constexpr int B = decltype(b)::value;
    acc_t xn[B * V], d[B * V];
    LRN_UNROLL
    for (int u = 0; u < B; ++u) load_x(xn + u * V, in_x(u));
    LRN_UNROLL
    for (int u = 0; u < B; ++u) load_dy(d + u * V, in_dy(u));
    steps(b, emit, xn, d, in_dy);
  };
  using emit = std::true_type;
  using one = std::integral_constant<int, 1>;
  auto inside = [](int) { return std::true_type{}; };
  // SPAN priming steps (c = j - PRE < cb), in batches of at most U.
  int j = j0;
  auto primed = [&](auto b) {
    batch(
        b, std::false_type{}, [&](int u) { return in_range(j + POST + u, lo, hi); },
        [&](int u) { return in_range(j + u, lo, hi); });
    j += decltype(b)::value;
  };
  constexpr int UP = U < SPAN ? U : (SPAN > 0 ? SPAN : 1);
  LRN_UNROLL
  for (int u = 0; u + UP <= SPAN; u += UP) primed(std::integral_constant<int, UP>{});
  if constexpr (SPAN % UP != 0) primed(std::integral_constant<int, SPAN % UP>{});
  // From here j >= cb + PRE >= lo. Steady state: every loaded channel (x up to
  // j + U - 1 + POST) below ce <= hi too. Every run tests the last SPAN steps' loads, those
  // that end inside [lo, hi) as well, so all runs of one length take the same path (a
  // warp's lanes may hold a group's last run and a middle one).
  if constexpr (U == 1) {
    // Single steps: ce - cb emitting steps, of which the last SPAN are the tail once the
    // run is longer than SPAN. Then the steady state is a count, unrolled by TURN steps:
    // in a runtime loop of single steps every ring slot moves each step (~18 moves at
    // SPAN 4), unrolled they move once per TURN steps. A whole turn of the rings (SPAN + 1
    // steps) would move none, but spills a value at 64 registers (50% occupancy); 3 does
    // not (bench/SASS.md has the counts). The tail, unrolled too, tests its channels
    // against room = hi - ce: no channel index stays live.
    constexpr int TURN = 3;
    const int steady = ce - cb - SPAN;
    if (steady > 0) {
      const int room = hi - ce;  // channels ce .. hi - 1 lie inside too
      // The odd steps first, counting down the steady steps themselves: then one count
      // is live across each loop.
      int left = steady;
      for (; left % TURN != 0; --left) batch(one{}, emit{}, inside, inside);
      for (int turns = left / TURN; turns > 0; --turns) {
        LRN_UNROLL
        for (int r = 0; r < TURN; ++r) batch(one{}, emit{}, inside, inside);
      }
      // Tail step r: x of channel ce + r, dy of ce - POST + r.
      LRN_UNROLL
      for (int r = 0; r < SPAN; ++r)
        batch(one{}, emit{}, [&](int) { return r < room; }, [&](int) { return r - POST < room; });
    } else {
      for (int r = ce - cb; r > 0; --r, ++j)
        batch(one{}, emit{}, [&](int) { return j + POST < hi; }, [&](int) { return j < hi; });
    }
  } else {
    const int steady_end = ce - POST - U, jend = ce + PRE;
    auto below_hi_x = [&](int u) { return j + POST + u < hi; };
    auto below_hi_dy = [&](int u) { return j + u < hi; };
    for (; j <= steady_end; j += U) batch(std::integral_constant<int, U>{}, emit{}, inside, inside);
    for (; j + U <= jend; j += U) batch(std::integral_constant<int, U>{}, emit{}, below_hi_x, below_hi_dy);
    for (; j < jend; ++j) batch(one{}, emit{}, below_hi_x, below_hi_dy);  // reaching past hi
  }
}

// LRN backward, channels-first: backward_sweep's steps with the LRN's own loop. Running
// pointers (the loads and stores are consecutive); loads in batches of U channels of x
// and dy (load_batch), all issued before the batch's math. The priming steps, and a run's
// last batch and tail where they reach past channel C - 1, test the channel; the steady
// state's batches (every x and dy inside [0, C)) take no test and no t select.
template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_channels_first(const scalar_t* dy, const scalar_t* x, scalar_t* dx,
                                                               int64_t cs, int C, int cb, int ce, acc_t scale,
                                                               const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, N = (SPAN + 1) * V, NG = (PRE + 1) * V;
  // Two arrays are loaded per step: half the forward's batch gives the same bytes in flight.
  constexpr int U = batch_channels<scalar_t, V>() > 1 ? batch_channels<scalar_t, V>() / 2 : 1;
  const acc_t coef = acc_t(2) * scale * pw.beta;
  const int j0 = cb - POST;
  const scalar_t* xp = x + (j0 - PRE) * cs;
  const scalar_t* dyp = dy + j0 * cs;
  scalar_t* dxp = dx + cb * cs;
  acc_t xr[N], tr[N], gr[NG];
  LRN_UNROLL
  for (int i = 0; i < N; ++i) tr[i] = acc_t(0);
  LRN_UNROLL
  for (int i = 0; i < NG; ++i) gr[i] = acc_t(0);
  constexpr int NP = SPAN > 0 ? SPAN * V : 1;  // priming arrays (no zero-length array for SPAN = 0)
  {
    scalar_t raw[NP];
    load_batch<SPAN, V, true>(xp, cs, j0 - PRE, C, raw);
    LRN_UNROLL
    for (int i = 0; i < SPAN * V; ++i) xr[V + i] = static_cast<acc_t>(raw[i]);
  }
  // One step per channel j of a batch of B loaded by the caller (raw x_{j+POST}, dy_j).
  auto steps = [&](auto b, auto check, auto emit, int j, const scalar_t* xraw, const scalar_t* dyraw) {
    constexpr int B = decltype(b)::value;
    constexpr bool CHECK = decltype(check)::value, EMIT = decltype(emit)::value;
    LRN_UNROLL
    for (int u = 0; u + 1 < B; u += 2) {
      acc_t xn[2 * V], d[2 * V], out[2 * V];
      LRN_UNROLL
      for (int p = 0; p < 2 * V; ++p) {
        xn[p] = static_cast<acc_t>(xraw[u * V + p]);
        d[p] = static_cast<acc_t>(dyraw[u * V + p]);
      }
      const bool in0 = !CHECK || (j + u >= 0 && j + u < C), in1 = !CHECK || (j + u + 1 >= 0 && j + u + 1 < C);
      backward_step2<SPAN, V, EMIT>(xr, tr, gr, xn, d, in0, in1, out, scale, pw, k, coef);
      if (EMIT) {
        store<V>(dxp, out);
        store<V>(dxp + cs, out + V);
        dxp += 2 * cs;
      }
    }
    if constexpr (B % 2 == 1) {
      constexpr int u = B - 1;
      acc_t xn[V], d[V], out[V];
      LRN_UNROLL
      for (int p = 0; p < V; ++p) {
        xn[p] = static_cast<acc_t>(xraw[u * V + p]);
        d[p] = static_cast<acc_t>(dyraw[u * V + p]);
      }
      const bool inside = !CHECK || (j + u >= 0 && j + u < C);
      backward_step<SPAN, V, EMIT>(xr, tr, gr, xn, d, inside, out, scale, pw, k, coef);
      if (EMIT) {
        store<V>(dxp, out);
        dxp += cs;
      }
    }
  };
  using checked = std::true_type;
  using unchecked = std::false_type;
  int j = j0;
  {  // SPAN priming steps: c = j - PRE < cb
    scalar_t xraw[NP], dyraw[NP];
    load_batch<SPAN, V, true>(xp, cs, j + POST, C, xraw);
    load_batch<SPAN, V, true>(dyp, cs, j, C, dyraw);
    steps(std::integral_constant<int, SPAN>{}, checked{}, std::false_type{}, j, xraw, dyraw);
    j += SPAN;
  }
  const int jend = ce + PRE;
  for (; j + U <= jend && j + U + POST <= C; j += U) {
    scalar_t xraw[U * V], dyraw[U * V];
    load_batch<U, V, false>(xp, cs, j + POST, C, xraw);
    load_batch<U, V, false>(dyp, cs, j, C, dyraw);
    steps(std::integral_constant<int, U>{}, unchecked{}, std::true_type{}, j, xraw, dyraw);
  }
  for (; j + U <= jend; j += U) {  // a run's last batch, reaching past channel C - 1
    scalar_t xraw[U * V], dyraw[U * V];
    load_batch<U, V, true>(xp, cs, j + POST, C, xraw);
    load_batch<U, V, true>(dyp, cs, j, C, dyraw);
    steps(std::integral_constant<int, U>{}, checked{}, std::true_type{}, j, xraw, dyraw);
  }
  for (; j < jend; ++j) {
    scalar_t xraw[V], dyraw[V];
    load_batch<1, V, true>(xp, cs, j + POST, C, xraw);
    load_batch<1, V, true>(dyp, cs, j, C, dyraw);
    steps(std::integral_constant<int, 1>{}, checked{}, std::true_type{}, j, xraw, dyraw);
  }
}

// ---------------------------------------------------------------- channels-last
// x, y / dy, dx point at channel 0 of one pixel; the item owns channels [c, c + V) of C
// (c a multiple of V, and C a multiple of V when V > 1: vectors are never partial).
// A register array covering channels [c - H V, c + V + H V) has channel c + i in slot
// H V + i.

// Load the 2H + 1 vectors around c into r.
template <int H, int V, typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void load_neighbourhood(const scalar_t* p, int c, int C, acc_t* r) {
  LRN_UNROLL
  for (int b = -H; b <= H; ++b) {
    const int cv = c + b * V;
    load_or_zero<V>(p + cv, cv >= 0 && cv < C, r + (b + H) * V);
  }
}

template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_channels_last(const scalar_t* x, scalar_t* y, int C, int c, acc_t scale,
                                                             const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2, H = (PRE + V - 1) / V;
  acc_t r[(2 * H + 1) * V];
  load_neighbourhood<H, V>(x, c, C, r);
  acc_t out[V];
  LRN_UNROLL
  for (int i = 0; i < V; ++i) {
    acc_t sumsq = acc_t(0);
    LRN_UNROLL
    for (int d = -PRE; d <= POST; ++d) sumsq += r[H * V + i + d] * r[H * V + i + d];
    out[i] = forward_value(r[H * V + i], sumsq, scale, pw, k);
  }
  store<V>(y + c, out);
}

// sums[m] = f(m) + ... + f(m + W - 1) for m in [0, M), two windows at a time: windows m
// and m + 1 share W - 1 terms, so a pair costs W + 1 terms instead of 2 W.
template <int M, int W, typename acc_t, typename F>
C10_HOST_DEVICE C10_ALWAYS_INLINE void sliding_sums(F&& f, acc_t* sums) {
  LRN_UNROLL
  for (int m = 0; m + 1 < M; m += 2) {
    acc_t common = acc_t(0);
    LRN_UNROLL
    for (int i = m + 1; i < m + W; ++i) common += f(i);
    sums[m] = common + f(m);
    sums[m + 1] = common + f(m + W);
  }
  if constexpr (M % 2 == 1) {
    acc_t sum = acc_t(0);
    LRN_UNROLL
    for (int i = M - 1; i < M - 1 + W; ++i) sum += f(i);
    sums[M - 1] = sum;
  }
}

// dx_{c+i} needs t_j for j in [c + i - POST, c + i + PRE], so t over [c - POST, c + V + PRE)
// (slot m is channel c - POST + m), each needing x over its own window: x over
// [c - SPAN, c + V + SPAN) (HX vectors each side), dy over [c - POST, c + V + PRE) (HD).
// Generic like backward_sweep: load_x(cv, v) / load_dy(cv, v) fill the vector of channels
// [cv, cv + V) (zeros outside [lo, hi)); store(c, dx, x) gets the item's results.
// Window sums two at a time (sliding_sums).
template <int SPAN, int V, typename acc_t, typename Pow, typename LoadX, typename LoadDy, typename Store>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_vector(LoadX&& load_x, LoadDy&& load_dy, Store&& store_dx, int lo,
                                                       int hi, int c, acc_t scale, const Pow& pw, acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2;
  constexpr int HX = (SPAN + V - 1) / V, HD = (PRE + V - 1) / V, NT = V + SPAN;
  const acc_t coef = acc_t(2) * scale * pw.beta;
  acc_t xr[(2 * HX + 1) * V], dr[(2 * HD + 1) * V];
  LRN_UNROLL
  for (int b = -HX; b <= HX; ++b) load_x(c + b * V, xr + (b + HX) * V);
  LRN_UNROLL
  for (int b = -HD; b <= HD; ++b) load_dy(c + b * V, dr + (b + HD) * V);
  // Window of t slot m (channel c + m - POST): xr[HX V - SPAN + m .. HX V + m].
  acc_t t[NT], g[V] = {}, sumsq[NT], tsum[V];
  sliding_sums<NT, SPAN + 1>([&](int i) { return xr[HX * V - SPAN + i] * xr[HX * V - SPAN + i]; }, sumsq);
  LRN_UNROLL
  for (int m = 0; m < NT; ++m) {
    const int d = m - POST;  // channel c + d
    acc_t p0, p1;
    pw.both(k + scale * sumsq[m], p0, p1);
    const acc_t dyj = dr[HD * V + d];
    const int j = c + d;
    t[m] = j >= lo && j < hi ? dyj * xr[HX * V + d] * p1 : acc_t(0);
    if (d >= 0 && d < V) g[d] = dyj * p0;
  }
  // tsum[i]: t slots i .. i + SPAN = channels c + i - POST .. c + i + PRE.
  sliding_sums<V, SPAN + 1>([&](int m) { return t[m]; }, tsum);
  acc_t out[V];
  LRN_UNROLL
  for (int i = 0; i < V; ++i) out[i] = g[i] - coef * xr[HX * V + i] * tsum[i];
  store_dx(c, out, xr + HX * V);
}

// interior: c >= HX V and c + V + HX V <= C, HX = ceil(SPAN / V) (the item's vector
// class, make_items).
template <int SPAN, int V, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_channels_last(const scalar_t* dy, const scalar_t* x, scalar_t* dx,
                                                              int C, int c, bool interior, acc_t scale, const Pow& pw,
                                                              acc_t k) {
  constexpr int PRE = (SPAN + 1) / 2, POST = SPAN / 2;
  auto store_dx = [&](int cc, const acc_t* v, const acc_t*) { store<V>(dx + cc, v); };
  if (interior) {
    // Interior vector (all of a pixel's vectors but the first and last HX): every vector
    // it reads lies in [0, C), so plain loads, and every t channel in [c - POST, c + V +
    // PRE) is inside; passing that range as [lo, hi) lets the compiler drop the t selects
    // (j >= c - POST and j < c + V + PRE hold for each unrolled j = c + d).
    backward_vector<SPAN, V>([&](int cv, acc_t* v) { load<V>(x + cv, v); },
                             [&](int cv, acc_t* v) { load<V>(dy + cv, v); }, store_dx, c - POST, c + V + PRE, c, scale,
                             pw, k);
  } else {
    backward_vector<SPAN, V>([&](int cv, acc_t* v) { load_or_zero<V>(x + cv, cv >= 0 && cv < C, v); },
                             [&](int cv, acc_t* v) { load_or_zero<V>(dy + cv, cv >= 0 && cv < C, v); }, store_dx, 0, C,
                             c, scale, pw, k);
  }
}

// ---------------------------------------------------------------- work items
// Vector classes: channels-last items whose compiled path depends on which of its pixel's
// vectors they own. Such a kernel compiles an interior path (every vector it reads lies
// inside the pixel, or inside its LRN group: no bounds tests) and an edge path (the first
// and last `lo` vectors of each group of gv). In pixel-major order every warp holds both
// kinds (a pixel has 12 to 64 vectors at AlexNet's shapes) and runs both paths in turn.
// So the pixels go in chunks of kClassChunk = 32 (a warp's lanes): a chunk's interior
// items first, pixel-major, then its edge items. Both parts are multiples of 32 items,
// so each warp takes one path; only a tensor's last chunk, with fewer than 32 pixels, may
// have a warp of both. With ni / ne interior / edge vectors per pixel (per group nig / neg,
// ni = groups nig, ne = groups neg), item r of a chunk of P pixels is
//   r <  P ni:  pixel r / ni;  j = r % ni:  vector (j / nig) gv + lo + j % nig
//   r >= P ni:  e = r - P ni:  pixel e / ne;  j = e % ne, u = j % neg:
//               vector (j / neg) gv + (u < lo ? u : u + nig)
// lo = 0 makes every vector interior: plain pixel-major order (pixel r / vecs, vector
// r % vecs). A chunk is 32 pixels' vectors (6 to 32 KB of an AlexNet tensor): the edge
// warps read the sectors the chunk's interior warps read, as L1 / L2 hits.
constexpr int kClassChunk = 32;

struct VectorClasses {
  int64_t pixels;  // positions (pixels, or whatever the kernel calls one) of the launch
  int lo, gv;      // edge vectors at the start of a group (at most gv); vectors per group
  int nig, ni;     // interior vectors per group, per pixel
  IntDivider by_chunk, by_inner, by_edge, by_inner_group, by_edge_group;  // 32 vecs, ni, ne, nig, neg
};

// vecs vectors per pixel in groups of gv (gv divides vecs), `lo` edge vectors at each
// end of a group: the interior ones are [lo, gv - lo) (none when gv <= 2 lo).
inline VectorClasses make_vector_classes(int64_t pixels, int vecs, int gv, int lo) {
  VectorClasses c;
  c.pixels = pixels;
  c.gv = gv;
  c.lo = lo < gv ? lo : gv;
  c.nig = gv - 2 * lo > 0 ? gv - 2 * lo : 0;
  c.ni = vecs / gv * c.nig;
  c.by_chunk = IntDivider(kClassChunk * vecs);
  c.by_inner = IntDivider(c.ni);
  c.by_edge = IntDivider(vecs - c.ni);
  c.by_inner_group = IntDivider(c.nig);
  c.by_edge_group = IntDivider(gv - c.nig);
  return c;
}

struct VectorItem {
  int64_t pixel;
  int vec;
  bool interior;
};

C10_HOST_DEVICE C10_ALWAYS_INLINE VectorItem vector_item(const VectorClasses& c, int64_t i) {
  VectorItem o;
  int64_t chunk, r;
  c.by_chunk.divmod(i, chunk, r);
  const int64_t p0 = chunk * kClassChunk;
  const uint32_t pixels = c.pixels - p0 < kClassChunk ? static_cast<uint32_t>(c.pixels - p0) : kClassChunk;
  const uint32_t ri = static_cast<uint32_t>(r), inner = pixels * static_cast<uint32_t>(c.ni);
  o.interior = ri < inner;
  if (o.interior) {
    const uint32_t p = c.by_inner.div(ri), j = ri - p * c.by_inner.d, g = c.by_inner_group.div(j);
    o.pixel = p0 + p;
    o.vec = static_cast<int>(g) * c.gv + c.lo + static_cast<int>(j - g * c.by_inner_group.d);
  } else {
    const uint32_t e = ri - inner, p = c.by_edge.div(e), j = e - p * c.by_edge.d, g = c.by_edge_group.div(j);
    const int u = static_cast<int>(j - g * c.by_edge_group.d);
    o.pixel = p0 + p;
    o.vec = static_cast<int>(g) * c.gv + (u < c.lo ? u : u + c.nig);
  }
  return o;
}

// Item i of a launch (GPU thread or CPU loop index), adjacent items on adjacent memory:
//   channels-first: i = (o * runs + run) * cols + col   (col: a column of V pixels)
//   channels-last forward:  i = pixel * cols + vec      (vec: channels [vec V, vec V + V))
//   channels-last backward: by vector class (classes: interior vectors, which read no
//                           channel outside [0, C), and the first and last HX of a pixel)
struct Items {
  int64_t count;
  int64_t cols;           // columns per (outer, run), or vectors per pixel
  int runs;               // channels-first: channel runs per column (1 for channels-last)
  int run;                // channels-first: channels per run
  int vec;                // V
  VectorClasses classes;  // channels-last backward
};

// Channels per channels-first run: long enough that the SPAN-channel priming of each run
// is cheap, short enough that a batch has many columns x runs in flight.
constexpr int kChannelRun = 32;

// span: the LRN window's (Window::span()): the channels-last backward's edge vectors are
// the first and last HX = ceil(span / V) of a pixel (backward_channels_last).
inline Items make_items(const Geometry& v, int vec, int span) {
  Items it;
  it.vec = vec;
  it.classes = make_vector_classes(0, 1, 1, 0);
  if (v.channels_last) {
    it.cols = v.channels / vec;
    it.runs = 1;
    it.run = static_cast<int>(v.channels);
    it.count = v.pixels * it.cols;
    const int vecs = static_cast<int>(it.cols);
    it.classes = make_vector_classes(v.pixels, vecs, vecs, (span + vec - 1) / vec);
  } else {
    it.cols = v.pixels / vec;
    it.run = static_cast<int>(v.channels < kChannelRun ? v.channels : kChannelRun);
    it.runs = static_cast<int>((v.channels + it.run - 1) / it.run);
    it.count = v.outer * it.runs * it.cols;
  }
  return it;
}

// The backward's channels-first runs: at most kBackwardChannelRun channels, the channels
// split evenly (96 -> 2 x 48, 256 -> 4 x 64). A backward run takes run + SPAN steps
// (backward_channels_first: SPAN priming steps, each one channel's loads and powers), so
// the longer runs spend 52 / 48 and 68 / 64 steps an output channel where runs of 32 spent
// 36 / 32: 4-6% fewer instructions, and still 2-4 runs per column in flight.
constexpr int kBackwardChannelRun = 64;

inline Items make_backward_items(const Geometry& v, int vec, int span) {
  Items it = make_items(v, vec, span);
  if (!v.channels_last && v.channels > 0) {
    it.runs = static_cast<int>((v.channels + kBackwardChannelRun - 1) / kBackwardChannelRun);
    it.run = static_cast<int>((v.channels + it.runs - 1) / it.runs);
    it.runs = static_cast<int>((v.channels + it.run - 1) / it.run);
    it.count = v.outer * it.runs * it.cols;
  }
  return it;
}

// q = a / b, r = a % b; 32-bit when both fit (a GPU's 64-bit division is a long routine).
C10_HOST_DEVICE C10_ALWAYS_INLINE void divmod(int64_t a, int64_t b, int64_t& q, int64_t& r) {
  if (((a | b) >> 31) == 0) {
    const uint32_t a32 = static_cast<uint32_t>(a), b32 = static_cast<uint32_t>(b);
    q = a32 / b32;
    r = a32 - static_cast<uint32_t>(q) * b32;
  } else {
    q = a / b;
    r = a - q * b;
  }
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void forward_item(const scalar_t* x, scalar_t* y, const Geometry& v, const Items& it,
                                                    int64_t i, acc_t scale, const Pow& pw, acc_t k) {
  const int C = static_cast<int>(v.channels);
  int64_t q, r;
  divmod(i, it.cols, q, r);
  if constexpr (CL) {
    const int64_t off = q * v.pixel_stride;
    forward_channels_last<SPAN, V>(x + off, y + off, C, static_cast<int>(r) * V, scale, pw, k);
  } else {
    int64_t o, run;
    divmod(q, it.runs, o, run);
    const int cb = static_cast<int>(run) * it.run, ce = cb + it.run < C ? cb + it.run : C;
    const int64_t off = o * v.outer_stride + r * V;
    forward_channels_first<SPAN, V>(x + off, y + off, v.channel_stride, C, cb, ce, scale, pw, k);
  }
}

template <int SPAN, int V, bool CL, typename scalar_t, typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE void backward_item(const scalar_t* dy, const scalar_t* x, scalar_t* dx,
                                                     const Geometry& v, const Items& it, int64_t i, acc_t scale,
                                                     const Pow& pw, acc_t k) {
  const int C = static_cast<int>(v.channels);
  if constexpr (CL) {
    const VectorItem o = vector_item(it.classes, i);
    const int64_t off = o.pixel * v.pixel_stride;
    backward_channels_last<SPAN, V>(dy + off, x + off, dx + off, C, o.vec * V, o.interior, scale, pw, k);
  } else {
    int64_t q, r;
    divmod(i, it.cols, q, r);
    int64_t o, run;
    divmod(q, it.runs, o, run);
    const int cb = static_cast<int>(run) * it.run, ce = cb + it.run < C ? cb + it.run : C;
    const int64_t off = o * v.outer_stride + r * V;
    backward_channels_first<SPAN, V>(dy + off, x + off, dx + off, v.channel_stride, C, cb, ce, scale, pw, k);
  }
}

// ---------------------------------------------------------------- host-side dispatch

// CUDA launches of the sweep kernels (LRN and the fused stage): one work item per
// thread, blocks of kThreads, and the dtypes that have them (float64 keeps the tile
// kernels on CUDA: its vectors hold two elements and its registers are twice as wide).
constexpr int kThreads = 256;

inline unsigned blocks_for(const char* op, int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks < (int64_t(1) << 31), op, " (CUDA): input too large for one launch");
  return static_cast<unsigned>(blocks);
}

template <typename scalar_t>
constexpr bool has_cuda_sweep_kernels() {
  return !std::is_same<scalar_t, double>::value;
}

// The sweep kernels cover this window (make_window's placement: pre = (span + 1) / 2).
inline bool covers(Window w) { return w.span() <= kMaxSpan && w.pre == (w.span() + 1) / 2 && w.post == w.span() / 2; }

// Elements per vector. Channels-last: 16 bytes' worth. Channels-first: at most 4 (16
// bytes of fp32, 8 of fp16/bf16): the sweep keeps ~3 (SPAN + 1) V values in registers, and
// V = 8 would need more registers than the bf16 backward can hold (bench/SASS.md). Vectors need
// the contiguous dim to be a multiple of V and every tensor's data 16-byte aligned
// (then every vector is aligned); otherwise V = 1.
template <typename scalar_t>
constexpr int max_vector(bool channels_last) {
  return channels_last ? int(16 / sizeof(scalar_t)) : (16 / sizeof(scalar_t) < 4 ? int(16 / sizeof(scalar_t)) : 4);
}

template <typename scalar_t>
int vector_width(const Geometry& v, std::initializer_list<const void*> ptrs) {
  const int vec = max_vector<scalar_t>(v.channels_last);
  const int64_t contiguous = v.channels_last ? v.channels : v.pixels;
  if (vec <= 1 || contiguous % vec != 0) return 1;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return vec;
}

// fn(integral_constant<int, SPAN>{}) for span in [0, kMaxSpan]: SPAN becomes a constant.
template <typename Fn>
void dispatch_span(int span, Fn&& fn) {
  static_assert(kMaxSpan == 6, "extend the cases");
  switch (span) {
    case 0: return fn(std::integral_constant<int, 0>{});
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    default: return fn(std::integral_constant<int, 6>{});
  }
}

// fn(integral_constant<SPAN>, integral_constant<V>, integral_constant<bool, CL>) with V
// either 1 or max_vector<scalar_t>(CL). Only call when covers(w).
template <typename scalar_t, typename Fn>
void dispatch(Window w, int vec, bool channels_last, Fn&& fn) {
  auto with_span = [&](auto span) {
    if (channels_last) {
      constexpr int kVec = max_vector<scalar_t>(true);
      if (vec == kVec)
        fn(span, std::integral_constant<int, kVec>{}, std::true_type{});
      else
        fn(span, std::integral_constant<int, 1>{}, std::true_type{});
    } else {
      constexpr int kVec = max_vector<scalar_t>(false);
      if (vec == kVec)
        fn(span, std::integral_constant<int, kVec>{}, std::false_type{});
      else
        fn(span, std::integral_constant<int, 1>{}, std::false_type{});
    }
  };
  dispatch_span(w.span(), with_span);
}

}  // namespace sweep
}  // namespace lrn
}  // namespace alexnet_cuda
