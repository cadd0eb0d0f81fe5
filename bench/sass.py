"""Static performance read of the CUDA kernels from their SASS (no GPU needed).

    python bench/sass.py [--json FILE] [--compile] [--update]

For every kernel instantiation AlexNet's shapes launch (LRN size 5, max-pool 3/2 and the
fused ReLU -> LRN -> max-pool stage with lrn_groups=2; forward and backward; fp32 and
bf16; NCHW and channels_last; (128,96,55,55) and (128,256,27,27)) it reports registers,
spills, occupancy, SASS instructions and MUFU ops per processed element, global bytes in
flight per SM, the issue-bound time and the memory floor, and checks them against the
budgets below. bench/SASS.md describes the method and its assumptions.

How the counts are taken: the kernel's sm_90 SASS is *executed* for a few representative
threads by the small interpreter in this file (integer, predicate, float and control
instructions; global loads return a constant, stores are dropped), with the launch's
real parameters. That follows the exact path the compiler laid out (divisions, runtime
unrolled loops, 32- vs 64-bit branches) without reading it by hand. Instructions per
element = instructions executed by the thread / elements the thread produces (from the
kernel source; see ELEMENTS_* below).

The cubins come from the built extension (alexnet_cuda/_C*.so, cuobjdump -xelf), or with
--compile from csrc/*.cu compiled for sm_90 with setup.py's NVCC_FLAGS.
"""

import argparse
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- machine model (H100 SXM)
SMS = 132
SCHEDULERS_PER_SM = 4  # each issues one warp-instruction per clock
CLOCK_HZ = 1.755e9
DRAM_BYTES_PER_S = 3.0e12  # measured copy bandwidth (bench/NOTES.md)
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32
REGS_PER_SM = 65536
SMEM_PER_SM = 233472  # 228 KiB
REG_ALLOC_UNIT = 8  # registers per thread are allocated in multiples of 8 (256 per warp)

# ---------------------------------------------------------------- budgets (issue 17)
BUDGET_ISSUE_OVER_FLOOR = 0.7  # issue_bound_ms <= 0.7 x floor_ms
BUDGET_OCCUPANCY = 0.5
BUDGET_BYTES_IN_FLIGHT_PER_SM = 32 * 1024

# AlexNet's LRN (paper: k = 2, n = 5, alpha = 1e-4, beta = 0.75; scale = alpha / size).
LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K = 5, 1e-4 / 5, 0.75, 2.0
SPAN = LRN_SIZE - 1  # make_window (lrn.h): pre = 2, post = 2, clamped to C - 1
POOL_K, POOL_S = 3, 2
LRN_GROUPS = 2
SHAPES = [(128, 96, 55, 55), (128, 256, 27, 27)]
DTYPES = {"fp32": ("float", 4), "bf16": ("c10::BFloat16", 2)}
LAYOUTS = ("nchw", "nhwc")
THREADS = 256  # kThreads of every sweep / max-pool kernel (lrn_sweep.h, max_pool2d_cuda.cu)
CHANNEL_RUN = 32  # lrn::sweep::kChannelRun (lrn_sweep.h, make_items)
STAGE_CHANNEL_RUN = 64  # relu_lrn_max_pool2d::sweep::kChannelRun (channels-first backward items)
POOL_CHANNELS, POOL_ROWS = 4, 13  # stage forward NCHW items: kPoolChannels, kPoolRows (sweep header)

# Fake, 16-byte aligned device pointers: global loads return a constant, stores are dropped.
POINTER_BASE = 0x7F0000000000

# ================================================================= tools and cubins


class ToolMissing(RuntimeError):
    """A CUDA binary tool (cuobjdump, nvdisasm, nvcc) or the built extension is missing."""


