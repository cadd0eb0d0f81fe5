"""Runs one whole warp (32 lanes, each with its own thread index) through a kernel's SASS.

Scheduling (divergence): at each step the lanes that have not exited and are not waiting
at a convergence barrier, and whose PC is the lowest, issue that instruction together:
one warp issue. A lane whose guard predicate is false is still in the group (it takes the
slot). BSSY / BSYNC are honoured as the hardware's convergence barriers: a lane reaching
BSYNC Bk waits until every lane BSSY Bk recorded has arrived or exited, so paths the
compiler reconverges run once after the join, not once per path.
SHFL and VOTE read the sources of all lanes of the group before any lane writes.
"""

import re
from dataclasses import dataclass

import numpy as np

from . import memory as mem
from .operands import LANES, M32, Unsupported, WarpState, dest, is_pred, isrc, pdest, psrc, pwrite, write
from .semantics import rule_for

POW2 = 1 << np.arange(LANES, dtype=np.int64)


@dataclass
class Step:
    """One decoded instruction."""

    kind: str  # 'op', 'bra', 'exit', 'call', 'ret', 'bssy', 'bsync', 'break', 'mem'
    guard: object  # closure -> bool lanes, or None
    run: object = None  # closure(w, m) for 'op' and 'mem'
    target: int = 0
    barrier: int = 0
    cond: object = None  # extra predicate of BRA P, target
    mufu: bool = False
    ldg_bytes: int = 0  # bytes per lane of a global load
    ldg_regs: tuple = ()  # registers a global load writes (for the loads-in-flight grouping)


def _target(fn, tok):
    m = re.search(r"\(([^)]+)\)", tok)
    name = m.group(1) if m else tok
    if name not in fn.labels:
        raise Unsupported(f"branch target {tok}")
    return fn.labels[name]


def _barrier(tok):
    m = re.fullmatch(r"B(\d+)", tok)
    if not m:
        raise Unsupported(f"barrier {tok}")
    return int(m.group(1))


def _ldg(op, a, const):
    width = mem.access_width(op)
    d = dest(a[0])
    addr = mem.address(a[1], const)
    sign = ".S8" in op or ".S16" in op

    def run(w, m):
        if not m.any():
            return
        data = w.memory.load(addr(w)[m], width)
        words = mem.words_of(data)
        if sign:
            bits = 8 * width
            words = words - ((words >> (bits - 1)) << bits) & M32
        if d is None:
            return
        rows = w.R if d[0] == "R" else w.UR
        for k in range(words.shape[1]):
            col = rows[d[1] + k].copy()
            col[m] = words[:, k]
            rows[d[1] + k] = col

    return run


