// AlexNet's 3x3, stride-2 max-pool (no padding, no dilation, every window inside the
// input): per-item code of the specialized CUDA kernels, shared with the CPU (the
// alexnet_cuda_test ops of max_pool2d_cuda_items_cpu.cpp run it) so that CI checks it
// without a GPU.
//
// Variants (max_pool2d_cuda.cu launches them; anything else takes the general kernels):
//   forward_3s2_item   one thread = a chunk of L <= kRows outputs of one output column
//                      (oh0 .. oh0+L-1, ow): its 2 L + 1 input rows are loaded once (27
//                      independent loads for L = 4, all in flight together) and the row
//                      maxima of the even rows, which two windows share, are computed once.
//   backward_3s2_item  one thread = kBlocks adjacent 2x2 input blocks (rows 2bh, 2bh+1,
//                      columns 2bw, 2bw+1): it reads the (2 x kBlocks+1) windows that can
//                      name those pixels and compares their argmax with compile-time codes,
//                      so a pixel needs no division to find its windows. kLanes = 2
//                      (channels_last fp16/bf16, uint8 argmax, even C: channel_lanes_3s2):
//                      two adjacent channels, each load and store one access for both.
//
// Work: every output (forward) and every input pixel (backward) is computed once, up to
// one column of odd-width planes. The Ho output rows of a column are split into
// ceil(Ho / kRows) chunks as even as can be (lengths L = rows + 1 for the first `longer`,
// rows for the rest: 27 = 6 x 4 + 3, 13 = 4 + 3 x 3), each length its own compiled
// column. The backward's kBlocks = 7 blocks (14 columns) divide AlexNet's rows of 28 and
// 14 blocks (55 and 27 pixels: one phantom column), and an odd height's last block row,
// which holds only its first row, takes a variant that computes only that row. So
// (computed / needed) is 1 forward and 28 / 27, 56 / 55 backward (the phantom column);
// channel pairs (kLanes = 2) take 4 blocks: 56 / 55 at 55 wide, but 32 / 27 at 27.
// Warps: a thread's compiled path (the chunk length, the half block row) must be the same
// for all 32 lanes, or the warp runs both. Channels-last items have the channel fastest,
// so a warp lies in one chunk / block row when 32 divides C (AlexNet's 96 and 256).
// Channels-first items have the column fastest (Wo = 27, 13: a warp spans planes), so
// they go in chunks of P = gcd(N C, 32) planes: (plane chunk, row chunk or block row,
// plane in chunk, column), and a warp's 32 items share the row chunk or block row.
// Item indices are split into coordinates by IntDivider (a multiply-high and a shift), not by
// integer division: that, the loop setup and the runtime window ranges were ~150 of the
// general kernel's 320 instructions per output.
//
// The math. Window (oh, ow) covers rows 2oh .. 2oh+2 and columns 2ow .. 2ow+2; its argmax
// code is t_h * 3 + t_w (uint8) or (2oh + t_h) * W + 2ow + t_w (int64), PyTorch's rules
// (max_pool2d.h): row-major scan, `v > best || isnan(v)` replaces.
//
// Forward, separable: a row-major scan over the 3x3 window equals scanning each row (its
// maximum m_r at column c_r) and then folding the three row results in order with the same
// rule. (A row with a NaN ends on its last NaN and any NaN replaces; otherwise the row's
// first maximum replaces the running best exactly when it is greater.) Each scan starts
// from its first element instead of -inf with index 0: the same result, since the first
// element replaces -inf unless it is -inf, and then the index is 0 either way.
//
// Backward: input row h lies in window rows oh with 2oh <= h <= 2oh + 2, so the pixels of
// block row bh (h = 2bh + a, a in {0, 1}) lie in windows oh = bh (tap row a) and, for
// a = 0, oh = bh - 1 (tap row 2); the same along W. So pixel (2bh + a, 2bw + b) sums, in
// row-major window order (PyTorch's), the windows
//   (bh-1, bw-1) code 8        if a = 0, b = 0
//   (bh-1, bw)   code 6 + b    if a = 0
//   (bh,   bw-1) code 3a + 2   if b = 0
//   (bh,   bw)   code 3a + b
// that exist (0 <= oh < Ho, 0 <= ow < Wo) and whose argmax is that code. Blocks cover
// ceil(H/2) x ceil(W/2): the last block row holds row 2Ho (tap row 2 of window Ho-1) and,
// for even H, row 2Ho+1, which no window covers (gradient 0).
#pragma once

