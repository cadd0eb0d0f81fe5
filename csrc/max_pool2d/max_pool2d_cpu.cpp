// Overlapping max-pooling: the CPU kernels of max_pool2d_forward and max_pool2d_backward
// (schemas and what the arguments mean: max_pool2d.h; argument checks, 3-D inputs, Meta
// kernels: max_pool2d.cpp; autograd: max_pool2d_autograd.cpp).
//
// CPU kernels, two per direction (all give PyTorch's CPU bits), chosen at each op's entry
// from its arguments alone:
//   forward_3s2         AlexNet's pool (3x3, stride 2, no padding/dilation, is_3s2), both layouts:
//                       separable, the row maxima of the even input rows computed once for
//                       the two output rows that share them; branch-free vectorized loops.
//   forward_kernel      any other pool: pool_window (max_pool2d.h, the
//                       CUDA kernels' per-element code) on 32 channels (NHWC) or 16 columns
//                       (NCHW) at once.
//   backward_3s2_nhwc   the 3/2 pool in channels_last: a gather whose windows per input
//                       row/column are known without division; one branch-free pass per
//                       window over a pixel's contiguous channels.
//   backward_scatter_*  NCHW, and any other pool: each output adds its gradient at its argmax
//                       (fp32 NCHW: straight into grad_input, as PyTorch does).
// The CUDA kernels' own per-item code runs on the CPU only in the test ops of
// max_pool2d_cuda_items_cpu.cpp.
#include "max_pool2d/max_pool2d.h"
#include "max_pool2d/max_pool2d_3s2.h"

