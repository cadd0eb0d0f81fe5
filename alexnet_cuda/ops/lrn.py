"""Cross-channel Local Response Normalization (Krizhevsky et al. 2012, section 3.3).

    b_c = a_c / (k + scale * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2) ** beta

with zero padding at the channel ends and ``scale = alpha / size`` (PyTorch, Caffe,
cuDNN and the original cuda-convnet code) or ``scale = alpha`` (``paper_alpha=True``:
the formula as printed in the paper, 5x stronger for size 5).

The op is ``alexnet_cuda::local_response_norm`` (csrc/lrn/lrn.cpp: the argument checks,
alpha turned into the kernels' scale). Its kernels live in csrc/lrn/ and are registered
as ``alexnet_cuda::lrn_forward`` and ``alexnet_cuda::lrn_backward``, with their autograd
in C++ (csrc/lrn/lrn_autograd.cpp: backward saves only the input; the normalizing scale
is recomputed, never stored, and the output is not kept). This file reads the Python
arguments and calls the op (through ops/_native.py); the kernels' Meta kernels, which
torch.compile traces with, are in C++ too (lrn.cpp).
"""

import torch

from .. import _C
from ._args import int_arg, real_arg, tensor_arg
from ._native import call

_OP = "local_response_norm"
# The overload itself, looked up once (the packet's lookup costs host time per call).
_LOCAL_RESPONSE_NORM = torch.ops.alexnet_cuda.local_response_norm.default


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
    # Python-level reading here (TypeError for a value of the wrong Python type); the
    # value checks are in C++ (csrc/lrn/lrn.cpp).
    tensor_arg(input, _OP, "input")
    size = int_arg(size, _OP, "size")
    alpha, beta, k = real_arg(alpha, _OP, "alpha"), real_arg(beta, _OP, "beta"), real_arg(k, _OP, "k")
    return call(_C.local_response_norm, _LOCAL_RESPONSE_NORM, input, size, alpha, beta, k, bool(paper_alpha))
