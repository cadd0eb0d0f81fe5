"""Overlapping max-pooling (Krizhevsky et al. 2012, section 3.4): a drop-in for
``torch.nn.functional.max_pool2d``.

The op is ``alexnet_cuda::max_pool2d`` (csrc/max_pool2d/max_pool2d.cpp: PyTorch's
argument checks, with errors that name the argument, and 3-D (unbatched) inputs), which
calls the kernels, registered as two ops:

* ``alexnet_cuda::max_pool2d_forward(input, kernel_size, stride, padding, dilation,
  ceil_mode, return_indices) -> (out, argmax)`` on a 4-D input. ``argmax`` is int64
  flat indices ``h * W + w`` (what ``return_indices=True`` returns) when indices are
  asked for, or when ``kernel_h * kernel_w > 256``; otherwise it is a uint8
  window-local index ``t_h * kernel_w + t_w``: one byte per output element instead of
  eight, and all the backward needs.
* ``alexnet_cuda::max_pool2d_backward(grad_output, argmax, input_size, kernel_size,
  stride, padding, dilation, channels_last) -> grad_input``: a deterministic gather
  (no atomics), reading either argmax encoding.

Autograd, in C++ (csrc/max_pool2d/max_pool2d_autograd.cpp), saves only ``argmax`` (and
the input's shape and memory format): nothing input-sized; double backward is a gather.
This file reads the Python arguments and calls the op (through ops/_native.py); the
kernels' Meta kernels, which torch.compile traces with, are in C++ too (max_pool2d.cpp).

Results are bit-identical to PyTorch's: values, int64 indices (first maximum in
row-major order wins ties; NaN propagates and the window's last NaN is reported;
padding never wins), output sizes (ceil_mode) and memory format (output and indices
follow ``input.suggest_memory_format()``). Gradients are summed in fp32 (opmath) in
PyTorch's order, and are PyTorch's but for windows with no tap inside the input (see
``max_pool2d``'s docstring).
"""

import torch

from .. import _C
from ._args import bool_arg, pair_arg, tensor_arg
from ._native import call

_OP = "max_pool2d"
# The overload itself, looked up once (the packet's lookup costs host time per call).
_MAX_POOL2D = torch.ops.alexnet_cuda.max_pool2d.default


def max_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
    """Drop-in for ``torch.nn.functional.max_pool2d`` on CPU and CUDA tensors.

    Same arguments (ints or pairs; ``stride=None`` means ``kernel_size``), same results
    and errors. Input (N, C, H, W) or (C, H, W); fp32/fp16/bf16/fp64 (and, on CPU,
    integer dtypes, as PyTorch). Contiguous and channels_last inputs are read in place
    and the output has the same memory format; other strides are copied first.
    Returns ``out``, or ``(out, indices)`` with ``return_indices=True``.

    Empty windows: with dilation, padding and ``ceil_mode`` a legal window can have no tap
    inside the input. Its value is -inf (the dtype's lowest for integers) and its index,
    as PyTorch's, is the flat ``h * W + w`` of its first tap at or past 0 along each axis:
    outside the input along one axis at least, so past the plane's end or, if past W
    only, wrapped onto the next row (a pixel that may lie outside the window's span).
    Where its gradient goes:

    * ``return_indices=True`` (int64 argmax): to that flat index if it is in the plane
      (``0 <= index < H * W``) and the pixel lies inside the window's span (the taps'
      bounding box), as in PyTorch's CUDA backward (a gather over the windows whose span
      covers the pixel); otherwise nowhere. PyTorch's CPU backward adds it at the flat
      index unconditionally (even past the plane's end).
    * ``return_indices=False`` (compact uint8 argmax): nowhere, always; PyTorch routes
      it as above.

    For every window with a tap inside the input both modes give PyTorch's gradient;
    the compact mode differs from PyTorch only for empty windows.

    Windows whose taps are all -inf: the index is that of the first tap inside the input,
    as PyTorch's CPU kernels and CUDA NCHW kernel report it, except on CUDA channels_last
    with ``return_indices=True``, where it is 0, as PyTorch's CUDA channels_last kernel
    reports it. In the compact mode on CUDA channels_last such a window's gradient goes
    to its first tap, where PyTorch's goes to pixel (0, 0) or nowhere
    (csrc/max_pool2d/max_pool2d.h explains why).
    """
    # Python-level reading here (TypeError for a value of the wrong Python type, as
    # PyTorch's parser raises); the value checks are in C++ (csrc/max_pool2d/max_pool2d.cpp).
    tensor_arg(input, _OP, "input")
    bool_arg(ceil_mode, _OP, "ceil_mode")
    k = pair_arg(kernel_size, _OP, "kernel_size")
    s = k if stride is None else (pair_arg(stride, _OP, "stride", allow_empty=True) or k)
    p = pair_arg(padding, _OP, "padding")
    d = pair_arg(dilation, _OP, "dilation")
    out, argmax = call(_C.max_pool2d, _MAX_POOL2D, input, k, s, p, d, ceil_mode, bool(return_indices))
    return (out, argmax) if return_indices else out