#include "cpu_clones.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace alexnet_cuda {
namespace max_pool2d {
namespace {

// The forward hands pool_window several lanes at a time: adjacent channels (NHWC: 32,
// then 16, then 1; the compiler vectorizes the per-lane loops, and 32 lanes amortize each
// call's window setup over two AVX-512 vectors) or adjacent output columns (NCHW: 16,
// then 4; independent lanes, no branch per tap). for_lanes runs f(lanes, c) over the
// channels, lanes = std::integral_constant<int, 32, 16 or 1>. The backward's NHWC tasks
// take blocks of kChannelLanes channels.
constexpr int kChannelLanes = 32;
constexpr int kColumnLanes = 16;

template <typename F>
void for_lanes(int64_t C, const F& f) {
  int64_t c = 0;
  for (; c + kChannelLanes <= C; c += kChannelLanes) f(std::integral_constant<int, kChannelLanes>{}, c);
  for (; c + 16 <= C; c += 16) f(std::integral_constant<int, 16>{}, c);
  for (; c < C; ++c) f(std::integral_constant<int, 1>{}, c);
}

// NCHW forward of planes [begin, end): output pixels in row-major order. Columns whose
// windows lie inside the input along W (ow in [inner_begin, inner_end)) go 16 (then 4) at
// a time (lanes = columns, stride_w apart), the rest one by one. Compiled per ISA.
template <typename scalar_t, typename argmax_t>
ALEXNET_CPU_CLONES void forward_nchw_planes(const scalar_t* in, scalar_t* out_p, argmax_t* arg_p, const Geometry& g,
                                            int inner_begin, int inner_end, int64_t begin, int64_t end) {
  const int64_t H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  const int s = g.w.stride;
  for (int64_t plane = begin; plane < end; ++plane) {
    const scalar_t* in_plane = in + plane * H * W;
    for (int oh = 0; oh < Ho; ++oh) {
      const int64_t row = (plane * Ho + oh) * Wo;
      auto one = [&](int ow) {
        pool_window<1, scalar_t, argmax_t, int64_t>(in_plane, W, 1, g.h, g.w, oh, ow, out_p + row + ow,
                                                    arg_p + row + ow);
      };
      int ow = 0;
      for (; ow < inner_begin; ++ow) one(ow);
      auto lanes_of = [&](auto lanes) {  // as many blocks of `lanes` columns as fit
        constexpr int L = decltype(lanes)::value;
        for (; ow + L <= inner_end; ow += L) {
          pool_window<L, scalar_t, argmax_t, int64_t>(in_plane, W, 1, g.h, g.w, oh, ow, out_p + row + ow,
                                                      arg_p + row + ow, s, s);
        }
      };
      lanes_of(std::integral_constant<int, kColumnLanes>{});
      lanes_of(std::integral_constant<int, 4>{});  // AlexNet's 13- and 6-wide outputs
      for (; ow < Wo; ++ow) one(ow);
    }
  }
}

// NHWC forward of output pixels [begin, end) (n, oh, ow): each pixel's channels go
// 32 (then 16, then 1) at a time through pool_window, whose innermost loop then runs over
// contiguous channels. Compiled per ISA.
template <typename scalar_t, typename argmax_t>
ALEXNET_CPU_CLONES void forward_nhwc_pixels(const scalar_t* in, scalar_t* out_p, argmax_t* arg_p, const Geometry& g,
                                            int64_t begin, int64_t end) {
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  for (int64_t pixel = begin; pixel < end; ++pixel) {
    const int64_t n = pixel / (Ho * Wo);
    const int oh = static_cast<int>(pixel / Wo % Ho);
    const int ow = static_cast<int>(pixel % Wo);
    const scalar_t* in_image = in + n * H * W * C;
    for_lanes(C, [&](auto lanes, int64_t c) {
      const int64_t o = pixel * C + c;
      pool_window<decltype(lanes)::value, scalar_t, argmax_t, int64_t>(in_image + c, W * C, C, g.h, g.w, oh, ow,
                                                                       out_p + o, arg_p + o);
    });
  }
}

// ---- AlexNet's 3/2 pool (is_3s2: 3x3, stride 2, no padding or dilation, windows inside).
// Forward, separable (max_pool2d_3s2.h): the maxima of each input row over every window's
// three columns, then, per output row, a fold of its three rows' maxima; the even rows are
// shared by two output rows, so they are computed once: 6 compare steps per output instead
// of 8, in branch-free loops the compiler vectorizes. "Lanes" L are the elements that share
// a window column: 1 in NCHW (the loop runs over window columns, stride-2 loads), C in NHWC
// (the loop runs over contiguous channels).

// m[ow*L + l], tw[ow*L + l] = maximum of row[(2ow + t)*L + l] over t = 0..2, and its t.
template <bool kNHWC, typename scalar_t, typename opmath_t>
ALEXNET_CPU_CLONES void row_maxima_3s2(const scalar_t* row, int64_t Wo, int64_t L, opmath_t* m, int32_t* tw) {
  if constexpr (kNHWC) {
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const scalar_t* p = row + 2 * ow * L;
      for (int64_t l = 0; l < L; ++l) {
        int col;
        row_max3<opmath_t>(p[l], p[L + l], p[2 * L + l], &m[ow * L + l], &col);
        tw[ow * L + l] = col;
      }
    }
  } else {
    for (int64_t ow = 0; ow < Wo; ++ow) {
      int col;
      row_max3<opmath_t>(row[2 * ow], row[2 * ow + 1], row[2 * ow + 2], &m[ow], &col);
      tw[ow] = col;
    }
  }
}

// Output row oh from the maxima of its input rows 2oh, 2oh+1, 2oh+2 (m_r, t_r: a row's
// maximum over a window's three columns and its column tap):
//
//   out[j] = m_r[j] for the first r in 0..2 with the largest value (NaN counts as largest)
//   argmax[j] = 3r + t_r[j]  (one-byte codes), (2oh + r)*W + 2ow + t_r[j]  (int64)
//
// for j = ow*L + l. "Largest" is the bitwise (x > best) | isnan(x): with || (a branch)
// GCC left the loop scalar, as it did with the rows behind an array of pointers.
template <typename opmath_t>
inline bool takes_3s2(opmath_t x, opmath_t best) {
  return (x > best) | at::_isnan(x);
}

template <typename scalar_t, typename opmath_t>
ALEXNET_CPU_CLONES void fold_rows_3s2(const opmath_t* __restrict m0, const opmath_t* __restrict m1,
                                      const opmath_t* __restrict m2, const int32_t* __restrict t0,
                                      const int32_t* __restrict t1, const int32_t* __restrict t2, int64_t Wo, int64_t L,
                                      int64_t, int64_t, scalar_t* __restrict out, uint8_t* __restrict argmax) {
  for (int64_t j = 0; j < Wo * L; ++j) {  // one flat loop: vectorized for L = 1 (NCHW) too
    opmath_t best = m0[j];
    int32_t code = t0[j];
    bool take = takes_3s2(m1[j], best);
    best = take ? m1[j] : best;
    code = take ? 3 + t1[j] : code;
    take = takes_3s2(m2[j], best);
    best = take ? m2[j] : best;
    code = take ? 6 + t2[j] : code;
    out[j] = static_cast<scalar_t>(best);
    argmax[j] = static_cast<uint8_t>(code);
  }
}
template <typename scalar_t, typename opmath_t>
ALEXNET_CPU_CLONES void fold_rows_3s2(const opmath_t* __restrict m0, const opmath_t* __restrict m1,
                                      const opmath_t* __restrict m2, const int32_t* __restrict t0,
                                      const int32_t* __restrict t1, const int32_t* __restrict t2, int64_t Wo, int64_t L,
                                      int64_t oh, int64_t W, scalar_t* __restrict out, int64_t* __restrict argmax) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    for (int64_t l = 0; l < L; ++l) {
      const int64_t j = ow * L + l;
      opmath_t best = m0[j];
      int64_t th = 0, t = t0[j];
      bool take = takes_3s2(m1[j], best);
      best = take ? m1[j] : best;
      th = take ? 1 : th;
      t = take ? t1[j] : t;
      take = takes_3s2(m2[j], best);
      best = take ? m2[j] : best;
      th = take ? 2 : th;
      t = take ? t2[j] : t;
      out[j] = static_cast<scalar_t>(best);
      argmax[j] = (2 * oh + th) * W + 2 * ow + t;
    }
  }
}

