"""Tests for alexnet_cuda's fused conv2d + bias + ReLU (op, autograd, module, compile).

CPU: the Triton kernel itself under TRITON_INTERPRET=1 (a subprocess, see
_conv2d_relu_interpret_cases.py), the CPU path against F.conv2d + relu, gradients,
gradcheck, opcheck, torch.compile, argument errors. CUDA (skipped with a reason when
there is no GPU): AlexNet's five layers at batch 128 in every dtype and layout.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alexnet_cuda
from alexnet_cuda.nn.conv2d_relu import Conv2dReLU
from alexnet_cuda.ops.conv2d_relu import ConvArgumentError, conv2d_relu, conv_allows_tf32

from conftest import DEVICES

HERE = os.path.dirname(os.path.abspath(__file__))
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the Triton kernel path)")


@pytest.fixture(autouse=True)
def triton_chosen(monkeypatch):
    """Eager CUDA calls choose between Triton and cuDNN per shape by timing them
    (select.py); these tests are about the Triton kernels, so a fake timer
    always prefers Triton (each candidate still runs once), and the choices stay in
    memory (no cache file is read or written)."""
    from alexnet_cuda.ops.conv2d_relu import select

    def prefer_triton(fn):
        fn()
        return 1.0 if fn.__name__ == "triton" else 2.0

    selector = select.Selector(timer=prefer_triton, path=None, tag="test")
    monkeypatch.setattr(select, "SELECTOR", selector)
    return selector


def ref_conv_relu(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(
    n,
    cin,
    h,
    w,
    cout,
    kh,
    kw,
    groups=1,
    bias=True,
    dtype=torch.float32,
    device="cpu",
    layout=torch.contiguous_format,
    seed=0,
    requires_grad=False,
):
    """Fresh random data (never zeros), weights scaled so outputs are O(1)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, cin, h, w) if n is not None else (cin, h, w)
    x = torch.randn(shape, generator=g)
    fan_in = cin // groups * kh * kw
    wt = torch.randn(cout, cin // groups, kh, kw, generator=g) / fan_in**0.5
    b = torch.randn(cout, generator=g) * 0.1 if bias else None
    x = x.to(device=device, dtype=dtype)
    if x.dim() == 4:
        x = x.contiguous(memory_format=layout)
    wt = wt.to(device=device, dtype=dtype)
    b = b.to(device=device, dtype=dtype) if b is not None else None
    if requires_grad:
        for t in (x, wt, b):
            if t is not None:
                t.requires_grad_()
    return x, wt, b


# ---------------------------------------------------------------------------------------
# The Triton kernel itself, on CPU, under the Triton interpreter (in a subprocess).
# ---------------------------------------------------------------------------------------


def test_triton_kernel_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ)
    env["TRITON_INTERPRET"] = "1"
    # Make the subprocess import the same alexnet_cuda as this process.
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_cuda.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        os.path.join(HERE, "_conv2d_relu_interpret_cases.py"),
    ]
    # cwd: not the repository root, whose source tree (no compiled _C) `python -m` would
    # put first on sys.path, ahead of the installed package.
    proc = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"interpreter tests failed:\n{proc.stdout}\n{proc.stderr}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------------------
# CPU path: every F.conv2d argument form.
# ---------------------------------------------------------------------------------------

