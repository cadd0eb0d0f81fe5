"""``convert(module)``: swap stock layers for alexnet_cuda's fused ones, keeping the weights.

Rewrites, in place, anywhere in the module tree:

* inside an ``nn.Sequential``, ``Conv2d`` directly followed by ``ReLU`` ->
  ``alexnet_cuda.nn.Conv2dReLU`` sharing the conv's ``weight``/``bias`` Parameters
  (same state_dict keys, and an optimizer built before the conversion still updates them);
  the ``ReLU`` becomes ``nn.Identity`` -- or, if it starts a run below, the fused stage;
* inside an ``nn.Sequential``, ``ReLU -> LocalResponseNorm -> MaxPool2d`` (pool without
  padding, dilation, ceil_mode or indices) -> one ``alexnet_cuda.nn.ReLULRNMaxPool2d``
  in the ReLU's slot, the LRN and pool slots becoming ``nn.Identity``. After a
  ``Conv2dReLU`` the stage's ReLU sees non-negative input and changes nothing;
* any other ``nn.LocalResponseNorm`` -> ``alexnet_cuda.nn.LocalResponseNorm`` and any other
  ``nn.MaxPool2d`` -> ``alexnet_cuda.nn.MaxPool2d``, same arguments.

A layer is only swapped where the fused one computes the same function on every input the
stock layers accept. The fused stage reads a 3-D input as one unbatched (C, H, W) image,
while stock LRN reads it as (N, C, L): the stage convert() puts in runs the stock layers on
any input that is not 4-D. A stage whose pooling window has more than
``alexnet_cuda.ops._args.MAX_WINDOW_TAPS`` taps (the fused backward's one-byte argmax)
is left stock, and convert() says so in one warning listing every module it skipped.

Replaced slots keep their names (indices of an ``nn.Sequential`` do not move), and every
new module is parameter-free or shares the old Parameters, so ``state_dict()`` keys and
values are unchanged. Only exact ``torch.nn`` classes are matched (subclasses, including
alexnet_cuda's own modules, are left alone), so converting twice is harmless. A Conv2d and
a ReLU that are not neighbours in one ``nn.Sequential`` (e.g. called from a custom
``forward``) cannot be seen as a pair and are not fused.
"""

from __future__ import annotations

import warnings
from typing import List, Optional

from torch import nn

from . import nn as fused_nn
from .ops._args import MAX_WINDOW_TAPS

__all__ = ["convert"]


def convert(module: nn.Module) -> nn.Module:
    """Replace stock layers in ``module`` with fused alexnet_cuda layers (in place).

    Returns ``module`` itself, or its replacement when ``module`` is itself a bare
    ``nn.LocalResponseNorm`` / ``nn.MaxPool2d``. See the module docstring for the rules.
    """
    skipped: List[str] = []
    out = _convert(module, fused_nn, "", skipped, set())
    if skipped:
        warnings.warn(
            "alexnet_cuda.convert left these stock layers in place, where a fused layer would not "
            "compute the same function on every input: " + "; ".join(skipped),
            stacklevel=2,
        )
    return out


def _convert(module: nn.Module, fnn, prefix: str, skipped: List[str], keep: set) -> nn.Module:
    if id(module) in keep:
        return module
    single = _replace_single(module, fnn)
    if single is not None:
        return single
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module, fnn, prefix, skipped, keep)
    for name, child in list(module.named_children()):
        new = _convert(child, fnn, f"{prefix}{name}.", skipped, keep)
        if new is not child:
            setattr(module, name, new)
    return module


class ConvertedReLULRNMaxPool2d(fused_nn.ReLULRNMaxPool2d):
    """The fused stage on 4-D input; on any other input the stock ReLU -> LRN -> MaxPool2d it
    replaced (stock LRN reads 3-D input as (N, C, L), the fused stage as (C, H, W))."""

    def __init__(self, relu, lrn, pool, kernel, stride):
        super().__init__(lrn.size, lrn.alpha, lrn.beta, lrn.k, kernel, stride)
        self._stock = (relu, lrn, pool)  # a tuple: not submodules, so no new state_dict keys

    def forward(self, input):
        if input.dim() == 4:
            return super().forward(input)
        relu, lrn, pool = self._stock
        return pool(lrn(relu(input)))


