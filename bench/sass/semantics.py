"""What each SASS instruction does, for all lanes of a warp at once.

`RULES[name](op, operands, const)` compiles one instruction into `run(w, m)`: w the
WarpState, m the bool mask of the lanes that execute it (in the issuing group, guard
true). Uniform-datapath twins (UIADD3, ULOP3, ...) share the rules. Control flow
(BRA, EXIT, CALL, RET, BSSY, BSYNC) and memory are the scheduler's (warp.py, memory.py).
Floats are fp32 (numpy float32: IEEE rounding); FFMA is computed in float64 and rounded
once more, which can differ from a fused multiply-add in the last bit (rarely).
"""

import numpy as np

from .operands import (
    LANES,
    M32,
    Unsupported,
    bf16_bits,
    bits_f32,
    carry_split,
    dest,
    fsrc,
    half_bits,
    half_of,
    is_pred,
    isrc,
    pair_src,
    parse_float_imm,
    pdest,
    psrc,
    pwrite,
    write,
    write_pair,
)

U64 = np.uint64


def s32(v):
    v = np.asarray(v, np.int64) & M32
    return v - ((v >> 31) << 32)


def carry_in(cins):
    gets = [psrc(p) for p in cins]
    return lambda w: sum(g(w).astype(np.int64) for g in gets) if gets else 0


def _imad(op, a, const):
    d, outs, srcs, cins = carry_split(a)
    dd = dest(d)
    cin = carry_in(cins) if ".X" in op else (lambda w: 0)
    gx, gy = isrc(srcs[0], const), isrc(srcs[1], const)
    if ".WIDE" in op:
        gc = pair_src(srcs[2], const)
        signed = ".U32" not in op

        def run(w, m):
            x, y = np.asarray(gx(w), np.int64), np.asarray(gy(w), np.int64)
            if signed:
                prod = (s32(x) * s32(y)).astype(U64)
            else:
                prod = x.astype(U64) * y.astype(U64)
            write_pair(w, dd, prod + gc(w) + np.asarray(cin(w)).astype(U64), m)

        return run
    if ".HI" in op:
        # The addend is the 64-bit pair {c+1:c}: the division sequences put q in c+1 and 0
        # in c to get q + umulhi(a, b) in one instruction.
        gc = pair_src(srcs[2], const) if srcs[2].lstrip("-")[0] in "RU" else None
        gc32 = isrc(srcs[2], const)
        unsigned = ".U32" in op

        def run(w, m):
            x, y = np.asarray(gx(w), np.int64), np.asarray(gy(w), np.int64)
            c = gc(w) if gc is not None else np.asarray(gc32(w), np.int64).astype(U64)
            if unsigned:
                prod = x.astype(U64) * y.astype(U64)
            else:
                prod = (s32(x) * s32(y)).astype(U64)
            lo = (prod & U64(M32)) + (c & U64(M32))
            hi = (prod >> U64(32)) + (c >> U64(32)) + (lo >> U64(32))
            write(w, dd, hi.astype(np.int64) + cin(w), m)

        return run
    gz = isrc(srcs[2], const)
    pd = pdest(outs[0]) if outs else None

    def run(w, m):
        res = np.asarray(gx(w), np.int64).astype(U64) * np.asarray(gy(w), np.int64).astype(U64)
        res = res + np.asarray(gz(w), np.int64).astype(U64) + np.asarray(cin(w), np.int64).astype(U64)
        if pd is not None:
            pwrite(w, pd, ((res >> U64(32)) & U64(1)).astype(bool), m)
        write(w, dd, (res & U64(M32)).astype(np.int64), m)

    return run


def adder_src(tok, const):
    """An adder input as the adder sees it: -x is ~x + 1 (33 bits: -0 carries out, so a
    64-bit subtraction's high word IADD3.X gets its carry), ~x is ~x."""
    if tok.startswith("-"):
        get = isrc(tok[1:], const)
        return lambda w: (~np.asarray(get(w), np.int64) & M32) + 1
    return isrc(tok, const)


