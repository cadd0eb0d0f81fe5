"""Modules, each a drop-in for its torch.nn counterpart."""

from .lrn import LocalResponseNorm  # noqa: F401