# (n, cin, h, w, cout, kh, kw, kwargs)
ARG_CASES = [
    (2, 4, 9, 9, 6, 3, 3, dict()),
    (2, 4, 9, 9, 6, 3, 3, dict(stride=2, padding=1)),
    (2, 4, 9, 10, 6, 3, 2, dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    (2, 4, 9, 9, 6, 3, 3, dict(stride=(2,), padding=[1], dilation=(2,))),
    (2, 4, 9, 9, 6, 3, 3, dict(padding="valid")),
    (2, 4, 9, 9, 6, 3, 3, dict(padding="same")),
    (2, 4, 9, 9, 6, 4, 2, dict(padding="same")),  # even kernel: asymmetric padding
    (2, 4, 9, 9, 6, 2, 3, dict(padding="same", dilation=(3, 2))),
    (2, 4, 9, 9, 6, 3, 3, dict(padding=2, groups=2)),
    (2, 6, 9, 9, 6, 3, 3, dict(padding=1, groups=6)),  # depthwise
    (None, 4, 9, 9, 6, 3, 3, dict(padding=1)),  # unbatched (C, H, W)
    (None, 4, 9, 9, 6, 4, 4, dict(padding="same", groups=2)),
    (2, 3, 31, 31, 8, 11, 11, dict(stride=4)),  # AlexNet conv1, scaled down
    (2, 8, 7, 7, 12, 5, 5, dict(padding=2, groups=2)),  # conv2
    (0, 4, 9, 9, 6, 3, 3, dict(padding=1)),  # empty batch
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", ARG_CASES, ids=[str(i) for i in range(len(ARG_CASES))])
def test_cpu_matches_conv2d_relu(case, bias):
    n, cin, h, w, cout, kh, kw, kwargs = case
    x, wt, b = make_inputs(n, cin, h, w, cout, kh, kw, kwargs.get("groups", 1), bias)
    out = conv2d_relu(x, wt, b, **kwargs)
    ref = ref_conv_relu(x, wt, b, **kwargs)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_cpu_layout_and_dtypes(layout):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x, wt, b = make_inputs(2, 4, 8, 8, 6, 3, 3, dtype=dtype, layout=layout)
        out = conv2d_relu(x, wt, b, padding=1)
        ref = ref_conv_relu(x, wt, b, padding=1)
        torch.testing.assert_close(out, ref)
        assert out.is_contiguous(memory_format=layout) == ref.is_contiguous(memory_format=layout)


@pytest.fixture
def restore_fp32_precision():
    scopes = [torch.backends, torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    saved = [scope.fp32_precision for scope in scopes]
    yield
    for scope, precision in zip(scopes, saved):
        scope.fp32_precision = precision


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="torch without fp32_precision")
def test_newer_fp32_precision_settings_are_followed(restore_fp32_precision):
    """After torch.backends.cudnn.conv.fp32_precision is set, the legacy allow_tf32 flag
    raises when read; the op must keep working and follow the conv setting."""
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    with pytest.raises(RuntimeError):
        torch.backends.cudnn.allow_tf32  # noqa: B018 (the state this test is about)
    assert conv_allows_tf32() is False
    torch.testing.assert_close(conv2d_relu(x, w), torch.relu(F.conv2d(x, w)))
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    assert conv_allows_tf32() is True
    torch.backends.cudnn.conv.fp32_precision = "none"  # defers to cuDNN-wide, then global
    torch.backends.cudnn.fp32_precision = "ieee"
    assert conv_allows_tf32() is False
    torch.backends.cudnn.fp32_precision = "none"  # none anywhere: IEEE, as cuDNN runs it
    torch.backends.cudnn.rnn.fp32_precision = "tf32"
    assert conv_allows_tf32() is False


def test_cpu_autocast_matches_conv2d():
    x, wt, b = make_inputs(2, 4, 8, 8, 6, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv2d_relu(x, wt, b, padding=1)
        ref = ref_conv_relu(x, wt, b, padding=1)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)


# ---------------------------------------------------------------------------------------
# Autograd.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(padding=1), dict(stride=2, padding=(0, 1), groups=2), dict(padding="same", dilation=2)],
    ids=["pad1", "stride_groups", "same_dil"],
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cpu_gradients_match_eager(kwargs, bias):
    x, wt, b = make_inputs(2, 4, 9, 9, 6, 3, 3, kwargs.get("groups", 1), bias, requires_grad=True)
    out = conv2d_relu(x, wt, b, **kwargs)
    ref = ref_conv_relu(x, wt, b, **kwargs)
    grad = torch.randn_like(ref)
    params = [t for t in (x, wt, b) if t is not None]
    got = torch.autograd.grad(out, params, grad)
    want = torch.autograd.grad(ref, params, grad)
    for gt, wa in zip(got, want):
        torch.testing.assert_close(gt, wa, rtol=1e-5, atol=1e-5)


def test_cpu_gradients_for_input_only_and_weight_only():
    x, wt, b = make_inputs(2, 4, 7, 7, 6, 3, 3)
    for needs in ((True, False), (False, True)):
        xi, wi = x.clone().requires_grad_(needs[0]), wt.clone().requires_grad_(needs[1])
        conv2d_relu(xi, wi, b, padding=1).sum().backward()
        assert (xi.grad is not None) == needs[0] and (wi.grad is not None) == needs[1]


def test_gradcheck_float64():
    x, wt, b = make_inputs(2, 4, 6, 5, 4, 3, 2, groups=2, dtype=torch.float64, requires_grad=True)
    # Random data: the chance that an output sits within eps of the ReLU kink is negligible.
    fn = lambda x, w, b: conv2d_relu(x, w, b, stride=(1, 2), padding=1, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, wt, b), eps=1e-6, atol=1e-5)
    x1, w1, _ = make_inputs(None, 3, 5, 5, 2, 2, 2, bias=False, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: conv2d_relu(x, w, padding="same"), (x1, w1))


def test_saved_tensors_are_input_weight_output():
    """Backward keeps input, weight and the output (the ReLU mask is recomputed)."""
    x, wt, b = make_inputs(2, 4, 7, 7, 6, 3, 3, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = conv2d_relu(x, wt, b, padding=1)
    assert len(saved) == 3
    assert saved[0] is x and saved[1] is wt
    assert saved[2].shape == out.shape


def test_cpu_eager_call_is_stock_relu_conv2d():
    """Eager CPU calls skip the op's dispatch: the autograd graph is ATen's own (so the
    backward is stock's), saving input, weight and the output as the op does."""
    x, wt, b = make_inputs(2, 4, 7, 7, 6, 3, 3, requires_grad=True)
    out = conv2d_relu(x, wt, b, padding=1)
    assert type(out.grad_fn).__name__ == "ReluBackward0"
    assert type(out.grad_fn.next_functions[0][0]).__name__ == "ConvolutionBackward0"


def test_cpu_eager_refuses_what_aten_accepts():
    """ATen's CPU conv2d takes integer and complex tensors and a weight on meta; the op
    refuses them, eager or not, with its own errors; padding="same" with an even kernel
    pads without ATen's warning, as the op always has."""
    import warnings

    x, wt, b = _ok()
    for dtype in (torch.int64, torch.complex64):
        with pytest.raises(TypeError, match="floating-point"):
            conv2d_relu(x.to(dtype), wt.to(dtype))
    with pytest.raises(ValueError, match="weight is on meta"):
        conv2d_relu(x, wt.to("meta"))
    w_even = torch.randn(6, 4, 4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = conv2d_relu(x, w_even, padding="same")
    torch.testing.assert_close(out, torch.relu(F.conv2d(x, w_even, padding="same")))


@pytest.mark.parametrize("strict", [False, True], ids=["nonstrict", "strict"])
def test_export_keeps_the_op(strict):
    """Traced calls still go through alexnet_cuda::conv2d_relu (the eager shortcut is not
    taken while tracing)."""
    model = Conv2dReLU(3, 4, 3, padding=1)
    ep = torch.export.export(model, (torch.randn(2, 3, 8, 8),), strict=strict)
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == ["alexnet_cuda.conv2d_relu.default"], targets


# ---------------------------------------------------------------------------------------
# Registration: opcheck, fake tensors, torch.compile.
# ---------------------------------------------------------------------------------------


def _op_args(device, dtype=torch.float32, requires_grad=True, groups=2, bias=True):
    x, wt, b = make_inputs(2, 4, 7, 7, 6, 3, 3, groups, bias, dtype=dtype, device=device, requires_grad=requires_grad)
    return (x, wt, b, [2, 1], [1, 0], [1, 2], groups, False)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_opcheck_cpu(bias):
    torch.library.opcheck(torch.ops.alexnet_cuda.conv2d_relu.default, _op_args("cpu", bias=bias))
    torch.library.opcheck(torch.ops.alexnet_cuda.conv2d_relu.default, _op_args("cpu", requires_grad=False, bias=bias))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_cuda_path_traces_to_triton_kernel_with_fake_tensors(layout):
    """The CUDA branch, traced with fake CUDA tensors (no GPU needed): AOTAutograd sees
    the Triton kernel itself, and the output shape/layout follow the documented rule."""
    from functorch.compile import aot_function, make_boxed_func
    from torch._subclasses.fake_tensor import FakeTensorMode

    graphs = []

    def compiler(gm, _):
        graphs.append(gm.code)
        return make_boxed_func(gm)

    fn = aot_function(lambda x, w, b: conv2d_relu(x, w, b, 2, 1, 1, 2), fw_compiler=compiler)
    conv1 = aot_function(lambda x, w, b: conv2d_relu(x, w, b, 4), fw_compiler=compiler)
    try:
        with FakeTensorMode():
            x = torch.empty(2, 6, 11, 13, device="cuda").contiguous(memory_format=layout)
            w = torch.empty(20, 3, 3, 3, device="cuda")
            b = torch.empty(20, device="cuda")
            out = fn(x, w, b)
            # conv1-like: the space-to-depth kernel, then the conv kernel
            x1 = torch.empty(2, 3, 31, 31, device="cuda").contiguous(memory_format=layout)
            out1 = conv1(x1, torch.empty(8, 3, 11, 11, device="cuda"), torch.empty(8, device="cuda"))
    except RuntimeError as exc:  # e.g. a torch build that cannot fake CUDA without a GPU
        if CUDA:
            raise
        pytest.skip(f"fake CUDA tensors unavailable without a GPU here: {exc}")
    assert tuple(out.shape) == (2, 20, 6, 7)
    assert out.is_contiguous(memory_format=layout)
    assert "triton_kernel_wrapper_functional" in graphs[0]
    assert tuple(out1.shape) == (2, 8, 6, 6) and out1.is_contiguous(memory_format=layout)
    assert graphs[1].count("higher_order.triton_kernel_wrapper_functional(") == 2, graphs[1]


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = Conv2dReLU(3, 8, 5, stride=2, padding=2)
        self.c2 = Conv2dReLU(8, 8, 3, padding=1, groups=2)

    def forward(self, x):
        return self.c2(self.c1(x))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_cpu(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _TwoLayers()
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out = compiled(x)
    ref = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, model.c1.weight, model.c2.bias], grad)
    want = torch.autograd.grad(ref, [x, model.c1.weight, model.c2.bias], grad)
    for gt, wa in zip(got, want):
        torch.testing.assert_close(gt, wa, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# The module.
# ---------------------------------------------------------------------------------------


def test_module_matches_conv2d_and_shares_state_dict():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    fused = Conv2dReLU(4, 6, 3, stride=2, padding=1, groups=2)
    assert list(fused.state_dict()) == list(conv.state_dict()) == ["weight", "bias"]
    fused.load_state_dict(conv.state_dict())
    conv.load_state_dict(fused.state_dict())
    assert repr(fused) == repr(conv).replace("Conv2d", "Conv2dReLU")
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(fused(x), F.relu(conv(x)))


def test_module_from_conv_shares_or_copies():
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=2, bias=False)
    shared = Conv2dReLU.from_conv(conv)
    assert shared.weight is conv.weight and shared.bias is None
    copied = Conv2dReLU.from_conv(conv, share_weights=False)
    assert copied.weight is not conv.weight and torch.equal(copied.weight, conv.weight)
    assert copied.weight.device == conv.weight.device
    x = torch.randn(2, 4, 11, 10)
    for m in (shared, copied):
        torch.testing.assert_close(m(x), F.relu(conv(x)))
    with torch.no_grad():
        conv.weight.add_(1.0)
    torch.testing.assert_close(shared(x), F.relu(conv(x)))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        Conv2dReLU.from_conv(nn.Linear(3, 3))


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_module_padding_modes(padding_mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode)
    fused = Conv2dReLU.from_conv(conv)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fused(x), F.relu(conv(x)))


# ---------------------------------------------------------------------------------------
# Bad arguments: clear errors, raised before any kernel runs.
# ---------------------------------------------------------------------------------------


def _ok():
    return make_inputs(2, 4, 8, 8, 6, 3, 3)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda x, w, b: (x[:, :3], w, b, {}), ValueError, "channels"),
        (lambda x, w, b: (x, w, b, {"groups": 4}), ValueError, "groups"),
        (lambda x, w, b: (x, w[0], b, {}), ValueError, "weight must be 4-D"),
        (lambda x, w, b: (x[0, 0], w, b, {}), ValueError, "input must be 4-D"),
        (lambda x, w, b: (x, w.double(), b, {}), TypeError, "weight dtype"),  # DtypeError: a NotImplementedError too
        (lambda x, w, b: (x, w, b.double(), {}), TypeError, "bias dtype"),
        (lambda x, w, b: (x, w, b[:5], {}), ValueError, "bias must have shape"),
        (lambda x, w, b: (x.long(), w.long(), None, {}), TypeError, "floating-point"),
        (lambda x, w, b: (x, w.to("meta"), b, {}), ValueError, "weight is on meta"),
        (lambda x, w, b: (x, w, b.to("meta"), {}), ValueError, "bias is on meta"),
        (lambda x, w, b: (x, w, b, {"stride": 0}), ValueError, "stride"),
        (lambda x, w, b: (x, w, b, {"stride": (1, 2, 3)}), ValueError, "stride"),
        (lambda x, w, b: (x, w, b, {"padding": -1}), ValueError, "padding"),
        (lambda x, w, b: (x, w, b, {"padding": "full"}), ValueError, "padding"),
        (lambda x, w, b: (x, w, b, {"padding": "same", "stride": 2}), ValueError, "same"),
        (lambda x, w, b: (x, w, b, {"dilation": 0}), ValueError, "dilation"),
        (lambda x, w, b: (x, w, b, {"groups": 0}), ValueError, "groups"),
        (lambda x, w, b: (x[:, :, :2, :2], w, b, {}), ValueError, "output would be"),
        (lambda x, w, b: (x.numpy(), w, b, {}), TypeError, "input must be a torch.Tensor"),
    ],
)
def test_bad_arguments_raise_clear_errors(mutate, exc, match):
    x, w, b, kwargs = mutate(*_ok())
    with pytest.raises(exc, match=match):
        conv2d_relu(x, w, b, **kwargs)


