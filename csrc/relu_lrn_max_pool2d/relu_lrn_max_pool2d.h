// Fused ReLU -> LRN -> overlapping max-pool (AlexNet's stage after conv1 and conv2):
// the math shared by the CPU kernels (relu_lrn_max_pool2d_cpu.cpp) and the CUDA kernels
// (relu_lrn_max_pool2d_cuda.cu).
//
//   z = relu(x)                       (NaN stays NaN, like torch.relu)
//   y = lrn(z)                        lrn.h's formula, per LRN group: the C channels are
//                                     split into `groups` equal contiguous groups and a
//                                     window never leaves its group (channels outside it
//                                     count as zero padding: the paper's per-GPU LRN)
//   out = max_pool2d(y, kernel, stride)   no padding, no dilation, floor mode; PyTorch's
//                                     tie/NaN rules (max_pool2d.h): scan row-major from
//                                     -inf, replace when `v > best || isnan(v)`, on y
//                                     rounded to the input's dtype (as_stored), as stock
//                                     pools the stored LRN output
//   argmax = t_h * k_w + t_w          window-local uint8 (k_h * k_w <= 256)
//
// Backward, from x (the saved input) and the uint8 argmax only (y and the LRN scale are
// recomputed, never stored):
//   g_c(h, w)  = sum of dy over the pooling windows whose argmax is (h, w)
//                (a gather, windows in row-major order: deterministic, no atomics)
//   s_c        = k + scale * sum_{j in W(c)} z_j^2
//   t_j        = g_j * z_j * s_j^(-beta-1)
//   dx_c       = [x_c > 0] * (g_c * s_c^(-beta) - 2 * scale * beta * z_c * sum_{j in M(c)} t_j)
//                ([.] is torch's ReLU mask, threshold_backward: 0 where relu(x) <= 0, so NaN passes)
// with W(c) = [c - pre, c + post] and the mirrored M(c) = [c - post, c + pre], both cut
// to c's group (lrn.h).
//
// Saved for backward: the input x (already alive: it is the conv output) and 1 byte per
// pooled output. For one (96, 55, 55) fp32 image: x 1,161,600 bytes (shared with the
// conv) + argmax 96*27*27 = 69,984 bytes; stock eager saves relu(x), the LRN's
// intermediates (several input-sized tensors), the LRN output and int64 indices.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "lrn/lrn.h"
#include "max_pool2d/max_pool2d.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {

// torch.relu: negative -> 0, NaN stays NaN (NaN < 0 is false).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t relu(acc_t v) {
  return v < acc_t(0) ? acc_t(0) : v;
}

// A pooled value as the output stores it: rounded to scalar_t (a no-op for float and
// double). Stock pools the LRN output after it is stored in the input's dtype, so with
// fp16/bf16 two LRN values that round to the same number tie, and the first in row-major
// order wins; every kernel here compares these rounded values too.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t as_stored(acc_t v) {
  return static_cast<acc_t>(static_cast<scalar_t>(v));
}

// Problem geometry (plain ints: every extent is checked < 2^30 on the host; element
// offsets are int64 through the strides).
struct Geometry {
  int N, C, H, W, Ho, Wo;
  int KH, KW, SH, SW;
  int group_channels;  // channels per LRN group
  lrn::Window win;     // pre/post, clamped to group_channels - 1
  int64_t xs[4];       // strides (elements) of x and dx: n, c, h, w
  int64_t os[4];       // strides of out, argmax and dy: n, c, h, w
};

// The max over one k_h x k_w pooling window of an LRN tile with PyTorch's rules.
// Element (ph, pw) of the window is y[ph * rs + pw * cs]. Writes the value (opmath) and
// the window-local argmax t_h * k_w + t_w.
template <typename acc_t>
C10_HOST_DEVICE inline void pool_window(const acc_t* y, int rs, int cs, int KH, int KW, acc_t* best_out, int* arg_out) {
  acc_t best = max_pool2d::lowest_value<acc_t>();
  int arg = 0;  // the first tap, when every value is -inf
  for (int th = 0; th < KH; ++th) {
    const acc_t* row = y + th * rs;
    for (int tw = 0; tw < KW; ++tw) {
      const acc_t v = row[tw * cs];
      if (v > best || at::_isnan(v)) {  // strict >: first max wins; NaN always wins
        best = v;
        arg = th * KW + tw;
      }
    }
  }
  *best_out = best;
  *arg_out = arg;
}