def _iadd3(op, a, const):
    d, outs, srcs, cins = carry_split(a)
    dd = dest(d)
    gets = [adder_src(s, const) for s in srcs]
    cin = carry_in(cins) if ".X" in op else (lambda w: 0)
    pds = [pdest(p) for p in outs]

    def run(w, m):
        res = sum(np.asarray(g(w), np.int64) for g in gets) + cin(w)
        res = np.asarray(res, np.int64)
        if pds:  # the two stages' carries: the .X consumer adds both predicates
            carry = res >> 32
            pwrite(w, pds[0], carry >= 1, m)
            if len(pds) > 1:
                pwrite(w, pds[1], carry >= 2, m)
        write(w, dd, res, m)

    return run


def _viadd(op, a, const):
    dd, gx, gy = dest(a[0]), isrc(a[1], const), isrc(a[2], const)
    return lambda w, m: write(w, dd, np.asarray(gx(w), np.int64) + gy(w), m)


def _mov(op, a, const):
    dd, gx = dest(a[0]), isrc(a[1], const)
    return lambda w, m: write(w, dd, gx(w), m)


def _lop3(op, a, const):
    if is_pred(a[0]):  # LOP3.LUT P0, R1, a, b, c, lut, Pin
        pd, dd, srcs = pdest(a[0]), dest(a[1]), a[2:]
    else:
        pd, dd, srcs = None, dest(a[0]), a[1:]
    gx, gy, gz = (isrc(s, const) for s in srcs[:3])
    lut = int(srcs[3], 16)
    pin = psrc(srcs[4]) if len(srcs) > 4 else (lambda w: False)

    def run(w, m):
        x, y, z = (np.asarray(g(w), np.int64) for g in (gx, gy, gz))
        res = np.zeros(LANES, np.int64)
        for bit in range(8):
            if lut >> bit & 1:
                res |= (x if bit & 4 else ~x) & (y if bit & 2 else ~y) & (z if bit & 1 else ~z)
        res &= M32
        write(w, dd, res, m)
        if pd is not None:
            pwrite(w, pd, (res != 0) | pin(w), m)

    return run


def _plop3(op, a, const):
    d1, d2 = pdest(a[0]), pdest(a[1])
    gx, gy, gz = (psrc(s) for s in a[2:5])
    luts = [int(s, 16) for s in a[5:7]]

    def run(w, m):
        idx = (gx(w).astype(np.int64) << 2) | (gy(w).astype(np.int64) << 1) | gz(w).astype(np.int64)
        pwrite(w, d1, ((luts[0] >> idx) & 1).astype(bool), m)
        pwrite(w, d2, ((luts[1] >> idx) & 1).astype(bool) if len(luts) > 1 else np.zeros(LANES, bool), m)

    return run


def _shf(op, a, const):
    """Funnel shifts of the 64-bit value hi:lo; .HI returns bits 32..63 of the result."""
    dd, glo, gsh, ghi = dest(a[0]), isrc(a[1], const), isrc(a[2], const), isrc(a[3], const)
    limit = 64 if (".U64" in op or ".S64" in op) else 32
    left, hi_out, signed = ".L" in op, ".HI" in op, (".S32" in op or ".S64" in op)

    def run(w, m):
        lo = np.asarray(glo(w), np.int64).astype(U64)
        hi = np.asarray(ghi(w), np.int64).astype(U64)
        sh = np.minimum(np.asarray(gsh(w), np.int64), limit)
        val = (hi << U64(32)) | lo
        s63 = np.minimum(sh, 63).astype(U64)
        if left:
            res = np.where(sh >= 64, U64(0), val << s63)
        elif signed:
            res = (val.astype(np.int64) >> s63.astype(np.int64)).astype(U64)
        else:
            res = np.where(sh >= 64, U64(0), val >> s63)
        if hi_out:
            res = res >> U64(32)
        write(w, dd, (res & U64(M32)).astype(np.int64), m)

    return run


