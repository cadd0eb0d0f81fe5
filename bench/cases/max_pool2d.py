"""Benchmark cases: AlexNet's overlapping max-pool (3x3 windows, stride 2).

One Case per shape x dtype x layout x direction ("fwd", "fwd+bwd"), batch cfg.batch:
(N, 96, 55, 55) after conv1 and, unless cfg.quick, (N, 256, 27, 27) after conv2 and
(N, 256, 13, 13) after conv5. Implementations: "ours" (alexnet_cuda's max_pool2d),
"eager" (nn.MaxPool2d) and, with cfg.compile, "compile" (torch.compile of eager).

`extra_rows(cfg)` reports what autograd keeps for backward after one forward:
ours a uint8 window-local argmax; stock PyTorch the input and int64 indices.
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

from alexnet_cuda.ops.max_pool2d import max_pool2d

KERNEL, STRIDE = 3, 2
SHAPES_CHW = [(96, 55, 55), (256, 27, 27), (256, 13, 13)]  # inputs of AlexNet's three pools


def _ours(x):
    return max_pool2d(x, KERNEL, STRIDE)


def _exact_check(dtype_name: str, device: str):
    """Outputs must be bit-identical. Gradients too, except fp16/bf16 on CPU: there
    PyTorch sums in fp16/bf16 (rounding each addition) while ours sums in fp32 like
    PyTorch's CUDA kernel, so they may differ by a rounding step."""
    grads_exact = device == "cuda" or dtype_name == "fp32"

    def check(ours, ref):
        ours_t = ours if isinstance(ours, tuple) else (ours,)
        ref_t = ref if isinstance(ref, tuple) else (ref,)
        for label, a, b in zip(("out", "grad_input"), ours_t, ref_t):
            if a.shape != b.shape or a.stride() != b.stride():
                raise AssertionError(
                    f"max_pool2d {label}: shape/strides {tuple(a.shape)}{a.stride()} != {tuple(b.shape)}{b.stride()}"
                )
            if label == "out" or grads_exact:
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
            else:
                torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)

    return check


def _case(cfg: Config, shape, dtype_name: str, layout_name: str, direction: str) -> Case:
    n, c, h, w = shape
    device, dtype, fmt = cfg.device, DTYPES[dtype_name], LAYOUTS[layout_name]
    ho, wo = pooled_size(h, KERNEL, STRIDE), pooled_size(w, KERNEL, STRIDE)
    backward = direction == "fwd+bwd"
    eager = nn.MaxPool2d(KERNEL, STRIDE)

    def make_inputs():
        x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
        if not backward:
            return (x,)
        g = torch.randn(n, c, ho, wo, device=device, dtype=dtype).contiguous(memory_format=fmt)
        return (x.requires_grad_(), g)

    def run(fwd):
        return forward_or_backward(fwd, backward)

    impls = {"ours": run(_ours), "eager": run(eager)}
    if cfg.compile:  # one compiled graph per case: static shapes, no recompiles
        impls["compile"] = run(torch.compile(eager, dynamic=False))

    el = torch.empty((), dtype=dtype).element_size()
    x_n, y_n = n * c * h * w, n * c * ho * wo
    fwd_bytes = (x_n + y_n) * el  # read x, write y
    # With a 1-byte argmax: forward also writes it; backward reads grad_y and the
    # argmax and writes grad_x.
    fwd_bwd_bytes = fwd_bytes + y_n + (y_n * el + y_n + x_n * el)
    return Case(
        group="max_pool2d",
        name=f"max_pool2d {KERNEL}/{STRIDE} {tuple(shape)}",
        dtype=dtype_name,
        layout=layout_name,
        direction=direction,
        make_inputs=make_inputs,
        impls=impls,
        check=_exact_check(dtype_name, device),
        bytes=fwd_bwd_bytes if backward else fwd_bytes,
        extra={"kernel": KERNEL, "stride": STRIDE},
    )


def cases(cfg: Config) -> List[Case]:
    return case_grid(cfg, batched_shapes(cfg, SHAPES_CHW), _case)


def extra_rows(cfg: Config) -> List[str]:
    """Bytes autograd keeps alive after one forward (saved_tensor_bytes: distinct
    storages, the input included): ours keeps only the uint8 argmax (1 byte per output);
    stock max_pool2d keeps its input and int64 indices (8 bytes per output)."""
    notes = []
    for shape in batched_shapes(cfg, SHAPES_CHW):
        for dtype_name in cfg.dtypes:
            x = torch.randn(shape, device=cfg.device, dtype=DTYPES[dtype_name]).requires_grad_()
            ours = saved_tensor_bytes(_ours, x)
            stock = saved_tensor_bytes(nn.MaxPool2d(KERNEL, STRIDE), x)
            ho, wo = pooled_size(shape[2], KERNEL, STRIDE), pooled_size(shape[3], KERNEL, STRIDE)
            n_out = shape[0] * shape[1] * ho * wo
            notes.append(
                f"max_pool2d {KERNEL}/{STRIDE} {tuple(shape)} {dtype_name}: saved for backward after one "
                f"forward: ours {ours / 2**20:.1f} MiB (1 B/output argmax), stock "
                f"{stock / 2**20:.1f} MiB (input + {8 * n_out / 2**20:.1f} MiB of int64 indices); "
                f"indices {8 * n_out / max(ours, 1):.1f}x smaller"
            )
            del x
    return notes