// g at input position (h, w) of one (n, c) plane: the sum of dy over the windows
// oh in [ohb, ohe), ow in [owb, owe) (those whose span holds (h, w), max_pool2d.h's
// window_begin/window_end) whose argmax is (h, w). dy and argmax share strides
// (osh, osw); `dy`, `am` point at the plane's output element (0, 0). Row-major order,
// summed in opmath.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t gather(const scalar_t* dy, const uint8_t* am, int64_t osh, int64_t osw, int ohb, int ohe,
                                    int owb, int owe, int h, int w, int SH, int SW, int KW) {
  acc_t sum = acc_t(0);
  for (int oh = ohb; oh < ohe; ++oh) {
    const int dh = (h - oh * SH) * KW;  // tap row of (h, w) in window oh, times k_w
    for (int ow = owb; ow < owe; ++ow) {
      const int64_t off = oh * osh + ow * osw;
      if (int(am[off]) == dh + (w - ow * SW)) sum += static_cast<acc_t>(dy[off]);
    }
  }
  return sum;
}

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda

// ---------------------------------------------------------------------------------
// Host side: argument checks shared by the CPU and CUDA entry points (the user-facing
// checks, naming the Python arguments, are in alexnet_cuda/ops/relu_lrn_max_pool2d.py).
#ifndef __CUDACC_RTC__
#include <ATen/ATen.h>
#include <vector>

#include "descriptor.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {

inline Geometry make_geometry(const at::Tensor& x, int64_t size, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                              int64_t lrn_groups, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D (N, C, H, W) input, got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": input must be floating point, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, op, ": only the batch dimension may be empty, got ",
              x.sizes());
  TORCH_CHECK(size > 0, op, ": size must be positive, got ", size);
  TORCH_CHECK(lrn_groups > 0 && x.size(1) % lrn_groups == 0, op, ": ", x.size(1),
              " channels do not split into lrn_groups=", lrn_groups, " equal groups");
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2, op, ": kernel_size and stride must have 2 elements");
  TORCH_CHECK(kernel_size[0] * kernel_size[1] <= max_pool2d::kMaxLocalArgmaxWindow, op,
              ": kernel_size[0] * kernel_size[1] must be <= 256 (uint8 argmax)");
  TORCH_CHECK(x.size(0) < (int64_t(1) << 30) && x.size(1) < (int64_t(1) << 30), op, ": N and C must be below 2^30");
  const max_pool2d::Axis ah = max_pool2d::make_axis("H", x.size(2), kernel_size[0], stride[0], 0, 1, false);
  const max_pool2d::Axis aw = max_pool2d::make_axis("W", x.size(3), kernel_size[1], stride[1], 0, 1, false);
  Geometry g;
  g.N = static_cast<int>(x.size(0));
  g.C = static_cast<int>(x.size(1));
  g.H = ah.size;
  g.W = aw.size;
  g.Ho = ah.out_size;
  g.Wo = aw.out_size;
  g.KH = ah.kernel;
  g.KW = aw.kernel;
  g.SH = ah.stride;
  g.SW = aw.stride;
  g.group_channels = static_cast<int>(x.size(1) / lrn_groups);
  g.win = lrn::make_window(size, g.group_channels);
  for (int d = 0; d < 4; ++d) g.xs[d] = x.stride(d);
  return g;
}

inline max_pool2d::Axis axis_h(const Geometry& g) { return max_pool2d::Axis{g.H, g.Ho, g.KH, g.SH, 0, 1}; }
inline max_pool2d::Axis axis_w(const Geometry& g) { return max_pool2d::Axis{g.W, g.Wo, g.KW, g.SW, 0, 1}; }

// The pooled output's shape for x.
inline std::vector<int64_t> out_shape(const Geometry& g) { return {g.N, g.C, g.Ho, g.Wo}; }

// Backward inputs: checks and the common layout (x's suggested memory format).
inline void check_backward(const at::Tensor& grad_output, const at::Tensor& argmax, const at::Tensor& x,
                           const Geometry& g, const char* op) {
  const std::vector<int64_t> shape = out_shape(g);
  TORCH_CHECK(grad_output.sizes() == c10::IntArrayRef(shape) && argmax.sizes() == c10::IntArrayRef(shape), op,
              ": grad_output ", grad_output.sizes(), " and argmax ", argmax.sizes(), " must have the pooled shape ",
              c10::IntArrayRef(shape));
  TORCH_CHECK(argmax.scalar_type() == at::kByte, op, ": argmax must be uint8, got ", argmax.scalar_type());
  TORCH_CHECK(grad_output.scalar_type() == x.scalar_type(), op, ": grad_output dtype ", grad_output.scalar_type(),
              " != input dtype ", x.scalar_type());
  TORCH_CHECK(grad_output.device() == x.device() && argmax.device() == x.device(), op,
              ": grad_output, argmax and input must be on the same device");
}

