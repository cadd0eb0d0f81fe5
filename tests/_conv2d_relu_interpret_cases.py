"""The Triton conv2d_relu kernel itself, run on CPU tensors by the Triton interpreter.

TRITON_INTERPRET must be set before triton is imported, so this file is not collected
by a plain ``pytest tests`` (its name does not start with ``test_``): the test
``test_triton_kernel_under_interpreter`` in test_conv2d_relu.py runs it in a fresh
``python -m pytest`` subprocess with TRITON_INTERPRET=1. Run it by hand with

    TRITON_INTERPRET=1 pytest tests/_conv2d_relu_interpret_cases.py

Shapes are tiny (the interpreter runs each program in numpy); the interpreter has no
bf16, so fp32 and fp16 only. The interpreter's autotune list is one config with
32x16x16 tiles, so these shapes still span several M, N and K tiles.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (by torch.library users)

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import triton  # noqa: E402,F401

from alexnet_cuda import config  # noqa: E402
from alexnet_cuda.ops.conv2d_relu import kernel as kmod  # noqa: E402
from alexnet_cuda.ops.conv2d_relu import space_to_depth as s2d  # noqa: E402
import importlib  # noqa: E402

# the module (alexnet_cuda.ops exports its function under the same name)
cr = importlib.import_module("alexnet_cuda.ops.conv2d_relu.op")

if not kmod._INTERPRET:
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

# (name, N, Cin, H, W, Cout, KH, KW, stride, padding, dilation, groups, bias)
CASES = [
    ("3x3_pad1", 2, 5, 9, 11, 20, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    ("stride_pad_dil_rect", 2, 6, 13, 12, 18, 3, 2, (2, 1), (1, 2), (2, 1), 1, True),
    ("groups2_nobias", 1, 8, 10, 9, 12, 3, 3, (1, 2), (0, 1), (1, 1), 2, False),
    ("depthwise", 2, 6, 8, 8, 12, 3, 3, (1, 1), (1, 1), (1, 1), 6, True),
    ("1x1", 2, 16, 5, 7, 24, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    ("big_pad", 1, 3, 5, 5, 17, 3, 3, (1, 1), (3, 2), (1, 1), 1, True),
    # No padding: the kernel compiles the bounds tests out (floor-mode sizes keep every tap
    # inside); strides and dilations that leave input rows and columns unused at the end.
    ("nopad_dil_floor", 2, 4, 12, 11, 8, 3, 2, (3, 2), (0, 0), (2, 3), 1, True),
    # Cin/groups = 16 = the interpreter's BLOCK_K: the NHWC one-tap-per-K-block path.
    ("aligned_taps", 2, 32, 9, 8, 20, 3, 3, (2, 1), (1, 2), (2, 1), 2, True),
    # Stride 2, 4 channels, padding: space-to-depth to 16 channels, padding folded in.
    ("s2d_pad", 2, 4, 13, 12, 8, 7, 7, (2, 2), (3, 3), (1, 1), 1, True),
    # AlexNet's layers, scaled down (same kernels, strides, paddings and groups); conv1
    # runs as space-to-depth (48 channels, 3x3) unless that is switched off.
    ("alexnet_conv1", 2, 3, 15, 15, 16, 11, 11, (4, 4), (0, 0), (1, 1), 1, True),
    ("alexnet_conv2", 2, 8, 7, 7, 16, 5, 5, (1, 1), (2, 2), (1, 1), 2, True),
    ("alexnet_conv3", 2, 16, 5, 5, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    ("alexnet_conv4", 2, 16, 5, 5, 16, 3, 3, (1, 1), (1, 1), (1, 1), 2, True),
    ("alexnet_conv5", 2, 16, 5, 5, 12, 3, 3, (1, 1), (1, 1), (1, 1), 2, True),
]

BY_NAME = {c[0]: c for c in CASES}
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def _inputs(case, dtype, layout, seed=0):
    _, n, cin, h, w, cout, kh, kw, _, _, _, groups, has_bias = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g).to(dtype)
    fan_in = cin // groups * kh * kw
    weight = (torch.randn(cout, cin // groups, kh, kw, generator=g) / fan_in**0.5).to(dtype)
    bias = (torch.randn(cout, generator=g) * 0.1).to(dtype) if has_bias else None
    return x.contiguous(memory_format=layout), weight, bias


def _reference(x, weight, bias, stride, padding, dilation, groups):
    b64 = None if bias is None else bias.double()
    return torch.relu(F.conv2d(x.double(), weight.double(), b64, stride, padding, dilation, groups))


def _rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# (dtype, layout, NCHW input policy): NCHW input both ways, read in place (the kernel's
# NCHW addressing) and copied to NHWC (the default: the NHWC kernel writing NCHW output;
# fp32 only, since it is the NHWC kernel that the fp16 nhwc runs cover).
VARIANTS = [
    pytest.param(torch.float32, torch.contiguous_format, "direct", id="fp32-nchw_direct"),
    pytest.param(torch.float32, torch.contiguous_format, "channels_last", id="fp32-nchw_copied"),
    pytest.param(torch.float32, torch.channels_last, None, id="fp32-nhwc"),
    pytest.param(torch.float16, torch.contiguous_format, "direct", id="fp16-nchw_direct"),
    pytest.param(torch.float16, torch.channels_last, None, id="fp16-nhwc"),
]


@pytest.mark.parametrize("dtype,layout,policy", VARIANTS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_conv2d_relu(case, dtype, layout, policy, monkeypatch):
    if policy is not None:
        monkeypatch.setattr(config, "conv_nchw_input", policy)
    stride, padding, dilation, groups = case[8], case[9], case[10], case[11]
    x, weight, bias = _inputs(case, dtype, layout)
    out = kmod._conv2d_relu_triton(
        x, weight, bias, list(stride), list(padding), list(dilation), groups, allow_tf32=False
    )
    ref = _reference(x, weight, bias, stride, padding, dilation, groups)
    assert out.dtype == dtype and out.shape == ref.shape
    assert out.is_contiguous(memory_format=layout)
    assert not out.isnan().any()
    err = _rel_err(out, ref)
    assert err < TOL[dtype], f"relative error {err:.2e}"
    assert (out >= 0).all()


@pytest.mark.parametrize("policy", ["direct", "channels_last"])
def test_tf32_flag_and_strided_views(policy, monkeypatch):
    """allow_tf32=True takes the other tl.dot branch; inputs that are views (sliced
    batch and channels, a transposed weight, a strided bias) give the same result,
    read in place through their strides or copied."""
    monkeypatch.setattr(config, "conv_nchw_input", policy)
    case = BY_NAME["stride_pad_dil_rect"]
    x, weight, bias = _inputs(case, torch.float32, torch.contiguous_format, seed=1)
    big = torch.randn(x.shape[0] * 2, x.shape[1] + 3, x.shape[2], x.shape[3])
    big[::2, 1:-2] = x
    xv = big[::2, 1:-2]
    wt = weight.transpose(2, 3).contiguous().transpose(2, 3)  # same values, odd strides
    bv = torch.zeros(bias.numel() * 2, dtype=bias.dtype)[::2].copy_(bias)  # a strided bias
    assert not xv.is_contiguous() and not wt.is_contiguous() and not bv.is_contiguous()
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    out = kmod._conv2d_relu_triton(xv, wt, bv, *args, allow_tf32=True)
    ref = _reference(x, weight, bias, *args)
    assert _rel_err(out, ref) < 1e-5


def test_weight_channels_last_gives_channels_last_output():
    case = BY_NAME["3x3_pad1"]
    x, weight, bias = _inputs(case, torch.float32, torch.contiguous_format, seed=2)
    w_cl = weight.contiguous(memory_format=torch.channels_last)
    out = kmod._conv2d_relu_triton(x, w_cl, bias, [1, 1], [1, 1], [1, 1], 1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _rel_err(out, _reference(x, weight, bias, 1, 1, 1, 1)) < 1e-5


def test_nan_propagates_like_relu():
    x = torch.randn(1, 4, 6, 6)
    x[0, 1, 2, 3] = float("nan")
    w = torch.randn(16, 4, 3, 3)
    out = kmod._conv2d_relu_triton(x, w, None, [1, 1], [1, 1], [1, 1], 1)
    ref = torch.relu(F.conv2d(x, w, None, 1, 1))
    assert torch.equal(out.isnan(), ref.isnan()) and ref.isnan().any()


def test_nchw_input_policy_channels_last(monkeypatch):
    """config.conv_nchw_input="channels_last" converts NCHW input to NHWC inside the launcher;
    the output layout still follows the input (NCHW)."""
    monkeypatch.setattr(config, "conv_nchw_input", "channels_last")
    case = BY_NAME["alexnet_conv1"]  # generic NHWC path with a zero-padded weight
    x, weight, bias = _inputs(case, torch.float32, torch.contiguous_format, seed=4)
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    out = kmod._conv2d_relu_triton(x, weight, bias, *args)
    assert out.is_contiguous()
    assert _rel_err(out, _reference(x, weight, bias, *args)) < 1e-5


@pytest.mark.parametrize("c_inner", [True, False], ids=["nhwc", "nchw"])
def test_pack_weight(c_inner):
    """Weights already in the kernel's K order (K a multiple of 16) are used in place;
    others are copied into zero-padded rows."""
    w = torch.randn(8, 16, 3, 3)
    w_in_order = w.contiguous(memory_format=torch.channels_last) if c_inner else w
    packed, k_b = kmod._pack_weight(w_in_order, c_inner)
    assert packed is w_in_order and k_b == 144
    w3 = torch.randn(8, 3, 11, 11)
    packed, k_b = kmod._pack_weight(w3, c_inner)
    assert k_b == 368 and packed.shape == (8, 368) and (packed[:, 363:] == 0).all()
    order = (0, 2, 3, 1) if c_inner else (0, 1, 2, 3)
    assert torch.equal(packed[:, :363], w3.permute(order).reshape(8, 363))


def test_channels_last_weight_with_nhwc_input():
    case = BY_NAME["3x3_pad1"]
    x, weight, bias = _inputs(case, torch.float32, torch.channels_last, seed=5)
    w_cl = weight.contiguous(memory_format=torch.channels_last)
    out = kmod._conv2d_relu_triton(x, w_cl, bias, [1, 1], [1, 1], [1, 1], 1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _rel_err(out, _reference(x, weight, bias, 1, 1, 1, 1)) < 1e-5


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", ["3x3_pad1", "aligned_taps", "alexnet_conv1"])
def test_int64_offsets(name, layout, monkeypatch):
    """The int64 addressing that tensors past 2^31 elements get, forced on small ones."""
    monkeypatch.setattr(kmod, "_OFFSET32_LIMIT", 16)
    monkeypatch.setattr(config, "conv_nchw_input", "direct")
    case = BY_NAME[name]
    x, weight, bias = _inputs(case, torch.float32, layout, seed=7)
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    _, _, constexprs, _ = kmod._kernel_arguments(x, weight, bias, *args)
    assert constexprs["X_INT64"] and constexprs["Y_INT64"]
    out = kmod._conv2d_relu_triton(x, weight, bias, *args, allow_tf32=False)
    assert _rel_err(out, _reference(x, weight, bias, *args)) < 1e-5


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", ["alexnet_conv1", "s2d_pad"])
def test_space_to_depth_off(name, dtype, layout, monkeypatch):
    """With space-to-depth switched off, conv1-like layers run the kernel's general path
    (K decoded per element: 3 channels); both ways match F.conv2d."""
    monkeypatch.setattr(config, "conv_space_to_depth", False)
    monkeypatch.setattr(config, "conv_nchw_input", "direct")
    case = BY_NAME[name]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    x, weight, bias = _inputs(case, dtype, layout, seed=8)
    assert s2d.factor(weight.shape[1], weight.shape[2], weight.shape[3], args[0], args[2], args[3], 4) == 0
    out = kmod._conv2d_relu_triton(x, weight, bias, *args, allow_tf32=False)
    assert _rel_err(out, _reference(x, weight, bias, *args)) < TOL[dtype]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_space_to_depth_tensors(layout):
    """The rewritten input and weight, against a plain PyTorch construction: pad, then
    pixel_unshuffle-like reshapes (channel (dy*s + dx)*C + c)."""
    s, pad = 4, (1, 2)
    x = torch.randn(2, 3, 13, 14).contiguous(memory_format=layout)
    w = torch.randn(5, 3, 11, 11)
    hs, ws = 5, 5  # rows/cols of the rewritten input the conv needs (here: some cropped)
    xs = s2d.input_to_depth(x, s, pad, hs, ws)
    padded = torch.nn.functional.pad(x, (pad[1], ws * s, pad[0], hs * s))[:, :, : hs * s, : ws * s]
    ref = padded.reshape(2, 3, hs, s, ws, s).permute(0, 3, 5, 1, 2, 4).reshape(2, s * s * 3, hs, ws)
    assert torch.equal(xs, ref) and xs.is_contiguous(memory_format=torch.channels_last)
    wsd = s2d.weight_to_depth(w, s)
    wpad = torch.nn.functional.pad(w, (0, 1, 0, 1))
    wref = wpad.reshape(5, 3, 3, s, 3, s).permute(0, 3, 5, 1, 2, 4).reshape(5, s * s * 3, 3, 3)
    assert torch.equal(wsd, wref) and wsd.is_contiguous(memory_format=torch.channels_last)


def test_space_to_depth_factor():
    assert s2d.factor(3, 11, 11, [4, 4], [1, 1], 1, 55) == 4  # AlexNet's conv1: 48 channels, 3x3
    assert s2d.factor(4, 7, 7, [2, 2], [1, 1], 1, 55) == 2  # 16 channels, 4x4 (64 taps for 49)
    assert s2d.factor(3, 11, 11, [4, 2], [1, 1], 1, 55) == 0  # unequal strides
    assert s2d.factor(3, 11, 11, [4, 4], [2, 1], 1, 55) == 0  # dilation
    assert s2d.factor(6, 11, 11, [4, 4], [1, 1], 2, 55) == 0  # groups
    assert s2d.factor(96, 5, 5, [2, 2], [1, 1], 1, 55) == 0  # many channels already
    assert s2d.factor(1, 5, 5, [4, 4], [1, 1], 1, 55) == 0  # 64 taps for 25: too many zeros
    assert s2d.factor(5, 3, 3, [2, 2], [1, 1], 1, 55) == 0  # 20 channels: not 16-divisible
    assert s2d.factor(3, 11, 11, [4, 4], [1, 1], 1, 2**21) == 0  # rows too long for the grid


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", ["alexnet_conv1", "s2d_pad"])
def test_space_to_depth_weight_grad(name, layout):
    """The backward's weight (and bias) gradient through the rewrite, against F.conv2d's."""
    case = BY_NAME[name]
    stride, padding = list(case[8]), list(case[9])
    x, weight, bias = _inputs(case, torch.float64, layout, seed=9)
    w = weight.clone().requires_grad_()
    b = bias.clone().requires_grad_()
    out = F.conv2d(x, w, b, stride, padding)
    grad = torch.randn_like(out)
    ref_w, ref_b = torch.autograd.grad(out, (w, b), grad)
    s = s2d.factor(weight.shape[1], weight.shape[2], weight.shape[3], stride, [1, 1], 1, out.shape[3])
    assert s
    gw, gb = s2d.weight_grad(grad, x, weight, s, padding, need_bias=True)
    torch.testing.assert_close(gw, ref_w)
    torch.testing.assert_close(gb, ref_b)
    gw, gb = s2d.weight_grad(grad, x, weight, s, padding, need_bias=False)
    assert gb is None and gw.shape == weight.shape


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", ["alexnet_conv1", "alexnet_conv2"])
def test_eager_function_forward_and_backward(name, layout):
    """The eager CUDA path (_TritonConv2dReLU: the Triton forward without the op's
    dispatch, the op's backward), on CPU tensors, against float64 F.conv2d + relu."""
    case = BY_NAME[name]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    x, weight, bias = _inputs(case, torch.float32, layout, seed=10)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = cr._TritonConv2dReLU.apply(*leaves, *args, False)
    ref_leaves = [t.double().requires_grad_() for t in (x, weight, bias)]
    ref = _reference(*ref_leaves, *args)
    assert _rel_err(out, ref) < 1e-5 and out.is_contiguous(memory_format=layout)
    grad = torch.randn(ref.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, leaves, grad.float())
    want = torch.autograd.grad(ref, ref_leaves, grad)
    for g, r in zip(got, want):
        assert _rel_err(g, r) < 1e-5


def test_launch_plan_is_cached_per_shape(monkeypatch):
    """Eager launches reuse one plan per shape and arguments; a view at an offset that
    is not 16-byte aligned, and the same shape with other strides, still give F.conv2d's
    result (the plan's key and the alignment-keyed kernel handles)."""
    monkeypatch.setattr(kmod, "_PLANS", {})
    case = BY_NAME["aligned_taps"]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    x, weight, bias = _inputs(case, torch.float32, torch.channels_last, seed=11)
    for _ in range(2):
        out = kmod._conv2d_relu_triton(x, weight, bias, *args, allow_tf32=False)
        assert _rel_err(out, _reference(x, weight, bias, *args)) < 1e-5
    assert len(kmod._PLANS) == 1
    flat = torch.randn(x.numel() + 1)
    shifted = flat[1:].view(x.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2).copy_(x)
    assert shifted.data_ptr() % 16 != 0 and shifted.stride() == x.stride()
    out = kmod._conv2d_relu_triton(shifted, weight, bias, *args, allow_tf32=False)
    assert _rel_err(out, _reference(x, weight, bias, *args)) < 1e-5
    assert len(kmod._PLANS) == 1
    nchw = x.contiguous()
    out = kmod._conv2d_relu_triton(nchw, weight, bias, *args, allow_tf32=False)
    assert _rel_err(out, _reference(x, weight, bias, *args)) < 1e-5 and out.is_contiguous()
    assert len(kmod._PLANS) == 2


# ---------------------------------------------------------------------------------------
# The Triton input gradient (dgrad, ReLU mask fused): backward.py.
# ---------------------------------------------------------------------------------------

bwd = importlib.import_module("alexnet_cuda.ops.conv2d_relu.backward")
select = importlib.import_module("alexnet_cuda.ops.conv2d_relu.select")

# Stride-1 layers: AlexNet's conv2-5 scaled down, and the kernel's paths. Cout/groups is
# the dgrad's K per tap: 8, 24, 8, 6 (K tails under the 16-wide K blocks: the general
# path); "dgrad_taps" has 16 (NHWC: one tap per K block); "dgrad_dil_nopad" has padding
# 0 (dgrad padding d*(k-1)) and dilation 2.
DGRAD_CASES = ["alexnet_conv2", "alexnet_conv3", "alexnet_conv4", "alexnet_conv5", "dgrad_taps", "dgrad_dil_nopad"]
BY_NAME["dgrad_taps"] = ("dgrad_taps", 2, 8, 6, 7, 32, 3, 3, (1, 1), (1, 1), (1, 1), 2, False)
BY_NAME["dgrad_dil_nopad"] = ("dgrad_dil_nopad", 2, 6, 9, 8, 10, 3, 2, (1, 1), (0, 1), (2, 2), 1, True)


def _layer_with_mask(case, dtype, layout, seed):
    """x, w, the layer's output y (from a float64 forward, so ours and the reference
    read the same mask: tie-free) and dy, fresh random values."""
    stride, padding, dilation, groups = case[8], case[9], case[10], case[11]
    x, weight, bias = _inputs(case, dtype, layout, seed=seed)
    y = _reference(x, weight, bias, stride, padding, dilation, groups)
    assert (y == 0).any() and (y > 0).any()  # both sides of the mask occur
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return x, weight, y.to(dtype).contiguous(memory_format=layout), dy


def _dgrad_reference(x, weight, y, dy, padding, dilation, groups):
    masked = torch.where(y.double() > 0, dy, 0.0)
    return torch.nn.grad.conv2d_input(x.shape, weight.double(), masked, 1, padding, dilation, groups)


@pytest.mark.parametrize("dtype,layout,policy", VARIANTS)
@pytest.mark.parametrize("name", DGRAD_CASES)
def test_dgrad_matches_float64(name, dtype, layout, policy, monkeypatch):
    if policy is not None:
        monkeypatch.setattr(config, "conv_nchw_input", policy)
    case = BY_NAME[name]
    padding, dilation, groups = list(case[9]), list(case[10]), case[11]
    x, weight, y, dy = _layer_with_mask(case, dtype, layout, seed=20)
    assert bwd.dgrad_takes(y, weight, [1, 1], padding, dilation, groups)
    fmt = kmod.output_memory_format(x, weight)
    dx = bwd.dgrad_triton(
        dy.to(dtype).contiguous(memory_format=layout), y, weight, fmt, padding, dilation, groups, allow_tf32=False
    )
    ref = _dgrad_reference(x, weight, y, dy, padding, dilation, groups)
    assert dx.shape == x.shape and dx.dtype == dtype and dx.is_contiguous(memory_format=fmt)
    assert not dx.isnan().any()
    assert _rel_err(dx, ref) < TOL[dtype], f"relative error {_rel_err(dx, ref):.2e}"


def test_dgrad_non_contiguous_dy_and_exact_zeros():
    """dy a strided view (copied to the output's strides for the mask), and outputs that
    are exactly 0: their gradient is dropped, as threshold_backward(dy, y, 0) does."""
    case = BY_NAME["alexnet_conv4"]
    padding, dilation, groups = list(case[9]), list(case[10]), case[11]
    x, weight, y, dy = _layer_with_mask(case, torch.float32, torch.channels_last, seed=21)
    big = torch.randn(dy.shape[0], dy.shape[1] * 2, dy.shape[2], dy.shape[3])
    dy_view = big[:, ::2]
    dy_view.copy_(dy)
    assert not dy_view.is_contiguous() and not dy_view.is_contiguous(memory_format=torch.channels_last)
    dx = bwd.dgrad_triton(dy_view, y, weight, torch.channels_last, padding, dilation, groups, False)
    ref = torch.ops.aten.convolution_backward(
        torch.ops.aten.threshold_backward(dy_view.double(), y.double(), 0),
        x.double(),
        weight.double(),
        None,
        [1, 1],
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [True, False, False],
    )[0]
    assert _rel_err(dx, ref) < 1e-5


def test_dgrad_takes_stride_one_layers_only():
    w = torch.empty(8, 4, 3, 3)
    y = torch.empty(2, 8, 5, 5)
    assert bwd.dgrad_takes(y, w, [1, 1], [1, 1], [1, 1], 1)
    assert not bwd.dgrad_takes(y, w, [2, 2], [1, 1], [1, 1], 1)  # conv1-like: cuDNN's
    assert not bwd.dgrad_takes(y, w, [1, 1], [3, 1], [1, 1], 1)  # padding > d*(k-1)


class _FakeTimer:
    """Times candidates by name (no GPU): the selection then picks by these numbers."""

    def __init__(self, times):
        self.times, self.calls = times, []

    def __call__(self, fn):
        name = fn.__name__
        self.calls.append(name)
        fn()  # every candidate still runs once, as the real timer runs it
        return self.times[name]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "name,winner",
    [
        ("alexnet_conv2", "triton"),
        ("alexnet_conv5", "cudnn"),
        ("alexnet_conv1", "triton"),
        ("groups2_nobias", "triton"),
    ],
)
def test_backward_with_selection_matches_float64(name, winner, layout, monkeypatch):
    """The whole eager backward (_TritonConv2dReLU) with the selection: dgrad and wgrad
    each Triton or cuDNN as a fake timer says, against float64 F.conv2d + relu. Strided
    layers keep cuDNN's input gradient (no dgrad candidates are timed); conv1's weight
    gradient is the Triton wgrad on the space-to-depth form when Triton wins; bias None."""
    monkeypatch.setattr(bwd, "triton_backward_allowed", lambda t: True)
    timer = _FakeTimer({"triton": 1.0 if winner == "triton" else 3.0, "cudnn": 2.0})
    monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=timer, path=None, tag="test"))
    case = BY_NAME[name]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    x, weight, bias = _inputs(case, torch.float32, layout, seed=22)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = cr._TritonConv2dReLU.apply(*leaves, *([None] if bias is None else []), *args, False)
    ref_leaves = [t.double().requires_grad_() for t in leaves]
    ref = _reference(*ref_leaves, *([None] if bias is None else []), *args)
    grad = torch.randn(ref.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, leaves, grad.float())
    want = torch.autograd.grad(ref, ref_leaves, grad)
    for g, r in zip(got, want):
        assert _rel_err(g, r) < 1e-5
    directions = ["dgrad", "wgrad"] if case[8] == (1, 1) else ["wgrad"]
    assert timer.calls == ["triton", "cudnn"] * len(directions)
    chosen = {key.split("|")[1]: entry["choice"] for key, entry in select.SELECTOR.choices().items()}
    assert chosen == {d: winner for d in directions}


