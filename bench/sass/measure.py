"""One record per case: whole warps sampled across the launch, run on real data, checked
against the CPU kernels, and the time model.

Sampling: the launch's warps with work but the last are split into `warps` equal slices
(a fixed seed per case) and one warp is drawn from each; the last warp with work (the
partial block, the last items) and one warp past the work (if the last block has any)
are always run, and weighted by their count. So the launch total is
  mean(sampled) x (warps with work - 1) + last + idle x (idle warps),
for issued warp instructions, MUFU warp instructions and the ideal (per-lane maximum).
"""

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from . import cases as cs
from .analysis import hot_loop, lane_path, load_groups
from .machine import (
    BUDGET_BYTES_IN_FLIGHT_PER_SM,
    BUDGET_OCCUPANCY,
    BUDGET_TIME_OVER_FLOOR,
    CLOCK_HZ,
    DRAM_BYTES_PER_S,
    MAX_WARPS_PER_SM,
    MUFU_LANES_PER_CLOCK,
    SCHEDULERS_PER_SM,
    SMS,
    THREADS,
    WARP,
)
from .memory import Memory
from .reference import Reference
from .tools import ToolMissing, demangle, disassemble, elf_functions, occupancy, resource_usage
from .warp import decode, run_warp

FULL_RUN_WARPS = 32  # sampled warps per record in the tool's full run
TEST_WARPS = 4  # in tests/test_sass.py (and --update, which pins its budgets): CI time
SEED = 2024


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
        by_stem.setdefault(cs.cubin_stem(case), []).append(case)
    for stem, stem_cases in by_stem.items():
        if stem not in cubins:
            raise ToolMissing(f"no {stem} cubin for sm_90")
        symbols = elf_functions(cubins[stem])
        names = demangle(list(symbols))
        wanted = {}
        for case in stem_cases:
            pattern = re.compile(cs.kernel_pattern(case))
            hits = [m for m, d in names.items() if pattern.search(d)]
            if len(hits) != 1:
                raise LookupError(
                    f"{case.name} {case.dtype} {case.layout} {case.shape}: expected one kernel "
                    f"matching /{pattern.pattern}/ in {stem}, found {len(hits)}: the launcher or the "
                    f"kernel names changed; update kernel_pattern() in bench/sass/cases.py"
                )
            wanted[hits[0]] = symbols[hits[0]]
        functions.update(disassemble(cubins[stem], wanted.values()))
        demangled.update({m: names[m] for m in wanted})
        resources.update({m: r for m, r in resource_usage(cubins[stem]).items() if m in wanted})
    return Kernels(functions, demangled, resources)


def mangled_for(kernels, case):
    pattern = re.compile(cs.kernel_pattern(case))
    return next(m for m, d in kernels.demangled.items() if pattern.search(d))


def instantiation(demangled):
    """'void alexnet_cuda::lrn::(anonymous namespace)::k<4, 1, false, float, float>(const float*, ...)'
    -> 'lrn::k<4, 1, false, float, float>'."""
    name = demangled[: demangled.index(">(") + 1] if ">(" in demangled else demangled
    for noise in ("void ", "alexnet_cuda::", "(anonymous namespace)::"):
        name = name.replace(noise, "")
    return name


def const_bank(params):
    """Constant bank 0: blockDim at 0x0, the stack pointer at 0x28, parameters at 0x210."""
    const = bytearray(0x210) + bytearray(params) + bytearray(64)
    const[0:12] = np.array([THREADS, 1, 1], "<u4").tobytes()
    const[0x28:0x2C] = np.array([0xFFF000], "<u4").tobytes()
    return bytes(const)


def case_seed(case):
    """The warp draws' seed: one per record."""
    return SEED + zlib.crc32(repr((case.op, case.direction, case.dtype, case.layout, case.shape)).encode())


def data_seed(case):
    """The tensors' seed: one per configuration, so forward and backward share x."""
    return SEED + zlib.crc32(repr((case.op, case.dtype, case.layout, case.shape)).encode())


