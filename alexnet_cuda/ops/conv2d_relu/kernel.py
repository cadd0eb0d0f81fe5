"""Triton implicit-GEMM kernel for relu(conv2d(x, w) + b); with MASK_A and RELU off it
also computes the input gradient of stride-1 layers (``backward.py``).

``_conv2d_relu_triton`` is the launcher. It takes already-normalized arguments
(4-D input, int pairs, symmetric padding) and works on CUDA tensors and, under
``TRITON_INTERPRET=1``, on CPU tensors (that is how the CPU test-suite runs the
kernel itself). Argument checking lives in ``op.py``.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch._prims_common as _prims
import triton
import triton.language as tl
from torch.library import wrap_triton
from torch.utils import _python_dispatch

from ... import config
from . import space_to_depth as _s2d

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# triton.autotune(cache_results=...) exists from Triton 3.4 on; older ones tune every process.
_CACHE_RESULTS = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


def gpu_tuning_configs():
    """Tile shapes for AlexNet's five conv layers (bench/cases/conv2d_relu.py lists them).

    M = N*Ho*Wo is large for conv1/conv2 (387k / 93k rows at batch 128) and small for
    conv3-5 (21.6k rows), where 64-row tiles keep enough programs in flight for 132 SMs.
    The per-group N = Cout/groups is 96, 128, 384, 192, 128: 64- and 128-wide tiles
    cover them with little masking. Only 4 warps: Inductor found miscompiles with 8
    warps on flattened (kh, kw, c) conv loops (pytorch#173068). 10 configs, so a new
    shape costs seconds of compilation, not minutes. `python bench/codegen.py` shows
    what each compiles to (registers, spills, shared memory, MMA and async-copy use).
    """
    c = triton.Config
    return [
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=4),
        # BLOCK_K = 16 divides Cin/groups = 48 (conv2): its NHWC fast path (see the kernel).
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 16}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 16}, num_warps=4, num_stages=4),
    ]


# The one config of test runs (alexnet_cuda.config.conv_autotune off): no benchmarking, since
# compiling all ten configs for every shape would take minutes. Only speed and the order
# of the fp32 accumulation differ between configs. BLOCK_K = 16 divides Cin/groups of
# conv2-5, so this one config still runs both code paths of the kernel (the NHWC per-tap
# fast path there; the general path for conv1 and NCHW input read in place).
TEST_CONFIG = triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 16}, num_warps=4, num_stages=4)


def autotune_configs(interpret_config, test_config, tuning_configs):
    """The configs a conv kernel is autotuned over. Under the interpreter, which runs every
    program in numpy: one config with small tiles, so the tiny test shapes still cover
    several tiles (checked first: .ci/gpu's ALEXNET_CUDA_CONV_AUTOTUNE=0 reaches
    interpreter runs too). With config.conv_autotune off: the one test config, no
    tuning. Otherwise the GPU tuning configs. Read when the kernels are defined (at
    import), so the setting comes from its environment default."""
    if _INTERPRET:
        return [interpret_config]
    if not config.conv_autotune:
        return [test_config]
    return tuning_configs()


def _autotune_configs():
    interpret = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=4, num_stages=1)
    return autotune_configs(interpret, TEST_CONFIG, gpu_tuning_configs)


@triton.jit
def decode_k(offs_k, CG, KH, KW, C_INNER: tl.constexpr):
    """k -> (c, kh, kw) in the kernel's reduction order (described below): (kh, kw, c) with c fastest for
    C_INNER (NHWC input), (c, kh, kw) with kw fastest otherwise. The weight-gradient
    kernel reads the same order (wgrad.py), so both take it from here."""
    if C_INNER:
        c = offs_k % CG
        r = offs_k // CG
        kw = r % KW
        kh = r // KW
    else:
        kw = offs_k % KW
        r = offs_k // KW
        kh = r % KH
        c = r // KH
    return c, kh, kw


# Implicit GEMM, one GEMM per group g (grid axis 1):
#
#   out[m, co] = relu(bias[g*COUTG + co] + sum_k A[m, k] * B[k, co])
#
#   rows     m  = (n*Ho + oh)*Wo + ow                       M = N*Ho*Wo
#   columns  co in [0, COUTG), global channel g*COUTG + co   COUTG = Cout/groups
#   reduction k over (kh, kw, c), c in [0, CG), CG = Cin/groups,  K = CG*KH*KW
#     C_INNER (NHWC input):  k = (kh*KW + kw)*CG + c   (c fastest: contiguous loads)
#     else    (NCHW input):  k = (c*KH + kh)*KW + kw   (kw fastest, = weight's own order)
#   A[m, k] = x[n, g*CG + c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]  (0 outside the image)
#   B[k, co] = w[g*COUTG + co, c, kh, kw] = w_ptr[(g*COUTG + co)*swo + k]
#     (the launcher hands over the weight stored in this K order, copying it if needed;
#      when K is not a multiple of 16, e.g. conv1's 363, rows are zero-padded to
#      swo = K_B = a multiple of 16 so the B loads stay 16-byte vectors)
#
# Flattening k over (kh, kw, c) instead of tiling over channels only means conv1's
# 3 input channels fill K = 363 densely rather than being padded to a tile of 16+ per
# filter tap. Row offsets (n, oh, ow -> address) are int64 since N*C*H*W can pass 2^31;
# the per-k column offsets stay int32 (they span one image, checked by the launcher).
# When BLOCK_K divides CG in NHWC (CG_POW2 = largest power of two dividing CG, <= 64),
# each K block lies inside one filter tap and loads are contiguous along K (fast path).
# Bias and ReLU are applied to the fp32 accumulator; the output is stored once.
#
# The same kernel computes the input gradient (dgrad) of a stride-1 layer y = relu(conv(x)):
#   dx = conv(dy * (y > 0), w~, padding = d*(k-1) - p, dilation d), no bias, no ReLU,
#   w~[g*CG + c, co, kh, kw] = w[g*COUTG + co, c, KH-1-kh, KW-1-kw]  (per group: transposed, flipped)
# with x := dy and m := y (same strides as dy): MASK_A zeroes A where m <= 0 as A is
# loaded, so relu's backward (threshold_backward) is never a pass of its own. RELU=False.
@triton.autotune(
    configs=_autotune_configs(),
    key=[
        "N",
        "C",
        "H",
        "W",
        "COUT",
        "HO",
        "WO",
        "KH",
        "KW",
        "STRIDE_H",
        "STRIDE_W",
        "PAD_H",
        "PAD_W",
        "DIL_H",
        "DIL_W",
        "GROUPS",
        "sxn",
        "sxc",
        "sxh",
        "sxw",
        "syn",
        "syc",
        "syh",
        "syw",
        "HAS_BIAS",
        "ALLOW_TF32",
        "MASK_A",
        "RELU",
    ],
    # Keep the timings on disk (Triton's cache dir, keyed by the kernel source, the configs
    # and the key above): a new process, e.g. training after bench/run.py, skips the tuning.
    **_CACHE_RESULTS,
)
@triton.jit
def _conv2d_relu_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    m_ptr,
    N,
    C,
    H,
    W,
    COUT,
    HO,
    WO,
    KH,
    KW,
    GROUPS,
    CG,
    COUTG,
    M_TOTAL,
    K_TOTAL,
    STRIDE_H,
    STRIDE_W,
    PAD_H,
    PAD_W,
    DIL_H,
    DIL_W,
    sxn,
    sxc,
    sxh,
    sxw,
    swo,
    K_B,
    syn,
    syc,
    syh,
    syw,
    HAS_BIAS: tl.constexpr,
    C_INNER: tl.constexpr,
    CG_POW2: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    CHECK_H: tl.constexpr,
    CHECK_W: tl.constexpr,
    X_INT64: tl.constexpr,
    Y_INT64: tl.constexpr,
    MASK_A: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Axis 0 enumerates (M tile, N tile) with N fastest: the few N tiles of one M tile
    # run back to back and share its input rows in L2. Axis 1 is the group.
    pid = tl.program_id(0)
    g = tl.program_id(1)
    num_pid_n = tl.cdiv(COUTG, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M_TOTAL
    ow = offs_m % WO
    t = offs_m // WO
    oh = t % HO
    n = t // HO
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    if X_INT64:
        x_row = n.to(tl.int64) * sxn + ih0.to(tl.int64) * sxh + iw0.to(tl.int64) * sxw + (g * CG).to(tl.int64) * sxc
    else:  # the whole input spans < 2^31 elements: int32 offsets, half the registers
        x_row = n * sxn + ih0 * sxh + iw0 * sxw + (g * CG) * sxc

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < COUTG
    co = g * COUTG + offs_n
    w_col = co.to(tl.int64) * swo

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K_TOTAL, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        if C_INNER and CG_POW2 % BLOCK_K == 0:
            # BLOCK_K divides CG (conv2-5 in NHWC): the whole K block sits in one filter
            # tap (kh, kw), so the tap is a scalar, the row mask is constant along K and
            # the channel offsets are contiguous (sxc == 1 is specialized by Triton):
            # vectorized, pipelinable (cp.async) loads. No K mask: K_TOTAL % BLOCK_K == 0.
            tap = k0 // CG
            c0 = k0 - tap * CG
            kh = tap // KW
            kw = tap - kh * KW
            ih = ih0 + kh * DIL_H
            iw = iw0 + kw * DIL_W
            row_ok = m_mask
            if CHECK_H:
                row_ok = row_ok & (ih >= 0) & (ih < H)
            if CHECK_W:
                row_ok = row_ok & (iw >= 0) & (iw < W)
            x_tap = kh * DIL_H * sxh + kw * DIL_W * sxw + c0 * sxc
            a_off = (x_row + x_tap)[:, None] + tl.arange(0, BLOCK_K)[None, :] * sxc
            a = tl.load(x_ptr + a_off, mask=row_ok[:, None], other=0.0)
            if MASK_A:  # dgrad: A is dy, zeroed where the layer's output m = y is <= 0
                # (threshold_backward's test: a NaN output passes its gradient through)
                a = tl.where(tl.load(m_ptr + a_off, mask=row_ok[:, None], other=0.0) <= 0, 0.0, a)
            b = tl.load(w_ptr + (w_col[None, :] + offs_k[:, None]), mask=n_mask[None, :], other=0.0)
        else:
            # General flattened K (conv1's 3 channels, NCHW input): decode every k.
            k_mask = offs_k < K_TOTAL
            c, kh, kw = decode_k(offs_k, CG, KH, KW, C_INNER)
            dh = kh * DIL_H
            dw = kw * DIL_W
            ih = ih0[:, None] + dh[None, :]
            iw = iw0[:, None] + dw[None, :]
            a_mask = m_mask[:, None] & k_mask[None, :]
            # Without padding every tap of a valid (m, k) lies inside the image (conv's
            # floor-mode output size guarantees it), so the bounds tests are compiled out:
            # conv1, where they are a 2-D mask per K block, has no padding.
            if CHECK_H:
                a_mask = a_mask & (ih >= 0) & (ih < H)
            if CHECK_W:
                a_mask = a_mask & (iw >= 0) & (iw < W)
            x_col = dh * sxh + dw * sxw + c * sxc
            a_off = x_row[:, None] + x_col[None, :]
            a = tl.load(x_ptr + a_off, mask=a_mask, other=0.0)
            if MASK_A:
                a = tl.where(tl.load(m_ptr + a_off, mask=a_mask, other=0.0) <= 0, 0.0, a)
            # The weight is packed in K order (see the launcher): B[k, co] = w[co*swo + k],
            # zero for K_TOTAL <= k < K_B.
            b = tl.load(
                w_ptr + (w_col[None, :] + offs_k[:, None]), mask=(offs_k < K_B)[:, None] & n_mask[None, :], other=0.0
            )
        if ALLOW_TF32:
            acc = tl.dot(a, b, acc, input_precision="tf32")
        else:
            acc = tl.dot(a, b, acc, input_precision="ieee")

    if HAS_BIAS:
        bias = tl.load(b_ptr + co, mask=n_mask, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    if RELU:  # relu that keeps NaN (NaN < 0 is false), like torch.relu.
        acc = tl.where(acc < 0.0, 0.0, acc)

    if Y_INT64:
        y_row = n.to(tl.int64) * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw
        y_col = co.to(tl.int64) * syc
    else:
        # int32 offsets when the whole output has fewer than 2^31 elements: a 2-D tile of
        # offsets is half the registers, which keeps the NCHW epilogue (per-element
        # addresses: contiguity along M is not provable) from spilling.
        y_row = n * syn + oh * syh + ow * syw
        y_col = co * syc
    tl.store(
        y_ptr + (y_row[:, None] + y_col[None, :]),
        acc.to(y_ptr.dtype.element_ty),
        mask=m_mask[:, None] & n_mask[None, :],
    )


_INT32_MAX = 2**31 - 1
# Largest element offset the kernel computes in int32 (a tensor past it gets int64
# offsets; the interpreter tests lower it to run that code on small tensors).
_OFFSET32_LIMIT = _INT32_MAX
# Largest BLOCK_M of any config: row indices of the last M tile reach M_TOTAL + BLOCK_M - 1.
_MAX_BLOCK_M = max(cfg.kwargs["BLOCK_M"] for cfg in gpu_tuning_configs() + [TEST_CONFIG])


def conv_output_size(h: int, w: int, kh: int, kw: int, stride, padding, dilation):
    """(Ho, Wo) of a convolution, F.conv2d's floor rule."""
    return (
        (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1,
        (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1,
    )


def _padded_k(k: int) -> int:
    """K rounded up to a multiple of 16: the packed weight's row length (aligned vectors)."""
    return -(-k // 16) * 16


def _image_span(t: torch.Tensor) -> int:
    """Elements between the first and last element of one image (N excluded)."""
    return sum((size - 1) * stride for size, stride in zip(t.shape[1:], t.stride()[1:]))


def _column_reach(image_span: int, padding, sxh: int, sxw: int) -> int:
    """Largest per-image (column) offset of an input element the kernel reads: a tap
    offset kh*DH reaches H - 1 + PH when the window starts PH rows above the image."""
    return image_span + padding[0] * abs(sxh) + padding[1] * abs(sxw)


def _beyond_kernel_limits(column_reach: int, weight_numel: int, m_total: int, groups: int) -> str:
    """Why the kernel cannot take this launch, or "". Row indices m and the column offsets
    inside one image are int32 (the batch offset is int64); groups is grid axis 1."""
    if column_reach > _INT32_MAX:
        return f"one input image with its padding spans {column_reach} elements (the kernel's limit is 2^31 - 1)"
    if weight_numel > _INT32_MAX:
        return f"the weight has {weight_numel} elements (the kernel's limit is 2^31 - 1)"
    if m_total > _INT32_MAX - _MAX_BLOCK_M:
        return f"N*Ho*Wo = {m_total} output pixels (the kernel's limit is 2^31 - {_MAX_BLOCK_M + 1})"
    if groups > 65535:
        return f"groups = {groups} (the kernel's limit is 65535)"
    return ""


def _limit_problem(input, weight, padding, groups, ho, wo, s) -> str:
    """Why the kernel cannot run this convolution, or "": judged on what the launcher will
    hand it (the space-to-depth tensor when s > 0, by default a dense NHWC copy of NCHW
    input, the weight packed with K padded to a multiple of 16) via _beyond_kernel_limits."""
    n, c, h, w = input.shape
    cout, cg, kh, kw = weight.shape
    if s:  # the dense space-to-depth tensor (padding folded in) and weight
        kh, kw, hs, ws = _s2d.rewritten_sizes(kh, kw, ho, wo, s)
        cg = s * s * cg
        reach = cg * hs * ws - 1
    elif input.stride(1) > input.stride(3) and config.conv_nchw_input == "channels_last":
        reach = _column_reach(c * h * w - 1, padding, w * c, c)  # the dense NHWC copy
    else:
        reach = _column_reach(_image_span(input), padding, input.stride(2), input.stride(3))
    return _beyond_kernel_limits(reach, cout * _padded_k(cg * kh * kw), n * ho * wo, groups)


def triton_kernel_takes(input, weight, stride, padding, dilation, groups) -> bool:
    """Whether the Triton kernel can run this convolution (the op uses ATen otherwise)."""
    cg, kh, kw = weight.shape[1:]
    ho, wo = conv_output_size(input.shape[2], input.shape[3], kh, kw, stride, padding, dilation)
    s = _s2d.factor(cg, kh, kw, stride, dilation, groups, wo)
    return not _limit_problem(input, weight, padding, groups, ho, wo, s)


def _is_channels_last(t: torch.Tensor) -> bool:
    """Tensor.suggest_memory_format() == channels_last: the strides' order, size-1 dims
    and ambiguous cases resolved as ATen does (what cuDNN's F.conv2d decides from)."""
    return _prims.suggest_memory_format(t) == torch.channels_last


def output_memory_format(input: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """channels_last when input or weight suggests it, else NCHW: cuDNN's rule
    (cudnn_conv_suggest_memory_format), so F.conv2d and this op agree on every layout."""
    if _is_channels_last(input) or _is_channels_last(weight):
        return torch.channels_last
    return torch.contiguous_format


# What to do with NCHW input on CUDA:
# * "channels_last" (default) copies it to NHWC first: one read and one write of the
#   input (estimated at 3 TB/s, batch 128 bf16: 26 us for conv1's input, 7-12 us for
#   conv2-5's), then the NHWC kernel (for conv2-5: contiguous K blocks loaded
#   asynchronously with cp.async, the "tap" path).
# * "direct" reads it in place through its strides: no copy, but element-wise gathered
#   loads along K with 2-D bounds masks on every layer, and more registers.
# Compiled for sm_90 (`python bench/codegen.py --layout nchw --nchw-policy ...`, bf16):
# with "direct" 6 of the 10 tuning configs spill registers on conv2-5 and none takes the
# tap path; with the copy, 3-4 spill (the 128x128 tiles: NCHW output has per-element
# store addresses, its contiguity along M not being provable) and conv3-5 take the tap
# path in all 10. The output layout is the same either way (see output_memory_format).
# The choice is alexnet_cuda.config.conv_nchw_input: "direct" exists so the interpreter
# tests and bench/codegen.py can still reach the in-place path; users get the copy.


def _pack_weight(weight: torch.Tensor, c_inner: bool):
    """(weight2d, K_B): the weight as rows B[:, co] = weight2d[co, :K] in the kernel's K order.

    NHWC order (kh, kw, c) is a channels_last weight, NCHW order (c, kh, kw) a
    contiguous one. A weight already stored that way (the usual case: a model moved
    to channels_last has channels_last weights) is used in place. Otherwise, or when
    K = CG*KH*KW is not a multiple of 16 (conv1: 363), it is copied into rows padded
    with zeros to K_B = a multiple of 16, so that the kernel's weight loads are aligned
    vectors. The copy is small (AlexNet's largest conv weight has 1.3M elements).
    """
    cout, cg, kh, kw = weight.shape
    k = cg * kh * kw
    if c_inner:
        expected, order = (k, 1, kw * cg, cg), (0, 2, 3, 1)
    else:
        expected, order = (k, kh * kw, kw, 1), (0, 1, 2, 3)
    in_order = all(st == e for st, e, size in zip(weight.stride(), expected, weight.shape) if size > 1)
    if in_order and (k % 16 == 0 or cout == 1):
        return weight, k
    k_b = _padded_k(k)
    packed = torch.nn.functional.pad(weight.permute(order).reshape(cout, k), (0, k_b - k))
    return packed.contiguous(), k_b


class _LaunchPlan:
    """Everything about one launch that depends only on shapes, strides, dtypes and
    arguments, computed once per such key (``_plan``): the output's shape and layout, the
    tensor rewrites the launch needs (space-to-depth, an NHWC copy, a packed weight), the
    kernel's scalar arguments (everything after its four pointers) and constexprs, and,
    once a CUDA launch has run, the compiled kernel itself (``handles``, keyed by which
    pointers are 16-byte aligned: Triton specializes the compiled code on that)."""

    __slots__ = (
        "out_shape",
        "out_format",
        "s2d",
        "to_nhwc",
        "masked",
        "c_inner",
        "scalars",
        "constexprs",
        "m_total",
        "coutg",
        "groups",
        "handles",
    )

    def grid(self, meta):
        return (triton.cdiv(self.m_total, meta["BLOCK_M"]) * triton.cdiv(self.coutg, meta["BLOCK_N"]), self.groups)


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _plan(
    input, weight, bias, stride, padding, dilation, groups, allow_tf32, relu=True, masked=False, out_format=None
) -> _LaunchPlan:
    """The _LaunchPlan of a launch, from the tensors' metadata only (works on meta tensors).

    ``relu=False, masked=True`` is a dgrad launch (see the kernel's comment): the mask
    tensor has the input's strides; ``out_format`` overrides the output layout rule."""
    n, c, h, w = input.shape
    cout, cg, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    ho, wo = conv_output_size(h, w, kh, kw, stride, padding, dilation)
    plan = _LaunchPlan()
    plan.out_shape = (n, cout, ho, wo)
    plan.out_format = out_format or output_memory_format(input, weight)
    plan.masked = masked
    plan.handles = {}
    plan.s2d = None
    plan.to_nhwc = False
    if n * cout * ho * wo == 0:
        plan.scalars = None
        return plan
    s = _s2d.factor(cg, kh, kw, stride, dilation, groups, wo)
    problem = _limit_problem(input, weight, padding, groups, ho, wo, s)
    if problem:
        raise ValueError(f"conv2d_relu: {problem}")
    x, wt = _meta_like(input), _meta_like(weight)
    if s:
        # conv1-like: fold the stride into channels (see space_to_depth.py); the rest of
        # this launch is then an unpadded stride-1 conv of the rewritten tensors.
        kh, kw, hs, ws = _s2d.rewritten_sizes(kh, kw, ho, wo, s)
        plan.s2d = (s, list(padding), hs, ws)
        x = _s2d.input_to_depth(x, s, padding, hs, ws)
        wt = _s2d.weight_to_depth(wt, s)
        n, c, h, w = x.shape
        cg = c
        sh = sw = 1
        ph = pw = 0
    c_inner = x.stride(1) <= x.stride(3)
    if not c_inner and config.conv_nchw_input == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        plan.to_nhwc = c_inner = True
    plan.c_inner = c_inner
    wt, k_b = _pack_weight(wt, c_inner)
    y = torch.empty(plan.out_shape, device="meta", memory_format=plan.out_format)
    plan.coutg = cout // groups
    plan.m_total = n * ho * wo
    plan.groups = groups
    plan.scalars = (
        n,
        c,
        h,
        w,
        cout,
        ho,
        wo,
        kh,
        kw,
        groups,
        cg,
        plan.coutg,
        plan.m_total,
        cg * kh * kw,
        sh,
        sw,
        ph,
        pw,
        dilation[0],
        dilation[1],
        *x.stride(),
        wt.stride(0),
        k_b,
        *y.stride(),
    )
    plan.constexprs = dict(
        HAS_BIAS=bias is not None,
        C_INNER=c_inner,
        CG_POW2=min(cg & -cg, 64),
        # fp16/bf16 ignore the precision; fixing it avoids compiling their kernels twice.
        ALLOW_TF32=bool(allow_tf32) or input.dtype != torch.float32,
        CHECK_H=ph > 0,
        CHECK_W=pw > 0,
        # 64-bit offsets only when a tensor spans 2^31 elements or more (padding taps can
        # reach below the first element: bounded by the image span, hence the margin).
        X_INT64=2 * _image_span(x) + (n - 1) * abs(x.stride(0)) > _OFFSET32_LIMIT,
        Y_INT64=_image_span(y) + (n - 1) * y.stride(0) > _OFFSET32_LIMIT,
        MASK_A=masked,
        RELU=relu,
    )
    return plan


def _bind(plan: _LaunchPlan, input, weight, bias, mask=None):
    """(y, pointer arguments) of one launch of `plan`: the output allocated, and the
    tensors rewritten as the plan says (the data-dependent part of a launch). `mask`
    (dgrad plans) has the input's strides and is rewritten as the input is."""
    y = torch.empty(plan.out_shape, device=input.device, dtype=input.dtype, memory_format=plan.out_format)
    if plan.scalars is None:
        return y, None
    if plan.s2d is not None:
        s, padding, hs, ws = plan.s2d
        input = _s2d.input_to_depth(input, s, padding, hs, ws)
        weight = _s2d.weight_to_depth(weight, s)
    elif plan.to_nhwc:
        input = input.contiguous(memory_format=torch.channels_last)
        mask = None if mask is None else mask.contiguous(memory_format=torch.channels_last)
    weight, _ = _pack_weight(weight, plan.c_inner)
    # the kernel reads bias[co] at unit stride (a copy of Cout values when it is strided)
    bias = weight if bias is None else bias.contiguous()
    return y, (input, weight, bias, y, input if mask is None else mask)


def _kernel_arguments(input, weight, bias, stride, padding, dilation, groups, allow_tf32=True):
    """Everything one launch needs, computed as the launcher does: (y, args, constexprs, grid).

    ``y`` is the allocated output; ``args`` are the kernel's positional arguments, in its
    parameter order; ``constexprs`` its compile-time flags (the tuned BLOCK_* excluded);
    ``grid(meta)`` the launch grid. ``args`` is None when ``y`` is empty (nothing to
    launch). bench/codegen.py calls this with meta tensors to compile the very launches
    the op makes for a GPU architecture, without a GPU.
    """
    plan = _plan(input, weight, bias, stride, padding, dilation, groups, allow_tf32)
    y, pointers = _bind(plan, input, weight, bias)
    if pointers is None:
        return y, None, None, None
    return y, pointers + plan.scalars, dict(plan.constexprs), plan.grid


# Launch plans of eager calls, by everything _plan reads (the private test settings
# included, so that a test changing them gets a new plan). Bounded: a new shape is a new
# autotuning too, so a program sees few; the cache is cleared if it ever grows large.
_PLANS: dict = {}
_MAX_PLANS = 1024


def _cached_plan(
    input, weight, bias, stride, padding, dilation, groups, allow_tf32, relu=True, masked=False, out_format=None
) -> _LaunchPlan:
    key = (
        input.shape,
        input.stride(),
        weight.shape,
        weight.stride(),
        input.dtype,
        input.device,
        bias is None,
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups,
        bool(allow_tf32),
        relu,
        masked,
        out_format,
        config.conv_nchw_input,
        config.conv_space_to_depth,
        _OFFSET32_LIMIT,
    )
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _plan(
            input, weight, bias, stride, padding, dilation, groups, allow_tf32, relu, masked, out_format
        )
    return plan


def _aligned(pointers) -> tuple:
    """Which pointers are 16-byte aligned: what Triton specializes a compiled kernel on
    besides the scalar arguments (which the plan key fixes)."""
    return tuple(t.data_ptr() % 16 == 0 for t in pointers)


def _launch(jit_kernel, plan: _LaunchPlan, pointers) -> None:
    """Launch `jit_kernel` (an autotuned Triton kernel) for `plan`.

    The first CUDA launch of a plan (per pointer alignment) goes through the autotuner,
    which picks and compiles the config; the compiled kernel it returns is kept with
    the plan, and later launches call it directly with the same arguments: no autotuner
    key, no argument binding, no specialization per call. Anything else (the
    interpreter, a Triton whose launch returns no compiled kernel) always takes the
    autotuner's path, which is correct everywhere.
    """
    args = pointers + plan.scalars
    aligned = _aligned(pointers) if pointers[0].is_cuda else None
    handle = plan.handles.get(aligned) if aligned is not None else None
    if handle is not None:
        kernel, grid, constexpr_values = handle
        kernel[grid](*args, *constexpr_values)
        return
    kernel = jit_kernel[plan.grid](*args, **plan.constexprs)
    if aligned is not None and hasattr(kernel, "__getitem__") and hasattr(kernel, "run"):
        meta = {**plan.constexprs, **jit_kernel.best_config.kwargs}
        names = jit_kernel.fn.arg_names[len(args) :]
        plan.handles[aligned] = (kernel, plan.grid(meta), tuple(meta[name] for name in names))


def _conv2d_relu_triton(input, weight, bias, stride, padding, dilation, groups, allow_tf32=True):
    """Launch the kernel: relu(conv2d(input, weight, bias)) for 4-D input.

    stride/padding/dilation are (h, w) int pairs (symmetric padding). NCHW input is
    copied to NHWC first unless config.conv_nchw_input says otherwise; the weight is repacked
    only if it is not in the kernel's K order; the output is allocated in
    ``output_memory_format(input, weight)``.

    Traced (torch.compile, fake tensors) it builds the launch afresh and goes through
    wrap_triton; eager, the launch plan is cached per shape (``_cached_plan``) and the
    compiled kernel is called directly after the first launch (``_launch``).
    """
    if is_traced(input):
        y, args, constexprs, grid = _kernel_arguments(
            input, weight, bias, stride, padding, dilation, groups, allow_tf32
        )
        if args is not None:
            # wrap_triton makes the launch traceable by torch.compile. The interpreter's
            # kernels are plain Python functions that wrap_triton rejects; never traced.
            launch = _conv2d_relu_kernel if _INTERPRET else wrap_triton(_conv2d_relu_kernel)
            launch[grid](*args, **constexprs)
        return y
    plan = _cached_plan(input, weight, bias, stride, padding, dilation, groups, allow_tf32)
    y, pointers = _bind(plan, input, weight, bias)
    if pointers is not None:
        _launch(_conv2d_relu_kernel, plan, pointers)
    return y


def is_traced(t: torch.Tensor) -> bool:
    """Whether this call is being traced rather than run: torch.compile, a tensor subclass
    (FakeTensor, FunctionalTensor: AOTAutograd) or a dispatch mode (make_fx). Traced
    launches must go through wrap_triton and must not be cached."""
    return (
        torch.compiler.is_compiling()
        or type(t) not in _PLAIN_TENSOR_TYPES
        or _python_dispatch._get_current_dispatch_mode() is not None
    )


_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
