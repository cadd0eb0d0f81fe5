"""Modules, each a drop-in for its torch.nn counterpart."""

from .lrn import LocalResponseNorm  # noqa: F401
from .conv import Conv2dReLU  # noqa: F401
from .pooling import MaxPool2d  # noqa: F401
from .stage import ReLULRNMaxPool2d  # noqa: F401