# ---------------------------------------------------------------------------------------
# The Triton weight gradient (wgrad, ReLU mask and bias gradient fused, split-K):
# wgrad.py.
# ---------------------------------------------------------------------------------------

wgrad = importlib.import_module("alexnet_cuda.ops.conv2d_relu.wgrad")

# Every stride, padding and dilation: conv1 (stride 4, no padding) directly, conv2-5,
# rectangular strides/dilations, groups without bias.
WGRAD_CASES = [
    "alexnet_conv1",
    "alexnet_conv2",
    "alexnet_conv3",
    "alexnet_conv4",
    "alexnet_conv5",
    "stride_pad_dil_rect",
    "groups2_nobias",
    "dgrad_taps",
]


def _wgrad_reference(x, weight, y, dy, stride, padding, dilation, groups):
    masked = torch.where(y.double() > 0, dy, 0.0)
    gw = torch.nn.grad.conv2d_weight(x.double(), weight.shape, masked, stride, padding, dilation, groups)
    return gw, masked.sum((0, 2, 3))


@pytest.fixture
def nan_workspace(monkeypatch):
    """The workspace filled with NaN: an element the kernel fails to write shows."""
    monkeypatch.setattr(wgrad, "_workspace", lambda shape, device: torch.full(shape, float("nan"), device=device))