#include "int_divider.h"
#include "max_pool2d/max_pool2d.h"

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace alexnet_cuda {
namespace max_pool2d {

// True when the specialized 3/2 kernels apply: 3x3 windows, stride 2, no padding or
// dilation, and the last window inside the input (floor mode always; ceil mode when the
// extra window would not stick out).
inline bool is_3s2(const Axis& a) {
  return a.kernel == 3 && a.stride == 2 && a.pad == 0 && a.dilation == 1 && 2 * (a.out_size - 1) + 3 <= a.size;
}

constexpr int kRows3s2 = 4;  // forward: at most this many outputs per thread, down one column

// The CUDA launchers' choice: the 3/2 kernels need 4 or at least 6 output rows, so that
// every chunk holds 3 or 4 of them (Ho / ceil(Ho / 4) >= 3 for Ho = 4 and Ho >= 6; Ho = 5
// would need a chunk of 2). Two chunk lengths are two compiled paths of their own: with a
// third, the compiler merged the shorter two's common loads and split their address
// arithmetic into 64-bit steps, and the 3-row path cost 25% more per output than the 4-row one.
inline bool cuda_3s2(const Geometry& g) {
  return is_3s2(g.h) && is_3s2(g.w) && (g.h.out_size == kRows3s2 || g.h.out_size >= kRows3s2 + 2);
}

// backward: 2x2 input blocks per thread, along W: 7 for one channel. Channel pairs
// (kLanes = 2) take 4 or 5 (7 blocks' 2 x 8 windows of two channels do not fit the
// 4-block register bound: they spill), whichever leaves fewer phantom blocks at the
// row's end: 4 for 55 pixels (28 blocks), 5 for 27 (14 blocks: 15 computed, 4 computes 16).
constexpr int kBlocks3s2 = 7;

inline int backward_blocks_3s2(int W, int lanes) {
  if (lanes == 1) return kBlocks3s2;
  const int bw = (W + 1) / 2;
  return (bw + 4) / 5 * 5 < (bw + 3) / 4 * 4 ? 5 : 4;
}

// Kernel arguments (passed by value; bench/sass.py packs them with this layout). Strides and
// offsets are int: the launcher takes these kernels only when every tensor has < 2^31
// elements. NCHW items are (plane chunk, row chunk or block row, plane in the chunk,
// column), NHWC items (image, row chunk or block row, column, channel), the last fastest
// (see the top of the file).
template <typename scalar_t, typename argmax_t>
struct Forward3s2 {
  const scalar_t* in;
  scalar_t* out;
  argmax_t* argmax;
  int items, C, H, W, Ho, Wo;
  int rows, longer;                 // row chunk k: rows + (k < longer) outputs from k rows + min(k, longer)
  IntDivider inner, middle, outer;  // NCHW: Wo, planes per chunk, row chunks; NHWC: C, Wo, row chunks
};

template <typename scalar_t, typename argmax_t>
struct Backward3s2 {
  const scalar_t* grad_out;
  const argmax_t* argmax;
  scalar_t* grad_in;
  int items, C, H, W, Ho, Wo;
  IntDivider inner, middle, outer;  // NCHW: column groups, planes per chunk, block rows;
                                    // NHWC: C / kLanes, column groups, block rows
};

// kLanes adjacent elements (channels, in channels_last) as one aligned access: the two
// fp16/bf16 gradients of a channel pair are one 4-byte load or store, their uint8 argmax
// codes one 2-byte load.
template <typename T, int kLanes>
struct alignas(sizeof(T) * kLanes) Lanes {
  T v[kLanes];
};

C10_HOST_DEVICE inline int min_int(int a, int b) { return a < b ? a : b; }
C10_HOST_DEVICE inline int max_int(int a, int b) { return a > b ? a : b; }

// One row of a window: its maximum and the column (0..2) of it, PyTorch's rule.
template <typename opmath_t>
C10_HOST_DEVICE inline void row_max3(opmath_t v0, opmath_t v1, opmath_t v2, opmath_t* m, int* col) {
  opmath_t best = v0;
  int c = 0;
  bool take = v1 > best || at::_isnan(v1);
  best = take ? v1 : best;
  c = take ? 1 : c;
  take = v2 > best || at::_isnan(v2);
  *m = take ? v2 : best;
  *col = take ? 2 : c;
}

// The 3x3 code t_h * 3 + t_w in the argmax encoding of window (oh, ow).
C10_HOST_DEVICE inline uint8_t encode_3s2(uint8_t*, int code, int oh, int ow, int W) {
  return static_cast<uint8_t>(code);
}
C10_HOST_DEVICE inline int64_t encode_3s2(int64_t*, int code, int oh, int ow, int W) {
  const int th = code >= 6 ? 2 : code >= 3 ? 1 : 0;
  return static_cast<int64_t>(2 * oh + th) * W + 2 * ow + (code - 3 * th);
}

// kRows outputs (oh0 + j, ow) of kLanes adjacent planes (channels) whose input element
// (0, 0) is `in` (element (h, w) at in[h*sh + w*sw] + lane) into out[j*out_sh] + lane,
// argmax[j*out_sh] + lane. All 2 kRows + 1 input rows exist (oh0 + kRows <= Ho).
// kZeroIndex (CUDA channels_last): a window whose maximum stays -inf without a NaN (all
// taps -inf) stores int64 index 0, as PyTorch's max_pool_forward_nhwc does (it starts the
// index at 0, not at the first tap); uint8 codes keep the first tap (max_pool2d.h).
template <int kRows, bool kZeroIndex, int kLanes, typename scalar_t, typename argmax_t>
C10_HOST_DEVICE inline void forward_3s2_column(const scalar_t* in, int sh, int sw, int W, int oh0, int ow,
                                               scalar_t* out, argmax_t* argmax, int out_sh) {
  using opmath_t = at::opmath_type<scalar_t>;
  using InLanes = Lanes<scalar_t, kLanes>;
  constexpr int kIn = 2 * kRows + 1;  // input rows
  // Every load first (independent, all in flight), through three column pointers that step
  // down the rows: one address add per row and column, no index arithmetic per tap.
  const scalar_t* p0 = in + 2 * oh0 * sh + 2 * ow * sw;
  const scalar_t* p1 = p0 + sw;
  const scalar_t* p2 = p1 + sw;
  InLanes raw[kIn][3];
#pragma unroll
  for (int r = 0; r < kIn; ++r) {
    raw[r][0] = *reinterpret_cast<const InLanes*>(p0);
    raw[r][1] = *reinterpret_cast<const InLanes*>(p1);
    raw[r][2] = *reinterpret_cast<const InLanes*>(p2);
    p0 += sh, p1 += sh, p2 += sh;
  }
  opmath_t m[kIn][kLanes];
  int c[kIn][kLanes];
#pragma unroll
  for (int r = 0; r < kIn; ++r) {
#pragma unroll
    for (int l = 0; l < kLanes; ++l) {
      row_max3(static_cast<opmath_t>(raw[r][0].v[l]), static_cast<opmath_t>(raw[r][1].v[l]),
               static_cast<opmath_t>(raw[r][2].v[l]), &m[r][l], &c[r][l]);
    }
  }
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    InLanes best_out;
    Lanes<argmax_t, kLanes> code_out;
#pragma unroll
    for (int l = 0; l < kLanes; ++l) {
      opmath_t best = m[2 * j][l];
      int code = c[2 * j][l];
#pragma unroll
      for (int t = 1; t < 3; ++t) {
        const opmath_t x = m[2 * j + t][l];
        const bool take = x > best || at::_isnan(x);
        best = take ? x : best;
        code = take ? 3 * t + c[2 * j + t][l] : code;
      }
      argmax_t a = encode_3s2(static_cast<argmax_t*>(nullptr), code, oh0 + j, ow, W);
      if constexpr (kZeroIndex && std::is_same_v<argmax_t, int64_t>) {
        if (best == lowest_value<opmath_t>()) a = 0;
      }
      best_out.v[l] = static_cast<scalar_t>(best);
      code_out.v[l] = a;
    }
    *reinterpret_cast<InLanes*>(out) = best_out;
    *reinterpret_cast<Lanes<argmax_t, kLanes>*>(argmax) = code_out;
    out += out_sh, argmax += out_sh;
  }
}

// Forward item i of a Forward3s2 launch.
template <bool kChannelsLast, int kLanes, typename scalar_t, typename argmax_t>
C10_HOST_DEVICE inline void forward_3s2_item(const Forward3s2<scalar_t, argmax_t>& a, int i) {
  static_assert(kLanes == 1 || kChannelsLast, "channel lanes are adjacent only in channels_last");
  int ow, chunk, c = 0, n;  // NCHW: n = the (n, c) plane
  if constexpr (kChannelsLast) {
    int t = a.inner.divmod(i, &c);  // c: the channel pair when kLanes = 2
    c *= kLanes;
    t = a.middle.divmod(t, &ow);
    n = a.outer.divmod(t, &chunk);
  } else {
    int plane, t = a.inner.divmod(i, &ow);
    t = a.middle.divmod(t, &plane);
    n = a.outer.divmod(t, &chunk) * static_cast<int>(a.middle.d) + plane;
  }
  const int oh0 = chunk * a.rows + min_int(chunk, a.longer);
  auto column = [&](auto rows) {
    constexpr int kRows = decltype(rows)::value;
    if constexpr (kChannelsLast) {
      const scalar_t* in = a.in + n * a.H * a.W * a.C + c;
      const int o = ((n * a.Ho + oh0) * a.Wo + ow) * a.C + c;
      forward_3s2_column<kRows, true, kLanes>(in, a.W * a.C, a.C, a.W, oh0, ow, a.out + o, a.argmax + o, a.Wo * a.C);
    } else {
      const scalar_t* in = a.in + n * a.H * a.W;
      const int o = (n * a.Ho + oh0) * a.Wo + ow;
      forward_3s2_column<kRows, false, 1>(in, a.W, 1, a.W, oh0, ow, a.out + o, a.argmax + o, a.Wo);
    }
  };
  const int rows = a.rows + (chunk < a.longer);  // 3 or 4 (cuda_3s2)
  if (rows == 4)
    column(std::integral_constant<int, 4>{});
  else
    column(std::integral_constant<int, 3>{});
}

// The code that window (bh - 1 + dh, bw - 1 + dw) stores when its maximum is pixel
// (2bh + a, 2bw + b) (see the top of the file), in the argmax encoding.
// (uint8 codes are compared as int.)
C10_HOST_DEVICE inline int pixel_code(int*, int dh, int dw, int a, int b, int flat) {
  return (dh ? a : a + 2) * 3 + (dw ? b : b + 2);
}
C10_HOST_DEVICE inline int64_t pixel_code(int64_t*, int, int, int, int, int flat) { return flat; }

// a | b | c. On the GPU one LOP3 for int: written as C++, the compiler turns each OR with
// a 0 / -1 mask back into a select on the mask's predicate, two instructions a window.
C10_HOST_DEVICE inline int or3(int a, int b, int c) {
#if defined(__CUDA_ARCH__)
  int d;
  asm("lop3.b32 %0, %1, %2, %3, 0xFE;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#else
  return a | b | c;
#endif
}
C10_HOST_DEVICE inline int64_t or3(int64_t a, int64_t b, int64_t c) { return a | b | c; }

// Stores v at p when ok. On the GPU one predicated store: with a plain `if`, the compiler
// moves each pixel's sum into a branch region of its own (3 more instructions a pixel).
template <typename T>
C10_HOST_DEVICE inline void store_if(bool ok, T* p, T v) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 2) {  // (a 32-bit register: st.b16 stores its low half)
    unsigned short half;
    memcpy(&half, &v, 2);
    const unsigned int bits = half;
    asm volatile("{ .reg .pred q; setp.ne.b32 q, %2, 0; @q st.global.b16 [%0], %1; }" ::"l"(p), "r"(bits), "r"(int(ok))
                 : "memory");
  } else if constexpr (sizeof(T) == 4) {
    unsigned int bits;
    memcpy(&bits, &v, 4);
    asm volatile("{ .reg .pred q; setp.ne.b32 q, %2, 0; @q st.global.b32 [%0], %1; }" ::"l"(p), "r"(bits), "r"(int(ok))
                 : "memory");
  } else {
    static_assert(sizeof(T) == 8, "store_if: 2, 4 or 8 bytes");
    unsigned long long bits;
    memcpy(&bits, &v, 8);
    asm volatile("{ .reg .pred q; setp.ne.b32 q, %2, 0; @q st.global.b64 [%0], %1; }" ::"l"(p), "l"(bits), "r"(int(ok))
                 : "memory");
  }
#else
  if (ok) *p = v;
#endif
}

