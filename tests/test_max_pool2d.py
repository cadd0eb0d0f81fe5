"""alexnet_cuda.ops.max_pool2d / nn.MaxPool2d vs PyTorch's, bit for bit.

Values, int64 indices, output strides and (fp32/fp64) gradients must be identical to
F.max_pool2d's. fp16/bf16 gradients are compared with PyTorch's fp32 result rounded
once: our kernels (like PyTorch's CUDA kernel) sum in fp32, while PyTorch's CPU kernel
sums in fp16/bf16 and rounds after every addition.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cuda.nn.max_pool2d import MaxPool2d
from alexnet_cuda.ops.max_pool2d import max_pool2d

from conftest import DEVICES, big_randn, layout, poison, rand, saved_tensors, skip_unless_free_memory
from conftest import cpu_runs_cuda_items, offset_view, session_runs_cuda_items

FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


# ------------------------------------------------------------------------------ helpers


def assert_identical(ours, ref):
    """Same dtype, shape, strides and bits (NaN == NaN)."""
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert ours.stride() == ref.stride(), f"strides {ours.stride()} != {ref.stride()}"
    torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)


def _cuda_channels_last(out):
    """Whether this output of stock CUDA came from its channels_last kernel, whose index for
    all -inf windows is 0. Our compact (uint8) mode keeps their first tap there, as stock
    CPU does (max_pool2d.h; test_all_minus_inf_windows), so that mode's gradient is
    compared with stock CPU's."""
    return out.is_cuda and out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def run_both(x, grad_dtype=None, **kw):
    """(ours, ref) for values, indices and input gradients of one configuration,
    with and without return_indices (two different argmax encodings in backward).
    The output gradient is random, rounded to grad_dtype (default: x's dtype)."""
    results = {}
    for name, fn in (("ours", max_pool2d), ("ref", F.max_pool2d)):
        poison(x.device, 2 * x.numel() * 8)
        out, idx = fn(x, return_indices=True, **kw)
        out_only = fn(x, **kw)
        grads = []
        if x.is_floating_point():
            g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
            g = g.to(grad_dtype or x.dtype).to(x.device, x.dtype)
            for ri in (False, True):
                xs = x.detach()
                if fn is F.max_pool2d and not ri and _cuda_channels_last(out):
                    xs = xs.cpu()  # our compact mode's rule for all -inf windows: stock CPU's
                xg = xs.clone().requires_grad_()
                y = fn(xg, return_indices=ri, **kw)
                (y[0] if ri else y).backward(g.to(xs.device))
                grads.append(xg.grad.to(x.device))
        results[name] = (out, idx, out_only, grads)
    return results["ours"], results["ref"]


def assert_matches_pytorch(x, **kw):
    (out, idx, out_only, grads), (r_out, r_idx, r_out_only, r_grads) = run_both(x, **kw)
    assert_identical(out, r_out)
    assert_identical(idx, r_idx)
    assert_identical(out_only, r_out_only)
    if x.dtype in (torch.float16, torch.bfloat16):
        # PyTorch's fp32 gradient for the same values, rounded once (see the docstring).
        r_grads = [g.to(x.dtype) for g in run_both(x.float(), grad_dtype=x.dtype, **kw)[1][3]]
    for g, r in zip(grads, r_grads):
        assert_identical(g, r)


# ------------------------------------------------------------------------------ parity