def _lea(op, a, const):
    d, outs, srcs, cins = carry_split(a)
    dd = dest(d)
    gx, gy = isrc(srcs[0], const), isrc(srcs[1], const)
    cin = carry_in(cins) if ".X" in op else (lambda w: 0)
    pd = pdest(outs[0]) if outs else None
    if ".HI" in op:
        gsh = isrc(srcs[-1], const)
        ghi = isrc(srcs[2], const) if len(srcs) > 3 else (lambda w: 0)
        sx = ".SX32" in op

        def run(w, m):
            x = np.asarray(gx(w), np.int64)
            hi = np.where(x >> 31, M32, 0) if sx else np.asarray(ghi(w), np.int64)
            sh = np.asarray(gsh(w), np.int64).astype(U64)
            val = ((hi.astype(U64) << U64(32)) | x.astype(U64)) << sh
            res = (val >> U64(32)).astype(np.int64) + gy(w) + cin(w)
            if pd is not None:
                pwrite(w, pd, (res >> 32).astype(bool), m)
            write(w, dd, res, m)

        return run
    gsh = isrc(srcs[2], const)

    def run(w, m):
        x = np.asarray(gx(w), np.int64)
        res = ((x << np.asarray(gsh(w), np.int64)) & M32) + gy(w) + cin(w)
        res = np.asarray(res, np.int64)
        if pd is not None:
            pwrite(w, pd, (res >> 32).astype(bool), m)
        write(w, dd, res, m)

    return run


CMP = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal, "GT": np.greater, "GE": np.greater_equal}
BOOL = {"AND": np.logical_and, "OR": np.logical_or, "XOR": np.logical_xor}


def _isetp(op, a, const):
    mods = op.split(".")[1:]
    kind = mods[0]
    unsigned = "U32" in mods
    bop = BOOL[next(x for x in mods if x in BOOL)]
    p0, p1 = pdest(a[0]), pdest(a[1])
    gx, gy, gpin = isrc(a[2], const), isrc(a[3], const), psrc(a[4])
    ex = "EX" in mods
    glow = psrc(a[5]) if ex else None

    def run(w, m):
        x, y = np.asarray(gx(w), np.int64), np.asarray(gy(w), np.int64)
        if not unsigned:
            x, y = s32(x), s32(y)
        if ex:  # high words, with the low words' result in the last predicate
            low = glow(w)
            if kind == "EQ":
                c = (x == y) & low
            elif kind == "NE":
                c = (x != y) | low
            else:
                strict = CMP[kind.replace("E", "T") if kind in ("GE", "LE") else kind](x, y)
                c = strict | ((x == y) & low)
        else:
            c = CMP[kind](x, y)
        c = np.broadcast_to(c, (LANES,))
        pin = gpin(w)
        pwrite(w, p0, bop(c, pin), m)
        pwrite(w, p1, bop(~c, pin), m)

    return run


def _fsetp(op, a, const):
    mods = [x for x in op.split(".")[1:] if x != "FTZ"]
    kind = mods[0]
    bop = BOOL[next(x for x in mods if x in BOOL)]
    p0, p1 = pdest(a[0]), pdest(a[1])
    gx, gy, gpin = fsrc(a[2], const), fsrc(a[3], const), psrc(a[4])

    def run(w, m):
        x, y = gx(w), gy(w)
        unordered = np.isnan(x) | np.isnan(y)
        if kind == "NAN":
            c = unordered
        elif kind == "NUM":
            c = ~unordered
        elif kind.endswith("U") and kind in ("EQU", "NEU", "LTU", "LEU", "GTU", "GEU"):
            c = unordered | CMP[kind[:-1]](x, y)
        else:
            c = ~unordered & CMP[kind](x, y)
        c = np.broadcast_to(c, (LANES,))
        pin = gpin(w)
        pwrite(w, p0, bop(c, pin), m)
        pwrite(w, p1, bop(~c, pin), m)

    return run