// kBlocks 2x2 blocks (bh, bw0 + k) of kLanes adjacent planes (channels): grad_out/argmax
// element (oh, ow) at [out0 + oh*out_sh + ow*out_sw] (+ lane), grad_in element (h, w) at
// [in0 + h*in_sh + w*in_sw] (+ lane). (int offsets from the tensors' starts: one 32-bit
// add and one wide multiply-add an address.) kHalf: the block row holds only its first row
// (the last block row of an odd height): the second is neither computed nor stored.
template <int kLanes, int kBlocks, bool kHalf, typename scalar_t, typename argmax_t>
C10_HOST_DEVICE inline void backward_3s2_blocks(const scalar_t* grad_out, const argmax_t* argmax, int out0, int out_sh,
                                                int out_sw, int Ho, int Wo, scalar_t* grad_in, int in0, int in_sh,
                                                int in_sw, int H, int W, int bh, int bw0) {
  using opmath_t = at::opmath_type<scalar_t>;
  using code_t = std::conditional_t<std::is_same_v<argmax_t, int64_t>, int64_t, int>;
  using GradLanes = Lanes<scalar_t, kLanes>;
  constexpr int kCols = kBlocks + 1;  // window columns bw0 - 1 .. bw0 + kBlocks - 1
  // The 2 x kCols windows (oh = bh - 1 + dh, ow = bw0 - 1 + dw) are loaded unconditionally,
  // from clamped (always valid) positions, all in flight together. A window outside the
  // output gets code -1 (its mask ORed in), which no pixel's code equals.
  code_t row_mask[2], col_mask[kCols];
  int row_off[2], col_off[kCols];
#pragma unroll
  for (int dh = 0; dh < 2; ++dh) {
    const int oh = bh - 1 + dh;
    row_mask[dh] = oh >= 0 && oh < Ho ? 0 : -1;
    row_off[dh] = out0 + min_int(max_int(oh, 0), Ho - 1) * out_sh;
  }
#pragma unroll
  for (int dw = 0; dw < kCols; ++dw) {
    const int ow = bw0 - 1 + dw;
    col_mask[dw] = ow >= 0 && ow < Wo ? 0 : -1;
    col_off[dw] = min_int(max_int(ow, 0), Wo - 1) * out_sw;
  }
  opmath_t g[2][kCols][kLanes];
  code_t code[2][kCols][kLanes];
#pragma unroll
  for (int dh = 0; dh < 2; ++dh) {
#pragma unroll
    for (int dw = 0; dw < kCols; ++dw) {
      const int off = row_off[dh] + col_off[dw];
      const GradLanes gl = *reinterpret_cast<const GradLanes*>(grad_out + off);
      const Lanes<argmax_t, kLanes> al = *reinterpret_cast<const Lanes<argmax_t, kLanes>*>(argmax + off);
#pragma unroll
      for (int l = 0; l < kLanes; ++l) {
        g[dh][dw][l] = static_cast<opmath_t>(gl.v[l]);
        code[dh][dw][l] = or3(static_cast<code_t>(al.v[l]), row_mask[dh], col_mask[dw]);
      }
    }
  }
  // Every pixel's sum, its windows in row-major order; stored only inside the input: pixel
  // (a, column j = 2k + b of this thread) when j < limit. Every row computed exists (an odd
  // height's last block row takes kHalf), so both rows share the limit and its tests.
  const int limit = W - 2 * bw0;
#pragma unroll
  for (int a = 0; a < (kHalf ? 1 : 2); ++a) {
    const int h = 2 * bh + a;
    scalar_t* p = grad_in + (in0 + h * in_sh + 2 * bw0 * in_sw);  // steps along the row
#pragma unroll
    for (int k = 0; k < kBlocks; ++k) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const int j = 2 * k + b;
        const int flat = h * W + 2 * bw0 + j;
        GradLanes sums;
#pragma unroll
        for (int l = 0; l < kLanes; ++l) {
          opmath_t sum = opmath_t(0);
#pragma unroll
          for (int dh = 0; dh < 2; ++dh) {
            if (dh == 0 && a == 1) continue;  // odd rows: only window row bh
#pragma unroll
            for (int dw = 0; dw < 2; ++dw) {
              if (dw == 0 && b == 1) continue;
              if (code[dh][k + dw][l] == pixel_code(static_cast<code_t*>(nullptr), dh, dw, a, b, flat)) {
                sum += g[dh][k + dw][l];
              }
            }
          }
          sums.v[l] = static_cast<scalar_t>(sum);
        }
        store_if(j < limit, reinterpret_cast<GradLanes*>(p), sums);
        p += in_sw;
      }
    }
  }
}

