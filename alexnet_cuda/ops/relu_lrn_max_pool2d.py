"""AlexNet's stage after conv1 and conv2, fused: ReLU -> LRN -> overlapping max-pool.

    relu_lrn_max_pool2d(x, 5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2)
      == max_pool2d(local_response_norm(relu(x), 5, 1e-4, 0.75, 2.0), 3, 2)
         with the LRN applied to each of the 2 channel halves on its own

for a 4-D x (N, C, H, W); a 3-D x is one image (C, H, W), for which the right side
holds with x.unsqueeze(0) (and the result squeezed back).

The kernels live in csrc/relu_lrn_max_pool2d/ and are registered as two ops:

* ``alexnet_cuda::relu_lrn_max_pool2d_forward(input, size, scale, beta, k, kernel_size,
  stride, groups) -> (out, argmax)``: one CUDA kernel that reads the input once and writes
  the pooled output plus a uint8 window-local argmax (``t_h * kernel_w + t_w``); the LRN
  result never goes to memory.
* ``alexnet_cuda::relu_lrn_max_pool2d_backward(grad_output, argmax, input, size, scale,
  beta, k, kernel_size, stride, groups) -> grad_input``: one CUDA kernel that routes the
  pooled gradient through the argmax (a deterministic gather, no atomics), recomputes the
  LRN scale from the input, applies the LRN backward and the ReLU mask.

Saved for backward: the input (the convolution's output, which is alive anyway) and one
byte per pooled output: for a (96, 55, 55) image 96*27*27 = 69,984 bytes beyond the input.
Stock eager (relu -> LocalResponseNorm -> MaxPool2d) keeps the ReLU output, the LRN's
intermediate tensors, the LRN output and int64 pooling indices.

This file adds argument checking (errors name the argument), 3-D (unbatched) inputs,
the fake (meta) implementations torch.compile traces with, and autograd.
"""

import numbers

import torch
from torch._prims_common import suggest_memory_format

from .._extension import check_device

_OP = "relu_lrn_max_pool2d"
_MAX_WINDOW = 256  # kernel_h * kernel_w whose window-local argmax fits a uint8


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
    kernel, strides = _check(input, size, alpha, beta, k, kernel_size, stride, lrn_groups)
    scale = float(alpha) if paper_alpha else float(alpha) / size
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    out, _ = torch.ops.alexnet_cuda.relu_lrn_max_pool2d_forward(
        x, size, scale, float(beta), float(k), kernel, strides, lrn_groups
    )
    return out.squeeze(0) if unbatched else out


# --------------------------------------------------------------------------------------
# Argument checking.


def _is_int(v):
    return isinstance(v, (numbers.Integral, torch.SymInt)) and not isinstance(v, bool)


def _pair(value, name):
    if _is_int(value):
        return [value, value]
    if isinstance(value, (tuple, list, torch.Size)) and len(value) in (1, 2) and all(_is_int(v) for v in value):
        return [value[0], value[-1]]
    raise TypeError(f"{_OP}: {name} must be an int or a pair of ints, got {value!r}")


