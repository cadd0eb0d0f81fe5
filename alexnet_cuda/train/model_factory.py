"""Which network to train: the project's AlexNet, or a small AlexNet-style net for the demo.

``build_model`` imports ``alexnet_cuda.models.AlexNet`` only when it is asked for, so the
training code works (and is tested) with any ``nn.Module``.

:class:`SmallAlexNet` exists for the no-download demo (8x8 digits upscaled to 28x28, crops
of 24): the real AlexNet's 11x11/4 first layer and its 6x6x256 classifier input assume
227x227 images. It keeps AlexNet's structure and layer types, scaled down:

    conv1 5x5/1 pad 2, 3->w      ReLU, LRN(5, 1e-4, 0.75, k=2), max-pool 3/2 (overlapping)
    conv2 5x5 pad 2, groups=2    ReLU, LRN, max-pool 3/2      ("own GPU only")
    conv3 3x3 pad 1, groups=1    ReLU                          ("both GPUs")
    conv4 3x3 pad 1, groups=2    ReLU
    conv5 3x3 pad 1, groups=2    ReLU, max-pool 3/2
    fc6, fc7 with ReLU and dropout 0.5, fc8 -> classes
    (widths w, 2w, 3w, 3w, 2w and 8w; the demo's w = 16 gives 73k parameters)

It is not AlexNet: about 800x fewer parameters than AlexNet's 61M, a 5x5 stride-1 first
layer for 24x24 inputs, and He initialisation by default (the paper's N(0, 0.01) init,
``init="paper"``, learns far more slowly at this size). It uses torch's LRN and max-pool
(the same functions as the paper's; the project's fused kernels are for the real model).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


def _pool_out(s: int) -> int:
    return (s - 3) // 2 + 1


class SmallAlexNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32, crop: int = 28, dropout: float = 0.5, init: str = "he"):
        super().__init__()
        w1, w2, w3, w5, fc = width, 2 * width, 3 * width, 2 * width, 8 * width
        self.features = nn.Sequential(
            nn.Conv2d(3, w1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(w1, w2, 5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(w2, w3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w3, w3, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(w3, w5, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        s = _pool_out(_pool_out(_pool_out(crop)))
        if s < 1:
            raise ValueError(f"crop {crop} is too small for three 3/2 poolings")
        self.classifier = nn.Sequential(
            # dropout on the outputs of fc6 and fc7, where the paper puts it
            nn.Flatten(),
            nn.Linear(w5 * s * s, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, num_classes),
        )

        self.reset_parameters(init)

    def reset_parameters(self, init: str = "he") -> None:
        """``he``: Kaiming-normal weights, zero biases (trains in a few CPU minutes).
        ``paper``: N(0, 0.01) weights, biases 1 in conv2, conv4, conv5, fc6, fc7 and 0
        elsewhere, as the paper; at this size it learns far more slowly."""
        layers = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        for i, m in enumerate(layers):
            if init == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif init == "paper":
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)
            else:
                raise ValueError(f"unknown init {init!r} (he, paper)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(
    arch: str,
    num_classes: int,
    *,
    crop: int = 227,
    fused: bool = True,
    dropout: float = 0.5,
    devices: Optional[Sequence[str]] = None,
    width: int = 32,
) -> nn.Module:
    """The network named by ``--arch``.

    ``alexnet``: alexnet_cuda.models.AlexNet for ``crop`` x ``crop`` inputs (227 or 224; the
    paper's two-tower net; ``devices`` places the towers on two GPUs). ``small``: :class:`SmallAlexNet` (the demo's).
    """
    if arch == "alexnet":
        try:
            from alexnet_cuda.models import AlexNet
        except ImportError as exc:
            raise ImportError(
                "--arch alexnet needs alexnet_cuda.models.AlexNet, which could not be imported "
                f"({exc}); use --arch small for the demo network"
            ) from exc
        kwargs = dict(fused=fused, dropout=dropout, image_size=crop)  # 227, or 224 (conv1 padding 2)
        if devices is not None:
            kwargs["devices"] = tuple(devices)
        return AlexNet(num_classes, **kwargs)
    if arch == "small":
        if devices is not None:
            raise ValueError("--model-parallel is for --arch alexnet")
        return SmallAlexNet(num_classes, width=width, crop=crop, dropout=dropout)
    raise ValueError(f"unknown arch {arch!r} (alexnet, small)")
