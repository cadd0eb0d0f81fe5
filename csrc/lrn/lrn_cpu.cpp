// LRN: schemas and CPU kernels. See lrn.h for the math.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "lrn/lrn.h"
#include "lrn/lrn_sweep.h"

namespace alexnet_cuda {
namespace lrn {
namespace {

// Windows of size <= 7 run lrn_sweep.h's sweep kernels: the same per-item code as
// the CUDA kernels, one parallel_for index per GPU thread (so CPU tests check the GPU
// kernels' indexing and order of operations; the power's last bits and FMA contraction
// differ, lrn_sweep.h). Items are cheap, so they go to threads in chunks.
//
// Kernel variants (one line each):
//   forward_sweep / backward_sweep   size <= 7: lrn_sweep.h's per-item code, PowAny
//   forward_block / backward_block   wider windows: pixel blocks, contiguous inner loops
constexpr int64_t kSweepGrain = 64;

template <typename scalar_t>
void forward_sweep(const scalar_t* x, scalar_t* y, const Geometry& v, Window w, at::opmath_type<scalar_t> scale,
                   at::opmath_type<scalar_t> beta, at::opmath_type<scalar_t> k) {
  const int vec = sweep::vector_width<scalar_t>(v, {x, y});
  const sweep::Items it = sweep::make_items(v, vec, w.span());
  const PowAny<at::opmath_type<scalar_t>> pw{beta};
  sweep::dispatch<scalar_t>(w, vec, v.channels_last, [&](auto span, auto V, auto cl) {
    at::parallel_for(0, it.count, kSweepGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        sweep::forward_item<decltype(span)::value, decltype(V)::value, decltype(cl)::value>(x, y, v, it, i, scale, pw,
                                                                                            k);
    });
  });
}

template <typename scalar_t>
void backward_sweep(const scalar_t* dy, const scalar_t* x, scalar_t* dx, const Geometry& v, Window w,
                    at::opmath_type<scalar_t> scale, at::opmath_type<scalar_t> beta, at::opmath_type<scalar_t> k) {
  const int vec = sweep::vector_width<scalar_t>(v, {dy, x, dx});
  const sweep::Items it = sweep::make_backward_items(v, vec, w.span());
  const PowAny<at::opmath_type<scalar_t>> pw{beta};
  sweep::dispatch<scalar_t>(w, vec, v.channels_last, [&](auto span, auto V, auto cl) {
    at::parallel_for(0, it.count, kSweepGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        sweep::backward_item<decltype(span)::value, decltype(V)::value, decltype(cl)::value>(dy, x, dx, v, it, i, scale,
                                                                                             pw, k);
    });
  });
}

// Wider windows: the CPU kernels work on one block of pixels of one outer index at a time and keep,
// per pixel, a column of the (zero-padded) squares in a scratch buffer so that every
// inner loop runs over contiguous floats (auto-vectorized with -O3):
//   sq[(j + pre) * B + b] = x_j(pixel b)^2  for j in [-pre, C + post)
constexpr int64_t kPixelBlock = 64;

template <typename scalar_t>
void forward_block(const scalar_t* x, scalar_t* y, const Geometry& v, int64_t o, int64_t p0, int64_t nb, Window w,
                   at::opmath_type<scalar_t> scale, at::opmath_type<scalar_t> beta, at::opmath_type<scalar_t> k,
                   std::vector<at::opmath_type<scalar_t>>& sq) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = v.channels, B = nb;
  sq.assign((C + w.span()) * B, acc_t(0));
  auto at = [&](int64_t c, int64_t b) { return o * v.outer_stride + c * v.channel_stride + (p0 + b) * v.pixel_stride; };
  for (int64_t c = 0; c < C; ++c) {
    acc_t* row = &sq[(c + w.pre) * B];
    for (int64_t b = 0; b < B; ++b) {
      const acc_t xv = static_cast<acc_t>(x[at(c, b)]);
      row[b] = xv * xv;
    }
  }
  std::vector<acc_t> sum(B);
  for (int64_t c = 0; c < C; ++c) {
    std::fill(sum.begin(), sum.end(), acc_t(0));
    for (int d = 0; d <= w.span(); ++d) {  // window rows c - pre .. c + post
      const acc_t* row = &sq[(c + d) * B];
      for (int64_t b = 0; b < B; ++b) sum[b] += row[b];
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t i = at(c, b);
      y[i] = static_cast<scalar_t>(forward_value<acc_t>(static_cast<acc_t>(x[i]), sum[b], scale, beta, k));
    }
  }
}

