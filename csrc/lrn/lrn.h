// Cross-channel Local Response Normalization: the math shared by the CPU and CUDA kernels.
//
// For channel c at one spatial position, with the window W(c) = [c - pre, c + post]
// (PyTorch's placement: pre = size / 2 behind, post = (size - 1) / 2 ahead; channels
// outside [0, C) count as zeros):
//
//   s_c = k + scale * sum_{j in W(c)} x_j^2        scale = alpha / size  (PyTorch, Caffe,
//   y_c = x_c * s_c^(-beta)                                cuDNN, cuda-convnet)
//                                                   scale = alpha         (paper's text)
// Backward (Caffe's derivation; dy_j / dx_c summed over every j whose window holds c,
// i.e. j in M(c) = [c - post, c + pre], the mirrored window):
//
//   dx_c = dy_c * s_c^(-beta) - 2 * scale * beta * x_c * sum_{j in M(c)} t_j
//   t_j  = dy_j * x_j * s_j^(-beta - 1)          (= dy_j * y_j / s_j)
//
// Writing t_j from x alone (not from y) means backward needs only x: the scale s is
// recomputed, never stored, and y need not be kept for backward either.
#pragma once

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace alexnet_cuda {
namespace lrn {

// Window extents, clamped to C - 1: channels further away are zero padding anyway, so
// this changes nothing in the sums but bounds the halo a tile has to load.
struct Window {
  int pre;   // channels behind c
  int post;  // channels ahead of c
  C10_HOST_DEVICE int span() const { return pre + post; }
};

inline Window make_window(int64_t size, int64_t channels) {
  const int64_t limit = channels > 0 ? channels - 1 : 0;
  Window w;
  w.pre = static_cast<int>(std::min<int64_t>(size / 2, limit));
  w.post = static_cast<int>(std::min<int64_t>((size - 1) / 2, limit));
  return w;
}

// s^(-beta), the general path: any beta, any s. On the GPU: exp2(-beta * log2(s)) with
// the hardware log2 (relative error ~1e-7 for fp32, far below fp32 rounding of the
// result) for s >= 0, where s = 0 gives +inf like pow(). On the CPU: pow(), or for
// beta = 0.75 and s > 0 the same formula as Pow34 below with correctly rounded square
// roots. double uses the exact library pow everywhere.
C10_HOST_DEVICE inline float pow34_cpu(float s, float* p1);
C10_HOST_DEVICE inline float inv_pow(float s, float beta) {
#if defined(__CUDA_ARCH__)
  // beta = 0: pow(s, -0) = 1 for every s (0, inf and NaN included), where the exp2/log2
  // form would give exp2(0 * +-inf) = NaN.
  if (beta == 0.f) return 1.f;
  // s < 0 (only with k < 0 or alpha < 0): pow() is finite for a whole-number beta
  // (pow(-2, -1) = -0.5), NaN otherwise; log2 of a negative number would make it NaN
  // always. Rare, so the exact library pow.
  if (s < 0.f) return powf(s, -beta);
  return exp2f(-beta * __log2f(s));
#else
  if (beta == 0.75f && s > 0.f) return pow34_cpu(s, nullptr);
  return std::pow(s, -beta);
#endif
}
C10_HOST_DEVICE inline double inv_pow(double s, double beta) { return ::pow(s, -beta); }

// Backward's two powers from one: p0 = s^(-beta), p1 = s^(-beta-1) = p0 / s. In this
// order (not p0 = p1 * s) an overflowed s = +inf gives p0 = p1 = 0, as PyTorch's
// composite LRN does, instead of 0 * inf = NaN.
template <typename acc_t>
C10_HOST_DEVICE inline void inv_pows(acc_t s, acc_t beta, acc_t& p0, acc_t& p1) {
#if !defined(__CUDA_ARCH__)
  if constexpr (std::is_same<acc_t, float>::value) {
    if (beta == 0.75f && s > 0.f) {  // Pow34's formula, as the GPU's sweep kernels take it
      p0 = pow34_cpu(s, &p1);
      return;
    }
  }
#endif
  p0 = inv_pow(s, beta);
  p1 = p0 / s;
}

// The power as the kernels take it, one functor per "beta kind", chosen once per launch
// (dispatch_pow) so that no per-element code tests beta:
//   PowAny<acc_t>: any beta, any k and scale: inv_pow / inv_pows above.
//   Pow34:         beta = 0.75 with s >= FLT_MIN guaranteed (k >= FLT_MIN, scale >= 0:
//                  AlexNet's and PyTorch's defaults), fp32 math. No branch, no division:
//                    r  = rsqrt(s)                       (MUFU.RSQ)
//                    p0 = s^-0.75   = r * sqrt(r)        (MUFU.SQRT, FMUL)
//                    p1 = s^-1.75   = p0 * (r * r)       (2 FMUL)
//                  s = +inf gives r = 0 and p0 = p1 = 0 (PyTorch's composite: 0), NaN
//                  stays NaN. Both MUFU ops are the .approx.ftz PTX instructions; ftz
//                  changes nothing here: s >= FLT_MIN and r >= 2^-64 are normal.
// Error bound of Pow34 on the GPU (an approximation; the CPU takes the same formula with
// correctly rounded 1 / sqrt(s) and sqrt, and so stays inside the same bound): rsqrt and
// sqrt.approx are each within 2 ulp (relative 2^-22), so p0 = r^1.5 (1 + e) has
// |e| <= 1.5 * 2^-22 + 2^-22 + 2^-24 < 2^-20.5 and p1 (two more roundings and r^2)
// |e| <= 2^-20.5 + 2 * 2^-22 + 2^-23 < 2^-19.5: about 6 and 12 ulp of fp32, relative
// 7e-7 and 1.4e-6. tests/test_lrn.py::test_pow34_error_bound checks both against float64
// on every device it runs on (relative 2^-20 and 2^-19).
struct Pow34 {
  float beta;  // 0.75: kept for the backward's 2 * scale * beta
  C10_HOST_DEVICE C10_ALWAYS_INLINE float operator()(float s) const {
#if defined(__CUDA_ARCH__)
    float r, q;
    asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(s));
    asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(q) : "f"(r));
    return r * q;
#else
    return pow34_cpu(s, nullptr);
#endif
  }
  C10_HOST_DEVICE C10_ALWAYS_INLINE void both(float s, float& p0, float& p1) const {
#if defined(__CUDA_ARCH__)
    float r, q;
    asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(s));
    asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(q) : "f"(r));
    p0 = r * q;
    p1 = p0 * (r * r);