def _sel(op, a, const):
    dd, gx, gy, gp = dest(a[0]), isrc(a[1], const), isrc(a[2], const), psrc(a[3])
    return lambda w, m: write(w, dd, np.where(gp(w), gx(w), gy(w)), m)


def _fsel(op, a, const):
    dd, gx, gy, gp = dest(a[0]), fsrc(a[1], const), fsrc(a[2], const), psrc(a[3])
    return lambda w, m: write(w, dd, bits_f32(np.where(gp(w), gx(w), gy(w))), m)


def _iabs(op, a, const):
    dd, gx = dest(a[0]), isrc(a[1], const)
    return lambda w, m: write(w, dd, np.abs(s32(gx(w))), m)


def _imnmx(op, a, const):
    dd, gx, gy, gp = dest(a[0]), isrc(a[1], const), isrc(a[2], const), psrc(a[3])
    unsigned = ".U32" in op

    def run(w, m):
        x, y = np.asarray(gx(w), np.int64), np.asarray(gy(w), np.int64)
        if not unsigned:
            x, y = s32(x), s32(y)
        write(w, dd, np.where(gp(w), np.minimum(x, y), np.maximum(x, y)), m)

    return run


def _viaddmnmx(op, a, const):
    dd, gx, gy, gz, gp = dest(a[0]), isrc(a[1], const), isrc(a[2], const), isrc(a[3], const), psrc(a[4])
    unsigned = ".U32" in op

    def run(w, m):
        x, y = (np.asarray(gx(w), np.int64) + gy(w)) & M32, np.asarray(gz(w), np.int64)
        if not unsigned:
            x, y = s32(x), s32(y)
        write(w, dd, np.where(gp(w), np.minimum(x, y), np.maximum(x, y)), m)

    return run


def _i2f(op, a, const):
    dd = dest(a[0])
    if ".U64" in op or ".S64" in op:
        gp = pair_src(a[1], const)
        signed = ".S64" in op
        return lambda w, m: write(w, dd, bits_f32(gp(w).astype(np.int64) if signed else gp(w)), m)
    gx = isrc(a[1], const)
    unsigned = ".U32" in op
    # I2F.U8 / .S16 ... are not expected; I2F.RP rounds up (division sequences): emulated to
    # nearest, which the sequences' correction steps absorb.
    return lambda w, m: write(w, dd, bits_f32(np.asarray(gx(w), np.int64) if unsigned else s32(gx(w))), m)


def _f2i(op, a, const):
    dd, gx = dest(a[0]), fsrc(a[1], const)
    trunc = ".TRUNC" in op
    wide = ".U64" in op or ".S64" in op
    lo, hi = (0, M32) if ".U32" in op else (-(1 << 31), (1 << 31) - 1)

    def run(w, m):
        x = np.asarray(gx(w), np.float64)
        x = np.where(np.isnan(x), 0.0, x)
        v = np.trunc(x) if trunc else np.rint(x)
        if wide:
            write_pair(w, dd, np.clip(v, -(2.0**63), 2.0**63 - 1).astype(np.int64), m)
        else:
            write(w, dd, np.clip(v, lo, hi).astype(np.int64), m)

    return run


def _mufu(op, a, const):
    dd, gx = dest(a[0]), fsrc(a[1], const)
    kind = op.split(".")[1]
    fns = {
        "RCP": lambda x: 1.0 / x,
        "RSQ": lambda x: 1.0 / np.sqrt(x),
        "SQRT": np.sqrt,
        "LG2": np.log2,
        "EX2": np.exp2,
        "SIN": np.sin,
        "COS": np.cos,
    }
    if kind not in fns:
        raise Unsupported(op)
    fn = fns[kind]
    # Correctly rounded: the GPU's approximations are within 2 ulp (SASS.md: the outputs are
    # compared within a tolerance that covers it).
    return lambda w, m: write(w, dd, bits_f32(fn(np.asarray(gx(w), np.float64))), m)


