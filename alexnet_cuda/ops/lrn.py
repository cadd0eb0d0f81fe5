"""Cross-channel Local Response Normalization (Krizhevsky et al. 2012, section 3.3).

    b_c = a_c / (k + scale * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2) ** beta

with zero padding at the channel ends and ``scale = alpha / size`` (PyTorch, Caffe,
cuDNN and the original cuda-convnet code) or ``scale = alpha`` (``paper_alpha=True``:
the formula as printed in the paper, 5x stronger for size 5).

The kernels live in csrc/lrn/ and are registered as ``alexnet_cuda::lrn_forward`` and
``alexnet_cuda::lrn_backward``, with their autograd in C++ (csrc/lrn/lrn_autograd.cpp:
backward saves only the input; the normalizing scale is recomputed, never stored, and
the output is not kept). This file adds argument checking and the fake (meta)
implementations that torch.compile traces with.
"""

import torch

from .._extension import check_device
from ._args import ArgumentError, DtypeError, floating_input, int_arg, real_arg
from ._layout import empty_like_kernel_output

# The overload itself, looked up once (the packet's lookup costs host time per call).
_FORWARD = torch.ops.alexnet_cuda.lrn_forward.default
_OP = "local_response_norm"

# The names these errors had before every op shared them (kept for code that catches them).
LRNArgumentError = ArgumentError
LRNDtypeError = DtypeError


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, paper_alpha=False):
    """Drop-in for ``torch.nn.functional.local_response_norm`` on CPU and CUDA tensors.

    Same arguments and result. ``paper_alpha=True`` applies ``alpha`` to the raw sum of
    squares (the paper's text) instead of ``alpha / size`` (PyTorch's convention).
    Inputs of 3 or more dims (N, C, *) in fp32/fp16/bf16/fp64; contiguous and
    channels-last tensors are processed in place, others are made contiguous first.
    fp16/bf16 are computed in fp32. Integer inputs raise ``DtypeError``, deliberately: here
    ``F.local_response_norm`` differs, taking int64 input and returning float32. Errors
    follow ``alexnet_cuda.ops._args``: a bad value raises ``ArgumentError`` (a ValueError
    and a RuntimeError, as PyTorch raises), a dtype ``DtypeError`` (a TypeError and a
    NotImplementedError), so either ``except`` works.
    """
    size = _check(input, size)
    alpha, beta, k = (real_arg(v, _OP, n) for v, n in ((alpha, "alpha"), (beta, "beta"), (k, "k")))
    scale = alpha if paper_alpha else alpha / size
    return _FORWARD(input, size, scale, beta, k)


def _check(input, size):
    floating_input(input, _OP)
    if input.dim() < 3:
        raise ArgumentError(
            f"{_OP}: Expected 3D or higher dimensionality input (N, C, *), got input of shape "
            f"{tuple(input.shape)} ({input.dim()} dimensions)"
        )
    size = int_arg(size, _OP, "size")
    if size <= 0:
        raise ArgumentError(f"{_OP}: size must be positive, got {size}")
    if input.shape[1] >= 2**30:  # the kernels index channels with 32-bit ints
        raise ArgumentError(f"{_OP}: input has {input.shape[1]} channels; at most 2^30 - 1 are supported")
    check_device(input, "input", _OP)
    return size


@torch.library.register_fake("alexnet_cuda::lrn_forward")
def _lrn_forward_fake(input, size, scale, beta, k):
    return empty_like_kernel_output(input)


@torch.library.register_fake("alexnet_cuda::lrn_backward")
def _lrn_backward_fake(grad_output, input, size, scale, beta, k):
    return empty_like_kernel_output(input)
