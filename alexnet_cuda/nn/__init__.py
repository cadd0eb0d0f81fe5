"""Modules, each a drop-in for its torch.nn counterpart."""

from .lrn import LocalResponseNorm  # noqa: F401
from .conv2d_relu import Conv2dReLU  # noqa: F401
from .max_pool2d import MaxPool2d  # noqa: F401
from .relu_lrn_max_pool2d import ReLULRNMaxPool2d  # noqa: F401
