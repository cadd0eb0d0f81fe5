"""The seed-style stock AlexNet (one device, one LRN over all channels) and its key map.

``reference_alexnet()`` builds the single-device model many ports use: the paper's
96-256-384-384-256 widths with ``groups=2`` in conv2, conv4 and conv5, but ONE
``nn.LocalResponseNorm`` over all 96 (256) channels. That LRN is a different function
from the paper's, whose normalization windows never cross between the two GPUs'
halves (``alexnet_cuda.models.AlexNet`` normalizes each tower on its own). The two
models have the same parameters with the same shapes, so weights move between them by
renaming keys (:data:`REFERENCE_KEY_MAP`); after loading, outputs differ only through
the LRN windows that straddle channel 47/48 (conv1) and 127/128 (conv2).

To run the reference function itself with fused kernels, use
``alexnet_cuda.convert(reference_alexnet())`` instead (the package's ``convert`` is the
function, which hides the module of the same name).
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import nn

# reference (nn.Sequential index) prefix -> AlexNet prefix
REFERENCE_KEY_MAP: Dict[str, str] = {
    "features.0": "features.conv1",
    "features.4": "features.conv2",
    "features.8": "features.conv3",
    "features.10": "features.conv4",
    "features.12": "features.conv5",
    "classifier.1": "classifier.fc6",
    "classifier.4": "classifier.fc7",
    "classifier.6": "classifier.fc8",
}


class ReferenceAlexNet(nn.Module):
    """Seed-style AlexNet from stock layers; 227x227 input, 60,965,224 parameters."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, 4),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def reference_alexnet(num_classes: int = 1000, dropout: float = 0.5) -> ReferenceAlexNet:
    """The seed-style single-device stock AlexNet (see the module docstring)."""
    return ReferenceAlexNet(num_classes, dropout)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a :class:`ReferenceAlexNet` state_dict's keys to :class:`AlexNet`'s.

    ``features.0.weight`` -> ``features.conv1.weight`` and so on (:data:`REFERENCE_KEY_MAP`);
    tensors are passed through unchanged (every shape already matches). Raises ValueError
    on a key the map does not know.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in REFERENCE_KEY_MAP:
            raise ValueError(
                f"unexpected key {key!r} in a reference AlexNet state_dict; known layers: "
                f"{', '.join(REFERENCE_KEY_MAP)}"
            )
        out[f"{REFERENCE_KEY_MAP[prefix]}.{leaf}"] = value
    return out
