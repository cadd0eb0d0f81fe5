"""conv2d_relu: ``relu(conv2d(...))`` as one Triton kernel, a drop-in for ``F.relu(F.conv2d(...))``.

The package mirrors a C++ op's ``csrc/<op>/`` folder:

=====================  ================================================================
``op.py``              the public op: argument checks, the ``torch.library`` registration
                       (``alexnet_cuda::conv2d_relu``), autograd, eager and traced routing
``kernel.py``          the Triton implicit-GEMM forward kernel and its launcher
``backward.py``        the backward's choices: Triton or cuDNN input and weight gradients
``wgrad.py``           the Triton weight-gradient kernel
``space_to_depth.py``  the rewrite of conv1-like layers into stride-1 convolutions
``select.py``          the per-shape choice between Triton and cuDNN, timed once, cached
=====================  ================================================================

Switches: ``alexnet_cuda.config`` (conv_autotune, conv_space_to_depth, conv_nchw_input).
"""

from .op import ConvArgumentError, conv2d_relu, conv_allows_tf32  # noqa: F401