def find_tool(name):
    """cuobjdump / nvdisasm: the CUDA toolkit's, else the copy Triton ships."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", name))
    candidates += sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"), reverse=True)
    spec = importlib.util.find_spec("triton")
    if spec and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            candidates.append(os.path.join(base, "backends", "nvidia", "bin", name))
    on_path = shutil.which(name)
    if on_path:
        candidates.insert(0, on_path)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ToolMissing(f"{name} not found (CUDA toolkit bin/ or triton/backends/nvidia/bin/)")


def built_extension():
    """Path of the built alexnet_cuda._C, without importing torch."""
    found = sorted(glob.glob(os.path.join(ROOT, "alexnet_cuda", "_C*.so")))
    if not found:
        raise ToolMissing("alexnet_cuda/_C*.so is not built (python setup.py build_ext --inplace)")
    return found[0]


def extract_cubins(so_path, workdir):
    """The sm_90 cubins inside the extension, by source file stem ('lrn_cuda', ...)."""
    listing = subprocess.run([find_tool("cuobjdump"), "-lelf", so_path], capture_output=True, text=True)
    names = re.findall(r"ELF file\s+\d+:\s+(\S+\.sm_90\.cubin)", listing.stdout)
    if not names:
        raise ToolMissing(f"{so_path} holds no sm_90 cubin: the extension was built without CUDA kernels")
    for name in names:
        subprocess.run([find_tool("cuobjdump"), "-xelf", name, so_path], cwd=workdir, check=True,
                       capture_output=True)
    return {name.split(".")[0]: os.path.join(workdir, name) for name in names}


def load_setup():
    spec = importlib.util.spec_from_file_location("alexnet_cuda_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions and the flag constants only
    return module


def compile_cubins(workdir, stems):
    """csrc/**/<stem>.cu -> sm_90 cubins with setup.py's NVCC_FLAGS and torch's nvcc flags."""
    setup = load_setup()
    cuda_home = setup.find_cuda_home()
    if cuda_home is None:
        raise ToolMissing("no CUDA toolkit: cannot --compile")
    os.environ["CUDA_HOME"] = cuda_home  # read once by cpp_extension, as in setup.py
    from torch.utils import cpp_extension

    includes = [os.path.join(ROOT, "csrc")] + setup.cuda_library_includes(cuda_home)
    includes += cpp_extension.include_paths(device_type="cuda")
    flags = setup.NVCC_FLAGS + cpp_extension.COMMON_NVCC_FLAGS + ["-std=c++20", "-DALEXNET_CUDA_WITH_CUDA=1",
                                                                  "-DTORCH_EXTENSION_NAME=_C",
                                                                  "-DTORCH_API_INCLUDE_EXTENSION_H"]
    out = {}
    for stem in stems:
        (source,) = glob.glob(os.path.join(ROOT, "csrc", "**", stem + ".cu"), recursive=True)
        cubin = os.path.join(workdir, stem + ".sm_90.cubin")
        cmd = [os.path.join(cuda_home, "bin", "nvcc"), "-cubin", "-arch=sm_90", *flags,
               *[f"-I{d}" for d in includes], source, "-o", cubin]
        subprocess.run(cmd, check=True)
        out[stem] = cubin
    return out


# ================================================================= cubin symbols and resources


def elf_functions(cubin):
    """{mangled name: symbol index} of the FUNC symbols (nvdisasm -fun takes the index)."""
    with open(cubin, "rb") as f:
        data = f.read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = {}
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        for k in range(sh[5] // 24):
            name_off, info, _other, _shndx, _value, _size = struct.unpack_from("<IBBHQQ", data, sh[4] + k * 24)
            if info & 0xF == 2:  # STT_FUNC
                start = strtab[4] + name_off
                out[data[start:data.index(b"\0", start)].decode()] = k
    return out


def demangle(names):
    cxxfilt = shutil.which("cu++filt") or shutil.which("c++filt")
    if cxxfilt is None:
        raise ToolMissing("c++filt (binutils) or cu++filt is needed to demangle kernel names")
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def resource_usage(cubin):
    """{mangled name: dict(registers, shared, local, stack)} from cuobjdump -res-usage."""
    text = subprocess.run([find_tool("cuobjdump"), "-res-usage", cubin], capture_output=True, text=True,
                          check=True).stdout
    out = {}
    for name, body in re.findall(r"Function (\S+):\s*\n\s*(REG:.*)", text):
        fields = dict(re.findall(r"(\w+):(\d+)", body))
        out[name] = {"registers": int(fields["REG"]), "shared": int(fields["SHARED"]),
                     "local": int(fields["LOCAL"]), "stack": int(fields["STACK"])}
    return out


def occupancy(registers, shared_bytes, threads=THREADS):
    """Resident warps per SM (of 64) for blocks of `threads`, limited by registers and shared memory."""
    warps_per_block = threads // 32
    regs = max(REG_ALLOC_UNIT, -(-registers // REG_ALLOC_UNIT) * REG_ALLOC_UNIT)
    by_regs = REGS_PER_SM // (regs * threads)
    by_smem = SMEM_PER_SM // shared_bytes if shared_bytes else MAX_BLOCKS_PER_SM
    blocks = min(by_regs, by_smem, MAX_BLOCKS_PER_SM, MAX_WARPS_PER_SM // warps_per_block)
    return blocks * warps_per_block


# ================================================================= SASS text


@dataclass
class Instr:
    addr: int
    guard: str  # '' or 'P0', '!P1', 'UP0', ...
    op: str  # full opcode with modifiers, 'IMAD.WIDE.U32'
    operands: list
    text: str
    line: str = ""  # innermost source location from -g line info ('lrn_sweep.h:123')


@dataclass
class Function:
    name: str
    instrs: list
    labels: dict  # label -> instruction index
    by_addr: dict = field(default_factory=dict)


INSTR_RE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(?:(@!?U?P[T0-9])\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;")
LABEL_RE = re.compile(r"^([.$\w]+):\s*$")
LINE_RE = re.compile(r'//## File "([^"]+)", line (\d+)')


def split_operands(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def disassemble(cubin, indices):
    """nvdisasm of the functions with these symbol indices -> {mangled name: Function}."""
    cmd = [find_tool("nvdisasm"), "-c", "-g", "-fun", ",".join(str(i) for i in sorted(indices)), cubin]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_sass(text)


def parse_sass(text):
    functions, cur, line = {}, None, ""
    for raw in text.splitlines():
        if raw.startswith(".text."):
            name = raw[len(".text."):].rstrip(":")
            cur = functions[name] = Function(name, [], {})
            continue
        if cur is None:
            continue
        m = LINE_RE.search(raw)
        if m and "inlined at" not in raw:
            line = f"{os.path.basename(m.group(1))}:{m.group(2)}"
            continue
        m = INSTR_RE.match(raw)
        if m:
            ins = Instr(int(m.group(1), 16), (m.group(2) or "").lstrip("@"), m.group(3), split_operands(m.group(4)),
                        raw.strip(), line)
            cur.by_addr[ins.addr] = len(cur.instrs)
            cur.instrs.append(ins)
            continue
        m = LABEL_RE.match(raw.strip())
        if m:
            cur.labels[m.group(1)] = len(cur.instrs)
    return functions


# ================================================================= the interpreter

M32 = 0xFFFFFFFF


def s32(v):
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def f32_of(bits):
    return struct.unpack("<f", struct.pack("<I", bits & M32))[0]


def bits_of(x):
    try:
        return struct.unpack("<I", struct.pack("<f", x))[0]
    except OverflowError:
        return 0x7F800000 if x > 0 else 0xFF800000


def bf16_bits(x):
    b = bits_of(x)
    if (b & 0x7FFFFFFF) > 0x7F800000:
        return 0x7FC0
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def half_bits(x):
    try:
        return struct.unpack("<H", struct.pack("<e", x))[0]
    except OverflowError:
        return 0x7C00 if x > 0 else 0xFC00


def half_of(bits):
    return struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0]


def parse_float_imm(text):
    t = text.strip()
    if t.startswith("0x") or t.startswith("-0x"):
        return f32_of(int(t, 16))
    special = {"+INF": math.inf, "INF": math.inf, "-INF": -math.inf, "+QNAN": math.nan, "QNAN": math.nan,
               "-QNAN": math.nan, "+SNAN": math.nan, "-SNAN": math.nan}
    return special[t] if t in special else float(t)


class Unsupported(RuntimeError):
    pass


class Thread:
    """One GPU thread running a kernel's SASS with concrete values.

    Global loads return `load_word` (a 32-bit pattern, e.g. 1.0f: every LRN sum is then
    positive and finite, no NaN, the common path); stores go nowhere; local and shared
    memory are dictionaries. The trace records each executed instruction's index."""

    def __init__(self, fn, params, tid, ctaid, load_word, max_steps=2_000_000):
        self.fn = fn
        self.r = [0] * 256
        self.ur = [0] * 64
        self.p = [False] * 8
        self.up = [False] * 8
        self.p[7] = self.up[7] = True
        self.const = bytearray(0x210) + bytearray(params) + bytearray(64)
        struct.pack_into("<III", self.const, 0, THREADS, 1, 1)  # blockDim
        struct.pack_into("<I", self.const, 0x28, 0xFFF000)  # stack pointer (local memory)
        self.sreg = {"SR_TID.X": tid, "SR_TID.Y": 0, "SR_TID.Z": 0, "SR_CTAID.X": ctaid, "SR_CTAID.Y": 0,
                     "SR_CTAID.Z": 0, "SR_LANEID": tid % 32, "SRZ": 0}
        self.load_word = load_word
        self.local = {}
        self.shared = {}
        self.calls = []
        self.stored = 0  # global bytes stored (checked against the item's outputs)
        self.trace = []
        self.max_steps = max_steps

    # ---- operands
    def reg_index(self, tok):
        file = self.ur if tok.startswith("UR") else self.r
        name = tok.split(".")[0]
        if name in ("RZ", "URZ"):
            return file, None
        return file, int(name[2:] if name.startswith("UR") else name[1:])

    def read_reg(self, tok):
        file, idx = self.reg_index(tok)
        return 0 if idx is None else file[idx]

    def write_reg(self, tok, value):
        file, idx = self.reg_index(tok)
        if idx is not None:
            file[idx] = value & M32

    def read_pair(self, tok):
        file, idx = self.reg_index(tok)
        return 0 if idx is None else file[idx] | (file[idx + 1] << 32)

    def write_pair(self, tok, value):
        file, idx = self.reg_index(tok)
        if idx is not None:
            file[idx] = value & M32
            file[idx + 1] = (value >> 32) & M32

    def pred(self, tok):
        neg = tok.startswith("!")
        name = tok.lstrip("!")
        if name in ("PT", "UPT"):
            v = True
        elif name.startswith("UP"):
            v = self.up[int(name[2:])]
        else:
            v = self.p[int(name[1:])]
        return v != neg

    def set_pred(self, tok, value):
        if tok in ("PT", "UPT"):
            return
        if tok.startswith("UP"):
            self.up[int(tok[2:])] = bool(value)
        else:
            self.p[int(tok[1:])] = bool(value)

    def const_word(self, tok, width=4):
        m = re.match(r"c\[0x([0-9a-f]+)\]\[(?:(U?R[0-9Z]+)\s*\+?\s*)?(?:0x([0-9a-f]+))?\]", tok.lstrip("-|~"))
        if m is None:
            raise Unsupported(tok)
        off = int(m.group(3) or "0", 16)
        if m.group(2):
            off += self.read_reg(m.group(2))
        return int.from_bytes(self.const[off:off + width], "little")

    def ival(self, tok):
        """Integer source operand (register, constant or immediate), 32 bits."""
        neg = tok.startswith("-")
        inv = tok.startswith("~")
        t = tok.lstrip("-~")
        if t.startswith("c["):
            v = self.const_word(t)
        elif t[0] == "R" or t.startswith("UR"):
            v = self.read_reg(t)
        elif t.startswith("0x"):
            v = int(t, 16)
        elif re.fullmatch(r"\d+", t):
            v = int(t)
        else:
            raise Unsupported(tok)
        if inv:
            v = ~v
        if neg:
            v = -v
        return v & M32

    def fval(self, tok):
        """Float source operand: -x, |x|, registers, constants, immediates."""
        neg = tok.startswith("-")
        t = tok[1:] if neg else tok
        absval = t.startswith("|")
        t = t.replace("|", "")
        if t.startswith("c["):
            v = f32_of(self.const_word(t))
        elif t[0] == "R" or t.startswith("UR"):
            name = t.split(".")[0]
            v = f32_of(self.read_reg(name))
            if ".H" in t:  # half lane of a register (HADD2.F32 conversions)
                hi = ".H1" in t
                v = half_of(self.read_reg(name) >> (16 if hi else 0))
        else:
            v = parse_float_imm(t)
        if absval:
            v = abs(v)
        return -v if neg else v

    # ---- execution
    def run(self):
        pc = 0
        steps = 0
        instrs = self.fn.instrs
        while True:
            steps += 1
            if steps > self.max_steps:
                raise RuntimeError(f"{self.fn.name}: no EXIT after {self.max_steps} instructions")
            ins = instrs[pc]
            self.trace.append(pc)
            if ins.guard and not self.pred(ins.guard):
                pc += 1
                continue
            nxt = self.execute(ins, pc)
            if nxt == "exit":
                return self.trace
            pc = pc + 1 if nxt is None else nxt

    def target(self, tok):
        m = re.search(r"\(([^)]+)\)", tok)
        name = m.group(1) if m else tok
        if name not in self.fn.labels:
            raise Unsupported(f"branch target {tok}")
        return self.fn.labels[name]

    def execute(self, ins, pc):
        op = ins.op
        base = op.split(".")[0]
        a = ins.operands
        uniform = base.startswith("U") and base not in ("UMOV",) and base[1:] in SEMANTICS
        name = base[1:] if uniform else base
        if base == "UMOV":
            name = "MOV"
        handler = SEMANTICS.get(name)
        if handler is None:
            raise Unsupported(f"{op} in {ins.text}")
        return handler(self, ins, op, a, pc)


def _carry_preds(ops):
    """Split 'd, P0, P1, a, b, c, Pin0, Pin1' into (dest, carry-out preds, sources, carry-in preds)."""
    dest = ops[0]
    i = 1
    outs = []
    while i < len(ops) and re.fullmatch(r"U?P[T0-6]", ops[i]) and i < len(ops) - 1:
        outs.append(ops[i])
        i += 1
    srcs = []
    ins = []
    for tok in ops[i:]:
        if re.fullmatch(r"!?U?P[T0-6]", tok):
            ins.append(tok)
        else:
            srcs.append(tok)
    return dest, outs, srcs, ins


