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

``devices=(d0, d1)``: model parallelism as in the paper. Each layer is a
:class:`~alexnet_cuda.models.towers.TowerPair`, ``<layer>.towers[g]`` holding tower g's
output rows on ``devices[g]``, and ``features``/``classifier`` are ``nn.ModuleDict``.
Activations cross between devices only where the paper's GPUs communicated: into conv3
and into fc6, fc7 and fc8; the logits are gathered on ``devices[0]``. Both devices may be
the same (two CUDA streams on one GPU) or CPUs (sequential, for testing); the streams and
copies are in :mod:`alexnet_cuda.models.towers`. Do not ``.to(device)`` a two-device
model (that would put both towers on one device; ``.double()`` etc. are fine): the tower
devices are read from the parameters at every call. torch.compile is meant for the
single-device model; the two-device forward is eager code.

state_dict (identical for both placements, and for ``fused`` True/False)
-----------------------------------------------------------------------
``features.conv{1..5}.{weight,bias}`` and ``classifier.fc{6,7,8}.{weight,bias}`` in the
single-device layout, e.g. ``features.conv2.weight`` is (256, 48, 5, 5) (grouped),
``features.conv3.weight`` (384, 256, 3, 3), ``classifier.fc6.weight`` (4096, 9216); the
input-channel order of conv3/fc6 is (tower 0's maps, tower 1's maps) in both placements.
The two-device model shows and loads the same tensors (halves concatenated; see
:mod:`alexnet_cuda.models.towers`), so ``a.load_state_dict(b.state_dict())`` works between
any two placements.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import nn as fused_nn
from ._stock_layers import StockReLULRNMaxPool2d
from .reference import convert_reference_state_dict
from .towers import DeviceLike, TowerPair, TowerRunner, parse_devices

__all__ = ["AlexNet", "LRNParams", "PAPER_LRN"]


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

_PAPER_WIDTHS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256, "fc": 4096}


def _check_options(num_classes: int, image_size: int, lrn, width: float) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if image_size not in (224, 227):
        raise ValueError(f"image_size must be 227 (conv1 without padding) or 224 (conv1 padding 2); got {image_size}")
    if lrn is not None and not isinstance(lrn, LRNParams):
        raise ValueError(f"lrn must be an LRNParams or None, got {lrn!r}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")


