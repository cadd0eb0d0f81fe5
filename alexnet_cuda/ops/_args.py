"""Argument reading and errors shared by the four ops.

One int/pair reader that takes exactly what PyTorch's argument parser takes for an
``int[2]`` (so ``F.max_pool2d``/``F.conv2d`` and ours accept and refuse the same values),
one family of error classes, and the limits the kernels share.
"""

# A window-local argmax is one byte: t_h * kernel_w + t_w, so windows of at most 256 taps.
MAX_WINDOW_TAPS = 256