def _imad(t, ins, op, a, pc):
    dest, outs, srcs, cins = _carry_preds(a)
    carry = sum(t.pred(p) for p in cins) if ".X" in op else 0
    if ".WIDE" in op:
        x, y = t.ival(srcs[0]), t.ival(srcs[1])
        if ".U32" not in op:
            x, y = s32(x), s32(y)
        c_tok = srcs[2]
        if c_tok.startswith("c["):
            c = t.const_word(c_tok, 8)
        elif c_tok[0] in "RU":
            c = t.read_pair(c_tok)
        else:
            c = t.ival(c_tok)
        res = x * y + c + carry
        t.write_pair(dest, res)
        return None
    x, y = t.ival(srcs[0]), t.ival(srcs[1])
    if ".HI" in op:
        # The addend is the 64-bit pair {c+1:c}: the division sequences put q in c+1 and 0
        # in c to get q + umulhi(a, b) in one instruction.
        prod = (x * y) if ".U32" in op else (s32(x) * s32(y))
        c_tok = srcs[2]
        c64 = t.read_pair(c_tok) if c_tok[0] in "RU" else t.ival(c_tok)
        res = ((prod + c64) >> 32) + carry
        t.write_reg(dest, res)
        return None
    res = x * y + t.ival(srcs[2]) + carry
    if outs:
        t.set_pred(outs[0], res >> 32)
    t.write_reg(dest, res)
    return None


def _iadd3(t, ins, op, a, pc):
    dest, outs, srcs, cins = _carry_preds(a)
    vals = [t.ival(s) for s in srcs]
    res = sum(vals)
    if ".X" in op:
        res += sum(t.pred(p) for p in cins)
    # carry-outs: P of the 3-input add (as two bits: low carry in the first pred)
    if outs:
        carry = res >> 32
        t.set_pred(outs[0], carry & 1)
        if len(outs) > 1:
            t.set_pred(outs[1], carry >> 1)
    t.write_reg(dest, res)
    return None


def _viadd(t, ins, op, a, pc):
    t.write_reg(a[0], t.ival(a[1]) + t.ival(a[2]))
    return None


def _mov(t, ins, op, a, pc):
    t.write_reg(a[0], t.ival(a[1]))
    return None


def _lop3(t, ins, op, a, pc):
    if re.fullmatch(r"U?P[T0-6]", a[0]):  # LOP3.LUT P0, RZ, a, b, c, lut, Pin
        pdest, dest, srcs = a[0], a[1], a[2:]
    else:
        pdest, dest, srcs = None, a[0], a[1:]
    x, y, z = (t.ival(s) for s in srcs[:3])
    lut = int(srcs[3], 16)
    res = 0
    for bit in range(8):
        if lut >> bit & 1:
            mx = x if bit & 4 else ~x
            my = y if bit & 2 else ~y
            mz = z if bit & 1 else ~z
            res |= mx & my & mz
    res &= M32
    t.write_reg(dest, res)
    if pdest is not None:
        pin = t.pred(srcs[4]) if len(srcs) > 4 else False
        t.set_pred(pdest, res != 0 or pin)
    return None


def _plop3(t, ins, op, a, pc):
    d1, d2 = a[0], a[1]
    x, y, z = (t.pred(s) for s in a[2:5])
    luts = [int(s, 16) for s in a[5:7]]

    def f(lut):
        return bool(lut >> ((x << 2) | (y << 1) | z) & 1)

    t.set_pred(d1, f(luts[0]))
    t.set_pred(d2, f(luts[1]) if len(luts) > 1 else False)
    return None


def _vote(t, ins, op, a, pc):
    """VOTE(U).ALL/ANY dst, src: one emulated thread stands for its warp (SASS.md), so
    all = any = the thread's own predicate. Only the predicate form is supported."""
    if len(a) != 2 or op.split(".")[1] not in ("ALL", "ANY"):
        raise Unsupported(f"{op} in {ins.text}")
    t.set_pred(a[0], t.pred(a[1]))
    return None


def _shfl(t, ins, op, a, pc):
    """SHFL.UP/DOWN/IDX/BFLY [Pdst,] dst, src, lane, clamp: one emulated thread stands for
    its warp (SASS.md), so the thread reads its own value (the neighbours' values are the
    same kind of number: loads return 1.0) and the lane is in range."""
    if re.fullmatch(r"P[T0-6]", a[0]):
        t.set_pred(a[0], True)
        a = a[1:]
    t.write_reg(a[0], t.ival(a[1]))
    return None


def _shf(t, ins, op, a, pc):
    lo, sh, hi = t.ival(a[1]), t.ival(a[2]), t.ival(a[3])
    wide = ".U64" in op or ".S64" in op
    sh = min(sh, 64 if wide else 32)  # shift amounts clamp
    if ".L" in op:
        val = ((hi << 32) | lo) << sh
        res = val >> 32 if ".HI" in op else val
    else:
        val = (hi << 32) | lo
        if ".S" in op:
            val = val - (1 << 64) if hi >> 31 else val
        val >>= sh
        res = val >> 32 if ".HI" in op else val
    t.write_reg(a[0], res)
    return None


def _lea(t, ins, op, a, pc):
    dest, outs, srcs, cins = _carry_preds(a)
    x, y = t.ival(srcs[0]), t.ival(srcs[1])
    if ".HI" in op:
        sh = t.ival(srcs[-1])
        if ".SX32" in op:
            hi = M32 if x >> 31 else 0
        else:
            hi = t.ival(srcs[2]) if len(srcs) > 3 else 0
        val = (((hi << 32) | x) << sh) >> 32
        res = (val & M32) + y
    else:
        sh = t.ival(srcs[2])
        res = ((x << sh) & M32) + y
    if ".X" in op:
        res += sum(t.pred(p) for p in cins)
    if outs:
        t.set_pred(outs[0], res >> 32)
    t.write_reg(dest, res)
    return None


def _cmp(kind, x, y):
    return {"EQ": x == y, "NE": x != y, "LT": x < y, "LE": x <= y, "GT": x > y, "GE": x >= y}[kind]


def _combine(bop, x, y):
    return {"AND": x and y, "OR": x or y, "XOR": x != y}[bop]


def _isetp(t, ins, op, a, pc):
    mods = op.split(".")[1:]
    kind = mods[0]
    unsigned = "U32" in mods
    bop = next(m for m in mods if m in ("AND", "OR", "XOR"))
    x, y = t.ival(a[2]), t.ival(a[3])
    if not unsigned:
        x, y = s32(x), s32(y)
    if "EX" in mods:  # high words, with the low words' result in the last predicate
        low = t.pred(a[5])
        if kind in ("EQ",):
            c = x == y and low
        elif kind == "NE":
            c = x != y or low
        else:
            strict = _cmp(kind.replace("E", "T") if kind in ("GE", "LE") else kind, x, y)
            c = strict or (x == y and low)
    else:
        c = _cmp(kind, x, y)
    pin = t.pred(a[4])
    t.set_pred(a[0], _combine(bop, c, pin))
    t.set_pred(a[1], _combine(bop, not c, pin))
    return None


def _fsetp(t, ins, op, a, pc):
    mods = [m for m in op.split(".")[1:] if m != "FTZ"]
    kind = mods[0]
    bop = next(m for m in mods if m in ("AND", "OR", "XOR"))
    x, y = t.fval(a[2]), t.fval(a[3])
    unordered = math.isnan(x) or math.isnan(y)
    if kind == "NAN":
        c = unordered
    elif kind == "NUM":
        c = not unordered
    elif kind.endswith("U") and kind != "U":
        c = unordered or _cmp(kind[:-1], x, y)
    else:
        c = (not unordered) and _cmp(kind, x, y)
    pin = t.pred(a[4])
    t.set_pred(a[0], _combine(bop, c, pin))
    t.set_pred(a[1], _combine(bop, not c, pin))
    return None


def _sel(t, ins, op, a, pc):
    t.write_reg(a[0], t.ival(a[1]) if t.pred(a[3]) else t.ival(a[2]))
    return None


def _fsel(t, ins, op, a, pc):
    t.write_reg(a[0], bits_of(t.fval(a[1]) if t.pred(a[3]) else t.fval(a[2])))
    return None


def _iabs(t, ins, op, a, pc):
    t.write_reg(a[0], abs(s32(t.ival(a[1]))))
    return None


def _imnmx(t, ins, op, a, pc):
    x, y = t.ival(a[1]), t.ival(a[2])
    if ".U32" not in op:
        x, y = s32(x), s32(y)
    t.write_reg(a[0], min(x, y) if t.pred(a[3]) else max(x, y))
    return None


def _viaddmnmx(t, ins, op, a, pc):
    x = t.ival(a[1]) + t.ival(a[2])
    y = t.ival(a[3])
    if ".U32" not in op:
        x, y = s32(x), s32(y)
    t.write_reg(a[0], min(x, y) if t.pred(a[4]) else max(x, y))
    return None


def _i2f(t, ins, op, a, pc):
    if ".U64" in op or ".S64" in op:
        v = t.read_pair(a[1])
        if ".S64" in op and v >> 63:
            v -= 1 << 64
    else:
        v = t.ival(a[1])
        if ".U32" not in op:
            v = s32(v)
    t.write_reg(a[0], bits_of(float(v)))
    return None


