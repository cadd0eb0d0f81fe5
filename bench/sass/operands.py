"""Lane state of one warp and the decoding of SASS operands into closures over it.

Every register is a row of 32 lanes (numpy), so one instruction runs for the whole warp in
a few numpy operations. Operands are parsed once per instruction (decode), not per
execution: a source becomes a closure `get(w)` returning a lane array (or a scalar that
broadcasts), a destination a (file, row) pair.
"""

import math
import re
import struct

import numpy as np

M32 = 0xFFFFFFFF
LANES = 32
NREGS, NUREGS = 256, 64
ZERO = NREGS  # RZ reads this always-zero row; writes to RZ are dropped
UZERO = NUREGS


class Unsupported(RuntimeError):
    """A SASS opcode or operand form the interpreter has no rule for."""


class WarpState:
    """Registers, predicates and local/shared memory of the 32 lanes of one warp.

    Uniform registers (UR, UP) are kept per lane as well: under divergence each lane
    group sees the values it wrote, and the compiler only uses them for warp-uniform data."""

    def __init__(self, const, tid, ctaid, memory):
        self.R = np.zeros((NREGS + 1, LANES), np.int64)
        self.UR = np.zeros((NUREGS + 1, LANES), np.int64)
        self.P = np.zeros((8, LANES), bool)
        self.UP = np.zeros((8, LANES), bool)
        self.P[7] = self.UP[7] = True  # PT, UPT
        self.const = const
        self.sreg = {
            "SR_TID.X": tid,
            "SR_TID.Y": 0,
            "SR_TID.Z": 0,
            "SR_CTAID.X": ctaid,
            "SR_CTAID.Y": 0,
            "SR_CTAID.Z": 0,
            "SR_LANEID": np.arange(LANES, dtype=np.int64),
            "SRZ": 0,
        }
        self.memory = memory
        self.local = [dict() for _ in range(LANES)]
        self.shared = memory.shared  # one block's shared memory: the warps of a block share it


# ---------------------------------------------------------------- numbers


def f32_of(bits):
    return struct.unpack("<f", struct.pack("<I", bits & M32))[0]


def as_f32(bits):
    """int64 lane array of 32-bit patterns -> float32 lanes."""
    return np.asarray(bits, np.int64).astype(np.uint32).view(np.float32)


def bits_f32(x):
    """float lanes (any float dtype, scalar or array) -> int64 lane array of fp32 patterns."""
    a = np.asarray(x, np.float32)
    if a.ndim == 0:
        a = np.full(LANES, a, np.float32)
    return a.view(np.uint32).astype(np.int64)


def bf16_bits(x):
    """fp32 lanes -> bf16 patterns, round to nearest even, NaN kept quiet."""
    b = bits_f32(x)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    return np.where((b & 0x7FFFFFFF) > 0x7F800000, 0x7FC0, rounded)


def half_bits(x):
    return np.asarray(np.asarray(x, np.float32).astype(np.float16)).view(np.uint16).astype(np.int64)


def half_of(bits):
    return np.asarray(np.asarray(bits, np.int64) & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float32)


def parse_float_imm(text):
    t = text.strip()
    if t.startswith("0x") or t.startswith("-0x"):
        return np.float32(f32_of(int(t, 16)))
    special = {
        "+INF": math.inf,
        "INF": math.inf,
        "-INF": -math.inf,
        "+QNAN": math.nan,
        "QNAN": math.nan,
        "-QNAN": math.nan,
        "+SNAN": math.nan,
        "-SNAN": math.nan,
    }
    return np.float32(special[t] if t in special else float(t))


# ---------------------------------------------------------------- registers


REG_RE = re.compile(r"^(U?R)(\d+|Z)")


def reg(tok):
    """'R12.reuse' / 'UR4' / 'RZ' -> ('R' or 'UR', row); RZ/URZ -> the zero row."""
    m = REG_RE.match(tok)
    if not m:
        raise Unsupported(f"register {tok}")
    file = m.group(1)
    if m.group(2) == "Z":
        return file, ZERO if file == "R" else UZERO
    return file, int(m.group(2))


def is_reg(tok):
    return bool(REG_RE.match(tok))


def dest(tok):
    """A destination: (file, row) or None for RZ / URZ (the write is dropped)."""
    file, row = reg(tok)
    return None if row in (ZERO, UZERO) else (file, row)


def write(w, d, value, m):
    """Write `value` (low 32 bits) to the lanes in mask m."""
    if d is None:
        return
    rows = w.R if d[0] == "R" else w.UR
    rows[d[1]] = np.where(m, np.asarray(value, np.int64) & M32, rows[d[1]])


def write_pair(w, d, value, m):
    """Write a 64-bit value (uint64 or int64 lanes) to the pair d, d + 1."""
    if d is None:
        return
    v = np.asarray(value).astype(np.uint64)
    rows = w.R if d[0] == "R" else w.UR
    rows[d[1]] = np.where(m, (v & np.uint64(M32)).astype(np.int64), rows[d[1]])
    rows[d[1] + 1] = np.where(m, (v >> np.uint64(32)).astype(np.int64), rows[d[1] + 1])


# ---------------------------------------------------------------- sources


CONST_RE = re.compile(r"c\[0x([0-9a-f]+)\]\[(?:(U?R[0-9Z]+)\s*\+?\s*)?(?:(-?0x[0-9a-f]+))?\]")


