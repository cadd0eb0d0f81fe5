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

from alexnet_cuda.ops import _conv2d_relu_kernel as kmod  # noqa: E402
from alexnet_cuda.ops import _space_to_depth as s2d  # noqa: E402
import importlib  # noqa: E402

# the module (alexnet_cuda.ops exports its function under the same name)
cr = importlib.import_module("alexnet_cuda.ops.conv2d_relu")

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
        monkeypatch.setattr(kmod, "_NCHW_INPUT_POLICY", policy)
    stride, padding, dilation, groups = case[8], case[9], case[10], case[11]
    x, weight, bias = _inputs(case, dtype, layout)
    out = kmod._conv2d_relu_triton(x, weight, bias, list(stride), list(padding), list(dilation),
                                   groups, allow_tf32=False)
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
    monkeypatch.setattr(kmod, "_NCHW_INPUT_POLICY", policy)
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
    """_NCHW_INPUT_POLICY="channels_last" converts NCHW input to NHWC inside the launcher;
    the output layout still follows the input (NCHW)."""
    monkeypatch.setattr(kmod, "_NCHW_INPUT_POLICY", "channels_last")
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
    monkeypatch.setattr(kmod, "_NCHW_INPUT_POLICY", "direct")
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
    monkeypatch.setattr(s2d, "ENABLED", False)
    monkeypatch.setattr(kmod, "_NCHW_INPUT_POLICY", "direct")
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
    padded = torch.nn.functional.pad(x, (pad[1], ws * s, pad[0], hs * s))[:, :, :hs * s, :ws * s]
    ref = padded.reshape(2, 3, hs, s, ws, s).permute(0, 3, 5, 1, 2, 4).reshape(2, s * s * 3, hs, ws)
    assert torch.equal(xs, ref) and xs.is_contiguous(memory_format=torch.channels_last)
    wsd = s2d.weight_to_depth(w, s)
    wpad = torch.nn.functional.pad(w, (0, 1, 0, 1))
    wref = wpad.reshape(5, 3, 3, s, 3, s).permute(0, 3, 5, 1, 2, 4).reshape(5, s * s * 3, 3, 3)
    assert torch.equal(wsd, wref) and wsd.is_contiguous(memory_format=torch.channels_last)


def test_space_to_depth_factor():
    assert s2d.factor(3, 11, 11, [4, 4], [1, 1], 1, 55) == 4     # AlexNet's conv1: 48 channels, 3x3
    assert s2d.factor(4, 7, 7, [2, 2], [1, 1], 1, 55) == 2       # 16 channels, 4x4 (64 taps for 49)
    assert s2d.factor(3, 11, 11, [4, 2], [1, 1], 1, 55) == 0     # unequal strides
    assert s2d.factor(3, 11, 11, [4, 4], [2, 1], 1, 55) == 0     # dilation
    assert s2d.factor(6, 11, 11, [4, 4], [1, 1], 2, 55) == 0     # groups
    assert s2d.factor(96, 5, 5, [2, 2], [1, 1], 1, 55) == 0      # many channels already
    assert s2d.factor(1, 5, 5, [4, 4], [1, 1], 1, 55) == 0       # 64 taps for 25: too many zeros
    assert s2d.factor(5, 3, 3, [2, 2], [1, 1], 1, 55) == 0       # 20 channels: not 16-divisible
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
