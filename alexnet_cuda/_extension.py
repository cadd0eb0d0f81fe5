"""Loads the compiled extension (alexnet_cuda._C) and reports what it was built with."""

import torch

try:
    from . import _C  # noqa: F401  (registers the alexnet_cuda::* C++ ops)
except ImportError as exc:  # pragma: no cover - only hit on a broken install
    raise ImportError(
        "alexnet_cuda's compiled extension (alexnet_cuda._C) could not be loaded: "
        f"{exc}.\nBuild it against the installed torch with "
        "`pip install --no-build-isolation .` (see README)."
    ) from exc


# Read once at import: a plain bool that torch.compile can trace through (a dispatcher
# query inside an op's checks would be a graph break).
CUDA_KERNELS: bool = torch._C._dispatch_has_kernel_for_dispatch_key("alexnet_cuda::lrn_forward", "CUDA")


def has_cuda_kernels() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return CUDA_KERNELS


def check_device(tensor: torch.Tensor, name: str, op: str) -> None:
    """Raise a clear error when there is no kernel for ``tensor``'s device."""
    if tensor.device.type == "cpu":
        return
    if tensor.device.type == "cuda":
        if not CUDA_KERNELS:
            raise RuntimeError(
                f"{op}: {name} is on {tensor.device} but alexnet_cuda was built without its "
                "CUDA kernels (no CUDA toolkit or a CPU-only torch at build time). "
                "Rebuild with CUDA_HOME set: pip install --no-build-isolation ."
            )
        return
    if tensor.device.type == "meta":
        return
    raise NotImplementedError(
        f"{op}: {name} is on device '{tensor.device.type}'; alexnet_cuda has kernels for cpu and cuda only"
    )
