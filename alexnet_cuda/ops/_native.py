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

from .. import _C


def call(native, op, *args):
    """``op(*args)``, through the native binding ``native`` when in eager mode. Either way
    the C++ checks' errors come as ArgumentError and DtypeError (csrc/python_module.cpp)."""
    if not torch.compiler.is_compiling():
        out = native(*args)
        return _C.call_op(op, *args) if out is NotImplemented else out
    return op(*args)
