"""alexnet_cuda.ops.local_response_norm / nn.LocalResponseNorm vs PyTorch's."""

import pytest
import torch
import torch.nn.functional as F

import alexnet_cuda
from alexnet_cuda.ops import local_response_norm
from conftest import DEVICES, big_randn, layout, offset_view, poison, saved_tensors, skip_unless_free_memory
from conftest import rand as _rand


def rand(shape, device, dtype=torch.float32, scale=3.0):
    # Values of order 1-10 by default, so that k and the sum of squares both matter.
    return _rand(shape, device, dtype, scale)


# (atol, rtol) for the kernel's output vs a float64 reference on the same input values.
TOL = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-6, 1e-5),
    torch.float16: (1e-3, 2e-3),
    torch.bfloat16: (8e-3, 1.6e-2),
}


def reference(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """PyTorch's composite LRN in float64."""
    return F.local_response_norm(x.double(), size, alpha, beta, k)


def paper_reference(x, size, alpha, beta, k):
    """The paper's formula written out: alpha on the raw sum, PyTorch's window placement."""
    x = x.double()
    C = x.shape[1]
    out = torch.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)
        s = k + alpha * (x[:, lo:hi] ** 2).sum(dim=1)
        out[:, c] = x[:, c] / s**beta
    return out


SHAPES = [
    (2, 96, 13, 15),  # AlexNet's channel count, odd spatial size
    (3, 16, 8, 8),
    (2, 3, 5, 4),  # fewer channels than the window
    (2, 1, 4, 4),  # one channel
    (2, 7, 11),  # 3-D (N, C, L)
    (2, 6, 3, 4, 5),  # 5-D (N, C, D, H, W)
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 12])
def test_forward_matches_pytorch(device, shape, size):
    x = rand(shape, device)
    poison(x.device, 2 * x.numel() * 8)  # an unwritten output element reads NaN
    out = local_response_norm(x, size, alpha=0.2, beta=0.75, k=2.0)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(out.double(), reference(x, size, 0.2, 0.75, 2.0), atol=atol, rtol=rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
# On CUDA, size 5 takes the sweep kernels in fp32/fp16/bf16 and size 9 the shared-memory
# tile kernels (csrc/lrn/lrn_cuda.cu), which fp64 takes at every size.
@pytest.mark.parametrize("size", [5, 9])
def test_dtypes_and_layouts(device, dtype, kind, size):
    x = layout(rand((2, 24, 9, 7), device, dtype), kind).requires_grad_()
    out = local_response_norm(x, size, alpha=1e-2, beta=0.75, k=2.0)
    assert out.dtype == dtype and out.shape == x.shape
    if kind == "channels_last":  # processed natively, layout preserved
        assert out.is_contiguous(memory_format=torch.channels_last)
    xr = x.detach().double().requires_grad_()
    ref = F.local_response_norm(xr, size, 1e-2, 0.75, 2.0)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=rtol)
    g = rand(x.shape, device, dtype, scale=1.0)
    poison(x.device, 4 * x.numel() * 8)  # an unwritten gradient element reads NaN
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, xr, g.double())
    assert gx.dtype == dtype and gx.shape == x.shape
    torch.testing.assert_close(gx.double(), gr, atol=atol * 4, rtol=rtol * 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 96, 55, 55), (2, 256, 27, 27)], ids=str)
