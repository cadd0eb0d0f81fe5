"""One training step three ways -- eager, torch.compile'd, replayed from a CUDA graph -- behind
one interface, and the same for inference.

    step = make_step(net, optimizer, amp_dtype=None, compile=False, cuda_graph=False)
    loss, logits, y = step(x, labels)     # forward, cross-entropy, backward, optimizer.step()

Every step returns the loss and logits (detached) and the labels on the logits' device, all
still on the device (no sync); ``step.mode`` says what actually runs ("eager", "compile",
"cuda_graph" or "compile+cuda_graph") and ``step.note`` why a requested mode fell back.

* eager: the loop's arithmetic, in its order: forward (autocast to ``amp_dtype``),
  ``sum / n`` cross-entropy (a batch emptied by unreadable images still runs: loss 0 and
  zero gradients, so every DDP rank joins every all-reduce), zero_grad, backward, step.
* compile: the same step with ``torch.compile(net)``: Dynamo traces the model, our ops
  included (they are torch.library ops, so they stay in the graph instead of breaking it),
  and AOTAutograd compiles its backward; loss, backward and update run as in eager.
* cuda_graph: the whole step -- forward, loss, backward and the optimizer's update -- is one
  CUDA graph, so a step costs the host two input copies, one replay and three small output
  copies instead of hundreds of kernel launches. The first ``warmup`` calls are ordinary eager
  steps on a side stream (they train like any other step); they create the optimizer's state
  and make every autotuner (Triton's for conv2d_relu, cuDNN's benchmark mode) settle before
  the capture, which must not launch anything it has not seen. The next call captures and
  replays. What the graph baked in is checked at every call (see ``_GraphedStep``): another
  input shape (an epoch's last, smaller batch) runs eagerly, a new learning rate or optimizer
  state (a schedule's drop, a loaded checkpoint) is captured again. Where capture cannot
  work (no CUDA, or the capture fails) the step says so in the log and runs eagerly.
  Two-device models (the paper's towers on two GPUs) and DDP are refused: one graph
  captures one device's stream, and DDP's all-reduce needs its own graph-safe setup.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from .logs import log

StepOutput = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def forward_loss(net, x: torch.Tensor, labels: torch.Tensor, amp_dtype=None, autocast_cache: bool = True):
    """Forward (autocast to ``amp_dtype`` if given) and the ``sum / n`` cross-entropy.
    Returns (loss, fp32 logits, labels on the logits' device)."""
    cast = torch.autocast(x.device.type, dtype=amp_dtype, cache_enabled=autocast_cache) if amp_dtype else nullcontext()
    with cast:
        logits = net(x)
    logits = logits.float()
    y = labels.to(logits.device, non_blocking=True)
    loss = F.cross_entropy(logits, y, reduction="sum") / max(y.numel(), 1)
    return loss, logits, y


def eager_step(net, optimizer, x, labels, amp_dtype=None, set_to_none: bool = True) -> StepOutput:
    """One optimiser step: forward, loss, zero_grad, backward, optimizer.step()."""
    loss, logits, y = forward_loss(net, x, labels, amp_dtype)
    optimizer.zero_grad(set_to_none=set_to_none)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach(), y


class TrainStep:
    """``step(x, labels) -> (loss, logits, y)``; ``mode`` is what runs, ``note`` why a
    requested mode is not what runs (None when it is)."""

    def __init__(self, net, optimizer, amp_dtype=None, mode: str = "eager", note: Optional[str] = None):
        self.net, self.optimizer, self.amp_dtype = net, optimizer, amp_dtype
        self.mode, self.note = mode, note

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        return eager_step(self.net, self.optimizer, x, labels, self.amp_dtype)

    def as_step_fn(self) -> Callable:
        """This step in the loop's ``step_fn(net, optimizer, x, labels, amp_dtype)`` form
        (setup.Run.step_fn); it ignores those three arguments: it was made with its own."""
        return lambda net, optimizer, x, labels, amp_dtype=None: self(x, labels)


def make_step(
    net,
    optimizer,
    *,
    amp_dtype=None,
    compile: bool = False,
    cuda_graph: bool = False,
    compile_backend: str = "inductor",
    compile_mode: Optional[str] = None,
    warmup: int = 3,
) -> TrainStep:
    """The training step for ``net`` (an nn.Module, possibly DDP-wrapped) and ``optimizer``.

    ``compile``: run ``torch.compile(net, backend=compile_backend, mode=compile_mode,
    dynamic=False)`` (one graph per input shape; the tests use the cheap "aot_eager" backend).
    ``cuda_graph``: capture the whole step after ``warmup`` eager steps (see the module
    docstring); raises ValueError for a model on two devices or a DDP-wrapped one.
    """
    net, mode, note = _prepare(net, compile, cuda_graph, compile_backend, compile_mode, "--cuda-graphs")
    if not cuda_graph or note:
        if note:
            log.warning("CUDA graphs not used: %s; running the %s step", note, mode)
        return TrainStep(net, optimizer, amp_dtype, mode, note=note)
    return _GraphedStep(net, optimizer, amp_dtype, f"{mode}+cuda_graph" if compile else "cuda_graph", warmup)


def _prepare(net, compile, cuda_graph, compile_backend, compile_mode, flag):
    """What make_step and make_inference share: (net, compiled if asked; its mode; why CUDA
    graphs cannot be used here, or None). A configuration that must not be graphed raises
    ValueError, its message starting with ``flag``."""
    reason = _graph_refusal(net) if cuda_graph else None
    if reason:
        raise ValueError(f"{flag}: {reason}")
    mode = "compile" if compile else "eager"
    if compile:
        net = torch.compile(net, backend=compile_backend, mode=compile_mode, dynamic=False)
    note = _graph_unavailable(net) if cuda_graph else None
    return net, mode, note


def _graph_refusal(net) -> Optional[str]:
    """Why the step of ``net`` must not be graphed (a configuration error), or None."""
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        return (
            "not supported with DDP (torchrun with more than one process): its all-reduce "
            "would need a graph-safe setup; run without --cuda-graphs"
        )
    devices = {p.device for p in net.parameters()}
    if len(devices) > 1:
        return (
            f"the model is on {len(devices)} devices ({', '.join(sorted(map(str, devices)))}); one CUDA "
            "graph captures one device's stream: drop --model-parallel or --cuda-graphs"
        )
    return None


def _graph_unavailable(net) -> Optional[str]:
    """Why capture is impossible here (the step then runs without it), or None."""
    if not torch.cuda.is_available():
        return "no CUDA device (CUDA graphs capture GPU work only)"
    devices = {p.device.type for p in net.parameters()}
    if devices != {"cuda"}:
        return f"the model is on {', '.join(sorted(devices)) or 'no device'}, not on a CUDA device"
    return None


def _on_side_stream(fn: Callable, *args):
    """fn(*args) on a side stream, ordered after and before the current stream's work: how
    torch.cuda.graphs wants warm-up runs (nothing of theirs may land in the capture's stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    return out


def _geometry(t: torch.Tensor):
    return (tuple(t.shape), t.stride(), t.dtype, t.device)


class _GraphedStep(TrainStep):
    """The whole step in one CUDA graph (see the module docstring).

    A graph replays fixed kernels on fixed addresses with fixed scalars. So each call checks
    (host work only, ~microseconds) what the capture baked in: the inputs' geometry (another
    shape runs eagerly, keeping the captured gradients as p.grad), the optimizer's
    hyper-parameters (lr etc. are kernel arguments: a change is captured again) and the
    identity of its state tensors (a loaded state_dict replaces them: captured again).
    """

    def __init__(self, net, optimizer, amp_dtype, mode: str, warmup: int):
        super().__init__(net, optimizer, amp_dtype, mode)
        self.warmup, self.calls = warmup, 0
        self.graph = None
        self.static = None  # dict of the graph's input and output tensors
        self.baked = None  # (hyper-parameters, state identities) at capture

    def _optimizer_key(self):
        hyper = tuple(
            tuple(sorted(((k, v) for k, v in g.items() if k != "params"), key=lambda kv: kv[0]))
            for g in self.optimizer.param_groups
        )
        state = tuple(id(t) for s in self.optimizer.state.values() for t in s.values() if torch.is_tensor(t))
        return hyper, state

    def __call__(self, x, labels):
        if self.mode == "eager":  # the capture failed earlier
            return eager_step(self.net, self.optimizer, x, labels, self.amp_dtype, set_to_none=False)
        if self.calls < self.warmup:
            self.calls += 1
            return _on_side_stream(eager_step, self.net, self.optimizer, x, labels, self.amp_dtype)
        if self.graph is not None and (_geometry(x), _geometry(labels)) != self.static["geometry"]:
            # p.grad must stay the captured gradient tensors: accumulate into them (zeroed).
            return eager_step(self.net, self.optimizer, x, labels, self.amp_dtype, set_to_none=False)
        if self.graph is None or self._optimizer_key() != self.baked:
            if not self._capture(x, labels):
                return eager_step(self.net, self.optimizer, x, labels, self.amp_dtype, set_to_none=False)
        s = self.static
        s["x"].copy_(x, non_blocking=True)
        s["labels"].copy_(labels, non_blocking=True)
        self.graph.replay()
        # The outputs are the graph's buffers, overwritten by the next replay: callers keep
        # losses across steps (the loop reads them back every --log-every steps).
        return s["loss"].clone(), s["logits"].clone(), s["y"].clone()

    def _capture(self, x, labels) -> bool:
        """Capture the step for x's geometry; False (logged, and eager from then on) on failure."""
        self.graph = self.static = None
        torch.cuda.synchronize()
        static = {
            "x": torch.empty_like(x),
            "labels": torch.empty_like(labels, device=x.device),
            "geometry": (_geometry(x), _geometry(labels)),
        }
        self.optimizer.zero_grad(set_to_none=True)  # the capture allocates p.grad in its pool
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: other threads' CUDA calls (the DataLoader's pin-memory thread
            # allocating pinned buffers) must not invalidate the capture.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                # The autocast cache would keep casts made inside the capture past it.
                loss, logits, y = forward_loss(
                    self.net, static["x"], static["labels"], self.amp_dtype, autocast_cache=False
                )
                loss.backward()
                self.optimizer.step()
        except Exception as exc:  # noqa: BLE001 - any capture failure: say so, train on eagerly
            self.note = f"CUDA graph capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            log.warning("%s; running the eager step from now on", self.note)
            self.mode = "eager"
            self.optimizer.zero_grad(set_to_none=True)
            return False
        static.update(loss=loss.detach(), logits=logits.detach(), y=y)
        self.graph, self.static, self.baked = graph, static, self._optimizer_key()
        log.info("training step captured in a CUDA graph (input %s, %s)", tuple(x.shape), x.dtype)
        return True


