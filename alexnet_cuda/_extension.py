"""Loads the compiled extension and reports what it was built with.

Two binaries, as setup.py builds them:

* ``libalexnet_cuda_ops.so``, the operator library: the kernels and the
  ``alexnet_cuda::*`` op registrations. It needs libtorch but not Python, so a process
  that never imports this package (an AOTInductor package's runner, a C++ program) loads
  it by path: ``torch.ops.load_library(alexnet_cuda.library_path())`` or ``dlopen``.
* ``alexnet_cuda._C``, the Python module: the native bindings the eager ops call, linked
  against the library.
"""

import os

import torch

try:
    from . import _build_info
except ImportError:  # pragma: no cover - a source tree that was never built
    raise ImportError(
        "alexnet_cuda's compiled extension is missing: this is a source tree that was never "
        "built. Install it (`pip install .`, or `pip install --no-build-isolation .` to build "
        "against the installed torch), or build it in place (`python setup.py build_ext --inplace`)."
    ) from None


def check_torch_version(built: str, running: str) -> None:
    """Refuse to load a binary compiled against another torch: its C++ ABI differs, so
    loading it fails with an undefined symbol, or worse, loads and misbehaves."""
    if built != running:
        raise ImportError(
            f"alexnet_cuda was compiled against torch {built}, but torch {running} is installed. "
            "Rebuild it against this torch: pip install --no-build-isolation --force-reinstall "
            "--no-deps .  (from the alexnet_cuda checkout)"
        )


check_torch_version(_build_info.TORCH_VERSION, torch.__version__)


def library_path() -> str:
    """Path of the operator library (libalexnet_cuda_ops.so): what a process that runs
    an exported or AOTInductor-compiled model loads to have the alexnet_cuda::* ops."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libalexnet_cuda_ops.so")


try:
    torch.ops.load_library(library_path())  # registers the alexnet_cuda::* C++ ops
    from . import _C  # noqa: F401  (the native bindings)
except (ImportError, OSError) as exc:  # pragma: no cover - only hit on a broken install
    raise ImportError(
        f"alexnet_cuda's compiled extension could not be loaded: {exc}.\n"
        "Reinstall it: pip install --no-build-isolation --force-reinstall --no-deps ."
    ) from exc


# Read once at import: a plain bool that torch.compile can trace through (a dispatcher
# query would be a graph break). The ops check the device in C++ (csrc/checks.h).
CUDA_KERNELS: bool = torch._C._dispatch_has_kernel_for_dispatch_key("alexnet_cuda::lrn_forward", "CUDA")


def has_cuda_kernels() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return CUDA_KERNELS