def test_alexnet_shapes_forward_backward(device, kind, shape):
    # The paper's layer: size 5, alpha 1e-4 (over size), beta 0.75, k 2, after a ReLU.
    x = layout(rand(shape, device).relu(), kind).requires_grad_()
    xr = x.detach().double().requires_grad_()
    out = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    ref = F.local_response_norm(xr, 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-5)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, xr, g.double())
    torch.testing.assert_close(gx.double(), gr, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [1, 2, 5, 6, 9])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_backward_matches_pytorch(device, size, kind):
    x = layout(rand((3, 10, 6, 5), device, torch.float64), kind).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    out = local_response_norm(x, size, 0.3, 0.75, 1.5)
    ref = F.local_response_norm(xr, size, 0.3, 0.75, 1.5)
    # A non-contiguous incoming gradient, in a different layout from x.
    g = layout(torch.randn_like(ref), "strided")
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, xr, g)
    torch.testing.assert_close(gx, gr, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size", [2, 5, 12])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_backward_matches_pytorch_over_shapes(device, shape, size, kind):
    # The forward test's shapes, 3-D (N, C, L) and 5-D (N, C, D, H, W) included.
    x = layout(rand(shape, device, torch.float64), kind).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    g = rand(shape, device, torch.float64, scale=1.0)
    out = local_response_norm(x, size, 0.3, 0.75, 1.5)
    ref = F.local_response_norm(xr, size, 0.3, 0.75, 1.5)
    poison(x.device, 4 * x.numel() * 8)  # an unwritten gradient element reads NaN
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, xr, g)
    torch.testing.assert_close(gx, gr, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_low_precision(device, dtype):
    x = rand((2, 32, 7, 7), device, dtype).requires_grad_()
    xr = x.detach().double().requires_grad_()
    g = torch.randn(x.shape, device=device, dtype=dtype)
    (gx,) = torch.autograd.grad(local_response_norm(x, 5, 0.1, 0.75, 2.0), x, g)
    (gr,) = torch.autograd.grad(F.local_response_norm(xr, 5, 0.1, 0.75, 2.0), xr, g.double())
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(gx.double(), gr, atol=atol * 4, rtol=rtol * 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [3, 4, 5])
def test_paper_alpha(device, size):
    x = rand((2, 12, 5, 5), device, torch.float64)
    out = local_response_norm(x, size, alpha=1e-2, beta=0.75, k=2.0, paper_alpha=True)
    torch.testing.assert_close(out, paper_reference(x, size, 1e-2, 0.75, 2.0))
    # ... which is PyTorch's convention with alpha * size.
    torch.testing.assert_close(out, reference(x, size, 1e-2 * size, 0.75, 2.0))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    for size, kind in [(3, "contiguous"), (4, "channels_last"), (7, "strided")]:
        x = layout(rand((2, 5, 3, 4), device, torch.float64, scale=1.0), kind).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 0.5, 0.75, 1.0), (x,))
        paper = lambda t: local_response_norm(t, size, 0.5, 0.6, 1.0, paper_alpha=True)  # noqa: E731
        assert torch.autograd.gradcheck(paper, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_3d_and_5d(device):
    for shape, size, kind in [
        ((2, 5, 4), 3, "contiguous"),
        ((2, 5, 4), 4, "channels_last"),
        ((1, 4, 2, 3, 2), 3, "contiguous"),
        ((1, 4, 2, 3, 2), 6, "channels_last"),
    ]:
        x = layout(rand(shape, device, torch.float64, scale=1.0), kind).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 0.5, 0.75, 1.0), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("size", [5, 9])
def test_saves_only_the_input(device, kind, size):
    # The module docstring's claim: backward keeps the input (alive anyway), neither the
    # output nor the normalizing scale.
    x = layout(rand((2, 12, 5, 4), device), kind).requires_grad_()
    (t,) = saved_tensors(lambda x: local_response_norm(x, size, 1e-2, 0.75, 2.0), x)
    assert t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert (t.shape, t.stride(), t.dtype) == (x.shape, x.stride(), x.dtype)


