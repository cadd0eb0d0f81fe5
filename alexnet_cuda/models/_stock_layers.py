"""Stock ``torch.nn`` equivalents of alexnet_cuda's fused layers, used by ``fused=False``.

Only stock modules here: a model built with ``fused=False`` calls none of alexnet_cuda's
ops, so it runs on any device PyTorch supports and is the reference the fused model is
tested against. These compute the same functions as the fused layers (up to
floating-point rounding) and have no parameters, so swapping one for the other never
changes a ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn


class StockReLULRNMaxPool2d(nn.Module):
    """``max_pool2d(local_response_norm(relu(x)))`` from stock modules.

    Same constructor as ``alexnet_cuda.nn.ReLULRNMaxPool2d``. ``lrn_groups=g`` splits the
    channels into ``g`` equal contiguous groups and normalizes each on its own (windows
    never cross a group boundary): with ``g=2`` this is the paper's per-GPU LRN on a
    single device. ``paper_alpha=True`` takes ``alpha`` in the paper's convention
    (no division by ``size``); the default is PyTorch's ``alpha / size``, which is what the
    original cuda-convnet code computed.
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        kernel_size: int = 3,
        stride: int = 2,
        *,
        lrn_groups: int = 1,
        paper_alpha: bool = False,
    ):
        super().__init__()
        if lrn_groups < 1:
            raise ValueError(f"lrn_groups must be >= 1, got {lrn_groups}")
        self.lrn_groups = lrn_groups
        self.relu = nn.ReLU()
        self.lrn = nn.LocalResponseNorm(size, alpha * size if paper_alpha else alpha, beta, k)
        self.pool = nn.MaxPool2d(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        if self.lrn_groups == 1:
            x = self.lrn(x)
        else:
            if x.shape[1] % self.lrn_groups:
                raise ValueError(f"{x.shape[1]} channels do not split into {self.lrn_groups} equal LRN groups")
            x = torch.cat([self.lrn(part) for part in x.chunk(self.lrn_groups, dim=1)], dim=1)
        return self.pool(x)

    def extra_repr(self) -> str:
        return f"lrn_groups={self.lrn_groups}"