// Output rows [oh0, oh1) of one NCHW plane or NHWC image (`in`, `out`, `argmax` at its
// element (0, 0, lane 0)); `buf` holds 3 rows of maxima and columns, 3 * Wo * L of each.
template <bool kNHWC, typename scalar_t, typename argmax_t, typename opmath_t>
void forward_3s2_rows(const scalar_t* in, scalar_t* out, argmax_t* argmax, const Geometry& g, int64_t L, int64_t oh0,
                      int64_t oh1, opmath_t* mbuf, int32_t* tbuf) {
  const int64_t W = g.w.size, Wo = g.w.out_size, n = Wo * L;
  opmath_t* m[3] = {mbuf, mbuf + n, mbuf + 2 * n};
  int32_t* tw[3] = {tbuf, tbuf + n, tbuf + 2 * n};
  row_maxima_3s2<kNHWC>(in + 2 * oh0 * W * L, Wo, L, m[0], tw[0]);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    row_maxima_3s2<kNHWC>(in + (2 * oh + 1) * W * L, Wo, L, m[1], tw[1]);
    row_maxima_3s2<kNHWC>(in + (2 * oh + 2) * W * L, Wo, L, m[2], tw[2]);
    fold_rows_3s2(m[0], m[1], m[2], tw[0], tw[1], tw[2], Wo, L, oh, W, out + oh * n, argmax + oh * n);
    std::swap(m[0], m[2]);  // row 2oh+2 is the next output row's first
    std::swap(tw[0], tw[2]);
  }
}