// What both devices' entry points do before launching. The layout is the input's
// suggested memory format (contiguous or channels_last); outputs come back in it.
inline at::MemoryFormat kernel_format(const at::Tensor& input) {
  return input.dim() == 4 ? input.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

struct ForwardTensors {
  at::Tensor x, out, argmax;
  Geometry g;  // with the output strides filled in
};

inline ForwardTensors prepare_forward(const at::Tensor& input, int64_t size, c10::IntArrayRef kernel_size,
                                      c10::IntArrayRef stride, int64_t lrn_groups, const char* op) {
  const auto format = kernel_format(input);
  ForwardTensors t;
  t.x = input.contiguous(format);
  t.g = make_geometry(t.x, size, kernel_size, stride, lrn_groups, op);
  const auto shape = out_shape(t.g);
  t.out = at::empty(shape, t.x.options().memory_format(format));
  t.argmax = at::empty(shape, t.x.options().dtype(at::kByte).memory_format(format));
  for (int d = 0; d < 4; ++d) t.g.os[d] = t.out.stride(d);
  return t;
}

struct BackwardTensors {
  at::Tensor x, dy, am, dx;
  Geometry g;  // with the pooled tensors' strides filled in
};

inline BackwardTensors prepare_backward(const at::Tensor& grad_output, const at::Tensor& argmax,
                                        const at::Tensor& input, int64_t size, c10::IntArrayRef kernel_size,
                                        c10::IntArrayRef stride, int64_t lrn_groups, const char* op) {
  const auto format = kernel_format(input);
  BackwardTensors t;
  t.x = input.contiguous(format);
  t.g = make_geometry(t.x, size, kernel_size, stride, lrn_groups, op);
  check_backward(grad_output, argmax, t.x, t.g, op);
  // dy and argmax in one layout (the pooled output's), so one set of strides reads both.
  t.am = argmax.contiguous(format);
  t.dy = lrn::with_layout_of(grad_output, t.am);
  t.dx = at::empty_like(t.x);  // x's strides exactly (x is dense)
  for (int d = 0; d < 4; ++d) t.g.os[d] = t.am.stride(d);
  return t;
}

// ---- The op's descriptors (descriptor.h): the public op and the kernels' two, each one's
// schema and C++ signature, written once.

struct ReluLrnMaxPool2d {
  static constexpr const char* kName = "relu_lrn_max_pool2d";
  static constexpr const char* kArguments =
      "(Tensor input, int size, float alpha, float beta, float k, int[2] kernel_size, int[2] stride, "
      "int lrn_groups, bool paper_alpha) -> Tensor";
  using Signature = at::Tensor(const at::Tensor&, int64_t, double, double, double, at::IntArrayRef, at::IntArrayRef,
                               int64_t, bool);
};

// (out, argmax) = max_pool2d(lrn(relu(input))), LRN windows kept inside `lrn_groups` equal
// channel groups; scale = alpha / size (PyTorch) or alpha (paper); argmax uint8
// window-local (t_h * kernel_w + t_w). No padding, no dilation, floor mode.
struct Forward {
  static constexpr const char* kName = "relu_lrn_max_pool2d_forward";
  static constexpr const char* kArguments =
      "(Tensor input, int size, float scale, float beta, float k, int[2] kernel_size, int[2] stride, "
      "int lrn_groups) -> (Tensor out, Tensor argmax)";
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double, double, double,
                                                       at::IntArrayRef, at::IntArrayRef, int64_t);
};

// Gradient w.r.t. input from the input and the argmax (the LRN is recomputed).
struct Backward {
  static constexpr const char* kName = "relu_lrn_max_pool2d_backward";
  static constexpr const char* kArguments =
      "(Tensor grad_output, Tensor argmax, Tensor input, int size, float scale, float beta, float k, "
      "int[2] kernel_size, int[2] stride, int lrn_groups) -> Tensor";
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double, double, double,
                               at::IntArrayRef, at::IntArrayRef, int64_t);
};

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
#endif
