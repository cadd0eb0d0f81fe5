"""Two-device plumbing for ``AlexNet(devices=(d0, d1))``: one tower per device.

- :func:`parse_devices` checks the ``devices`` argument.
- :class:`TowerPair` is one layer as two modules, ``towers[g]`` holding tower g's output
  rows (:func:`tower_rows`) on ``devices[g]``; its state_dict hooks show and accept the
  canonical single-device tensors.
- :class:`TowerRunner` hands activations from tower to tower and runs each tower's work
  on its own CUDA stream.

state_dict
----------
Tower g owns a contiguous block of output rows of every layer (rows ``[0, n/2)`` for
tower 0; for an odd ``n`` tower 0 gets one more row), which is exactly group g of a
``groups=2`` convolution, so the single-device (grouped) model's tensors are the
canonical layout. A ``TowerPair`` stores the halves as separate parameters
(``towers.0.weight``, ``towers.1.weight``) but its ``state_dict()`` concatenates them
(the result lives on tower 0's device) and ``load_state_dict()`` splits them onto each
tower's device, reporting missing keys by their canonical names. So
``state_dict(keep_vars=True)`` gives those concatenated copies, not Parameters, and
optimizer state (per parameter tensor) does not transfer between placements.

Streams
-------
On CUDA each tower runs on its own stream (one per (device, tower), created on first
use), so that two towers on one GPU can overlap. The towers first wait for the caller's
current stream; cross-device copies run with both towers' streams current (so PyTorch's
copy orders them against both); hand-overs between two streams of one device use
``wait_stream`` + ``record_stream``; and the caller's stream waits for both towers before
the output (recorded on the caller's stream) is returned. Backward follows the same
streams (autograd runs each backward op on its forward op's stream). On CPU everything
runs in order, which is how the tests run two towers without a GPU.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["DeviceLike", "TowerPair", "TowerRunner", "parse_devices", "tower_rows"]

DeviceLike = Union[str, int, torch.device]


def parse_devices(devices) -> Optional[Tuple[torch.device, torch.device]]:
    """``None`` (one device) or a pair of cpu/cuda devices; raises ValueError otherwise.

    A CUDA device without an index becomes the current device.
    """
    if devices is None:
        return None
    if isinstance(devices, (str, int, torch.device)) or not isinstance(devices, Sequence) or len(devices) != 2:
        raise ValueError(
            f"devices must be None (one device) or a pair of devices such as ('cuda:0', 'cuda:1'); got {devices!r}"
        )
    parsed = []
    for i, spec in enumerate(devices):
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"devices[{i}] = {spec!r} is not a device: {exc}") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(
                f"devices[{i}] = {spec!r}: the two-tower AlexNet supports cpu and cuda devices, not {dev.type}"
            )
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"devices[{i}] = {spec!r} but CUDA is not available")
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            if dev.index >= torch.cuda.device_count():
                raise ValueError(
                    f"devices[{i}] = {spec!r} but only {torch.cuda.device_count()} CUDA device(s) are visible"
                )
        parsed.append(dev)
    return parsed[0], parsed[1]


def tower_rows(n: int) -> Tuple[int, int]:
    """How many of a layer's ``n`` output rows each tower owns (tower 0 gets an odd one)."""
    return n - n // 2, n // 2


# --------------------------------------------------------------------------------------
# One layer as two towers, with the canonical state_dict
# --------------------------------------------------------------------------------------

_TOWER_KEY = re.compile(r"(^|\.)towers\.[01]\.")


def _combine_halves(module, state_dict, prefix, local_metadata):
    """state_dict post-hook: towers.0.<p> + towers.1.<p> -> <p> (on tower 0's device)."""
    for name, _ in module.towers[0].named_parameters(recurse=False):
        first = state_dict.pop(f"{prefix}towers.0.{name}")
        second = state_dict.pop(f"{prefix}towers.1.{name}")
        state_dict[prefix + name] = torch.cat([first.detach(), second.detach().to(first.device)])
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k.startswith(prefix + "towers")]:
            del metadata[key]


def _split_halves(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """load_state_dict pre-hook: <p> -> towers.0.<p> + towers.1.<p>, each on its device."""
    for name, _ in module.towers[0].named_parameters(recurse=False):
        key = prefix + name
        if key not in state_dict:
            continue  # the towers report it missing (renamed back by _rename_missing)
        full = state_dict.pop(key)
        halves = [getattr(tower, name) for tower in module.towers]
        rows = [h.shape[0] for h in halves]
        expected = (sum(rows), *halves[0].shape[1:])
        if tuple(full.shape) != expected:
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape "
                f"{tuple(full.shape)} from checkpoint, the shape in current model "
                f"is {expected}."
            )
            parts = [h.detach() for h in halves]  # placeholders; the load raises anyway
        else:
            parts = [p.to(h.device) for p, h in zip(full.split(rows), halves)]
        for g, part in enumerate(parts):
            state_dict[f"{prefix}towers.{g}.{name}"] = part


