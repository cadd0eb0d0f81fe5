"""Space-to-depth: a strided convolution with few input channels rewritten as a stride-1
convolution with many (conv1 of AlexNet: 3 channels, 11x11, stride 4).

With s = the stride, input pixel (s*hs + dy, s*ws + dx) of channel c becomes pixel
(hs, ws) of channel (dy*s + dx)*C + c, and kernel tap (s*i + dy, s*j + dx) becomes tap
(i, j) of that channel (taps past KH, KW are zero). Then

    conv(x, w, stride=s, padding=p)[n, co, oh, ow]
      = sum_{c, kh, kw} w[co, c, kh, kw] * xpad[n, c, s*oh + kh, s*ow + kw]
      = sum_{i, j, dy, dx, c} ws[co, (dy*s + dx)*C + c, i, j] * xs[n, (dy*s + dx)*C + c, oh + i, ow + j]

a stride-1, unpadded convolution with Cs = s*s*C channels and a ceil(KH/s) x ceil(KW/s)
kernel. For conv1 that is 48 channels and a 3x3 kernel (K = 432 instead of 363: 19%
zeros), and 48 channels are what the conv kernel's NHWC "tap" path wants (contiguous
16-channel K blocks, 16-byte async copies) instead of decoding (kh, kw, c) for every k
and gathering 2-byte elements. The cost is one pass over the input (read x once, write
xs once; this file's kernel), plus a tiny weight transform.

Backward uses the same identity for the weight gradient (weight_grad): cuDNN's weight
gradient of the rewritten convolution, mapped back by weight_from_depth (the padded taps'
gradients are dropped). The input gradient, when asked for, stays ATen's on the original.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import wrap_triton

from ... import config

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Off switch: alexnet_cuda.config.conv_space_to_depth (conv1-like layers then run the
# direct kernel).

_BLOCK = 1024  # values of one rewritten row per program (grid axis 1: at most 65535 blocks)


def rewritten_sizes(kh: int, kw: int, ho: int, wo: int, s: int):
    """(KHs, KWs, Hs, Ws) of the rewrite: its ceil(K/s) kernel, and the rows and columns
    of rewritten input that an unpadded stride-1 convolution with it needs for (Ho, Wo)."""
    khs, kws = -(-kh // s), -(-kw // s)
    return khs, kws, ho + khs - 1, wo + kws - 1


def factor(cg: int, kh: int, kw: int, stride, dilation, groups: int, out_width: int) -> int:
    """The stride s to fold into channels, or 0 when space-to-depth does not pay.

    It needs one stride s >= 2 for both axes, no dilation and one group; s*s*C a
    multiple of 16 and at most 64 (so 16-channel K blocks tile it: the tap path), and at
    most 50% of the new K in zero taps (ceil(KH/s)*s vs KH). `out_width` (Wo) bounds
    the rewritten rows, whose blocks are grid axis 1."""
    s = stride[0]
    if not config.conv_space_to_depth or groups != 1 or list(dilation) != [1, 1] or s < 2 or stride[1] != s:
        return 0
    cs = s * s * cg
    if cs % 16 != 0 or cs > 64:
        return 0
    khs, kws, _, ws = rewritten_sizes(kh, kw, 0, out_width, s)
    if khs * kws * s * s * 2 > kh * kw * 3:
        return 0
    if triton.cdiv(ws * cs, _BLOCK) > 65535:
        return 0
    return s


# y[n, hs, ws, (dy*S + dx)*C + c] = x[n, c, S*hs + dy - PAD_H, S*ws + dx - PAD_W], 0 outside.
# One program per (n, hs) output row and BLOCK of its WS*S*S*C values (contiguous in y);
# S and C are constexprs, so the column decode is multiplications and shifts. For NHWC
# x, each (dy) slice of a row reads contiguous input.
@triton.jit
def _space_to_depth_kernel(
    x_ptr,
    y_ptr,
    HS,
    WS,
    H,
    W,
    PAD_H,
    PAD_W,
    sxn,
    sxc,
    sxh,
    sxw,
    S: tl.constexpr,
    C: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)  # n * HS + hs
    n = row // HS
    hs = row - n * HS
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    CS: tl.constexpr = S * S * C
    mask = cols < WS * CS
    ws = cols // CS
    j = cols - ws * CS
    d = j // C
    c = j - d * C
    dy = d // S
    dx = d - dy * S
    h = hs * S + dy - PAD_H
    w = ws * S + dx - PAD_W
    inside = mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    src = x_ptr + n.to(tl.int64) * sxn + (c.to(tl.int64) * sxc + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw)
    v = tl.load(src, mask=inside, other=0.0)
    tl.store(y_ptr + row.to(tl.int64) * (WS * CS) + cols, v, mask=mask)


def input_to_depth(x: torch.Tensor, s: int, padding, hs: int, ws: int) -> torch.Tensor:
    """x (N, C, H, W), any strides -> (N, s*s*C, hs, ws), channels_last (dense NHWC),
    with the zero padding (top/left `padding`, bottom/right whatever hs*s, ws*s need)
    folded in. Meta tensors get the output without a launch (bench/codegen.py)."""
    n, c, h, w = x.shape
    y = torch.empty((n, hs, ws, s * s * c), device=x.device, dtype=x.dtype)
    if y.numel() and x.device.type != "meta":
        block = _BLOCK
        grid = (n * hs, triton.cdiv(ws * s * s * c, block))
        launch = _space_to_depth_kernel if _INTERPRET else wrap_triton(_space_to_depth_kernel)
        launch[grid](
            x,
            y,
            hs,
            ws,
            h,
            w,
            padding[0],
            padding[1],
            x.stride(0),
            x.stride(1),
            x.stride(2),
            x.stride(3),
            S=s,
            C=c,
            BLOCK=block,
        )
    return y.permute(0, 3, 1, 2)


def weight_to_depth(weight: torch.Tensor, s: int) -> torch.Tensor:
    """weight (Cout, C, KH, KW) -> (Cout, s*s*C, ceil(KH/s), ceil(KW/s)), channels_last,
    channel (dy*s + dx)*C + c of tap (i, j) = weight[:, c, s*i + dy, s*j + dx] (0 past KH, KW)."""
    cout, c, kh, kw = weight.shape
    khs, kws, _, _ = rewritten_sizes(kh, kw, 0, 0, s)
    padded = F.pad(weight, (0, kws * s - kw, 0, khs * s - kh))
    taps = padded.reshape(cout, c, khs, s, kws, s).permute(0, 2, 4, 3, 5, 1)  # co, i, j, dy, dx, c
    return taps.reshape(cout, khs, kws, s * s * c).permute(0, 3, 1, 2)


def weight_from_depth(grad_ws: torch.Tensor, s: int, kh: int, kw: int) -> torch.Tensor:
    """The inverse of weight_to_depth, taps past (KH, KW) dropped: maps the rewritten
    convolution's weight gradient back to the original weight's."""
    cout, cs, khs, kws = grad_ws.shape
    c = cs // (s * s)
    taps = grad_ws.permute(0, 2, 3, 1).reshape(cout, khs, kws, s, s, c)  # co, i, j, dy, dx, c
    full = taps.permute(0, 5, 1, 3, 2, 4).reshape(cout, c, khs * s, kws * s)  # co, c, (i, dy), (j, dx)
    return full[:, :, :kh, :kw]


def weight_grad(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, s: int, padding, need_bias: bool):
    """(grad_weight, grad_bias or None) of relu-masked `grad` for a convolution factor()
    accepts, computed as the rewritten stride-1 convolution's (ATen's/cuDNN's
    convolution_backward on 48 channels and a 3x3 kernel for conv1, instead of 3 channels,
    11x11, stride 4). The rewritten input is recomputed (one pass), not saved."""
    cout, _, kh, kw = weight.shape
    _, _, hs, ws = rewritten_sizes(kh, kw, grad.shape[2], grad.shape[3], s)
    xs = input_to_depth(input, s, padding, hs, ws)
    ws = weight_to_depth(weight, s)
    _, grad_ws, grad_bias = torch.ops.aten.convolution_backward(
        grad, xs, ws, [cout] if need_bias else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, need_bias]
    )
    return weight_from_depth(grad_ws, s, kh, kw), grad_bias
