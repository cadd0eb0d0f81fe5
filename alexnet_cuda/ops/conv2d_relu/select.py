"""Per-shape choice between candidate implementations of one direction of conv2d_relu.

For each direction ("forward", "dgrad": the input gradient, "wgrad": the weight and bias
gradients) and shape, the
candidates are timed on the user's GPU the first time the shape is seen, the fastest is
kept in memory and on disk (a JSON file), and every later call of that shape takes it
without timing. cuDNN's path is always a candidate and wins ties: a Triton kernel is only
chosen when it is faster by more than ``MARGIN``, so a choice can not make a layer slower
than stock beyond timing noise.

No timing happens while a CUDA graph is being captured (the launches would be recorded,
not run): then the cached choice is used if there is one, else the fallback (cuDNN), and
nothing is cached. A training step that is captured after warm-up iterations (as
train/step.py's CUDA-graph step does) has made its choices by then. A traced call
(torch.compile, export) holds fake tensors, which cannot be timed: the forward times
random stand-ins of the same shape instead (:func:`real_like`, op.py's _forward_choice).

The file is ``conv_select.json`` in ``$ALEXNET_CUDA_CACHE`` (default
``~/.cache/alexnet_cuda``; delete it to time again); entries are
keyed by the GPU's name and the torch and Triton versions as well as the shape. Each new
choice is logged at debug level (logger ``alexnet_cuda.conv2d_relu``) and listed by
:func:`choices` (bench/run.py records them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
from typing import Callable, Dict, Optional

import torch
import triton

from ..._cache import cache_dir, merge_json_cache, read_json_cache

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


def capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream (launches are recorded,
    not run: nothing can be timed)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _can_time(real_inputs: bool) -> bool:
    if capturing():
        return False
    return real_inputs or not torch.compiler.is_compiling()


@contextlib.contextmanager
def real_mode():
    """Leave the tracing modes (fake tensors, proxies, functionalization) for a while:
    what runs inside creates and launches on real tensors."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.utils._python_dispatch import _disable_current_modes

    with unset_fake_temporarily(), _disable_current_modes(), torch.no_grad():
        yield


def real_like(*tensors):
    """Real tensors with the sizes, strides, dtype and device of `tensors` (fake ones, or
    None), filled with standard-normal values: stand-ins to time candidates on. Call
    inside real_mode()."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        real = torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device=t.device)
        out.append(real.normal_())
    return tuple(out)


class Selector:
    """The choices of one process: ``choose`` times unseen (direction, key) pairs.

    `timer(fn) -> time` measures a candidate (CUDA events by default; tests pass a fake
    one); `path` is the JSON file of choices (None: memory only); `tag` distinguishes
    machines and library versions sharing the file.
    """

    def __init__(self, timer: Callable = cuda_event_timer, path: Optional[str] = None, tag: Optional[str] = None):
        self.timer = timer
        self.path = path
        self.tag = tag
        self._choices: Optional[Dict[str, dict]] = None
        # (direction, key) -> choice, for the calls after the first: no key formatting.
        self._memo: Dict[tuple, str] = {}

    def _load(self) -> Dict[str, dict]:
        if self._choices is None:
            # Content that is not what choose() wrote is a cache miss (timed again), with one
            # warning naming the file.
            self._choices = read_json_cache(self.path, _is_entry) if self.path else {}
        return self._choices

    def _save(self, full_key: str) -> None:
        """Add this process's entry `full_key` to the file, merged under a lock with what
        other processes wrote meanwhile (merge_json_cache), so processes timing at the same
        time keep each other's choices."""
        if not self.path:
            return
        try:
            merge_json_cache(self.path, {full_key: self._choices[full_key]}, _is_entry)
        except OSError as exc:
            LOG.debug("conv2d_relu: cannot write the choice cache %s: %s", self.path, exc)

    def _full_key(self, direction: str, key) -> str:
        tag = self.tag if self.tag is not None else _device_tag()
        return f"{tag}|{direction}|{key}"

    def cached(self, direction: str, key) -> Optional[str]:
        """The choice already made in this process for (direction, key) (a hashable key),
        or None: the per-call fast path, before building any candidates."""
        return self._memo.get((direction, key))

    def stored(self, direction: str, key) -> Optional[str]:
        """The choice for (direction, key) made in this process or read from the file, or
        None. Times nothing."""
        memo = self._memo.get((direction, key))
        if memo is not None:
            return memo
        cached = self._load().get(self._full_key(direction, key))
        if cached is not None:
            self._memo[(direction, key)] = cached["choice"]
            return cached["choice"]
        return None

    def choose(
        self, direction: str, key, candidates: Dict[str, Callable[[], object]], real_inputs: bool = False
    ) -> str:
        """The name of the candidate to run for (direction, key): the cached choice, or
        the fastest by ``timer`` (FALLBACK unless another beats it by MARGIN), cached.
        `real_inputs`: the candidates run on real tensors even though a trace is under way
        (real_like's stand-ins), so they can be timed."""
        stored = self.stored(direction, key)
        if stored is not None and stored in candidates:
            return stored
        full = self._full_key(direction, key)
        choices = self._load()
        if not _can_time(real_inputs) or len(candidates) == 1:
            return FALLBACK if FALLBACK in candidates else next(iter(candidates))
        times = {name: float(self.timer(fn)) for name, fn in candidates.items()}
        choice = pick(times)
        choices[full] = {"choice": choice, "times": times}
        self._memo[(direction, key)] = choice
        self._save(full)
        LOG.debug("conv2d_relu %s %s: %s (times %s)", direction, key, choice, times)
        return choice

    def choices(self) -> Dict[str, dict]:
        """Every choice known to this process (loaded from disk or timed here)."""
        return dict(self._load())


def _is_entry(key, value) -> bool:
    """An entry as Selector.choose writes it: "tag|direction|key": {"choice": name, "times": {...}}."""
    return (
        isinstance(key, str)
        and isinstance(value, dict)
        and isinstance(value.get("choice"), str)
        and isinstance(value.get("times", {}), dict)
    )


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
