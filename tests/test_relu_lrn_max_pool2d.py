"""alexnet_cuda.ops.relu_lrn_max_pool2d / nn.ReLULRNMaxPool2d vs the stock composition
F.relu -> F.local_response_norm (per LRN group, torch.cat of chunks) -> F.max_pool2d.

Parity is checked in float64 (forward and input gradients), the argmax against
F.max_pool2d's indices on the reference LRN output (tie and NaN rules), low precision
against the float64 reference with tolerances.
"""

import pytest
import torch
import torch.nn.functional as F

import alexnet_cuda  # noqa: F401  (loads the ops)
from alexnet_cuda.nn.relu_lrn_max_pool2d import ReLULRNMaxPool2d
from alexnet_cuda.ops.relu_lrn_max_pool2d import relu_lrn_max_pool2d
from conftest import (
    DEVICES,
    big_randn,
    cpu_runs_cuda_items,
    layout,
    offset_view,
    poison,
    saved_tensors,
    skip_unless_free_memory,
)
from conftest import rand as _rand


def rand(shape, device, dtype=torch.float64):
    return _rand(shape, device, dtype)


OP = torch.ops.alexnet_cuda.relu_lrn_max_pool2d_forward
BWD = torch.ops.alexnet_cuda.relu_lrn_max_pool2d_backward


def reference(
    x,
    size=5,
    alpha=1e-4,
    beta=0.75,
    k=2.0,
    kernel_size=3,
    stride=2,
    *,
    lrn_groups=1,
    paper_alpha=False,
    return_indices=False,
):
    a = alpha * size if paper_alpha else alpha
    z = F.relu(x)
    z = torch.cat([F.local_response_norm(p, size, a, beta, k) for p in z.chunk(lrn_groups, dim=1)], dim=1)
    return F.max_pool2d(z, kernel_size, stride, return_indices=return_indices)


