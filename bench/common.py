"""Shared benchmark machinery: cases, timing, ceilings, correctness gate.

A benchmark *case* is one op at one shape/dtype/layout, timed for several
implementations ("ours", "eager", "compile") in one direction ("fwd" or "fwd+bwd").
Each file in bench/cases/ exposes ``cases(cfg) -> list[Case]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch


@dataclasses.dataclass
class Config:
    device: str  # "cuda" or "cpu"
    batch: int  # batch size used for the op cases
    dtypes: List[str]  # subset of ["fp32", "bf16", "fp16"]
    layouts: List[str]  # subset of ["nchw", "nhwc"]
    quick: bool  # fewer repetitions, fewer shapes
    compile: bool  # also time torch.compile versions
    # CPU runs are reduced (fewer layers, model cases and repetitions; see bench/run.py)
    # so that a 2-core machine finishes in minutes; CUDA runs never are.
    reduced: bool = False
    # The model group's torch.compile rows in mode "max-autotune" (bench/run.py --max-autotune).
    max_autotune: bool = False


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


@dataclasses.dataclass
class Case:
    group: str  # the op's name ("lrn", "max_pool2d", ...) or "model"
    name: str  # human label, e.g. "LRN (128,96,55,55)"
    dtype: str
    layout: str
    direction: str  # "fwd" or "fwd+bwd"
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
    # gate(*inputs) replaces the ours-vs-reference comparison when what impls return cannot
    # show a wrong result (a training step returns only its loss): it runs ours and its own
    # reference, raises if ours is wrong, and may return a dict of facts for the row.
    gate: Optional[Callable] = None
    # fp32 cases on CUDA: run (gate and timings) with both TF32 switches (cuDNN, CUDA matmul)
    # set to this, restored after, and recorded as the row's "tf32"; None leaves them as set.
    tf32: Optional[bool] = None
    bytes: int = 0  # fewest bytes the case must move
    flops: int = 0  # useful floating-point operations
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)


def batched_shapes(cfg: Config, shapes_chw) -> List[tuple]:
    """(batch, C, H, W) for each (C, H, W); only the first with --quick."""
    return [(cfg.batch, *chw) for chw in (shapes_chw[:1] if cfg.quick else shapes_chw)]


def case_grid(cfg: Config, items, make_case: Callable) -> List[Case]:
    """make_case(cfg, item, dtype, layout, direction) for every item (a shape, a layer)
    x cfg.dtypes x cfg.layouts x ("fwd", "fwd+bwd"), in that nesting order."""
    return [
        make_case(cfg, item, dtype_name, layout_name, direction)
        for item in items
        for dtype_name in cfg.dtypes
        for layout_name in cfg.layouts
        for direction in ("fwd", "fwd+bwd")
    ]


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


def time_stats(
    fn: Callable, inputs_list: List[tuple], device: str, quick: bool, warmup: bool = True
) -> Dict[str, float]:
    """Median milliseconds of fn(*inputs), rotating inputs, with the spread of the runs.

    Returns {"ms": median, "q1_ms": 25th percentile, "q3_ms": 75th percentile, "n": runs}.

    CUDA: triton.testing.do_bench's per-run CUDA-event timings (the L2 is flushed before
    every run; its own warm-up of 10 / 25 ms, then 40 / 200 ms of runs with --quick /
    without); the median is statistics.median of those timings, exactly what do_bench's
    return_mode="median" computes, and the quartiles come from the same list at no cost.

    CUDA also returns "host_ms": the host's time per call (Python, dispatch, launches) over
    3 calls not waiting for the GPU; when it reaches "ms" the case is host-bound.

    CPU: perf_counter around each call. ``warmup`` adds one untimed call (callers that
    already ran fn once, e.g. in the correctness gate, pass False). Then at least two
    timed runs and more until a time budget is spent (0.2 s with --quick, 0.5 s without;
    at most 10 / 20 runs): a 1 ms op gets the maximum, a 1 s training step two.
    """
    state = {"i": 0}

    def step():
        args = inputs_list[state["i"] % len(inputs_list)]
        state["i"] += 1
        return fn(*args)

    if device == "cuda":
        import triton.testing

        times = triton.testing.do_bench(step, warmup=10 if quick else 25, rep=40 if quick else 200, return_mode="all")
        # A row whose host time reaches its GPU time is bound by the host, not its kernels.
        return {**summarize(times), "host_ms": host_ms_per_call(step, device)}
    else:
        if warmup:
            step()
        budget_s, max_runs = (0.2, 10) if quick else (0.5, 20)
        times = []
        start = time.perf_counter()
        while len(times) < max_runs and (len(times) < 2 or time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times)


def host_ms_per_call(fn: Callable[[], object], device: str, calls: int = 3) -> float:
    """The host's milliseconds per call of fn() over ``calls`` calls back to back.

    On CUDA the calls are launched without waiting for the GPU (synchronized only before and
    after), so this is Python + dispatch + launch time, not kernel time. The default of 3
    calls keeps even a training step's few hundred kernels within CUDA's launch queue
    (~1024 entries): a fuller queue would make the host wait for the GPU. On the CPU the
    ops run on the host, so this is simply their time per call.
    """
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    ms = (time.perf_counter() - t0) * 1e3 / calls
    sync(device)
    return ms


def summarize(times: List[float]) -> Dict[str, float]:
    """{"ms": median, "q1_ms", "q3_ms" (quartiles, inclusive method), "n"} of timings in ms."""
    times = [float(t) for t in times]
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return {"ms": statistics.median(times), "q1_ms": q1, "q3_ms": q3, "n": len(times)}


def time_fn(fn: Callable, inputs_list: List[tuple], device: str, quick: bool) -> float:
    """Median milliseconds of fn(*inputs) (see time_stats)."""
    return time_stats(fn, inputs_list, device, quick)["ms"]


@contextlib.contextmanager
def tf32(enabled: bool):
    """Both TF32 switches (cuDNN convolutions, CUDA matmuls) set to ``enabled``, restored
    after. They only matter for fp32 on CUDA."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def measure_copy_bandwidth(device: str, quick: bool = False) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written.
    (``quick`` shortens only the CPU measurement; bench/run.py never passes it on CUDA.)"""
    n = (1 << 28) if device == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of fp32
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = time_fn(lambda: dst.copy_(src), [()], device, quick=quick)
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


def describe_error(exc: BaseException) -> str:
    """'Type: first line of the message' (at most 200 characters) for a row's error."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
