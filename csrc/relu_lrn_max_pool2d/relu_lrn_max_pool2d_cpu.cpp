// Fused ReLU -> LRN -> max-pool: schemas and CPU kernels. See relu_lrn_max_pool2d.h
// for the math.
//
// The op's CPU kernels (forward_native, backward_native): one task per (image, LRN group),
// channel-major task-local buffers, every LRN value computed once. 2-2.4x the speed of
// PyTorch's three ops on 2 cores. Any strides are read through the tensors' own strides (no
// layout copies beyond making the input dense in its suggested memory format).
//
// Test ops (alexnet_cuda_test::relu_lrn_max_pool2d_forward/_backward, at the end of this
// file; nothing in the production op calls them): the CUDA kernels' per-item code of
// relu_lrn_max_pool2d_sweep.h run on the CPU (forward_sweep, backward_sweep), one
// parallel_for index per GPU thread, so that the CPU tests check the GPU kernels' indexing
// and order of operations (not the last bits: the power and FMA contraction differ, see
// lrn/lrn_sweep.h). The sweep covers 3x3 pooling with LRN size <= 7 (channels-last needs
// 16-byte vectors: each group's channel count a multiple of 16 / element size, aligned
// data; the NCHW forward a multiple of 4); the test ops run the native kernels for other
// shapes. Both sets of kernels use the same formulas and the same order of every sum
// (sweep::pair_sums) but the NCHW backward's (lrn::sweep::backward_sweep: single steps in
// ascending order, or 16-bit channel pairs that start at the run's first priming step);
// tests/test_relu_lrn_max_pool2d.py checks that they agree (bit for bit elsewhere).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d.h"
#include "relu_lrn_max_pool2d/relu_lrn_max_pool2d_sweep.h"