def _fbin(fn):
    def compile_(op, a, const):
        dd = dest(a[0])
        gets = [fsrc(s, const) for s in a[1:]]
        return lambda w, m: write(w, dd, bits_f32(fn(*(g(w) for g in gets))), m)

    return compile_


def _ffma(x, y, z):
    return (np.asarray(x, np.float64) * y + z).astype(np.float32)


def _fmnmx(op, a, const):
    dd, gx, gy, gp = dest(a[0]), fsrc(a[1], const), fsrc(a[2], const), psrc(a[3])

    def run(w, m):
        x, y = gx(w), gy(w)
        v = np.where(gp(w), np.fmin(x, y), np.fmax(x, y))  # fmin/fmax: a NaN operand yields the other
        write(w, dd, bits_f32(v), m)

    return run


def _frnd(op, a, const):
    dd, gx = dest(a[0]), fsrc(a[1], const)
    fn = np.floor if ".FLOOR" in op else np.ceil if ".CEIL" in op else np.trunc if ".TRUNC" in op else np.rint
    return lambda w, m: write(w, dd, bits_f32(fn(gx(w))), m)


def _fchk(op, a, const):
    # FCHK flags division operands the fast reciprocal path cannot handle (denormals, huge
    # exponents). The kernels divide normal, modest numbers: the fast path.
    pd = pdest(a[0])
    return lambda w, m: pwrite(w, pd, np.zeros(LANES, bool), m)


def _f2f(op, a, const):
    """F2F.{BF16,F16}.F32 (round an fp32 to the low 16 bits) and F2F.F32.{BF16,F16}."""
    parts = op.split(".")
    dd = dest(a[0])
    if parts[1:3] in (["BF16", "F32"], ["F16", "F32"]):
        conv = bf16_bits if parts[1] == "BF16" else half_bits
        gx = fsrc(a[1], const)
        return lambda w, m: write(w, dd, conv(gx(w)), m)
    gi = isrc(a[1], const)
    if parts[1:3] == ["F32", "F16"]:
        return lambda w, m: write(w, dd, bits_f32(half_of(gi(w))), m)
    if parts[1:3] == ["F32", "BF16"]:
        return lambda w, m: write(w, dd, (np.asarray(gi(w), np.int64) & 0xFFFF) << 16, m)
    raise Unsupported(op)


def _f2fp(op, a, const):
    dd, gx, gy = dest(a[0]), fsrc(a[1], const), fsrc(a[2], const)
    conv = bf16_bits if ".BF16" in op else half_bits
    return lambda w, m: write(w, dd, (conv(gx(w)) << 16) | conv(gy(w)), m)


def _hadd2(op, a, const):
    if ".F32" not in op:  # HADD2.F32 d, -RZ, R.H0_H0: half -> float
        raise Unsupported(op)
    dd, gx, gy = dest(a[0]), fsrc(a[1], const), fsrc(a[2], const)
    return lambda w, m: write(w, dd, bits_f32(gx(w) + gy(w)), m)


def _hfma2(op, a, const):
    # HFMA2.MMA d, -RZ, RZ, hi, lo: materialises a packed constant.
    if len(a) == 5 and a[1].lstrip("-") == "RZ":
        dd = dest(a[0])
        value = int(half_bits(parse_float_imm(a[3]))) << 16 | int(half_bits(parse_float_imm(a[4])))
        return lambda w, m: write(w, dd, value, m)
    raise Unsupported(f"{op} {a}")