# The wgrad reads NCHW input in place (no copy policy): NCHW and NHWC, fp16 in NHWC.
WGRAD_VARIANTS = [
    pytest.param(torch.float32, torch.contiguous_format, id="fp32-nchw"),
    pytest.param(torch.float32, torch.channels_last, id="fp32-nhwc"),
    pytest.param(torch.float16, torch.channels_last, id="fp16-nhwc"),
]


@pytest.mark.parametrize("dtype,layout", WGRAD_VARIANTS)
@pytest.mark.parametrize("name", WGRAD_CASES)
def test_wgrad_matches_float64(name, dtype, layout, nan_workspace):
    _check_wgrad(name, dtype, layout, splits=None)


@pytest.mark.parametrize("name", ["s2d_pad", "groups2_nobias"])
def test_wgrad_split_k(name, nan_workspace):
    """Forced splits of the reduction (the default for these tiny shapes is one): stride,
    padding, groups and no bias with three workspace slices."""
    case = BY_NAME[name]
    m_total = (
        case[1]
        * kmod.conv_output_size(case[3], case[4], case[6], case[7], case[8], case[9], case[10])[0]
        * kmod.conv_output_size(case[3], case[4], case[6], case[7], case[8], case[9], case[10])[1]
    )
    assert wgrad.split_sizes(m_total, 3)[1] == 3
    _check_wgrad(name, torch.float32, torch.channels_last, splits=3)