# Windows of size <= 7 (fp32/fp16/bf16 on CUDA, every dtype on CPU) take the register
# kernels of csrc/lrn/lrn_sweep.h, which the CPU runs item for item like the GPU threads.
# Cover every compiled window width, both layouts, with and without 16-byte vectors, and
# a channel count (40) that splits NCHW columns into two runs (32 + 8).
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("aligned", ["vector", "vector_offset", "scalar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_sweep_kernel_paths(device, size, kind, aligned, dtype):
    x = layout(rand((2, 40, 4, 8), device, dtype), kind)  # 32 pixels, 40 channels
    if aligned == "vector_offset":  # a storage offset of 16 bytes: still vectors
        x = offset_view(x, 16 // x.element_size())
    elif aligned == "scalar":
        x = offset_view(x, 1)
    assert x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    g = rand(x.shape, device, dtype, scale=1.0)
    nbytes = 4 * x.numel() * 8
    poison(x.device, nbytes)  # an unwritten output (or gradient) element reads NaN
    out = local_response_norm(x, size, alpha=0.3, beta=0.75, k=1.5)
    poison(x.device, nbytes)
    (gx,) = torch.autograd.grad(local_response_norm(x, size, 0.3, 0.75, 1.5), x, g)
    xr = x.detach().double().requires_grad_()
    ref = F.local_response_norm(xr, size, 0.3, 0.75, 1.5)
    (gr,) = torch.autograd.grad(ref, xr, g.double())
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(gx.double(), gr, atol=atol * 4, rtol=rtol * 2)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    for shape in [(0, 96, 5, 5), (2, 0, 5, 5), (2, 4, 0, 5)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        out = local_response_norm(x, 5)
        assert out.shape == x.shape
        out.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
def test_k_zero_with_zero_windows_like_pytorch(device):
    # 0 / 0^beta = NaN in PyTorch; inputs it accepts must behave the same here.
    x = rand((2, 8, 4, 4), device)
    x[:, :, :2] = 0
    out = local_response_norm(x, 3, alpha=1e-4, beta=0.75, k=0.0)
    torch.testing.assert_close(out.double(), reference(x, 3, 1e-4, 0.75, 0.0), equal_nan=True, atol=1e-6, rtol=1e-5)
    assert out[:, :, :2].isnan().all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [5, 9])  # sweep kernels and the general path
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_overflowing_sum_of_squares_like_pytorch(device, size, kind):
    # x^2 overflows fp32: s = +inf, s^-beta = 0. The gradient must stay finite (0 * inf
    # would make it NaN), exactly as PyTorch's fp32 composite's.
    x = rand((2, 12, 3, 4), device)
    x[:, 2, 1, 1] = 1e20
    x[0, 7, 0, 0] = -3e19
    x = layout(x, kind).requires_grad_()
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(local_response_norm(x, size, 1e-4, 0.75, 2.0), x, g)
    (gr,) = torch.autograd.grad(F.local_response_norm(x, size, 1e-4, 0.75, 2.0), x, g)
    assert gr.isfinite().all() and gx.isfinite().all()
    torch.testing.assert_close(gx, gr, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [5, 9])  # sweep kernels and the general path
def test_beta_zero_like_pytorch(device, size):
    # s^-0 = 1 for every s, zero windows with k = 0 and overflowed sums included (the GPU's
    # exp2(-beta * log2(s)) would give NaN there).
    x = rand((2, 12, 3, 4), device)
    x[:, :, 0] = 0  # zero windows: s = k = 0
    x[0, 3, 1, 1] = 1e20  # s = inf in fp32
    out = local_response_norm(x, size, alpha=1e-4, beta=0.0, k=0.0)
    torch.testing.assert_close(out, F.local_response_norm(x, size, alpha=1e-4, beta=0.0, k=0.0))
    assert torch.equal(out, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [5, 9])  # sweep kernels and the general path
@pytest.mark.parametrize("beta", [1.0, 2.0, 0.75])
def test_negative_base_like_pytorch(device, size, beta):
    # k < 0 makes s = k + alpha/n * sum(x^2) negative: pow(s, -beta) is finite for a
    # whole-number beta and NaN otherwise, in PyTorch and here (the GPU's exp2/log2 form
    # alone would give NaN for every negative s).
    x = rand((2, 12, 3, 4), device, torch.float32).requires_grad_()
    g = torch.randn_like(x)
    out = local_response_norm(x, size, alpha=1e-4, beta=beta, k=-1.0)
    ref = F.local_response_norm(x, size, alpha=1e-4, beta=beta, k=-1.0)
    assert out.isfinite().all() == (beta != 0.75)
    torch.testing.assert_close(out, ref, equal_nan=True, atol=1e-6, rtol=1e-5)
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, equal_nan=True, atol=1e-6, rtol=1e-5)


def test_channel_limit_is_a_clear_error():
    x = torch.empty(1, 2**30, 1, device="meta")
    with pytest.raises(ValueError, match="channels"):
        local_response_norm(x, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = rand((2, 6, 5, 4), device)
    for t in [x, layout(x, "channels_last")]:
        t = t.clone().requires_grad_()
        torch.library.opcheck(torch.ops.alexnet_cuda.local_response_norm.default, (t, 5, 1e-4, 0.75, 2.0, False))
        torch.library.opcheck(torch.ops.alexnet_cuda.lrn_forward.default, (t, 5, 2e-5, 0.75, 2.0))
        g = torch.randn_like(t)
        torch.library.opcheck(torch.ops.alexnet_cuda.lrn_backward.default, (g, t.detach(), 5, 2e-5, 0.75, 2.0))


@pytest.mark.parametrize("device", DEVICES)
def test_module_is_drop_in(device):
    ours = alexnet_cuda.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    stock = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    assert repr(ours) == repr(stock)
    assert ours.state_dict().keys() == stock.state_dict().keys()
    ours.load_state_dict(stock.state_dict())
    assert isinstance(ours, torch.nn.LocalResponseNorm)
    x = rand((2, 10, 6, 6), device)
    torch.testing.assert_close(ours(x), stock(x))
    paper = alexnet_cuda.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0, paper_alpha=True)
    assert "paper_alpha=True" in repr(paper)
    torch.testing.assert_close(paper(x), torch.nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(x))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), alexnet_cuda.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    ).to(device)
    compiled = torch.compile(model, fullgraph=True)
    x = rand((2, 3, 9, 9), device).requires_grad_()
    out = compiled(x)
    ref = model(x)
    torch.testing.assert_close(out, ref)
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g1, g2)


