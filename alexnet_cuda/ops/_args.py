"""Argument reading and errors shared by the four ops.

One int/pair reader that takes exactly the values PyTorch's argument parser takes for an
``int`` or ``int[2]`` (so ``F.max_pool2d``/``F.conv2d`` and ours accept and refuse the same
values), one family of error classes, and the limits the kernels share.

Errors, the same way for every op:

* a value of the wrong Python type (a str for a size, a float for an int): ``TypeError``,
  as PyTorch's parser raises;
* a bad value (a size <= 0, a window larger than the input, mismatched channels):
  :class:`ArgumentError`, both a ``ValueError`` and the ``RuntimeError`` PyTorch raises;
* a tensor dtype an op has no kernel for: :class:`DtypeError`, both a ``TypeError`` and
  the ``NotImplementedError`` (a ``RuntimeError``) PyTorch raises.

So code written against ``torch.nn.functional`` catches ours, and so does code that
catches the Python class that describes the mistake. The two classes are the extension's
(csrc/python_module.cpp), which raises them for the C++ ops' checks.
"""

import numbers
import operator

import torch

from .._C import ArgumentError, DtypeError  # noqa: F401  (this module's names for them)

# A window-local argmax is one byte, t_h * kernel_w + t_w: windows of at most this many
# taps (the C++ kernels' limit, csrc/max_pool2d/max_pool2d.h).
from .._C import MAX_WINDOW_TAPS  # noqa: E402,F401

# The C++/CUDA kernels index window sizes, strides and channels with 32-bit ints.
MAX_INT32 = 2**31 - 1


def type_name(value):
    """The type's name for a message, with its module unless it is a builtin: NumPy's
    bool is "numpy.bool", not "bool" (a message saying "must be bool, not bool")."""
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def as_int(value):
    """``value`` as one int the way PyTorch's parser reads an ``int`` argument, or None if
    it refuses it: an int, a SymInt or anything with ``__index__`` (NumPy integers, 0-d
    integer arrays), but not a bool (nor NumPy's bool_, which has no ``__index__``); or a
    one-element tensor of an integral dtype (a bool tensor included, read as 0 or 1)."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and not value.is_floating_point() and not value.is_complex():
            return int(value.item())
        return None
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _in_int64(value, op, name):
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise ArgumentError(f"{op}: {name}={value} does not fit in a 64-bit int")
    return value


def int_arg(value, op, name):
    """An ``int`` argument, read as PyTorch reads it; TypeError naming it otherwise."""
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return value  # the common case first: every op call pays for this function
    v = as_int(value)
    if v is None:
        raise TypeError(f"{op}: {name} must be an int, got {type_name(value)}")
    return _in_int64(v, op, name)


def pair_arg(value, op, name, *, allow_empty=False):
    """An ``int[2]`` argument as [h, w]: one int for both, or a sequence of 1 or 2 ints.
    ``allow_empty``: an empty sequence is allowed (max_pool2d's default stride) and gives
    None. A non-int raises TypeError, a wrong length ArgumentError, as in PyTorch."""
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return [value, value]  # the common case first: every op call pays for this function
    if not isinstance(value, (tuple, list, torch.Size)):
        v = as_int(value)
        if v is None:
            raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {type_name(value)}")
        return [_in_int64(v, op, name)] * 2
    ints = [as_int(v) for v in value]
    if any(v is None for v in ints):
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {value!r}")
    if allow_empty and not ints:
        return None
    if len(ints) not in (1, 2):
        what = "be omitted, a single int, or" if allow_empty else "be a single int, or"
        raise ArgumentError(f"{op}: {name} must either {what} a tuple of two ints, got {value!r}")
    return [_in_int64(ints[0], op, name), _in_int64(ints[-1], op, name)]


def real_arg(value, op, name):
    """A ``float`` argument (alpha, beta, k) as a Python float: any real number but a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type_name(value)}")
    return float(value)


def bool_arg(value, op, name):
    """A ``bool`` argument: Python's bool only, as PyTorch's parser takes."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a Python bool (True or False), got {type_name(value)}")
    return value


def tensor_arg(value, op, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type_name(value)}")
    return value


def floating_input(input, op):
    """The op's input: a tensor of a floating dtype (DtypeError naming it otherwise)."""
    tensor_arg(input, op, "input")
    if not input.is_floating_point():
        raise DtypeError(f"{op}: input must be a floating-point tensor, got dtype {input.dtype}")
    return input
