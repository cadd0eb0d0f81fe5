"""LRN benchmark cases: ours vs nn.LocalResponseNorm (eager, torch.compile)."""

import torch
import torch.nn.functional as F

from alexnet_cuda.ops import local_response_norm
from common import DTYPES, LAYOUTS, Case

PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # the paper's LRN after conv1 and conv2


def _stock(x):
    return F.local_response_norm(x, **PAPER)


def _ours(x):
    return local_response_norm(x, **PAPER)


def _upcast(fn):
    """fn on fp32 copies of the inputs (PyTorch's CPU LRN has no bf16/fp16 kernel)."""

    def run(*args):
        args = [a.detach().float().requires_grad_(a.requires_grad) for a in args]
        return fn(*args)

    return run


def _fwd_bwd(fn):
    def run(x, g):
        (gx,) = torch.autograd.grad(fn(x), x, g)
        return gx

    return run


def _close(dtype):
    tol = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 4e-3}[dtype]

    def check(ours, ref):
        torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)

    return check


def cases(cfg):
    shapes = [(cfg.batch, 96, 55, 55)] + ([] if cfg.quick else [(cfg.batch, 256, 27, 27)])
    out = []
    for shape in shapes:
        for dt in cfg.dtypes:
            for lay in cfg.layouts:
                dtype, fmt = DTYPES[dt], LAYOUTS[lay]
                numel = torch.Size(shape).numel()
                elem = torch.empty((), dtype=dtype).element_size()

                def make(shape=shape, dtype=dtype, fmt=fmt, grad=False):
                    x = torch.randn(shape, device=cfg.device, dtype=dtype).relu_().to(memory_format=fmt)
                    if not grad:
                        return (x,)
                    return (x.requires_grad_(), torch.randn_like(x))

                name = f"LRN {tuple(shape)}"
                impls = {"ours": _ours, "eager": _stock}
                if cfg.compile:  # one compiled graph per case: static shapes, no recompiles
                    impls["compile"] = torch.compile(_stock, dynamic=False)
                out.append(
                    Case("lrn", name, dt, lay, "fwd", make, impls, _close(dt), _upcast(_stock), bytes=2 * numel * elem)
                )
                impls_b = {k: _fwd_bwd(v) for k, v in impls.items()}
                make_b = lambda make=make: make(grad=True)  # noqa: E731
                # forward: read x, write y; backward: read x and dy, write dx.
                out.append(
                    Case(
                        "lrn",
                        name,
                        dt,
                        lay,
                        "fwd+bwd",
                        make_b,
                        impls_b,
                        _close(dt),
                        _upcast(_fwd_bwd(_stock)),
                        bytes=5 * numel * elem,
                    )
                )
    return out
