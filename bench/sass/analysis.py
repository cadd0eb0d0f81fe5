"""Reading a lane's path: the loads in flight before their first use, the steady-state loop."""

import re

from .memory import access_width


def lane_path(run, lane):
    """The instructions (indices) lane `lane` took part in, in issue order."""
    bit = 1 << lane
    return [pc for pc, g in zip(run.trace, run.groups) if g & bit]


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
    segments = [trace[positions[i] + 1 : positions[i + 1] + 1] for i in range(len(positions) - 1)]
    return segments, len(positions)