#else
    p0 = pow34_cpu(s, &p1);
#endif
  }
};

// Pow34's formula with correctly rounded operations (the CPU's; s > 0 or +inf).
C10_HOST_DEVICE inline float pow34_cpu(float s, float* p1) {
  const float r = 1.f / std::sqrt(s);
  const float p0 = r * std::sqrt(r);
  if (p1) *p1 = p0 * (r * r);
  return p0;
}

template <typename acc_t>
struct PowAny {
  acc_t beta;
  C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t operator()(acc_t s) const { return inv_pow(s, beta); }
  C10_HOST_DEVICE C10_ALWAYS_INLINE void both(acc_t s, acc_t& p0, acc_t& p1) const { inv_pows(s, beta, p0, p1); }
};

// Whether a launch may take Pow34 (see there): fp32 math, beta = 0.75, and every
// s = k + scale * sum >= k >= FLT_MIN (or +inf, or NaN).
template <typename acc_t>
inline bool pow34_applies(double scale, double beta, double k) {
  return std::is_same<acc_t, float>::value && beta == 0.75 && scale >= 0.0 && static_cast<float>(k) >= 1.17549435e-38f;
}

// y_c from x_c and the window's sum of squares.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t forward_value(acc_t x, acc_t sumsq, acc_t scale, acc_t beta, acc_t k) {
  return x * inv_pow(k + scale * sumsq, beta);
}
template <typename acc_t, typename Pow>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t forward_value(acc_t x, acc_t sumsq, acc_t scale, const Pow& pw, acc_t k) {
  return x * pw(k + scale * sumsq);
}

}  // namespace lrn
}  // namespace alexnet_cuda

