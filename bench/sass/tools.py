"""Cubins, their kernels' symbols and resources, and their SASS text (cuobjdump, nvdisasm)."""

import glob
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field

from .machine import MAX_BLOCKS_PER_SM, MAX_WARPS_PER_SM, REG_ALLOC_UNIT, REGS_PER_SM, SMEM_PER_SM, THREADS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def extension_dirs():
    """Where the built alexnet_cuda/ may be: the source tree (built in place), then every
    sys.path entry (an installed package: `pip install .` builds into site-packages and
    leaves the source tree unbuilt, as on CI)."""
    dirs = [os.path.join(ROOT, "alexnet_cuda")]
    for entry in sys.path:
        d = os.path.join(os.path.realpath(entry or os.curdir), "alexnet_cuda")
        if d not in dirs:
            dirs.append(d)
    return dirs


def built_extension():
    """Path of the built operator library, the CUDA kernels' home (in place, else installed),
    without importing torch."""
    for d in extension_dirs():
        path = os.path.join(d, "libalexnet_cuda_ops.so")
        if os.path.isfile(path):
            return path
    raise ToolMissing(
        "alexnet_cuda/libalexnet_cuda_ops.so is neither built in place nor installed "
        "(pip install . or python setup.py build_ext --inplace)"
    )


def extract_cubins(so_path, workdir):
    """The sm_90 cubins inside the extension, by source file stem ('lrn_cuda', ...)."""
    listing = subprocess.run([find_tool("cuobjdump"), "-lelf", so_path], capture_output=True, text=True)
    names = re.findall(r"ELF file\s+\d+:\s+(\S+\.sm_90\.cubin)", listing.stdout)
    if not names:
        raise ToolMissing(f"{so_path} holds no sm_90 cubin: the extension was built without CUDA kernels")
    for name in names:
        subprocess.run([find_tool("cuobjdump"), "-xelf", name, so_path], cwd=workdir, check=True, capture_output=True)
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
    flags = (
        setup.NVCC_FLAGS
        + cpp_extension.COMMON_NVCC_FLAGS
        + ["-std=c++20", "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    )
    out = {}
    for stem in stems:
        (source,) = glob.glob(os.path.join(ROOT, "csrc", "**", stem + ".cu"), recursive=True)
        cubin = os.path.join(workdir, stem + ".sm_90.cubin")
        cmd = [
            os.path.join(cuda_home, "bin", "nvcc"),
            "-cubin",
            "-arch=sm_90",
            *flags,
            *[f"-I{d}" for d in includes],
            source,
            "-o",
            cubin,
        ]
        subprocess.run(cmd, check=True)
        out[stem] = cubin
    return out


# ================================================================= cubin symbols and resources


def elf_functions(cubin):
    """{mangled name: symbol index} of the FUNC symbols (nvdisasm -fun takes the index)."""
    with open(cubin, "rb") as f:
        data = f.read()
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
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
                out[data[start : data.index(b"\0", start)].decode()] = k
    return out


def demangle(names):
    cxxfilt = shutil.which("cu++filt") or shutil.which("c++filt")
    if cxxfilt is None:
        raise ToolMissing("c++filt (binutils) or cu++filt is needed to demangle kernel names")
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def resource_usage(cubin):
    """{mangled name: dict(registers, shared, local, stack)} from cuobjdump -res-usage."""
    text = subprocess.run(
        [find_tool("cuobjdump"), "-res-usage", cubin], capture_output=True, text=True, check=True
    ).stdout
    out = {}
    for name, body in re.findall(r"Function (\S+):\s*\n\s*(REG:.*)", text):
        fields = dict(re.findall(r"(\w+):(\d+)", body))
        out[name] = {
            "registers": int(fields["REG"]),
            "shared": int(fields["SHARED"]),
            "local": int(fields["LOCAL"]),
            "stack": int(fields["STACK"]),
        }
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
            name = raw[len(".text.") :].rstrip(":")
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
            ins = Instr(
                int(m.group(1), 16),
                (m.group(2) or "").lstrip("@"),
                m.group(3),
                split_operands(m.group(4)),
                raw.strip(),
                line,
            )
            cur.by_addr[ins.addr] = len(cur.instrs)
            cur.instrs.append(ins)
            continue
        m = LABEL_RE.match(raw.strip())
        if m:
            cur.labels[m.group(1)] = len(cur.instrs)
    return functions
