"""Export models built with alexnet_cuda's layers to ONNX, with standard operators only.

    import alexnet_cuda.onnx
    alexnet_cuda.onnx.export(model, (x,), "model.onnx")  # the batch dimension stays dynamic

``export`` is ``torch.onnx.export(..., dynamo=True)`` with ``TRANSLATIONS`` as its
``custom_translation_table``: onnxscript functions that write each alexnet_cuda op as
standard ONNX operators (opset 18 and later, default domain), so the file runs in
onnxruntime, TensorRT or anything else that reads ONNX:

* ``local_response_norm`` -> ``LRN`` (even sizes: its formula, see below);
* ``max_pool2d`` -> ``MaxPool``;
* ``conv2d_relu`` -> ``Conv`` -> ``Relu``;
* ``relu_lrn_max_pool2d`` -> ``Relu`` -> ``LRN`` -> ``MaxPool``, with ``Split`` and
  ``Concat`` around the ``LRN`` for ``lrn_groups > 1``.

The public ops are translated; the kernel ops they call (``lrn_forward``,
``max_pool2d_forward``, ``relu_lrn_max_pool2d_forward``) are too, for graphs in which
torch.export has already decomposed the public ones. Where ONNX defines things otherwise:

* LRN's window: ONNX's reaches floor((size-1)/2) channels below c and ceil((size-1)/2)
  above it, ours (PyTorch's) size // 2 below and (size-1) // 2 above. They agree for odd
  sizes. For even sizes (which onnxruntime's LRN refuses anyway) the LRN is written out:
  ``AveragePool`` of the squares over the channel window, then ``Pow``, ``Div``.
* LRN's scale: ONNX multiplies the sum of squares by alpha / size, so ``paper_alpha=True``
  (alpha itself) becomes alpha * size.
* LRN's rank: onnxruntime's LRN takes 4-D input; (N, C, *) inputs of another rank are
  reshaped to (N, C, L, 1) around it.
* ceil_mode: ONNX's shape inference keeps a last window that starts in the right
  padding, where PyTorch (and onnxruntime) drop it, so the checker rejects such a file;
  MaxPool runs in floor mode with the padding after the input that gives PyTorch's size
  (height and width must then be static; the batch may be dynamic).
* Indices: ``MaxPool`` counts them over the whole (N, C, H, W) tensor, ours within the
  (H, W) plane, so ``return_indices=True`` takes them modulo H * W. The compact uint8
  window-local argmax that the kernels return for backward (``return_indices=False``) is
  computed from them as well; no inference graph reads it, and the exporter's optimizer
  removes it.

Memory format (contiguous or channels_last) does not exist in ONNX: either exports the
same graph. Needs the ``onnx`` extra: ``pip install "alexnet_cuda[onnx]"`` (onnx,
onnxscript, onnxruntime).
"""

from typing import Optional, Sequence, Tuple, TypeVar

import torch

from .ops._args import MAX_WINDOW_TAPS

try:
    import onnxscript
    from onnxscript import opset18 as op
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"alexnet_cuda.onnx needs onnxscript and onnx ({error}): pip install 'alexnet_cuda[onnx]'"
    ) from error

__all__ = ["export", "TRANSLATIONS"]

# Tensor inputs of the translation functions (any dtype); plain Python annotations (int,
# float, bool, Sequence[int]) make the other arguments ONNX attributes.
T = TypeVar("T", bound=onnxscript.onnx_types.TensorType)

# --------------------------------------------------------------------------------------
# Building blocks.


def _lrn(x, rank: int, size: int, scale: float, beta: float, k: float):
    """Our LRN, ``x / (k + scale * sum of squares over the window) ** beta``, for (N, C, *)
    x of ``rank`` dims (given: the values made inside a translation have no shape yet)."""
    if size % 2 == 0:
        return _lrn_decomposed(x, size, scale, beta, k)
    shape = None
    if rank != 4:  # onnxruntime's LRN takes 4-D input only
        shape = op.Shape(x)
        x = op.Reshape(x, op.Concat(op.Shape(x, start=0, end=2), op.Constant(value_ints=[-1, 1]), axis=0))
    y = op.LRN(x, size=size, alpha=float(scale) * size, beta=float(beta), bias=float(k))
    return y if shape is None else op.Reshape(y, shape)