template <typename scalar_t, typename argmax_t>
void forward_3s2(const at::Tensor& input, const Geometry& g, bool channels_last, at::Tensor& out, at::Tensor& argmax) {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  argmax_t* arg_p = argmax.mutable_data_ptr<argmax_t>();
  const int64_t H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  // Tasks: (plane or image, chunk of output rows); a chunk recomputes one shared row.
  const int64_t L = channels_last ? g.C : 1, images = channels_last ? g.N : g.N * g.C;
  const int64_t rows = std::min<int64_t>(Ho, std::max<int64_t>(4, grain(9 * Wo * L)));
  const int64_t chunks = (Ho + rows - 1) / rows;
  at::parallel_for(0, images * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> mbuf(3 * Wo * L);
    std::vector<int32_t> tbuf(3 * Wo * L);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / chunks, oh0 = task % chunks * rows, oh1 = std::min(Ho, oh0 + rows);
      const int64_t in0 = i * H * W * L, out0 = i * Ho * Wo * L;
      auto run = [&](auto nhwc) {
        forward_3s2_rows<decltype(nhwc)::value>(in + in0, out_p + out0, arg_p + out0, g, L, oh0, oh1, mbuf.data(),
                                                tbuf.data());
      };
      channels_last ? run(std::true_type{}) : run(std::false_type{});
    }
  });
}

template <typename scalar_t, typename argmax_t>
void forward_kernel(const at::Tensor& input, const Geometry& g, bool channels_last, at::Tensor& out,
                    at::Tensor& argmax) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  argmax_t* arg_p = argmax.mutable_data_ptr<argmax_t>();
  const int64_t C = g.C, Ho = g.h.out_size, Wo = g.w.out_size;
  if (!channels_last) {
    // One task per (n, c) plane.
    const int s = g.w.stride;
    const int first = (g.w.pad + s - 1) / s;  // first column with window start >= 0
    // One past the last column whose window ends inside the input: ow*s - pad + span - 1 < W
    // (a floor, so a negative room means no such column; C++ division would round it up).
    const int room = static_cast<int>(g.w.size) - 1 + g.w.pad - (g.w.kernel - 1) * g.w.dilation;
    const int fit_end = room < 0 ? 0 : room / s + 1;
    const int inner_begin = std::min<int>(first, Wo);
    const int inner_end = std::max(inner_begin, std::min<int>(fit_end, Wo));
    at::parallel_for(0, g.N * C, grain(Ho * Wo), [&](int64_t begin, int64_t end) {
      forward_nchw_planes<scalar_t, argmax_t>(in, out_p, arg_p, g, inner_begin, inner_end, begin, end);
    });
  } else {
    // One task per output pixel.
    at::parallel_for(0, g.N * Ho * Wo, grain(C), [&](int64_t begin, int64_t end) {
      forward_nhwc_pixels<scalar_t, argmax_t>(in, out_p, arg_p, g, begin, end);
    });
  }
}

// Backward of the 3/2 pool as a gather without divisions (max_pool2d_3s2.h's rule): input
// row h lies in window rows h/2 - 1 (tap row 2, h even) and h/2 (tap row h % 2), and
// column w likewise. Every element is written once, its windows added in row-major order
// (PyTorch's), so the bits equal the scatter's. A non-matching window adds +0, which changes
// no sum (a sum that starts at +0 is never -0).

// The window rows that contain input row h, in order: (oh, th) pairs; returns how many.
inline int rows_of_3s2(int64_t h, int64_t Ho, int64_t* oh, int64_t* th) {
  int k = 0;
  if (h % 2 == 0 && h >= 2 && h / 2 - 1 < Ho) oh[k] = h / 2 - 1, th[k++] = 2;
  if (h / 2 < Ho) oh[k] = h / 2, th[k++] = h % 2;
  return k;
}

// Whether a window's argmax names its tap: one-byte codes name it by t = th*3 + tw, int64
// indices by the input pixel's flat index h*W + w; code_of_tap gives that value.
inline uint8_t code_of_tap(uint8_t*, int64_t th, int64_t tw, int64_t) { return th * 3 + tw; }
inline int64_t code_of_tap(int64_t*, int64_t, int64_t, int64_t flat) { return flat; }

