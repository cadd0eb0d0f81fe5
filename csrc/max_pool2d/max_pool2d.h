// Overlapping max-pooling: the math shared by the CPU and the CUDA kernels.
//
// Everything here is C10_HOST_DEVICE, so the CPU kernels (max_pool2d_cpu.cpp) run
// exactly the arithmetic the CUDA kernels (max_pool2d_cuda.cu) run, and the CPU tests
// exercise it without a GPU. The kernels themselves only map threads (or loop
// iterations) to elements and call the two per-element functions below:
// `pool_window` (forward, one output element, or a few side by side on the CPU) and
// `gather_grad` (backward, one input element).
//
// The math, per spatial axis (H and W are handled independently, same formulas):
//
//   input extent  I, kernel k, stride s, padding p, dilation d
//   window o starts at      start(o) = o*s - p         (negative: that part is padding)
//   its taps are            start(o) + t*d,  t = 0 .. k-1
//   output extent           O = floor((I + 2p - d(k-1) - 1 [+ s-1 in ceil mode]) / s) + 1
//                           and, in ceil mode, O -= 1 if (O-1)*s >= I + p
//                           (the last window must start inside the input or the left
//                           padding). This is PyTorch's pooling_output_shape.
//
// Forward, output (o_h, o_w): the maximum over the taps that land inside the input,
// 0 <= start + t*d < I, i.e. t in [tap_begin, tap_end) with
//   tap_begin = start >= 0 ? 0 : ceil(-start / d)
//   tap_end   = min(k, ceil((I - start) / d))
// Padding is never a candidate (the window is clamped, not padded with -inf values).
// Scan order is row-major (t_h outer, t_w inner) starting from -inf (the lowest value
// for integer types), replacing the best when `v > best || isnan(v)`. So:
//   * ties: the FIRST maximum in row-major order wins (`>` is strict);
//   * NaN: a NaN always replaces, so the LAST NaN of the window wins; after it only
//     another NaN can replace it, so NaN propagates;
//   * a window of all -inf (or, in corner cases with dilation, with no tap inside
//     the input) reports its first in-bounds tap (t_h, t_w) = (tap_begin_h, tap_begin_w).
// This is exactly PyTorch's CPU kernels (both layouts, MaxPoolKernel.cpp) and its CUDA NCHW
// kernel (DilatedMaxPool2d.cu). Its CUDA channels_last kernel (max_pool_forward_nhwc) starts
// the index at 0 instead, so there a window that nothing replaces (all -inf, or no tap
// inside) returns flat index 0. Our CUDA channels_last kernels do the same for the int64
// argmax (kZeroIndex), which is what return_indices returns and what the backward then
// routes exactly as PyTorch's CUDA gather does (to pixel (0, 0) when the window's span
// covers it, else nowhere). The uint8 argmax (return_indices=False) keeps the first tap: a
// window-local code cannot name pixel (0, 0) outside the window, nor "nowhere" for a window
// inside the input. So, on CUDA channels_last only, the gradient of an all -inf window in
// the compact mode goes to its first tap where PyTorch's goes to (0, 0) or nowhere.
// (Documented divergence; tests/test_max_pool2d.py::test_all_minus_inf_windows pins both.)
//
// The argmax is stored in one of two encodings:
//   * uint8_t, window-local: t_h * k_w + t_w (fits when k_h * k_w <= 256); saved for
//     backward when the caller did not ask for indices: 1 byte per output element.
//   * int64_t, flat: (start_h + t_h*d_h) * W + (start_w + t_w*d_w), the index within
//     the (n, c) plane that F.max_pool2d(..., return_indices=True) returns.
//
// Backward, input (h, w): gather over the windows that contain h (and w) in their span,
//   o in [window_begin, window_end) with
//   window_begin = h + p < d(k-1)+1 ? 0 : floor((h + p - d(k-1) - 1) / s) + 1
//                  (first o with start(o) + d(k-1) >= h)
//   window_end   = min(floor((h + p) / s) + 1, O)    (one past the last o with start(o) <= h)
// and add grad_output[o_h, o_w] whenever that window's argmax is (h, w). Each thread
// owns one input element and writes it once: no atomics, deterministic. The sum runs
// o_h outer, o_w inner (the order PyTorch's CUDA gather and CPU scatter both use) in
// opmath (fp32 for fp16/bf16), rounded once at the end.
#pragma once