def _stg(op, a, const):
    width = mem.access_width(op)
    addr = mem.address(a[0], const)
    src = a[1]
    nwords = max(1, width // 4)
    if src.startswith("RZ") or src.startswith("URZ"):
        rows_of = lambda w: np.zeros((nwords, LANES), np.int64)  # noqa: E731
    else:
        file, row = ("UR" if src.startswith("UR") else "R"), int(re.match(r"U?R(\d+)", src).group(1))
        rows_of = lambda w: (w.R if file == "R" else w.UR)[row : row + nwords]  # noqa: E731

    def run(w, m):
        if m.any():
            w.memory.store(addr(w)[m], mem.bytes_of(rows_of(w)[:, m].T, width))

    return run


def _local(op, a, const, store):
    """LDL/STL/LDS/STS: per-lane dictionaries (local: per lane; shared: per block)."""
    width = mem.access_width(op)
    nwords = max(1, width // 4)
    addr = mem.address(a[0] if store else a[1], const)
    d = dest(a[1] if store else a[0])
    shared = op.startswith(("LDS", "STS"))

    def run(w, m):
        addrs = addr(w).tolist()
        rows = w.R if d is None or d[0] == "R" else w.UR
        for lane in np.nonzero(m)[0].tolist():
            space = w.shared if shared else w.local[lane]
            for k in range(nwords):
                key = addrs[lane] + 4 * k
                if store:
                    space[key] = 0 if d is None else int(rows[d[1] + k][lane])
                elif d is not None:
                    rows[d[1] + k][lane] = space.get(key, 0)

    return run


def _shfl(op, a, const):
    """SHFL.{UP,DOWN,IDX,BFLY} [Pd,] Rd, Ra, b, c (PTX shfl.sync's lane rules)."""
    pd = None
    if is_pred(a[0]):
        pd, a = pdest(a[0]), a[1:]
    d, gsrc, gb, gc = dest(a[0]), isrc(a[1], const), isrc(a[2], const), isrc(a[3], const)
    mode = op.split(".")[1]
    lane = np.arange(LANES, dtype=np.int64)

    def run(w, m):
        src = np.broadcast_to(np.asarray(gsrc(w), np.int64), (LANES,)).copy()  # all reads first
        b = np.asarray(gb(w), np.int64) & 0x1F
        c = np.asarray(gc(w), np.int64)
        seg = (c >> 8) & 0x1F
        max_lane = (lane & seg) | (c & 0x1F & ~seg)
        if mode == "UP":
            j = lane - b
            ok = j >= max_lane
        elif mode == "DOWN":
            j = lane + b
            ok = j <= max_lane
        elif mode == "BFLY":
            j = lane ^ b
            ok = j <= max_lane
        elif mode == "IDX":
            j = (lane & seg) | (b & ~seg)
            ok = j <= max_lane
        else:
            raise Unsupported(op)
        j = np.where(ok, j, lane)
        write(w, d, src[j], m)
        pwrite(w, pd, ok, m)

    return run


def _vote(op, a, const):
    """VOTE(U).{ALL,ANY} [Rd,] Pd, Psrc over the lanes executing it."""
    kind = op.split(".")[1]
    if kind not in ("ALL", "ANY"):
        raise Unsupported(op)
    rd = None
    if not is_pred(a[0]):
        rd, a = dest(a[0]), a[1:]
    pd, gp = pdest(a[0]), psrc(a[1])

    def run(w, m):
        p = gp(w) & m
        value = bool(p[m].all()) if kind == "ALL" else bool(p.any())
        pwrite(w, pd, np.full(LANES, value), m)
        if rd is not None:
            write(w, rd, int(p @ POW2), m)

    return run


MEMORY_RULES = {
    "LDG": _ldg,
    "STG": _stg,
    "SHFL": _shfl,
    "VOTE": _vote,
    "VOTEU": _vote,
    "LDL": lambda o, a, c: _local(o, a, c, False),
    "STL": lambda o, a, c: _local(o, a, c, True),
    "LDS": lambda o, a, c: _local(o, a, c, False),
    "STS": lambda o, a, c: _local(o, a, c, True),
}


def decode(fn, const):
    """Each instruction of fn -> a Step (operands parsed, rule looked up), once per record."""
    steps = []
    for ins in fn.instrs:
        base = ins.op.split(".")[0]
        a = ins.operands
        guard = psrc(ins.guard) if ins.guard else None
        if base == "BRA":
            cond = psrc(a[0]) if len(a) > 1 and is_pred(a[0]) else None
            if ".DIV" in ins.op:
                cond = "div"
            steps.append(Step("bra", guard, target=_target(fn, a[-1]), cond=cond))
        elif base == "EXIT":
            steps.append(Step("exit", guard))
        elif base == "CALL":
            steps.append(Step("call", guard, target=_target(fn, a[-1])))
        elif base == "RET":
            steps.append(Step("ret", guard))
        elif base in ("BSSY", "BSYNC", "BREAK"):
            steps.append(Step(base.lower(), guard, barrier=_barrier(a[0])))
        elif base in MEMORY_RULES:
            step = Step("op", guard, run=MEMORY_RULES[base](ins.op, a, const))
            if base == "LDG":
                step.ldg_bytes = mem.access_width(ins.op)
                m = re.fullmatch(r"R(\d+)", a[0])
                if m:
                    first = int(m.group(1))
                    step.ldg_regs = tuple(range(first, first + max(1, step.ldg_bytes // 4)))
            steps.append(step)
        else:
            rule = rule_for(base)
            if rule is None:
                raise Unsupported(f"{ins.op} in {ins.text}")
            steps.append(Step("op", guard, run=rule(ins.op, a, const), mufu=base == "MUFU"))
    return steps


@dataclass
class WarpRun:
    issues: int  # warp instructions issued
    lane_instrs: np.ndarray  # per lane: instructions it took part in (predicated-off included)
    mufu_issues: int
    trace: list  # pc of each issue
    groups: list  # lane bit mask of each issue


def run_warp(fn, steps, const, ctaid, warp_in_block, memory, max_issues=3_000_000):
    tid = warp_in_block * LANES + np.arange(LANES, dtype=np.int64)
    w = WarpState(const, tid, ctaid, memory)
    pcs = np.zeros(LANES, np.int64)
    exited = np.zeros(LANES, bool)
    waiting = np.zeros(LANES, bool)
    barriers, waits = {}, {}
    calls = [[] for _ in range(LANES)]
    lane_instrs = np.zeros(LANES, np.int64)
    trace, groups = [], []
    mufu = 0
    with np.errstate(all="ignore"):
        while True:
            runnable = ~exited & ~waiting
            if not runnable.any():
                if exited.all():
                    break
                raise RuntimeError(f"{fn.name}: lanes wait at a BSYNC no other lane can reach")
            pc = int(pcs[runnable].min())
            group = runnable & (pcs == pc)
            if len(trace) >= max_issues:
                raise RuntimeError(f"{fn.name}: no EXIT after {max_issues} warp instructions")
            trace.append(pc)
            groups.append(int(group @ POW2))
            lane_instrs += group
            step = steps[pc]
            m = group & step.guard(w) if step.guard is not None else group
            kind = step.kind
            if kind == "op":
                try:
                    step.run(w, m)
                except mem.OutOfBounds as exc:
                    raise mem.OutOfBounds(
                        f"block {ctaid} warp {warp_in_block} lanes "
                        f"{np.nonzero(m)[0].tolist()}: {fn.instrs[pc].text}: {exc}"
                    ) from None
                mufu += step.mufu
                pcs[group] = pc + 1
            elif kind == "bra":
                taken = m
                if step.cond == "div":  # taken when the warp is diverged
                    taken = m & (not (group | exited).all())
                elif step.cond is not None:
                    taken = m & step.cond(w)
                pcs[group] = np.where(taken[group], step.target, pc + 1)
            elif kind == "exit":
                exited |= m
                pcs[group & ~m] = pc + 1
                _release(barriers, waits, exited, waiting, pcs)
            elif kind == "bssy":
                barriers[step.barrier] = m.copy()
                waits[step.barrier] = np.zeros(LANES, bool)
                pcs[group] = pc + 1
            elif kind == "break":
                if step.barrier in barriers:
                    barriers[step.barrier] &= ~m
                pcs[group] = pc + 1
                _release(barriers, waits, exited, waiting, pcs)
            elif kind == "bsync":
                pcs[group & ~m] = pc + 1
                if step.barrier in barriers:
                    waits[step.barrier] |= m
                    waiting |= m
                    _release(barriers, waits, exited, waiting, pcs)
                else:
                    pcs[m] = pc + 1
            elif kind == "call":
                for lane in np.nonzero(m)[0].tolist():
                    calls[lane].append(pc + 1)
                pcs[group] = np.where(m[group], step.target, pc + 1)
            elif kind == "ret":
                pcs[group & ~m] = pc + 1
                for lane in np.nonzero(m)[0].tolist():
                    pcs[lane] = calls[lane].pop()
    return WarpRun(len(trace), lane_instrs, mufu, trace, groups)


def _release(barriers, waits, exited, waiting, pcs):
    """Let the lanes waiting at BSYNC Bk go on once all lanes of Bk arrived or exited."""
    for k, members in barriers.items():
        held = waits[k]
        if held.any() and not (members & ~exited & ~held).any():
            pcs[held] += 1
            waiting &= ~held
            waits[k] = np.zeros(LANES, bool)
