"""The argument rules every op shares (alexnet_cuda/ops/_args.py): ints read as PyTorch's
parser reads them, the same error classes for the same mistakes in all four ops, one
double-backward refusal, and the messages users reported as unclear."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet_cuda.nn import ReLULRNMaxPool2d
from alexnet_cuda.ops import conv2d_relu, local_response_norm, max_pool2d, relu_lrn_max_pool2d
from alexnet_cuda.ops._args import ArgumentError, DtypeError
from conftest import rand

T = torch.tensor


def _int_likes():
    """Values for an int or int[2] argument: what PyTorch takes and what it refuses."""
    ints = [3, T(3), T(2, dtype=torch.uint8), T([3]), T([[2]]), np.int64(3), np.int32(2)]
    bad = [True, np.bool_(True), 3.0, np.float64(3), T(3.0), T([3, 2]), np.array([3]), "3", None]
    pairs = [(a, b) for a in ints + bad for b in (2, T(2))] + [[3, T(2)], [np.int8(3)], (T(3), 2, 1)]
    # A bare 0-d NumPy array trips an internal assert in PyTorch's parser (torch 2.14): only
    # the list form is compared.
    return ints + bad + pairs + [[np.array(3), 2], (np.array(3.0), 2)]


def _same_acceptance(ours, stock):
    """ours() raises the class stock() raises, or neither raises and they agree."""
    try:
        ref = stock()
    except (TypeError, RuntimeError) as e:
        with pytest.raises(type(e)):
            ours()
    else:
        torch.testing.assert_close(ours(), ref, rtol=0, atol=0)


@pytest.mark.parametrize("arg", ["kernel_size", "stride", "padding", "dilation"])
def test_int_arguments_like_max_pool2d(arg):
    x = rand((1, 2, 9, 9), "cpu")
    base = dict(kernel_size=3, stride=2, padding=1, dilation=1)
    for value in _int_likes() + [T(True)]:  # a bool tensor is an int (1) to the parser
        kw = {**base, arg: value}
        _same_acceptance(lambda: max_pool2d(x, **kw), lambda: F.max_pool2d(x, **kw))


@pytest.mark.parametrize("arg", ["stride", "padding", "dilation", "groups"])
def test_int_arguments_like_conv2d(arg):
    # (A bool tensor is left out: F.conv2d's parser takes it, then conv2d trips an
    # internal assert converting it; ours reads it as 1.)
    x, w, b = rand((1, 4, 9, 9), "cpu"), rand((4, 2, 3, 3), "cpu"), rand((4,), "cpu")
    base = dict(stride=1, padding=1, dilation=1, groups=2)
    for value in _int_likes():
        kw = {**base, arg: value}
        if arg == "groups" and isinstance(value, (tuple, list)):
            continue  # groups is one int; lists are refused by both (TypeError)
        _same_acceptance(lambda: conv2d_relu(x, w, b, **kw), lambda: F.relu(F.conv2d(x, w, b, **kw)))


# The same mistake raises the same class in every op: a bad value is both ValueError and
# RuntimeError (what PyTorch raises), a bad dtype both TypeError and NotImplementedError.
X = (2, 8, 9, 9)
W = (8, 8, 3, 3)
BAD_VALUES = [
    ("lrn size 0", lambda x: local_response_norm(x, 0)),
    ("lrn 2-D input", lambda x: local_response_norm(x[0, 0], 3)),
    ("max_pool2d kernel 0", lambda x: max_pool2d(x, 0)),
    ("max_pool2d padding > half kernel", lambda x: max_pool2d(x, 3, padding=2)),
    ("max_pool2d 3 strides", lambda x: max_pool2d(x, 3, (1, 1, 1))),
    ("relu_lrn_max_pool2d size 0", lambda x: relu_lrn_max_pool2d(x, size=0)),
    ("relu_lrn_max_pool2d kernel 0", lambda x: relu_lrn_max_pool2d(x, kernel_size=0)),
    ("relu_lrn_max_pool2d 3 strides", lambda x: relu_lrn_max_pool2d(x, stride=(1, 1, 1))),
    ("relu_lrn_max_pool2d groups", lambda x: relu_lrn_max_pool2d(x, lrn_groups=3)),
    ("conv2d_relu groups 0", lambda x: conv2d_relu(x, torch.randn(W), groups=0)),
    ("conv2d_relu channels", lambda x: conv2d_relu(x, torch.randn(8, 3, 3, 3))),
    ("conv2d_relu 3 strides", lambda x: conv2d_relu(x, torch.randn(W), stride=(1, 1, 1))),
]


@pytest.mark.parametrize("what,call", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_value_and_runtime_errors(what, call):
    with pytest.raises(ArgumentError) as info:
        call(torch.randn(X))
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)


BAD_DTYPES = [
    ("lrn", lambda x: local_response_norm(x, 3)),
    ("relu_lrn_max_pool2d", lambda x: relu_lrn_max_pool2d(x)),
    ("conv2d_relu", lambda x: conv2d_relu(x, torch.ones(W, dtype=x.dtype))),
]


@pytest.mark.parametrize("what,call", BAD_DTYPES, ids=[b[0] for b in BAD_DTYPES])
def test_bad_dtypes_are_type_and_not_implemented_errors(what, call):
    with pytest.raises(DtypeError, match="floating-point") as info:
        call(torch.randint(0, 5, X))
    assert isinstance(info.value, TypeError) and isinstance(info.value, NotImplementedError)


def test_max_pool2d_bad_dtype_is_a_dtype_error():
    with pytest.raises(DtypeError, match="input dtype"):  # CPU pools integers, as PyTorch
        max_pool2d(torch.ones(X, dtype=torch.bool), 3)


@pytest.mark.parametrize(
    "op",
    [
        lambda x: local_response_norm(x, 3),
        lambda x: relu_lrn_max_pool2d(x),
    ],
)
def test_no_double_backward_says_so(op):
    x = rand(X, "cpu", torch.float64).requires_grad_()
    (gx,) = torch.autograd.grad(op(x).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward .* not implemented by alexnet_cuda; use "):
        gx.sum().backward()


# Messages reported as unclear, and checks that came too late.


def test_conv_refuses_bool_groups():
    with pytest.raises(TypeError, match="groups must be an int, got bool"):
        conv2d_relu(torch.randn(X), torch.randn(W), groups=True)


def test_relu_lrn_max_pool2d_module_checks_its_arguments_when_built():
    with pytest.raises(ArgumentError, match="kernel_size=.17, 17. has more than 256 taps"):
        ReLULRNMaxPool2d(kernel_size=17)


def test_relu_lrn_max_pool2d_module_takes_numpy_ints_as_the_op_does():
    m = ReLULRNMaxPool2d(lrn_groups=np.int64(2), size=np.int64(5))
    x = rand(X, "cpu")
    torch.testing.assert_close(m(x), relu_lrn_max_pool2d(x, lrn_groups=2), rtol=0, atol=0)


def test_ceil_mode_message_names_the_type():
    with pytest.raises(TypeError, match="ceil_mode must be a Python bool .True or False., got numpy.bool"):
        max_pool2d(torch.randn(X), 3, ceil_mode=np.bool_(True))


def test_int_past_64_bits_is_named():
    with pytest.raises(ArgumentError, match="size=9223372036854775808 does not fit in a 64-bit int"):
        local_response_norm(torch.randn(X), 2**63)


def test_relu_lrn_max_pool2d_stride_past_32_bits_names_the_op():
    with pytest.raises(ArgumentError, match=r"relu_lrn_max_pool2d: stride=\(2147483648, 2147483648\) is too large"):
        relu_lrn_max_pool2d(torch.randn(X), stride=2**31)
