"""Functional ops, each a drop-in for its torch.nn.functional counterpart."""

from .lrn import local_response_norm  # noqa: F401
from .conv2d_relu import conv2d_relu  # noqa: F401
from .max_pool2d import max_pool2d  # noqa: F401
from .relu_lrn_max_pool2d import relu_lrn_max_pool2d  # noqa: F401