def sample_warps(case, warps):
    """[(warp index, weight)]: stratified draws over the warps with work but the last, the
    last warp with work, and one idle warp standing for all idle ones."""
    threads = cs.launch_threads(case)
    total = cs.blocks(case) * (THREADS // WARP)
    active = -(-threads // WARP)
    body = active - 1
    rng = np.random.default_rng(case_seed(case))
    out = []
    strata = min(warps, body)
    for s in range(strata):
        lo, hi = s * body // strata, (s + 1) * body // strata
        out.append((int(rng.integers(lo, hi)), body / strata))
    out.append((active - 1, 1.0))
    if total > active:
        out.append((active, float(total - active)))
    return out


def steady_load_bytes(case, fn, path):
    """Bytes a lane has in flight before their first use: in the middle iteration of the
    steady-state loop for the channel sweeps (NCHW LRN and stage), else over the whole path."""
    segments, taken = hot_loop(fn, path)
    if not case.cl and case.op != "max_pool2d" and segments:
        middle = segments[len(segments) // 2]
        return max(load_groups(fn, middle), default=0), len(middle), taken + 1
    return max(load_groups(fn, path), default=0), None, None


def lane_load_bytes(case, fn, run, working):
    """(bytes in flight, loop body, trips) of a warp's average working lane: each lane's
    path read once per distinct path length (lanes of one variant share it), bytes
    averaged over the lanes; body and trips of the median lane."""
    by_length = {}
    for lane in np.nonzero(working)[0].tolist():
        n = int(run.lane_instrs[lane])
        if n not in by_length:
            by_length[n] = steady_load_bytes(case, fn, lane_path(run, lane))
    lengths = run.lane_instrs[working]
    nbytes = float(np.mean([by_length[int(n)][0] for n in lengths]))
    median = int(np.sort(lengths)[len(lengths) // 2])
    return nbytes, by_length[median][1], by_length[median][2]


def measure(case, kernels, warps=FULL_RUN_WARPS):
    mangled = mangled_for(kernels, case)
    fn = kernels.functions[mangled]
    res = kernels.resources[mangled]
    const = const_bank(cs.PARAMS[case.op](case))
    steps = decode(fn, const)
    ref = Reference(case, data_seed(case))
    memory = Memory(ref.buffers)
    issues = ideal = mufu = 0.0
    checked = stored = 0
    main_output = cs.outputs(case)[0]
    in_flight, bodies, trips = [], [], []
    warps_per_block = THREADS // WARP
    for warp, weight in sample_warps(case, warps):
        run = run_warp(fn, steps, const, warp // warps_per_block, warp % warps_per_block, memory)
        counts = ref.check_stored(memory, memory.take_stores())
        checked += sum(counts.values())
        stored += weight * counts.get(main_output, 0)
        issues += weight * run.issues
        ideal += weight * int(run.lane_instrs.max())
        mufu += weight * run.mufu_issues
        working = run.lane_instrs > 20  # lanes with work (idle ones just exit)
        if working.any():
            nbytes, body, trip = lane_load_bytes(case, fn, run, working)
            in_flight.append(nbytes)
            if body is not None:
                bodies.append(body)
                trips.append(trip)
    if checked == 0:
        raise AssertionError(f"{case.name} {case.dtype} {case.layout}: the sampled warps stored nothing")
    # The launch's estimated stores over the output's elements: about 1 (the sampling
    # error of a few warps is large where items differ in size, e.g. at the image edges),
    # far from it when cases.launch_threads() disagrees with the launcher.
    coverage = stored / ref.elements(main_output)
    if not 0.5 <= coverage <= 2.0:
        raise AssertionError(
            f"{case.name} {case.dtype} {case.layout} {case.shape}: the sampled warps' stores "
            f"extrapolate to {coverage:.2f} x the output's elements: is cases.launch_threads() "
            f"still the launcher's thread count?"
        )
    rec = record(case, kernels, mangled, fn, res, issues, ideal, mufu, checked, in_flight, bodies, trips)
    rec["store_coverage"] = round(coverage, 3)
    return rec


def record(case, kernels, mangled, fn, res, issues, ideal, mufu, checked, in_flight, bodies, trips):
    spills = sum(ins.op.split(".")[0] in ("LDL", "STL") for ins in fn.instrs)
    warps = occupancy(res["registers"], res["shared"])
    per_lane_bytes = round(float(np.mean(in_flight)), 1) if in_flight else 0
    total = cs.elements_total(case)
    issue_ms = issues / (SMS * SCHEDULERS_PER_SM * CLOCK_HZ) * 1e3
    mufu_ms = mufu * WARP / (MUFU_LANES_PER_CLOCK * SMS * CLOCK_HZ) * 1e3
    slots = warps // (THREADS // WARP) * SMS
    nblocks = cs.blocks(case)
    tail = math.ceil(nblocks / slots) / (nblocks / slots)
    floor_ms = cs.fewest_bytes(case) / DRAM_BYTES_PER_S * 1e3
    return {
        "kernel": case.name,
        "dtype": case.dtype,
        "layout": case.layout,
        "shape": list(case.shape),
        "instantiation": instantiation(kernels.demangled[mangled]),
        "instr_per_elem": round(issues * WARP / total, 2),
        "mufu_per_elem": round(mufu * WARP / total, 3),
        "divergence": round(issues / ideal, 3),
        "tail": round(tail, 3),
        "checked_outputs": checked,
        "loop_body_instr": round(sum(bodies) / len(bodies), 1) if bodies else None,
        "loop_trips": round(sum(trips) / len(trips), 1) if trips else None,
        "registers": res["registers"],
        "spills": spills,
        "local_bytes": res["local"],
        "occupancy": round(warps / MAX_WARPS_PER_SM, 3),
        "blocks": nblocks,
        "resident_blocks": slots,
        "load_bytes_in_flight_per_thread": per_lane_bytes,
        "bytes_in_flight_per_sm": round(warps * WARP * per_lane_bytes),
        "issue_bound_ms": round(issue_ms, 4),
        "mufu_ms": round(mufu_ms, 4),
        "time_ms": round(max(issue_ms * tail, mufu_ms), 4),
        "floor_ms": round(floor_ms, 4),
    }


def verdicts(rec):
    """PASS / over for each budget."""
    return {
        "time<=0.7floor": rec["time_ms"] <= BUDGET_TIME_OVER_FLOOR * rec["floor_ms"],
        "no spills": rec["spills"] == 0,
        "occ>=50%": rec["occupancy"] >= BUDGET_OCCUPANCY,
        ">=32KB in flight": rec["bytes_in_flight_per_sm"] >= BUDGET_BYTES_IN_FLIGHT_PER_SM,
    }