namespace alexnet_cuda {
namespace relu_lrn_max_pool2d {
namespace {

constexpr int64_t kSweepGrain = 16;

// The sweep kernels, when they cover the problem: returns false otherwise.
template <typename scalar_t>
bool forward_sweep(const at::Tensor& x, at::Tensor& out, at::Tensor& argmax, const Geometry& g, double scale,
                   double beta, double k) {
  using acc_t = at::opmath_type<scalar_t>;
  const bool cl = kernel_format(x) == at::MemoryFormat::ChannelsLast;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  uint8_t* ap = argmax.mutable_data_ptr<uint8_t>();
  const int vec = sweep::vector_width<scalar_t>(g, cl, /*backward=*/false, {xp, op, ap});
  if (vec == 0) return false;
  const sweep::FusedItems it = sweep::make_items(g, cl, /*backward=*/false, vec, sweep::kH100ForwardSlots);
  sweep::dispatch<scalar_t>(g, cl, [&](auto span, auto V, auto CL) {
    at::parallel_for(0, it.count, kSweepGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        sweep::forward_item<decltype(span)::value, decltype(V)::value, decltype(CL)::value>(
            xp, op, ap, g, it, i & ~int64_t(sweep::kRunBlock - 1), int(i & (sweep::kRunBlock - 1)), acc_t(scale),
            lrn::PowAny<acc_t>{acc_t(beta)}, acc_t(k));
    });
  });
  return true;
}

template <typename scalar_t>
bool backward_sweep(const at::Tensor& dy, const at::Tensor& am, const at::Tensor& x, at::Tensor& dx, const Geometry& g,
                    double scale, double beta, double k) {
  using acc_t = at::opmath_type<scalar_t>;
  const bool cl = kernel_format(x) == at::MemoryFormat::ChannelsLast;
  const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
  const uint8_t* ap = am.const_data_ptr<uint8_t>();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
  const int vec = sweep::vector_width<scalar_t>(g, cl, /*backward=*/true, {dyp, ap, xp, dxp});
  if (vec == 0) return false;
  const sweep::FusedItems it = sweep::make_items(g, cl, /*backward=*/true, vec, /*slots=*/0);
  const lrn::PowAny<acc_t> pw{acc_t(beta)};
  sweep::dispatch<scalar_t>(g, cl, [&](auto span, auto V, auto CL) {
    constexpr int S = decltype(span)::value;
    if constexpr (decltype(CL)::value) {        // a warp's lanes at a time (backward_lanes)
      if constexpr (S <= decltype(V)::value) {  // (vector_width's condition: no other span comes here)
        at::parallel_for(0, sweep::backward_lane_warps(it), 1, [&](int64_t begin, int64_t end) {
          for (int64_t w = begin; w < end; ++w)
            sweep::backward_lanes_cpu<S, decltype(V)::value>(dyp, ap, xp, dxp, g, it, w, acc_t(scale), pw, acc_t(k));
        });
      }
    } else {
      at::parallel_for(0, it.count, kSweepGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          sweep::backward_item<S>(dyp, ap, xp, dxp, g, it, i, acc_t(scale), pw, acc_t(k));
      });
    }
  });
  return true;
}

// Pools one (H, W) plane of LRN values y (row-major, opmath) into the output and argmax
// elements whose plane starts at offset obase (strides g.os).
template <typename scalar_t, typename acc_t>
void pool_plane(const acc_t* y, const Geometry& g, int64_t obase, scalar_t* op, uint8_t* ap) {
  for (int oh = 0; oh < g.Ho; ++oh) {
    for (int ow = 0; ow < g.Wo; ++ow) {
      acc_t best;
      int arg;
      pool_window<acc_t>(&y[int64_t(oh) * g.SH * g.W + int64_t(ow) * g.SW], g.W, 1, g.KH, g.KW, &best, &arg);
      const int64_t off = obase + oh * g.os[2] + ow * g.os[3];
      op[off] = static_cast<scalar_t>(best);
      ap[off] = static_cast<uint8_t>(arg);
    }
  }
}

// Loads relu(x) of channels [c0, c0 + group_channels) of image n into z[c][p], p = h * W + w.
template <typename scalar_t, typename acc_t>
void load_relu_group(const scalar_t* xp, const Geometry& g, int64_t n, int c0, acc_t* z) {
  const int64_t HW = int64_t(g.H) * g.W;
  const scalar_t* xg = xp + n * g.xs[0] + c0 * g.xs[1];
  for (int c = 0; c < g.group_channels; ++c)
    for (int h = 0; h < g.H; ++h)
      for (int w = 0; w < g.W; ++w)
        z[c * HW + h * g.W + w] = relu(static_cast<acc_t>(xg[c * g.xs[1] + h * g.xs[2] + w * g.xs[3]]));
}

// ss[p] = the sum over channel c's window [c - before, c + after] (cut to the group's
// channels [0, G)) of z_j[p]^2 (SQUARE) or z_j[p], in sweep::pair_sums' order: the part
// the window shares with its pair's (c and c + 1 for even c, c - 1 and c for odd) in
// ascending j, then its own end channel (c - before for even c, c + after for odd).
template <bool SQUARE, typename acc_t>
void window_sum(const acc_t* z, int64_t HW, int c, int before, int after, int G, acc_t* ss) {
  auto term = [](acc_t v) { return SQUARE ? v * v : v; };
  int lo = c - before, hi = c + after, own = -1;  // own: the end channel, summed last
  if (lo < hi) {                                  // (a window of one channel has none)
    own = c % 2 == 0 ? lo++ : hi--;
  }
  lo = std::max(lo, 0);
  hi = std::min(hi, G - 1);
  if (lo > hi) {
    std::fill(ss, ss + HW, acc_t(0));
  } else {
    const acc_t* zl = z + lo * HW;
    for (int64_t p = 0; p < HW; ++p) ss[p] = term(zl[p]);
    for (int j = lo + 1; j <= hi; ++j) {
      const acc_t* zj = z + j * HW;
      for (int64_t p = 0; p < HW; ++p) ss[p] = term(zj[p]) + ss[p];
    }
  }
  if (own >= 0 && own < G) {
    const acc_t* zo = z + own * HW;
    for (int64_t p = 0; p < HW; ++p) ss[p] = term(zo[p]) + ss[p];
  }
}

// CPU-native forward (see the top of the file). One task per (image, LRN group): the
// group's relu(x) goes to a task-local channel-major buffer z[c][p] (p = h * W + w), so
// that the loops below run over contiguous pixels; then, channel by channel, the window's
// sum of squares (ascending channels, as everywhere else), the LRN plane y[p] and its
// pooling. Each LRN value is computed once, where the sweep kernels recompute it at
// every window that holds it; the arithmetic per value is the same.
template <typename scalar_t>
void forward_native(const at::Tensor& x, at::Tensor& out, at::Tensor& argmax, const Geometry& g, double scale_d,
                    double beta_d, double k_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = acc_t(scale_d), beta = acc_t(beta_d), k = acc_t(k_d);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  uint8_t* ap = argmax.mutable_data_ptr<uint8_t>();
  const int64_t HW = int64_t(g.H) * g.W;
  const int groups = g.C / g.group_channels;
  at::parallel_for(0, int64_t(g.N) * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> z(g.group_channels * HW), ss(HW), y(HW);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / groups;
      const int c0 = static_cast<int>(task % groups) * g.group_channels;
      load_relu_group(xp, g, n, c0, z.data());
      for (int c = 0; c < g.group_channels; ++c) {
        window_sum<true>(z.data(), HW, c, g.win.pre, g.win.post, g.group_channels, ss.data());
        const acc_t* zc = &z[c * HW];
        for (int64_t p = 0; p < HW; ++p)
          y[p] = as_stored<scalar_t>(lrn::forward_value<acc_t>(zc[p], ss[p], scale, beta, k));
        pool_plane(y.data(), g, n * g.os[0] + (c0 + c) * g.os[1], op, ap);
      }
    }
  });
}