// Backward item i of a Backward3s2 launch.
template <bool kChannelsLast, int kLanes, int kBlocks, typename scalar_t, typename argmax_t>
C10_HOST_DEVICE inline void backward_3s2_item(const Backward3s2<scalar_t, argmax_t>& a, int i) {
  static_assert(kLanes == 1 || kChannelsLast, "channel lanes are adjacent only in channels_last");
  int group, bh, c = 0, n;
  if constexpr (kChannelsLast) {
    int t = a.inner.divmod(i, &c);  // c: the channel pair when kLanes = 2
    c *= kLanes;
    t = a.middle.divmod(t, &group);
    n = a.outer.divmod(t, &bh);
  } else {
    int plane, t = a.inner.divmod(i, &group);
    t = a.middle.divmod(t, &plane);
    n = a.outer.divmod(t, &bh) * static_cast<int>(a.middle.d) + plane;  // the (n, c) plane
  }
  const int bw0 = group * kBlocks;
  auto blocks = [&](auto half) {
    constexpr bool kHalf = decltype(half)::value;
    if constexpr (kChannelsLast) {
      backward_3s2_blocks<kLanes, kBlocks, kHalf>(a.grad_out, a.argmax, n * a.Ho * a.Wo * a.C + c, a.Wo * a.C, a.C,
                                                  a.Ho, a.Wo, a.grad_in, n * a.H * a.W * a.C + c, a.W * a.C, a.C, a.H,
                                                  a.W, bh, bw0);
    } else {
      backward_3s2_blocks<1, kBlocks, kHalf>(a.grad_out, a.argmax, n * a.Ho * a.Wo, a.Wo, 1, a.Ho, a.Wo, a.grad_in,
                                             n * a.H * a.W, a.W, 1, a.H, a.W, bh, bw0);
    }
  };
  if (2 * bh + 1 < a.H)
    blocks(std::false_type{});
  else
    blocks(std::true_type{});  // an odd height's last block row
}

