"""Emulated global memory: the op's real tensors as byte buffers at fake device addresses.

Buffer k lives at POINTER_BASE + k * 2^32. A load or store outside every buffer raises
(a wrong address is an interpreter or kernel bug, not a count). Stores are logged so
the caller can check every stored element against the reference after each warp.
"""

import re

import numpy as np

from .operands import LANES, M32, Unsupported, is_reg, reg

POINTER_BASE = 0x7F0000000000
U64 = np.uint64


def pointer(k):
    return POINTER_BASE + (k << 32)


class OutOfBounds(RuntimeError):
    """The emulated kernel touched memory outside its tensors."""


class Memory:
    def __init__(self, buffers):
        """buffers: list of (name, uint8 numpy array) in kernel-pointer order."""
        self.names = [name for name, _ in buffers]
        self.bufs = [buf for _, buf in buffers]
        self.shared = {}
        self.stores = []  # (buffer index, byte offsets, width)

    def _locate(self, addr, width):
        k = (addr - U64(POINTER_BASE)) >> U64(32)
        off = (addr & U64(M32)).astype(np.int64)
        ks = np.unique(k)
        for kk in ks.tolist():
            if kk >= len(self.bufs):
                raise OutOfBounds(f"address {hex(int(addr[k == kk][0]))} is in no tensor")
            size = self.bufs[kk].size
            bad = off[k == kk] + width > size
            if bad.any():
                raise OutOfBounds(f"{self.names[kk]}: byte {int(off[k == kk][bad][0])} + {width} past its {size} bytes")
        return k.astype(np.int64), off

    def load(self, addr, width):
        """Bytes at each address: (lanes, width) uint8."""
        k, off = self._locate(addr, width)
        out = np.empty((len(addr), width), np.uint8)
        cols = np.arange(width)
        for kk in np.unique(k).tolist():
            sel = k == kk
            out[sel] = self.bufs[kk][off[sel][:, None] + cols]
        return out

    def store(self, addr, data):
        """data: (lanes, width) uint8."""
        width = data.shape[1]
        k, off = self._locate(addr, width)
        cols = np.arange(width)
        for kk in np.unique(k).tolist():
            sel = k == kk
            self.bufs[kk][off[sel][:, None] + cols] = data[sel]
            self.stores.append((kk, off[sel], width))

    def take_stores(self):
        out, self.stores = self.stores, []
        return out


def access_width(op):
    """Bytes per lane of a load/store opcode."""
    for tag, n in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if tag in op:
            return n
    return 4


ADDR_RE = re.compile(r"\[([^\]]*)\]$")


def address(tok, const):
    """'[R2.64+0x10]', '[R4+-0x8]', '[UR4+0x4]', 'desc[UR6][R2.64+0x4]' -> closure giving
    uint64 lane addresses."""
    m = ADDR_RE.search(tok)
    if not m:
        raise Unsupported(f"address {tok}")
    terms = [t for t in re.split(r"\+", m.group(1).replace(" ", "")) if t]
    regs, offset = [], 0
    for t in terms:
        if is_reg(t):
            file, row = reg(t)
            regs.append((file, row, t.endswith(".64") or ".64" in t))
        elif re.fullmatch(r"-?0x[0-9a-f]+", t):
            offset += int(t, 16)
        else:
            raise Unsupported(f"address term {t} in {tok}")

    def get(w):
        a = np.full(LANES, offset % (1 << 64), U64)
        for file, row, wide in regs:
            rows = w.R if file == "R" else w.UR
            v = rows[row].astype(U64)
            if wide and row < rows.shape[0] - 1:
                v = v | (rows[row + 1].astype(U64) << U64(32))
            a = a + v
        return a

    return get


def words_of(data):
    """(lanes, width) bytes -> (lanes, max(1, width / 4)) int64 register words."""
    n, width = data.shape
    if width >= 4:
        return np.ascontiguousarray(data).view("<u4").astype(np.int64)
    return np.ascontiguousarray(data).view("<u2" if width == 2 else "u1").astype(np.int64).reshape(n, 1)


def bytes_of(words, width):
    """(lanes, words) int64 register values -> (lanes, width) bytes."""
    w32 = np.ascontiguousarray(words.astype(np.uint32))
    return w32.view(np.uint8).reshape(len(words), -1)[:, :width]