def _check(input, size, alpha, beta, k, kernel_size, stride, lrn_groups):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{_OP}: input must be a torch.Tensor, got {type(input).__name__}")
    shape = tuple(input.shape)
    if input.dim() not in (3, 4):
        raise ValueError(f"{_OP}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {shape}")
    if any(s == 0 for s in shape[-3:]):
        raise ValueError(f"{_OP}: only the batch dimension of input may be empty, got shape {shape}")
    if not input.is_floating_point():
        raise TypeError(f"{_OP}: input must be a floating-point tensor, got dtype {input.dtype}")
    if not _is_int(size):
        raise TypeError(f"{_OP}: size must be an int, got {type(size).__name__}")
    if size <= 0:
        raise ValueError(f"{_OP}: size must be positive, got {size}")
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{_OP}: {name} must be a real number, got {type(v).__name__}")
    if not _is_int(lrn_groups):
        raise TypeError(f"{_OP}: lrn_groups must be an int, got {type(lrn_groups).__name__}")
    if lrn_groups < 1:
        raise ValueError(f"{_OP}: lrn_groups must be >= 1, got {lrn_groups}")
    C, H, W = shape[-3:]
    if C % lrn_groups != 0:
        raise ValueError(f"{_OP}: input has {C} channels, which do not split into lrn_groups={lrn_groups} equal groups")
    kernel = _pair(kernel_size, "kernel_size")
    strides = kernel if stride is None else _pair(stride, "stride")
    if kernel[0] <= 0 or kernel[1] <= 0:
        raise ValueError(f"{_OP}: kernel_size must be positive, got kernel_size={tuple(kernel)}")
    if strides[0] <= 0 or strides[1] <= 0:
        raise ValueError(f"{_OP}: stride must be positive, got stride={tuple(strides)}")
    if kernel[0] * kernel[1] > _MAX_WINDOW:
        raise ValueError(
            f"{_OP}: kernel_size={tuple(kernel)} has more than {_MAX_WINDOW} taps; the window-local "
            "argmax is a uint8 (use torch.nn.functional.max_pool2d for larger windows)"
        )
    if kernel[0] > H or kernel[1] > W:
        raise ValueError(
            f"{_OP}: kernel_size={tuple(kernel)} is larger than the input's spatial size {H}x{W} "
            "(no padding)"
        )
    check_device(input, "input", _OP)
    return kernel, strides


# --------------------------------------------------------------------------------------
# Fake (meta) implementations: shapes, dtypes and memory formats of the C++ outputs.


@torch.library.register_fake("alexnet_cuda::relu_lrn_max_pool2d_forward")
def _forward_fake(input, size, scale, beta, k, kernel_size, stride, groups):
    torch._check(input.dim() == 4, lambda: f"alexnet_cuda::{_OP}_forward: expected a 4-D input")
    N, C, H, W = input.shape
    shape = (N, C, (H - kernel_size[0]) // stride[0] + 1, (W - kernel_size[1]) // stride[1] + 1)
    fmt = suggest_memory_format(input)
    out = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)
    argmax = torch.empty(shape, dtype=torch.uint8, device=input.device, memory_format=fmt)
    return out, argmax


@torch.library.register_fake("alexnet_cuda::relu_lrn_max_pool2d_backward")
def _backward_fake(grad_output, argmax, input, size, scale, beta, k, kernel_size, stride, groups):
    # The kernels make the input dense in its suggested format and give dx its strides.
    x = input.contiguous(memory_format=suggest_memory_format(input))
    return torch.empty_like(x)


# --------------------------------------------------------------------------------------
# Autograd: forward saves the input and the uint8 argmax; backward is the
# alexnet_cuda::relu_lrn_max_pool2d_backward op.


def _setup_context(ctx, inputs, output):
    input, size, scale, beta, k, kernel_size, stride, groups = inputs
    _, argmax = output
    ctx.save_for_backward(input, argmax)
    ctx.params = (size, scale, beta, k, kernel_size, stride, groups)


def _backward(ctx, grad_out, _grad_argmax):
    input, argmax = ctx.saved_tensors
    grad_input = torch.ops.alexnet_cuda.relu_lrn_max_pool2d_backward(grad_out, argmax, input, *ctx.params)
    return grad_input, None, None, None, None, None, None, None


def _double_backward(ctx, grad):
    raise NotImplementedError(
        f"{_OP}: double backward (gradients of gradients) is not implemented by alexnet_cuda; "
        "use the stock composition (F.relu, F.local_response_norm, F.max_pool2d) for "
        "higher-order derivatives"
    )


def _setup_backward_context(ctx, inputs, output):
    pass


torch.library.register_autograd(
    "alexnet_cuda::relu_lrn_max_pool2d_forward", _backward, setup_context=_setup_context
)
torch.library.register_autograd(
    "alexnet_cuda::relu_lrn_max_pool2d_backward", _double_backward, setup_context=_setup_backward_context
)
