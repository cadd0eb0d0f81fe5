"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012), Figure 2: two towers.

Layout (per tower = half of each layer; "both" = the layer reads both towers)::

    conv1 11x11/4  3 -> 96   (48 per tower)  ReLU -> LRN -> max-pool 3/2   pool1
    conv2 5x5 p2  96 -> 256  (own tower)     ReLU -> LRN -> max-pool 3/2   pool2
    conv3 3x3 p1 256 -> 384  (both)          ReLU                          relu3
    conv4 3x3 p1 384 -> 384  (own tower)     ReLU                          relu4
    conv5 3x3 p1 384 -> 256  (own tower)     ReLU -> max-pool 3/2          relu5, pool5
    fc6 9216 -> 4096 (both) ReLU, dropout;  fc7 4096 -> 4096 (both) ReLU, dropout;
    fc8 4096 -> num_classes (both)

Placements
----------
``devices=None`` (one device; move it with ``.to()`` as usual): "own tower" layers are
grouped convolutions (``groups=2``) and the LRN is grouped (``lrn_groups=2``: windows never
cross the tower boundary), so each layer is one launch. ``features`` and ``classifier``
are ``nn.Sequential``.

``devices=(d0, d1)``: model parallelism as in the paper. Each layer is a pair of modules,
``<layer>.towers[g]`` holding tower g's output rows on ``devices[g]``. Activations cross
between devices only where the paper's GPUs communicated: into conv3 and into fc6, fc7
and fc8; the logits are gathered on ``devices[0]``. Both devices may be the same (two
streams on one GPU) or CPUs (sequential, for testing). On CUDA each tower runs on its own
stream (one per (device, tower), created on first use); the towers first wait for the
caller's current stream, cross-device copies run with both towers' streams current (so
PyTorch's copy orders them against both), hand-overs between two streams of one device use
``wait_stream`` + ``record_stream``, and the caller's stream waits for both towers before
the output (recorded on the caller's stream) is returned. Backward follows the same
streams (autograd runs each backward op on its forward op's stream). Do not ``.to(device)``
a two-device model (that would put both towers on one device; ``.double()`` etc. are fine).
The tower devices are read from the parameters at every call.

state_dict (identical for both placements, and for ``fused`` True/False)
-----------------------------------------------------------------------
The canonical layout is the single-device one: ``features.conv{1..5}.{weight,bias}`` and
``classifier.fc{6,7,8}.{weight,bias}``, e.g. ``features.conv2.weight`` is (256, 48, 5, 5)
(grouped), ``features.conv3.weight`` (384, 256, 3, 3), ``classifier.fc6.weight``
(4096, 9216). Tower g owns a contiguous block of output rows of every layer (rows
``[0, n/2)`` for tower 0; for an odd ``num_classes`` tower 0 gets one more row of fc8),
which is exactly group g of a ``groups=2`` convolution, and the input-channel order of
conv3/fc6 is (tower 0's maps, tower 1's maps) in both placements. The two-device model
stores the halves as separate parameters (``features.conv2.towers.0.weight``...) but its
``state_dict()`` concatenates them (the result lives on ``devices[0]``) and
``load_state_dict()`` splits them, so ``a.load_state_dict(b.state_dict())`` works between
any two placements (``state_dict(keep_vars=True)`` gives those concatenated copies, not
Parameters). Optimizer state is per parameter tensor and does not transfer.
torch.compile is meant for the single-device model; the two-device forward is eager code.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from contextlib import nullcontext
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import nn as fused_nn
from ._stock_layers import StockReLULRNMaxPool2d
from .reference import convert_reference_state_dict

__all__ = ["AlexNet", "LRNParams", "PAPER_LRN"]

DeviceLike = Union[str, int, torch.device]


@dataclasses.dataclass(frozen=True)
class LRNParams:
    """Local response normalization settings (the paper's values by default).

    ``alpha`` follows PyTorch/Caffe/cuda-convnet: the sum of squares is multiplied by
    ``alpha / size``; that is what the original code computed. ``paper_alpha=True`` uses
    the paper's printed formula literally (``alpha`` times the sum, 5x stronger at size 5).
    """

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    paper_alpha: bool = False


PAPER_LRN = LRNParams()



def _parse_devices(devices) -> Optional[Tuple[torch.device, torch.device]]:
    if devices is None:
        return None
    if isinstance(devices, (str, int, torch.device)) or not isinstance(devices, Sequence) \
            or len(devices) != 2:
        raise ValueError("devices must be None (one device) or a pair of devices such as "
                         f"('cuda:0', 'cuda:1'); got {devices!r}")
    parsed = []
    for i, spec in enumerate(devices):
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"devices[{i}] = {spec!r} is not a device: {exc}") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"devices[{i}] = {spec!r}: the two-tower AlexNet supports cpu and cuda "
                             f"devices, not {dev.type}")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"devices[{i}] = {spec!r} but CUDA is not available")
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            if dev.index >= torch.cuda.device_count():
                raise ValueError(f"devices[{i}] = {spec!r} but only {torch.cuda.device_count()} "
                                 "CUDA device(s) are visible")
        parsed.append(dev)
    return parsed[0], parsed[1]