def _check_wgrad(name, dtype, layout, splits):
    case = BY_NAME[name]
    stride, padding, dilation, groups = list(case[8]), list(case[9]), list(case[10]), case[11]
    x, weight, y, dy = _layer_with_mask(case, dtype, layout, seed=30)
    has_bias = case[12]
    assert wgrad.wgrad_takes(x, y, weight.shape, groups)
    fmt = kmod.output_memory_format(x, weight)
    gw, gb = wgrad.wgrad_triton(
        dy.to(dtype).contiguous(memory_format=layout),
        x,
        y,
        weight.shape,
        fmt,
        stride,
        padding,
        dilation,
        groups,
        has_bias,
        allow_tf32=False,
        splits=splits,
    )
    ref_w, ref_b = _wgrad_reference(x, weight, y, dy, stride, padding, dilation, groups)
    assert gw.shape == weight.shape and gw.dtype == dtype and gw.is_contiguous(memory_format=fmt)
    assert _rel_err(gw, ref_w) < TOL[dtype], f"relative error {_rel_err(gw, ref_w):.2e}"
    if has_bias:
        assert gb.dtype == dtype and _rel_err(gb, ref_b) < TOL[dtype]
    else:
        assert gb is None


def test_wgrad_is_deterministic_and_splits_agree(nan_workspace):
    """Bit-identical run to run (no atomics: per-split slices summed in a fixed order);
    other split counts agree to rounding; a non-contiguous dy gives the same result."""
    case = BY_NAME["alexnet_conv2"]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11], True)
    x, weight, y, dy = _layer_with_mask(case, torch.float32, torch.channels_last, seed=31)
    dy = dy.float().contiguous(memory_format=torch.channels_last)
    runs = [wgrad.wgrad_triton(dy, x, y, weight.shape, torch.contiguous_format, *args, splits=4) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    big = torch.randn(dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3] * 2)
    dy_view = big[..., ::2].copy_(dy)
    for splits in (1, 2, 7):
        gw, gb = wgrad.wgrad_triton(dy_view, x, y, weight.shape, torch.contiguous_format, *args, splits=splits)
        assert _rel_err(gw, runs[0][0].double()) < 1e-6 and _rel_err(gb, runs[0][1].double()) < 1e-6