// take ? v : +0 as a bit mask, not a select: inlined into the row loop below, GCC turned
// the select into a branch per element and left the loop scalar ("control flow in loop").
template <typename T>
inline T keep_if(bool take, T v) {
  using bits_t = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(T) == sizeof(bits_t));
  bits_t b;
  std::memcpy(&b, &v, sizeof b);
  b &= -static_cast<bits_t>(take);
  std::memcpy(&v, &b, sizeof b);
  return v;
}

// out[c] = sum over the K windows k, in order, of (a_k[c] == code_k ? go_k[c] : +0), for
// the C contiguous channels of one pixel: a branch-free pass the compiler vectorizes
// (K = 1, 2 or 4; the sum starts at +0 like the scatter's zeroed grad_input; the pointers
// come as __restrict arguments, so that no alias check is needed).
template <int K, typename scalar_t, typename argmax_t>
inline void sum_windows_3s2(const scalar_t* __restrict g0, const scalar_t* __restrict g1, const scalar_t* __restrict g2,
                            const scalar_t* __restrict g3, const argmax_t* __restrict a0, const argmax_t* __restrict a1,
                            const argmax_t* __restrict a2, const argmax_t* __restrict a3, const argmax_t* code,
                            int64_t C, scalar_t* __restrict out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const argmax_t c0 = code[0], c1 = code[1], c2 = code[2], c3 = code[3];
  const opmath_t zero = 0;
  for (int64_t c = 0; c < C; ++c) {
    opmath_t s = zero + keep_if(a0[c] == c0, static_cast<opmath_t>(g0[c]));
    if constexpr (K >= 2) s += keep_if(a1[c] == c1, static_cast<opmath_t>(g1[c]));
    if constexpr (K >= 4) {
      s += keep_if(a2[c] == c2, static_cast<opmath_t>(g2[c]));
      s += keep_if(a3[c] == c3, static_cast<opmath_t>(g3[c]));
    }
    out[c] = static_cast<scalar_t>(s);
  }
}

// One NHWC image row h: for each pixel, its (1, 2 or 4) windows in row-major order
// summed over its contiguous channels straight into grad_input.
template <typename scalar_t, typename argmax_t>
ALEXNET_CPU_CLONES void backward_3s2_row_nhwc(const scalar_t* go, const argmax_t* am, scalar_t* gi, const Geometry& g,
                                              int64_t h) {
  const int64_t C = g.C, W = g.w.size, Wo = g.w.out_size;
  int64_t ohs[2], ths[2];
  const int kh = rows_of_3s2(h, g.h.out_size, ohs, ths);
  for (int64_t w = 0; w < W; ++w) {
    int64_t ows[2], tws[2];
    const int kw = rows_of_3s2(w, Wo, ows, tws);
    const scalar_t* gw[4] = {go, go, go, go};  // (unused entries: any valid pointer)
    const argmax_t* aw[4] = {am, am, am, am};
    argmax_t code[4] = {};
    int k = 0;
    for (int r = 0; r < kh; ++r) {
      for (int q = 0; q < kw; ++q, ++k) {
        const int64_t off = (ohs[r] * Wo + ows[q]) * C;
        gw[k] = go + off, aw[k] = am + off;
        code[k] = code_of_tap(static_cast<argmax_t*>(nullptr), ths[r], tws[q], h * W + w);
      }
    }
    scalar_t* out = gi + (h * W + w) * C;
    auto sum = [&](auto windows) {
      sum_windows_3s2<decltype(windows)::value>(gw[0], gw[1], gw[2], gw[3], aw[0], aw[1], aw[2], aw[3], code, C, out);
    };
    switch (k) {
      case 1: sum(std::integral_constant<int, 1>{}); break;
      case 2: sum(std::integral_constant<int, 2>{}); break;
      case 4: sum(std::integral_constant<int, 4>{}); break;
      default: std::fill(out, out + C, scalar_t(0));  // in no window (past the last one)
    }
  }
}