def test_double_backward_raises_clearly():
    x = rand((2, 4, 3, 3), "cpu", torch.float64).requires_grad_()
    (g,) = torch.autograd.grad(local_response_norm(x, 3).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()


@pytest.mark.parametrize(
    "make, size, error, match",
    [
        (lambda: torch.randint(0, 5, (2, 4, 3, 3)), 3, TypeError, "floating-point"),
        (lambda: torch.randn(4, 3), 3, ValueError, "3D or higher"),
        (lambda: torch.randn(2, 4, 3), 0, ValueError, "size must be positive"),
        (lambda: torch.randn(2, 4, 3), -2, ValueError, "size must be positive"),
        (lambda: torch.randn(2, 4, 3), 2.5, TypeError, "size must be an int"),
        (lambda: [[1.0]], 3, TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(make, size, error, match):
    with pytest.raises(error, match=match):
        local_response_norm(make(), size)


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda: torch.randn(2, 4, 3), 0),
        (lambda: torch.randn(2, 4, 3), -2),
        (lambda: torch.randint(0, 5, (2, 4, 3), dtype=torch.int32), 3),
    ],
)
def test_bad_inputs_raise_what_pytorch_raises(make, size):
    """Code catching F.local_response_norm's exception type catches ours too."""
    with pytest.raises(Exception) as theirs:
        F.local_response_norm(make(), size)
    with pytest.raises(type(theirs.value)):
        local_response_norm(make(), size)


@pytest.mark.skipif(
    alexnet_cuda.has_cuda_kernels(),
    reason="this build has CUDA kernels (the check is for a build without them: ALEXNET_CUDA_FORCE_CPU=1)",
)
@pytest.mark.parametrize(
    "op",
    [
        lambda x: local_response_norm(x, 3),
        lambda x: alexnet_cuda.ops.max_pool2d(x, 3),
        lambda x: alexnet_cuda.ops.relu_lrn_max_pool2d(x, 3),
    ],
    ids=["lrn", "max_pool2d", "relu_lrn_max_pool2d"],
)
def test_device_without_kernels_is_a_clear_error(op):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 4, 3, 3, device="cuda")
        with pytest.raises(RuntimeError, match="built without its CUDA kernels"):
            op(x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_indexing_past_2_31_elements(device, kind):
    # On CPU too: the CPU runs the CUDA kernels' per-item code (lrn_sweep.h), so this checks
    # their 64-bit offsets without a GPU. The backward op is called directly: through
    # autograd the saved output would be one more 4 GiB tensor.
    skip_unless_free_memory(device, 14)
    # 8 channels of 2^28 + 5 pixels, 2^31 + 40 elements: NCHW channel offsets c * P and
    # channels-last pixel offsets p * 8 both pass 2^31.
    P = 2**28 + 5
    x = layout(big_randn((1, 8, P), device, torch.bfloat16), kind)
    out = local_response_norm(x, 5, 0.3, 0.75, 2.0)
    for lo in (0, P - 4096):  # check the first and the last pixels of every channel
        xs = x[:, :, lo : lo + 4096]
        torch.testing.assert_close(
            out[:, :, lo : lo + 4096].double(), reference(xs, 5, 0.3, 0.75, 2.0), atol=8e-3, rtol=1.6e-2
        )
    del out
    g = layout(big_randn((1, 8, P), device, torch.bfloat16, period=999_983), kind)
    gx = torch.ops.alexnet_cuda.lrn_backward(g, x, 5, 0.3 / 5, 0.75, 2.0)
    for lo in (0, P - 4096):
        xs = x[:, :, lo : lo + 4096].double().requires_grad_()
        (gr,) = torch.autograd.grad(F.local_response_norm(xs, 5, 0.3, 0.75, 2.0), xs, g[:, :, lo : lo + 4096].double())
        torch.testing.assert_close(gx[:, :, lo : lo + 4096].double(), gr, atol=3e-2, rtol=3e-2)


# The power in the fast path: s^-0.75 = r * sqrt(r) with r = rsqrt(s), and for backward
# s^-1.75 = s^-0.75 * r * r (csrc/lrn/lrn.h, Pow34: MUFU rsqrt/sqrt on the GPU, correctly
# rounded roots on the CPU). Stated bound: relative 2^-20.5 for s^-0.75 and 2^-19.5 for
# s^-1.75. Checked here against float64 over s from FLT_MIN-ish to 1e30, through the op:
# size 1 makes s = k + alpha * x^2 (k tiny), so y = x s^-0.75 and dx = dy (s^-0.75 -
# 1.5 alpha x^2 s^-1.75). The bound allows for the fp32 roundings of s and of y / dx too.
# (On a machine without a GPU only the CPU's formula runs; the CUDA case needs a GPU.)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_pow34_error_bound(device, kind):
    exps = torch.linspace(-15, 15, 8 * 4096, dtype=torch.float64)
    x64 = (10.0**exps) * torch.where(torch.arange(exps.numel()) % 2 == 0, 1.0, -1.0)
    x = layout(x64.float().view(8, 4, 32, 32).to(device), kind)  # 4 channels, size 1
    k, alpha = 1e-30, 1.0  # >= FLT_MIN: the fast path applies (pow34_applies)
    xd = x.double().cpu()
    s = k + alpha * xd * xd
    y = local_response_norm(x, 1, alpha=alpha, beta=0.75, k=k).double().cpu()
    y_ref = xd * s**-0.75
    rel = ((y - y_ref).abs() / y_ref.abs()).max().item()
    assert rel <= 2**-20, rel
    # backward: each term within its bound (p0: 2^-20.5, p1: 2^-19.5; plus fp32 rounding)
    g = torch.randn(x.shape, dtype=torch.float64).float().to(device)
    x_ = x.detach().requires_grad_()
    (gx,) = torch.autograd.grad(local_response_norm(x_, 1, alpha=alpha, beta=0.75, k=k), x_, g)
    gd = g.double().cpu()
    p0, p1 = s**-0.75, s**-1.75
    term0, term1 = gd * p0, 1.5 * alpha * gd * xd * xd * p1
    bound = 2**-20 * term0.abs() + 2**-19 * term1.abs() + 2**-22 * (term0 - term1).abs()
    err = (gx.double().cpu() - (term0 - term1)).abs()
    # where fp32 holds every intermediate of the backward (s^-1.75 overflows below s ~ 1e-22
    # and underflows above ~1e21): s in [1e-20, 1e20]
    inside = (s >= 1e-20) & (s <= 1e20)
    assert inside.sum() > 1000
    assert (err <= bound)[inside].all(), (err / bound)[inside].max().item()
