"""Host time per call: ours against the stock composition, where the host is all there is.

At a tiny shape the kernels take next to nothing, so the time per call is Python,
torch.library's dispatch and (on CUDA) the launches: what every call of an op costs a
training step on top of its kernels. Per op, forward ("fwd", no autograd) and forward +
backward ("fwd+bwd", gradients of every input):

* local_response_norm vs F.local_response_norm (size 5, the paper's constants);
* max_pool2d vs F.max_pool2d (3/2);
* relu_lrn_max_pool2d (lrn_groups=2) vs relu -> F.local_response_norm per channel group
  -> F.max_pool2d;
* conv2d_relu vs F.conv2d + relu (3x3, padding 1, with bias).

Inputs: (1, 8, 7, 7) (conv: 8 -> 8 channels), fp32, NCHW. Plus the whole training step
(make_step's eager step: forward, cross-entropy, backward, the paper's SGD update) of ours
against the same net built from stock layers: on CPU the demo's SmallAlexNet (width 16,
24x24 crops, batch 1; converted to our ops for "ours"), whose time there includes its
small kernels; on CUDA AlexNet vs AlexNet(fused=False) at the run's batch, plus ours
replayed from a CUDA graph (make_step(cuda_graph=True)), which is what a step costs the
host when nothing is launched one kernel at a time.

Measurement: torch.set_num_threads(1) for the whole group (restored after), the garbage
collector off while timing. A round is a fixed number of back-to-back calls of one
implementation timed together (common.host_ms_per_call): 20 forward, 5 forward + backward,
1 training step (3 on CUDA). The rounds go round-robin over every row's ours and stock, the
order reversed every other round, so that the machine's load (other processes on a shared
CPU slowed whole seconds of a run by up to 2x) falls on all rows alike; a row is the median
over its rounds, with their quartiles. On CUDA nothing waits for the GPU inside a round
(synchronized between rounds), so the number is host time only; 3 training steps per round
keep their kernels within CUDA's launch queue. Every row first passes a correctness gate:
ours and stock agree on the outputs and gradients (the step rows: bench/cases/model.py's
training gate, one step from the same weights).
"""

from __future__ import annotations

import copy
import gc
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from common import Config, describe_error, host_ms_per_call, summarize

import alexnet_cuda
from alexnet_cuda.models import AlexNet
from alexnet_cuda.ops import conv2d_relu, local_response_norm, max_pool2d, relu_lrn_max_pool2d
from alexnet_cuda.train.model_factory import SmallAlexNet
from alexnet_cuda.train.optim import PaperSGD
from alexnet_cuda.train.step import make_step
from cases.model import check_training_step

SHAPE = (1, 8, 7, 7)
PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
ROUNDS = (21, 101)  # rounds per timing: --quick, full
# Calls per round, the same for ours and stock (fixed, not calibrated: a row whose rounds
# were one call each read 2.6x slower than with 16, from cold caches after the other rows).
CALLS = {"fwd": 20, "fwd+bwd": 5}


def _stock_relu_lrn_max_pool2d(x):
    x = F.relu(x)
    x = torch.cat([F.local_response_norm(p, **PAPER) for p in x.chunk(2, dim=1)], dim=1)
    return F.max_pool2d(x, 3, 2)


# name -> (stock composition, ours, stock, input shapes)
OPS = {
    "local_response_norm": (
        "F.local_response_norm",
        lambda x: local_response_norm(x, **PAPER),
        lambda x: F.local_response_norm(x, **PAPER),
        [SHAPE],
    ),
    "max_pool2d": ("F.max_pool2d", lambda x: max_pool2d(x, 3, 2), lambda x: F.max_pool2d(x, 3, 2), [SHAPE]),
    "relu_lrn_max_pool2d": (
        "relu -> F.local_response_norm per group (2) -> F.max_pool2d",
        lambda x: relu_lrn_max_pool2d(x, **PAPER, kernel_size=3, stride=2, lrn_groups=2),
        _stock_relu_lrn_max_pool2d,
        [SHAPE],
    ),
    "conv2d_relu": (
        "F.conv2d + relu",
        lambda x, w, b: conv2d_relu(x, w, b, padding=1),
        lambda x, w, b: F.relu(F.conv2d(x, w, b, padding=1)),
        [SHAPE, (8, 8, 3, 3), (8,)],
    ),
}


def _op_call(fn: Callable, shapes, device: str, backward: bool) -> Callable[[], object]:
    """A no-argument call of fn on fixed random inputs: forward under no_grad, or forward
    and the gradients of every input (returning (out, grads))."""
    leaves = [torch.randn(s, device=device).requires_grad_(backward) for s in shapes]
    if not backward:

        def call():
            with torch.no_grad():
                return fn(*leaves)

        return call
    grad_out = torch.randn_like(fn(*leaves))

    def call():
        out = fn(*leaves)
        return out, torch.autograd.grad(out, leaves, grad_out)

    return call


def _check_same(ours, stock) -> None:
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


def _stub(case: str, direction: str, **facts) -> Dict:
    return {"group": "host", "case": case, "dtype": "fp32", "layout": "nchw", "direction": direction, **facts}


def _failed(row: Dict, exc: Exception) -> Dict:
    wrong = isinstance(exc, AssertionError)
    return {**row, "error": f"WRONG: {describe_error(exc)}" if wrong else describe_error(exc)}


