"""The Triton backward of conv2d_relu (ReLU mask fused) and its per-shape selection
against cuDNN: the input gradient (dgrad, below) and the weight and bias gradients (wgrad:
the kernel is wgrad.py).

For a stride-1 layer y = relu(conv(x, w, padding p, dilation d, groups)), the input
gradient is a convolution of the masked output gradient with the flipped, per-group
transposed weight:

    dx = conv(dy * (y > 0), w~, stride 1, padding d*(k-1) - p, dilation d, groups)
    w~[g*CG + c, co, kh, kw] = w[g*COUTG + co, c, KH-1-kh, KW-1-kw]

(CG = Cin/groups, COUTG = Cout/groups), which the forward kernel computes with MASK_A
(zero dy where y <= 0 while loading it: relu's backward is no pass of its own) and RELU
off. Groups stay the kernel's grid axis; NHWC and NCHW go through the forward's launch
plans. It needs p <= d*(k-1) (true of every AlexNet layer); strided layers (conv1) and
other shapes keep cuDNN's input gradient.

Which one runs is chosen per shape and direction by timing both on the GPU at the first
call (``select.py``): "triton" or "cudnn" (threshold_backward, then
convolution_backward for that gradient; for conv1's weight, of its space-to-depth form).
When both directions choose Triton, relu's backward never runs as a pass of its own. Only eager calls choose: a traced backward
(torch.compile) keeps cuDNN's, and so does one on a device or dtype the kernel lacks.
"""

from __future__ import annotations

import torch

from ... import config
from . import kernel as _k
from . import select as _select
from . import wgrad as _wg
from . import space_to_depth as _s2d

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_backward_allowed(input: torch.Tensor) -> bool:
    """Whether a Triton backward kernel may run for this layer at all: an eager call on
    CUDA in a dtype the kernels have."""
    return input.is_cuda and input.dtype in TRITON_DTYPES and not _k.is_traced(input)


def dgrad_padding(weight_shape, padding, dilation):
    """The dgrad convolution's padding d*(k-1) - p per axis (negative: not this kernel's)."""
    return [dilation[i] * (weight_shape[2 + i] - 1) - padding[i] for i in range(2)]