def test_training_step_with_the_triton_backward_matches_stock(monkeypatch):
    """A small conv1 -> conv2 -> linear net, one SGD step, every conv through the eager
    Triton path with the Triton dgrad and wgrad chosen: logits, gradients and updated
    weights match F.conv2d + relu in float64 (the model gate's check, scaled down)."""
    monkeypatch.setattr(bwd, "triton_backward_allowed", lambda t: True)
    timer = _FakeTimer({"triton": 1.0, "cudnn": 2.0})
    monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=timer, path=None, tag="step"))
    g = torch.Generator().manual_seed(40)
    x = torch.randn(2, 3, 19, 19, generator=g).contiguous(memory_format=torch.channels_last)
    params = [
        torch.randn(16, 3, 11, 11, generator=g) / 20,
        torch.randn(16, generator=g) * 0.1,
        torch.randn(12, 8, 3, 3, generator=g) / 8,
        torch.randn(12, generator=g) * 0.1,
        torch.randn(5, 12 * 3 * 3, generator=g) / 10,
    ]
    target = torch.randint(0, 5, (2,), generator=g)

    def step(conv, params):
        params = [p.clone().requires_grad_() for p in params]
        w1, b1, w2, b2, fc = params
        h = conv(x.to(w1.dtype), w1, b1, [4, 4], [0, 0], [1, 1], 1)
        h = conv(h, w2, b2, [1, 1], [1, 1], [1, 1], 2)
        logits = h.flatten(1) @ fc.t()
        torch.nn.functional.cross_entropy(logits, target).backward()
        return logits, [p.grad for p in params], [p - 0.1 * p.grad for p in params]

    def triton_conv(*args):
        return cr._TritonConv2dReLU.apply(*args, False)

    def stock_conv(x, w, b, stride, padding, dilation, groups):
        return torch.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))

    ours = step(triton_conv, params)
    ref = step(stock_conv, [p.double() for p in params])
    assert _rel_err(ours[0], ref[0]) < 1e-5
    for got, want in zip(ours[1] + ours[2], ref[1] + ref[2]):
        assert _rel_err(got, want) < 1e-5
    chosen = sorted(key.split("|")[1] for key in select.SELECTOR.choices())
    assert chosen == ["dgrad", "wgrad", "wgrad"]  # conv2's dgrad; both wgrads (conv1's on s2d)


