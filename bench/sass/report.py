"""The table, the test's budget table, and the command line."""

import argparse
import json
import math
import tempfile
import time

from . import cases as cs
from .measure import FULL_RUN_WARPS, TEST_WARPS, load_kernels, measure, verdicts
from .tools import built_extension, compile_cubins, extract_cubins


def run_cases(cases=None, compile_sources=False, warps=FULL_RUN_WARPS, progress=None):
    cases = cases or cs.all_cases()
    with tempfile.TemporaryDirectory() as tmp:
        stems = sorted({cs.cubin_stem(c) for c in cases})
        cubins = compile_cubins(tmp, stems) if compile_sources else extract_cubins(built_extension(), tmp)
        kernels = load_kernels(cubins, cases)
    # a configuration's forward and backward one after the other: they share its tensors
    order = sorted(
        range(len(cases)),
        key=lambda i: (cases[i].op, cases[i].dtype, cases[i].layout, cases[i].shape, cases[i].direction != "fwd"),
    )
    records = [None] * len(cases)
    for i in order:
        case, start = cases[i], time.perf_counter()
        records[i] = measure(case, kernels, warps)
        if progress:
            progress(f"{case.name} {case.dtype} {case.layout} {case.shape}: {time.perf_counter() - start:.1f} s")
    return records


def shape_str(shape):
    return "x".join(str(s) for s in shape)


def format_table(records):
    head = (
        f"{'kernel':<25}{'dtype':<6}{'layout':<7}{'shape':<15}{'instr/el':>9}{'diverg':>7}{'mufu/el':>8}"
        f"{'body':>6}{'trips':>6}{'regs':>5}{'spill':>6}{'occ':>5}{'KB/SM':>7}{'tail':>6}{'issue ms':>9}"
        f"{'mufu ms':>9}{'time ms':>9}{'floor ms':>9}{'checked':>9}  "
        f"{'t<=.7fl':<8}{'spills':<7}{'occ>=50%':<9}{'>=32KB':<7}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        mark = ["PASS" if ok else "over" for ok in verdicts(r).values()]
        lines.append(
            f"{r['kernel']:<25}{r['dtype']:<6}{r['layout']:<7}{shape_str(r['shape']):<15}{r['instr_per_elem']:>9.1f}"
            f"{r['divergence']:>7.2f}{r['mufu_per_elem']:>8.2f}{(r['loop_body_instr'] or 0):>6.0f}"
            f"{(r['loop_trips'] or 0):>6.0f}{r['registers']:>5}{r['spills']:>6}{r['occupancy'] * 100:>4.0f}%"
            f"{r['bytes_in_flight_per_sm'] / 1024:>7.1f}{r['tail']:>6.2f}{r['issue_bound_ms']:>9.4f}"
            f"{r['mufu_ms']:>9.4f}{r['time_ms']:>9.4f}{r['floor_ms']:>9.4f}{r['checked_outputs']:>9}  "
            f"{mark[0]:<8}{mark[1]:<7}{mark[2]:<9}{mark[3]:<7}"
        )
    return "\n".join(lines)


def budget_key(rec):
    return (rec["kernel"], rec["dtype"], rec["layout"], tuple(rec["shape"]))


def budget_table(records, slack=1.05):
    """tests/test_sass.py's BUDGETS and KNOWN_SPILLS, from these records: instr_per_elem
    upper bounds with `slack`, and the spill instructions each kernel has now."""
    lines = ["BUDGETS = {  # (kernel, dtype, layout, shape): max SASS warp instructions x 32 per element"]
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
    parser = argparse.ArgumentParser(
        prog="python -m bench.sass",
        description="Static performance read of the CUDA kernels from their sm_90 "
        "SASS, by whole-warp emulation on real data (bench/SASS.md).",
    )
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile csrc/*.cu for sm_90 (setup.py's flags) instead of reading the built extension",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help=f"print the BUDGETS table for tests/test_sass.py (samples its {TEST_WARPS} warps)",
    )
    parser.add_argument("--only", help="comma-separated ops: lrn,max_pool2d,relu_lrn_max_pool2d")
    parser.add_argument(
        "--warps",
        type=int,
        default=FULL_RUN_WARPS,
        help=f"sampled warps per record (default {FULL_RUN_WARPS}; tests/test_sass.py takes fewer)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each record's emulation time")
    args = parser.parse_args(argv)
    cases = cs.all_cases()
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c.op in keep]
    if args.update:
        args.warps = TEST_WARPS
    records = run_cases(cases, compile_sources=args.compile, warps=args.warps, progress=print if args.verbose else None)
    print(format_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.update:
        print()
        print(budget_table(records))
    return 0
