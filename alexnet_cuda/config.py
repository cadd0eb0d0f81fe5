"""The library's switches, in one place (as ``torch._inductor.config`` holds Inductor's).

Set them from code, at any time; each is read when a kernel is launched or planned::

    import alexnet_cuda
    alexnet_cuda.config.conv_autotune = False

Two of them take their default from the environment, read once, when alexnet_cuda is
imported:

=============================  ==========================  =================================
setting                        environment default         effect
=============================  ==========================  =================================
``conv_autotune``              ``ALEXNET_CUDA_CONV_        conv2d_relu's Triton kernels tune
                               AUTOTUNE`` (``0``: off)     their tile over a few configs on
                                                           the GPU; off: one fixed config
                                                           (no benchmarking; what the tests
                                                           and the GPU check run)
``conv_space_to_depth``        ``ALEXNET_CUDA_CONV_S2D``   conv1-like layers (few channels,
                               (``0``: off)                stride s) run as a stride-1 conv
                                                           on s*s*C channels
``conv_nchw_input``            (none)                      how the Triton conv reads an NCHW
                                                           input: ``"channels_last"`` (copy
                                                           it to NHWC first, the fast path)
                                                           or ``"direct"`` (through its
                                                           strides; for tests and
                                                           bench/codegen.py)
=============================  ==========================  =================================

The per-shape choice between the Triton conv and cuDNN is not a switch: it is timed once
per shape and cached (``alexnet_cuda/ops/conv2d_relu/select.py``).
"""

import os


def _env_flag(name: str) -> bool:
    """An on/off default from the environment: on unless the variable is "0"."""
    return os.environ.get(name, "1") != "0"


conv_autotune: bool = _env_flag("ALEXNET_CUDA_CONV_AUTOTUNE")
conv_space_to_depth: bool = _env_flag("ALEXNET_CUDA_CONV_S2D")
conv_nchw_input: str = "channels_last"
