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

Autograd is in C++ (csrc/relu_lrn_max_pool2d/relu_lrn_max_pool2d_autograd.cpp). This
file adds argument checking (errors name the argument), 3-D (unbatched) inputs and the
fake (meta) implementations torch.compile traces with.
"""

import torch
from torch._prims_common import suggest_memory_format

from .._extension import check_device
from ._args import MAX_INT32, MAX_WINDOW_TAPS, ArgumentError, floating_input, int_arg, pair_arg, real_arg

# The overload itself, looked up once (the packet's lookup costs host time per call).
_FORWARD = torch.ops.alexnet_cuda.relu_lrn_max_pool2d_forward.default
_OP = "relu_lrn_max_pool2d"


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
    size, alpha, beta, k, kernel, strides, lrn_groups = check_args(
        size, alpha, beta, k, kernel_size, stride, lrn_groups)
    _check_input(input, kernel, lrn_groups)
    scale = alpha if paper_alpha else alpha / size
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    out, _ = _FORWARD(
        x, size, scale, float(beta), float(k), kernel, strides, lrn_groups
    )
    return out.squeeze(0) if unbatched else out


# --------------------------------------------------------------------------------------
# Argument checking.


def check_args(size, alpha, beta, k, kernel_size, stride, lrn_groups):
    """The arguments but the input, read and checked (ReLULRNMaxPool2d checks them at
    construction): (size, alpha, beta, k, kernel [h, w], stride [h, w], lrn_groups)."""
    size = int_arg(size, _OP, "size")
    if size <= 0:
        raise ArgumentError(f"{_OP}: size must be positive, got {size}")
    alpha, beta, k = (real_arg(v, _OP, n) for v, n in ((alpha, "alpha"), (beta, "beta"), (k, "k")))
    lrn_groups = int_arg(lrn_groups, _OP, "lrn_groups")
    if lrn_groups < 1:
        raise ArgumentError(f"{_OP}: lrn_groups must be >= 1, got {lrn_groups}")
    kernel = pair_arg(kernel_size, _OP, "kernel_size")
    strides = kernel if stride is None else pair_arg(stride, _OP, "stride")
    for name, pair in (("kernel_size", kernel), ("stride", strides)):
        if min(pair) <= 0:
            raise ArgumentError(f"{_OP}: {name} must be positive, got {name}={tuple(pair)}")
        if max(pair) > MAX_INT32:
            raise ArgumentError(f"{_OP}: {name}={tuple(pair)} is too large: the kernels take "
                                f"at most {MAX_INT32}")
    if kernel[0] * kernel[1] > MAX_WINDOW_TAPS:
        raise ArgumentError(
            f"{_OP}: kernel_size={tuple(kernel)} has more than {MAX_WINDOW_TAPS} taps; the "
            "window-local argmax is a uint8 (use torch.nn.functional.max_pool2d for larger windows)"
        )
    return size, alpha, beta, k, kernel, strides, lrn_groups


def _check_input(input, kernel, lrn_groups):
    floating_input(input, _OP)
    shape = tuple(input.shape)
    if input.dim() not in (3, 4):
        raise ArgumentError(f"{_OP}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {shape}")
    if any(s == 0 for s in shape[-3:]):
        raise ArgumentError(f"{_OP}: only the batch dimension of input may be empty, got shape {shape}")
    C, H, W = shape[-3:]
    if C % lrn_groups != 0:
        raise ArgumentError(
            f"{_OP}: input has {C} channels, which do not split into lrn_groups={lrn_groups} equal groups")
    if kernel[0] > H or kernel[1] > W:
        raise ArgumentError(
            f"{_OP}: kernel_size={tuple(kernel)} is larger than the input's spatial size {H}x{W} "
            "(no padding)"
        )
    check_device(input, "input", _OP)


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
