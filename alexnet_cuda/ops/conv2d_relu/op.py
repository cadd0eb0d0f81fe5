"""Fused ``relu(conv2d(input, weight, bias))``: ``alexnet_cuda::conv2d_relu``.

Public entry point: :func:`conv2d_relu`, a drop-in for ``F.relu(F.conv2d(...))`` taking
every argument ``F.conv2d`` takes. It checks and normalizes the arguments (int pairs,
"same"/"valid" padding, unbatched input, autocast) and calls the op, whose schema takes
explicit int lists:

    alexnet_cuda::conv2d_relu(Tensor input, Tensor weight, Tensor? bias, int[] stride,
                              int[] padding, int[] dilation, int groups, bool allow_tf32)

Devices:
* CUDA, fp16/bf16/fp32: the Triton implicit-GEMM kernel (``kernel.py``),
  fp32 accumulation, bias + ReLU in registers, one store. fp32 uses TF32 exactly when
  cuDNN's convolutions would (:func:`conv_allows_tf32`: ``torch.backends.cudnn.allow_tf32``
  or the newer ``fp32_precision`` settings; read by the wrapper and passed as
  ``allow_tf32``, so torch.compile guards on it). ATen runs the rest: other CUDA dtypes
  (float64) and shapes past the kernel's index ranges (N*Ho*Wo within 129 of 2^31, an
  image of 2^31 elements, groups > 65535).
* CPU (and meta): ``relu(aten.convolution(...))``.

Strided convolutions with few channels (conv1: 3 channels, stride 4) are rewritten by
space-to-depth into stride-1 ones with s*s*C channels first (``space_to_depth.py``).

Layouts (CUDA): channels_last (NHWC) is the fast path: contiguous, vectorized loads
along the reduction. NCHW input is copied to NHWC first (one read and one write of the
input: cheap next to the convolution), because reading it in place through its strides
means element-wise gathered loads and more register spills
(``python bench/codegen.py --layout nchw --nchw-policy direct``); the private setting
``alexnet_cuda.config.conv_nchw_input = "direct"`` (for tests) reads it in place. The
weight is used in place when it is stored in the kernel's reduction order
(channels_last), otherwise a small packed copy is made per call (also for K =
Cin/groups*KH*KW not a multiple of 16, e.g. conv1, padded with zeros). The output is
channels_last when input or weight is channels_last, else contiguous NCHW -- the same
rule as cuDNN's ``F.conv2d``; the caller's input tensor is never modified.

Errors (``_args.py``, as for every op): a bad value raises ``ArgumentError``, both the
``RuntimeError`` ``F.conv2d`` raises and a ``ValueError``; a bad dtype ``DtypeError`` (a
``TypeError`` and a ``NotImplementedError``); a wrong Python type ``TypeError``; each names
the argument. The op checks its own
arguments too, so calling ``torch.ops.alexnet_cuda.conv2d_relu`` directly is just as safe.

Eager calls (not traced: no torch.compile, export, fake tensors or dispatch mode) skip
the registered op, whose torch.library Python path (argument defaults, schema handling,
the autograd wrapper's redispatch) costs several times a small convolution: on CPU the
call is stock ``relu(conv2d(...))`` itself, ATen's forward, autograd and autocast, the
op's checks running only when ATen raises (to raise the op's errors); on CUDA it is an
``autograd.Function`` with the op's forward and backward, and the launcher caches its
per-shape launch plan and the compiled kernel (``kernel._launch``). Traced
calls go through the op, so graphs show ``alexnet_cuda::conv2d_relu``.

Backward (``register_autograd``, and the eager Function): by default the ReLU mask is
recomputed from the saved output (``aten.threshold_backward(grad, out, 0)``, exactly
relu's own backward), then ``aten.convolution_backward`` (cuDNN on CUDA) gives the
input/weight/bias gradients. On CUDA, the weight gradient of a space-to-depth layer
(conv1) is that of the rewritten stride-1 convolution, mapped back
(``space_to_depth.weight_grad``: the rewritten input is recomputed, not saved). Eager
CUDA calls may instead take the Triton backward (``backward.py``: the input
gradient of stride-1 layers, and ``wgrad.py``: the weight and bias
gradients, the ReLU mask fused into both), per shape and direction whichever of it and
cuDNN was faster when the shape was first seen (``select.py``, cached on
disk). A traced backward is aten ops and wrapped Triton kernels only, so torch.compile
traces forward and backward.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.library import triton_op

from ... import config
from . import backward as _bwd
from . import select as _select
from . import space_to_depth as _s2d
from .._args import ArgumentError, DtypeError, int_arg, pair_arg, tensor_arg
from .kernel import _conv2d_relu_triton, conv_output_size, is_traced, triton_kernel_takes

_OP = "conv2d_relu"

# The name this error had before every op shared it (kept for code that catches it).
ConvArgumentError = ArgumentError


_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _aten_conv2d_relu(input, weight, bias, stride, padding, dilation, groups):
    out = torch.ops.aten.convolution(input, weight, bias, stride, padding, dilation, False, [0, 0], groups)
    return torch.relu(out)


@triton_op("alexnet_cuda::conv2d_relu", mutates_args=())
def _conv2d_relu_op(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    allow_tf32: bool,
) -> Tensor:
    # The op validates its own arguments: called directly (torch.ops.alexnet_cuda.conv2d_relu),
    # a mismatched shape must not reach the kernel, which would read out of bounds.
    _check_op_args(input, weight, bias, stride, padding, dilation, groups)
    if input.device.type == "cuda" and _takes_triton(
        input, weight, bias, stride, padding, dilation, groups, allow_tf32
    ):
        return _conv2d_relu_triton(input, weight, bias, stride, padding, dilation, groups, allow_tf32)
    if input.device.type in ("cpu", "cuda", "meta"):
        return _aten_conv2d_relu(input, weight, bias, stride, padding, dilation, groups)
    raise NotImplementedError(
        f"{_OP}: input is on device '{input.device.type}'; there are kernels for cpu and cuda only"
    )


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, allow_tf32 = inputs
    ctx.save_for_backward(input, weight, output)
    ctx.bias_sizes = None if bias is None else list(bias.shape)
    ctx.conv_args = (list(stride), list(padding), list(dilation), groups)
    ctx.allow_tf32 = allow_tf32


def _backward(ctx, grad_out):
    input, weight, output = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv_args
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = need_bias and ctx.bias_sizes is not None
    grad_input = grad_weight = grad_bias = None
    # The Triton kernels are not differentiable: a backward that builds a graph
    # (create_graph=True, for double backward) runs the differentiable aten ops.
    triton = _bwd.triton_backward_allowed(input) and not torch.is_grad_enabled()
    if need_input and triton:
        # The Triton dgrad (ReLU mask fused) where it is chosen for this shape, else None.
        grad_input = _bwd.select_dgrad(
            grad_out, input, weight, output, stride, padding, dilation, groups, ctx.allow_tf32
        )
        need_input = grad_input is None
    if need_weight and triton:
        # The Triton wgrad (mask and bias gradient fused) where chosen, else None.
        weight_and_bias = _bwd.select_wgrad(
            grad_out, input, weight, output, stride, padding, dilation, groups, need_bias, ctx.allow_tf32
        )
        if weight_and_bias is not None:
            grad_weight, grad_bias = weight_and_bias
            need_weight = need_bias = False
    if not (need_input or need_weight or need_bias):
        return grad_input, grad_weight, grad_bias, None, None, None, None, None
    # relu's backward from its output: grad where out > 0, else 0 (no stored mask).
    grad = torch.ops.aten.threshold_backward(grad_out, output, 0)
    if need_weight and input.device.type == "cuda" and input.dtype in _TRITON_DTYPES:
        # conv1-like layers: the weight gradient of the space-to-depth rewrite (cuDNN's
        # 3-channel, stride-4 weight gradient is the slow shape, as its forward is).
        s = _s2d.factor(weight.shape[1], weight.shape[2], weight.shape[3], stride, dilation, groups, grad.shape[3])
        if s:
            grad_weight, grad_bias = _s2d.weight_grad(grad, input, weight, s, padding, need_bias)
            need_weight = need_bias = False
    if need_input or need_weight or need_bias:
        gi, gw, gb = torch.ops.aten.convolution_backward(
            grad,
            input,
            weight,
            ctx.bias_sizes,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_input, need_weight, need_bias],
        )
        grad_input = gi if need_input else grad_input
        grad_weight = gw if need_weight else grad_weight
        grad_bias = gb if need_bias else grad_bias
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


torch.library.register_autograd("alexnet_cuda::conv2d_relu", _backward, setup_context=_setup_context)


IntOrPair = Union[int, Sequence[int]]


def _pair(value, name: str, minimum: int) -> List[int]:
    pair = pair_arg(value, _OP, name)
    if min(pair) < minimum:
        raise ArgumentError(f"{_OP}: {name} must be >= {minimum}, got {value!r}")
    return pair


def _check_types(input, weight, bias):
    tensor_arg(input, _OP, "input")
    tensor_arg(weight, _OP, "weight")
    if bias is not None:
        tensor_arg(bias, _OP, "bias")


def _check_ranks(input, weight):
    if weight.dim() != 4:
        raise ArgumentError(
            f"{_OP}: weight must be 4-D (out_channels, in_channels/groups, kH, kW), got shape {tuple(weight.shape)}"
        )
    if input.dim() not in (3, 4):
        raise ArgumentError(
            f"{_OP}: input must be 4-D (N, C, H, W) or 3-D unbatched (C, H, W), got shape {tuple(input.shape)}"
        )


def _check_tensors(input, weight, bias, groups):
    if int_arg(groups, _OP, "groups") < 1:
        raise ArgumentError(f"{_OP}: groups must be a positive int, got {groups!r}")
    _check_ranks(input, weight)
    cout, cg = weight.shape[0], weight.shape[1]
    cin = input.shape[-3]
    if cout % groups != 0:
        raise ArgumentError(f"{_OP}: weight.shape[0] (out_channels={cout}) must be divisible by groups={groups}")
    if cin != cg * groups:
        raise ArgumentError(
            f"{_OP}: input has {cin} channels but weight expects "
            f"in_channels/groups * groups = {cg} * {groups} = {cg * groups}"
        )
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ArgumentError(f"{_OP}: bias must have shape ({cout},) (out_channels), got {tuple(bias.shape)}")
    if not input.is_floating_point():
        raise DtypeError(f"{_OP}: input must be a floating-point tensor, got {input.dtype}")
    if weight.dtype != input.dtype:
        raise DtypeError(f"{_OP}: weight dtype {weight.dtype} does not match input dtype {input.dtype}")
    if bias is not None and bias.dtype != input.dtype:
        raise DtypeError(f"{_OP}: bias dtype {bias.dtype} does not match input dtype {input.dtype}")
    if weight.device != input.device:
        raise ArgumentError(f"{_OP}: weight is on {weight.device} but input is on {input.device}")
    if bias is not None and bias.device != input.device:
        raise ArgumentError(f"{_OP}: bias is on {bias.device} but input is on {input.device}")
    if input.device.type not in ("cpu", "cuda", "meta"):
        raise NotImplementedError(
            f"{_OP}: input is on device '{input.device.type}'; there are kernels for cpu and cuda only"
        )


def _check_list(values, name: str, minimum: int) -> None:
    if len(values) != 2 or min(values) < minimum:
        raise ArgumentError(f"{_OP}: {name} must be 2 ints >= {minimum}, got {list(values)}")


def _check_op_args(input, weight, bias, stride, padding, dilation, groups) -> None:
    """Everything the kernel relies on, for the op's own (normalized) arguments."""
    _check_tensors(input, weight, bias, groups)
    if input.dim() != 4:
        raise ArgumentError(
            f"{_OP}: the op takes a 4-D (N, C, H, W) input, got shape "
            f"{tuple(input.shape)} (conv2d_relu() unsqueezes 3-D inputs)"
        )
    _check_list(stride, "stride", 1)
    _check_list(padding, "padding", 0)
    _check_list(dilation, "dilation", 1)
    h, w = input.shape[2], input.shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    ho, wo = conv_output_size(h, w, kh, kw, stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ArgumentError(
            f"{_OP}: the output would be {ho}x{wo}: kernel {kh}x{kw} with dilation "
            f"{list(dilation)} is larger than the padded input {h}x{w} + 2*{list(padding)}"
        )


def conv_allows_tf32() -> bool:
    """Whether cuDNN's convolutions would use TF32 for fp32 inputs (the kernel follows suit).

    The legacy flag ``torch.backends.cudnn.allow_tf32`` answers unless the newer
    ``fp32_precision`` settings (torch >= 2.9) were used and disagree between cuDNN's
    ops; then it raises, and the conv setting decides, "none" deferring to the cuDNN-wide
    and then the global setting, as PyTorch resolves it. Under torch.compile only the
    legacy flag is read (Dynamo guards on it, so toggling it recompiles; it cannot trace
    the newer settings), so a compiled call in that mixed state raises PyTorch's error.
    """
    if torch.compiler.is_compiling():
        return bool(torch.backends.cudnn.allow_tf32)
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        for scope in (torch.backends.cudnn.conv, torch.backends.cudnn, torch.backends):
            precision = getattr(scope, "fp32_precision", "none")
            if precision != "none":
                return precision == "tf32"
        return False  # "none" all the way up: ATen's precision is NONE, which is not TF32


def _autocast(input, weight, bias):
    """Cast like F.conv2d does under autocast (conv is a lower-precision op)."""
    device_type = input.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        if input.is_floating_point() and input.dtype != torch.float64:
            input = input.to(dtype)
            weight = weight.to(dtype) if weight.is_floating_point() else weight
            bias = bias.to(dtype) if bias is not None and bias.is_floating_point() else bias
    return input, weight, bias


def _normalize(input, weight, bias, stride, padding, dilation, groups):
    """The op's arguments from conv2d_relu's (checked, autocast applied, "same"/"valid"
    padding resolved): (input, weight, bias, stride, padding, dilation, groups, unbatched)."""
    _check_types(input, weight, bias)
    input, weight, bias = _autocast(input, weight, bias)
    _check_ranks(input, weight)  # the rest is checked by the op itself
    groups = int_arg(groups, _OP, "groups")
    stride_ = _pair(stride, "stride", 1)
    dilation_ = _pair(dilation, "dilation", 1)
    if isinstance(padding, str):
        padding_, input = _string_padding(padding, input, weight, stride, stride_, dilation_)
    else:
        padding_ = _pair(padding, "padding", 0)
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    return input, weight, bias, stride_, padding_, dilation_, groups, unbatched


def _string_padding(padding, input, weight, stride, stride_, dilation_):
    """(padding pair, input) for padding="valid" or "same" (the input padded when "same"
    needs more on the bottom/right than on the top/left)."""
    if padding == "valid":
        return [0, 0], input
    if padding != "same":
        raise ArgumentError(f"{_OP}: padding must be 'valid', 'same', an int or a pair of ints, got {padding!r}")
    if stride_ != [1, 1]:
        raise ArgumentError(f"{_OP}: padding='same' is not supported for strided convolutions (stride={stride!r})")
    # Like PyTorch: total padding d*(k-1), left gets total//2; an odd total puts the
    # extra row/column on the bottom/right by padding the input (even kernels only).
    totals = [dilation_[0] * (weight.shape[2] - 1), dilation_[1] * (weight.shape[3] - 1)]
    extra = [t - 2 * (t // 2) for t in totals]
    if any(extra):
        input = F.pad(input, [0, extra[1], 0, extra[0]])
    return [t // 2 for t in totals], input


class _TritonConv2dReLU(torch.autograd.Function):
    """The op's Triton forward and its backward, for eager calls: what the registered op
    does, without torch.library's per-call Python (argument defaults and schema handling,
    redispatch). Same saved tensors (input, weight, output) and the same ``_backward``."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups, allow_tf32):
        out = _conv2d_relu_triton(input, weight, bias, stride, padding, dilation, groups, allow_tf32)
        _setup_context(ctx, (input, weight, bias, stride, padding, dilation, groups, allow_tf32), out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _backward(ctx, grad_out)


def _cpu_eager(input, weight, bias, stride, padding, dilation, groups):
    """An eager CPU call: stock ``relu(conv2d(...))`` (ATen's forward, autograd and
    autocast: the op's CPU path computes exactly this), our errors for bad arguments.

    ATen accepts a few things the op refuses (integer and complex dtypes, a weight or
    bias on the meta device) and warns for padding="same" with an even kernel where the
    op pads silently; those calls take the op's path. When ATen raises, the op's checks
    run to raise the op's error instead (ATen's is re-raised if they find nothing)."""
    if (
        input.is_floating_point()
        and isinstance(weight, Tensor)
        and weight.is_cpu
        and (bias is None or isinstance(bias, Tensor) and bias.is_cpu)
        and not isinstance(padding, str)
    ):
        try:
            return torch.relu(torch.conv2d(input, weight, bias, stride, padding, dilation, groups))
        except (RuntimeError, TypeError, ValueError):
            args = _normalize(input, weight, bias, stride, padding, dilation, groups)
            _check_op_args(*args[:7])
            raise
    return _op_call(input, weight, bias, stride, padding, dilation, groups)


def _cuda_eager(input, weight, bias, stride, padding, dilation, groups, allow_tf32):
    """An eager CUDA call: the op's own routing, without the op's dispatch (see
    _TritonConv2dReLU), and the Triton forward only where it was faster than cuDNN for
    this shape (_forward_choice). Otherwise stock relu(convolution), which is what the op
    computes for ATen's shapes, forward and backward."""
    _check_op_args(input, weight, bias, stride, padding, dilation, groups)
    if _takes_triton(input, weight, bias, stride, padding, dilation, groups, allow_tf32):
        return _TritonConv2dReLU.apply(input, weight, bias, stride, padding, dilation, groups, allow_tf32)
    return _aten_conv2d_relu(input, weight, bias, stride, padding, dilation, groups)


def _takes_triton(input, weight, bias, stride, padding, dilation, groups, allow_tf32) -> bool:
    """Whether a CUDA forward runs the Triton kernel: it can take the shape, and it is this
    shape's choice (_forward_choice). The one rule for eager, traced and captured calls."""
    return (
        input.dtype in _TRITON_DTYPES
        and triton_kernel_takes(input, weight, stride, padding, dilation, groups)
        and _forward_choice(input, weight, bias, stride, padding, dilation, groups, allow_tf32) == "triton"
    )


def forward_key(input, weight, bias, stride, padding, dilation, groups, allow_tf32) -> tuple:
    """What the forward's choice depends on: the shape, strides and dtype of the call, its
    arguments, and the space-to-depth setting (the rewrite makes another Triton candidate)."""
    return (
        tuple(input.shape),
        tuple(input.stride()),
        tuple(weight.shape),
        tuple(weight.stride()),
        str(input.dtype),
        bias is None,
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups,
        bool(allow_tf32),
        config.conv_space_to_depth,
    )


def _forward_choice(input, weight, bias, stride, padding, dilation, groups, allow_tf32) -> str:
    """ "triton" or "cudnn" for this shape's forward: timed the first time the shape is seen
    (select.py; the Triton candidate autotunes its configs there), then cached in memory and
    in conv_select.json, so eager, torch.compile/export and CUDA-graph calls all run the
    kernel that choice names.

    A traced call (torch.compile, export) holds fake tensors: when it is the first to see a
    shape, the candidates are timed on random stand-ins of the same sizes, strides and dtype
    (select.real_like), as Inductor's own autotuning does. A call being captured into a
    CUDA graph cannot time (its launches would be recorded, not run): it takes the cached
    choice, else cuDNN, and caches nothing."""
    key = forward_key(input, weight, bias, stride, padding, dilation, groups, allow_tf32)
    selector = _select.SELECTOR
    choice = selector.cached("forward", key)
    if choice is not None:
        return choice
    args = (stride, padding, dilation, groups, allow_tf32)
    if not is_traced(input):
        return _timed_forward_choice(selector, key, (input, weight, bias), args, False)
    choice = selector.stored("forward", key)
    if choice is not None or _select.capturing():
        return choice or _select.FALLBACK
    with _select.real_mode():
        return _timed_forward_choice(selector, key, _select.real_like(input, weight, bias), args, True)


def _timed_forward_choice(selector, key, tensors, args, stand_ins: bool) -> str:
    """selector.choose between the two forwards on `tensors` (input, weight, bias): timed
    unless the choice is cached or a CUDA graph is being captured. `stand_ins`: real
    tensors made for a traced call, timed although a trace is under way."""

    def triton():
        return _conv2d_relu_triton(*tensors, *args)

    def cudnn():
        return _aten_conv2d_relu(*tensors, *args[:4])

    with torch.no_grad():  # timing runs only: no autograd graphs kept
        return selector.choose("forward", key, {"triton": triton, "cudnn": cudnn}, real_inputs=stand_ins)


def _op_call(input, weight, bias, stride, padding, dilation, groups):
    input, weight, bias, stride_, padding_, dilation_, groups, unbatched = _normalize(
        input, weight, bias, stride, padding, dilation, groups
    )
    if input.is_cuda and not is_traced(input):
        out = _cuda_eager(input, weight, bias, stride_, padding_, dilation_, groups, conv_allows_tf32())
    else:
        out = torch.ops.alexnet_cuda.conv2d_relu(
            input, weight, bias, stride_, padding_, dilation_, groups, conv_allows_tf32()
        )
    return out.squeeze(0) if unbatched else out


def conv2d_relu(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> Tensor:
    """``relu(conv2d(input, weight, bias, stride, padding, dilation, groups))`` in one kernel.

    Same arguments and result as ``F.relu(F.conv2d(...))``: int or pair stride /
    padding / dilation, padding "valid" or "same", groups, unbatched (C, H, W) input.
    Output layout: channels_last if input or weight is channels_last, else NCHW (cuDNN's
    rule). On CUDA an NCHW input is read through an NHWC copy made for the kernel; the
    caller's tensor is never modified (see the module docstring).

    Eager calls skip the registered op's dispatch (its Python costs several times a
    small convolution): on CPU they are stock relu(conv2d), on CUDA the Triton kernel
    through an autograd.Function with the op's backward. Traced calls (torch.compile,
    export) go through the op, so that graphs show ``alexnet_cuda::conv2d_relu``.
    """
    if isinstance(input, Tensor) and input.is_cpu and not is_traced(input):
        return _cpu_eager(input, weight, bias, stride, padding, dilation, groups)
    return _op_call(input, weight, bias, stride, padding, dilation, groups)