def flat_indices(argmax, H, W, kernel_size, stride):
    """uint8 window-local argmax -> flat h * W + w (F.max_pool2d's indices)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    a = argmax.long()
    Ho, Wo = a.shape[-2:]
    oh = torch.arange(Ho, device=a.device).view(Ho, 1)
    ow = torch.arange(Wo, device=a.device).view(1, Wo)
    return (oh * sh + a // kw) * W + (ow * sw + a % kw)


def grads(fn, x, gy, **kw):
    xg = x.detach().clone().requires_grad_()
    y = fn(xg, **kw)
    (gx,) = torch.autograd.grad(y, xg, gy)
    return y, gx


def check_parity(x, atol=1e-12, rtol=1e-10, **kw):
    poison(x.device, 4 * x.numel() * 8)
    y_ref = reference(x, **kw)
    gy = torch.randn(y_ref.shape, dtype=torch.float64).to(x.device, x.dtype)
    y_ref, gx_ref = grads(reference, x, gy, **kw)
    y, gx = grads(relu_lrn_max_pool2d, x, gy, **kw)
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, y_ref, atol=atol, rtol=rtol, equal_nan=True)
    torch.testing.assert_close(gx, gx_ref, atol=atol, rtol=rtol, equal_nan=True)
    # argmax == the stock max-pool's indices on the stock LRN output
    kernel_size, stride = kw.get("kernel_size", 3), kw.get("stride", 2)
    _, idx = reference(x, **kw, return_indices=True)
    _, argmax = OP(
        x,
        kw.get("size", 5),
        _scale(kw),
        kw.get("beta", 0.75),
        kw.get("k", 2.0),
        _pair(kernel_size),
        _pair(stride),
        kw.get("lrn_groups", 1),
    )
    assert argmax.dtype == torch.uint8
    torch.testing.assert_close(flat_indices(argmax, x.shape[-2], x.shape[-1], kernel_size, stride), idx, rtol=0, atol=0)
    return y, gx


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _scale(kw):
    size, alpha = kw.get("size", 5), kw.get("alpha", 1e-4)
    return float(alpha) if kw.get("paper_alpha", False) else float(alpha) / size


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,groups", [((2, 96, 55, 55), 2), ((2, 256, 27, 27), 2), ((2, 96, 55, 55), 1)])
@pytest.mark.parametrize("paper_alpha", [False, True])
def test_alexnet_shapes_float64(device, shape, groups, paper_alpha):
    x = rand(shape, device)
    check_parity(x, lrn_groups=groups, paper_alpha=paper_alpha)


ODD = [
    # (shape, kwargs)
    ((3, 10, 9, 13), dict(size=3, lrn_groups=2)),
    ((1, 12, 8, 7), dict(size=4, lrn_groups=3, kernel_size=(3, 2), stride=(2, 1))),  # even size
    ((2, 7, 5, 5), dict(size=9, alpha=1e-2, beta=0.5, k=1.0)),  # window larger than C
    ((2, 6, 11, 6), dict(size=5, lrn_groups=6, kernel_size=2, stride=3)),  # gaps between windows
    ((1, 33, 17, 70), dict(size=5, lrn_groups=3)),  # several spatial / channel tiles on CUDA
    ((2, 4, 3, 3), dict(size=1, kernel_size=3, stride=1)),
    ((1, 5, 16, 16), dict(size=5, alpha=0.5, beta=0.75, k=2.0, kernel_size=(1, 4), stride=(3, 4))),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,kw", ODD)
@pytest.mark.parametrize("paper_alpha", [False, True])
def test_odd_shapes_float64(device, shape, kw, paper_alpha):
    x = rand(shape, device)
    check_parity(x, paper_alpha=paper_alpha, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["channels_last", "strided"])
@pytest.mark.parametrize("groups", [1, 2])
def test_layouts(device, kind, groups):
    x = layout(rand((2, 16, 15, 13), device), kind)
    y, gx = check_parity(x, lrn_groups=groups)
    if kind == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert gx.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_low_precision(device, dtype, kind):
    # Inputs rounded to dtype; the reference is float64 on those same values. Values
    # are computed in fp32 and rounded once.
    x = layout(rand((2, 24, 13, 13), device, dtype), kind)
    gy = rand((2, 24, 6, 6), device, dtype)
    kw = dict(lrn_groups=2, alpha=1e-2)
    y, gx = grads(relu_lrn_max_pool2d, x, gy, **kw)
    assert y.dtype == dtype and gx.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(y.double(), reference(x.double(), **kw), atol=tol, rtol=tol)
    # Low-precision inputs repeat values, so two LRN values of a window can be closer
    # than fp32 vs fp64 rounding and the argmax may legitimately differ from the fp64
    # reference's. So: our argmax must point at a (near-)maximum of the fp64 LRN values,
    # and the gradient is compared with the fp64 LRN backward of dy routed by OUR argmax.
    _, argmax = OP(x, 5, 1e-2 / 5, 0.75, 2.0, [3, 3], [2, 2], 2)
    flat = flat_indices(argmax, 13, 13, 3, 2).reshape(2, 24, -1)
    xd = x.double().detach().requires_grad_()
    lrn = reference(xd, **kw, kernel_size=1, stride=1)  # relu -> grouped LRN, no pooling
    picked = lrn.detach().reshape(2, 24, -1).gather(2, flat).view_as(y)
    torch.testing.assert_close(picked, y.double(), atol=tol, rtol=tol)
    routed = torch.zeros(2, 24, 13 * 13, dtype=torch.float64, device=device)
    routed.scatter_add_(2, flat, gy.double().reshape(2, 24, -1))
    (gx_ref,) = torch.autograd.grad(lrn, xd, routed.view(2, 24, 13, 13))
    torch.testing.assert_close(gx.double(), gx_ref, atol=tol, rtol=tol)
    if kind == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    x = rand((1, 6, 7, 9), device).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: relu_lrn_max_pool2d(t, 3, 0.1, 0.75, 1.0, lrn_groups=2), (x,))
    assert torch.autograd.gradcheck(
        lambda t: relu_lrn_max_pool2d(t, 5, 0.5, 0.6, 2.0, (3, 2), (2, 1), paper_alpha=True), (x,)
    )


# ------------------------------------------------------------------------ ties and NaN


@pytest.mark.parametrize("device", DEVICES)
def test_ties_constant_planes(device):
    # Every plane constant -> every LRN value in a window ties: the first tap wins.
    x = (rand((2, 8, 1, 1), device).abs() + 0.1).expand(2, 8, 9, 11).contiguous()
    y, gx = check_parity(x, lrn_groups=2)
    _, argmax = OP(x, 5, 2e-5, 0.75, 2.0, [3, 3], [2, 2], 2)
    assert (argmax == 0).all()
    # negative planes: relu -> 0 everywhere; zero output, zero gradient
    x = -x
    y, gx = check_parity(x, lrn_groups=2)
    assert (y == 0).all() and (gx == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan(device, dtype):
    x = rand((2, 8, 9, 9), device, dtype)
    x[0, 1, 2, 3] = float("nan")  # spreads over channels 0..3 (window) of its pixel
    x[0, 5, 4, 4] = float("nan")
    x[0, 5, 4, 5] = float("nan")  # two NaNs in one window: the last one is reported
    x[1, 2, 0, 0] = float("nan")
    y = relu_lrn_max_pool2d(x, lrn_groups=2)
    y_ref, idx = reference(x, lrn_groups=2, return_indices=True)
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    assert y.isnan().any()
    _, argmax = OP(x, 5, 2e-5, 0.75, 2.0, [3, 3], [2, 2], 2)
    torch.testing.assert_close(flat_indices(argmax, 9, 9, 3, 2), idx, rtol=0, atol=0)
    # gradients: NaN rows of dy follow the stock composition too
    gy = torch.randn_like(y)
    _, gx = grads(relu_lrn_max_pool2d, x, gy, lrn_groups=2)
    _, gx_ref = grads(reference, x, gy, lrn_groups=2)
    torch.testing.assert_close(gx, gx_ref, equal_nan=True)


# ------------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x = rand((0, 8, 9, 9), device).requires_grad_()
    y = relu_lrn_max_pool2d(x, lrn_groups=2)
    assert y.shape == (0, 8, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
def test_unbatched(device):
    x = rand((8, 9, 11), device)
    y = relu_lrn_max_pool2d(x, lrn_groups=2)
    torch.testing.assert_close(y, reference(x.unsqueeze(0), lrn_groups=2).squeeze(0))


@pytest.mark.parametrize("device", DEVICES)
def test_module(device):
    m = ReLULRNMaxPool2d(5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2, paper_alpha=True)
    assert list(m.parameters()) == [] and m.state_dict() == {}
    r = repr(m)
    assert "ReLULRNMaxPool2d(" in r and "lrn_groups=2" in r and "paper_alpha=True" in r and "size=5" in r
    x = rand((2, 8, 9, 9), device)
    torch.testing.assert_close(m(x), reference(x, lrn_groups=2, paper_alpha=True))
    from alexnet_cuda.models._stock_layers import StockReLULRNMaxPool2d

    stock = StockReLULRNMaxPool2d(5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2, paper_alpha=True)
    torch.testing.assert_close(m(x), stock(x))
    assert "paper_alpha" not in repr(ReLULRNMaxPool2d())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 8, 13, 11), (8, 13, 11)], ids=["4-D", "3-D"])
def test_saves_only_the_input_and_a_byte_per_output(device, kind, shape):
    # The op's promise: backward keeps the input (the convolution's output, alive anyway)
    # and a uint8 argmax of the pooled output's shape; no ReLU/LRN output, no int64 indices.
    x = rand(shape, device, torch.float32)
    x = layout(x.unsqueeze(0), kind).squeeze(0) if x.dim() == 3 else layout(x, kind)
    x.requires_grad_()
    out = []
    saved = saved_tensors(lambda x: out.append(relu_lrn_max_pool2d(x, lrn_groups=2)), x)
    assert len(saved) == 2
    same = [t for t in saved if t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()]
    assert len(same) == 1 and same[0].dtype == x.dtype and same[0].numel() == x.numel()
    (argmax,) = [t for t in saved if t is not same[0]]
    assert argmax.dtype == torch.uint8
    y = out[0].unsqueeze(0) if x.dim() == 3 else out[0]  # the op runs on 4-D tensors
    assert argmax.shape == y.shape == (2 if x.dim() == 4 else 1, 8, 6, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x = rand((1, 4, 5, 5), device).requires_grad_()
    y = relu_lrn_max_pool2d(x)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        gx.sum().backward()


# ------------------------------------------------------------------ opcheck / compile


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_opcheck(device, kind):
    x = layout(rand((2, 8, 9, 7), device, torch.float32), kind).requires_grad_()
    args = (x, 5, 2e-5, 0.75, 2.0, [3, 3], [2, 2], 2)
    torch.library.opcheck(OP.default, args)
    public = (x, 5, 1e-4, 0.75, 2.0, [3, 3], [2, 2], 2, False)
    torch.library.opcheck(torch.ops.alexnet_cuda.relu_lrn_max_pool2d.default, public)
    torch.library.opcheck(torch.ops.alexnet_cuda.relu_lrn_max_pool2d.default, (x[0], *public[1:]))  # 3-D
    out, argmax = OP(*args)
    g = torch.randn_like(out)
    torch.library.opcheck(BWD.default, (g, argmax, x.detach(), 5, 2e-5, 0.75, 2.0, [3, 3], [2, 2], 2))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    m = ReLULRNMaxPool2d(5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2)
    compiled = torch.compile(m, fullgraph=True)
    x = rand((2, 8, 9, 9), device, torch.float32).requires_grad_()
    gy = torch.randn(2, 8, 4, 4, device=device)
    y = compiled(x)
    (gx,) = torch.autograd.grad(y, x, gy)
    y_e, gx_e = grads(m, x, gy)
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(gx, gx_e)


# ------------------------------------------------------------------------ bad inputs


BAD = [
    (dict(shape=(2, 9, 9, 9), lrn_groups=2), ValueError, "lrn_groups"),
    (dict(lrn_groups=0), ValueError, "lrn_groups"),
    (dict(size=0), ValueError, "size"),
    (dict(size=2.5), TypeError, "size"),
    (dict(kernel_size=10), ValueError, "kernel_size"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=(17, 17), shape=(1, 2, 20, 20)), ValueError, "kernel_size"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=-1), ValueError, "stride"),
    (dict(stride=(1, 2, 3)), ValueError, "stride"),  # a RuntimeError too, as PyTorch's
    (dict(shape=(2, 8, 9)), None, None),  # 3-D is fine (unbatched)
    (dict(shape=(8, 9)), ValueError, "4-D"),
    (dict(shape=(1, 2, 8, 9, 9)), ValueError, "4-D"),
    (dict(shape=(1, 0, 8, 8)), ValueError, "empty"),
    (dict(dtype=torch.int32), TypeError, "floating"),
    (dict(alpha="x"), TypeError, "alpha"),
]


@pytest.mark.parametrize("kw,exc,match", BAD)
def test_bad_inputs(kw, exc, match):
    kw = dict(kw)
    shape = kw.pop("shape", (2, 8, 9, 9))
    dtype = kw.pop("dtype", torch.float32)
    x = torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.randint(0, 5, shape, dtype=dtype)
    if exc is None:
        relu_lrn_max_pool2d(x, **kw)
        return
    with pytest.raises(exc, match=match):
        relu_lrn_max_pool2d(x, **kw)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="input"):
        relu_lrn_max_pool2d([1.0, 2.0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_overflowing_sum_of_squares_like_pytorch(device, kind):
    # x^2 overflows fp32: s = +inf, s^-beta = 0. The gradient must stay finite (0 * inf
    # would make it NaN), exactly as the stock fp32 composition's.
    x = rand((2, 8, 7, 7), device, torch.float32) * 3
    x[:, 2, 3, 3] = 1e20
    x[0, 5, 0, 0] = 3e19
    x = layout(x, kind)
    y = relu_lrn_max_pool2d(x, lrn_groups=2)
    gy = torch.randn_like(y)
    _, gx = grads(relu_lrn_max_pool2d, x, gy, lrn_groups=2)
    _, gx_ref = grads(reference, x, gy, lrn_groups=2)
    assert gx_ref.isfinite().all() and gx.isfinite().all()
    torch.testing.assert_close(gx, gx_ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_backward_is_deterministic(device, kind):
    x = layout(rand((4, 96, 27, 27), device, torch.float32), kind)
    gy = torch.randn_like(relu_lrn_max_pool2d(x, lrn_groups=2))
    _, g1 = grads(relu_lrn_max_pool2d, x, gy, lrn_groups=2)
    _, g2 = grads(relu_lrn_max_pool2d, x, gy, lrn_groups=2)
    assert torch.equal(g1, g2)


# 3x3 pooling with LRN size <= 7 takes the sweep kernels of
# csrc/relu_lrn_max_pool2d/relu_lrn_max_pool2d_sweep.h (on CPU too with the cpu_sweep
# fixture, item for item like the GPU threads; float64 on CPU only). Cover every compiled
# LRN width, groups of 40 channels (NCHW runs of
# 32 + 8; 16-byte vectors of 4 fp32 / 8 bf16 / 2 fp64 in channels-last), strides 1-3, and
# an unaligned channels-last tensor (the native kernels, also in this mode).
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "channels_last_unaligned"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_sweep_kernel_paths(device, size, kind, dtype, cpu_sweep):
    if device == "cuda" and dtype == torch.float64 and kind != "contiguous":
        pytest.skip("float64 channels-last takes the tile kernels on CUDA (covered elsewhere)")
    stride = {1: 1, 2: 2, 3: 3, 4: 2, 5: 2, 6: 1, 7: 3}[size]
    groups = 2 if size % 2 else 1
    x = rand((2, 40 * groups, 9, 11), device, dtype) * 3
    x = layout(x, "contiguous" if kind == "contiguous" else "channels_last")
    if kind == "channels_last_unaligned":
        x = offset_view(x, 1)
    kw = dict(size=size, alpha=0.3, beta=0.75, k=1.5, stride=stride, lrn_groups=groups)
    if dtype == torch.float64:
        check_parity(x, **kw)
        return
    # fp32/bf16: against the float64 composition. The argmax may pick another tap than the
    # float64 reference's where two LRN values nearly tie (fp32: the power's last bits,
    # test_near_ties_documented; bf16: values that tie once rounded, as stock compares
    # them, test_low_precision_ties_on_stored_values). So: the picked tap must hold a
    # (near-)maximum of the float64 LRN values, and the gradient is the float64 one routed
    # through OUR argmax.
    gy = torch.randn(reference(x.double(), **kw).shape, dtype=torch.float64).to(device, dtype)
    y, gx = grads(relu_lrn_max_pool2d, x, gy, **kw)
    y_ref = reference(x.double(), **kw)
    tol = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 2e-2)}[dtype]
    torch.testing.assert_close(y.double(), y_ref, atol=tol[0], rtol=tol[1])
    _, argmax = OP(x, size, 0.3 / size, 0.75, 1.5, [3, 3], [stride, stride], groups)
    xr = x.double().detach().requires_grad_()
    lrn = reference(xr, **kw | dict(kernel_size=1, stride=1))  # relu -> grouped LRN, no pooling
    H, W = x.shape[-2:]
    picked = lrn.flatten(2).gather(2, flat_indices(argmax, H, W, 3, stride).flatten(2)).view_as(y_ref)
    torch.testing.assert_close(picked.detach(), y_ref, atol=tol[0], rtol=tol[1])
    (gx_ref,) = torch.autograd.grad(picked, xr, gy.double())
    gtol = {torch.float32: 1e-4, torch.bfloat16: 4e-2}[dtype]
    torch.testing.assert_close(gx.double(), gx_ref, atol=gtol, rtol=gtol)


# Edges of the sweep kernels: strides that leave pixels in no window, a single pooled
# pixel, 3 and 8 groups with channels-last vectors, fp16, and dy/argmax in the other layout.
# The NCHW backward's pixel pairs (stride 2): an even width (the last pair is whole, the
# last column in no window), an even height (the last row in no window), a lone pixel in
# the last pair (odd width), groups of 160 and 144 channels (runs of 64 channels: one
# that neither starts nor ends its group, a short last one). The NHWC backward's warps
# (30 items each, LRN halos shared by shuffles): groups of 12 (fp32) and 7 (bf16)
# vectors, so warps start inside a group, and runs (4 pixels fp32, 2 bf16) with a lone
# last pixel. Work-item classes (warps of one compiled path): the NCHW forward's chunks of
# 8 images and groups of one channel run; the fp32 NHWC forward's chunks of 32 pooled
# columns (52 here: a whole chunk and a partial one).
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,groups,stride,kind,dtype",
    [
        ((2, 24, 9, 11), 3, 4, "channels_last", torch.float32),
        ((2, 24, 9, 11), 3, 4, "contiguous", torch.float32),
        ((3, 16, 3, 3), 1, 2, "channels_last", torch.float16),
        ((2, 64, 7, 6), 8, 1, "channels_last", torch.bfloat16),
        ((2, 64, 7, 6), 8, 3, "contiguous", torch.float16),
        ((2, 16, 8, 10), 2, 2, "contiguous", torch.float32),
        ((3, 16, 4, 3), 1, 2, "contiguous", torch.bfloat16),
        ((2, 160, 9, 7), 1, 2, "contiguous", torch.float32),
        ((2, 288, 8, 9), 2, 2, "contiguous", torch.bfloat16),
        ((2, 96, 13, 13), 2, 2, "channels_last", torch.float32),
        ((2, 112, 7, 9), 2, 2, "channels_last", torch.bfloat16),
        ((8, 16, 11, 11), 4, 2, "contiguous", torch.float32),
        ((4, 96, 27, 27), 2, 2, "channels_last", torch.float32),
    ],
    ids=str,
)
def test_sweep_kernel_edges(device, shape, groups, stride, kind, dtype, cpu_sweep):
    x = layout(rand(shape, device, torch.float32) * 3, kind).to(dtype)
    kw = dict(size=5, alpha=0.3, beta=0.75, k=1.5, stride=stride, lrn_groups=groups)
    y, argmax = OP(x, 5, 0.3 / 5, 0.75, 1.5, [3, 3], [stride, stride], groups)
    y_ref, idx = reference(x.double(), **kw, return_indices=True)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(y.double(), y_ref, atol=tol, rtol=tol)
    # dy and the argmax handed over in the other layout than x
    other = "contiguous" if kind == "channels_last" else "channels_last"
    gy = layout(torch.randn(y.shape, dtype=torch.float64), other).to(device, dtype)
    am = layout(argmax, other)
    gx = BWD(gy, am, x, 5, 0.3 / 5, 0.75, 1.5, [3, 3], [stride, stride], groups)
    # reference gradient routed through OUR argmax (so low-precision near-ties agree)
    xr = x.double().requires_grad_()
    z = F.relu(xr)
    z = torch.cat([F.local_response_norm(p, 5, 0.3, 0.75, 1.5) for p in z.chunk(groups, dim=1)], dim=1)
    H, W = shape[-2:]
    flat = flat_indices(argmax, H, W, 3, stride)
    picked = z.flatten(2).gather(2, flat.flatten(2))
    (gr,) = torch.autograd.grad(picked, xr, gy.double().flatten(2))
    assert gx.shape == x.shape
    torch.testing.assert_close(gx.double(), gr, atol=4 * tol, rtol=4 * tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_indexing_past_2_31_elements(device, kind, cpu_sweep):
    # On CPU too: with the cpu_sweep fixture the CPU runs the CUDA kernels' per-item code
    # (relu_lrn_max_pool2d_sweep.h), so this checks their 64-bit offsets without a GPU.
    skip_unless_free_memory(device, 14)
    n = 2**31 // (96 * 55 * 55) + 2  # input past 2^31 elements: the last images' offsets too
    x = layout(big_randn((n, 96, 55, 55), device, torch.bfloat16), kind).requires_grad_()
    y = relu_lrn_max_pool2d(x, lrn_groups=2)
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    # The first and the last images against float64, as test_sweep_kernel_paths checks
    # them: bf16 values that tie once rounded may pick another tap than float64 (stock
    # compares rounded values too), so the reference gradient is routed through OUR argmax
    # (computed per image: the same on a slice) and the picked values must be maxima.
    for sl in (slice(0, 2), slice(n - 2, n)):
        xs = x.detach()[sl]
        _, argmax = OP(xs, 5, 1e-4 / 5, 0.75, 2.0, [3, 3], [2, 2], 2)
        y_ref = reference(xs.double(), lrn_groups=2)
        torch.testing.assert_close(y[sl].double(), y_ref, atol=1e-2, rtol=2e-2)
        xr = xs.double().requires_grad_()
        lrn = reference(xr, lrn_groups=2, kernel_size=1, stride=1)  # relu -> grouped LRN
        picked = lrn.flatten(2).gather(2, flat_indices(argmax, 55, 55, 3, 2).flatten(2)).view_as(y_ref)
        torch.testing.assert_close(picked.detach(), y_ref, atol=1e-2, rtol=2e-2)
        (gx_ref,) = torch.autograd.grad(picked, xr, gy[sl].double())
        torch.testing.assert_close(gx[sl].double(), gx_ref, atol=4e-2, rtol=4e-2)


# The CPU's kernels are CPU-native (one task per image and LRN group, each LRN
# value computed once); the sweep test ops run the CUDA kernels' per-item code
# (the GPU's) where it applies. Same formulas, same order of every sum (but the NCHW
# backward's, below): the same bits, NaN included. (Size 9 is beyond the sweep kernels:
# both modes run the native kernels.)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("size,groups,stride", [(5, 2, 2), (3, 1, 1), (7, 4, 3), (9, 2, 2)])
def test_cpu_native_matches_sweep_kernels(dtype, kind, size, groups, stride):
    x = layout(rand((2, 32, 13, 15), "cpu", dtype) * 3, kind)
    x[0, 3, 2, 2] = float("nan")
    x[1, 7, 4, 5] = 0.0
    gy = torch.randn(2, 32, (13 - 3) // stride + 1, (15 - 3) // stride + 1, dtype=torch.float64).to(dtype)

    def run(sweep):  # values, argmax and input gradient, on the sweep test ops or not
        with cpu_runs_cuda_items(sweep=sweep, gather=False):
            xg = x.detach().clone().requires_grad_()
            y = relu_lrn_max_pool2d(xg, size=size, stride=stride, lrn_groups=groups)
            _, argmax = OP(x, size, 1e-4 / size, 0.75, 2.0, [3, 3], [stride, stride], groups)
            return y, argmax, torch.autograd.grad(y, xg, gy)[0]

    # The NCHW sweep backward (stride 2) adds its window terms in another order than the
    # native kernels' pairs (single steps in ascending order, or 16-bit pairs that start at
    # the run's first priming step): its gradient is equal to rounding, not bit for bit.
    nchw_sweep_backward = kind != "channels_last" and stride == 2 and size <= 7
    native, sweep = run(False), run(True)
    for i, (a, b) in enumerate(zip(native, sweep)):
        assert torch.equal(a.isnan(), b.isnan())
        if i == 2 and nchw_sweep_backward:
            torch.testing.assert_close(a, b, equal_nan=True)
        else:
            assert torch.equal(a.nan_to_num(), b.nan_to_num())


# Channels-last backward warps that hold whole LRN groups (C / V a multiple of 32 and
# the group's vectors dividing 32: 128 fp32 channels in groups of 128 or 32, 256 bf16 in
# groups of 128) give all 32 lanes items, no halo lanes: the sweep path still matches the
# CPU-native kernels bit for bit.
@pytest.mark.parametrize(
    "dtype,channels,groups", [(torch.float32, 128, 1), (torch.float32, 128, 4), (torch.bfloat16, 256, 2)], ids=str
)
def test_cpu_sweep_backward_warps_of_whole_groups(dtype, channels, groups):
    x = layout(rand((2, channels, 9, 11), "cpu", dtype) * 3, "channels_last")
    gy = torch.randn(2, channels, 4, 5, dtype=torch.float64).to(dtype)

    def run(sweep):
        with cpu_runs_cuda_items(sweep=sweep, gather=False):
            xg = x.detach().clone().requires_grad_()
            y = relu_lrn_max_pool2d(xg, lrn_groups=groups)
            return torch.autograd.grad(y, xg, gy)[0]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        native, sweep = run(False), run(True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(native, sweep)


# fp16/bf16: stock pools the LRN output as stored (rounded to the dtype), so two LRN values
# that differ in fp32 but round to the same fp16/bf16 tie, and the first tap in row-major
# order wins. Constructed: in the one 3x3 window of channel 0, taps 0 and 1 hold x = 1;
# tap 0 has a neighbour channel at 1, so its LRN value is slightly smaller in fp32
# (1 - 5e-5 vs 1 - 2.5e-5); both round to 1.0. Comparing fp32 values would pick tap 1.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("sweep", [False, True], ids=["default", "sweep"])
def test_low_precision_ties_on_stored_values(device, dtype, kind, sweep):
    x = torch.zeros(2, 16, 3, 3, dtype=torch.float64)
    x[:, 0] = 0.5
    x[:, 0, 0, 0] = x[:, 0, 0, 1] = 1.0
    x[:, 1, 0, 0] = 1.0
    x = layout(x.to(device, dtype), kind)
    kw = dict(size=3, alpha=1e-4, beta=0.75, k=1.0)
    lrn64 = reference(x.double(), **kw, kernel_size=1, stride=1)
    assert lrn64[0, 0, 0, 1] > lrn64[0, 0, 0, 0]  # tap 1 is larger in full precision
    stored = lrn64.to(dtype)
    assert stored[0, 0, 0, 1] == stored[0, 0, 0, 0]  # ... but they tie as stored
    y_ref, idx = F.max_pool2d(stored.float(), 3, 2, return_indices=True)  # stock: pools stored values
    with cpu_runs_cuda_items(sweep=sweep, gather=False):
        y, argmax = OP(x, 3, 1e-4 / 3, 0.75, 1.0, [3, 3], [2, 2], 1)
    assert argmax[0, 0, 0, 0] == 0  # the first of the tied taps
    torch.testing.assert_close(flat_indices(argmax, 3, 3, 3, 2), idx, rtol=0, atol=0)
    torch.testing.assert_close(y.float(), y_ref, rtol=0, atol=0)


# Near-ties: the CPU runs the GPU kernels' indexing and order of operations, not their
# last bits (the power: MUFU rsqrt/sqrt vs correctly rounded roots, lrn.h Pow34; FMA
# contraction by nvcc). Two LRN values of a window closer than that difference (relative
# ~2^-19) may pick either tap, on either device, and either may differ from the float64
# reference's pick. What holds, and what this test pins: the pooled value is within the
# fp32 tolerance of the reference's maximum, and the argmax points at a tap whose float64
# LRN value is within that tolerance of the maximum. Constructed here: taps 0 and 1 hold
# x values one fp32 ulp apart, so their LRN values differ by about one ulp.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_near_ties_documented(device, kind, cpu_sweep):
    tol = 2**-19
    x = rand((2, 16, 7, 7), device, torch.float32).abs() * 0.1
    one = torch.tensor(1.0, dtype=torch.float32)
    x[:, :, 0, 0] = one
    x[:, :, 0, 1] = torch.nextafter(one, torch.tensor(2.0))  # one ulp above
    x = layout(x, kind)
    kw = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
    y, argmax = OP(x, 5, 1e-4 / 5, 0.75, 2.0, [3, 3], [2, 2], 1)
    lrn64 = reference(x.double(), **kw, kernel_size=1, stride=1)
    y_ref = F.max_pool2d(lrn64, 3, 2)
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=0)
    picked = lrn64.flatten(2).gather(2, flat_indices(argmax, 7, 7, 3, 2).flatten(2)).view_as(y_ref)
    torch.testing.assert_close(picked, y_ref, rtol=tol, atol=0)