#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/SymInt.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <array>
#include <vector>

#include "descriptor.h"

namespace alexnet_cuda {
namespace max_pool2d {

// Largest kernel area whose window-local argmax fits in a uint8_t.
constexpr int64_t kMaxLocalArgmaxWindow = 256;

// One spatial axis (H or W) of the pooling geometry. Plain ints: an image axis is far
// below 2^31 (checked on the host); products that can exceed it use index_t / int64_t.
struct Axis {
  int size;      // input extent I
  int out_size;  // output extent O
  int kernel, stride, pad, dilation;
};

// PyTorch's pooling_output_shape (arguments already validated): the one copy of it. A
// SymInt, so that the public op's checks (max_pool2d.cpp) and the Meta kernel run it on
// the symbolic sizes torch.compile traces with; the kernels take .expect_int().
inline c10::SymInt output_size(const c10::SymInt& size, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                               bool ceil_mode) {
  const c10::SymInt numer = size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // floor division (numer can be negative when the kernel is larger than the input)
  c10::SymInt out = (numer >= 0 ? numer / stride : -((-numer + (stride - 1)) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= size + pad) {
    out = out - 1;  // the last window would start past input + left padding: drop it
  }
  return out;
}

C10_HOST_DEVICE inline int window_start(const Axis& a, int o) { return o * a.stride - a.pad; }

// First tap t with start + t*d >= 0.
C10_HOST_DEVICE inline int tap_begin(const Axis& a, int start) {
  return start >= 0 ? 0 : (-start + a.dilation - 1) / a.dilation;
}

// One past the last tap t with start + t*d < I (and t < k).
C10_HOST_DEVICE inline int tap_end(const Axis& a, int start) {
  if (start + (a.kernel - 1) * a.dilation < a.size) return a.kernel;  // common: no division
  const int room = a.size - start;
  return room <= 0 ? 0 : (room + a.dilation - 1) / a.dilation;
}

// First output window whose span [start, start + d(k-1)] reaches input position i.
C10_HOST_DEVICE inline int window_begin(const Axis& a, int i) {
  const int span = (a.kernel - 1) * a.dilation + 1;
  return i + a.pad < span ? 0 : (i + a.pad - span) / a.stride + 1;
}

// One past the last output window that starts at or before input position i.
C10_HOST_DEVICE inline int window_end(const Axis& a, int i) {
  const int end = (i + a.pad) / a.stride + 1;
  return end < a.out_size ? end : a.out_size;
}

// The value every window starts from: -inf, or the lowest integer.
template <typename T>
C10_HOST_DEVICE inline T lowest_value() {
  if constexpr (std::numeric_limits<T>::has_infinity) {
    return -std::numeric_limits<T>::infinity();
  } else {
    return std::numeric_limits<T>::lowest();
  }
}

// argmax encodings (see the top of the file).
C10_HOST_DEVICE inline void encode_argmax(uint8_t* out, const Axis& ah, const Axis& aw, int h0, int w0, int th,
                                          int tw) {
  *out = static_cast<uint8_t>(th * aw.kernel + tw);
}
C10_HOST_DEVICE inline void encode_argmax(int64_t* out, const Axis& ah, const Axis& aw, int h0, int w0, int th,
                                          int tw) {
  *out = static_cast<int64_t>(h0 + th * ah.dilation) * aw.size + (w0 + tw * aw.dilation);
}

// The argmax value that window (oh, ow) stores when its maximum is the input position
// (h, w), which lies in the window's span (start <= h <= start + d(k-1), same for w).
// Returns false when no value can mean (h, w): with dilation, a position between two
// taps is never a tap of this window. Comparing stored values with this one code is
// what the backward does per element, instead of decoding every stored argmax.
C10_HOST_DEVICE inline bool argmax_code(uint8_t* code, const Axis& ah, const Axis& aw, int oh, int ow, int h, int w) {
  int th = h - window_start(ah, oh), tw = w - window_start(aw, ow);  // offsets in the window
  if (ah.dilation != 1) {  // (integer division is slow on both CPU and GPU: skip it at d = 1)
    if (th % ah.dilation != 0) return false;
    th /= ah.dilation;
  }
  if (aw.dilation != 1) {
    if (tw % aw.dilation != 0) return false;
    tw /= aw.dilation;
  }
  *code = static_cast<uint8_t>(th * aw.kernel + tw);
  return true;
}
C10_HOST_DEVICE inline bool argmax_code(int64_t* code, const Axis& ah, const Axis& aw, int oh, int ow, int h, int w) {
  *code = static_cast<int64_t>(h) * aw.size + w;  // flat: the same for every window
  return true;
}

// The inverse of argmax_code: the input position (h, w) that window (oh, ow)'s stored
// argmax `a` names. False exactly when no input position has argmax_code == a: an
// out-of-range value, or a tap outside the input (only a window with no tap inside the
// input stores one). The CPU backward scatters with it (max_pool2d_cpu.cpp).
C10_HOST_DEVICE inline bool argmax_position(uint8_t a, const Axis& ah, const Axis& aw, int oh, int ow, int* h, int* w) {
  const int th = a / aw.kernel, tw = a - th * aw.kernel;
  if (th >= ah.kernel) return false;
  *h = window_start(ah, oh) + th * ah.dilation;
  *w = window_start(aw, ow) + tw * aw.dilation;
  return *h >= 0 && *h < ah.size && *w >= 0 && *w < aw.size;
}
C10_HOST_DEVICE inline bool argmax_position(int64_t a, const Axis& ah, const Axis& aw, int oh, int ow, int* h, int* w) {
  if (a < 0 || a >= static_cast<int64_t>(ah.size) * aw.size) return false;
  *h = static_cast<int>(a / aw.size);
  *w = static_cast<int>(a - static_cast<int64_t>(*h) * aw.size);
  // gather_grad visits only the windows whose span covers (h, w): the same condition.
  const int h0 = window_start(ah, oh), w0 = window_start(aw, ow);
  return *h >= h0 && *h <= h0 + (ah.kernel - 1) * ah.dilation && *w >= w0 && *w <= w0 + (aw.kernel - 1) * aw.dilation;
}

// Forward for kLanes output elements at once (kLanes = 1: output (oh, ow) of one plane).
//   in:   the first lane's plane, element (0, 0); element (h, w) of lane j is
//         in[h*in_sh + w*in_sw + j*lane_step]
//   out, argmax: where lane j's value and argmax go: out[j], argmax[j]
//   lane_w: how many input columns lane j's window starts right of lane 0's, times j
// Two kinds of lanes, both with the same tap ranges in every lane:
//   * adjacent channels of an NHWC tensor: lane_step 1, lane_w 0 (the same window);
//   * adjacent output columns of one NCHW row whose windows lie inside the input along
//     W: lane_step = lane_w = stride_w.
// The CUDA kernels use one lane per thread; the CPU loops use 16, so that the innermost
// loop runs over 16 independent lanes (vectorized when they are contiguous channels).
// Every lane scans its window exactly as a single element would.
// kZeroIndex: CUDA channels_last's rule for a window with no maximum (see the top of the file).
template <int kLanes, typename scalar_t, typename argmax_t, typename index_t, bool kZeroIndex = false>
C10_HOST_DEVICE inline void pool_window(const scalar_t* in, index_t in_sh, index_t in_sw, const Axis& ah,
                                        const Axis& aw, int oh, int ow, scalar_t* out, argmax_t* argmax,
                                        index_t lane_step = 1, int lane_w = 0) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int h0 = window_start(ah, oh), w0 = window_start(aw, ow);
  const int th_begin = tap_begin(ah, h0), th_end = tap_end(ah, h0);
  const int tw_begin = tap_begin(aw, w0), tw_end = tap_end(aw, w0);

  opmath_t best[kLanes];
  int best_th[kLanes], best_tw[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    best[j] = lowest_value<opmath_t>();
    best_th[j] = th_begin;
    best_tw[j] = tw_begin;
  }
  for (int th = th_begin; th < th_end; ++th) {
    const scalar_t* row = in + static_cast<index_t>(h0 + th * ah.dilation) * in_sh;
    for (int tw = tw_begin; tw < tw_end; ++tw) {
      const scalar_t* tap = row + static_cast<index_t>(w0 + tw * aw.dilation) * in_sw;
      for (int j = 0; j < kLanes; ++j) {
        const opmath_t v = static_cast<opmath_t>(tap[j * lane_step]);
        const bool take = v > best[j] || at::_isnan(v);  // strict >: first max wins; NaN always wins
        best[j] = take ? v : best[j];
        best_th[j] = take ? th : best_th[j];
        best_tw[j] = take ? tw : best_tw[j];
      }
    }
  }
  for (int j = 0; j < kLanes; ++j) {
    out[j] = static_cast<scalar_t>(best[j]);
    encode_argmax(argmax + j, ah, aw, h0, w0 + j * lane_w, best_th[j], best_tw[j]);
    if constexpr (kZeroIndex && std::is_same_v<argmax_t, int64_t>) {
      if (best[j] == lowest_value<opmath_t>()) argmax[j] = 0;  // nothing replaced the start
    }
  }
}

// Backward for one input element (h, w) of one (n, c) plane: the sum of the gradients
// of the output windows whose argmax is (h, w).
//   grad_out, argmax: the plane's output element (0, 0); both have the same layout,
//   element (oh, ow) at [oh*out_sh + ow*out_sw]
template <typename scalar_t, typename argmax_t, typename index_t>
C10_HOST_DEVICE inline at::opmath_type<scalar_t> gather_grad(const scalar_t* grad_out, const argmax_t* argmax,
                                                             index_t out_sh, index_t out_sw, const Axis& ah,
                                                             const Axis& aw, int h, int w) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int oh_begin = window_begin(ah, h), oh_end = window_end(ah, h);
  const int ow_begin = window_begin(aw, w), ow_end = window_end(aw, w);
  opmath_t sum = opmath_t(0);
  for (int oh = oh_begin; oh < oh_end; ++oh) {
    for (int ow = ow_begin; ow < ow_end; ++ow) {
      argmax_t code;
      if (!argmax_code(&code, ah, aw, oh, ow, h, w)) continue;
      const index_t off = static_cast<index_t>(oh) * out_sh + static_cast<index_t>(ow) * out_sw;
      if (argmax[off] == code) sum += static_cast<opmath_t>(grad_out[off]);
    }
  }
  return sum;
}

// Grain for the CPU kernels' at::parallel_for: hand each thread at least ~32K elements of
// work (ATen's usual GRAIN_SIZE), so small inputs do not pay for threading.
inline int64_t grain(int64_t elements_per_item) {
  constexpr int64_t kGrainElements = 32768;
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda

// ---------------------------------------------------------------------------------
// The op's descriptors (descriptor.h), and its pooling arguments named once.
namespace alexnet_cuda {
namespace max_pool2d {

struct MaxPool2d {
  static constexpr const char* kName = "max_pool2d";
  static constexpr const char* kArguments =
      "(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode, bool return_indices) -> (Tensor, Tensor)";
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                       at::IntArrayRef, at::IntArrayRef, bool, bool);
};

// (out, argmax) of a 4-D input, in its suggested memory format. argmax is int64 flat
// indices h * W + w when indices are returned or the window has more than 256 taps, else
// uint8 window-local t_h * kernel_w + t_w (the top of this file).
struct Forward {
  static constexpr const char* kName = "max_pool2d_forward";
  static constexpr const char* kArguments =
      "(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode, bool return_indices) -> (Tensor out, Tensor argmax)";
  using Signature = MaxPool2d::Signature;
};

// grad_input of shape input_size, routed through either argmax encoding, in channels_last
// or contiguous format as asked (the forward input's).
struct Backward {
  static constexpr const char* kName = "max_pool2d_backward";
  static constexpr const char* kArguments =
      "(Tensor grad_output, Tensor argmax, SymInt[4] input_size, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, bool channels_last) -> Tensor";
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, at::IntArrayRef,
                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool);
  using Kernel = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                            at::IntArrayRef, at::IntArrayRef, bool);
};

// The pooling arguments of max_pool2d and max_pool2d_forward (all but the input). The
// public op, and the forward's Meta, CPU, CUDA and autograd kernels, are functions
// f(input, pool), registered as pooled<&f>: only this file names the arguments.
struct Pool {
  at::IntArrayRef kernel_size, stride, padding, dilation;
  bool ceil_mode, return_indices;
};

// f(input, pool) as a kernel of MaxPool2d's and Forward's signature.
template <auto f>
std::tuple<at::Tensor, at::Tensor> pooled(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                                          bool return_indices) {
  return f(input, Pool{kernel_size, stride, padding, dilation, ceil_mode, return_indices});
}

// Op(input, pool) through the dispatcher (Op: MaxPool2d or Forward).
template <typename Op>
std::tuple<at::Tensor, at::Tensor> call_pooled(const at::Tensor& input, const Pool& pool) {
  return call<Op>(input, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                  pool.return_indices);
}

// The pooled extents (Ho, Wo) of an H x W input: the public op's check, the Meta kernel
// and the kernels' geometry take them from here.
inline std::array<c10::SymInt, 2> output_hw(const c10::SymInt& H, const c10::SymInt& W, const Pool& pool) {
  const auto k = pool.kernel_size, s = pool.stride, p = pool.padding, d = pool.dilation;
  return {output_size(H, k[0], p[0], s[0], d[0], pool.ceil_mode),
          output_size(W, k[1], p[1], s[1], d[1], pool.ceil_mode)};
}

inline void check_pair(c10::IntArrayRef v, const char* name) {
  TORCH_CHECK(v.size() == 2, "alexnet_cuda::max_pool2d: ", name, " must have 2 elements, got ", v.size());
}

inline void check_pairs(const Pool& pool) {
  check_pair(pool.kernel_size, "kernel_size");
  check_pair(pool.stride, "stride");
  check_pair(pool.padding, "padding");
  check_pair(pool.dilation, "dilation");
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda

// ---------------------------------------------------------------------------------
// Host side, shared by max_pool2d_cpu.cpp and max_pool2d_cuda.cu: defensive argument
// checks (the user-facing checks, with PyTorch's conditions, are in the public op,
// max_pool2d.cpp) and output allocation.
namespace alexnet_cuda {
namespace max_pool2d {

struct Geometry {
  int64_t N, C;
  Axis h, w;
};

// Axis for one spatial dim. `out_size` < 0 means "compute it from ceil_mode".
inline Axis make_axis(const char* dim, int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                      bool ceil_mode, int64_t out_size = -1) {
  TORCH_CHECK(kernel > 0 && stride > 0 && dilation > 0,
              "alexnet_cuda::max_pool2d: kernel_size, stride and dilation must be positive, got ", kernel, ", ", stride,
              ", ", dilation, " along ", dim);
  TORCH_CHECK(pad >= 0 && pad <= kernel / 2, "alexnet_cuda::max_pool2d: padding must be in [0, kernel_size / 2], got ",
              pad, " with kernel_size ", kernel, " along ", dim);
  // Keep every per-axis quantity (positions, spans, window starts) inside an int.
  constexpr int64_t kLimit = int64_t(1) << 30;
  TORCH_CHECK(size < kLimit && stride < kLimit && dilation * (kernel - 1) + 1 < kLimit,
              "alexnet_cuda::max_pool2d: sizes along ", dim, " must be below 2^30");
  if (out_size < 0) out_size = output_size(size, kernel, pad, stride, dilation, ceil_mode).expect_int();
  TORCH_CHECK(out_size >= 1, "alexnet_cuda::max_pool2d: output ", dim, " would be ", out_size, " (input ", size,
              ", kernel ", kernel, ", padding ", pad, ", dilation ", dilation, "): output size is too small");
  return Axis{static_cast<int>(size),   static_cast<int>(out_size), static_cast<int>(kernel),
              static_cast<int>(stride), static_cast<int>(pad),      static_cast<int>(dilation)};
}

inline Geometry forward_geometry(const at::Tensor& input, const Pool& pool) {
  TORCH_CHECK(input.dim() == 4, "alexnet_cuda::max_pool2d_forward: expected a 4-D (N, C, H, W) ", "input, got ",
              input.dim(), "-D (the public op, max_pool2d, takes 3-D inputs)");
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0,
              "alexnet_cuda::max_pool2d_forward: only the batch dimension may be empty, got ", input.sizes());
  check_pairs(pool);
  const auto k = pool.kernel_size, s = pool.stride, p = pool.padding, d = pool.dilation;
  return Geometry{input.size(0), input.size(1), make_axis("H", input.size(2), k[0], s[0], p[0], d[0], pool.ceil_mode),
                  make_axis("W", input.size(3), k[1], s[1], p[1], d[1], pool.ceil_mode)};
}

// Window-local uint8 argmax when indices are not returned and the window fits in a
// byte; flat int64 indices (F.max_pool2d's return_indices) otherwise.
inline at::ScalarType argmax_dtype(int64_t kernel_h, int64_t kernel_w, bool return_indices) {
  const bool local = !return_indices && kernel_h * kernel_w <= kMaxLocalArgmaxWindow;
  return local ? at::kByte : at::kLong;
}
inline at::ScalarType argmax_dtype(const Geometry& g, bool return_indices) {
  return argmax_dtype(g.h.kernel, g.w.kernel, return_indices);
}

// Output and argmax, in the input's memory format (what PyTorch does).
inline std::tuple<at::Tensor, at::Tensor> allocate_forward(const at::Tensor& input, const Geometry& g,
                                                           bool return_indices) {
  const auto format = input.suggest_memory_format();
  const std::vector<int64_t> shape{g.N, g.C, g.h.out_size, g.w.out_size};
  at::Tensor out = at::empty(shape, input.options().memory_format(format));
  at::Tensor argmax = at::empty(shape, input.options().dtype(argmax_dtype(g, return_indices)).memory_format(format));
  return {out, argmax};
}

inline Geometry backward_geometry(const at::Tensor& grad_output, const at::Tensor& argmax, c10::IntArrayRef input_size,
                                  c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation) {
  TORCH_CHECK(input_size.size() == 4, "alexnet_cuda::max_pool2d_backward: input_size must have 4 ",
              "elements (N, C, H, W), got ", input_size.size());
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.sizes() == argmax.sizes(),
              "alexnet_cuda::max_pool2d_backward: grad_output ", grad_output.sizes(), " and argmax ", argmax.sizes(),
              " must be 4-D with the same shape");
  TORCH_CHECK(grad_output.size(0) == input_size[0] && grad_output.size(1) == input_size[1],
              "alexnet_cuda::max_pool2d_backward: grad_output ", grad_output.sizes(), " does not match input_size ",
              input_size);
  TORCH_CHECK(argmax.scalar_type() == at::kByte || argmax.scalar_type() == at::kLong,
              "alexnet_cuda::max_pool2d_backward: argmax must be uint8 (window-local) or int64 ", "(flat), got ",
              argmax.scalar_type());
  TORCH_CHECK(grad_output.device() == argmax.device(),
              "alexnet_cuda::max_pool2d_backward: grad_output and argmax are on different devices");
  check_pair(kernel_size, "kernel_size");
  check_pair(stride, "stride");
  check_pair(padding, "padding");
  check_pair(dilation, "dilation");
  Geometry g{
      input_size[0], input_size[1],
      make_axis("H", input_size[2], kernel_size[0], stride[0], padding[0], dilation[0], false, grad_output.size(2)),
      make_axis("W", input_size[3], kernel_size[1], stride[1], padding[1], dilation[1], false, grad_output.size(3))};
  // The output extent must be the floor- or the ceil-mode one for this input.
  for (const Axis* a : {&g.h, &g.w}) {
    const int64_t lo = output_size(a->size, a->kernel, a->pad, a->stride, a->dilation, false).expect_int();
    const int64_t hi = output_size(a->size, a->kernel, a->pad, a->stride, a->dilation, true).expect_int();
    TORCH_CHECK(a->out_size == lo || a->out_size == hi, "alexnet_cuda::max_pool2d_backward: grad_output ",
                grad_output.sizes(), " is not the pooled shape of input_size ", input_size);
  }
  TORCH_CHECK(argmax.scalar_type() == at::kLong || int64_t(g.h.kernel) * g.w.kernel <= kMaxLocalArgmaxWindow,
              "alexnet_cuda::max_pool2d_backward: a uint8 argmax needs kernel_h * kernel_w <= 256");
  return g;
}

// Backward's tensors: grad_output and argmax in one layout (the forward input's), so one
// offset addresses both (grad_output may arrive with any strides, e.g. expanded from a
// sum), and the grad_input to fill, in that layout too.
struct BackwardTensors {
  at::Tensor go, am, grad_input;
};

inline BackwardTensors prepare_backward(const at::Tensor& grad_output, const at::Tensor& argmax,
                                        c10::IntArrayRef input_size, bool channels_last) {
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  return {grad_output.contiguous(format), argmax.contiguous(format),
          at::empty(input_size, grad_output.options().memory_format(format))};
}

}  // namespace max_pool2d
}  // namespace alexnet_cuda