def _f2i(t, ins, op, a, pc):
    x = t.fval(a[1])
    if math.isnan(x):
        v = 0
    elif ".TRUNC" in op:
        v = math.trunc(x) if math.isfinite(x) else (1 << 62 if x > 0 else -(1 << 62))
    else:
        v = round(x) if math.isfinite(x) else (1 << 62 if x > 0 else -(1 << 62))
    if ".U64" in op or ".S64" in op:
        t.write_pair(a[0], v)
    else:
        lo, hi = (0, M32) if ".U32" in op else (-(1 << 31), (1 << 31) - 1)
        t.write_reg(a[0], min(max(v, lo), hi))
    return None


def _mufu(t, ins, op, a, pc):
    x = t.fval(a[1])
    kind = op.split(".")[1]
    try:
        if kind == "RCP":
            v = 1.0 / x if x != 0 else math.copysign(math.inf, x)
        elif kind == "RSQ":
            v = (1.0 / math.sqrt(x)) if x > 0 else (math.inf if x == 0 else math.nan)
        elif kind == "SQRT":
            v = math.sqrt(x) if x >= 0 else math.nan
        elif kind == "LG2":
            v = math.log2(x) if x > 0 else (-math.inf if x == 0 else math.nan)
        elif kind == "EX2":
            v = 2.0 ** x if x < 1024 else math.inf
        elif kind == "SIN":
            v = math.sin(x)
        elif kind == "COS":
            v = math.cos(x)
        else:
            raise Unsupported(op)
    except (OverflowError, ValueError):
        v = math.nan
    t.write_reg(a[0], bits_of(v))
    return None


def _fbin(fn):
    def handler(t, ins, op, a, pc):
        srcs = [t.fval(s) for s in a[1:]]
        try:
            v = fn(*srcs)
        except (OverflowError, ValueError, ZeroDivisionError):
            v = math.nan
        t.write_reg(a[0], bits_of(v))
        return None

    return handler


def _fmnmx(t, ins, op, a, pc):
    x, y = t.fval(a[1]), t.fval(a[2])
    if math.isnan(x):
        v = y
    elif math.isnan(y):
        v = x
    else:
        v = min(x, y) if t.pred(a[3]) else max(x, y)
    t.write_reg(a[0], bits_of(v))
    return None


def _frnd(t, ins, op, a, pc):
    x = t.fval(a[1])
    if math.isfinite(x):
        x = float(math.floor(x) if ".FLOOR" in op else math.ceil(x) if ".CEIL" in op else
                  math.trunc(x) if ".TRUNC" in op else round(x))
    t.write_reg(a[0], bits_of(x))
    return None


def _fchk(t, ins, op, a, pc):
    # FCHK flags division operands the fast reciprocal path cannot handle (denormals,
    # huge exponents). The kernels divide normal, modest numbers: the fast path.
    t.set_pred(a[0], False)
    return None


def _f2f(t, ins, op, a, pc):
    """F2F.{BF16,F16}.F32 (round an fp32 to the low 16 bits) and F2F.F32.{BF16,F16}."""
    parts = op.split(".")
    if parts[1:3] in (["BF16", "F32"], ["F16", "F32"]):
        conv = bf16_bits if parts[1] == "BF16" else half_bits
        t.write_reg(a[0], conv(t.fval(a[1])))
    elif parts[1:3] == ["F32", "F16"]:
        t.write_reg(a[0], bits_of(half_of(t.ival(a[1]))))
    elif parts[1:3] == ["F32", "BF16"]:
        t.write_reg(a[0], (t.ival(a[1]) & 0xFFFF) << 16)
    else:
        raise Unsupported(f"{op} in {ins.text}")
    return None


def _f2fp(t, ins, op, a, pc):
    x, y = t.fval(a[1]), t.fval(a[2])
    conv = bf16_bits if ".BF16" in op else half_bits
    t.write_reg(a[0], (conv(x) << 16) | conv(y))
    return None


def _hadd2(t, ins, op, a, pc):
    if ".F32" in op:  # HADD2.F32 d, -RZ, R.H0_H0: half -> float
        t.write_reg(a[0], bits_of(t.fval(a[1]) + t.fval(a[2])))
        return None
    raise Unsupported(op)


def _hfma2(t, ins, op, a, pc):
    # HFMA2.MMA d, -RZ, RZ, hi, lo: materialises a packed constant; general form per lane.
    if len(a) == 5 and a[1].lstrip("-") == "RZ":
        t.write_reg(a[0], (half_bits(parse_float_imm(a[3])) << 16) | half_bits(parse_float_imm(a[4])))
        return None
    raise Unsupported(f"{op} {a}")


def _prmt(t, ins, op, a, pc):
    x, sel, y = t.ival(a[1]), t.ival(a[2]), t.ival(a[3])
    src = x | (y << 32)
    res = 0
    for k in range(4):
        nib = (sel >> (4 * k)) & 0xF
        byte = (src >> (8 * (nib & 7))) & 0xFF
        if nib & 8:
            byte = 0xFF if byte & 0x80 else 0
        res |= byte << (8 * k)
    t.write_reg(a[0], res)
    return None


def _p2r(t, ins, op, a, pc):
    base = t.ival(a[2])
    mask = t.ival(a[3])
    bits = sum((1 << k) for k in range(7) if t.p[k])
    t.write_reg(a[0], (base & ~mask) | (bits & mask))
    return None


def _r2p(t, ins, op, a, pc):
    v, mask = t.ival(a[1]), t.ival(a[2])
    for k in range(7):
        if mask >> k & 1:
            t.p[k] = bool(v >> k & 1)
    return None


def _s2r(t, ins, op, a, pc):
    t.write_reg(a[0], t.sreg[a[1]])
    return None


def _r2ur(t, ins, op, a, pc):
    t.write_reg(a[0], t.read_reg(a[1]))
    return None


def _cs2r(t, ins, op, a, pc):
    if ".32" in op:
        t.write_reg(a[0], t.sreg.get(a[1], 0))
    else:
        t.write_pair(a[0], t.sreg.get(a[1], 0))
    return None


def _ldc(t, ins, op, a, pc):
    if ".64" in op:
        t.write_pair(a[0], t.const_word(a[1], 8))
    else:
        t.write_reg(a[0], t.const_word(a[1]))
    return None


def access_width(op):
    """Bytes per thread of a load/store opcode."""
    for tag, n in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if tag in op:
            return n
    return 4