# (input shape, kwargs): AlexNet's 3/2 pools first, then every argument exercised.
CONFIGS = [
    ((2, 8, 55, 55), dict(kernel_size=3, stride=2)),
    ((2, 8, 27, 27), dict(kernel_size=3, stride=2)),
    ((2, 8, 13, 13), dict(kernel_size=3, stride=2)),
    ((2, 3, 13, 13), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((2, 3, 10, 9), dict(kernel_size=2)),  # stride defaults to kernel_size
    ((2, 3, 10, 9), dict(kernel_size=3, stride=None, padding=1)),
    ((2, 3, 9, 11), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))),
    ((2, 3, 9, 11), dict(kernel_size=[3], stride=[2], padding=[1], dilation=[1])),  # 1-element lists
    ((2, 3, 12, 12), dict(kernel_size=3, stride=1, padding=1)),  # stride 1: 9 windows per pixel
    ((2, 3, 12, 12), dict(kernel_size=2, stride=3)),  # gaps between windows
    ((2, 3, 12, 13), dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    ((2, 3, 12, 13), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(3, 2), ceil_mode=True)),
    ((2, 3, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # ceil drops a window
    ((2, 3, 6, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),  # ceil keeps it
    ((1, 2, 9, 70), dict(kernel_size=(2, 3), stride=(1, 3), padding=1, dilation=(1, 2))),  # wide rows: CPU column lanes
    ((2, 3, 7, 7), dict(kernel_size=7)),  # one window = whole plane
    ((2, 3, 4, 4), dict(kernel_size=1)),
    ((3, 13, 13), dict(kernel_size=3, stride=2)),  # unbatched
    ((1, 1, 20, 20), dict(kernel_size=(17, 16), stride=3, padding=2)),  # 272 taps: int64 argmax
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,kw", CONFIGS, ids=[f"{s}-{k}" for s, k in CONFIGS])
def test_matches_pytorch(device, shape, kw):
    assert_matches_pytorch(rand(shape, device), **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided", "channels_last_strided"])
@pytest.mark.parametrize(
    "kw",
    [dict(kernel_size=3, stride=2), dict(kernel_size=(3, 2), stride=(1, 2), padding=1, ceil_mode=True)],
    ids=["3/2", "mixed"],
)
def test_dtypes_and_layouts(device, dtype, kind, kw):
    x = layout(rand((2, 12, 13, 11), device, dtype), kind)
    assert_matches_pytorch(x, **kw)


# The CUDA kernels' per-item code on the CPU: the 3/2 kernels (max_pool2d_3s2.h) for
# AlexNet's three pool sizes (output heights 27, 13, 6: row chunks of 4 and 3 outputs;
# odd input heights: a last block row of one row; output widths 27, 13, 6: 7-block groups,
# the last partly outside), output height 5 (the general kernels: the 3/2 ones take chunks
# of 3 and 4 rows only), an even size (a last input
# row and column that no window covers) and a ceil-mode size whose extra window stays
# inside; planes in chunks of 16, 32 (N C = 32) and 2 (channels-first items); the general
# kernels for fewer than 4 output rows, dilation, padding, ceil mode and the int64 argmax.
CUDA_ITEM_CONFIGS = (
    CONFIGS[:4]
    + [((2, 5, 14, 16), dict(kernel_size=3, stride=2)), ((2, 3, 7, 15), dict(kernel_size=3, stride=2))]
    + [((2, 16, 11, 12), dict(kernel_size=3, stride=2)), ((4, 8, 27, 27), dict(kernel_size=3, stride=2))]
    + CONFIGS[10:14]
    + CONFIGS[-1:]
)


@pytest.mark.parametrize("shape,kw", CUDA_ITEM_CONFIGS, ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_cuda_gather_on_cpu(cpu_gather, shape, kw, kind):
    # The CPU backward scatters; the CUDA kernels gather (max_pool2d.h's gather_grad, or
    # max_pool2d_3s2.h's 2x2 blocks). The cpu_gather fixture makes the CPU run the CUDA
    # backward items, so CI checks their arithmetic and indexing without a GPU.
    x = rand(shape, "cpu")
    assert_matches_pytorch(layout(x, kind) if x.dim() == 4 else x, **kw)


@pytest.fixture
def cuda_items_on_cpu():
    """Both CPU test paths at once (conftest's cpu_sweep and cpu_gather each set one): the
    CPU runs the CUDA forward items (sweep) and backward items (gather)."""
    with cpu_runs_cuda_items(sweep=True, gather=True):
        yield


@pytest.mark.parametrize("shape,kw", CUDA_ITEM_CONFIGS, ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_cuda_forward_on_cpu(cuda_items_on_cpu, shape, kw, kind, dtype):
    # The CPU runs the CUDA forward items (max_pool2d.h's pool_window, max_pool2d_3s2.h's
    # column of outputs) and backward items (channels_last 16-bit with even C: two channels
    # an item both ways, channel_lanes_3s2; 27 wide: the backward's 5-block pairs).
    x = rand(shape, "cpu", dtype)
    assert_matches_pytorch(layout(x, kind) if x.dim() == 4 else x, **kw)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_forward_channel_pairs_need_alignment(cuda_items_on_cpu, dtype):
    # The 3/2 forward takes two channels an item only where both are one aligned access: an
    # input starting one element into its storage takes one channel an item, with the same
    # values and codes.
    ops = torch.ops.alexnet_cuda
    x = layout(rand((2, 8, 13, 13), "cpu", dtype), "channels_last")
    aligned = ops.max_pool2d_forward(x, [3, 3], [2, 2], [0, 0], [1, 1], False, False)
    shifted = ops.max_pool2d_forward(offset_view(x, 1), [3, 3], [2, 2], [0, 0], [1, 1], False, False)
    for a, b in zip(aligned, shifted):
        assert_identical(b, a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_backward_channel_pairs_need_alignment(cuda_items_on_cpu, dtype):
    # The 3/2 backward takes two channels an item only where both are one aligned access:
    # a gradient starting one element into its storage takes one channel an item, and
    # both give the gradient of the aligned call.
    ops = torch.ops.alexnet_cuda
    x = layout(rand((2, 8, 13, 13), "cpu", dtype), "channels_last")
    out, argmax = ops.max_pool2d_forward(x, [3, 3], [2, 2], [0, 0], [1, 1], False, False)
    g = layout(torch.randn(out.shape, dtype=dtype), "channels_last")
    args = (argmax, list(x.shape), [3, 3], [2, 2], [0, 0], [1, 1], True)
    aligned = ops.max_pool2d_backward(g, *args)
    shifted = ops.max_pool2d_backward(offset_view(g, 1), *args)
    assert_identical(shifted, aligned)
    r = x.float().requires_grad_()
    F.max_pool2d(r, 3, 2).backward(g.float())
    assert_identical(aligned, r.grad.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_window_without_any_tap_inside(device):
    # Dilation can make a (legal) window miss the input entirely: its taps -1 and 2
    # fall in the padding and past H = 2. PyTorch outputs -inf with the flat index of the
    # first tap at or past 0 (row 2: past the plane's end, indices 6 and 8). Its CPU
    # backward then writes out of bounds, so only the forward is compared; our backward
    # drops these windows in both modes (index past the plane; uint8 argmax naming a tap
    # outside the input). test_empty_window_gradient_rule pins the general rule.
    x = rand((1, 2, 2, 3), device)
    kw = dict(kernel_size=2, padding=1, dilation=3, stride=1)
    out, idx = max_pool2d(x, return_indices=True, **kw)
    r_out, r_idx = F.max_pool2d(x, return_indices=True, **kw)
    assert_identical(out, r_out)
    assert_identical(idx, r_idx)
    assert torch.all(out == float("-inf"))
    for ri in (False, True):
        xg = x.clone().requires_grad_()
        y = max_pool2d(xg, return_indices=ri, **kw)
        (y[0] if ri else y).sum().backward()
        assert torch.equal(xg.grad, torch.zeros_like(x))


def _grads_and_double_backward(x, g, return_indices, **kw):
    """x's gradient for the output gradient g, after checking that double backward is its
    adjoint (<backward(g), v> == <g, double_backward(v)>): both drop the same windows."""
    x = x.detach().double().requires_grad_()
    g = g.double().requires_grad_()
    y = max_pool2d(x, return_indices=return_indices, **kw)
    (gx,) = torch.autograd.grad(y[0] if return_indices else y, x, g, create_graph=True)
    v = torch.randn_like(gx)
    (gg,) = torch.autograd.grad(gx, g, v)
    torch.testing.assert_close((gx * v).sum(), (g * gg).sum())
    return gx.detach()


@pytest.mark.parametrize("device", DEVICES)
def test_empty_window_gradient_rule(device):
    # Pins where the gradient of a window with no tap inside the input goes (max_pool2d's
    # docstring), so that changing it is deliberate. Compact uint8 argmax: nowhere. int64
    # argmax: to the flat index if that pixel is in the plane and the window's span.
    #
    # 1. W = 1, taps -1 and 1 along W: every window is empty. Indices 2 and 1: first taps
    #    (1, 1) and (0, 1), wrapped onto the next row, pixels (2, 0) and (1, 0), inside the
    #    spans. PyTorch routes both gradients there; so does the int64 mode.
    x = rand((1, 1, 4, 1), device)
    kw = dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 1), dilation=(2, 2), ceil_mode=True)
    out, idx = max_pool2d(x, return_indices=True, **kw)
    r_out, r_idx = F.max_pool2d(x, return_indices=True, **kw)
    assert_identical(out, r_out)
    assert_identical(idx, r_idx)
    assert idx.flatten().tolist() == [2, 1] and torch.all(out == float("-inf"))
    g = torch.tensor([1.0, 2.0], device=device).view(out.shape)
    expected = torch.tensor([0.0, 2.0, 1.0, 0.0], device=device).view(x.shape)
    for ri in (False, True):  # PyTorch's gradient is the same with and without indices
        xr = x.clone().requires_grad_()
        y = F.max_pool2d(xr, return_indices=ri, **kw)
        (y[0] if ri else y).backward(g)
        assert torch.equal(xr.grad, expected)
    assert torch.equal(_grads_and_double_backward(x, g, True, **kw), expected.double())
    assert torch.equal(_grads_and_double_backward(x, g, False, **kw), torch.zeros_like(x).double())
    #
    # 2. W = 2, taps -1 and 2 along W: every window is empty. Window 0 (rows -1, 0) stores
    #    index 2, pixel (1, 0): in the plane but outside its span, so int64 mode drops it
    #    (PyTorch's CUDA backward too; its CPU one adds it there). Window 4 stores 8 = H * W,
    #    past the plane: dropped (PyTorch's CPU backward writes out of bounds, so it is only
    #    run on CUDA here).
    x = rand((1, 1, 4, 2), device)
    kw = dict(kernel_size=2, stride=1, padding=1, dilation=(1, 3))
    out, idx = max_pool2d(x, return_indices=True, **kw)
    r_out, r_idx = F.max_pool2d(x, return_indices=True, **kw)
    assert_identical(out, r_out)
    assert_identical(idx, r_idx)
    assert idx.flatten().tolist() == [2, 2, 4, 6, 8]
    g = torch.arange(1.0, 6.0, device=device).view(out.shape)
    expected = torch.tensor([0.0, 0, 2, 0, 3, 0, 4, 0], device=device).view(x.shape)
    assert torch.equal(_grads_and_double_backward(x, g, True, **kw), expected.double())
    assert torch.equal(_grads_and_double_backward(x, g, False, **kw), torch.zeros_like(x).double())
    if device == "cuda":
        xr = x.clone().requires_grad_()
        F.max_pool2d(xr, return_indices=True, **kw)[0].backward(g)
        assert torch.equal(xr.grad, expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_integer_dtypes_on_cpu(dtype, kind):
    # PyTorch's CPU kernel pools integers (forward only); its CUDA kernel refuses them.
    lo = 0 if dtype == torch.uint8 else -1000
    x = layout(torch.randint(lo, 1000, (2, 5, 11, 11)).to(dtype), kind)
    assert_matches_pytorch(x, kernel_size=3, stride=2, padding=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_unbatched(device, kind):
    x = layout(rand((1, 6, 11, 9), device), kind)[0]  # 3-D, maybe with NHWC-like strides
    assert_matches_pytorch(x, kernel_size=3, stride=2, padding=1)


# ------------------------------------------------------------------------------ special values


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_ties_first_max_wins(device, dtype, kind):
    # Values in {-1, 0, 1}: most windows hold several copies of their maximum.
    x = layout(torch.randint(-1, 2, (2, 4, 15, 15)).to(device, dtype), kind)
    assert_matches_pytorch(x, kernel_size=3, stride=2, padding=1)
    # All-equal windows everywhere: every index is the window's first in-bounds tap.
    c = layout(torch.full((2, 4, 15, 15), torch.randn(()).item(), device=device, dtype=dtype), kind)
    assert_matches_pytorch(c, kernel_size=3, stride=2, padding=1)
    assert_matches_pytorch(c, kernel_size=(2, 3), stride=1, padding=1, dilation=2, ceil_mode=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_nan_and_inf(device, dtype, kind):
    # With --cpu-sweep the CPU runs CUDA's channels_last items, whose windows of only -inf
    # take CUDA's index (0), not stock CPU's: those windows are left to
    # test_all_minus_inf_windows there (and made unlikely here: 8^-9 per window).
    cuda_rule_on_cpu = device == "cpu" and kind == "channels_last" and session_runs_cuda_items()
    x = rand((2, 4, 15, 15), device, dtype)
    flat = x.view(-1)
    n = flat.numel()
    flat[torch.randperm(n)[: n // 10]] = float("nan")  # windows with one or several NaNs
    flat[torch.randperm(n)[: n // 10]] = float("inf")
    flat[torch.randperm(n)[: n // (8 if cuda_rule_on_cpu else 4)]] = float("-inf")
    if not cuda_rule_on_cpu:
        x[1, 2] = float("-inf")  # whole planes of -inf: value -inf, index of the first tap
    x[1, 3] = float("nan")  # whole planes of NaN: the last NaN of each window wins
    x = layout(x, kind)
    assert_matches_pytorch(x, kernel_size=3, stride=2, padding=1)
    assert_matches_pytorch(x, kernel_size=3, stride=2, ceil_mode=True)


def _minus_inf_input(kind, device):
    x = rand((2, 3, 13, 13), "cpu")
    x[0, 1] = float("-inf")  # a whole plane: every window all -inf, window (0, 0) included
    x[1, :, 5:12, 3:10] = float("-inf")  # inner windows all -inf, their neighbours partly
    return layout(x, kind).to(device)


def _expected_minus_inf(x, g, cuda_channels_last, **kw):
    """(out, indices, int64-mode gradient, uint8-mode gradient) for x under stock CPU's rule
    (a window that nothing replaces keeps its first tap: both layouts on the CPU, NCHW on
    CUDA) or, with cuda_channels_last, PyTorch's CUDA channels_last rule (max_pool2d.h):
    such a window returns index 0, and the gather routes its gradient to pixel (0, 0) when
    the window's span covers it, else nowhere. For these pools only window (0, 0) covers
    (0, 0). Our uint8 mode keeps the first tap everywhere: the documented divergence."""
    xc, gc = x.detach().cpu(), g.cpu()
    out, idx = F.max_pool2d(xc, return_indices=True, **kw)
    xr = xc.clone().requires_grad_()
    F.max_pool2d(xr, **kw).backward(gc)
    if not cuda_channels_last:
        return out, idx, xr.grad, xr.grad
    idx = torch.where(out == float("-inf"), 0, idx)
    elsewhere = torch.ones(out.shape[-2:], dtype=torch.bool)
    elsewhere[0, 0] = False
    routed = torch.where((idx == 0) & elsewhere, 0, gc)
    k, s, p = [kw["kernel_size"]] * 2, [kw["stride"]] * 2, [kw.get("padding", 0)] * 2
    grad = torch.ops.aten.max_pool2d_with_indices_backward(routed, xc, k, s, p, [1, 1], False, idx)
    return out, idx, grad, xr.grad


def _check_minus_inf_windows(x, cuda_channels_last, **kw):
    out, idx = max_pool2d(x, return_indices=True, **kw)
    g = torch.randn(out.shape).to(x.device)
    grads = []
    for ri in (True, False):  # int64 argmax, then the compact uint8 one
        xr = x.clone().requires_grad_()
        y = max_pool2d(xr, return_indices=ri, **kw)
        (y[0] if ri else y).backward(g)
        grads.append(xr.grad.cpu())
    for ours, expected in zip((out, idx, *grads), _expected_minus_inf(x, g, cuda_channels_last, **kw)):
        assert torch.equal(ours.cpu(), expected)
    return out, idx, grads[0]


MINUS_INF_POOLS = [dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=2, padding=1)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kw", MINUS_INF_POOLS, ids=["3/2", "3/2/1"])
def test_all_minus_inf_windows(device, kind, kw):
    # Windows whose every tap is -inf: value -inf; the index of the window's first tap,
    # except on CUDA in channels_last, where PyTorch returns 0 and so do we (max_pool2d.h).
    # (With --cpu-sweep the CPU runs CUDA's items: CUDA's rule, checked against stock CPU's.)
    x = _minus_inf_input(kind, device)
    cuda_items = device == "cuda" or session_runs_cuda_items()
    out, idx, grad = _check_minus_inf_windows(x, cuda_items and kind == "channels_last", **kw)
    if device == "cpu" and cuda_items:
        return
    r_out, r_idx = F.max_pool2d(x, return_indices=True, **kw)  # and stock on this device
    assert_identical(out, r_out)
    assert_identical(idx, r_idx)
    if device == "cuda":  # (stock CPU's int64 gradient is its own rule, checked above)
        xr = x.clone().requires_grad_()
        F.max_pool2d(xr, **kw).backward(torch.ones_like(out))
        xo = x.clone().requires_grad_()
        max_pool2d(xo, return_indices=True, **kw)[0].backward(torch.ones_like(out))
        assert torch.equal(xo.grad, xr.grad)


@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kw", MINUS_INF_POOLS, ids=["3/2", "3/2/1"])
def test_all_minus_inf_windows_cuda_rule_on_cpu(cuda_items_on_cpu, kind, kw):
    # The CPU running the CUDA items: CUDA's channels_last rule,
    # checked without a GPU (3/2: the 3/2 kernels; 3/2 with padding: the general ones).
    _check_minus_inf_windows(_minus_inf_input(kind, "cpu"), kind == "channels_last", **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x = rand((0, 3, 9, 9), device).requires_grad_()
    out, idx = max_pool2d(x, 3, 2, return_indices=True)
    assert out.shape == idx.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert_matches_pytorch(layout(rand((0, 3, 9, 9), device), "channels_last"), kernel_size=3, stride=2)


# ------------------------------------------------------------------------------ errors


BAD = [
    # (description, shape, kwargs, the argument the message must name)
    ("stride 0", (1, 2, 8, 8), dict(kernel_size=3, stride=0), "stride"),
    ("stride 0 in W", (1, 2, 8, 8), dict(kernel_size=3, stride=(2, 0)), "stride"),
    ("negative stride", (1, 2, 8, 8), dict(kernel_size=3, stride=-1), "stride"),
    ("kernel 0", (1, 2, 8, 8), dict(kernel_size=0), "kernel_size"),
    ("dilation 0", (1, 2, 8, 8), dict(kernel_size=3, dilation=0), "dilation"),
    ("padding > kernel/2", (1, 2, 8, 8), dict(kernel_size=3, padding=2), "padding"),
    ("padding > kernel/2 in W", (1, 2, 8, 8), dict(kernel_size=(3, 2), padding=(1, 2)), "padding"),
    ("negative padding", (1, 2, 8, 8), dict(kernel_size=3, padding=-1), "padding"),
    ("kernel larger than padded input", (1, 2, 4, 8), dict(kernel_size=7, padding=1), "kernel_size"),
    ("dilated kernel larger than input", (1, 2, 8, 8), dict(kernel_size=3, dilation=4), "kernel_size"),
    ("3-element kernel_size", (1, 2, 8, 8), dict(kernel_size=(3, 3, 3)), "kernel_size"),
    ("3-element stride", (1, 2, 8, 8), dict(kernel_size=3, stride=(1, 1, 1)), "stride"),
    ("2-D input", (8, 8), dict(kernel_size=3), "input"),
    ("5-D input", (1, 1, 2, 8, 8), dict(kernel_size=3), "input"),
    ("empty channel dim", (2, 0, 8, 8), dict(kernel_size=3), "input"),
    ("empty 3-D input", (0, 8, 8), dict(kernel_size=3), "input"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("what,shape,kw,arg", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_like_pytorch(device, what, shape, kw, arg):
    x = rand(shape, device)
    with pytest.raises(RuntimeError) as ref:
        F.max_pool2d(x, **kw)
    with pytest.raises(type(ref.value), match=arg):
        max_pool2d(x, **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_dtypes_raise_like_pytorch(device):
    for dtype in [torch.bool, torch.complex64] + ([torch.int64, torch.int32] if device == "cuda" else []):
        x = torch.ones(1, 2, 8, 8, device=device, dtype=dtype)
        with pytest.raises(RuntimeError) as ref:  # NotImplementedError is a RuntimeError
            F.max_pool2d(x, 3)
        with pytest.raises(type(ref.value), match="input dtype"):
            max_pool2d(x, 3)


def test_python_argument_types_like_pytorch():
    x = rand((1, 2, 7, 7), "cpu")
    # A 0-d integer tensor is an int to PyTorch's argument parser ...
    assert_identical(max_pool2d(x, torch.tensor(3)), F.max_pool2d(x, torch.tensor(3)))
    # ... but ceil_mode must be a real bool.
    for bad in (None, 1, torch.tensor(True)):
        with pytest.raises(TypeError):
            F.max_pool2d(x, 3, ceil_mode=bad)
        with pytest.raises(TypeError, match="ceil_mode"):
            max_pool2d(x, 3, ceil_mode=bad)


def _int_likes():
    t = torch.tensor
    ints = [3, t(3), t(2, dtype=torch.uint8), t([3]), t([[2]]), t(True), np.int64(3), np.int32(2)]
    bad = [True, np.bool_(True), 3.0, np.float64(3), t(3.0), t([3, 2]), np.array([3]), "3", None]
    pairs = [(a, b) for a in ints + bad for b in (2, t(2))] + [[3, t(2)], [np.int8(3)], (t(3), 2, 1)]
    # PyTorch accepts a 0-d integer NumPy array in a list, but a bare one trips an internal
    # assert (torch 2.14): only the list form is compared.
    return ints + bad + pairs + [[np.array(3), 2], (np.array(3.0), 2)]


@pytest.mark.parametrize("arg", ["kernel_size", "stride", "padding", "dilation"])
def test_int_like_arguments_like_pytorch(arg):
    # Each int of an int list (or a bare int) may be a one-element integral tensor
    # (bool too), a NumPy integer or anything with __index__; never a bool or a float.
    x = rand((1, 2, 9, 9), "cpu")
    base = dict(kernel_size=3, stride=2, padding=1, dilation=1)
    for value in _int_likes():
        kw = {**base, arg: value}
        try:
            ref = F.max_pool2d(x, **kw)
        except (TypeError, RuntimeError) as e:
            with pytest.raises(type(e)):
                max_pool2d(x, **kw)
        else:
            assert_identical(max_pool2d(x, **kw), ref)


def test_padding_of_half_the_kernel_is_accepted():
    x = rand((1, 2, 5, 5), "cpu")
    assert_matches_pytorch(x, kernel_size=(4, 5), padding=(2, 2), stride=1)


# ------------------------------------------------------------------------------ autograd


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2),
        dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(1, 2), ceil_mode=True),
    ],
    ids=["3/2", "mixed"],
)
def test_gradcheck_float64(device, return_indices, kw):
    # Random inputs have no ties, so max-pool is differentiable there.
    x = rand((2, 3, 9, 8), device, torch.float64).requires_grad_()

    def f(x):
        y = max_pool2d(x, return_indices=return_indices, **kw)
        return y[0] if return_indices else y

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    assert torch.autograd.gradcheck(f, (x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(),))


@pytest.mark.parametrize("device", DEVICES)
def test_backward_is_deterministic(device):
    x = rand((4, 16, 27, 27), device).requires_grad_()
    g = torch.randn(4, 16, 27, 27, device=device)  # stride 1: each pixel in up to 9 windows
    grads = []
    for _ in range(2):
        x.grad = None
        max_pool2d(x, 3, stride=1, padding=1).backward(g)
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("device", DEVICES)
def test_saves_only_a_compact_argmax(device):
    x = rand((2, 8, 13, 13), device).requires_grad_()
    (argmax,) = saved_tensors(lambda x: max_pool2d(x, 3, 2), x)
    assert argmax.dtype == torch.uint8 and argmax.shape == (2, 8, 6, 6)  # 1 byte per output
    (indices,) = saved_tensors(lambda x: max_pool2d(x, 3, 2, return_indices=True), x)
    assert indices.dtype == torch.int64  # the indices the caller gets anyway
    (big,) = saved_tensors(lambda x: max_pool2d(x, (17, 16)), rand((1, 1, 20, 20), device).requires_grad_())
    assert big.dtype == torch.int64  # 272 taps do not fit in a byte


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    ops = torch.ops.alexnet_cuda
    for kind in ("contiguous", "channels_last"):
        x = layout(rand((2, 4, 9, 8), device), kind).requires_grad_()
        for args in (([3, 3], [2, 2], [0, 0], [1, 1], False, False), ([3, 2], [1, 2], [1, 1], [2, 1], True, True)):
            torch.library.opcheck(ops.max_pool2d.default, (x, *args))  # the public op
            torch.library.opcheck(ops.max_pool2d_forward.default, (x, *args))
            out, argmax = ops.max_pool2d_forward(x.detach(), *args)
            g = torch.randn_like(out).requires_grad_()
            torch.library.opcheck(
                ops.max_pool2d_backward.default, (g, argmax, list(x.shape), *args[:4], kind == "channels_last")
            )


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    # Only exact ops around the pool, so compiled and eager results are bit-identical.
    def body(pool):
        return nn.Sequential(nn.ReLU(), pool, nn.Hardtanh(-1.5, 1.5))

    compiled = torch.compile(body(MaxPool2d(3, 2)), fullgraph=True)
    ref_model = body(nn.MaxPool2d(3, 2))
    for kind in ("contiguous", "channels_last"):
        x = layout(rand((2, 8, 15, 15), device), kind).requires_grad_()
        out, ref = compiled(x), ref_model(x)
        assert_identical(out, ref)
        g = torch.randn_like(out)
        assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_dynamic_shapes(device):
    compiled = torch.compile(lambda x: max_pool2d(x, 3, 2, ceil_mode=True), dynamic=True, fullgraph=True)
    for size in (13, 16):
        x = layout(rand((2, 4, size, size + 1), device), "channels_last").requires_grad_()
        out = compiled(x)
        assert_identical(out, F.max_pool2d(x, 3, 2, ceil_mode=True))
        (g,) = torch.autograd.grad(out.sum(), x)
        (r,) = torch.autograd.grad(F.max_pool2d(x, 3, 2, ceil_mode=True).sum(), x)
        assert torch.equal(g, r)


def test_meta_tensors():
    # Shapes, dtypes and strides without data (the fake kernels), as PyTorch's meta.
    for kind in ("contiguous", "channels_last"):
        x = layout(torch.empty(2, 3, 13, 12, device="meta"), kind)
        for ours, ref in zip(max_pool2d(x, 3, 2, 1, 1, True, True), F.max_pool2d(x, 3, 2, 1, 1, True, True)):
            assert (ours.shape, ours.stride(), ours.dtype) == (ref.shape, ref.stride(), ref.dtype)


# ------------------------------------------------------------------------------ module


def test_module_is_a_drop_in():
    for args, kw in [((3, 2), {}), ((3,), dict(stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True))]:
        ours, ref = MaxPool2d(*args, **kw), nn.MaxPool2d(*args, **kw)
        assert isinstance(ours, nn.MaxPool2d)
        assert repr(ours) == repr(ref)
        assert ours.state_dict() == {} == ref.state_dict()
        x = rand((2, 3, 13, 13), "cpu")
        a, b = ours(x), ref(x)
        for u, v in zip(a, b) if kw.get("return_indices") else [(a, b)]:
            assert_identical(u, v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_indexing_past_2_31_elements(device, kind):
    skip_unless_free_memory(device, 14)
    n = 2**31 // (96 * 55 * 55) + 2  # input past 2^31 elements: the last images' offsets too
    x = layout(big_randn((n, 96, 55, 55), device, torch.bfloat16), kind).requires_grad_()
    y = max_pool2d(x, 3, 2)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    for sl in (slice(0, 2), slice(n - 2, n)):  # the first and the last images
        # Stock in fp32 (exact for bf16 values), the gradient rounded once: see the docstring.
        xs = x.detach()[sl].float().requires_grad_()
        ys = F.max_pool2d(xs, 3, 2)
        (gs,) = torch.autograd.grad(ys, xs, g[sl].float())
        torch.testing.assert_close(y[sl].detach(), ys.to(x.dtype), rtol=0, atol=0)
        torch.testing.assert_close(gx[sl], gs.to(x.dtype), rtol=0, atol=0)