# --------------------------------------------------------------------------------------
# Two-tower plumbing
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


def _split_halves(module, state_dict, prefix, local_metadata, strict, missing_keys,
                  unexpected_keys, error_msgs):
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
            error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                              f"{tuple(full.shape)} from checkpoint, the shape in current model "
                              f"is {expected}.")
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


_TOWER_STREAMS = {}


def _tower_stream(device: torch.device, tower: int) -> "torch.cuda.Stream":
    key = (device.index, tower)
    if key not in _TOWER_STREAMS:
        _TOWER_STREAMS[key] = torch.cuda.Stream(device=device)
    return _TOWER_STREAMS[key]


class _TowerRunner:
    """Runs each tower's work on its own CUDA stream; plain sequential code on CPU."""

    def __init__(self, devices: Tuple[torch.device, torch.device]):
        self.devices = devices
        self.streams = [_tower_stream(d, g) if d.type == "cuda" else None
                        for g, d in enumerate(devices)]
        self.callers = [torch.cuda.current_stream(d) if s is not None else None
                        for d, s in zip(devices, self.streams)]
        for stream, caller in zip(self.streams, self.callers):
            if stream is not None:  # start after the caller's queued work (input, optimizer step)
                stream.wait_stream(caller)

    def on(self, g: int):
        stream = self.streams[g]
        return torch.cuda.stream(stream) if stream is not None else nullcontext()

    def to_tower(self, x: torch.Tensor, g: int) -> torch.Tensor:
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
        with self.on(0):
            out = torch.cat([h[0], self.move(h[1], 1, 0)], dim=1)
        for stream, caller in zip(self.streams, self.callers):
            if stream is not None:
                caller.wait_stream(stream)
        if self.streams[0] is not None:
            out.record_stream(self.callers[0])
        return out


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------

_PAPER_WIDTHS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256, "fc": 4096}


