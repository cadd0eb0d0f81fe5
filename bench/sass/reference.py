"""Real tensors for a case and the extension's CPU results for them.

Inputs are random values of the dtype (NaN-free): the stage's x is pre-ReLU (randn), the
LRN's and max-pool's post-ReLU (what AlexNet feeds them), dy randn. A backward's argmax
comes from the CPU forward on the same x. Tensors are byte buffers in memory order
(channels_last: NHWC). Outputs start poisoned (0xFF bytes: NaN in fp32 and bf16, 0xFF
codes), so an element the kernel claims but does not write cannot pass.

Comparison (check_stored): in the storage dtype. Max-pool forward values bit-exact (a max
of the inputs); everything else within TOLERANCE (the GPU's FFMA contraction, MUFU
approximations and summation order differ from the CPU's in the last bits). Argmax codes
equal, or a tie in the storage dtype: the pooled input (the LRN of the ReLU for the
stage) at the emulated code's tap equals the one at the CPU's tap within the same
tolerance.
"""

import os
import sys

import numpy as np

from .cases import LRN_GROUPS, LRN_K, LRN_SCALE, LRN_BETA, LRN_SIZE, POOL_K, POOL_S, POINTER_ARGS, outputs
from .tools import ROOT

# (rtol, atol relative to the tensor's largest magnitude), by storage dtype
TOLERANCE = {"fp32": (1e-5, 1e-6), "bf16": (2.0**-7, 2.0**-9)}


class Mismatch(AssertionError):
    """An emulated output differs from the CPU kernel's."""


def import_extension():
    """alexnet_cuda with its ops registered: the in-place build, else the installed package
    (a checkout without an in-place build must not shadow the installed package)."""
    import importlib
    import glob

    if not glob.glob(os.path.join(ROOT, "alexnet_cuda", "_C*.so")):
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != ROOT]
    import torch

    importlib.import_module("alexnet_cuda")
    return torch


def to_bytes(t, cl):
    """A tensor's bytes in memory order (NCHW, or NHWC for channels_last): a view of its
    storage when it is laid out so already (the emulated kernel only reads these)."""
    import torch

    t = t.permute(0, 2, 3, 1) if cl else t
    t = t.contiguous().reshape(-1)
    return (t if t.dtype == torch.uint8 else t.view(torch.uint8)).numpy()


def values(buf, kind, elems=None):
    """Elements `elems` (all if None) of a byte buffer as comparable numbers: float32 for
    fp32 / bf16, uint8 for codes."""
    if kind == "fp32":
        v = buf.view(np.float32)
    elif kind == "bf16":
        v = buf.view(np.uint16)
    else:
        v = buf
    if elems is not None:
        v = v[elems]
    if kind == "bf16":
        v = (v.astype(np.uint32) << 16).view(np.float32)
    return v


_FORWARD = {}  # the last configuration's inputs and forward outputs: its backward record reuses them


def forward_tensors(case, seed):
    """x and, for the pooling ops, the CPU forward's (y, argmax), shared by a configuration's
    forward and backward records (one configuration kept)."""
    key = (case.op, case.dtype, case.layout, case.shape)
    if key in _FORWARD:
        return _FORWARD[key]
    torch = import_extension()
    ops = torch.ops.alexnet_cuda
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if case.dtype == "fp32" else torch.bfloat16
    fmt = torch.channels_last if case.cl else torch.contiguous_format
    x = torch.randn(case.shape, generator=gen)
    x = (x if case.op == "relu_lrn_max_pool2d" else x.relu()).to(dtype).contiguous(memory_format=fmt)
    t = {"x": x}
    pool, stride = [POOL_K] * 2, [POOL_S] * 2
    if case.op == "lrn":
        t["y"] = ops.lrn_forward(x, LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K)
    elif case.op == "max_pool2d":
        t["y"], t["argmax"] = ops.max_pool2d_forward(x, pool, stride, [0, 0], [1, 1], False, False)
    else:
        t["y"], t["argmax"] = ops.relu_lrn_max_pool2d_forward(
            x, LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K, pool, stride, LRN_GROUPS
        )
    _FORWARD.clear()
    _FORWARD[key] = t
    return t