// CPU-native backward (see the top of the file), one task per (image, LRN group), on
// channel-major task-local buffers:
//   G[c][p]   the pooled gradient routed through the argmax: a scatter over the outputs
//             in row-major order, the order in which the GPU's gather sums them
//   T[c][p]   = G * z * s^(-beta-1),  GS[c][p] = G * s^(-beta)
//   dx[c][p]  = [relu(x) > 0] * (GS - 2 * scale * beta * z * sum of T over the mirrored window)
template <typename scalar_t>
void backward_native(const at::Tensor& dy, const at::Tensor& am, const at::Tensor& x, at::Tensor& dx, const Geometry& g,
                     double scale_d, double beta_d, double k_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = acc_t(scale_d), beta = acc_t(beta_d), k = acc_t(k_d);
  const acc_t coef = acc_t(2) * scale * beta;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
  const uint8_t* amp = am.const_data_ptr<uint8_t>();
  scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
  const int64_t HW = int64_t(g.H) * g.W, CHW = g.group_channels * HW;
  const int groups = g.C / g.group_channels;
  at::parallel_for(0, int64_t(g.N) * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> z(CHW), G(CHW), T(CHW), GS(CHW), ss(HW);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / groups;
      const int c0 = static_cast<int>(task % groups) * g.group_channels;
      load_relu_group(xp, g, n, c0, z.data());
      std::fill(G.begin(), G.end(), acc_t(0));
      for (int c = 0; c < g.group_channels; ++c) {
        const int64_t obase = n * g.os[0] + (c0 + c) * g.os[1];
        for (int oh = 0; oh < g.Ho; ++oh) {
          for (int ow = 0; ow < g.Wo; ++ow) {
            const int64_t off = obase + oh * g.os[2] + ow * g.os[3];
            const int a = amp[off];
            const int th = a / g.KW, tw = a - th * g.KW;
            if (th >= g.KH) continue;  // not a tap: the gather matches no position either
            G[c * HW + int64_t(oh * g.SH + th) * g.W + ow * g.SW + tw] += static_cast<acc_t>(dyp[off]);
          }
        }
      }
      for (int c = 0; c < g.group_channels; ++c) {
        window_sum<true>(z.data(), HW, c, g.win.pre, g.win.post, g.group_channels, ss.data());
        for (int64_t p = 0; p < HW; ++p) {
          const int64_t i = c * HW + p;
          acc_t p0, p1;
          lrn::inv_pows(k + scale * ss[p], beta, p0, p1);
          T[i] = G[i] * z[i] * p1;
          GS[i] = G[i] * p0;
        }
      }
      scalar_t* dxg = dxp + n * g.xs[0] + c0 * g.xs[1];
      for (int c = 0; c < g.group_channels; ++c) {
        // ss reused: the sum of T over the mirrored window [c - post, c + pre]
        window_sum<false>(T.data(), HW, c, g.win.post, g.win.pre, g.group_channels, ss.data());
        for (int h = 0; h < g.H; ++h) {
          for (int w = 0; w < g.W; ++w) {
            const int64_t i = c * HW + h * g.W + w;
            // ReLU mask as torch's threshold_backward: zero where relu(x) <= 0 (a NaN passes).
            const acc_t v = z[i] <= acc_t(0) ? acc_t(0) : GS[i] - coef * z[i] * ss[h * g.W + w];
            dxg[c * g.xs[1] + h * g.xs[2] + w * g.xs[3]] = static_cast<scalar_t>(v);
          }
        }
      }
    }
  });
}