def _paper_init(layer: nn.Module, bias: float) -> nn.Module:
    """Weights from N(0, 0.01), biases constant (Section 5 of the paper)."""
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.constant_(layer.bias, bias)
    return layer


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
        width: multiplies the width of every layer but fc8 (1.0 = the paper), rounded to
            an even number of at least 2 (one half per tower). Only for tests and small
            experiments; state_dicts load only between models of equal width.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        devices: Optional[Sequence[DeviceLike]] = None,
        fused: bool = True,
        dropout: float = 0.5,
        lrn: Optional[LRNParams] = PAPER_LRN,
        bias_init: float = 1.0,
        image_size: int = 227,
        width: float = 1.0,
    ):
        super().__init__()
        _check_options(num_classes, image_size, lrn, width)
        self.devices = parse_devices(devices)
        self.fused = bool(fused)
        self.lrn = lrn
        self.image_size = image_size
        self.num_classes = num_classes
        self.widths = w = {name: max(2, 2 * round(c * width / 2)) for name, c in _PAPER_WIDTHS.items()}
        conv, fc, relu = self._conv, self._fc, self._relu
        # conv2, conv4 and conv5 read only the maps of their own tower (GPU); conv3 and the
        # fully-connected layers read both. The paper's bias of 1 in conv2, conv4, conv5,
        # fc6 and fc7 gives their ReLUs positive inputs early in training.
        self.features = self._container(
            [
                ("conv1", conv(3, w["conv1"], 11, stride=4, padding=2 if image_size == 224 else 0)),
                ("pool1", self._relu_lrn_max_pool2d()),
                ("conv2", conv(w["conv1"], w["conv2"], 5, padding=2, own_tower=True, bias=bias_init)),
                ("pool2", self._relu_lrn_max_pool2d()),
                ("conv3", conv(w["conv2"], w["conv3"], 3, padding=1)),
                ("relu3", relu()),
                ("conv4", conv(w["conv3"], w["conv4"], 3, padding=1, own_tower=True, bias=bias_init)),
                ("relu4", relu()),
                ("conv5", conv(w["conv4"], w["conv5"], 3, padding=1, own_tower=True, bias=bias_init)),
                ("relu5", relu()),
                ("pool5", fused_nn.MaxPool2d(3, 2) if self.fused else nn.MaxPool2d(3, 2)),
            ]
        )
        self.classifier = self._container(
            [
                ("fc6", fc(w["conv5"] * 6 * 6, w["fc"], bias=bias_init)),
                ("relu6", nn.ReLU(inplace=True)),
                ("drop6", nn.Dropout(dropout)),
                ("fc7", fc(w["fc"], w["fc"], bias=bias_init)),
                ("relu7", nn.ReLU(inplace=True)),
                ("drop7", nn.Dropout(dropout)),
                ("fc8", fc(w["fc"], num_classes)),
            ]
        )

    # -- building blocks: one module on one device, a TowerPair on two ----------------------

    def _container(self, layers) -> nn.Module:
        # one device: run in order; two devices: _forward_towers picks the layers by name
        return (nn.Sequential if self.devices is None else nn.ModuleDict)(OrderedDict(layers))

    def _conv(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        *,
        own_tower: bool = False,
        bias: float = 0.0,
    ) -> nn.Module:
        """A convolution (with its ReLU when fused). ``own_tower``: each tower's kernels
        see only that tower's half of the input maps (``groups=2`` on one device)."""
        cls = fused_nn.Conv2dReLU if self.fused else nn.Conv2d

        def make(cin: int, cout: int, groups: int, device) -> nn.Module:
            return _paper_init(
                cls(cin, cout, kernel, stride=stride, padding=padding, groups=groups, device=device), bias
            )

        if self.devices is None:
            return make(cin, cout, 2 if own_tower else 1, None)
        tower_cin = cin // 2 if own_tower else cin
        return TowerPair.split(lambda rows, device: make(tower_cin, rows, 1, device), cout, self.devices)

    def _fc(self, fin: int, fout: int, *, bias: float = 0.0) -> nn.Module:
        """A fully-connected layer (it reads both towers)."""

        def make(rows: int, device) -> nn.Module:
            return _paper_init(nn.Linear(fin, rows, device=device), bias)

        if self.devices is None:
            return make(fout, None)
        return TowerPair.split(make, fout, self.devices)

    def _relu(self) -> nn.Module:
        # fused convolutions (Conv2dReLU) already apply the ReLU
        return nn.Identity() if self.fused else nn.ReLU(inplace=True)

    def _relu_lrn_max_pool2d(self) -> nn.Module:
        """ReLU -> LRN -> max-pool 3/2 after conv1 and conv2.

        The LRN's windows never cross the tower boundary: on one device it is grouped
        (``lrn_groups=2``), on two each tower normalizes only its own maps. With fused=True
        the convolution before it is a Conv2dReLU, and the stage's own ReLU (a no-op on
        non-negative input) is part of the fused kernel anyway.
        """
        if self.lrn is None:
            if self.fused:
                return fused_nn.MaxPool2d(3, 2)
            return nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        p = self.lrn
        cls = fused_nn.ReLULRNMaxPool2d if self.fused else StockReLULRNMaxPool2d
        lrn_groups = 2 if self.devices is None else 1
        return cls(p.size, p.alpha, p.beta, p.k, 3, 2, lrn_groups=lrn_groups, paper_alpha=p.paper_alpha)

    # -- forward -----------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.image_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"AlexNet expects a batch of images shaped (N, 3, {s}, {s}); got {shape}")
        if x.shape[1] != 3:
            raise ValueError(
                f"AlexNet expects 3 input channels (RGB); got {x.shape[1]} channels "
                f"in an input of shape {tuple(x.shape)}"
            )
        if x.shape[2] != s or x.shape[3] != s:
            other = 224 if s == 227 else 227
            raise ValueError(
                f"this AlexNet was built for {s}x{s} inputs (image_size={s}); got "
                f"{x.shape[2]}x{x.shape[3]}. Build it with image_size={other} for "
                f"{other}x{other} inputs"
            )

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
        """``forward`` one tower at a time; the towers trade maps where the paper's GPUs did."""
        f, c = self.features, self.classifier
        run = TowerRunner(self.tower_devices())
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
        return (
            f"num_classes={self.num_classes}, devices={devices}, fused={self.fused}, "
            f"image_size={self.image_size}, lrn={self.lrn}"
        )