template <typename scalar_t>
void backward_block(const scalar_t* dy, const scalar_t* x, scalar_t* dx, const Geometry& v, int64_t o, int64_t p0,
                    int64_t nb, Window w, at::opmath_type<scalar_t> scale, at::opmath_type<scalar_t> beta,
                    at::opmath_type<scalar_t> k, std::vector<at::opmath_type<scalar_t>>& sq) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = v.channels, B = nb;
  auto at = [&](int64_t c, int64_t b) { return o * v.outer_stride + c * v.channel_stride + (p0 + b) * v.pixel_stride; };
  // Buffers: squares (rows -pre .. C+post), t_j (rows -post .. C+pre), s_c^-beta (rows 0..C).
  const int64_t sq_rows = C + w.span(), t_rows = C + w.span();
  sq.assign((sq_rows + t_rows + C) * B, acc_t(0));
  acc_t* t = sq.data() + sq_rows * B;
  acc_t* sp = t + t_rows * B;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t b = 0; b < B; ++b) {
      const acc_t xv = static_cast<acc_t>(x[at(c, b)]);
      sq[(c + w.pre) * B + b] = xv * xv;
    }
  std::vector<acc_t> sum(B);
  for (int64_t c = 0; c < C; ++c) {
    std::fill(sum.begin(), sum.end(), acc_t(0));
    for (int d = 0; d <= w.span(); ++d)
      for (int64_t b = 0; b < B; ++b) sum[b] += sq[(c + d) * B + b];
    for (int64_t b = 0; b < B; ++b) {
      const acc_t s = k + scale * sum[b];
      const acc_t p = inv_pow(s, beta);
      const int64_t i = at(c, b);
      sp[c * B + b] = p;
      t[(c + w.post) * B + b] = static_cast<acc_t>(dy[i]) * static_cast<acc_t>(x[i]) * p / s;
    }
  }
  const acc_t coef = acc_t(2) * scale * beta;
  for (int64_t c = 0; c < C; ++c) {
    std::fill(sum.begin(), sum.end(), acc_t(0));
    for (int d = 0; d <= w.span(); ++d)  // t rows j = c - post .. c + pre
      for (int64_t b = 0; b < B; ++b) sum[b] += t[(c + d) * B + b];
    for (int64_t b = 0; b < B; ++b) {
      const int64_t i = at(c, b);
      dx[i] =
          static_cast<scalar_t>(static_cast<acc_t>(dy[i]) * sp[c * B + b] - coef * static_cast<acc_t>(x[i]) * sum[b]);
    }
  }
}

// Runs fn(o, p0, nb) over every (outer, pixel block) in parallel.
template <typename Fn>
void for_each_block(const Geometry& v, Fn fn) {
  const int64_t blocks_per_outer = (v.pixels + kPixelBlock - 1) / kPixelBlock;
  const int64_t total = v.outer * blocks_per_outer;
  at::parallel_for(0, total, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t o = i / blocks_per_outer, p0 = (i % blocks_per_outer) * kPixelBlock;
      fn(o, p0, std::min(kPixelBlock, v.pixels - p0));
    }
  });
}

at::Tensor lrn_forward_cpu(const at::Tensor& input, int64_t size, double scale, double beta, double k) {
  check_args(input, size, "lrn_forward");
  const at::Tensor x = kernel_layout(input);
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const Geometry v = make_geometry(x);
  const Window w = make_window(size, v.channels);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if (sweep::covers(w)) return forward_sweep(xp, yp, v, w, acc_t(scale), acc_t(beta), acc_t(k));
    for_each_block(v, [&](int64_t o, int64_t p0, int64_t nb) {
      thread_local std::vector<acc_t> scratch;
      forward_block<scalar_t>(xp, yp, v, o, p0, nb, w, acc_t(scale), acc_t(beta), acc_t(k), scratch);
    });
  });
  return y;
}

at::Tensor lrn_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, int64_t size, double scale,
                            double beta, double k) {
  check_backward_args(grad_output, input, size);
  const at::Tensor x = kernel_layout(input);
  // The kernel walks both tensors with one set of strides: give dy x's layout.
  const at::Tensor dy = with_layout_of(grad_output, x);
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return dx;
  const Geometry v = make_geometry(x);
  const Window w = make_window(size, v.channels);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    if (sweep::covers(w)) return backward_sweep(dyp, xp, dxp, v, w, acc_t(scale), acc_t(beta), acc_t(k));
    for_each_block(v, [&](int64_t o, int64_t p0, int64_t nb) {
      thread_local std::vector<acc_t> scratch;
      backward_block<scalar_t>(dyp, xp, dxp, v, o, p0, nb, w, acc_t(scale), acc_t(beta), acc_t(k), scratch);
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, CPU, m) { impl<Forward, Backward>(m, &lrn_forward_cpu, &lrn_backward_cpu); }

}  // namespace lrn
}  // namespace alexnet_cuda