// ---------------------------------------------------------------------------------
// Host side: how a tensor is walked. Both supported layouts are a 3-D strided view
// [outer, channel, pixel]:
//   channels-first (contiguous N,C,*):  outer = N, pixel = the spatial dims,
//                                        strides (C*P, P, 1)
//   channels-last  (N,*,C dense, e.g. torch.channels_last): outer = 1, pixel = every
//                                        (n, spatial) position, strides (0, 1, C)
// Anything else is made contiguous by the caller first.
#ifndef __CUDACC_RTC__
#include <ATen/ATen.h>
#include <vector>

#include "descriptor.h"

namespace alexnet_cuda {
namespace lrn {

struct Geometry {
  int64_t outer, channels, pixels;
  int64_t outer_stride, channel_stride, pixel_stride;
  bool channels_last;
};

// True when `x` is dense with the channel dim innermost (NHWC, NDHWC, NLC).
inline bool is_channels_last_dense(const at::Tensor& x) {
  if (x.dim() < 3 || x.is_contiguous()) return false;
  std::vector<int64_t> order{0};
  for (int64_t d = 2; d < x.dim(); ++d) order.push_back(d);
  order.push_back(1);
  return x.permute(order).is_contiguous();
}

inline Geometry make_geometry(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t p = c == 0 || n == 0 ? 0 : x.numel() / (n * c);
  if (is_channels_last_dense(x)) return Geometry{1, c, n * p, 0, 1, c, true};
  return Geometry{n, c, p, c * p, p, 1, false};
}

// Argument checks shared by the CPU and CUDA entry points (user-facing errors come from
// the public op, lrn.cpp, first; these keep direct calls of the kernels' ops safe).
inline void check_args(const at::Tensor& x, int64_t size, const char* op) {
  TORCH_CHECK(x.dim() >= 3, op, ": input must have 3 or more dims (N, C, *), got ", x.dim());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": input must be floating point, got ", x.scalar_type());
  TORCH_CHECK(size > 0, op, ": size must be positive, got ", size);
  // Channel indices are 32-bit in the kernels (offsets are 64-bit).
  TORCH_CHECK(x.size(1) < (int64_t(1) << 30), op, ": the channel dim must be below 2^30, got ", x.size(1));
}

inline void check_backward_args(const at::Tensor& grad_output, const at::Tensor& input, int64_t size) {
  check_args(input, size, "lrn_backward");
  TORCH_CHECK(grad_output.sizes() == input.sizes(), "lrn_backward: grad_output has shape ", grad_output.sizes(),
              " but input has ", input.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(),
              "lrn_backward: grad_output must match input's dtype and device");
}

// The tensor the kernels walk: `input` itself when contiguous or channels-last dense,
// else a contiguous copy.
inline at::Tensor kernel_layout(const at::Tensor& input) {
  return is_channels_last_dense(input) ? input : input.contiguous();
}

// `t` (its own dtype) with exactly `like`'s strides, a copy only when they differ, so one
// set of strides walks both tensors in the backward kernels.
inline at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  return at::empty_strided(like.sizes(), like.strides(), t.options()).copy_(t);
}

// ---- The op's descriptors (descriptor.h): the public op and the kernels' two, each one's
// schema and C++ signature, written once.

struct LocalResponseNorm {
  static constexpr const char* kName = "local_response_norm";
  static constexpr const char* kArguments =
      "(Tensor input, int size, float alpha, float beta, float k, bool paper_alpha) -> Tensor";
  using Signature = at::Tensor(const at::Tensor&, int64_t, double, double, double, bool);
};

// y = x * (k + scale * sum_window x^2)^-beta over a channel window of `size`
// (scale = alpha / size for PyTorch's convention, alpha for the paper's).
struct Forward {
  static constexpr const char* kName = "lrn_forward";
  static constexpr const char* kArguments = "(Tensor input, int size, float scale, float beta, float k) -> Tensor";
  using Signature = at::Tensor(const at::Tensor&, int64_t, double, double, double);
};

// Gradient w.r.t. input, recomputing the scale from input (nothing else saved).
struct Backward {
  static constexpr const char* kName = "lrn_backward";
  static constexpr const char* kArguments =
      "(Tensor grad_output, Tensor input, int size, float scale, float beta, float k) -> Tensor";
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double, double, double);
};

}  // namespace lrn
}  // namespace alexnet_cuda
#endif
