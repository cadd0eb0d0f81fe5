"""The paper's data augmentation, per batch, on the training device (GPU or CPU).

Section 4.1 of the paper: random 224x224 (227 in practice) patches of the 256x256 images,
their horizontal reflections, and "PCA colour noise": to each RGB pixel of an image add
``[p1 p2 p3] [a1*l1, a2*l2, a3*l3]^T`` with ``a_i ~ N(0, 0.1)`` drawn once per image each
time the image is used (so per image per epoch), where ``p_i, l_i`` are the eigenvectors and
eigenvalues of the 3x3 covariance of RGB values over the training set.

Everything happens in one gather: the crop offsets and the flip are folded into per-image
row and column index vectors, one advanced-indexing read produces the (N, 3, c, c) batch,
and the per-image colour offset is added in the same expression. No Python loop over
images, no intermediate full-size copies. It is plain torch, so it runs on any device.

Random numbers come from a ``torch.Generator`` on the CPU that the caller seeds per step
(see loop.py): that makes augmentation reproducible across devices and trivially
resumable, and the draws (3 ints + 3 floats per image) are tiny to move to the device.

Units of the colour noise. The formula adds eigenvalues (pixel units squared) to pixels, so
its strength depends on the scale the PCA was computed in. We compute the PCA on RGB values
in [0, 1] (the convention of the widely used ports, e.g. fb.resnet.torch's "Lighting" with
ImageNet eigenvalues 0.2175, 0.0188, 0.0045) and convert the offset to the input's 0..255
units, giving a typical offset of a few grey levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class AugmentDraws:
    """The random choices for one batch (kept for tests and debugging)."""

    top: torch.Tensor  # (N,) int64 crop row offsets
    left: torch.Tensor  # (N,) int64 crop column offsets
    flip: torch.Tensor  # (N,) bool
    alpha: torch.Tensor  # (N, 3) float32, N(0, pca_std)


def draw(
    n: int, size: int, crop: int, generator: Optional[torch.Generator] = None, pca_std: float = 0.1, flip: bool = True
) -> AugmentDraws:
    """Uniform crop offsets in [0, size - crop], fair coin flips, alpha ~ N(0, pca_std)."""
    top = torch.randint(0, size - crop + 1, (n,), generator=generator)
    left = torch.randint(0, size - crop + 1, (n,), generator=generator)
    if flip:
        fl = torch.rand(n, generator=generator) < 0.5
    else:
        fl = torch.zeros(n, dtype=torch.bool)
    alpha = torch.randn(n, 3, generator=generator) * pca_std
    return AugmentDraws(top, left, fl, alpha)


def pca_offset(
    alpha: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor, pixel_scale: float = 255.0
) -> torch.Tensor:
    """(N, 3) RGB offsets: eigvecs @ (alpha * eigvals), converted from [0,1] to pixel units."""
    return (alpha * eigvals.to(alpha)) @ eigvecs.to(alpha).T * pixel_scale


def crop_flip_indices(top, left, flip, crop: int):
    """Per-image row and column index vectors (N, crop) realising crop offsets and flips."""
    ar = torch.arange(crop, device=top.device)
    rows = top[:, None] + ar[None, :]
    # A flipped crop reads its columns right to left.
    cols = torch.where(flip[:, None], left[:, None] + (crop - 1 - ar)[None, :], left[:, None] + ar[None, :])
    return rows, cols


def gather_crops(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W), rows/cols (N, c) -> (N, C, c, c) with out[n,:,i,j] = x[n,:,rows[n,i],cols[n,j]]."""
    n, c = x.shape[:2]
    ni = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return x[ni, ci, rows[:, None, :, None], cols[:, None, None, :]]


class GPUAugment:
    """Mean subtraction + random crop + flip + PCA colour noise for a uint8 batch, in one pass.

    Args:
        mean: (3, S, S) or (3, 1, 1) mean in 0..255 units (subtracted before cropping, as
            the paper subtracts the mean of the 256x256 images).
        eigvals, eigvecs: RGB PCA in [0,1] units (data.DatasetStats).
        crop: output size (227 faithful, 224 the paper's text).
        pca_std: standard deviation of alpha (0.1 in the paper; 0 disables).
        flip: random horizontal flips.
        input_scale: multiply the mean-subtracted values by this (1.0 = raw 0..255 units
            as the paper and Caffe feed the net).
    """

    def __init__(
        self,
        mean: torch.Tensor,
        eigvals: torch.Tensor,
        eigvecs: torch.Tensor,
        *,
        crop: int = 227,
        pca_std: float = 0.1,
        flip: bool = True,
        input_scale: float = 1.0,
        device=None,
    ):
        device = torch.device(device) if device is not None else mean.device
        self.mean = mean.to(device=device, dtype=torch.float32)
        self.eigvals = eigvals.to(device=device, dtype=torch.float32)
        self.eigvecs = eigvecs.to(device=device, dtype=torch.float32)
        self.crop = crop
        self.pca_std = pca_std
        self.flip = flip
        self.input_scale = input_scale
        self.device = device

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """The draws (made on the CPU) to the device without a sync: a copy from pageable memory
        makes the host wait for the stream, so the next step's kernels could not be queued while
        this one runs; from pinned memory it is asynchronous."""
        if self.device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> float32, mean-subtracted and scaled (no augmentation)."""
        x = images.to(self.device, non_blocking=True).float() - self.mean
        return x * self.input_scale if self.input_scale != 1.0 else x

    def __call__(
        self, images: torch.Tensor, generator: Optional[torch.Generator] = None, draws: Optional[AugmentDraws] = None
    ) -> torch.Tensor:
        n, _, h, w = images.shape
        if n == 0:  # every image of the batch was unreadable: an empty batch, still a step
            return torch.zeros(0, 3, self.crop, self.crop, device=self.device)
        if h != w:
            raise ValueError(f"expected square images, got {h}x{w}")
        if draws is None:
            draws = draw(n, h, self.crop, generator, self.pca_std, self.flip)
        self.last_draws = draws
        x = images.to(self.device, non_blocking=True)
        top, left, flip, alpha = (self._to_device(t) for t in (draws.top, draws.left, draws.flip, draws.alpha))
        rows, cols = crop_flip_indices(top, left, flip, self.crop)
        # Crop the uint8 image and the (broadcast) mean with the same indices, then one fused
        # elementwise expression: (img - mean + pca) * scale. Cropping the uint8 input first
        # keeps the gather at 1 byte/pixel.
        crops = gather_crops(x, rows, cols).float()
        if self.mean.shape[-1] == 1:
            mean = self.mean
        else:
            mean = gather_crops(self.mean.expand(n, -1, -1, -1), rows, cols)
        offset = pca_offset(alpha, self.eigvals, self.eigvecs)[:, :, None, None]
        out = crops - mean + offset
        return out * self.input_scale if self.input_scale != 1.0 else out


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """The central crop x crop patch of (N, C, S, S) (the paper's single-view test)."""
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def ten_crops(x: torch.Tensor, crop: int) -> torch.Tensor:
    """The paper's 10 test views: (10, N, C, crop, crop) = 4 corners + centre, then their flips.

    Order: top-left, top-right, bottom-left, bottom-right, centre, and the same five flipped
    (torchvision's ten_crop order).
    """
    h, w = x.shape[-2:]
    views = [
        x[..., :crop, :crop],
        x[..., :crop, w - crop :],
        x[..., h - crop :, :crop],
        x[..., h - crop :, w - crop :],
        center_crop(x, crop),
    ]
    views += [v.flip(-1) for v in views]
    return torch.stack(views)
