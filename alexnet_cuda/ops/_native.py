"""How the three C++ ops are called: the native binding in eager mode, torch.ops otherwise.

Each public op (``local_response_norm``, ``max_pool2d``, ``relu_lrn_max_pool2d``) is a C++
op whose CompositeImplicitAutograd kernel checks the arguments and calls the kernels' op
(csrc/<op>/<op>.cpp). It can be reached two ways:

* ``alexnet_cuda._C.<op>(...)``, a C function (csrc/python_module.cpp) that costs what a
  stock op's binding costs: about 3 µs less per call than torch.ops, which matches and
  converts every argument against the schema;
* ``torch.ops.alexnet_cuda.<op>.default(...)``, which torch.compile and torch.export
  trace, and which honours Tensor subclasses and ``__torch_function__`` modes.

``call`` takes the first in eager mode, and the second while compiling or when the
binding declines (it returns NotImplemented for an argument it does not read: a Tensor
subclass, an active ``__torch_function__`` mode, a SymInt).
"""

import torch

from ._args import ArgumentError, DtypeError


def call(native, op, *args):
    """``op(*args)``, through the native binding ``native`` when in eager mode."""
    if not torch.compiler.is_compiling():
        out = native(*args)
        if out is not NotImplemented:
            return out
        try:
            return op(*args)
        except (ValueError, TypeError) as error:  # the C++ checks' classes, through torch.ops
            raise _as_ours(error) from None
    return op(*args)


def _as_ours(error):
    """The C++ checks raise ValueError and TypeError through torch.ops (checks.h); the
    native binding raises ArgumentError and DtypeError: give both paths the same classes."""
    if type(error) is ValueError:
        return ArgumentError(str(error))
    if type(error) is TypeError:
        return DtypeError(str(error))
    return error