// channels_last only: in NCHW the scatter below measured several times faster.
template <typename scalar_t, typename argmax_t>
void backward_3s2_nhwc(const at::Tensor& grad_output, const at::Tensor& argmax, const Geometry& g,
                       at::Tensor& grad_input) {
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const argmax_t* am = argmax.const_data_ptr<argmax_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  at::parallel_for(0, g.N * H, grain(W * C), [&](int64_t begin, int64_t end) {  // (n, h) rows
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / H, h = t % H;
      backward_3s2_row_nhwc(go + n * Ho * Wo * C, am + n * Ho * Wo * C, gi + n * H * W * C, g, h);
    }
  });
}

// Backward as a scatter, not the CUDA kernel's gather: each output element adds its
// gradient to the one input position its argmax names:
//
//   grad_input[n, c, h, w] = sum over (oh, ow) in row-major order with
//                            argmax(n, c, oh, ow) naming (h, w) of grad_output[n, c, oh, ow]
//
// the order in which PyTorch's CPU kernel adds (it zeroes grad_input, then scatters
// through its int64 indices) and in which gather_grad sums the windows of one input
// element, so all three give the same bits. One task owns whole planes (NCHW: one (n, c)
// plane; NHWC: up to kChannelLanes adjacent channels of one image), so no two tasks touch
// the same element: deterministic, no atomics. A scatter does one step per output element
// where the gather does ~2.25 window visits per input element (3x3, stride 2).
//
// One-byte codes are decoded without a division: the tap t = th*kernel_w + tw of the
// window that starts at (h0, w0) = (oh*stride_h - pad_h, ow*stride_w - pad_w) is input
// element (h0 + dh[t], w0 + dw[t]), the offsets looked up. A code past the window's last
// tap (th >= kernel_h) is not a tap (argmax_position's answer).
struct TapOffsets {
  int dh[256], dw[256];
  bool tap[256];
  explicit TapOffsets(const Geometry& g) {
    for (int a = 0; a < 256; ++a) {
      const int th = a / g.w.kernel, tw = a - th * g.w.kernel;
      tap[a] = th < g.h.kernel;
      dh[a] = tap[a] ? th * g.h.dilation : 0;
      dw[a] = tw * g.w.dilation;
    }
  }
};

// The input position (h, w) of window (oh, ow)'s argmax a, false when there is none.
inline bool scatter_position(const TapOffsets& t, uint8_t a, const Geometry& g, int oh, int ow, int* h, int* w) {
  *h = window_start(g.h, oh) + t.dh[a];
  *w = window_start(g.w, ow) + t.dw[a];
  return t.tap[a] && *h >= 0 && *h < g.h.size && *w >= 0 && *w < g.w.size;
}
inline bool scatter_position(const TapOffsets&, int64_t a, const Geometry& g, int oh, int ow, int* h, int* w) {
  return argmax_position(a, g.h, g.w, oh, ow, h, w);
}

// Whether every window lies inside the input: no padding, and the last window's last tap
// is inside. Then a one-byte code's element is plane[h0*W + w0 + offset[a]], no bounds to
// check (AlexNet's 3/2 pools).
inline bool windows_inside(const Axis& a) {
  return a.pad == 0 &&
         static_cast<int64_t>(a.out_size - 1) * a.stride + static_cast<int64_t>(a.kernel - 1) * a.dilation < a.size;
}

