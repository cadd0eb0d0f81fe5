"""Per-shape choice between candidate implementations of one direction of conv2d_relu.

For each direction ("forward", "dgrad": the input gradient, "wgrad": the weight and bias
gradients) and shape, the
candidates are timed on the user's GPU the first time the shape is seen, the fastest is
kept in memory and on disk (a JSON file), and every later call of that shape takes it
without timing. cuDNN's path is always a candidate and wins ties: a Triton kernel is only
chosen when it is faster by more than ``MARGIN``, so a choice can not make a layer slower
than stock beyond timing noise.

No timing happens while a CUDA graph is being captured (the launches would be recorded,
not run) or while tracing: then the cached choice is used if there is one, else the
fallback (cuDNN), and nothing is cached. A training step that is captured after warm-up
iterations (as train/step.py's CUDA-graph step does) has made its choices by then.

The file is ``conv_select.json`` in ``$ALEXNET_CUDA_CACHE`` (default
``~/.cache/alexnet_cuda``; delete it to time again); entries are
keyed by the GPU's name and the torch and Triton versions as well as the shape. Each new
choice is logged at debug level (logger ``alexnet_cuda.conv2d_relu``) and listed by
:func:`choices` (bench/run.py records them).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from typing import Callable, Dict, Optional

import torch
import triton

from .._cache import cache_dir

LOG = logging.getLogger("alexnet_cuda.conv2d_relu")

FALLBACK = "cudnn"
# A candidate must beat cuDNN's time by this fraction to be chosen (timing noise).
MARGIN = 0.03


def cache_path() -> str:
    """conv_select.json in the library's cache folder ($ALEXNET_CUDA_CACHE, as the trainer's
    dataset statistics; ~/.cache/alexnet_cuda by default)."""
    return os.path.join(cache_dir(), "conv_select.json")


def cuda_event_timer(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median milliseconds of `fn` on the current CUDA stream, after one warm-up call
    (which also compiles and autotunes a Triton candidate)."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _device_tag() -> str:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return f"{name}|torch {torch.__version__}|triton {triton.__version__}"


def _can_time() -> bool:
    if torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


class Selector:
    """The choices of one process: ``choose`` times unseen (direction, key) pairs.

    `timer(fn) -> time` measures a candidate (CUDA events by default; tests pass a fake
    one); `path` is the JSON file of choices (None: memory only); `tag` distinguishes
    machines and library versions sharing the file.
    """

    def __init__(self, timer: Callable = cuda_event_timer, path: Optional[str] = None,
                 tag: Optional[str] = None):
        self.timer = timer
        self.path = path
        self.tag = tag
        self._choices: Optional[Dict[str, dict]] = None
        # (direction, key) -> choice, for the calls after the first: no key formatting.
        self._memo: Dict[tuple, str] = {}

    def _load(self) -> Dict[str, dict]:
        if self._choices is None:
            self._choices = {}
            if self.path and os.path.exists(self.path):
                try:
                    with open(self.path) as f:
                        self._choices = json.load(f)
                except (OSError, ValueError):  # a broken file is re-timed, not fatal
                    self._choices = {}
        return self._choices

    def _save(self) -> None:
        if not self.path:
            return
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(self._choices, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)  # atomic: concurrent processes never read half a file
        except OSError as exc:
            LOG.debug("conv2d_relu: cannot write the choice cache %s: %s", self.path, exc)

    def _full_key(self, direction: str, key) -> str:
        tag = self.tag if self.tag is not None else _device_tag()
        return f"{tag}|{direction}|{key}"

    def cached(self, direction: str, key) -> Optional[str]:
        """The choice already made in this process for (direction, key) (a hashable key),
        or None: the per-call fast path, before building any candidates."""
        return self._memo.get((direction, key))

    def choose(self, direction: str, key, candidates: Dict[str, Callable[[], object]]) -> str:
        """The name of the candidate to run for (direction, key): the cached choice, or
        the fastest by ``timer`` (FALLBACK unless another beats it by MARGIN), cached."""
        memo = self._memo.get((direction, key))
        if memo is not None and memo in candidates:
            return memo
        choices = self._load()
        full = self._full_key(direction, key)
        cached = choices.get(full)
        if cached is not None and cached["choice"] in candidates:
            self._memo[(direction, key)] = cached["choice"]
            return cached["choice"]
        if not _can_time() or len(candidates) == 1:
            return FALLBACK if FALLBACK in candidates else next(iter(candidates))
        times = {name: float(self.timer(fn)) for name, fn in candidates.items()}
        choice = pick(times)
        choices[full] = {"choice": choice, "times": times}
        self._memo[(direction, key)] = choice
        self._save()
        LOG.debug("conv2d_relu %s %s: %s (times %s)", direction, key, choice, times)
        return choice

    def choices(self) -> Dict[str, dict]:
        """Every choice known to this process (loaded from disk or timed here)."""
        return dict(self._load())


def pick(times: Dict[str, float]) -> str:
    """The fastest candidate, but FALLBACK unless it is beaten by more than MARGIN."""
    best = min(times, key=times.get)
    if FALLBACK in times and times[best] >= times[FALLBACK] * (1 - MARGIN):
        return FALLBACK
    return best


SELECTOR = Selector(path=cache_path())


def choices() -> Dict[str, dict]:
    """The process's choices (for the bench's JSON and report)."""
    return SELECTOR.choices()