def dgrad_takes(output, weight, stride, padding, dilation, groups) -> bool:
    """Whether the Triton dgrad can compute this layer's input gradient: stride 1, the
    dgrad padding >= 0, and the kernel's index limits (judged on the dgrad launch)."""
    if list(stride) != [1, 1]:
        return False
    pad = dgrad_padding(weight.shape, padding, dilation)
    if min(pad) < 0:
        return False
    cout, cg, kh, kw = weight.shape
    flipped = torch.empty((cg * groups, cout // groups, kh, kw), device="meta")
    return _k.triton_kernel_takes(output, flipped, [1, 1], pad, dilation, groups)


def flipped_weight(weight: torch.Tensor, groups: int, memory_format) -> torch.Tensor:
    """w~ (Cin, Cout/groups, KH, KW): per group transposed, both taps flipped."""
    cout, cg, kh, kw = weight.shape
    w = weight.reshape(groups, cout // groups, cg, kh, kw).transpose(1, 2).flip(3, 4)
    return w.reshape(groups * cg, cout // groups, kh, kw).contiguous(memory_format=memory_format)


def dgrad_triton(grad_out, output, weight, input_format, padding, dilation, groups, allow_tf32=True) -> torch.Tensor:
    """dx of y = relu(conv(x, w)) for stride 1 from dy = grad_out and y = output (the
    Triton kernel, mask fused). dx is allocated in `input_format` (cuDNN's choice for
    the input gradient: channels_last if the input or weight is)."""
    if grad_out.stride() != output.stride():
        # The mask is read at dy's offsets: give dy the output's (dense) strides.
        grad_out = torch.empty_like(output).copy_(grad_out)
    w_t = flipped_weight(weight, groups, _k.output_memory_format(output, weight))
    pad = dgrad_padding(weight.shape, padding, dilation)
    plan = _k._cached_plan(
        grad_out, w_t, None, [1, 1], pad, dilation, groups, allow_tf32, relu=False, masked=True, out_format=input_format
    )
    grad_input, pointers = _k._bind(plan, grad_out, w_t, None, mask=output)
    if pointers is not None:
        _k._launch(_k._conv2d_relu_kernel, plan, pointers)
    return grad_input


def dgrad_cudnn(grad_out, input, weight, output, stride, padding, dilation, groups):
    """dx the stock way: relu's backward, then ATen's (cuDNN's) input gradient."""
    grad = torch.ops.aten.threshold_backward(grad_out, output, 0)
    return torch.ops.aten.convolution_backward(
        grad, input, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
    )[0]


def _shape_key(grad_out, input, weight, output, stride, padding, dilation, groups, allow_tf32):
    """What a choice depends on, hashable (the selector formats it for its file)."""
    return (
        tuple(input.shape),
        input.stride(),
        tuple(weight.shape),
        weight.stride(),
        output.stride(),
        grad_out.stride(),
        str(input.dtype),
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups,
        bool(allow_tf32),
        config.conv_space_to_depth,
    )


def select_dgrad(grad_out, input, weight, output, stride, padding, dilation, groups, allow_tf32, selector=None):
    """The input gradient by the Triton dgrad when it is chosen for this shape, else None
    (the caller computes cuDNN's with the other gradients). `selector`: the
    select.Selector (the process's by default)."""
    if not dgrad_takes(output, weight, stride, padding, dilation, groups):
        return None
    selector = selector or _select.SELECTOR
    input_format = _k.output_memory_format(input, weight)

    def triton():
        return dgrad_triton(grad_out, output, weight, input_format, padding, dilation, groups, allow_tf32)

    def cudnn():
        return dgrad_cudnn(grad_out, input, weight, output, stride, padding, dilation, groups)

    key = _shape_key(grad_out, input, weight, output, stride, padding, dilation, groups, allow_tf32)
    choice = selector.choose("dgrad", key, {"triton": triton, "cudnn": cudnn})
    return triton() if choice == "triton" else None


def _s2d_factor(input, weight, output, stride, dilation, groups) -> int:
    return _s2d.factor(weight.shape[1], weight.shape[2], weight.shape[3], stride, dilation, groups, output.shape[3])


def wgrad_cudnn(grad_out, input, weight, output, stride, padding, dilation, groups, need_bias):
    """(grad_weight, grad_bias or None) the stock way: relu's backward, then ATen's (cuDNN's)
    weight gradient; of the space-to-depth rewrite for conv1-like layers (space_to_depth.
    weight_grad, as the backward has done since the rewrite exists)."""
    grad = torch.ops.aten.threshold_backward(grad_out, output, 0)
    s = _s2d_factor(input, weight, output, stride, dilation, groups)
    if s:
        return _s2d.weight_grad(grad, input, weight, s, padding, need_bias)
    _, gw, gb = torch.ops.aten.convolution_backward(
        grad,
        input,
        weight,
        [weight.shape[0]] if need_bias else None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [False, True, need_bias],
    )
    return gw, gb if need_bias else None


def wgrad_triton_layer(grad_out, input, weight, output, stride, padding, dilation, groups, need_bias, allow_tf32=True):
    """(grad_weight, grad_bias or None) by the Triton wgrad (ReLU mask and bias gradient
    fused); conv1-like layers on their space-to-depth form (48 channels, stride 1: the
    reduction's K loads are 48 contiguous channels per tap instead of 3), mapped back."""
    fmt = _k.output_memory_format(input, weight)
    s = _s2d_factor(input, weight, output, stride, dilation, groups)
    if not s:
        return _wg.wgrad_triton(
            grad_out, input, output, weight.shape, fmt, stride, padding, dilation, groups, need_bias, allow_tf32
        )
    cout, cin, kh, kw = weight.shape
    khs, kws, hs, ws = _s2d.rewritten_sizes(kh, kw, output.shape[2], output.shape[3], s)
    xs = _s2d.input_to_depth(input, s, padding, hs, ws)
    gws, gb = _wg.wgrad_triton(
        grad_out,
        xs,
        output,
        (cout, s * s * cin, khs, kws),
        torch.channels_last,
        [1, 1],
        [0, 0],
        [1, 1],
        1,
        need_bias,
        allow_tf32,
    )
    return _s2d.weight_from_depth(gws, s, kh, kw).contiguous(memory_format=fmt), gb


def select_wgrad(
    grad_out, input, weight, output, stride, padding, dilation, groups, need_bias, allow_tf32, selector=None
):
    """(grad_weight, grad_bias or None) by the Triton wgrad when it is chosen for this
    shape, else None (the caller computes cuDNN's)."""
    if not _wg.wgrad_takes(input, output, weight.shape, groups):
        return None
    selector = selector or _select.SELECTOR

    def triton():
        return wgrad_triton_layer(
            grad_out, input, weight, output, stride, padding, dilation, groups, need_bias, allow_tf32
        )

    def cudnn():
        return wgrad_cudnn(grad_out, input, weight, output, stride, padding, dilation, groups, need_bias)

    key = _shape_key(grad_out, input, weight, output, stride, padding, dilation, groups, allow_tf32) + (
        f"bias={need_bias}",
    )
    choice = selector.choose("wgrad", key, {"triton": triton, "cudnn": cudnn})
    return triton() if choice == "triton" else None