class _Inference:
    """``forward(x) -> logits`` under no_grad (train/eval mode is the caller's business);
    ``mode`` and ``note`` as for TrainStep."""

    def __init__(self, net, amp_dtype, mode, note=None):
        self.net, self.amp_dtype, self.mode, self.note = net, amp_dtype, mode, note

    def run(self, x, autocast_cache=True):
        cast = (
            torch.autocast(x.device.type, dtype=self.amp_dtype, cache_enabled=autocast_cache)
            if self.amp_dtype
            else nullcontext()
        )
        with torch.no_grad(), cast:
            return self.net(x)

    def __call__(self, x):
        return self.run(x)


class _GraphedInference(_Inference):
    """The forward pass in one CUDA graph, captured after ``warmup`` side-stream calls, for
    inputs of one geometry (others run eagerly)."""

    def __init__(self, net, amp_dtype, mode, warmup):
        super().__init__(net, amp_dtype, mode)
        self.warmup, self.calls, self.graph, self.static = warmup, 0, None, None

    def __call__(self, x):
        if self.mode == "eager" or (self.graph is not None and _geometry(x) != self.static["geometry"]):
            return self.run(x)
        if self.calls < self.warmup:
            self.calls += 1
            return _on_side_stream(self.run, x)
        if self.graph is None:
            torch.cuda.synchronize()
            static = {"x": torch.empty_like(x), "geometry": _geometry(x)}
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    static["out"] = self.run(static["x"], autocast_cache=False)
            except Exception as exc:  # noqa: BLE001
                self.note = f"CUDA graph capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                log.warning("%s; running the eager forward from now on", self.note)
                self.mode = "eager"
                return self.run(x)
            self.graph, self.static = graph, static
        self.static["x"].copy_(x, non_blocking=True)
        self.graph.replay()
        return self.static["out"].clone()


def make_inference(
    net,
    *,
    amp_dtype=None,
    compile: bool = False,
    cuda_graph: bool = False,
    compile_backend: str = "inductor",
    compile_mode: Optional[str] = None,
    warmup: int = 3,
):
    """``forward(x) -> logits`` under no_grad (and autocast to ``amp_dtype``), eager, compiled
    or replayed from a CUDA graph, with make_step's rules (two devices and DDP refused, no
    CUDA or a failed capture: eager with a logged note)."""
    net, mode, note = _prepare(net, compile, cuda_graph, compile_backend, compile_mode, "CUDA graphs")
    if not cuda_graph or note:
        if note:
            log.warning("CUDA graphs not used: %s; running the %s forward", note, mode)
        return _Inference(net, amp_dtype, mode, note=note)
    return _GraphedInference(net, amp_dtype, f"{mode}+cuda_graph" if compile else "cuda_graph", warmup)