def test_errors_are_runtime_errors_like_f_conv2d():
    # Code written for F.conv2d catches RuntimeError; ours is both that and a ValueError.
    x, w, b = _ok()
    for fn in (F.conv2d, conv2d_relu):
        with pytest.raises(RuntimeError):
            fn(x[:, :3], w, b)


@pytest.mark.parametrize(
    "args, match",
    [
        (lambda x, w, b: (x[:, :3], w, b, [1, 1], [0, 0], [1, 1], 1), "channels"),
        (lambda x, w, b: (x[0], w, b, [1, 1], [0, 0], [1, 1], 1), "4-D"),
        (lambda x, w, b: (x, w, b[:5], [1, 1], [0, 0], [1, 1], 1), "bias must have shape"),
        (lambda x, w, b: (x, w, b, [1], [0, 0], [1, 1], 1), "stride"),
        (lambda x, w, b: (x, w, b, [1, 1], [-1, 0], [1, 1], 1), "padding"),
        (lambda x, w, b: (x, w, b, [1, 1], [0, 0], [0, 1], 1), "dilation"),
        (lambda x, w, b: (x, w, b, [1, 1], [0, 0], [1, 1], 3), "groups"),
        (lambda x, w, b: (x, w, b, [1, 1], [0, 0], [9, 9], 1), "output would be"),
    ],
    ids=["channels", "rank", "bias", "stride", "padding", "dilation", "groups", "size"],
)
@pytest.mark.parametrize("device", DEVICES)
def test_op_called_directly_checks_its_arguments(args, match, device):
    # torch.ops.alexnet_cuda.conv2d_relu skips the Python wrapper: its own checks must stop
    # a mismatched shape before the kernel (which would read out of bounds on CUDA).
    x, w, b = (t.to(device) for t in _ok())
    with pytest.raises(ConvArgumentError, match=match):
        torch.ops.alexnet_cuda.conv2d_relu(*args(x, w, b), True)