def const_src(tok, const, width=4):
    """c[0x0][0x210] (a fixed word: a Python int) or c[0x0][R+0x10] (per lane)."""
    m = CONST_RE.match(tok)
    if m is None:
        raise Unsupported(tok)
    off = int(m.group(3) or "0", 16)
    dtype = np.uint64 if width == 8 else np.int64  # 64-bit words may exceed int64
    if not m.group(2):
        value = int.from_bytes(const[off : off + width], "little")
        if width == 8:
            value = np.uint64(value)
        return lambda w: value
    file, row = reg(m.group(2))

    def get(w):
        base = (w.R if file == "R" else w.UR)[row] + off
        return np.array([int.from_bytes(const[b : b + width], "little") for b in base.tolist()], dtype)

    return get


def isrc(tok, const):
    """Integer source (32 bits): register, constant or immediate, with - (negate) or ~ (invert)."""
    neg = tok.startswith("-")
    inv = tok.startswith("~")
    t = tok.lstrip("-~")
    if t.startswith("c["):
        base = const_src(t, const)
    elif is_reg(t):
        file, row = reg(t)
        if file == "R":
            base = lambda w: w.R[row]  # noqa: E731
        else:
            base = lambda w: w.UR[row]  # noqa: E731
    elif t.startswith("0x"):
        value = int(t, 16)
        base = lambda w: value  # noqa: E731
    elif re.fullmatch(r"\d+", t):
        value = int(t)
        base = lambda w: value  # noqa: E731
    else:
        raise Unsupported(f"integer operand {tok}")
    if inv:
        return lambda w: ~np.asarray(base(w), np.int64) & M32
    if neg:
        return lambda w: -np.asarray(base(w), np.int64) & M32
    return base


def pair_src(tok, const):
    """64-bit source (uint64 lanes): a register pair, a 64-bit constant or an immediate;
    '-' negates all 64 bits (IMAD.WIDE's addend -R4 is -(R5:R4), not -R4)."""
    neg = tok.startswith("-")
    t = tok.lstrip("-")
    if t.startswith("c["):
        get64 = const_src(t, const, 8)
        base = lambda w: np.asarray(get64(w), np.uint64)  # noqa: E731
    elif is_reg(t):
        file, row = reg(t)

        def base(w):
            rows = w.R if file == "R" else w.UR
            return (
                rows[row].astype(np.uint64) | (rows[row + 1].astype(np.uint64) << np.uint64(32))
                if row not in (ZERO, UZERO)
                else np.zeros(LANES, np.uint64)
            )
    else:
        get32 = isrc(t, const)
        base = lambda w: np.asarray(get32(w), np.int64).astype(np.uint64)  # noqa: E731
    if neg:
        return lambda w: np.uint64(0) - base(w)
    return base


def fsrc(tok, const):
    """Float source (float32 lanes): -x, |x|, registers (.H0/.H1: a half of the register),
    constants, immediates."""
    neg = tok.startswith("-")
    t = tok[1:] if neg else tok
    absval = t.startswith("|")
    t = t.replace("|", "")
    if t.startswith("c["):
        get = const_src(t, const)
        value = None
        base = lambda w: as_f32(get(w))  # noqa: E731
    elif is_reg(t):
        file, row = reg(t)
        if ".H" in t:  # a half of the register (HADD2.F32 conversions)
            shift = 16 if ".H1" in t else 0
            base = lambda w: half_of((w.R if file == "R" else w.UR)[row] >> shift)  # noqa: E731
        elif file == "R":
            base = lambda w: as_f32(w.R[row])  # noqa: E731
        else:
            base = lambda w: as_f32(w.UR[row])  # noqa: E731
    else:
        value = parse_float_imm(t)
        if absval:
            value = np.float32(abs(value))
        if neg:
            value = np.float32(-value)
        return lambda w: value
    if absval and neg:
        return lambda w: -np.abs(base(w))
    if absval:
        return lambda w: np.abs(base(w))
    if neg:
        return lambda w: -base(w)
    return base


PRED_RE = re.compile(r"^!?U?P[T0-6]$")


def is_pred(tok):
    return bool(PRED_RE.match(tok))


def psrc(tok):
    """Predicate source -> closure returning a bool lane array."""
    neg = tok.startswith("!")
    name = tok.lstrip("!")
    if name in ("PT", "UPT"):
        value = np.full(LANES, not neg)
        return lambda w: value
    uniform = name.startswith("UP")
    k = int(name[2:] if uniform else name[1:])
    if uniform:
        return (lambda w: ~w.UP[k]) if neg else (lambda w: w.UP[k])
    return (lambda w: ~w.P[k]) if neg else (lambda w: w.P[k])


def pdest(tok):
    """Predicate destination -> (file, index) or None for PT / UPT."""
    if tok in ("PT", "UPT"):
        return None
    return ("UP", int(tok[2:])) if tok.startswith("UP") else ("P", int(tok[1:]))


def pwrite(w, d, value, m):
    if d is None:
        return
    rows = w.UP if d[0] == "UP" else w.P
    rows[d[1]] = np.where(m, value, rows[d[1]])


def carry_split(ops):
    """'d, P0, P1, a, b, c, Pin0, Pin1' -> (dest, carry-out preds, sources, carry-in preds)."""
    i = 1
    outs = []
    while i < len(ops) - 1 and re.fullmatch(r"U?P[T0-6]", ops[i]):
        outs.append(ops[i])
        i += 1
    srcs, cins = [], []
    for tok in ops[i:]:
        (cins if is_pred(tok) else srcs).append(tok)
    return ops[0], outs, srcs, cins