class AlexNet(nn.Module):
    """The paper's two-tower AlexNet on one device or two.

    Args:
        num_classes: outputs of fc8.
        devices: ``None`` for one device (grouped convolutions and grouped LRN), or a pair
            of devices, one per tower (see the module docstring).
        fused: ``True`` uses alexnet_cuda's fused layers (``Conv2dReLU``,
            ``ReLULRNMaxPool2d``, ``MaxPool2d``); ``False`` stock ``torch.nn`` layers.
            Same function, same state_dict.
        dropout: dropout probability after fc6 and fc7 (inverted dropout).
        lrn: :class:`LRNParams`; ``None`` removes LRN (ReLU -> max-pool), the paper's ablation.
        bias_init: bias of conv2, conv4, conv5, fc6, fc7 at initialization; the paper uses 1
            (default). Ports found 1 can leave ReLUs dead in the FC layers; Caffe's reference
            AlexNet uses 0.1. All other biases start at 0 and every weight at N(0, 0.01).
        image_size: 227 (default; no padding in conv1, 55x55 after conv1) or 224 (the size
            the paper prints; conv1 gets padding 2, which gives the same 55x55 maps and
            leaves every parameter shape unchanged). Inputs must match it.
        width: multiplies every layer's width (1.0 = the paper). Only for tests and small
            experiments; state_dicts load only between models of equal width.
    """

    def __init__(self, num_classes: int = 1000, *, devices: Optional[Sequence[DeviceLike]] = None,
                 fused: bool = True, dropout: float = 0.5, lrn: Optional[LRNParams] = PAPER_LRN,
                 bias_init: float = 1.0, image_size: int = 227, width: float = 1.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if image_size not in (224, 227):
            raise ValueError(f"image_size must be 227 (conv1 without padding) or 224 (conv1 "
                             f"padding 2); got {image_size}")
        if lrn is not None and not isinstance(lrn, LRNParams):
            raise ValueError(f"lrn must be an LRNParams or None, got {lrn!r}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        self.devices = _parse_devices(devices)
        self.fused = bool(fused)
        self.lrn = lrn
        self.image_size = image_size
        self.num_classes = num_classes

        w = {name: max(2, 2 * round(c * width / 2)) for name, c in _PAPER_WIDTHS.items()}
        self.widths = w
        pad1 = 2 if image_size == 224 else 0
        # name: (in, out, kernel, stride, padding, own tower only (groups=2), bias)
        convs = {
            "conv1": (3, w["conv1"], 11, 4, pad1, False, 0.0),
            "conv2": (w["conv1"], w["conv2"], 5, 1, 2, True, bias_init),
            "conv3": (w["conv2"], w["conv3"], 3, 1, 1, False, 0.0),
            "conv4": (w["conv3"], w["conv4"], 3, 1, 1, True, bias_init),
            "conv5": (w["conv4"], w["conv5"], 3, 1, 1, True, bias_init),
        }
        # name: (in, out, bias)
        fcs = {
            "fc6": (w["conv5"] * 6 * 6, w["fc"], bias_init),
            "fc7": (w["fc"], w["fc"], bias_init),
            "fc8": (w["fc"], num_classes, 0.0),
        }

        layers = {}
        if self.devices is None:
            for name, (cin, cout, k, s, p, own, bias) in convs.items():
                layers[name] = self._conv(cin, cout, k, s, p, 2 if own else 1, bias, None)
            for name, (fin, fout, bias) in fcs.items():
                layers[name] = self._linear(fin, fout, bias, None)
            lrn_groups = 2
        else:
            for name, (cin, cout, k, s, p, own, bias) in convs.items():
                layers[name] = TowerPair(*[
                    self._conv(cin // 2 if own else cin, cout // 2, k, s, p, 1, bias, d)
                    for d in self.devices])
            for name, (fin, fout, bias) in fcs.items():
                rows = (fout - fout // 2, fout // 2)
                layers[name] = TowerPair(*[self._linear(fin, r, bias, d)
                                           for r, d in zip(rows, self.devices)])
            lrn_groups = 1  # each tower normalizes its own maps

        features = OrderedDict([
            ("conv1", layers["conv1"]), ("pool1", self._stage(lrn_groups)),
            ("conv2", layers["conv2"]), ("pool2", self._stage(lrn_groups)),
            ("conv3", layers["conv3"]), ("relu3", self._relu()),
            ("conv4", layers["conv4"]), ("relu4", self._relu()),
            ("conv5", layers["conv5"]), ("relu5", self._relu()),
            ("pool5", fused_nn.MaxPool2d(3, 2) if self.fused else nn.MaxPool2d(3, 2)),
        ])
        classifier = OrderedDict([
            ("fc6", layers["fc6"]), ("relu6", nn.ReLU(inplace=True)), ("drop6", nn.Dropout(dropout)),
            ("fc7", layers["fc7"]), ("relu7", nn.ReLU(inplace=True)), ("drop7", nn.Dropout(dropout)),
            ("fc8", layers["fc8"]),
        ])
        container = nn.Sequential if self.devices is None else nn.ModuleDict
        self.features = container(features)
        self.classifier = container(classifier)

    # -- building blocks -------------------------------------------------------------------

    def _conv(self, cin, cout, kernel, stride, padding, groups, bias, device):
        cls = fused_nn.Conv2dReLU if self.fused else nn.Conv2d
        conv = cls(cin, cout, kernel, stride=stride, padding=padding, groups=groups, device=device)
        nn.init.normal_(conv.weight, 0.0, 0.01)
        nn.init.constant_(conv.bias, bias)
        return conv

    @staticmethod
    def _linear(fin, fout, bias, device):
        fc = nn.Linear(fin, fout, device=device)
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.constant_(fc.bias, bias)
        return fc

    def _relu(self) -> nn.Module:
        # fused convolutions (Conv2dReLU) already apply the ReLU
        return nn.Identity() if self.fused else nn.ReLU(inplace=True)

    def _stage(self, lrn_groups: int) -> nn.Module:
        """ReLU -> LRN -> max-pool 3/2 after conv1 and conv2.

        With fused=True the convolution before it is a Conv2dReLU, and the stage's own ReLU
        (a no-op on non-negative input) is part of the fused kernel anyway.
        """
        if self.lrn is None:
            if self.fused:
                return fused_nn.MaxPool2d(3, 2)
            return nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        p = self.lrn
        cls = fused_nn.ReLULRNMaxPool2d if self.fused else StockReLULRNMaxPool2d
        return cls(p.size, p.alpha, p.beta, p.k, 3, 2, lrn_groups=lrn_groups,
                   paper_alpha=p.paper_alpha)

    # -- forward -----------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.image_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"AlexNet expects a batch of images shaped (N, 3, {s}, {s}); got {shape}")
        if x.shape[1] != 3:
            raise ValueError(f"AlexNet expects 3 input channels (RGB); got {x.shape[1]} channels "
                             f"in an input of shape {tuple(x.shape)}")
        if x.shape[2] != s or x.shape[3] != s:
            other = 224 if s == 227 else 227
            raise ValueError(f"this AlexNet was built for {s}x{s} inputs (image_size={s}); got "
                             f"{x.shape[2]}x{x.shape[3]}. Build it with image_size={other} for "
                             f"{other}x{other} inputs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.devices is None:
            return self.classifier(torch.flatten(self.features(x), 1))
        return self._forward_towers(x)

    def tower_devices(self) -> Tuple[torch.device, torch.device]:
        """Where the two towers' parameters are now (two-device model only)."""
        pair = self.features["conv1"].towers
        return pair[0].weight.device, pair[1].weight.device

    def _forward_towers(self, x: torch.Tensor) -> torch.Tensor:
        f, c = self.features, self.classifier
        run = _TowerRunner(self.tower_devices())
        h = [run.to_tower(x, g) for g in range(2)]
        for g in range(2):  # conv1, conv2: each tower on its own maps
            with run.on(g):
                t = f["pool1"](f["conv1"].towers[g](h[g]))
                h[g] = f["pool2"](f["conv2"].towers[g](t))
        h = run.exchange(h)  # conv3 reads both towers
        for g in range(2):
            with run.on(g):
                t = f["relu3"](f["conv3"].towers[g](h[g]))
                t = f["relu4"](f["conv4"].towers[g](t))
                t = f["pool5"](f["relu5"](f["conv5"].towers[g](t)))
                h[g] = torch.flatten(t, 1)
        for i in (6, 7):  # fc6, fc7 read both towers
            h = run.exchange(h)
            for g in range(2):
                with run.on(g):
                    t = c[f"fc{i}"].towers[g](h[g])
                    h[g] = c[f"drop{i}"](c[f"relu{i}"](t))
        h = run.exchange(h)
        for g in range(2):
            with run.on(g):
                h[g] = c["fc8"].towers[g](h[g])
        return run.gather(h)  # logits on tower 0's device

    # -- weights from the seed-style model ----------------------------------------------------

    def load_reference_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        """Load weights from the seed-style single-device model (``reference_alexnet()``).

        Keys are renamed with ``alexnet_cuda.models.reference.REFERENCE_KEY_MAP``
        (``features.0`` -> ``features.conv1``, ``features.4`` -> ``conv2``, ``8`` -> ``conv3``,
        ``10`` -> ``conv4``, ``12`` -> ``conv5``, ``classifier.1/4/6`` -> ``fc6/fc7/fc8``);
        shapes are the same (96-256-384-384-256 with groups=2 in conv2/4/5). The function is
        NOT the same: the reference normalizes across all 96 (256) channels, this model
        within each tower, so responses near the tower boundary differ.
        """
        return self.load_state_dict(convert_reference_state_dict(state_dict), strict=strict)

    def extra_repr(self) -> str:
        devices = "None" if self.devices is None else f"({self.devices[0]}, {self.devices[1]})"
        return (f"num_classes={self.num_classes}, devices={devices}, fused={self.fused}, "
                f"image_size={self.image_size}, lrn={self.lrn}")
