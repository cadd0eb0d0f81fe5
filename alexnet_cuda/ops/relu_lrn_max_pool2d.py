"""AlexNet's stage after conv1 and conv2, fused: ReLU -> LRN -> overlapping max-pool.

    relu_lrn_max_pool2d(x, 5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2)
      == max_pool2d(local_response_norm(relu(x), 5, 1e-4, 0.75, 2.0), 3, 2)
         with the LRN applied to each of the 2 channel halves on its own

for a 4-D x (N, C, H, W); a 3-D x is one image (C, H, W), for which the right side
holds with x.unsqueeze(0) (and the result squeezed back).

The kernels live in csrc/relu_lrn_max_pool2d/ and are registered as two ops:

* ``alexnet_cuda::relu_lrn_max_pool2d_forward(input, size, scale, beta, k, kernel_size,
  stride, lrn_groups) -> (out, argmax)``: one CUDA kernel that reads the input once and writes
  the pooled output plus a uint8 window-local argmax (``t_h * kernel_w + t_w``); the LRN
  result never goes to memory.
* ``alexnet_cuda::relu_lrn_max_pool2d_backward(grad_output, argmax, input, size, scale,
  beta, k, kernel_size, stride, lrn_groups) -> grad_input``: one CUDA kernel that routes the
  pooled gradient through the argmax (a deterministic gather, no atomics), recomputes the
  LRN scale from the input, applies the LRN backward and the ReLU mask.

Saved for backward: the input (the convolution's output, which is alive anyway) and one
byte per pooled output: for a (96, 55, 55) image 96*27*27 = 69,984 bytes beyond the input.
Stock eager (relu -> LocalResponseNorm -> MaxPool2d) keeps the ReLU output, the LRN's
intermediate tensors, the LRN output and int64 pooling indices.

The op users call is ``alexnet_cuda::relu_lrn_max_pool2d``
(csrc/relu_lrn_max_pool2d/relu_lrn_max_pool2d.cpp: the argument checks, with errors that
name the argument, and 3-D (unbatched) inputs), which calls the forward op above.
Autograd is in C++ (csrc/relu_lrn_max_pool2d/relu_lrn_max_pool2d_autograd.cpp), and so
are the Meta kernels torch.compile traces with. This file reads the Python arguments and
calls the op (through ops/_native.py).
"""

import torch

from .. import _C
from ._args import int_arg, pair_arg, real_arg, tensor_arg
from ._native import call

_OP = "relu_lrn_max_pool2d"
# The overload itself, looked up once (the packet's lookup costs host time per call).
_RELU_LRN_MAX_POOL2D = torch.ops.alexnet_cuda.relu_lrn_max_pool2d.default


def relu_lrn_max_pool2d(
    input,
    size=5,
    alpha=1e-4,
    beta=0.75,
    k=2.0,
    kernel_size=3,
    stride=2,
    *,
    lrn_groups=1,
    paper_alpha=False,
):
    """``max_pool2d(local_response_norm(relu(input), size, alpha, beta, k), kernel_size, stride)``.

    Pooling has no padding or dilation and floors the output size; ``kernel_size`` and
    ``stride`` are ints or pairs (``stride=None`` means ``kernel_size``). ``lrn_groups=g``
    splits the channels into g equal contiguous groups and keeps every LRN window inside
    its group (the paper's per-GPU normalization on one device). ``paper_alpha=True``
    applies ``alpha`` to the raw sum of squares (the paper's text) instead of
    ``alpha / size`` (PyTorch's convention). Input (N, C, H, W) or (C, H, W),
    fp32/fp16/bf16/fp64 (fp16/bf16 computed in fp32); the output has the input's memory
    format (contiguous or channels_last).

    A 3-D input is one unbatched image (C, H, W), as ``F.max_pool2d`` reads it, whereas
    ``F.local_response_norm`` reads a 3-D tensor as (N, C, L) and would normalize across
    H instead of C: for 3-D input the equation above holds for ``input.unsqueeze(0)``,
    i.e. ``op(x) == composition(x.unsqueeze(0)).squeeze(0)``, not for ``input`` itself.
    """
    # Python-level reading here (TypeError for a value of the wrong Python type); the
    # value checks are in C++ (csrc/relu_lrn_max_pool2d/relu_lrn_max_pool2d.cpp).
    tensor_arg(input, _OP, "input")
    args = read_args(size, alpha, beta, k, kernel_size, stride, lrn_groups)
    return call(_C.relu_lrn_max_pool2d, _RELU_LRN_MAX_POOL2D, input, *args, bool(paper_alpha))


def read_args(size, alpha, beta, k, kernel_size, stride, lrn_groups):
    """The arguments but the input, read as Python values: (size, alpha, beta, k,
    kernel [h, w], stride [h, w], lrn_groups); TypeError naming one of the wrong type."""
    size = int_arg(size, _OP, "size")
    alpha, beta, k = real_arg(alpha, _OP, "alpha"), real_arg(beta, _OP, "beta"), real_arg(k, _OP, "k")
    lrn_groups = int_arg(lrn_groups, _OP, "lrn_groups")
    kernel = pair_arg(kernel_size, _OP, "kernel_size")
    strides = kernel if stride is None else pair_arg(stride, _OP, "stride")
    return size, alpha, beta, k, kernel, strides, lrn_groups


def check_args(size, alpha, beta, k, kernel_size, stride, lrn_groups):
    """``read_args``, then the C++ op's checks of these arguments (ReLULRNMaxPool2d runs
    them at construction, before any input is seen)."""
    args = read_args(size, alpha, beta, k, kernel_size, stride, lrn_groups)
    size, _, _, _, kernel, strides, lrn_groups = args
    # (The binding returns NotImplemented for a SymInt: the op checks it when called.)
    _C.check_relu_lrn_max_pool2d_args(size, kernel, strides, lrn_groups)
    return args
