"""Benchmark cases: AlexNet's fused ReLU -> LRN -> max-pool 3/2 stage (lrn_groups=2).

One Case per shape x dtype x layout x direction ("fwd", "fwd+bwd"), batch cfg.batch:
(N, 96, 55, 55) after conv1 and, unless cfg.quick, (N, 256, 27, 27) after conv2.
Implementations: "ours" (alexnet_cuda's relu_lrn_max_pool2d), "eager" (stock
relu -> per-group nn.LocalResponseNorm -> nn.MaxPool2d) and, with cfg.compile,
"compile" (torch.compile of eager, dynamic=False).

`extra_rows(cfg)` reports what autograd keeps for backward after one forward.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from common import (
    DTYPES,
    LAYOUTS,
    Case,
    Config,
    batched_shapes,
    case_grid,
    forward_or_backward,
    pooled_size,
    saved_tensor_bytes,
)

from alexnet_cuda.ops.relu_lrn_max_pool2d import relu_lrn_max_pool2d

PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # the paper's LRN (PyTorch's alpha convention)
KERNEL, STRIDE, GROUPS = 3, 2, 2
SHAPES_CHW = [(96, 55, 55), (256, 27, 27)]  # after conv1, after conv2


class _Eager(nn.Module):
    """The stock composition: ReLU -> LocalResponseNorm per channel group -> MaxPool2d."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.lrn = nn.LocalResponseNorm(**PAPER)
        self.pool = nn.MaxPool2d(KERNEL, STRIDE)

    def forward(self, x):
        x = self.relu(x)
        x = torch.cat([self.lrn(p) for p in x.chunk(GROUPS, dim=1)], dim=1)
        return self.pool(x)


def _ours(x):
    return relu_lrn_max_pool2d(x, **PAPER, kernel_size=KERNEL, stride=STRIDE, lrn_groups=GROUPS)


def _upcast(fn):
    """fn on fp32 copies (PyTorch's CPU LRN has no bf16/fp16 kernel), cast back."""

    def run(*args):
        dtype = args[0].dtype
        args = [a.detach().float().requires_grad_(a.requires_grad) for a in args]
        res = fn(*args)
        return tuple(r.to(dtype) for r in res) if isinstance(res, tuple) else res.to(dtype)

    return run


def _near_tie_windows(x, rel: float) -> int:
    """Pooling windows of the stage whose two largest LRN values (computed in float64 from
    x) are distinct, nonzero and within `rel` of each other. In such a window two correct
    fp32 computations (ours, stock) can round to different argmaxes, which moves that
    window's gradient to another pixel: an honest difference, not a bug."""
    z = x.detach().double().relu()
    y = torch.cat([nn.functional.local_response_norm(p, **PAPER) for p in z.chunk(GROUPS, dim=1)], dim=1)
    n, c, h, w = y.shape
    count = 0
    for plane in y.reshape(n * c, 1, h, w).split(4096):  # bounded memory
        win = nn.functional.unfold(plane, KERNEL, stride=STRIDE)  # (planes, K*K, windows)
        top2 = win.topk(2, dim=1).values
        gap = top2[:, 0] - top2[:, 1]
        count += int(((gap > 0) & (gap <= rel * top2[:, 0].abs())).sum())
    return count


def _close(dtype_name: str, last_input: dict):
    tol = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 4e-3}[dtype_name]

    def check(ours, ref):
        ours_t = ours if isinstance(ours, tuple) else (ours,)
        ref_t = ref if isinstance(ref, tuple) else (ref,)
        for label, a, b in zip(("out", "grad_input"), ours_t, ref_t):
            if a.shape != b.shape:
                raise AssertionError(f"relu_lrn_max_pool2d {label}: shape {tuple(a.shape)} != {tuple(b.shape)}")
            if label == "out":
                torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)
                continue
            bad = int(((a.float() - b.float()).abs() > tol + tol * b.float().abs()).sum())
            if bad == 0:
                continue
            if dtype_name != "fp32":
                # bf16/fp16 inputs have many equal values and coarse rounding: near-tied
                # windows are common. Allow such windows (<= 1e-4 of the elements).
                if bad > max(4, 1e-4 * a.numel()):
                    raise AssertionError(f"relu_lrn_max_pool2d {label}: {bad} of {a.numel()} elements differ")
                continue
            # fp32: every differing element must be explained by a near-tied window (a
            # flipped argmax changes at most two pixels' gradients per window, and a
            # pixel is in at most four 3/2 windows).
            ties = _near_tie_windows(last_input["x"], rel=1e-6)
            if bad > 4 * ties:
                raise AssertionError(
                    f"relu_lrn_max_pool2d {label}: {bad} of {a.numel()} elements differ; only {ties} "
                    f"windows are near-tied (relative gap <= 1e-6 in float64)"
                )

    return check