def _rename_missing(module, incompatible_keys):
    """load_state_dict post-hook: report missing keys by their canonical names."""
    renamed: List[str] = []
    for key in incompatible_keys.missing_keys:
        key = _TOWER_KEY.sub(r"\1", key)
        if key not in renamed:
            renamed.append(key)
    incompatible_keys.missing_keys[:] = renamed


class TowerPair(nn.Module):
    """One layer of the two-device model: ``towers[g]`` computes tower g's output rows.

    The state_dict shows the canonical single-device tensors (halves concatenated on
    dim 0); see the module docstring.
    """

    def __init__(self, tower0: nn.Module, tower1: nn.Module):
        super().__init__()
        self.towers = nn.ModuleList([tower0, tower1])
        self.register_state_dict_post_hook(_combine_halves)
        self.register_load_state_dict_pre_hook(_split_halves)
        self.register_load_state_dict_post_hook(_rename_missing)

    @classmethod
    def split(
        cls, make: Callable[[int, torch.device], nn.Module], rows: int, devices: Tuple[torch.device, torch.device]
    ) -> "TowerPair":
        """A layer of ``rows`` outputs: ``towers[g] = make(tower g's rows, devices[g])``."""
        return cls(*[make(r, d) for r, d in zip(tower_rows(rows), devices)])


# --------------------------------------------------------------------------------------
# Running the towers: streams and hand-overs
# --------------------------------------------------------------------------------------

_TOWER_STREAMS: Dict[Tuple[Optional[int], int], "torch.cuda.Stream"] = {}


def _tower_stream(device: torch.device, tower: int) -> "torch.cuda.Stream":
    key = (device.index, tower)
    if key not in _TOWER_STREAMS:
        _TOWER_STREAMS[key] = torch.cuda.Stream(device=device)
    return _TOWER_STREAMS[key]


class TowerRunner:
    """Runs each tower's work on its own CUDA stream; plain sequential code on CPU.

    Made for one forward pass: construction makes the towers' streams wait for the
    callers' current streams, :meth:`gather` makes the callers wait for the towers.
    """

    def __init__(self, devices: Tuple[torch.device, torch.device]):
        self.devices = devices
        self.streams = [_tower_stream(d, g) if d.type == "cuda" else None for g, d in enumerate(devices)]
        self.callers = [torch.cuda.current_stream(d) if s is not None else None for d, s in zip(devices, self.streams)]
        for stream, caller in zip(self.streams, self.callers):
            if stream is not None:  # start after the caller's queued work (input, optimizer step)
                stream.wait_stream(caller)

    def on(self, g: int):
        """Context: tower g's stream is current (nothing on CPU)."""
        stream = self.streams[g]
        return torch.cuda.stream(stream) if stream is not None else nullcontext()

    def to_tower(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """The caller's tensor x, made usable by tower g."""
        device, stream = self.devices[g], self.streams[g]
        if x.device == device:
            if stream is not None:
                x.record_stream(stream)
            return x
        with self.on(g):  # a copy from another CUDA device runs on that device's caller stream
            return x.to(device, non_blocking=device.type == "cuda")

    def move(self, t: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        """Tower src's tensor t, made usable by tower dst."""
        if src == dst:
            return t
        src_stream, dst_stream = self.streams[src], self.streams[dst]
        if t.device == self.devices[dst]:  # same device: hand over between streams
            if dst_stream is not None and dst_stream != src_stream:
                dst_stream.wait_stream(src_stream)
                t.record_stream(dst_stream)
            return t
        # With both towers' streams current, PyTorch's cross-device copy runs on the source
        # stream, waits for the destination stream and makes it wait for the copy.
        with self.on(src), self.on(dst):
            return t.to(self.devices[dst], non_blocking=self.devices[dst].type == "cuda")

    def exchange(self, h: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each tower gets cat(tower 0's maps, tower 1's maps) along dim 1."""
        out = []
        for g in range(2):
            with self.on(g):
                out.append(torch.cat([self.move(h[0], 0, g), self.move(h[1], 1, g)], dim=1))
        return out

    def gather(self, h: List[torch.Tensor]) -> torch.Tensor:
        """cat(h[0], h[1]) along dim 1 on tower 0's device, ready on the caller's stream."""
        with self.on(0):
            out = torch.cat([h[0], self.move(h[1], 1, 0)], dim=1)
        for stream, caller in zip(self.streams, self.callers):
            if stream is not None:
                caller.wait_stream(stream)
        if self.streams[0] is not None:
            out.record_stream(self.callers[0])
        return out
