"""Cross-channel Local Response Normalization (Krizhevsky et al. 2012, section 3.3).

    b_c = a_c / (k + scale * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2) ** beta

with zero padding at the channel ends and ``scale = alpha / size`` (PyTorch, Caffe,
cuDNN and the original cuda-convnet code) or ``scale = alpha`` (``paper_alpha=True``:
the formula as printed in the paper, 5x stronger for size 5).

The kernels live in csrc/lrn/ and are registered as ``alexnet_cuda::lrn_forward`` and
``alexnet_cuda::lrn_backward``. This file adds argument checking, the fake (meta)
implementations that torch.compile traces with, and autograd. Backward saves only the
input: the normalizing scale is recomputed, never stored, and the output is not kept.
"""

import numbers

import torch

from .._extension import check_device
from ._layout import empty_like_kernel_output

_OP = "local_response_norm"


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, paper_alpha=False):
    """Drop-in for ``torch.nn.functional.local_response_norm`` on CPU and CUDA tensors.

    Same arguments and result. ``paper_alpha=True`` applies ``alpha`` to the raw sum of
    squares (the paper's text) instead of ``alpha / size`` (PyTorch's convention).
    Inputs of 3 or more dims (N, C, *) in fp32/fp16/bf16/fp64; contiguous and
    channels-last tensors are processed in place, others are made contiguous first.
    fp16/bf16 are computed in fp32. Integer inputs raise TypeError, deliberately: here
    ``F.local_response_norm`` differs, taking int64 input and returning float32. Errors are
    also the classes PyTorch raises for the same mistakes (``LRNArgumentError`` is a
    RuntimeError, ``LRNDtypeError`` a NotImplementedError), so either ``except`` works.
    """
    _check(input, size)
    scale = float(alpha) if paper_alpha else float(alpha) / size
    return torch.ops.alexnet_cuda.lrn_forward(input, size, scale, float(beta), float(k))


class LRNArgumentError(ValueError, RuntimeError):
    """A bad value (size, channel count): a ValueError, and a RuntimeError as
    F.local_response_norm raises for size <= 0, so code written for it catches ours."""


class LRNDtypeError(TypeError, NotImplementedError):
    """An integer input: a TypeError, and a NotImplementedError (a RuntimeError) as
    F.local_response_norm raises for the integer dtypes it refuses."""


def _check(input, size):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{_OP}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() < 3:
        raise ValueError(
            f"{_OP}: Expected 3D or higher dimensionality input (N, C, *), got input of shape "
            f"{tuple(input.shape)} ({input.dim()} dimensions)"
        )
    if not input.is_floating_point():
        raise LRNDtypeError(f"{_OP}: input must be a floating-point tensor, got dtype {input.dtype}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{_OP}: size must be an int, got {type(size).__name__}")
    if size <= 0:
        raise LRNArgumentError(f"{_OP}: size must be positive, got {size}")
    if input.shape[1] >= 2**30:  # the kernels index channels with 32-bit ints
        raise LRNArgumentError(f"{_OP}: input has {input.shape[1]} channels; at most 2^30 - 1 are supported")
    check_device(input, "input", _OP)


@torch.library.register_fake("alexnet_cuda::lrn_forward")
def _lrn_forward_fake(input, size, scale, beta, k):
    return empty_like_kernel_output(input)


@torch.library.register_fake("alexnet_cuda::lrn_backward")
def _lrn_backward_fake(grad_output, input, size, scale, beta, k):
    return empty_like_kernel_output(input)


def _setup_context(ctx, inputs, output):
    input, size, scale, beta, k = inputs
    ctx.save_for_backward(input)
    ctx.params = (size, scale, beta, k)


def _backward(ctx, grad_output):
    (input,) = ctx.saved_tensors
    grad_input = torch.ops.alexnet_cuda.lrn_backward(grad_output, input, *ctx.params)
    return grad_input, None, None, None, None


def _double_backward(ctx, grad):
    raise NotImplementedError(
        f"{_OP}: double backward (gradients of gradients) is not implemented by alexnet_cuda; "
        "use torch.nn.functional.local_response_norm for higher-order derivatives"
    )


def _setup_backward_context(ctx, inputs, output):
    pass


torch.library.register_autograd("alexnet_cuda::lrn_forward", _backward, setup_context=_setup_context)
torch.library.register_autograd(
    "alexnet_cuda::lrn_backward", _double_backward, setup_context=_setup_backward_context
)