def _same_mode(new: nn.Module, old: nn.Module) -> nn.Module:
    new.train(old.training)
    return new


def _replace_single(module: nn.Module, fnn) -> Optional[nn.Module]:
    if type(module) is nn.LocalResponseNorm:
        return _same_mode(fnn.LocalResponseNorm(module.size, module.alpha, module.beta, module.k), module)
    if type(module) is nn.MaxPool2d:
        return _same_mode(
            fnn.MaxPool2d(
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.return_indices,
                module.ceil_mode,
            ),
            module,
        )
    return None


def _square(value) -> Optional[int]:
    """An int, or a pair of equal ints, as one int; else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    return None


def _too_many_taps(pool) -> Optional[str]:
    """Why the fused stage cannot take this pooling window, or None."""
    kernel = _square(pool.kernel_size)
    if kernel is not None and kernel * kernel > MAX_WINDOW_TAPS:
        return (
            f"MaxPool2d(kernel_size={kernel}) after LRN: {kernel * kernel} taps, the fused stage takes "
            f"at most {MAX_WINDOW_TAPS}"
        )
    return None


def _relu_lrn_max_pool2d(relu, lrn, pool, fnn) -> Optional[nn.Module]:
    """The fused module for ReLU -> LRN -> MaxPool2d, or None when they do not match."""
    if not (type(relu) is nn.ReLU and type(lrn) is nn.LocalResponseNorm and type(pool) is nn.MaxPool2d):
        return None
    kernel, stride = _square(pool.kernel_size), _square(pool.stride)
    if (
        kernel is None
        or stride is None
        or _square(pool.padding) != 0
        or _square(pool.dilation) != 1
        or pool.ceil_mode
        or pool.return_indices
        or _too_many_taps(pool)
    ):
        return None
    return _same_mode(ConvertedReLULRNMaxPool2d(relu, lrn, pool, kernel, stride), relu)


def _skip_relu_lrn_max_pool2d(mods, names, i, prefix, skipped, keep) -> bool:
    """Record (and keep stock) a ReLU -> LRN -> MaxPool2d run at i that the fused stage cannot take."""
    run = mods[i : i + 3]
    if len(run) < 3 or not (
        type(run[0]) is nn.ReLU and type(run[1]) is nn.LocalResponseNorm and type(run[2]) is nn.MaxPool2d
    ):
        return False
    why = _too_many_taps(run[2])
    if why is None:
        return False
    skipped.append(f"{prefix}{names[i]}..{prefix}{names[i + 2]} ({why})")
    keep.update(id(m) for m in run)
    return True


def _fuse_sequential(seq: nn.Sequential, fnn, prefix: str = "", skipped=None, keep=None) -> None:
    names = list(seq._modules.keys())
    mods = list(seq._modules.values())
    skipped = [] if skipped is None else skipped
    keep = set() if keep is None else keep

    def fused_at(i):
        return _relu_lrn_max_pool2d(*mods[i : i + 3], fnn) if i + 3 <= len(mods) else None

    def put(i, new):
        setattr(seq, names[i], new)

    i = 0
    while i < len(mods):
        conv_before = False
        if type(mods[i]) is nn.Conv2d and i + 1 < len(mods) and type(mods[i + 1]) is nn.ReLU:
            put(i, _same_mode(fnn.Conv2dReLU.from_conv(mods[i]), mods[i]))
            i += 1  # now at the ReLU: it either starts a stage or becomes Identity
            conv_before = True
        fused = fused_at(i)
        if fused is not None:
            put(i, fused)
            put(i + 1, _same_mode(nn.Identity(), mods[i + 1]))
            put(i + 2, _same_mode(nn.Identity(), mods[i + 2]))
            i += 3
        elif _skip_relu_lrn_max_pool2d(mods, names, i, prefix, skipped, keep):
            if conv_before:  # the conv applied this ReLU already
                put(i, _same_mode(nn.Identity(), mods[i]))
            i += 3
        elif conv_before:
            put(i, _same_mode(nn.Identity(), mods[i]))
            i += 1
        else:
            i += 1