def _op_entries(cfg: Config) -> List[Tuple[Dict, Dict[str, Callable], int]]:
    """(row, {"ours": call, "stock": call}, calls per round) per op and direction; a row
    that fails its gate (or to run) has no calls and carries its error."""
    entries = []
    for name, (stock_label, ours, stock, shapes) in OPS.items():
        for direction in ("fwd", "fwd+bwd"):
            row = _stub(f"{name} {tuple(shapes[0])}", direction, stock=stock_label)
            try:
                torch.manual_seed(0)
                calls = {"ours": _op_call(ours, shapes, cfg.device, direction == "fwd+bwd")}
                torch.manual_seed(0)  # the same inputs for stock
                calls["stock"] = _op_call(stock, shapes, cfg.device, direction == "fwd+bwd")
                _check_same(calls["ours"](), calls["stock"]())
                entries.append((row, calls, CALLS[direction]))
            except Exception as exc:  # noqa: BLE001 - the row's error, not the run's
                entries.append((_failed(row, exc), {}, 0))
    return entries


def _step_models(cfg: Config):
    """(ours, stock, case label, batch, classes, crop): stock holds ours' weights."""
    torch.manual_seed(0)
    if cfg.device == "cuda":
        ours = AlexNet().cuda()
        stock = AlexNet(fused=False).cuda()
        stock.load_state_dict(ours.state_dict())
        return ours, stock, f"AlexNet train step b{cfg.batch}", cfg.batch, 1000, 227
    stock = SmallAlexNet(10, width=16, crop=24)
    ours = alexnet_cuda.convert(copy.deepcopy(stock))
    return ours, stock, "SmallAlexNet (the demo's) train step b1", 1, 10, 24


def _step_entries(cfg: Config) -> List[Tuple[Dict, Dict[str, Callable], int]]:
    """The whole training step (make_step's eager step, the paper's SGD), ours vs the same
    net of stock layers; on CUDA also ours replayed from a CUDA graph. Each passes the model
    group's training gate (one step from the same weights) first."""
    ours, stock, label, batch, classes, crop = _step_models(cfg)
    x = torch.randn(batch, 3, crop, crop, device=cfg.device)
    y = torch.randint(0, classes, (batch,), device=cfg.device)
    # On CUDA 3 calls per round: a training step's kernels then fit in the launch queue.
    calls_per_round = 3 if cfg.device == "cuda" else 1
    entries = []
    for graphed in [False, True] if cfg.device == "cuda" else [False]:
        row = _stub(
            label + (" + CUDA graph" if graphed else ""),
            "fwd+bwd",
            images=batch,
            stock=f"the same step, {type(stock).__name__} of stock layers, eager",
        )
        try:
            row.update(
                check_training_step(
                    copy.deepcopy(ours),
                    None,
                    copy.deepcopy(stock),
                    x,
                    y,
                    cfg.device,
                    "fp32",
                    make_ours_step=lambda m, o, graphed=graphed: make_step(m, o, cuda_graph=graphed),
                    warmup=3 if graphed else 0,
                )
            )
            calls = {}
            for name, model in (("ours", ours), ("stock", stock)):
                step = make_step(model, PaperSGD(model.parameters()), cuda_graph=graphed and name == "ours")
                calls[name] = lambda step=step: step(x, y)
                for _ in range(4):  # a graphed step's warm-up and capture stay out of the timing
                    calls[name]()
            entries.append((row, calls, calls_per_round))
        except Exception as exc:  # noqa: BLE001
            entries.append((_failed(row, exc), {}, 0))
    return entries


def _measure(entries, device: str, rounds: int) -> None:
    """Time every entry's calls, round-robin over all of them (see the module docstring),
    and put medians, quartiles and ours / stock into the rows."""
    timers = [(row, impl, fn, n) for row, calls, n in entries for impl, fn in calls.items()]
    for _, _, fn, _ in timers:
        fn()  # warm-up: first-call dispatch caches, autotuning
    times = [[] for _ in timers]
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection landing in one round would be noise, not the op's cost
    try:
        for r in range(rounds):
            order = range(len(timers)) if r % 2 == 0 else reversed(range(len(timers)))
            for i in order:
                times[i].append(host_ms_per_call(timers[i][2], device, calls=timers[i][3]))
    finally:
        if gc_was_on:
            gc.enable()
    for (row, impl, _, calls), ts in zip(timers, times):
        key = "ours" if impl == "ours" else "eager"
        s = summarize(ts)
        row.update(
            {
                f"{key}_ms": s["ms"],
                f"{key}_q1_ms": s["q1_ms"],
                f"{key}_q3_ms": s["q3_ms"],
                f"{key}_n": s["n"],
                f"{key}_calls_per_round": calls,
            }
        )
    for row, calls, _ in entries:
        if calls:
            row["speedup_vs_eager"] = row["eager_ms"] / row["ours_ms"]
            row["ours_over_stock"] = row["ours_ms"] / row["eager_ms"]


def run_group(cfg: Config, progress: Callable) -> Tuple[List[Dict], List[str]]:
    """All rows of the group (bench/run.py's run_group protocol), one thread throughout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rounds = ROUNDS[0] if cfg.quick else ROUNDS[1]
    try:
        entries = _op_entries(cfg) + _step_entries(cfg)
        _measure(entries, cfg.device, rounds)
    finally:
        torch.set_num_threads(threads)
    rows = [row for row, _, _ in entries]
    for i, row in enumerate(rows, 1):
        progress(i, len(rows), row)
    notes = [
        f"host: time per call on the host, one thread, median of {rounds} rounds of "
        f"{CALLS['fwd']} (fwd) / {CALLS['fwd+bwd']} (fwd+bwd) calls per implementation, all rows' rounds taken in turn (ours and stock alike see the machine's "
        "load); ours / stock < 1: ours costs the host less"
        + (
            "; on CUDA launches are queued without waiting, so kernel time is not in it"
            if cfg.device == "cuda"
            else "; on CPU the ops' tiny kernels are in it, and the training step's kernels too"
        )
    ]
    return rows, notes