class Reference:
    """The case's tensors (input bytes, poisoned output bytes) and the CPU's outputs."""

    def __init__(self, case, seed):
        torch = import_extension()
        ops = torch.ops.alexnet_cuda
        self.case = case
        t = dict(forward_tensors(case, seed))
        x = t["x"]
        if case.direction == "bwd":
            _FORWARD.clear()  # the configuration's last record: free what only it shared
            gen = torch.Generator().manual_seed(seed + 1)
            shape = case.shape if case.op == "lrn" else case.pooled
            dy = torch.randn(shape, generator=gen).to(x.dtype).contiguous(memory_format=self._format())
            t["dy"] = dy
            pool, stride = [POOL_K] * 2, [POOL_S] * 2
            if case.op == "lrn":
                t["dx"] = ops.lrn_backward(dy, x, LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K)
            elif case.op == "max_pool2d":
                t["dx"] = ops.max_pool2d_backward(
                    dy, t["argmax"], list(case.shape), pool, stride, [0, 0], [1, 1], case.cl
                )
            else:
                t["dx"] = ops.relu_lrn_max_pool2d_backward(
                    dy, t["argmax"], x, LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K, pool, stride, LRN_GROUPS
                )
        self.x = x
        self._pooled_input = None
        self.expected = {}
        self.kinds = {}
        buffers = []
        outs = outputs(case)
        for name in POINTER_ARGS[(case.op, case.direction)]:
            data = to_bytes(t[name], case.cl)
            kind = "u8" if name == "argmax" else case.dtype
            self.kinds[name] = kind
            if name in outs:
                self.expected[name] = data
                data = np.full_like(data, 0xFF)
            buffers.append((name, data))
        self.buffers = buffers
        self.scale = {
            name: float(np.abs(values(self.expected[name], k)).max())
            for name, k in self.kinds.items()
            if name in outs and k != "u8"
        }

    def elements(self, name):
        """Elements of an output tensor."""
        return self.expected[name].size // (1 if self.kinds[name] == "u8" else self.case.esize)

    def _format(self):
        import torch

        return torch.channels_last if self.case.cl else torch.contiguous_format

    @property
    def pooled_input(self):
        """What the forward pools, as float: x (max-pool) or the LRN of the ReLU of x per
        group (the stage), in the storage dtype. Only needed to judge argmax ties."""
        if self._pooled_input is None:
            import torch

            if self.case.op == "max_pool2d":
                self._pooled_input = self.x.float()
            else:
                ops = torch.ops.alexnet_cuda
                cg = self.case.shape[1] // LRN_GROUPS
                relu = self.x.relu()
                self._pooled_input = torch.cat(
                    [
                        ops.lrn_forward(
                            relu[:, g * cg : (g + 1) * cg].contiguous(), LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K
                        )
                        for g in range(LRN_GROUPS)
                    ],
                    1,
                ).float()
        return self._pooled_input

    def check_stored(self, memory, stores):
        """Compare every element the warp stored with the CPU's; returns {tensor: elements}."""
        checked = {}
        for k, offsets, width in stores:
            name = memory.names[k]
            if name not in self.expected:
                raise Mismatch(f"the kernel stored into its input {name}")
            kind = self.kinds[name]
            esize = 1 if kind == "u8" else self.case.esize
            first = offsets // esize
            count = max(1, width // esize)
            elems = np.unique((first[:, None] + np.arange(count)).reshape(-1))
            got = values(memory.bufs[k], kind, elems)
            want = values(self.expected[name], kind, elems)
            if kind == "u8":
                self._check_codes(name, elems, got, want)
            else:
                self._check_values(name, elems, got, want, kind)
            checked[name] = checked.get(name, 0) + len(elems)
        return checked

    def _check_values(self, name, elems, got, want, kind):
        exact = self.case.op == "max_pool2d" and self.case.direction == "fwd"
        rtol, atol = (0.0, 0.0) if exact else TOLERANCE[kind]
        bad = ~(np.abs(got - want) <= rtol * np.abs(want) + atol * self.scale[name])
        if bad.any():
            i = np.nonzero(bad)[0]
            raise Mismatch(
                f"{name}: {len(i)} of {len(elems)} stored elements differ from the CPU kernel's, e.g. "
                f"element {elems[i[0]]}: {got[i[0]]!r} vs {want[i[0]]!r} (rtol {rtol}, atol {atol} x "
                f"{self.scale[name]:.3g})"
            )

    def _check_codes(self, name, elems, got, want):
        bad = got != want
        if not bad.any():
            return
        ties = np.array([self._tie(e, int(a), int(b)) for e, a, b in zip(elems[bad], got[bad], want[bad])])
        if not ties.all():
            e = elems[bad][~ties][0]
            raise Mismatch(
                f"argmax element {e}: code {got[bad][~ties][0]} vs the CPU's {want[bad][~ties][0]}, "
                "and the taps' values differ"
            )

    def _tie(self, elem, got, want):
        """Codes a and b of the same window name equal values in the storage dtype."""
        if got >= POOL_K * POOL_K:
            return False
        n, c, ho, wo = self.case.pooled
        if self.case.cl:
            rest, ch = divmod(elem, c)
            rest, j = divmod(rest, wo)
            img, i = divmod(rest, ho)
        else:
            rest, j = divmod(elem, wo)
            rest, i = divmod(rest, ho)
            img, ch = divmod(rest, c)
        p = self.pooled_input[img, ch]
        va = float(p[POOL_S * i + got // POOL_K, POOL_S * j + got % POOL_K])
        vb = float(p[POOL_S * i + want // POOL_K, POOL_S * j + want % POOL_K])
        if self.case.dtype == "bf16":
            import torch

            va, vb = (float(torch.tensor(v).to(torch.bfloat16)) for v in (va, vb))
        exact = self.case.op == "max_pool2d"
        rtol = 0.0 if exact else TOLERANCE[self.case.dtype][0]
        return abs(va - vb) <= rtol * abs(vb)
