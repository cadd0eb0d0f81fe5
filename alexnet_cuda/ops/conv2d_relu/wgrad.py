"""Triton weight gradient (wgrad) of conv2d_relu: an implicit GEMM over K = N*Ho*Wo with
the ReLU mask fused, split-K, the bias gradient fused, groups as a grid axis.

``wgrad_triton`` is the launcher (CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``); backward.select_wgrad decides per shape whether it
or cuDNN runs. Every stride, padding and dilation is handled; a space-to-depth layer
(conv1) is given its rewritten, stride-1 form by the caller.

Deterministic: no atomics. Each split of the reduction writes its own fp32 slice of a
workspace, and the slices are summed in a fixed order, so a given config gives
bit-identical results run to run (the split count depends on the shape only).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import kernel as _k
from .kernel import decode_k

_INTERPRET = _k._INTERPRET
_CACHE_RESULTS = _k._CACHE_RESULTS


def gpu_tuning_configs():
    """Tiles of (Cout/groups) x (Cin/groups*KH*KW), reducing BLOCK_M rows per step.

    Cout/groups is 96-384 and K 1200-3456 for AlexNet's layers: 64- and 128-wide tiles.
    4 warps only (the flattened-(kh, kw, c) 8-warp miscompile, pytorch#173068)."""
    c = triton.Config
    return [
        c({"BLOCK_CO": 64, "BLOCK_K": 64, "BLOCK_M": 32}, num_warps=4, num_stages=3),
        c({"BLOCK_CO": 128, "BLOCK_K": 64, "BLOCK_M": 32}, num_warps=4, num_stages=3),
        c({"BLOCK_CO": 64, "BLOCK_K": 128, "BLOCK_M": 32}, num_warps=4, num_stages=3),
        c({"BLOCK_CO": 128, "BLOCK_K": 128, "BLOCK_M": 32}, num_warps=4, num_stages=3),
        c({"BLOCK_CO": 64, "BLOCK_K": 64, "BLOCK_M": 64}, num_warps=4, num_stages=3),
    ]


TEST_CONFIG = triton.Config({"BLOCK_CO": 64, "BLOCK_K": 64, "BLOCK_M": 32}, num_warps=4, num_stages=3)


def _autotune_configs():
    # Small tiles under the interpreter: the tiny test shapes still span several tiles and splits.
    interpret = triton.Config({"BLOCK_CO": 16, "BLOCK_K": 16, "BLOCK_M": 16}, num_warps=4, num_stages=1)
    return _k.autotune_configs(interpret, TEST_CONFIG, gpu_tuning_configs)


# One GEMM per group g (grid axis 2), its reduction split over grid axis 1:
#
#   dW[g*COUTG + co, k] = sum_m A[co, m] * B[m, k]
#   db[g*COUTG + co]    = sum_m A[co, m]                    (the bias gradient: row sums of A)
#
#   m = (n*Ho + oh)*Wo + ow, M = N*Ho*Wo;  k over (kh, kw, c) in the forward kernel's K order
#     (C_INNER, NHWC input: k = (kh*KW + kw)*CG + c; else k = (c*KH + kh)*KW + kw)
#   A[co, m] = dy[n, g*COUTG + co, oh, ow], 0 where y[n, g*COUTG + co, oh, ow] <= 0
#     (relu's backward, fused: y is read at dy's offsets, the launcher gives them one layout)
#   B[m, k]  = x[n, g*CG + c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]  (0 outside the image)
#
# Split s sums m in [s*M_SPLIT, (s+1)*M_SPLIT) into ws[s, g*COUTG + co, k] (fp32); the
# programs of k tile 0 also write db's partial sums to dbws[s, g*COUTG + co]. The launcher
# sums the slices (fixed order: deterministic). Offsets are int32 unless INT64 (a tensor of
# 2^31 elements or more); the workspace offsets are int64.
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
        "CG",
        "M_SPLIT",
        "STRIDE_H",
        "STRIDE_W",
        "PAD_H",
        "PAD_W",
        "DIL_H",
        "DIL_W",
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
    ],
    **_CACHE_RESULTS,
)
@triton.jit
def _conv2d_relu_wgrad_kernel(
    x_ptr,
    dy_ptr,
    y_ptr,
    ws_ptr,
    dbws_ptr,
    N,
    C,
    H,
    W,
    COUT,
    HO,
    WO,
    KH,
    KW,
    CG,
    COUTG,
    M_TOTAL,
    K_TOTAL,
    M_SPLIT,
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
    syn,
    syc,
    syh,
    syw,
    HAS_BIAS: tl.constexpr,
    C_INNER: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    CHECK_H: tl.constexpr,
    CHECK_W: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid = tl.program_id(0)  # (co tile, k tile), k fastest: neighbours share dy rows in L2
    split = tl.program_id(1)
    g = tl.program_id(2)
    num_k = tl.cdiv(K_TOTAL, BLOCK_K)
    pid_co = pid // num_k
    pid_k = pid % num_k

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < COUTG
    co = g * COUTG + offs_co
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < K_TOTAL
    c, kh, kw = decode_k(offs_k, CG, KH, KW, C_INNER)
    dh = kh * DIL_H
    dw = kw * DIL_W
    x_col = (g * CG + c) * sxc + dh * sxh + dw * sxw
    y_col = co * syc

    acc = tl.zeros((BLOCK_CO, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_CO,), dtype=tl.float32)
    m_start = split * M_SPLIT
    m_end = tl.minimum(m_start + M_SPLIT, M_TOTAL)
    for m0 in range(m_start, m_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < m_end
        ow = offs_m % WO
        t = offs_m // WO
        oh = t % HO
        n = t // HO
        if INT64:
            n = n.to(tl.int64)
        a_off = y_col[:, None] + (n * syn + oh * syh + ow * syw)[None, :]
        a_ok = co_mask[:, None] & m_ok[None, :]
        a = tl.load(dy_ptr + a_off, mask=a_ok, other=0.0)
        a = tl.where(tl.load(y_ptr + a_off, mask=a_ok, other=0.0) <= 0, 0.0, a)
        if HAS_BIAS:
            db += tl.sum(a.to(tl.float32), axis=1)
        ih0 = oh * STRIDE_H - PAD_H
        iw0 = ow * STRIDE_W - PAD_W
        b_ok = m_ok[:, None] & k_mask[None, :]
        if CHECK_H:
            ih = ih0[:, None] + dh[None, :]
            b_ok = b_ok & (ih >= 0) & (ih < H)
        if CHECK_W:
            iw = iw0[:, None] + dw[None, :]
            b_ok = b_ok & (iw >= 0) & (iw < W)
        x_row = n * sxn + ih0 * sxh + iw0 * sxw
        b = tl.load(x_ptr + (x_row[:, None] + x_col[None, :]), mask=b_ok, other=0.0)
        if ALLOW_TF32:
            acc = tl.dot(a, b, acc, input_precision="tf32")
        else:
            acc = tl.dot(a, b, acc, input_precision="ieee")

    ws_row = (split * COUT + co).to(tl.int64) * K_TOTAL
    tl.store(ws_ptr + (ws_row[:, None] + offs_k[None, :]), acc, mask=co_mask[:, None] & k_mask[None, :])
    if HAS_BIAS:
        if pid_k == 0:
            tl.store(dbws_ptr + (split * COUT + co).to(tl.int64), db, mask=co_mask)


# Splits are cut at multiples of the largest BLOCK_M, so every config sees the same splits.
_M_GRANULE = max(cfg.kwargs["BLOCK_M"] for cfg in _autotune_configs())
# Enough programs for a 132-SM GPU about twice over (tiles counted at 64 x 64).
_TARGET_PROGRAMS = 264


def default_splits(m_total: int, coutg: int, k_total: int, groups: int) -> int:
    """How many slices the reduction over M is split into: enough programs to fill the
    GPU, each slice at least 8 granules of M long (fewer slices, less workspace traffic)."""
    programs = groups * triton.cdiv(coutg, 64) * triton.cdiv(k_total, 64)
    return max(1, min(triton.cdiv(_TARGET_PROGRAMS, programs), m_total // (8 * _M_GRANULE), 64))


def split_sizes(m_total: int, splits: int):
    """(M_SPLIT, splits): rows per split, a multiple of _M_GRANULE, and the number of
    splits that covers M with it (every split has rows: its workspace slice is written)."""
    m_split = max(1, triton.cdiv(triton.cdiv(m_total, splits), _M_GRANULE)) * _M_GRANULE
    return m_split, max(1, triton.cdiv(m_total, m_split))


def _workspace(shape, device) -> torch.Tensor:
    """fp32 partial sums; every element is written by the kernel (tests fill it with NaN)."""
    return torch.empty(shape, device=device, dtype=torch.float32)


def _offsets_need_int64(*tensors) -> bool:
    return any(sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) * 2 > _k._OFFSET32_LIMIT for t in tensors)


def wgrad_triton(
    grad_out,
    input,
    output,
    weight_shape,
    weight_format,
    stride,
    padding,
    dilation,
    groups,
    need_bias,
    allow_tf32=True,
    splits=None,
):
    """(grad_weight, grad_bias or None) of y = relu(conv(x, w, b)) from dy = grad_out,
    x = input and y = output. grad_weight has `weight_shape`, the input's dtype and
    `weight_format`; `splits` overrides default_splits (tests)."""
    if grad_out.stride() != output.stride():
        grad_out = torch.empty_like(output).copy_(grad_out)  # the mask is read at dy's offsets
    n, _, h, w = input.shape
    cout, cg, kh, kw = weight_shape
    ho, wo = output.shape[2], output.shape[3]
    m_total, k_total, coutg = n * ho * wo, cg * kh * kw, cout // groups
    c_inner = input.stride(1) <= input.stride(3)
    m_split, splits = split_sizes(m_total, splits or default_splits(m_total, coutg, k_total, groups))
    ws = _workspace((splits, cout, k_total), input.device)
    dbws = _workspace((splits, cout), input.device) if need_bias else ws
    if m_total and k_total and cout:
        _launch_wgrad(
            input,
            grad_out,
            output,
            ws,
            dbws,
            (n, h, w, cout, ho, wo, kh, kw, cg, coutg),
            m_total,
            k_total,
            m_split,
            splits,
            stride,
            padding,
            dilation,
            groups,
            need_bias,
            c_inner,
            allow_tf32,
        )
    grad_weight = ws.sum(0) if splits > 1 else ws[0]
    if c_inner:
        grad_weight = grad_weight.view(cout, kh, kw, cg).permute(0, 3, 1, 2)
    else:
        grad_weight = grad_weight.view(cout, cg, kh, kw)
    grad_weight = grad_weight.to(input.dtype).contiguous(memory_format=weight_format)
    grad_bias = dbws.sum(0).to(input.dtype) if need_bias else None
    return grad_weight, grad_bias


def _launch_wgrad(*arguments):
    """The kernel on wgrad_arguments(*arguments)."""
    args, constexprs, grid = wgrad_arguments(*arguments)
    _conv2d_relu_wgrad_kernel[grid](*args, **constexprs)


def wgrad_arguments(
    input,
    grad_out,
    output,
    ws,
    dbws,
    sizes,
    m_total,
    k_total,
    m_split,
    splits,
    stride,
    padding,
    dilation,
    groups,
    need_bias,
    c_inner,
    allow_tf32,
):
    """(args, constexprs, grid) of one launch (bench/codegen.py compiles them from meta
    tensors)."""
    n, h, w, cout, ho, wo, kh, kw, cg, coutg = sizes

    def grid(meta):
        return (triton.cdiv(coutg, meta["BLOCK_CO"]) * triton.cdiv(k_total, meta["BLOCK_K"]), splits, groups)

    args = (
        input,
        grad_out,
        output,
        ws,
        dbws,
        n,
        input.shape[1],
        h,
        w,
        cout,
        ho,
        wo,
        kh,
        kw,
        cg,
        coutg,
        m_total,
        k_total,
        m_split,
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        *input.stride(),
        *grad_out.stride(),
    )
    constexprs = dict(
        HAS_BIAS=need_bias,
        C_INNER=c_inner,
        ALLOW_TF32=bool(allow_tf32) or input.dtype != torch.float32,
        CHECK_H=padding[0] > 0,
        CHECK_W=padding[1] > 0,
        INT64=_offsets_need_int64(input, grad_out),
    )
    return args, constexprs, grid


def wgrad_takes(input, output, weight_shape, groups) -> bool:
    """Whether the kernel's grid and index ranges hold this layer: groups and splits are
    grid axes (<= 65535), the per-k column offsets of one image are int32."""
    cg = weight_shape[1]
    column = (
        (input.shape[1] - 1) * abs(input.stride(1))
        + (input.shape[2] - 1) * abs(input.stride(2))
        + (input.shape[3] - 1) * abs(input.stride(3))
    )
    m_total = output.shape[0] * output.shape[2] * output.shape[3]
    return (
        groups <= 65535
        and cg >= 1
        and 2 * column < _k._INT32_MAX
        and m_total < _k._INT32_MAX - _M_GRANULE
        and output.shape[1] * cg * weight_shape[2] * weight_shape[3] < _k._INT32_MAX
    )