@needs_cuda
def test_mixed_cpu_cuda_devices_raise():
    x, w, b = _ok()
    with pytest.raises(ValueError, match="weight is on cuda"):
        conv2d_relu(x, w.cuda(), b)
    with pytest.raises(ValueError, match="bias is on cpu"):
        conv2d_relu(x.cuda(), w.cuda(), b)


# ---------------------------------------------------------------------------------------
# CUDA: the Triton kernel on AlexNet's five layers, and the rest on the GPU.
# ---------------------------------------------------------------------------------------

# name: (Cin, H, Cout, K, stride, padding, groups), batch 128
ALEXNET_LAYERS = {
    "conv1": (3, 227, 96, 11, 4, 0, 1),
    "conv2": (96, 27, 256, 5, 1, 2, 2),
    "conv3": (256, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 256, 3, 1, 1, 2),
}
# mode: (dtype, allow_tf32, max relative-norm error vs an IEEE fp32 reference)
MODES = {
    "fp32": (torch.float32, False, 1e-5),
    "tf32": (torch.float32, True, 3e-3),
    "fp16": (torch.float16, False, 3e-3),
    "bf16": (torch.bfloat16, False, 1.5e-2),
}


@pytest.fixture
def restore_tf32():
    old = torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32 = old


def _ieee_reference(x, w, b, **kwargs):
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return ref_conv_relu(x.float(), w.float(), None if b is None else b.float(), **kwargs)
    finally:
        torch.backends.cudnn.allow_tf32 = old


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layer", list(ALEXNET_LAYERS))
def test_cuda_alexnet_layers(layer, mode, layout, restore_tf32):
    cin, h, cout, k, stride, padding, groups = ALEXNET_LAYERS[layer]
    dtype, tf32, tol = MODES[mode]
    x, w, b = make_inputs(
        128, cin, h, h, cout, k, k, groups, dtype=dtype, device="cuda", layout=layout, seed=hash(layer) % 1000
    )
    torch.backends.cudnn.allow_tf32 = tf32
    out = conv2d_relu(x, w, b, stride, padding, 1, groups)
    ref = _ieee_reference(x, w, b, stride=stride, padding=padding, groups=groups)
    assert out.shape == ref.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=layout)
    assert torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < tol, f"{layer} {mode}: relative error {err:.2e} >= {tol:.0e}"


