"""Memory-layout helpers shared by the ops' fake (meta) implementations."""

import torch


def is_channels_last_dense(x: torch.Tensor) -> bool:
    """True when x is dense with the channel dim (dim 1) innermost: NHWC, NDHWC, NLC.

    Mirrors the C++ kernels' test (csrc/*/): those tensors are processed in place,
    every other non-contiguous tensor is made contiguous first.
    """
    if x.dim() < 3 or x.is_contiguous():
        return False
    return x.permute(0, *range(2, x.dim()), 1).is_contiguous()


def empty_like_kernel_output(x: torch.Tensor) -> torch.Tensor:
    """An uninitialized tensor with the layout the C++ kernels give their outputs."""
    if is_channels_last_dense(x):
        return torch.empty_like(x)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)