// The op's entries. Routing: every production call runs the native kernels (one per
// direction), whatever its arguments. The test ops (kSweep) run the sweep kernels where they
// cover the call, else the native ones too; their messages are the production op's.
template <bool kSweep>
std::tuple<at::Tensor, at::Tensor> forward_entry(const at::Tensor& input, int64_t size, double scale, double beta,
                                                 double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                 int64_t lrn_groups) {
  const char* op = "relu_lrn_max_pool2d_forward";
  TORCH_CHECK(input.device().is_cpu(), op, ": input must be a CPU tensor");
  ForwardTensors t = prepare_forward(input, size, kernel_size, stride, lrn_groups, op);
  if (t.out.numel() == 0) return {t.out, t.argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.x.scalar_type(), "relu_lrn_max_pool2d_forward_cpu", [&] {
    if (!(kSweep && forward_sweep<scalar_t>(t.x, t.out, t.argmax, t.g, scale, beta, k)))
      forward_native<scalar_t>(t.x, t.out, t.argmax, t.g, scale, beta, k);
  });
  return {t.out, t.argmax};
}

template <bool kSweep>
at::Tensor backward_entry(const at::Tensor& grad_output, const at::Tensor& argmax, const at::Tensor& input,
                          int64_t size, double scale, double beta, double k, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, int64_t lrn_groups) {
  const char* op = "relu_lrn_max_pool2d_backward";
  TORCH_CHECK(input.device().is_cpu(), op, ": input must be a CPU tensor");
  BackwardTensors t = prepare_backward(grad_output, argmax, input, size, kernel_size, stride, lrn_groups, op);
  if (t.dx.numel() == 0) return t.dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.x.scalar_type(), "relu_lrn_max_pool2d_backward_cpu", [&] {
    if (!(kSweep && backward_sweep<scalar_t>(t.dy, t.am, t.x, t.dx, t.g, scale, beta, k)))
      backward_native<scalar_t>(t.dy, t.am, t.x, t.dx, t.g, scale, beta, k);
  });
  return t.dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_cuda, CPU, m) { impl<Forward, Backward>(m, &forward_entry<false>, &backward_entry<false>); }

// The same schemas as the kernel ops (relu_lrn_max_pool2d.h's descriptors), in the test namespace.
TORCH_LIBRARY_FRAGMENT(alexnet_cuda_test, m) { define<Forward, Backward>(m); }

TORCH_LIBRARY_IMPL(alexnet_cuda_test, CPU, m) {
  impl<Forward, Backward>(m, &forward_entry<true>, &backward_entry<true>);
}

}  // namespace relu_lrn_max_pool2d
}  // namespace alexnet_cuda