// Host: the launch arguments and item counts.
inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Channels-first items take planes in chunks of this many (a warp's 32 items share a row
// chunk or block row): gcd(planes, 32).
inline int plane_chunk_3s2(int64_t planes) {
  int p = 32;
  while (planes % p != 0) p /= 2;
  return p;
}

template <typename scalar_t, typename argmax_t>
Forward3s2<scalar_t, argmax_t> make_forward_3s2(const scalar_t* in, scalar_t* out, argmax_t* argmax, const Geometry& g,
                                                bool channels_last, int lanes) {
  const int C = static_cast<int>(g.C), Ho = g.h.out_size, Wo = g.w.out_size;
  const int chunks = ceil_div(Ho, kRows3s2);
  const int64_t items = g.N * (g.C / lanes) * chunks * Wo;
  Forward3s2<scalar_t, argmax_t> a{
      in, out, argmax, static_cast<int>(items), C, g.h.size, g.w.size, Ho, Wo, Ho / chunks, Ho % chunks, {}, {}, {}};
  if (channels_last) {
    a.inner = IntDivider(C / lanes), a.middle = IntDivider(Wo), a.outer = IntDivider(chunks);
  } else {
    a.inner = IntDivider(Wo), a.middle = IntDivider(plane_chunk_3s2(g.N * g.C)), a.outer = IntDivider(chunks);
  }
  return a;
}

// The channel lanes of both 3/2 kernels: 2 where a channel pair is one aligned access
// (channels_last fp16/bf16 with uint8 argmax and even C: 4-byte values, 2-byte codes), else
// 1. `a` and `b` are the two value tensors (forward: in, out; backward: grad_out, grad_in).
template <typename scalar_t, typename argmax_t>
int channel_lanes_3s2(const scalar_t* a, const argmax_t* argmax, const scalar_t* b, const Geometry& g,
                      bool channels_last) {
  const auto aligned = [](const void* p, size_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; };
  const bool pairs = channels_last && sizeof(scalar_t) == 2 && std::is_same_v<argmax_t, uint8_t> && g.C % 2 == 0 &&
                     aligned(a, 4) && aligned(b, 4) && aligned(argmax, 2);
  return pairs ? 2 : 1;
}

template <typename scalar_t, typename argmax_t>
Backward3s2<scalar_t, argmax_t> make_backward_3s2(const scalar_t* grad_out, const argmax_t* argmax, scalar_t* grad_in,
                                                  const Geometry& g, bool channels_last, int lanes) {
  const int C = static_cast<int>(g.C);
  const int block_rows = ceil_div(g.h.size, 2);
  const int groups = ceil_div(ceil_div(g.w.size, 2), backward_blocks_3s2(g.w.size, lanes));
  const int64_t items = g.N * (g.C / lanes) * block_rows * groups;
  Backward3s2<scalar_t, argmax_t> a{
      grad_out, argmax, grad_in, static_cast<int>(items), C, g.h.size, g.w.size, g.h.out_size, g.w.out_size,
      {},       {},     {}};
  if (channels_last) {
    a.inner = IntDivider(C / lanes), a.middle = IntDivider(groups), a.outer = IntDivider(block_rows);
  } else {
    a.inner = IntDivider(groups), a.middle = IntDivider(plane_chunk_3s2(g.N * g.C)), a.outer = IntDivider(block_rows);
  }
  return a;
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda
