"""The C++ autograd of the three C++ ops (csrc/<op>/<op>_autograd.cpp): gradients, what
is saved, the double-backward refusal, and tracing by torch.compile and torch.export."""

import pytest
import torch
import torch.nn.functional as F

import alexnet_cuda  # noqa: F401  (loads the ops)
from alexnet_cuda.ops import local_response_norm, max_pool2d, relu_lrn_max_pool2d
from conftest import rand, saved_tensors

X = (2, 8, 9, 9)
OPS = {
    "lrn": lambda x: local_response_norm(x, 5, 1e-2, 0.75, 2.0),
    "max_pool2d": lambda x: max_pool2d(x, 3, 2),
    "relu_lrn_max_pool2d": lambda x: relu_lrn_max_pool2d(x, 5, 1e-2, 0.75, 2.0, lrn_groups=2),
}
FORWARD_OPS = {
    "lrn": "alexnet_cuda::lrn_forward",
    "max_pool2d": "alexnet_cuda::max_pool2d_forward",
    "relu_lrn_max_pool2d": "alexnet_cuda::relu_lrn_max_pool2d_forward",
}


@pytest.mark.parametrize("name", OPS)
def test_autograd_is_registered_in_cpp(name):
    # A C++ kernel at the Autograd key (not torch.library's Python one): the node is a
    # CppFunction, and no Python frame runs per call.
    assert torch._C._dispatch_has_kernel_for_dispatch_key(FORWARD_OPS[name], "Autograd")
    y = OPS[name](rand(X, "cpu").requires_grad_())
    assert type(y.grad_fn).__name__ == "CppFunction"


@pytest.mark.parametrize("name", OPS)
def test_gradcheck_float64(name):
    x = rand((1, 6, 7, 7), "cpu", torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(OPS[name], (x,))


@pytest.mark.parametrize("name", OPS)
def test_no_graph_without_grad(name):
    x = rand(X, "cpu")
    assert OPS[name](x).grad_fn is None
    with torch.no_grad():
        assert OPS[name](x.requires_grad_()).grad_fn is None


def test_saved_tensors_are_what_backward_needs():
    x = rand(X, "cpu").requires_grad_()
    # LRN: the input only (the scale is recomputed).
    (s,) = saved_tensors(OPS["lrn"], x)
    assert s.data_ptr() == x.data_ptr()
    # max-pool: the 1-byte window-local argmax only, nothing input-sized.
    (s,) = saved_tensors(OPS["max_pool2d"], x)
    assert s.dtype == torch.uint8 and s.shape == (2, 8, 4, 4)
    # The fused stage: the input and the 1-byte argmax.
    a, b = saved_tensors(OPS["relu_lrn_max_pool2d"], x)
    assert a.data_ptr() == x.data_ptr() and b.dtype == torch.uint8 and b.shape == (2, 8, 4, 4)


@pytest.mark.parametrize(
    "name,stock",
    [
        ("lrn", "torch.nn.functional.local_response_norm"),
        ("relu_lrn_max_pool2d", "the stock composition"),
    ],
)
def test_double_backward_is_refused_by_name(name, stock):
    x = rand(X, "cpu", torch.float64).requires_grad_()
    (gx,) = torch.autograd.grad(OPS[name](x).sum(), x, create_graph=True)
    op = "local_response_norm" if name == "lrn" else name
    with pytest.raises(
        NotImplementedError,
        match=f"^{op}: double backward .gradients of gradients. is not implemented by alexnet_cuda; use {stock}",
    ):
        gx.sum().backward()


def test_max_pool2d_double_backward_matches_pytorch():
    # grad_input is linear in grad_output: its gradient w.r.t. grad_output is the incoming
    # gradient read at each window's argmax.
    x = rand(X, "cpu", torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda v: max_pool2d(v, 3, 2), (x,))
    g = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn_like(x)
    (gx,) = torch.autograd.grad(max_pool2d(x, 3, 2), x, g, create_graph=True)
    (gx_ref,) = torch.autograd.grad(F.max_pool2d(x, 3, 2), x, g, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad((gx * w).sum(), g), torch.autograd.grad((gx_ref * w).sum(), g))


class _Three(torch.nn.Module):
    def forward(self, x):
        return OPS["relu_lrn_max_pool2d"](OPS["max_pool2d"](OPS["lrn"](x)))


def _targets(ep):
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def test_export_keeps_our_ops():
    # export keeps the public ops (CompositeImplicitAutograd: argument checks, then the
    # kernels' op); decomposing them leaves the kernels' forward ops.
    ep = torch.export.export(_Three(), (rand((2, 8, 19, 19), "cpu"),))
    for name in ("local_response_norm", "max_pool2d", "relu_lrn_max_pool2d"):
        assert f"alexnet_cuda.{name}.default" in _targets(ep), _targets(ep)
    decomposed = ep.run_decompositions()
    for op in FORWARD_OPS.values():
        assert any(op.replace("::", ".") in name for name in _targets(decomposed)), (op, _targets(decomposed))
    x = rand((2, 8, 19, 19), "cpu")
    torch.testing.assert_close(ep.module()(x), _Three()(x))
    torch.testing.assert_close(decomposed.module()(x), _Three()(x))


def test_compile_forward_and_backward_match_eager():
    model = _Three()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = rand((2, 8, 19, 19), "cpu").requires_grad_()
    g = torch.randn(2, 8, 4, 4)
    (gx,) = torch.autograd.grad(compiled(x), x, g)
    (gx_ref,) = torch.autograd.grad(model(x), x, g)
    torch.testing.assert_close(gx, gx_ref)