def _prmt(op, a, const):
    dd, gx, gs, gy = dest(a[0]), isrc(a[1], const), isrc(a[2], const), isrc(a[3], const)

    def run(w, m):
        src = np.asarray(gx(w), np.int64).astype(U64) | (np.asarray(gy(w), np.int64).astype(U64) << U64(32))
        sel = np.asarray(gs(w), np.int64)
        res = np.zeros(LANES, np.int64)
        for k in range(4):
            nib = (sel >> (4 * k)) & 0xF
            byte = ((src >> ((nib & 7) * 8).astype(U64)) & U64(0xFF)).astype(np.int64)
            byte = np.where(nib & 8, np.where(byte & 0x80, 0xFF, 0), byte)
            res |= byte << (8 * k)
        write(w, dd, res, m)

    return run


def _p2r(op, a, const):
    dd, gbase, gmask = dest(a[0]), isrc(a[2], const), isrc(a[3], const)

    def run(w, m):
        bits = sum(w.P[k].astype(np.int64) << k for k in range(7))
        mask = np.asarray(gmask(w), np.int64)
        write(w, dd, (np.asarray(gbase(w), np.int64) & ~mask) | (bits & mask), m)

    return run


def _r2p(op, a, const):
    gv, gmask = isrc(a[1], const), isrc(a[2], const)

    def run(w, m):
        v, mask = np.asarray(gv(w), np.int64), np.asarray(gmask(w), np.int64)
        for k in range(7):
            sel = m & ((mask >> k) & 1).astype(bool)
            w.P[k] = np.where(sel, (v >> k) & 1, w.P[k]).astype(bool)

    return run


def _s2r(op, a, const):
    dd, name = dest(a[0]), a[1]
    return lambda w, m: write(w, dd, w.sreg[name], m)


def _cs2r(op, a, const):
    dd, name = dest(a[0]), a[1]
    if ".32" in op:
        return lambda w, m: write(w, dd, w.sreg.get(name, 0), m)
    return lambda w, m: write_pair(w, dd, np.full(LANES, w.sreg.get(name, 0), np.int64), m)


def _ldc(op, a, const):
    dd = dest(a[0])
    if ".64" in op:
        gp = pair_src(a[1], const)
        return lambda w, m: write_pair(w, dd, gp(w), m)
    gx = isrc(a[1], const)
    return lambda w, m: write(w, dd, gx(w), m)


def _nop(op, a, const):
    return lambda w, m: None


RULES = {
    "IMAD": _imad,
    "IADD3": _iadd3,
    "VIADD": _viadd,
    "MOV": _mov,
    "LOP3": _lop3,
    "PLOP3": _plop3,
    "SHF": _shf,
    "LEA": _lea,
    "ISETP": _isetp,
    "FSETP": _fsetp,
    "SEL": _sel,
    "FSEL": _fsel,
    "IABS": _iabs,
    "IMNMX": _imnmx,
    "VIMNMX": _imnmx,
    "VIADDMNMX": _viaddmnmx,
    "I2F": _i2f,
    "I2FP": _i2f,
    "F2I": _f2i,
    "MUFU": _mufu,
    "FADD": _fbin(lambda x, y: x + y),
    "FMUL": _fbin(lambda x, y: x * y),
    "FFMA": _fbin(_ffma),
    "FMNMX": _fmnmx,
    "FRND": _frnd,
    "FCHK": _fchk,
    "F2F": _f2f,
    "F2FP": _f2fp,
    "HADD2": _hadd2,
    "HFMA2": _hfma2,
    "PRMT": _prmt,
    "P2R": _p2r,
    "R2P": _r2p,
    "S2R": _s2r,
    "S2UR": _s2r,
    "R2UR": _mov,
    "CS2R": _cs2r,
    "LDC": _ldc,
    "NOP": _nop,
    "WARPSYNC": _nop,
    "BAR": _nop,
    "YIELD": _nop,
    "DEPBAR": _nop,
    "MEMBAR": _nop,
}


def rule_for(base):
    """The rule of an opcode's base name: uniform twins (UIADD3, ULDC, ...) share the
    general one."""
    if base in RULES:
        return RULES[base]
    if base.startswith("U") and base[1:] in RULES:
        return RULES[base[1:]]
    return None