def _lrn_decomposed(x, size: int, scale: float, beta: float, k: float):
    """The LRN as the mean of squares over the window (AveragePool over the channels of
    x seen as (N, 1, C, L), zero-padded size // 2 below and (size - 1) // 2 above), as
    F.local_response_norm computes it: for even sizes, whose window ONNX's LRN places
    one channel higher (and onnxruntime's LRN refuses)."""
    shape = op.Shape(x)
    planes = op.Concat(
        op.Shape(x, start=0, end=1),
        op.Constant(value_ints=[1]),
        op.Shape(x, start=1, end=2),
        op.Constant(value_ints=[-1]),
        axis=0,
    )
    x = op.Reshape(x, planes)
    mean = op.AveragePool(
        op.Mul(x, x),
        kernel_shape=[size, 1],
        strides=[1, 1],
        pads=[size // 2, 0, (size - 1) // 2, 0],
        count_include_pad=1,
    )
    like = lambda value: op.CastLike(op.Constant(value_float=float(value)), x)  # noqa: E731
    denominator = op.Pow(op.Add(like(k), op.Mul(like(scale * size), mean)), like(beta))
    return op.Reshape(op.Div(x, denominator), shape)


def _grouped_lrn(x, size: int, scale: float, beta: float, k: float, groups: int):
    """The LRN on each of ``groups`` equal channel groups of a 4-D x on its own."""
    if groups == 1:
        return _lrn(x, 4, size, scale, beta, k)
    parts = op.Split(x, axis=1, num_outputs=groups)
    return op.Concat(*[_lrn(part, 4, size, scale, beta, k) for part in parts], axis=1)


def _max_pool(x, hw, kernel_size, stride, padding, dilation, ceil_mode: bool, return_indices: bool):
    """(out, argmax) as our max-pool kernels return them, for a 4-D x of spatial size ``hw``."""
    out, flat = op.MaxPool(
        x,
        kernel_shape=list(kernel_size),
        strides=list(stride),
        pads=[padding[0], padding[1], *_end_pads(hw, kernel_size, stride, padding, dilation, ceil_mode)],
        dilations=list(dilation),
    )
    # MaxPool's indices count over the whole (N, C, H, W) tensor; ours within the plane.
    plane = op.Mod(flat, op.ReduceProd(op.Shape(x, start=2), keepdims=1))
    if return_indices or kernel_size[0] * kernel_size[1] > MAX_WINDOW_TAPS:
        return out, plane
    return out, _window_argmax(plane, out, x, kernel_size, stride, padding, dilation)


def _end_pads(hw, kernel_size, stride, padding, dilation, ceil_mode: bool):
    """MaxPool's padding after the input, so that its floor-mode output size is PyTorch's.

    PyTorch's ceil_mode adds a last, partial window only where it starts inside the input
    or its left padding; ONNX's shape inference adds it even where it would start in the
    right padding (onnxruntime does not: the file's shapes and its results disagree). So
    the last window is made whole with padding instead, which needs the spatial size:
    static in an export whose batch alone is dynamic.
    """
    if not ceil_mode:
        return [padding[0], padding[1]]
    if not all(isinstance(size, int) for size in hw):
        raise ValueError(f"max_pool2d with ceil_mode=True exports for a static height and width only, got {hw}")
    pads = []
    for size, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation):
        out = _pooled_size(size, k, s, p, d)
        pads.append((out - 1) * s + d * (k - 1) + 1 - size - p)
    return pads


