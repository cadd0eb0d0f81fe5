"""The two ways into the C++ ops (alexnet_cuda/ops/_native.py): the native binding
(alexnet_cuda._C.<op>, eager calls) and torch.ops.alexnet_cuda.<op> (torch.compile,
torch.export, Tensor subclasses, __torch_function__ modes). Same results, same checks,
same error classes, whichever way a call takes."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_cuda import _C
from alexnet_cuda.ops import local_response_norm, max_pool2d, relu_lrn_max_pool2d
from alexnet_cuda.ops._args import ArgumentError, DtypeError
from conftest import rand

X = (2, 8, 9, 9)
OPS = torch.ops.alexnet_cuda
# (public function, its keyword arguments, native binding, torch.ops overload, the
# binding's arguments after the input)
CASES = {
    "lrn": (
        local_response_norm,
        dict(size=5, alpha=1e-2, k=2.0),
        _C.local_response_norm,
        OPS.local_response_norm.default,
        (5, 1e-2, 0.75, 2.0, False),
    ),
    "max_pool2d": (
        max_pool2d,
        dict(kernel_size=3, stride=2),
        _C.max_pool2d,
        OPS.max_pool2d.default,
        ([3, 3], [2, 2], [0, 0], [1, 1], False, False),
    ),
    "relu_lrn_max_pool2d": (
        relu_lrn_max_pool2d,
        dict(lrn_groups=2),
        _C.relu_lrn_max_pool2d,
        OPS.relu_lrn_max_pool2d.default,
        (5, 1e-4, 0.75, 2.0, [3, 3], [2, 2], 2, False),
    ),
}


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", CASES)
def test_binding_and_torch_ops_agree(name):
    _, _, native, op, args = CASES[name]
    x = rand(X, "cpu", torch.float64).requires_grad_()
    ours, ref = _first(native(x, *args)), _first(op(x, *args))
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g), torch.autograd.grad(ref, x, g), rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_binding_declines_what_it_does_not_read(name):
    _, _, native, _, args = CASES[name]
    x = rand(X, "cpu")
    as_tuples = tuple(tuple(a) if isinstance(a, list) else a for a in args)
    assert native(x, *as_tuples) is NotImplemented or as_tuples == args  # lrn has no pair
    assert native(x.view_as(x).as_subclass(_Logged), *args) is NotImplemented
    assert native(x, *args[:-1]) is NotImplemented  # an argument short


class _Logged(torch.Tensor):
    """A Tensor subclass that records the functions it sees through __torch_function__."""

    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(str(func))
        return super().__torch_function__(func, types, args, kwargs or {})


class _Mode(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", CASES)
def test_subclasses_and_modes_see_the_op(name):
    fn, kw, _, op, _ = CASES[name]
    x = rand(X, "cpu")
    ref = fn(x, **kw)
    _Logged.seen.clear()
    out = fn(x.as_subclass(_Logged), **kw)
    assert str(op) in _Logged.seen
    torch.testing.assert_close(out.as_subclass(torch.Tensor), ref, rtol=0, atol=0)
    with _Mode() as mode:
        out = fn(x, **kw)
    assert str(op) in mode.seen
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


class _DispatchLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_dispatch_modes_see_the_kernels_ops():
    # The binding releases the GIL; a TorchDispatchMode (Python, below the binding) takes
    # it back when the dispatcher calls it.
    x = rand(X, "cpu").requires_grad_()
    with _DispatchLog() as mode:
        max_pool2d(x, 3, 2).sum().backward()
        local_response_norm(x, 5)
    assert "alexnet_cuda.max_pool2d_forward.default" in mode.seen
    assert "alexnet_cuda.max_pool2d_backward.default" in mode.seen
    assert "alexnet_cuda.lrn_forward.default" in mode.seen


BAD = {
    "lrn": (lambda x: local_response_norm(x, 0), ArgumentError, "size must be positive"),
    "max_pool2d": (lambda x: max_pool2d(x, 3, 0), ArgumentError, "stride should not be zero"),
    "relu_lrn_max_pool2d": (lambda x: relu_lrn_max_pool2d(x, lrn_groups=3), ArgumentError, "lrn_groups=3"),
    "lrn dtype": (lambda x: local_response_norm(x.int(), 3), DtypeError, "floating-point"),
    "max_pool2d dtype": (lambda x: max_pool2d(x.bool(), 3), DtypeError, "input dtype torch.bool"),
    "relu_lrn_max_pool2d dtype": (lambda x: relu_lrn_max_pool2d(x.int()), DtypeError, "got dtype torch.int32"),
}


@pytest.mark.parametrize("name", BAD)
def test_errors_have_our_classes_either_way(name):
    call, error, match = BAD[name]
    x = rand(X, "cpu")
    with pytest.raises(error, match=match):
        call(x)  # native binding
    with pytest.raises(error, match=match):
        call(x.as_subclass(_Logged))  # torch.ops


def test_torch_ops_raise_value_and_type_errors():
    # Called directly, the ops raise the builtin classes their C++ checks map to.
    x = rand(X, "cpu")
    with pytest.raises(ValueError, match="stride should not be zero"):
        OPS.max_pool2d(x, [3, 3], [0, 0], [0, 0], [1, 1], False, False)
    with pytest.raises(TypeError, match="floating-point"):
        OPS.local_response_norm(x.int(), 5, 1e-4, 0.75, 2.0, False)
    with pytest.raises(ValueError, match="kernel_size must be a pair of ints"):
        OPS.max_pool2d(x, [3, 3, 3], [2, 2], [0, 0], [1, 1], False, False)


@pytest.mark.parametrize("name", CASES)
def test_compile_with_dynamic_shapes(name):
    # The C++ checks run on fake tensors whose sizes are symbolic (guards, no graph break).
    fn, kw, _, _, _ = CASES[name]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fn(x, **kw), fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in [(2, 8, 9, 9), (3, 8, 11, 10), (8, 13, 13)]:
        x = rand(shape, "cpu")
        torch.testing.assert_close(compiled(x), fn(x, **kw), rtol=0, atol=0)


def test_relu_lrn_max_pool2d_argument_check_without_an_input():
    # nn.ReLULRNMaxPool2d runs the C++ checks of its arguments when built.
    with pytest.raises(ArgumentError, match="kernel_size must be positive"):
        _C.check_relu_lrn_max_pool2d_args(5, [0, 3], [2, 2], 1)
    assert _C.check_relu_lrn_max_pool2d_args(5, [3, 3], [2, 2], 1) is None
