"""Shared benchmark machinery: cases, timing, ceilings, correctness gate.

A benchmark *case* is one op at one shape/dtype/layout, timed for several
implementations ("ours", "eager", "compile") in one direction ("fwd" or "fwd+bwd").
Each file in bench/cases/ exposes ``cases(cfg) -> list[Case]``.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch


@dataclasses.dataclass
class Config:
    device: str            # "cuda" or "cpu"
    batch: int             # batch size used for the op cases
    dtypes: List[str]      # subset of ["fp32", "bf16", "fp16"]
    layouts: List[str]     # subset of ["nchw", "nhwc"]
    quick: bool            # fewer repetitions, fewer shapes
    compile: bool          # also time torch.compile versions


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


@dataclasses.dataclass
class Case:
    group: str                                   # "lrn", "maxpool", "stage", "conv", "model"
    name: str                                    # human label, e.g. "LRN (128,96,55,55)"
    dtype: str
    layout: str
    direction: str                               # "fwd" or "fwd+bwd"
    # make_inputs() -> tuple of tensors (fresh random data, never zeros); called a few
    # times to rotate buffers so repeated runs do not measure the cache.
    make_inputs: Callable[[], tuple]
    # implementation name -> fn(*inputs) running the work once (for "fwd+bwd": forward
    # and backward). "ours" is required; "eager" (stock PyTorch) is the reference.
    impls: Dict[str, Callable]
    # compare(ours_out, ref_out) raises if wrong; the outputs are what impls return.
    check: Optional[Callable] = None
    # reference(*inputs) -> what "ours" should return, when stock eager cannot serve
    # (e.g. PyTorch's CPU LRN has no bf16 kernel); defaults to impls["eager"].
    reference: Optional[Callable] = None
    bytes: int = 0                               # fewest bytes the case must move
    flops: int = 0                               # useful floating-point operations
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)


def batched_shapes(cfg: Config, shapes_chw) -> List[tuple]:
    """(batch, C, H, W) for each (C, H, W); only the first with --quick."""
    return [(cfg.batch, *chw) for chw in (shapes_chw[:1] if cfg.quick else shapes_chw)]


def pooled_size(size: int, kernel: int, stride: int) -> int:
    """Output size of an unpadded, floor-mode pooling window."""
    return (size - kernel) // stride + 1


def forward_or_backward(fwd: Callable, backward: bool) -> Callable:
    """The timed step of a case: fwd(x) under no_grad, or, for "fwd+bwd" cases whose
    inputs are (x, grad_out), fwd(x) and its gradient w.r.t. x; returns (out, grad_x)."""

    def step(*inputs):
        if not backward:
            with torch.no_grad():
                return fwd(*inputs)
        x, g = inputs
        out = fwd(x)
        (gx,) = torch.autograd.grad(out, x, g)
        return out, gx

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable, inputs_list: List[tuple], device: str, quick: bool) -> float:
    """Median milliseconds of fn(*inputs), rotating inputs, after warm-up.

    CUDA: CUDA events around each call with the L2 flushed in between
    (triton.testing.do_bench does exactly this, and we use it when present).
    CPU: perf_counter around each call.
    """
    state = {"i": 0}

    def step():
        args = inputs_list[state["i"] % len(inputs_list)]
        state["i"] += 1
        return fn(*args)

    if device == "cuda":
        import triton.testing

        return float(
            triton.testing.do_bench(step, warmup=10 if quick else 25, rep=40 if quick else 200,
                                    return_mode="median")
        )
    for _ in range(1 if quick else 2):
        step()
    times = []
    reps = 3 if quick else 7
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_copy_bandwidth(device: str) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
    n = (1 << 28) if device == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of fp32
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = time_fn(lambda: dst.copy_(src), [()], device, quick=False)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def measure_matmul_rate(device: str, dtype: torch.dtype, tf32: bool = False) -> float:
    """Dense matmul rate in TFLOP/s for 8192^2 (cuda) / 1024^2 (cpu) products."""
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        ms = time_fn(lambda: a @ b, [()], device, quick=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n**3 / (ms * 1e-3) / 1e12


def saved_tensor_bytes(fn: Callable, *args) -> int:
    """Bytes of distinct tensors autograd saves while running fn(*args) (forward only).

    Tensors sharing storage are counted once; parameters and the inputs themselves are
    counted too (they are what backward keeps alive), which is what peak memory sees.
    """
    seen = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except Exception:  # fake/meta tensors
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    del out
    return sum(seen.values())