@needs_cuda
@pytest.mark.cuda
def test_cuda_tf32_flag_is_followed(restore_tf32):
    """TF32 on gives TF32-sized errors, off gives IEEE-sized ones: the flag reaches tl.dot."""
    x, w, b = make_inputs(128, 256, 13, 13, 384, 3, 3, device="cuda", seed=3)
    ref = _ieee_reference(x, w, b, padding=1)
    torch.backends.cudnn.allow_tf32 = False
    err_ieee = rel_err(conv2d_relu(x, w, b, padding=1), ref)
    torch.backends.cudnn.allow_tf32 = True
    err_tf32 = rel_err(conv2d_relu(x, w, b, padding=1), ref)
    assert err_ieee < 1e-5 < err_tf32 < 3e-3, (err_ieee, err_tf32)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", ARG_CASES, ids=[str(i) for i in range(len(ARG_CASES))])
def test_cuda_argument_forms(case, layout, restore_tf32):
    torch.backends.cudnn.allow_tf32 = False
    n, cin, h, w, cout, kh, kw, kwargs = case
    x, wt, b = make_inputs(n, cin, h, w, cout, kh, kw, kwargs.get("groups", 1), device="cuda", layout=layout)
    out = conv2d_relu(x, wt, b, **kwargs)
    ref = ref_conv_relu(x, wt, b, **kwargs)
    assert out.shape == ref.shape
    if ref.numel():
        assert rel_err(out, ref) < 1e-5


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_gradients_match_eager(dtype, restore_tf32):
    torch.backends.cudnn.allow_tf32 = False
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    # conv2's shape, then conv1's (its weight gradient goes through space-to-depth), with
    # the input's gradient asked for and not (as in a model, where conv1's input is data).
    for shape, kwargs, input_grad in [
        ((8, 96, 27, 27, 256, 5, 5, 2), dict(padding=2, groups=2), True),
        ((8, 3, 227, 227, 96, 11, 11, 1), dict(stride=4), True),
        ((8, 3, 227, 227, 96, 11, 11, 1), dict(stride=4), False),
    ]:
        x, w, b = make_inputs(*shape, dtype=dtype, device="cuda", layout=torch.channels_last, requires_grad=True)
        x.requires_grad_(input_grad)
        out = conv2d_relu(x, w, b, **kwargs)
        ref = ref_conv_relu(x, w, b, **kwargs)
        grad = torch.randn_like(ref)
        wrt = [x, w, b] if input_grad else [w, b]
        got = torch.autograd.grad(out, wrt, grad)
        want = torch.autograd.grad(ref, wrt, grad)
        for name, gt, wa in zip("xwb" if input_grad else "wb", got, want):
            assert rel_err(gt, wa) < tol, (shape, name)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("mode", ["fp32", "bf16"])