def _ldg(t, ins, op, a, pc):
    width = access_width(op)
    words = max(1, width // 4)
    pattern = t.load_word(width)
    _file, idx = t.reg_index(a[0])
    if idx is not None:
        for k in range(words):
            t.r[idx + k] = pattern & M32 if width >= 4 else pattern & ((1 << (8 * width)) - 1)
    return None


def _mem_addr(t, tok):
    m = re.match(r"\[(\w+)?(?:\.64)?\s*\+?\s*(?:(-?0x[0-9a-f]+))?\]", tok.split("]", 1)[-1] if tok.startswith("desc") else tok)
    if not m:
        raise Unsupported(tok)
    base = t.read_reg(m.group(1)) if m.group(1) else 0
    return base + (int(m.group(2), 16) if m.group(2) else 0)


def _ldlocal(space):
    def handler(t, ins, op, a, pc):
        mem = getattr(t, space)
        addr = _mem_addr(t, a[1])
        words = max(1, access_width(op) // 4)
        _file, idx = t.reg_index(a[0])
        for k in range(words):
            if idx is not None:
                t.r[idx + k] = mem.get(addr + 4 * k, 0)
        return None

    return handler


def _stlocal(space):
    def handler(t, ins, op, a, pc):
        mem = getattr(t, space)
        addr = _mem_addr(t, a[0])
        words = max(1, access_width(op) // 4)
        _file, idx = t.reg_index(a[1])
        for k in range(words):
            mem[addr + 4 * k] = 0 if idx is None else t.r[idx + k]
        return None

    return handler


def _nop(t, ins, op, a, pc):
    return None


def _stg(t, ins, op, a, pc):
    t.stored += access_width(op)
    return None


def _bra(t, ins, op, a, pc):
    if len(a) > 1 and not t.pred(a[0]):  # BRA P1, target: also conditional on P1
        return None
    return t.target(a[-1])


def _exit(t, ins, op, a, pc):
    return "exit"


def _call(t, ins, op, a, pc):
    t.calls.append(pc + 1)
    return t.target(a[-1])


def _ret(t, ins, op, a, pc):
    return t.calls.pop()


SEMANTICS = {
    "VOTEU": _vote, "VOTE": _vote, "F2F": _f2f,
    "IMAD": _imad, "IADD3": _iadd3, "VIADD": _viadd, "MOV": _mov, "LOP3": _lop3, "PLOP3": _plop3,
    "SHF": _shf, "SHFL": _shfl, "LEA": _lea, "ISETP": _isetp, "FSETP": _fsetp, "SEL": _sel, "FSEL": _fsel, "IABS": _iabs,
    "IMNMX": _imnmx, "VIMNMX": _imnmx, "VIADDMNMX": _viaddmnmx, "I2F": _i2f, "I2FP": _i2f, "F2I": _f2i,
    "MUFU": _mufu, "FADD": _fbin(lambda x, y: x + y), "FMUL": _fbin(lambda x, y: x * y),
    "FFMA": _fbin(lambda x, y, z: x * y + z), "FMNMX": _fmnmx, "FRND": _frnd, "FCHK": _fchk,
    "F2FP": _f2fp, "HADD2": _hadd2, "HFMA2": _hfma2, "PRMT": _prmt, "P2R": _p2r, "R2P": _r2p,
    "S2R": _s2r, "S2UR": _s2r, "R2UR": _r2ur, "CS2R": _cs2r, "LDC": _ldc, "LDC.64": _ldc,
    "LDG": _ldg, "STG": _stg, "LDL": _ldlocal("local"), "STL": _stlocal("local"),
    "LDS": _ldlocal("shared"), "STS": _stlocal("shared"),
    "NOP": _nop, "BSSY": _nop, "BSYNC": _nop, "WARPSYNC": _nop, "BAR": _nop, "YIELD": _nop,
    "DEPBAR": _nop, "MEMBAR": _nop, "BRA": _bra, "EXIT": _exit, "CALL": _call, "RET": _ret,
}
# Uniform-datapath twins (ULDC, UIADD3, ULOP3, ...) share the semantics; ULDC is LDC.
SEMANTICS["LDC"] = _ldc
SEMANTICS["SEL"] = _sel


# ================================================================= trace analysis


def reads_of(ins):
    """General registers an instruction reads (for 'first use' of a loaded value)."""
    ops = ins.operands
    base = ins.op.split(".")[0]
    srcs = ops if base in ("STG", "STS", "STL", "ST") else ops[1:]
    regs = set()
    for tok in srcs:
        for m in re.finditer(r"(?<![U\w])R(\d+)(\.64)?", tok):
            n = int(m.group(1))
            regs.add(n)
            if m.group(2):
                regs.add(n + 1)
    if base in ("STG", "STS", "STL") and ops:
        m = re.fullmatch(r"R(\d+)", ops[-1])
        if m:
            regs.update(range(int(m.group(1)), int(m.group(1)) + max(1, access_width(ins.op) // 4)))
    return regs


def load_groups(fn, segment):
    """Global-load bytes in flight per thread in `segment` (a list of instruction indices):
    loads issued before the first use of any of them, summed, for each such group."""
    groups, pending, pending_bytes = [], set(), 0
    for idx in segment:
        ins = fn.instrs[idx]
        if pending and reads_of(ins) & pending:
            groups.append(pending_bytes)
            pending, pending_bytes = set(), 0
        if ins.op.startswith("LDG"):
            m = re.fullmatch(r"R(\d+)", ins.operands[0])
            if m:
                start = int(m.group(1))
                pending.update(range(start, start + max(1, access_width(ins.op) // 4)))
            pending_bytes += access_width(ins.op)
    if pending:
        groups.append(pending_bytes)
    return groups


def hot_loop(fn, trace):
    """(segments, taken count) of the most-taken backward branch in the trace: segments are
    the traces of the iterations between two takes."""
    takes = {}
    for k in range(len(trace) - 1):
        src, dst = trace[k], trace[k + 1]
        if dst < src and fn.instrs[src].op.startswith("BRA"):
            takes.setdefault(src, []).append(k)
    if not takes:
        return [], 0
    edge = max(takes, key=lambda s: (len(takes[s]), s))
    positions = takes[edge]
    segments = [trace[positions[i] + 1:positions[i + 1] + 1] for i in range(len(positions) - 1)]
    return segments, len(positions)


# ================================================================= the AlexNet cases


class Packer:
    """Kernel parameters, laid out as the C++ ABI lays out the argument struct."""

    def __init__(self):
        self.buf = bytearray()

    def _put(self, fmt, value, align):
        while len(self.buf) % align:
            self.buf.append(0)
        self.buf += struct.pack("<" + fmt, value)

    def ptr(self, v):
        self._put("Q", v, 8)

    def i64(self, v):
        self._put("q", v, 8)

    def i32(self, v):
        self._put("i", v, 4)

    def f32(self, v):
        self._put("f", v, 4)

    def u8(self, v):
        self._put("B", v, 1)

    def struct_(self, fill, align):
        while len(self.buf) % align:
            self.buf.append(0)
        fill(self)
        while len(self.buf) % align:
            self.buf.append(0)


def pointers(n):
    return [POINTER_BASE + k * (1 << 32) for k in range(n)]


@dataclass
class Case:
    op: str  # 'lrn', 'maxpool', 'stage'
    direction: str  # 'fwd', 'bwd'
    dtype: str
    layout: str
    shape: tuple

    @property
    def name(self):
        return f"{self.op}_{self.direction}"

    @property
    def esize(self):
        return DTYPES[self.dtype][1]

    @property
    def cl(self):
        return self.layout == "nhwc"

    @property
    def pooled(self):
        n, c, h, w = self.shape
        return (n, c, (h - POOL_K) // POOL_S + 1, (w - POOL_K) // POOL_S + 1)


def numel(shape):
    return math.prod(shape)


def lrn_vector(case):
    """lrn_sweep.h max_vector / vector_width: 16 bytes channels-last, at most 4 channels-first,
    and only when the contiguous dim (channels or pixels) is a multiple of it."""
    n, c, h, w = case.shape
    vec = 16 // case.esize if case.cl else min(16 // case.esize, 4)
    return vec if (c if case.cl else h * w) % vec == 0 else 1


def stage_vector(case):
    """relu_lrn_max_pool2d_sweep.h vector_width: 1 channels-first, 16 bytes channels-last."""
    return 16 // case.esize if case.cl else 1


def kernel_pattern(case):
    """Demangled-name regex of the instantiation the launcher picks for this case."""
    t = re.escape(DTYPES[case.dtype][0])
    cl = "true" if case.cl else "false"
    if case.op == "lrn":
        # lrn_cuda.cu: lrn_{forward,backward}_sweep_kernel<SPAN, V, CL, scalar_t>
        which = "forward" if case.direction == "fwd" else "backward"
        return rf"lrn::.*lrn_{which}_sweep_kernel<{SPAN}, {lrn_vector(case)}, {cl}, {t}, float>\("
    if case.op == "maxpool":
        # max_pool2d_cuda.cu: forward_3s2_kernel<scalar_t, argmax_t, CL> and
        # backward_3s2_kernel<scalar_t, argmax_t, CL, kLanes>, the 3/2 kernels (is_3s2,
        # fits_int32); uint8 argmax (argmax_dtype: no return_indices, 3x3 <= 256).
        if case.direction == "fwd":
            return rf"max_pool2d::.*::forward_3s2_kernel<{t}, unsigned char, {cl}>\("
        return rf"max_pool2d::.*::backward_3s2_kernel<{t}, unsigned char, {cl}, {maxpool_lanes(case)}>\("
    which = "forward" if case.direction == "fwd" else "backward"
    if case.direction == "bwd" and case.cl:
        # relu_lrn_max_pool2d_cuda.cu: backward_lanes_kernel<SPAN, V, scalar_t>, warps
        # sharing LRN halos (relu_lrn_max_pool2d_sweep.h backward_lanes)
        return rf"relu_lrn_max_pool2d::.*::backward_lanes_kernel<{SPAN}, {stage_vector(case)}, {t}, float>\("
    # relu_lrn_max_pool2d_cuda.cu: {forward,backward}_sweep_kernel<SPAN, V, CL, scalar_t>
    return rf"relu_lrn_max_pool2d::.*::{which}_sweep_kernel<{SPAN}, {stage_vector(case)}, {cl}, {t}, float>\("


def cubin_stem(case):
    return {"lrn": "lrn_cuda", "maxpool": "max_pool2d_cuda", "stage": "relu_lrn_max_pool2d_cuda"}[case.op]


# ---- vector classes (lrn_sweep.h VectorClasses / make_vector_classes / vector_item)

CLASS_CHUNK = 32  # kClassChunk: pixels per chunk, interior items first


def vector_classes(pixels, vecs, gv, lo):
    """make_vector_classes: interior vectors [lo, gv - lo) of each group of gv."""
    lo_c = min(lo, gv)
    nig = max(gv - 2 * lo, 0)
    ni = vecs // gv * nig
    return dict(pixels=pixels, vecs=vecs, gv=gv, lo=lo_c, nig=nig, ni=ni,
                dividers=[CLASS_CHUNK * vecs, ni, vecs - ni, nig, gv - nig])


def pack_vector_classes(q, c):
    def fill(r):
        r.i64(c["pixels"])
        for k in ("lo", "gv", "nig", "ni"):
            r.i32(c[k])
        for d in c["dividers"]:
            for v in int_divider(d):
                r.i32(v)

    q.struct_(fill, 8)


def class_thread(c, pixel, vec):
    """vector_item's inverse: the item index of (pixel, vec)."""
    chunk, p = divmod(pixel, CLASS_CHUNK)
    pixels = min(CLASS_CHUNK, c["pixels"] - chunk * CLASS_CHUNK)
    g, u = divmod(vec, c["gv"])
    ne, neg = c["vecs"] - c["ni"], c["gv"] - c["nig"]
    if c["lo"] <= u < c["lo"] + c["nig"]:
        r = p * c["ni"] + g * c["nig"] + u - c["lo"]
    else:
        r = pixels * c["ni"] + p * ne + g * neg + (u if u < c["lo"] else u - c["nig"])
    return chunk * CLASS_CHUNK * c["vecs"] + r


# ---- LRN (lrn.h View, lrn_sweep.h Items / make_items)


def lrn_view(case):
    n, c, h, w = case.shape
    if case.cl:  # make_view: View{1, c, n * p, 0, 1, c, true}
        return (1, c, n * h * w, 0, 1, c, True)
    return (n, c, h * w, c * h * w, h * w, 1, False)


def lrn_items(case):
    view = lrn_view(case)
    vec = lrn_vector(case)
    outer, c, pixels = view[:3]
    classes = vector_classes(0, 1, 1, 0)
    if case.cl:
        cols, runs, run = c // vec, 1, c
        count = pixels * cols
        classes = vector_classes(pixels, cols, cols, -(-SPAN // vec))  # edge: the first / last HX
    else:
        cols = pixels // vec
        run = min(c, CHANNEL_RUN)
        runs = -(-c // run)
        count = outer * runs * cols
    return dict(count=count, cols=cols, runs=runs, run=run, vec=vec, classes=classes)


def lrn_params(case):
    it = lrn_items(case)
    view = lrn_view(case)
    p = Packer()
    for ptr in pointers(2 if case.direction == "fwd" else 3):
        p.ptr(ptr)

    def fill_view(q):
        for v in view[:6]:
            q.i64(v)
        q.u8(int(view[6]))

    def fill_items(q):
        q.i64(it["count"])
        q.i64(it["cols"])
        for k in ("runs", "run", "vec"):
            q.i32(it[k])
        pack_vector_classes(q, it["classes"])

    p.struct_(fill_view, 8)
    p.struct_(fill_items, 8)
    for v in (LRN_SCALE, LRN_BETA, LRN_K):
        p.f32(v)
    return bytes(p.buf)


def lrn_samples(case):
    """(item, elements) pairs: an interior column of image N/2 for every channel run
    (channels-first: forward_item sweeps channels [run*32, min(run*32+32, C)) of V pixels,
    lrn_sweep.h forward_channels_first), or every channel vector of one pixel
    (channels-last: V channels per item, forward_channels_last)."""
    it = lrn_items(case)
    n = case.shape[0]
    if case.cl:  # backward: items by vector class (vector_item)
        pixel = (n // 2) * case.shape[2] * case.shape[3] + case.shape[3] * (case.shape[2] // 2) + case.shape[3] // 2
        if case.direction == "bwd":
            return [(class_thread(it["classes"], pixel, v), it["vec"]) for v in range(it["cols"])]
        return [(pixel * it["cols"] + v, it["vec"]) for v in range(it["cols"])]
    c = case.shape[1]
    out = []
    for run in range(it["runs"]):
        item = ((n // 2) * it["runs"] + run) * it["cols"] + it["cols"] // 2
        out.append((item, (min(c, (run + 1) * it["run"]) - run * it["run"]) * it["vec"]))
    return out


# ---- max-pool (max_pool2d_3s2.h Forward3s2 / Backward3s2; forward_3s2_item, backward_3s2_item)

MAXPOOL_ROWS = 4  # kRows3s2: forward outputs per thread (at most), down one column
MAXPOOL_BLOCKS = {1: 7, 2: 4}  # kBlocks3s2<kLanes>: backward 2x2 input blocks per thread, along W


def maxpool_chunks(case):
    """make_forward_3s2: (chunks, rows, longer): chunk k holds rows + (k < longer) outputs."""
    ho = case.pooled[2]
    chunks = -(-ho // MAXPOOL_ROWS)
    return chunks, ho // chunks, ho % chunks


def maxpool_plane_chunk(case):
    """plane_chunk_3s2: channels-first items take planes in chunks of gcd(N C, 32)."""
    return math.gcd(case.shape[0] * case.shape[1], 32)


def maxpool_lanes(case):
    """backward_lanes_3s2: the backward's channels per thread (2: channels_last 16-bit, even C)."""
    return 2 if case.direction == "bwd" and case.cl and DTYPES[case.dtype][1] == 2 and case.shape[1] % 2 == 0 else 1


def maxpool_divider(d):
    """max_pool2d_3s2.h Divider::make: (d, m, s) with n / d = (mulhi(n, m) + n) >> s."""
    s = 0
    while (1 << s) < d:
        s += 1
    return d, ((1 << 32) * ((1 << s) - d)) // d + 1, s


def maxpool_grid(case):
    """(items, dividers, (rows, cols) of a plane's item grid): the launch of the 3/2 kernel.
    Forward items: (row chunk of kRows outputs, output column); backward: (block row,
    group of kBlocks 2x2 blocks). NCHW items (plane, r, q); NHWC (image, r, q, channel)."""
    n, c, h, w = case.shape
    ho, wo = case.pooled[2:]
    if case.direction == "fwd":
        rows, cols = maxpool_chunks(case)[0], wo
    else:
        rows, cols = -(-h // 2), -(-(-(-w // 2)) // MAXPOOL_BLOCKS[maxpool_lanes(case)])
    lanes = maxpool_lanes(case)
    divisors = (c // lanes, cols, rows) if case.cl else (cols, maxpool_plane_chunk(case), rows)
    return n * (c // lanes) * rows * cols, [maxpool_divider(d) for d in divisors], (rows, cols)


def maxpool_params(case):
    n, c, h, w = case.shape
    po = case.pooled
    items, dividers, _ = maxpool_grid(case)
    p = Packer()
    for ptr in pointers(3):
        p.ptr(ptr)
    for v in (items, c, h, w, po[2], po[3]):
        p.i32(v)
    if case.direction == "fwd":  # Forward3s2: rows, longer
        for v in maxpool_chunks(case)[1:]:
            p.i32(v)
    for divider in dividers:
        for v in divider:  # uint32 fields
            p.i32(v - (1 << 32) if v >= 1 << 31 else v)
    return bytes(p.buf)


def maxpool_samples(case):
    """Interior items of image N/2, channel C/2: forward, a full chunk of kRows outputs (every
    window inside); backward, kBlocks full 2x2 blocks, for the 2x2 parities of the item
    (first/other block row and column group: 1, 2 or 4 windows per pixel)."""
    n, c, h, w = case.shape
    _, _, (rows, cols) = maxpool_grid(case)
    lanes = maxpool_lanes(case)
    _, chunk_rows, longer = maxpool_chunks(case)
    pc = maxpool_plane_chunk(case)
    out = []
    for dr in (0, 1):
        for dc in (0, 1):
            nn, cc, r, q = n // 2, c // 2, rows // 2 - 1 + dr, cols // 2 - 1 + dc
            if case.cl:  # channel items: channel groups of `lanes`
                item = ((nn * rows + r) * cols + q) * (c // lanes) + cc // lanes
            else:  # (plane chunk, row chunk / block row, plane in chunk, column)
                plane = nn * c + cc
                item = ((plane // pc * rows + r) * pc + plane % pc) * cols + q
            if case.direction == "fwd":
                elems = chunk_rows + (r < longer)
            else:  # the pixels inside the input (27 wide: the second group's last column is not)
                blocks = MAXPOOL_BLOCKS[lanes]
                elems = min(2, h - 2 * r) * min(2 * blocks, w - 2 * blocks * q) * lanes
            out.append((item, elems))
    return out


# ---- fused stage (relu_lrn_max_pool2d.h Geo; relu_lrn_max_pool2d_sweep.h Items / locate)


def stage_geo(case):
    n, c, h, w = case.shape
    po = case.pooled
    cg = c // LRN_GROUPS
    pre, post = min(LRN_SIZE // 2, cg - 1), min((LRN_SIZE - 1) // 2, cg - 1)

    def strides(shape):
        nn, cc, hh, ww = shape
        return (cc * hh * ww, 1, ww * cc, cc) if case.cl else (cc * hh * ww, hh * ww, ww, 1)

    return dict(N=n, C=c, H=h, W=w, Ho=po[2], Wo=po[3], cg=cg, pre=pre, post=post, xs=strides(case.shape),
                os=strides(po))


def stage_items(case):
    """make_items (relu_lrn_max_pool2d_sweep.h): forward items are runs of row_run pooled
    rows of one pooled column, kPoolChannels channels (channels-first) or V (channels-last)."""
    g = stage_geo(case)
    vec = stage_vector(case)
    bwd = case.direction == "bwd"
    rows, cols = (g["H"], g["W"]) if bwd else (g["Ho"], g["Wo"])
    if bwd:  # channels-first backward: pixel pairs; channels-last: runs of lane_pixels(vec)
        cols = -(-cols // (lane_pixels(vec) if case.cl else 2))
    row_run = 1
    if not bwd:
        n = -(-rows // POOL_ROWS)
        row_run = -(-rows // n)
        rows = -(-rows // row_run)
    run = min(g["cg"], STAGE_CHANNEL_RUN if bwd else POOL_CHANNELS)
    runs_per_group = -(-g["cg"] // run)
    runs = runs_per_group * (g["C"] // g["cg"])
    vecs = g["C"] // vec
    pixels = g["N"] * rows * cols
    count = pixels * vecs if case.cl else pixels * runs
    pair_start, pair_dividers = [0] * (PAIR_CLASSES + 1), [0] * 5
    run_images, run_start, run_dividers = 0, [0] * (RUN_CLASSES + 1), [0] * 4
    if not bwd and not case.cl:  # make_items: the run classes of a chunk of images (locate_run)
        run_images = math.gcd(g["N"], 8)
        groups = g["C"] // g["cg"]
        per_group = [max(runs_per_group - 2, 0), int(runs_per_group >= 2), int(runs_per_group >= 2),
                     int(runs_per_group == 1)]
        for c in range(RUN_CLASSES):
            items = run_images * groups * per_group[c] * rows * cols
            run_start[c + 1] = run_start[c] + -(-items // WARP) * WARP
        count = g["N"] // run_images * run_start[RUN_CLASSES]
        run_dividers = [run_start[RUN_CLASSES], rows * cols, per_group[0], groups]
    classes = vector_classes(0, 1, 1, 0)
    if not bwd and case.cl:  # make_items: the INSIDE items' class (fp32 only: has_inside_variant)
        halo = ((SPAN + 1) // 2 + vec - 1) // vec
        classes = vector_classes(pixels, vecs, g["cg"] // vec, halo if vec <= 4 else 0)
    if bwd and not case.cl:  # make_items: the pair classes of an image (locate_pair)
        inner, edge_rows = (g["Ho"] - 1) * (g["Wo"] - 1), 2 * (g["Ho"] - 1)
        per_run = [inner, inner, edge_rows + (g["H"] - 2 * g["Ho"]) * cols, edge_rows + 2 * cols]
        for c in range(PAIR_CLASSES):
            pair_start[c + 1] = pair_start[c] + -(-runs * per_run[c] // WARP) * WARP
        count = g["N"] * pair_start[PAIR_CLASSES]
        pair_dividers = [pair_start[PAIR_CLASSES], inner, g["Wo"] - 1, per_run[2], per_run[3]]
    return dict(count=count, rows=rows, cols=cols, runs_per_group=runs_per_group, runs=runs, run=run,
                row_run=row_run, vecs=vecs, vec=vec, pair_start=pair_start, pair_dividers=pair_dividers,
                classes=classes, run_images=run_images, run_start=run_start, run_dividers=run_dividers,
                pair_per_run=per_run if bwd and not case.cl else None)


PAIR_CLASSES = 4  # kPairClasses: odd / even interior rows, odd / even edge pairs
RUN_CLASSES = 4  # kRunClasses: middle, first, last, only run of a group (channels-first forward)


def stage_run_thread(case, n, run, row, col):
    """locate_run's inverse: the thread of image n, channel run `run` (all groups),
    row run `row`, pooled column `col` (channels-first forward)."""
    it = stage_items(case)
    rpg = it["runs_per_group"]
    grp, u = divmod(run, rpg)
    groups = len(range(0, stage_geo(case)["C"], stage_geo(case)["cg"]))
    cls = 3 if rpg == 1 else 1 if u == 0 else 2 if u == rpg - 1 else 0
    rc, uu = (rpg - 2, u - 1) if cls == 0 else (1, 0)
    chunk, image = divmod(n, it["run_images"])
    k = ((image * groups + grp) * rc + uu) * (it["rows"] * it["cols"]) + row * it["cols"] + col
    return chunk * it["run_start"][RUN_CLASSES] + it["run_start"][cls] + k


def stage_pair_thread(case, n, run, row, col):
    """locate_pair's inverse for an interior pair (classes 0 and 1): the thread of image n,
    channel run `run`, row `row` (1 .. 2 Ho - 2), pair column `col` (1 .. Wo - 1)."""
    it = stage_items(case)
    g = stage_geo(case)
    cls = 0 if row % 2 else 1
    m = (row - 1 - cls) // 2 * (g["Wo"] - 1) + col - 1
    return n * it["pair_start"][PAIR_CLASSES] + it["pair_start"][cls] + run * it["pair_per_run"][cls] + m


def int_divider(d):
    """IntDivider(d) (csrc/int_divider.h): (d, m, s) with n // d == (umulhi(n, m) + n) >> s."""
    d = max(d, 1)
    s = 0
    while (1 << s) < d:
        s += 1
    m = ((1 << 32) * ((1 << s) - d)) // d + 1
    return d, m - (1 << 32) if m >= 1 << 31 else m, s


def stage_params(case):
    g = stage_geo(case)
    it = stage_items(case)
    p = Packer()
    for ptr in pointers(3 if case.direction == "fwd" else 4):
        p.ptr(ptr)

    def fill_geo(q):
        for v in (g["N"], g["C"], g["H"], g["W"], g["Ho"], g["Wo"], POOL_K, POOL_K, POOL_S, POOL_S, g["cg"],
                  g["pre"], g["post"]):
            q.i32(v)
        for v in g["xs"] + g["os"]:
            q.i64(v)

    def fill_items(q):
        q.i64(it["count"])
        for k in ("rows", "cols", "runs_per_group", "runs", "run", "row_run", "vecs", "vec"):
            q.i32(it[k])
        for d in (it["vecs"], it["cols"], it["rows"], it["runs"], it["runs_per_group"], g["cg"] // it["vec"]):
            for v in int_divider(d):
                q.i32(v)
        for v in it["pair_start"]:
            q.i32(v)
        for d in it["pair_dividers"]:
            for v in int_divider(d):
                q.i32(v)
        q.i32(it["run_images"])
        for v in it["run_start"]:
            q.i32(v)
        for d in it["run_dividers"]:
            for v in int_divider(d):
                q.i32(v)
        pack_vector_classes(q, it["classes"])

    p.struct_(fill_geo, 8)
    p.struct_(fill_items, 8)
    for v in (LRN_SCALE, LRN_BETA, LRN_K):
        p.f32(v)
    return bytes(p.buf)


WARP, LANE_ITEMS = 32, 30  # backward_lanes: lanes 1..30 of a warp own its 30 items
RUN_VALUES = 16  # kRunValues: a channels-last backward item is a run of 16 / V pixels of a row


def lane_pixels(vec):
    """kLanePixels<V>: pixels of one row per channels-last backward item."""
    return RUN_VALUES // vec


def stage_samples(case):
    """Channels-first: an interior pixel (forward: an interior run of row_run pooled rows
    of one column) for every channel run of every group (a run is min(run, Cg - r*run)
    channels: locate() in the sweep header; forward runs of kPoolChannels, so the first and
    last of a group take the edge path with its zero-padded halo); plus the 2x2 parities for
    backward (how many windows cover the pixel; NCHW items are pixel pairs of a row, whose
    windows only the row's parity changes). Channels-last: V channels per item (forward:
    x its run of pooled rows), every vector of one interior pixel (forward: column)."""
    it = stage_items(case)
    g = stage_geo(case)
    n = g["N"] // 2
    pixels = [(it["rows"] // 2, it["cols"] // 2)]
    if case.direction == "bwd":
        pixels = [(it["rows"] // 2 + dr, it["cols"] // 2 + dc) for dr in (0, 1) for dc in (0, 1)]
    out = []
    for row, col in pixels:
        if case.cl:
            r = row
            if case.direction == "bwd":  # lane_row's inverse: item rows take the odd input rows first
                r = (row - 1) // 2 if row % 2 else g["H"] // 2 + row // 2
            base = (n * it["rows"] + r) * it["cols"] + col
            rows = min(it["row_run"], g["Ho"] - row * it["row_run"]) if case.direction == "fwd" else 1
            step = max(1, it["vecs"] // 16)  # at most 16 vectors: the interior ones repeat
            vecs = sorted(set(range(0, it["vecs"], step)) | {it["vecs"] - 1})
            items = [base * it["vecs"] + v for v in vecs]
            if case.direction == "fwd":  # forward: by vector class (vector_item)
                items = [class_thread(it["classes"], base, v) for v in vecs]
            if case.direction == "bwd":  # backward_lanes: item -> thread (an owner lane), a run of pixels
                items = [(i // LANE_ITEMS) * WARP + i % LANE_ITEMS + 1 for i in items]
                rows = lane_pixels(it["vec"])
            out += [(i, it["vec"] * rows) for i in items]
        else:
            pooled_rows = g["Ho"] if case.direction == "fwd" else g["H"]
            rows = min(it["row_run"], pooled_rows - row * it["row_run"])
            for run in range(it["runs"]):
                r = run % it["runs_per_group"]
                channels = min(it["run"], g["cg"] - r * it["run"])
                if case.direction == "bwd":  # pixel pairs, by class (locate_pair)
                    item = stage_pair_thread(case, n, run, row, col)
                else:  # run classes (locate_run)
                    item = stage_run_thread(case, n, run, row, col)
                pair = 2 if case.direction == "bwd" else 1  # backward: two pixels per item
                out.append((item, channels * rows * pair))
    return out


PARAMS = {"lrn": lrn_params, "maxpool": maxpool_params, "stage": stage_params}
SAMPLES = {"lrn": lrn_samples, "maxpool": maxpool_samples, "stage": stage_samples}


def elements_total(case):
    """Elements the launch processes (what instr_per_elem is per): LRN every element;
    max-pool and stage forward the pooled outputs, backward the input elements."""
    if case.direction == "fwd" and case.op in ("maxpool", "stage"):
        return numel(case.pooled)
    return numel(case.shape)


def fewest_bytes(case):
    """Bytes the op must move at least: every input read once, every output written once
    (uint8 argmax included)."""
    x, y = numel(case.shape), numel(case.pooled)
    e = case.esize
    if case.op == "lrn":
        return (2 if case.direction == "fwd" else 3) * x * e
    if case.direction == "fwd":  # read x; write out + argmax
        return x * e + y * (e + 1)
    if case.op == "maxpool":  # read dy + argmax; write dx
        return y * (e + 1) + x * e
    return y * (e + 1) + 2 * x * e  # stage: read dy + argmax + x; write dx


def stored_bytes_per_element(case):
    """Global bytes a thread writes per element it processes (forward pooling ops also
    write the uint8 argmax). measure() checks the emulated path against it."""
    if case.direction == "fwd" and case.op in ("maxpool", "stage"):
        return case.esize + 1
    return case.esize


def load_word(case):
    """What every global load returns: 1.0 in the case's dtype (uint8 argmax loads: 0)."""
    one = 0x3F800000 if case.dtype == "fp32" else 0x3F803F80

    def word(width):
        return 0 if width == 1 else one

    return word


def all_cases():
    return [Case(op, d, dt, lay, shape) for op in ("lrn", "maxpool", "stage") for d in ("fwd", "bwd")
            for dt in DTYPES for lay in LAYOUTS for shape in SHAPES]


# ================================================================= measuring


@dataclass
class Kernels:
    functions: dict  # mangled -> Function
    demangled: dict  # mangled -> demangled
    resources: dict  # mangled -> dict


def load_kernels(cubins, cases):
    """Disassemble only the instantiations the cases need (nvdisasm -fun)."""
    functions, demangled, resources = {}, {}, {}
    by_stem = {}
    for case in cases:
        by_stem.setdefault(cubin_stem(case), []).append(case)
    for stem, stem_cases in by_stem.items():
        if stem not in cubins:
            raise ToolMissing(f"no {stem} cubin for sm_90")
        symbols = elf_functions(cubins[stem])
        names = demangle(list(symbols))
        wanted = {}
        for case in stem_cases:
            pattern = re.compile(kernel_pattern(case))
            hits = [m for m, d in names.items() if pattern.search(d)]
            if len(hits) != 1:
                raise LookupError(f"{case.name} {case.dtype} {case.layout} {case.shape}: expected one kernel "
                                  f"matching /{pattern.pattern}/ in {stem}, found {len(hits)}: the launcher or the "
                                  f"kernel names changed; update kernel_pattern() in bench/sass.py")
            wanted[hits[0]] = symbols[hits[0]]
        functions.update(disassemble(cubins[stem], wanted.values()))
        demangled.update({m: names[m] for m in wanted})
        resources.update({m: r for m, r in resource_usage(cubins[stem]).items() if m in wanted})
    return Kernels(functions, demangled, resources)


def mangled_for(kernels, case):
    pattern = re.compile(kernel_pattern(case))
    return next(m for m, d in kernels.demangled.items() if pattern.search(d))


def measure(case, kernels):
    mangled = mangled_for(kernels, case)
    fn = kernels.functions[mangled]
    res = kernels.resources[mangled]
    params = PARAMS[case.op](case)
    instrs = mufu = elements = 0
    in_flight, bodies, trips = [], [], []
    for item, elems in SAMPLES[case.op](case):
        thread = Thread(fn, params, item % THREADS, item // THREADS, load_word(case))
        trace = thread.run()
        if thread.stored != elems * stored_bytes_per_element(case):
            raise AssertionError(f"{case.name} {case.dtype} {case.layout} {case.shape} item {item}: the emulated "
                                 f"thread stored {thread.stored} bytes, expected {elems} elements' worth: the "
                                 f"interpreter took a wrong path, or the item mapping (SAMPLES) is stale")
        instrs += len(trace)
        mufu += sum(fn.instrs[k].op.startswith("MUFU") for k in trace)
        elements += elems
        segments, taken = hot_loop(fn, trace)
        # Channel sweeps (channels-first LRN and stage) have a steady-state loop: the
        # loads in flight are those of one middle iteration. Everything else is one item
        # per thread: the whole thread.
        if not case.cl and case.op != "maxpool" and segments:
            middle = segments[len(segments) // 2]
            bodies.append(len(middle))
            trips.append(taken + 1)
            in_flight.append(max(load_groups(fn, middle), default=0))
        else:
            in_flight.append(max(load_groups(fn, trace), default=0))
    spills = sum(ins.op.split(".")[0] in ("LDL", "STL") for ins in fn.instrs)
    warps = occupancy(res["registers"], res["shared"])
    per_thread_bytes = max(in_flight)
    ipe = instrs / elements
    total = elements_total(case)
    issue_ms = total * ipe / 32 / (SMS * SCHEDULERS_PER_SM * CLOCK_HZ) * 1e3
    floor_ms = fewest_bytes(case) / DRAM_BYTES_PER_S * 1e3
    return {
        "kernel": case.name, "dtype": case.dtype, "layout": case.layout, "shape": list(case.shape),
        "instantiation": kernels.demangled[mangled].split("(")[0].replace("alexnet_cuda::", ""),
        "instr_per_elem": round(ipe, 2), "mufu_per_elem": round(mufu / elements, 3),
        "loop_body_instr": round(sum(bodies) / len(bodies), 1) if bodies else None,
        "loop_trips": round(sum(trips) / len(trips), 1) if trips else None,
        "registers": res["registers"], "spills": spills, "local_bytes": res["local"],
        "occupancy": round(warps / MAX_WARPS_PER_SM, 3),
        "load_bytes_in_flight_per_thread": per_thread_bytes,
        "bytes_in_flight_per_sm": warps * 32 * per_thread_bytes,
        "issue_bound_ms": round(issue_ms, 4), "floor_ms": round(floor_ms, 4),
    }


def verdicts(rec):
    """PASS / over for each budget."""
    return {
        "issue<=0.7floor": rec["issue_bound_ms"] <= BUDGET_ISSUE_OVER_FLOOR * rec["floor_ms"],
        "no spills": rec["spills"] == 0,
        "occ>=50%": rec["occupancy"] >= BUDGET_OCCUPANCY,
        ">=32KB in flight": rec["bytes_in_flight_per_sm"] >= BUDGET_BYTES_IN_FLIGHT_PER_SM,
    }


def run_cases(cases=None, compile_sources=False):
    cases = cases or all_cases()
    with tempfile.TemporaryDirectory() as tmp:
        stems = sorted({cubin_stem(c) for c in cases})
        cubins = compile_cubins(tmp, stems) if compile_sources else extract_cubins(built_extension(), tmp)
        kernels = load_kernels(cubins, cases)
    return [measure(case, kernels) for case in cases]


# ================================================================= output


def shape_str(shape):
    return "x".join(str(s) for s in shape)


def format_table(records):
    head = (f"{'kernel':<12}{'dtype':<6}{'layout':<7}{'shape':<15}{'instr/el':>9}{'mufu/el':>8}{'body':>7}"
            f"{'trips':>6}{'regs':>5}{'spill':>6}{'occ':>5}{'KB/SM':>7}{'issue ms':>9}{'floor ms':>9}  "
            f"{'issue<=.7fl':<12}{'spills':<7}{'occ>=50%':<9}{'>=32KB':<7}")
    lines = [head, "-" * len(head)]
    for r in records:
        v = verdicts(r)
        mark = ["PASS" if ok else "over" for ok in v.values()]
        lines.append(
            f"{r['kernel']:<12}{r['dtype']:<6}{r['layout']:<7}{shape_str(r['shape']):<15}{r['instr_per_elem']:>9.1f}"
            f"{r['mufu_per_elem']:>8.2f}{(r['loop_body_instr'] or 0):>7.0f}{(r['loop_trips'] or 0):>6.0f}"
            f"{r['registers']:>5}{r['spills']:>6}{r['occupancy'] * 100:>4.0f}%"
            f"{r['bytes_in_flight_per_sm'] / 1024:>7.1f}{r['issue_bound_ms']:>9.4f}{r['floor_ms']:>9.4f}  "
            f"{mark[0]:<12}{mark[1]:<7}{mark[2]:<9}{mark[3]:<7}")
    return "\n".join(lines)


def budget_key(rec):
    return (rec["kernel"], rec["dtype"], rec["layout"], tuple(rec["shape"]))


def budget_table(records, slack=1.05):
    """tests/test_sass.py's BUDGETS and KNOWN_SPILLS, from these records: instr_per_elem
    upper bounds with `slack`, and the spill instructions each kernel has now."""
    lines = ["BUDGETS = {  # (kernel, dtype, layout, shape): max SASS instructions per element"]
    for r in records:
        lines.append(f"    {budget_key(r)!r}: {math.ceil(r['instr_per_elem'] * slack * 10) / 10},")
    lines.append("}")
    lines.append("KNOWN_SPILLS = {  # kernels that spill today (budget: none); the count may not grow")
    for r in records:
        if r["spills"]:
            lines.append(f"    {budget_key(r)!r}: {r['spills']},")
    lines.append("}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument("--compile", action="store_true",
                        help="compile csrc/*.cu for sm_90 (setup.py's flags) instead of reading the built extension")
    parser.add_argument("--update", action="store_true", help="print the BUDGETS table for tests/test_sass.py")
    parser.add_argument("--only", help="comma-separated ops: lrn,maxpool,stage")
    args = parser.parse_args(argv)
    cases = all_cases()
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c.op in keep]
    records = run_cases(cases, compile_sources=args.compile)
    print(format_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.update:
        print()
        print(budget_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