@pytest.mark.parametrize("winner", ["triton", "cudnn"])
def test_forward_selection(winner, monkeypatch):
    """The eager CUDA routing (_cuda_eager, run here on CPU tensors): the forward is the
    Triton kernel or stock relu(convolution) as the timer says, chosen once per shape;
    either way the result and gradients are F.conv2d + relu's."""
    timer = _FakeTimer({"triton": 1.0 if winner == "triton" else 3.0, "cudnn": 2.0})
    monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=timer, path=None, tag="fwd"))
    case = BY_NAME["alexnet_conv4"]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    x, weight, bias = _inputs(case, torch.float32, torch.channels_last, seed=41)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    for _ in range(2):
        out = cr._cuda_eager(*leaves, *args, False)
        backward_node = type(out.grad_fn).__name__
        assert (backward_node == "ReluBackward0") == (winner == "cudnn"), backward_node
        ref = _reference(*[t.double() for t in (x, weight, bias)], *args)
        assert _rel_err(out, ref) < 1e-5
    assert timer.calls == ["triton", "cudnn"]  # timed at the first call only


def test_double_backward_takes_the_differentiable_path(monkeypatch):
    """create_graph=True (gradients of gradients): the backward runs aten's ops even where
    Triton is chosen, since the Triton kernels have no backward of their own. (The second
    pass may use Triton again: it reaches this layer's node through the saved output.)"""
    monkeypatch.setattr(bwd, "triton_backward_allowed", lambda t: True)
    timer = _FakeTimer({"triton": 1.0, "cudnn": 2.0})
    monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=timer, path=None, tag="dd"))
    case = BY_NAME["alexnet_conv3"]
    args = (list(case[8]), list(case[9]), list(case[10]), case[11])
    x, weight, bias = _inputs(case, torch.float32, torch.contiguous_format, seed=42)
    results = []
    for conv in (lambda *t: cr._TritonConv2dReLU.apply(*t, *args, False), lambda *t: torch.relu(F.conv2d(*t, *args))):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = conv(*leaves)
        (gx,) = torch.autograd.grad(out, leaves[0], torch.ones_like(out), create_graph=True)
        assert gx.grad_fn is not None  # a Triton result would have none
        results.append(torch.autograd.grad((gx**2).sum(), leaves[1])[0])
    assert _rel_err(results[0], results[1].double()) < 1e-5