@pytest.mark.parametrize("layer", list(ALEXNET_LAYERS))
def test_cuda_triton_backward_alexnet_layers(layer, mode, layout, restore_tf32, triton_chosen):
    """The Triton dgrad/wgrad (chosen for every shape) on AlexNet's layers at batch 8,
    against an IEEE fp32 reference of F.conv2d + relu's gradients."""
    dtype, allow_tf32, tol = MODES[mode]
    torch.backends.cudnn.allow_tf32 = allow_tf32
    cin, h, cout, k, stride, padding, groups = ALEXNET_LAYERS[layer]
    x, w, b = make_inputs(
        8, cin, h, h, cout, k, k, groups, dtype=dtype, device="cuda", layout=layout, requires_grad=True
    )
    out = conv2d_relu(x, w, b, stride, padding, 1, groups)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, b), grad)
    torch.backends.cudnn.allow_tf32 = False
    leaves = [t.detach().float().requires_grad_() for t in (x, w, b)]
    ref = ref_conv_relu(*leaves, stride, padding, 1, groups)
    want = torch.autograd.grad(ref, leaves, torch.where(out.float() > 0, grad.float(), 0.0))
    for name, gt, wa in zip("xwb", got, want):
        assert rel_err(gt, wa) < max(tol, 2e-3 if mode == "fp32" else tol), (layer, name)
    directions = {key.split("|")[1] for key in triton_chosen.choices()}
    assert directions == ({"forward", "wgrad"} if stride > 1 else {"forward", "dgrad", "wgrad"})