// One NCHW plane: acc (H x W, zeroed) += the scatter of go/am (Ho x Wo). For fp32, acc is
// grad_input's plane itself; for half/bf16 an fp32 buffer (opmath, as PyTorch's CUDA
// kernel sums) rounded afterwards.
template <typename scalar_t, typename argmax_t, typename opmath_t>
void scatter_plane(const scalar_t* go, const argmax_t* am, opmath_t* acc, const Geometry& g, const TapOffsets& taps,
                   const int* offset, bool inside) {
  const int W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size, sh = g.h.stride, sw = g.w.stride;
  // Window-local codes with every window inside the input: offset[a] is dh*W + dw, or -1
  // for a code that names no tap. Flat int64 indices take the general loop below.
  if constexpr (std::is_same_v<argmax_t, uint8_t>) {
    if (inside) {
      for (int oh = 0; oh < Ho; ++oh) {
        opmath_t* row = acc + static_cast<int64_t>(oh) * sh * W;  // window row start h0 = oh*sh
        const scalar_t* gr = go + static_cast<int64_t>(oh) * Wo;
        const uint8_t* ar = am + static_cast<int64_t>(oh) * Wo;
        for (int ow = 0; ow < Wo; ++ow) {
          const int o = offset[ar[ow]];
          if (o >= 0) row[ow * sw + o] += static_cast<opmath_t>(gr[ow]);
        }
      }
      return;
    }
  }
  for (int oh = 0; oh < Ho; ++oh) {
    for (int ow = 0; ow < Wo; ++ow) {
      const int64_t i = static_cast<int64_t>(oh) * Wo + ow;
      int h, w;
      if (scatter_position(taps, am[i], g, oh, ow, &h, &w)) {
        acc[static_cast<int64_t>(h) * W + w] += static_cast<opmath_t>(go[i]);
      }
    }
  }
}

// NCHW: one task per (n, c) plane; fp32 scatters straight into grad_input (no buffer, no
// copy: what PyTorch does).
template <typename scalar_t, typename argmax_t>
void backward_scatter_nchw(const at::Tensor& grad_output, const at::Tensor& argmax, const Geometry& g,
                           at::Tensor& grad_input) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr bool kDirect = std::is_same_v<opmath_t, scalar_t>;
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const argmax_t* am = argmax.const_data_ptr<argmax_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t HW = static_cast<int64_t>(g.h.size) * g.w.size;
  const int64_t HoWo = static_cast<int64_t>(g.h.out_size) * g.w.out_size;
  const TapOffsets taps(g);
  const bool inside = windows_inside(g.h) && windows_inside(g.w);
  int offset[256];
  for (int a = 0; a < 256; ++a) offset[a] = taps.tap[a] ? taps.dh[a] * g.w.size + taps.dw[a] : -1;

  at::parallel_for(0, g.N * g.C, grain(HW + HoWo), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> buf(kDirect ? 0 : HW);  // once per thread's range, not per plane
    for (int64_t plane = begin; plane < end; ++plane) {
      scalar_t* out = gi + plane * HW;
      opmath_t* acc;
      if constexpr (kDirect)
        acc = out;
      else
        acc = buf.data();
      std::fill(acc, acc + HW, opmath_t(0));
      scatter_plane(go + plane * HoWo, am + plane * HoWo, acc, g, taps, offset, inside);
      if constexpr (!kDirect) {
        for (int64_t i = 0; i < HW; ++i) out[i] = static_cast<scalar_t>(acc[i]);
      }
    }
  });
}

// NHWC, pools other than 3/2 (rare): one task per kChannelLanes adjacent channels of one
// image, scattered into an opmath buffer (h, w, lane) and then rounded into grad_input.
template <typename scalar_t, typename argmax_t>
void backward_scatter_nhwc(const at::Tensor& grad_output, const at::Tensor& argmax, const Geometry& g,
                           at::Tensor& grad_input) {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const argmax_t* am = argmax.const_data_ptr<argmax_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t C = g.C, H = g.h.size, W = g.w.size, Ho = g.h.out_size, Wo = g.w.out_size;
  const int64_t lanes = kChannelLanes;
  const int64_t blocks = (C + lanes - 1) / lanes;  // tasks per image
  const TapOffsets taps(g);

  at::parallel_for(0, g.N * blocks, grain(H * W * lanes), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> acc(H * W * lanes);  // (h, w, lane), lane fastest
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = task % blocks * lanes;
      const int64_t L = std::min(lanes, C - c0);
      // Lane j's element (h, w) is gi[in0 + (h*W + w)*C + j], (oh, ow) go[out0 + (oh*Wo + ow)*C + j].
      const int64_t in0 = n * H * W * C + c0, out0 = n * Ho * Wo * C + c0;
      std::fill(acc.begin(), acc.begin() + H * W * L, opmath_t(0));
      for (int oh = 0; oh < Ho; ++oh) {
        for (int ow = 0; ow < Wo; ++ow) {
          const int64_t off = out0 + (oh * Wo + ow) * C;
          for (int64_t j = 0; j < L; ++j) {
            int h, w;
            if (scatter_position(taps, am[off + j], g, oh, ow, &h, &w)) {
              acc[(h * W + w) * L + j] += static_cast<opmath_t>(go[off + j]);
            }
          }
        }
      }
      for (int64_t p = 0; p < H * W; ++p) {
        for (int64_t j = 0; j < L; ++j) gi[in0 + p * C + j] = static_cast<scalar_t>(acc[p * L + j]);
      }
    }
  });
}

