"""Benchmark cases: fused conv2d + bias + ReLU on AlexNet's five conv layers.

One Case per layer x dtype x layout x direction ("fwd", "fwd+bwd"), batch cfg.batch.
Implementations: "ours" (alexnet_cuda's conv2d_relu: per shape and direction the Triton
kernels (forward, dgrad, wgrad) or cuDNN, whichever was faster at the first call:
``annotate`` records the choices), "eager" (F.relu(F.conv2d(...)) with
cudnn.benchmark on) and, with cfg.compile, "compile" (torch.compile of the eager fn).
fp32 runs with whatever cuDNN's TF32 setting is (conv_allows_tf32, recorded in extra;
PyTorch's default is on, and both ours and cuDNN follow it).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from common import DTYPES, LAYOUTS, Case, Config, case_grid

from alexnet_cuda import config
from alexnet_cuda.ops.conv2d_relu import space_to_depth as _s2d
from alexnet_cuda.ops.conv2d_relu import conv2d_relu, conv_allows_tf32

# name, Cin, H (= W), Cout, kernel, stride, padding, groups: the paper's five conv layers
# (section 3.5 and figure 2; H = 227 for conv1, as the 11x11/4 arithmetic requires)
LAYERS = [
    ("conv1", 3, 227, 96, 11, 4, 0, 1),
    ("conv2", 96, 27, 256, 5, 1, 2, 2),
    ("conv3", 256, 13, 384, 3, 1, 1, 1),
    ("conv4", 384, 13, 384, 3, 1, 1, 2),
    ("conv5", 384, 13, 256, 3, 1, 1, 2),
]

# Largest accepted ||ours - eager|| / ||eager|| per dtype (both sides round differently).
_TOL = {"fp32": 5e-3, "fp16": 5e-3, "bf16": 2e-2}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _out_size(h, k, stride, padding):
    return (h + 2 * padding - k) // stride + 1


def _case(cfg: Config, item, dtype_name: str, layout_name: str, direction: str) -> Case:
    layer, direct = item
    name, cin, h, cout, k, stride, padding, groups = layer
    n, device = cfg.batch, cfg.device
    dtype, layout = DTYPES[dtype_name], LAYOUTS[layout_name]
    ho = _out_size(h, k, stride, padding)
    backward = direction == "fwd+bwd"

    def make_inputs():
        x = torch.randn(n, cin, h, h, device=device, dtype=dtype).contiguous(memory_format=layout)
        w = torch.randn(cout, cin // groups, k, k, device=device, dtype=dtype)
        w = (w / (cin // groups * k * k) ** 0.5).contiguous(memory_format=layout)
        b = torch.randn(cout, device=device, dtype=dtype) * 0.1
        if not backward:
            return (x, w, b)
        grad = torch.randn(n, cout, ho, ho, device=device, dtype=dtype)
        grad = grad.contiguous(memory_format=layout)
        return (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), grad)

    def eager_fwd(x, w, b):
        return F.relu(F.conv2d(x, w, b, stride, padding, 1, groups))

    def ours_fwd(x, w, b):
        return conv2d_relu(x, w, b, stride, padding, 1, groups)

    def without_s2d(fn):
        def wrapped(*inputs):  # the direct kernel and cuDNN's own weight gradient, for comparison
            enabled, config.conv_space_to_depth = config.conv_space_to_depth, False
            try:
                return fn(*inputs)
            finally:
                config.conv_space_to_depth = enabled

        return wrapped

    def run(fwd):
        def fn(*inputs):
            torch.backends.cudnn.benchmark = True  # eager's reference; also ours' backward
            if not backward:
                with torch.no_grad():
                    return fwd(*inputs)
            x, w, b, grad = inputs
            out = fwd(x, w, b)
            return (out, *torch.autograd.grad(out, (x, w, b), grad))

        return fn

    impls = {"ours": without_s2d(run(ours_fwd)) if direct else run(ours_fwd), "eager": run(eager_fwd)}
    if cfg.compile:
        impls["compile"] = run(torch.compile(eager_fwd))

    tol = _TOL[dtype_name]

    def check(ours_out, ref_out):
        ours_t = ours_out if isinstance(ours_out, tuple) else (ours_out,)
        ref_t = ref_out if isinstance(ref_out, tuple) else (ref_out,)
        for label, a, b in zip(("out", "grad_input", "grad_weight", "grad_bias"), ours_t, ref_t):
            if a.shape != b.shape:
                raise AssertionError(f"{name} {label}: shape {tuple(a.shape)} != {tuple(b.shape)}")
            err = _rel_err(a, b)
            if not err < tol:  # also catches NaN
                raise AssertionError(
                    f"{name} {dtype_name} {layout_name} {label}: relative error {err:.2e} >= {tol:.0e}"
                )

    ours_uses_s2d = device == "cuda" and bool(_s2d.factor(cin // groups, k, k, [stride] * 2, [1, 1], groups, ho))
    el = torch.empty((), dtype=dtype).element_size()
    x_n, w_n, y_n = n * cin * h * h, cout * (cin // groups) * k * k, n * cout * ho * ho
    fwd_flops = 2 * n * ho * ho * cout * (cin // groups) * k * k
    fwd_bytes = (x_n + w_n + cout + y_n) * el  # read x, w, b; write y
    # backward: read grad_out, y (ReLU mask), x, w; write grad_x, grad_w, grad_b
    bwd_bytes = (y_n + y_n + x_n + w_n + x_n + w_n + cout) * el
    return Case(
        group="conv2d_relu",
        name=(
            f"{name} {cin}->{cout} {k}x{k}/{stride} g{groups} ({n},{cin},{h},{h})"
            + (" direct (no space-to-depth)" if direct else "")
        ),
        dtype=dtype_name,
        layout=layout_name,
        direction=direction,
        make_inputs=make_inputs,
        impls=impls,
        check=check,
        bytes=fwd_bytes + (bwd_bytes if backward else 0),
        flops=fwd_flops * (3 if backward else 1),
        extra={
            "layer": name,
            "space_to_depth": ours_uses_s2d and not direct,
            "tf32": conv_allows_tf32() if dtype_name == "fp32" else None,
        },
    )


def annotate(cfg: Config, rows) -> List[str]:
    """The per-shape choices (Triton or cuDNN, for forward, dgrad and wgrad) made while
    the rows ran: in each row (``choices``, by layer and dtype; "forward" only in fwd
    rows) and as notes, with the timings they were made on (also logged at debug level)."""
    from alexnet_cuda.ops.conv2d_relu import select

    chosen = select.choices()
    for row in rows:
        layer = next((layer for layer in LAYERS if layer[0] == row.get("layer")), None)
        if layer is None:
            continue
        _, cin, _, cout, k, _, _, groups = layer
        weight = str((cout, cin // groups, k, k))
        dtype = str(DTYPES[row["dtype"]])
        directions = ("forward",) if row.get("direction") == "fwd" else ("forward", "dgrad", "wgrad")
        row["choices"] = sorted(
            f"{key.split('|')[-2]}: {entry['choice']}"
            for key, entry in chosen.items()
            if weight in key and dtype in key and key.split("|")[-2] in directions
        )
    return [
        f"conv2d_relu choice {key.split('|', 3)[-1]}: {entry['choice']} (ms {entry['times']})"
        for key, entry in sorted(chosen.items())
    ]


def cases(cfg: Config) -> List[Case]:
    layers = LAYERS
    if cfg.quick:  # CUDA: conv1 (the 4x target) and the 13x13 layers
        layers = [LAYERS[0]] + LAYERS[2:] if cfg.device == "cuda" else LAYERS[4:]
    elif cfg.reduced:  # CPU: the two large layers and one grouped 13x13 one
        layers = [LAYERS[0], LAYERS[1], LAYERS[4]]
    items = [(layer, False) for layer in layers]
    if cfg.device == "cuda" and LAYERS[0] in layers:
        # conv1 runs space-to-depth by default; time the direct kernel next to it.
        items.insert(1, (LAYERS[0], True))
    return case_grid(cfg, items, _case)