@needs_cuda
@pytest.mark.cuda
def test_cuda_opcheck_and_float64_fallback():
    torch.library.opcheck(torch.ops.alexnet_cuda.conv2d_relu.default, _op_args("cuda"))
    torch.library.opcheck(
        torch.ops.alexnet_cuda.conv2d_relu.default, _op_args("cuda", dtype=torch.float16, requires_grad=False)
    )
    x, w, b = make_inputs(2, 4, 6, 5, 4, 3, 2, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d_relu(x, w, b, padding=1, groups=2), (x, w, b))


@needs_cuda
@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _TwoLayers().cuda().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(x)
        ref = model(x)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) < 1e-2
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@needs_cuda
@pytest.mark.cuda
def test_cuda_addressing_past_2_31_elements():
    """Input and output past 2^31 elements: the batch offsets must be 64-bit."""
    n, c, h, cout = 16400, 8, 128, 16  # input 2.15e9 and output 4.3e9 elements (fp16)
    need = (n * c * h * h + n * cout * h * h) * 2
    if torch.cuda.get_device_properties(0).total_memory < need + (4 << 30):
        pytest.skip("needs ~18 GB of GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, c, h, h, device="cuda", dtype=torch.float16, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, c, 3, 3, device="cuda", dtype=torch.float16, generator=g) / 8.5
    b = torch.randn(cout, device="cuda", dtype=torch.float16, generator=g) * 0.1
    out = conv2d_relu(x, w, b, padding=1)
    for sl in (slice(0, 2), slice(n - 2, n)):
        ref = _ieee_reference(x[sl], w, b, padding=1)
        assert rel_err(out[sl], ref) < 3e-3


def test_shapes_past_the_kernel_limits_go_to_aten():
    """F.conv2d accepts them, so the op must too: the CUDA path hands them to ATen."""
    from alexnet_cuda.ops.conv2d_relu.kernel import triton_kernel_takes

    def takes(n, c, h, w, cout, k, groups=1, memory_format=torch.channels_last, padding=0):
        x = torch.empty(n, c, h, w, device="meta").contiguous(memory_format=memory_format)
        wt = torch.empty(cout, c // groups, k, k, device="meta")
        return triton_kernel_takes(x, wt, [1, 1], [padding] * 2, [1, 1], groups)

    assert takes(128, 256, 13, 13, 384, 3)  # AlexNet's conv3
    assert takes(128, 3, 227, 227, 96, 11, memory_format=torch.contiguous_format)
    assert not takes(1, 70000, 3, 3, 70000, 1, groups=70000)  # grid axis 1 > 65535
    assert not takes(2**15, 1, 256, 256, 1, 1)  # N*Ho*Wo = 2^31
    assert takes(2**15 - 1, 1, 256, 256, 1, 1)  # 2^31 - 65536: fine
    assert takes(1, 2**16, 2**8, 2**7, 1, 1)  # an image of 2^31 elements: offsets fit
    assert not takes(1, 2**16, 2**8 + 1, 2**7, 1, 1)  # one more row: they do not
    # Padding: a tap starting above the image reaches PH rows past its end.
    assert not takes(1, 2**16, 2**8, 2**7, 1, 3, padding=1)
    assert not takes(1, 2**16, 2**8, 2**7, 1, 3, padding=1, memory_format=torch.contiguous_format)


def test_integer_like_arguments_like_f_conv2d():
    """numpy integers and 0-d integer tensors work wherever F.conv2d takes an int."""
    import numpy as np

    x, w = torch.randn(1, 4, 9, 9), torch.randn(6, 4, 3, 3)
    for stride in (np.int64(2), (np.int32(2), 1), torch.tensor(2), [torch.tensor(1), 2]):
        torch.testing.assert_close(
            conv2d_relu(x, w, stride=stride, padding=np.int64(1)), torch.relu(F.conv2d(x, w, stride=stride, padding=1))
        )


def test_output_layout_rule_is_cudnns():
    """output_memory_format agrees with F.conv2d on CUDA (cuDNN's rule: the inputs'
    suggested memory format) for dense, sliced and size-1 layouts; fake CUDA tensors, so
    no GPU is needed."""
    import itertools

    from torch._subclasses.fake_tensor import FakeTensorMode

    from alexnet_cuda.ops.conv2d_relu.kernel import output_memory_format

    layouts = [torch.contiguous_format, torch.channels_last]
    try:
        with FakeTensorMode():
            for (n, c, h, w), (lx, lw), sliced in itertools.product(
                [(2, 4, 5, 5), (2, 1, 5, 5), (2, 4, 1, 1), (1, 4, 1, 5)],
                itertools.product(layouts, layouts),
                [False, True],
            ):
                x = torch.empty(n, 2 * c if sliced else c, h, w, device="cuda").contiguous(memory_format=lx)
                x = x[:, :c]  # a channel slice of a bigger tensor: not dense
                wt = torch.empty(6, c, 1, 1, device="cuda").contiguous(memory_format=lw)
                ref = F.conv2d(x, wt)
                ours = torch.empty(ref.shape, device="cuda", memory_format=output_memory_format(x, wt))
                assert ours.stride() == ref.stride(), (x.shape, x.stride(), wt.stride())
    except RuntimeError as exc:
        if CUDA:
            raise
        pytest.skip(f"fake CUDA tensors unavailable without a GPU here: {exc}")