def _case(cfg: Config, shape, dtype_name: str, layout_name: str, direction: str) -> Case:
    n, c, h, w = shape
    device, dtype, fmt = cfg.device, DTYPES[dtype_name], LAYOUTS[layout_name]
    ho, wo = pooled_size(h, KERNEL, STRIDE), pooled_size(w, KERNEL, STRIDE)
    backward = direction == "fwd+bwd"
    eager = _Eager()

    def make_inputs():
        x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
        if not backward:
            return (x,)
        g = torch.randn(n, c, ho, wo, device=device, dtype=dtype).contiguous(memory_format=fmt)
        return (x.requires_grad_(), g)

    impls = {"ours": forward_or_backward(_ours, backward), "eager": forward_or_backward(eager, backward)}
    if cfg.compile:  # one compiled graph per case: static shapes, no recompiles
        impls["compile"] = forward_or_backward(torch.compile(eager, dynamic=False), backward)
    last_input = {}  # the gate's input, for _close's near-tie analysis

    def gate_reference(*inputs):
        last_input["x"] = inputs[0]
        ref = forward_or_backward(eager, backward)
        return (_upcast(ref) if dtype != torch.float32 else ref)(*inputs)

    el = torch.empty((), dtype=dtype).element_size()
    x_n, y_n = n * c * h * w, n * c * ho * wo
    fwd_bytes = (x_n + y_n) * el + y_n  # read x; write y and the uint8 argmax
    # backward: read x, the argmax and dy; write dx
    fwd_bwd_bytes = fwd_bytes + x_n * el + y_n + y_n * el + x_n * el
    return Case(
        group="relu_lrn_max_pool2d",
        name=f"relu+LRN+pool g{GROUPS} {tuple(shape)}",
        dtype=dtype_name,
        layout=layout_name,
        direction=direction,
        make_inputs=make_inputs,
        impls=impls,
        check=_close(dtype_name, last_input),
        reference=gate_reference,
        bytes=fwd_bwd_bytes if backward else fwd_bytes,
        extra={"lrn": PAPER, "lrn_groups": GROUPS, "kernel": KERNEL, "stride": STRIDE},
    )


def cases(cfg: Config) -> List[Case]:
    return case_grid(cfg, batched_shapes(cfg, SHAPES_CHW), _case)


def extra_rows(cfg: Config) -> List[str]:
    """Saved-activation bytes after one forward (saved_tensor_bytes: distinct storages,
    the input included): ours keeps the input and a uint8 argmax; stock eager keeps the
    ReLU output, the LRN's intermediates and output, and int64 pooling indices."""
    notes = []
    for shape in batched_shapes(cfg, SHAPES_CHW):
        for dtype_name in cfg.dtypes:
            dtype = DTYPES[dtype_name]
            if cfg.device == "cpu" and dtype != torch.float32:
                continue  # stock CPU LRN has no bf16/fp16 kernel
            x = torch.randn(shape, device=cfg.device, dtype=dtype).requires_grad_()
            ours = saved_tensor_bytes(_ours, x)
            stock = saved_tensor_bytes(_Eager(), x)
            notes.append(
                f"relu_lrn_max_pool2d {tuple(shape)} {dtype_name} lrn_groups={GROUPS}: saved for backward after one "
                f"forward: ours {ours / 2**20:.1f} MiB (input + 1 B/output), stock eager "
                f"{stock / 2**20:.1f} MiB ({stock / max(ours, 1):.1f}x)"
            )
            del x
    return notes