// Routing, from the arguments only: AlexNet's 3/2 pool (is_3s2 along H and W) runs
// forward_3s2, any other pool forward_kernel; both layouts either way.
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_cpu(const at::Tensor& input, const Pool& pool) {
  TORCH_CHECK(input.device().is_cpu(), "max_pool2d_forward_cpu: input must be a CPU tensor");
  const Geometry g = forward_geometry(input, pool);
  const auto format = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(format);  // no copy when already in that format
  at::Tensor out, argmax;                         // (not a structured binding: C++17 lambdas cannot capture one)
  std::tie(out, argmax) = allocate_forward(x, g, pool.return_indices);
  if (out.numel() == 0) return {out, argmax};

  // Integer inputs are pooled too on CPU, like PyTorch's CPU kernel (CUDA: floating only).
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_forward_cpu", [&] {
    auto run = [&](auto argmax_zero) {
      using argmax_t = decltype(argmax_zero);
      const bool channels_last = format == at::MemoryFormat::ChannelsLast;
      if (is_3s2(g.h) && is_3s2(g.w)) {
        forward_3s2<scalar_t, argmax_t>(x, g, channels_last, out, argmax);
      } else {
        forward_kernel<scalar_t, argmax_t>(x, g, channels_last, out, argmax);
      }
    };
    argmax.scalar_type() == at::kByte ? run(uint8_t{}) : run(int64_t{});
  });
  return {out, argmax};
}

// Routing, from the arguments only: the 3/2 pool in channels_last runs backward_3s2_nhwc,
// everything else the scatter of its layout (in NCHW the scatter is the faster one for the
// 3/2 pool too).
at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& argmax, at::IntArrayRef input_size,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool channels_last) {
  TORCH_CHECK(grad_output.device().is_cpu(), "max_pool2d_backward_cpu: grad_output must be a CPU tensor");
  const Geometry g = backward_geometry(grad_output, argmax, input_size, kernel_size, stride, padding, dilation);
  // (not a structured binding: C++17 lambdas cannot capture one)
  BackwardTensors t = prepare_backward(grad_output, argmax, input_size, channels_last);
  const at::Tensor &go = t.go, &am = t.am;
  at::Tensor& grad_input = t.grad_input;
  if (grad_input.numel() == 0) return grad_input;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "max_pool2d_backward_cpu", [&] {
    auto run = [&](auto argmax_zero) {
      using argmax_t = decltype(argmax_zero);
      if (channels_last && is_3s2(g.h) && is_3s2(g.w)) {
        backward_3s2_nhwc<scalar_t, argmax_t>(go, am, g, grad_input);
      } else {
        channels_last ? backward_scatter_nhwc<scalar_t, argmax_t>(go, am, g, grad_input)
                      : backward_scatter_nchw<scalar_t, argmax_t>(go, am, g, grad_input);
      }
    };
    am.scalar_type() == at::kByte ? run(uint8_t{}) : run(int64_t{});
  });
  return grad_input;
}

}  // namespace
}  // namespace max_pool2d
}  // namespace alexnet_cuda

TORCH_LIBRARY_IMPL(alexnet_cuda, CPU, m) {
  using namespace alexnet_cuda::max_pool2d;
  alexnet_cuda::impl<Forward, Backward>(m, &pooled<&max_pool2d_forward_cpu>, &max_pool2d_backward_cpu);
}