def _pooled_size(size, kernel, stride, pad, dilation):
    """PyTorch's output size in ceil_mode (pooling_output_shape)."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + stride - 1) // stride + 1
    return out - 1 if (out - 1) * stride >= size + pad else out


def _output_positions(out, axis: int, shape):
    """0, 1, ..., out.shape[axis] - 1, shaped to broadcast along ``axis`` of (N, C, Ho, Wo)."""
    length = op.Squeeze(op.Shape(out, start=axis, end=axis + 1))
    positions = op.Range(op.Constant(value_int=0), length, op.Constant(value_int=1))
    return op.Reshape(positions, op.Constant(value_ints=shape))


def _window_argmax(plane, out, x, kernel_size, stride, padding, dilation):
    """The kernels' compact argmax, ``t_h * kernel_w + t_w`` (the tap's place in its window),
    as uint8, from the plane index ``h * W + w`` of the maximum."""
    width = op.Shape(x, start=3, end=4)
    h, w = op.Div(plane, width), op.Mod(plane, width)
    taps = []
    for axis, coordinate in ((2, h), (3, w)):
        i = axis - 2
        start = op.Sub(
            op.Mul(_output_positions(out, axis, [-1, 1] if axis == 2 else [-1]), op.Constant(value_int=stride[i])),
            op.Constant(value_int=padding[i]),
        )
        taps.append(op.Div(op.Sub(coordinate, start), op.Constant(value_int=dilation[i])))
    local = op.Add(op.Mul(taps[0], op.Constant(value_int=kernel_size[1])), taps[1])
    return op.Cast(local, to=onnxscript.ir.DataType.UINT8)


def _batched(fn, x):
    """fn on a 4-D x, or on a 3-D (unbatched) x with N = 1 added and removed."""
    # (fn gets the shape-less values the translation makes: it must not read x.shape.)
    if len(x.shape) == 4:
        return fn(x)
    results = fn(op.Unsqueeze(x, op.Constant(value_ints=[0])))
    squeeze = lambda t: op.Squeeze(t, op.Constant(value_ints=[0]))  # noqa: E731
    return tuple(squeeze(t) for t in results) if isinstance(results, tuple) else squeeze(results)


def _relu_lrn_max_pool(x, size, scale, beta, k, kernel_size, stride, groups):
    y = _grouped_lrn(op.Relu(x), size, scale, beta, k, groups)
    return _max_pool(y, None, kernel_size, stride, [0, 0], [1, 1], False, False)


# --------------------------------------------------------------------------------------
# The translations, one per op; parameters in the op's schema order.


def local_response_norm(input: T, size: int, alpha: float, beta: float, k: float, paper_alpha: bool) -> T:
    return _lrn(input, len(input.shape), size, alpha if paper_alpha else alpha / size, beta, k)


def lrn_forward(input: T, size: int, scale: float, beta: float, k: float) -> T:
    return _lrn(input, len(input.shape), size, scale, beta, k)


def max_pool2d(
    input: T,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
    return_indices: bool,
) -> Tuple[T, T]:
    hw = tuple(input.shape)[-2:]
    return _batched(
        lambda x: _max_pool(x, hw, kernel_size, stride, padding, dilation, ceil_mode, return_indices), input
    )


def max_pool2d_forward(
    input: T,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
    return_indices: bool,
) -> Tuple[T, T]:
    hw = tuple(input.shape)[-2:]
    return _max_pool(input, hw, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def relu_lrn_max_pool2d(
    input: T,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    lrn_groups: int,
    paper_alpha: bool,
) -> T:
    scale = alpha if paper_alpha else alpha / size
    return _batched(lambda x: _relu_lrn_max_pool(x, size, scale, beta, k, kernel_size, stride, lrn_groups)[0], input)


def relu_lrn_max_pool2d_forward(
    input: T,
    size: int,
    scale: float,
    beta: float,
    k: float,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    lrn_groups: int,
) -> Tuple[T, T]:
    return _relu_lrn_max_pool(input, size, scale, beta, k, kernel_size, stride, lrn_groups)


def conv2d_relu(
    input: T,
    weight: T,
    bias: Optional[T],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    allow_tf32: bool,
) -> T:
    def conv(x):
        inputs = (x, weight) if bias is None else (x, weight, bias)
        return op.Relu(
            op.Conv(
                *inputs,
                strides=list(stride),
                dilations=list(dilation),
                group=groups,
                pads=[padding[0], padding[1], padding[0], padding[1]],
            )
        )

    return _batched(conv, input)


def _translations():
    ops = torch.ops.alexnet_cuda
    functions = (
        local_response_norm,
        lrn_forward,
        max_pool2d,
        max_pool2d_forward,
        relu_lrn_max_pool2d,
        relu_lrn_max_pool2d_forward,
        conv2d_relu,
    )
    return {getattr(ops, fn.__name__).default: fn for fn in functions}


# torch.onnx.export's custom_translation_table for every alexnet_cuda op.
TRANSLATIONS = _translations()


def export(model, args, path=None, *, dynamic_batch=True, **kwargs):
    """Export ``model`` (called as ``model(*args)``) to ONNX at ``path``; return the
    ``torch.onnx.ONNXProgram``.

    ``torch.onnx.export(model, args, path, dynamo=True,
    custom_translation_table=TRANSLATIONS, **kwargs)``; with ``dynamic_batch=True``
    (default) dimension 0 of every tensor in ``args`` is one dynamic batch size (give an
    example batch of at least 2: torch.export specializes sizes 0 and 1). Other
    arguments of ``torch.onnx.export`` pass through ``kwargs``.
    """
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if dynamic_batch and "dynamic_shapes" not in kwargs:
        batch = torch.export.Dim("batch")
        kwargs["dynamic_shapes"] = tuple({0: batch} if isinstance(a, torch.Tensor) else None for a in args)
    return torch.onnx.export(model, args, path, dynamo=True, custom_translation_table=TRANSLATIONS, **kwargs)
