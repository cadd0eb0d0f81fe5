"""Benchmark alexnet_cuda's ops and model against stock PyTorch (eager and torch.compile).

    python bench/run.py                 # everything, on the GPU if there is one
    python bench/run.py --only lrn --dtype fp32 --layout nchw
    python bench/run.py --only loop     # training loop: bare step vs data + augmentation + step
    python bench/run.py --only data     # input pipeline: images/s per core, ImageFolder vs prepared shards
    python bench/run.py --quick         # a smoke run (10-30 s on a 2-core CPU)

Every op/model case is checked for correctness (ours vs stock eager, or the case's own gate:
the training step's compares gradients and updates) before it is timed; a wrong result is
reported as WRONG and not timed. Times are medians, with the interquartile
range of the runs kept in results.json: on CUDA from CUDA events via triton.testing.do_bench
(L2 flushed between runs, inputs rotated over 3 buffers), on CPU from perf_counter. On CUDA
each row also has the host's time per call (3 calls launched without waiting): a row whose
host time reaches its GPU time measures Python and dispatch, not kernels. The
ceilings (copy bandwidth, matmul rate) are measured in the same run on the same device, so
"% of copy" compares like with like. The loop group times alexnet_cuda.train's own
DataLoader, augmentation and step on synthetic in-memory images (see cases/loop.py).

CPU runs are reduced so that a 2-core machine finishes the default run in under ~2 minutes
and --quick in 10-30 s: fp32 only, batch 4 (2), three of the five conv layers (one with
--quick), fewer model cases, the demo's small net in the loop group, and each timing stops
after a short time budget (at least 2 runs). The report says so at the top. CUDA runs are
never reduced.

Exit status 1 when one of ours is WRONG or fails to run (a row with "error" or "ours_error"),
or the run was interrupted; 0 otherwise. A stock baseline that fails (eager, torch.compile)
is footnoted in the report but does not fail the run: it says nothing about our kernels.

Results go to OUT/report.md (one table per group), OUT/results.json and OUT/chart.png
(matplotlib), with OUT defaulting to bench/results/<device>. `python bench/compare.py
OLD.json NEW.json` flags regressions beyond noise, and missing cases, between two runs.
"""

import argparse
import datetime
import importlib
import json
import os
import platform
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chart import plot  # noqa: E402
from common import (
    DTYPES,
    LAYOUTS,
    Config,
    describe_error,
    measure_copy_bandwidth,  # noqa: E402
    measure_matmul_rate,
    sync,
    tf32,
    time_stats,
)

# One group per op, named as the op (bench/cases/<op>.py), plus the whole-model groups.
GROUPS = ["lrn", "max_pool2d", "relu_lrn_max_pool2d", "conv2d_relu", "model", "loop", "host", "data"]
TITLES = {
    "lrn": "Local response normalization (size 5, the paper's constants)",
    "max_pool2d": "Overlapping max-pool 3/2",
    "relu_lrn_max_pool2d": "Fused ReLU -> LRN -> max-pool 3/2 (lrn_groups=2)",
    "conv2d_relu": "Fused conv2d + bias + ReLU (AlexNet's five conv layers)",
    "model": "Whole model: training step and inference",
    "loop": "Training loop: bare step vs data + augmentation + step (synthetic in-memory images)",
    "host": "Host time per call at a tiny shape, one thread: ours vs the stock composition (cases/host.py)",
    "data": "Input pipeline: images/s per core of ImageFolder, JPEG-256 and raw shards (cases/data.py)",
}
# What a CPU run leaves out, compared with a CUDA run (CPU runs are smoke tests and CPU-kernel
# checks at a small batch; their times say nothing about a GPU).
CPU_REDUCED = (
    "fp32 only unless --dtype says otherwise; batch 4 (2 with --quick); "
    "conv: conv1, conv2 and conv5 (conv5 with --quick); model: fp32 only, one model pair "
    "shared by the inference and training cases (inference first), nchw only with --quick; "
    "loop: the demo's SmallAlexNet on 28x28 images instead of AlexNet; on CPU every timing "
    "is 2 or more runs within a 0.2 s (--quick) / 0.5 s budget instead of CUDA's 40 / 200 ms of "
    "do_bench runs; denormals flushed to zero (torch.set_flush_denormal) for stock and ours alike"
)


def comma_list(valid):
    """argparse type: a comma-separated, non-empty selection from ``valid``, as a list; an
    unknown name is an error listing the valid ones (a typo must not run nothing, or fail
    after the ceilings were measured)."""

    def parse(text):
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) if unknown else 'nothing'} given; choose from {','.join(valid)}"
            )
        return names

    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--only",
        default=",".join(GROUPS),
        type=comma_list(GROUPS),
        help=f"comma-separated groups to run (default: all of {','.join(GROUPS)}; "
        "groups whose op is not in this build are skipped with a note)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        type=comma_list(list(DTYPES)),
        help="comma-separated: fp32,bf16,fp16 (default fp32,bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--layout",
        default="nchw,nhwc",
        type=comma_list(list(LAYOUTS)),
        help="comma-separated: nchw,nhwc (default both)",
    )
    p.add_argument(
        "--batch", type=int, default=None, help="batch size (default 128 on CUDA, 4 on CPU, 2 with --quick on CPU)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="first shape of each op only, fewer conv layers and repetitions: a smoke run "
        "(10-30 s on a 2-core CPU, depending on what else runs there)",
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument(
        "--compile",
        action="store_true",
        help="time torch.compile baselines on CPU too (on by default on CUDA only: "
        "compiling every case takes minutes on a small CPU)",
    )
    p.add_argument(
        "--max-autotune",
        action="store_true",
        help="the model group's torch.compile rows (stock and ours) in mode 'max-autotune' (default mode otherwise)",
    )
    p.add_argument("--device", default=None, choices=["cuda", "cpu"], help="cuda or cpu (default: cuda if available)")
    p.add_argument("--out", default=None, help="output folder (default bench/results/<device>)")
    return p.parse_args(argv)


def environment(device):
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device == "cuda":
        on = {True: "on", False: "off"}
        env["tf32"] = (
            f"cudnn {on[bool(torch.backends.cudnn.allow_tf32)]}, matmul "
            f"{on[bool(torch.backends.cuda.matmul.allow_tf32)]} unless a row's tf32 says "
            "otherwise (fp32 model rows: both on)"
        )
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            import subprocess

            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except Exception:
            env["driver"] = None
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def run_case(case, cfg, ceilings):
    if case.tf32 is None:
        return _run_case(case, cfg, ceilings)
    with tf32(case.tf32):
        return _run_case(case, cfg, ceilings)


def _run_case(case, cfg, ceilings):
    row = {
        "group": case.group,
        "case": case.name,
        "dtype": case.dtype,
        "layout": case.layout,
        "direction": case.direction,
        "bytes": case.bytes,
        "flops": case.flops,
        **case.extra,
    }
    if case.tf32 is not None:
        row["tf32"] = case.tf32
    # Every case compiles its own graphs: forget the previous cases' (same Python functions
    # at other shapes/dtypes would otherwise count towards dynamo's recompile limit).
    torch._dynamo.reset()
    try:
        inputs = [case.make_inputs() for _ in range(3)]
    except Exception as exc:  # noqa: BLE001 - the case's error, not the run's
        row["error"] = f"inputs: {describe_error(exc)}"
        return row
    # Correctness gate: ours vs stock eager (or the case's reference) on the same inputs,
    # or the case's own gate.
    try:
        if case.gate:
            row.update(case.gate(*inputs[0]) or {})
        else:
            ours = case.impls["ours"](*inputs[0])
            ref = (case.reference or case.impls["eager"])(*inputs[0])
            if case.check:
                case.check(ours, ref)
            del ours, ref
    except Exception as exc:  # noqa: BLE001 - report and move on
        row["error"] = f"WRONG: {describe_error(exc)}"
        return row
    # On the CPU the gate's call was the warm-up of the impls it ran (a case's own gate runs
    # ours); on CUDA every impl gets its own warm-up call here (and do_bench warms up again).
    gated = {"ours"} | (set() if case.reference or case.gate else {"eager"})
    for name, fn in case.impls.items():
        try:
            if cfg.device == "cuda" or name not in gated:
                t0 = time.perf_counter()
                fn(*inputs[0])  # warm-up (compilation for torch.compile)
                sync(cfg.device)
                if name == "compile":
                    row["compile_s"] = round(time.perf_counter() - t0, 2)
            stats = time_stats(fn, inputs, cfg.device, cfg.quick, warmup=False)
            row[f"{name}_ms"] = stats["ms"]
            row[f"{name}_q1_ms"], row[f"{name}_q3_ms"], row[f"{name}_n"] = stats["q1_ms"], stats["q3_ms"], stats["n"]
            if "host_ms" in stats:
                row[f"{name}_host_ms"] = stats["host_ms"]
        except Exception as exc:  # noqa: BLE001
            row[f"{name}_error"] = describe_error(exc)
    ms = row.get("ours_ms")
    if ms:
        for base in ("eager", "compile"):
            if row.get(f"{base}_ms"):
                row[f"speedup_vs_{base}"] = row[f"{base}_ms"] / ms
        if case.bytes:
            row["ours_GBps"] = case.bytes / (ms * 1e-3) / 1e9
            row["pct_copy_bw"] = 100 * row["ours_GBps"] / ceilings["copy_GBps"]
            row["floor_ms"] = case.bytes / (ceilings["copy_GBps"] * 1e9) * 1e3
        if case.extra.get("images"):
            row["ours_img_per_s"] = case.extra["images"] / (ms * 1e-3)
        if case.flops:
            row["ours_TFLOPs"] = case.flops / (ms * 1e-3) / 1e12
            rate = ceilings.get("matmul_bf16_TFLOPs" if case.dtype in ("bf16", "fp16") else "matmul_tf32_TFLOPs")
            if case.dtype == "fp32" and row.get("tf32") is False:
                rate = None  # IEEE fp32: no measured ceiling to compare with (tf32's would flatter)
            if rate:
                row["pct_matmul"] = 100 * row["ours_TFLOPs"] / rate
    return row


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _num(key, spec, suffix=""):
    return lambda r, foot: None if r.get(key) is None else format(r[key], spec) + suffix


def _impl_ms(impl):
    """An implementation's median ms, or a footnoted error (WRONG rows: the gate's error on ours)."""

    def cell(r, foot):
        if impl == "ours" and "error" in r:
            return foot(r["error"])
        if r.get(f"{impl}_ms") is not None:
            return format(r[f"{impl}_ms"], ".3f")
        if r.get(f"{impl}_error"):
            return foot(f"{impl}: {r[f'{impl}_error']}")
        return None

    return cell


def _spread(impl):
    """Interquartile range of the timed runs as a percentage of the median."""

    def cell(r, foot):
        ms, q1, q3 = r.get(f"{impl}_ms"), r.get(f"{impl}_q1_ms"), r.get(f"{impl}_q3_ms")
        if not ms or q1 is None or q3 is None:
            return None
        return f"{100 * (q3 - q1) / ms:.0f}% (n={r.get(f'{impl}_n', '?')})"

    return cell


def _peak(r, foot):
    vals = [r.get(f"{i}_peak_mib") for i in ("ours", "eager", "compile")]
    if all(v is None for v in vals):
        return None
    return " / ".join("-" if v is None else f"{v:,.0f}" for v in vals)


_ID = [
    ("case", lambda r, f: r["case"]),
    ("dtype", lambda r, f: r["dtype"]),
    ("layout", lambda r, f: r["layout"]),
    ("dir", lambda r, f: r.get("direction")),
]
OP_COLUMNS = _ID + [
    ("ours ms", _impl_ms("ours")),
    ("eager ms", _impl_ms("eager")),
    ("compile ms", _impl_ms("compile")),
    ("ours IQR", _spread("ours")),
    ("ours host ms", _num("ours_host_ms", ".3f")),
    ("vs eager", _num("speedup_vs_eager", ".2f", "x")),
    ("vs compile", _num("speedup_vs_compile", ".2f", "x")),
    ("floor ms", _num("floor_ms", ".3f")),
    ("GB/s", _num("ours_GBps", ".0f")),
    ("% copy BW", _num("pct_copy_bw", ".0f")),
    ("TFLOP/s", _num("ours_TFLOPs", ".1f")),
    ("% matmul", _num("pct_matmul", ".0f")),
    ("img/s", _num("ours_img_per_s", ",.0f")),
    ("peak MiB ours / eager / compile", _peak),
    ("compile s", _num("compile_s", ".1f")),
]
LOOP_COLUMNS = _ID[:3] + [
    ("batch", _num("images", "d")),
    ("workers", _num("workers", "d")),
    ("bare step ms", _impl_ms("bare")),
    ("full loop ms", _impl_ms("loop")),
    ("augment ms", _impl_ms("augment")),
    ("full loop IQR", _spread("loop")),
    ("bare img/s", _num("bare_img_per_s", ",.0f")),
    ("full loop img/s", _num("loop_img_per_s", ",.0f")),
    ("full / bare", _num("loop_vs_bare_pct", ".0f", "%")),
    ("data only img/s", _num("data_img_per_s", ",.0f")),
]


def _us(impl):
    """An implementation's median in microseconds (the host group's scale), or ours' error."""

    def cell(r, foot):
        if impl == "ours" and "error" in r:
            return foot(r["error"])
        return None if r.get(f"{impl}_ms") is None else f"{1e3 * r[f'{impl}_ms']:.1f}"

    return cell


HOST_COLUMNS = _ID + [
    ("ours us", _us("ours")),
    ("stock us", _us("eager")),
    ("ours / stock", _num("ours_over_stock", ".2f")),
    ("ours IQR", _spread("ours")),
    ("stock IQR", _spread("eager")),
    ("stock", lambda r, f: r.get("stock")),
]
DATA_COLUMNS = [
    ("case", lambda r, f: r["case"]),
    ("workers", _num("workers", "d")),
    ("img/s", lambda r, f: f(r["error"]) if "error" in r else _num("img_per_s", ",.0f")(r, f)),
    (
        "min..max img/s",
        lambda r, f: (
            None if r.get("min_img_per_s") is None else f"{r['min_img_per_s']:,.0f}..{r['max_img_per_s']:,.0f}"
        ),
    ),
    ("img/s per core", _num("img_per_s_per_core", ",.0f")),
    ("cores for 13,100/s", _num("cores_for_13100", "d")),
    ("cores for 36,600/s", _num("cores_for_36600", "d")),
    ("KB/image", lambda r, f: None if r.get("bytes_per_image") is None else f"{r['bytes_per_image'] / 1e3:.1f}"),
    ("bare img/s", _num("bare_img_per_s", ",.0f")),
    ("in-memory loop img/s", _num("memory_img_per_s", ",.0f")),
    ("loop img/s", _num("loop_img_per_s", ",.0f")),
    ("loop / bare", _num("loop_vs_bare_pct", ".0f", "%")),
    ("loop / in-memory", _num("loop_vs_memory_pct", ".0f", "%")),
]
COLUMNS = {"loop": LOOP_COLUMNS, "host": HOST_COLUMNS, "data": DATA_COLUMNS}  # other groups: OP_COLUMNS
ALWAYS = {"case", "dtype", "layout", "dir", "ours ms", "ours us"}


def table(rows, columns=OP_COLUMNS):
    """A Markdown table of rows; columns that are empty in every row are left out; errors are
    footnoted below the table ("[n]") rather than squeezed into cells."""
    notes = []

    def foot(text):
        notes.append(text)
        return f"error [{len(notes)}]"

    cells = [[fn(r, foot) for _, fn in columns] for r in rows]
    keep = [j for j, (head, _) in enumerate(columns) if head in ALWAYS or any(c[j] is not None for c in cells)]
    lines = ["| " + " | ".join(columns[j][0] for j in keep) + " |", "|" + "---|" * len(keep)]
    for c in cells:
        lines.append("| " + " | ".join("-" if c[j] is None else str(c[j]) for j in keep) + " |")
    if notes:
        lines += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def tables(rows, groups):
    """One section per group, in the order run."""
    out = []
    for g in groups:
        sel = [r for r in rows if r.get("group") == g]
        if not sel:
            continue
        out += [f"## {g}: {TITLES.get(g, g)}", "", table(sel, COLUMNS.get(g, OP_COLUMNS)), ""]
    return "\n".join(out)


def _write_atomic(path, text):
    """Write via a temporary file and a rename: a run killed mid-write leaves the previous
    complete file, never a truncated one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_outputs(out_dir, env, cfg, ceilings, rows, notes, groups, final=False):
    """report.md, results.json and (final=True) chart.png; also called after every case,
    so an interrupted run keeps what it measured."""
    report = [
        f"# alexnet_cuda benchmark ({env['date']})",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None),
        "",
    ]
    if cfg.reduced:
        report += [
            f"**Reduced CPU run**: {CPU_REDUCED}. CPU times measure this project's CPU kernels "
            "at a small batch and say nothing about a GPU.",
            "",
        ]
    report += [
        f"Batch {cfg.batch}{', --quick' if cfg.quick else ''}. Ceilings measured in this run: "
        + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()),
        "",
        "Median ms; IQR = interquartile range of the timed runs over the median (n runs); "
        "host ms (CUDA) = the host's time per call of ours (Python, dispatch, launches), "
        "which bounds its ms from below; "
        "speed-up = stock ms / ours ms; floor = the case's fewest bytes at the measured copy "
        "bandwidth; % copy BW = floor / ours; % matmul = our TFLOP/s against the measured matmul "
        "rate (bf16 for bf16/fp16 cases, tf32 for fp32). '-' = not run or not applicable "
        "(e.g. compile off); errors are footnoted under each table.",
        "",
        tables(rows, groups),
    ]
    if notes:
        report += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    _write_atomic(os.path.join(out_dir, "report.md"), "\n".join(report))
    results = {
        "environment": env,
        "batch": cfg.batch,
        "quick": cfg.quick,
        "reduced": cfg.reduced,
        "reduced_note": CPU_REDUCED if cfg.reduced else None,
        "groups": groups,
        "ceilings": ceilings,
        "rows": rows,
        "notes": notes,
    }
    _write_atomic(os.path.join(out_dir, "results.json"), json.dumps(results, indent=1))
    chart = plot(results, os.path.join(out_dir, "chart.png")) if final else None
    if final:
        print()
        print(tables(rows, groups))
        print(
            f"\nwrote {out_dir}/report.md, results.json"
            + (", chart.png" if chart else " (no chart: matplotlib missing)")
        )


def _status(row):
    if "error" in row:
        return row["error"]
    if row.get("group") == "data":
        if "loop_vs_bare_pct" in row:
            return f"loop {fmt(row.get('loop_img_per_s'), ',.0f')} img/s = {row['loop_vs_bare_pct']:.0f}% of bare"
        return f"{row['case']}, {row['workers']} worker(s): {fmt(row.get('img_per_s'), ',.0f')} img/s"
    if row.get("group") == "loop":
        return (
            f"bare {fmt(row.get('bare_img_per_s'), ',.0f')} img/s, full loop {fmt(row.get('loop_img_per_s'), ',.0f')}"
            f" img/s ({fmt(row.get('loop_vs_bare_pct'), '.0f')}%), augment {fmt(row.get('augment_ms'), '.3f')} ms"
        )
    return ", ".join(
        f"{impl} "
        + (
            fmt(row.get(f"{impl}_ms"), ".3f") + " ms"
            if f"{impl}_error" not in row
            else f"error ({row[f'{impl}_error'][:60]})"
        )
        for impl in ("ours", "eager", "compile")
        if f"{impl}_ms" in row or f"{impl}_error" in row
    )


def main(argv=None):
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device == "cuda" else (2 if args.quick else 4))
    cfg = Config(
        device=device,
        batch=batch,
        dtypes=args.dtype or (["fp32", "bf16"] if device == "cuda" else ["fp32"]),
        layouts=args.layout,
        quick=args.quick,
        compile=not args.no_compile and (device == "cuda" or args.compile),
        reduced=device != "cuda",
        max_autotune=args.max_autotune,
    )
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        # Denormal floats (the paper's N(0, 0.01) init produces them in the gradients within a
        # few SGD steps) are many times slower on x86; stock and ours alike run with them flushed.
        torch.set_flush_denormal(True)
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", device)
    os.makedirs(out_dir, exist_ok=True)
    env = environment(device)
    print(f"alexnet_cuda benchmark on {env.get('gpu', env.get('cpu'))} ({device}), batch {batch}", flush=True)
    if cfg.reduced:
        print(f"Reduced CPU run (the CPU kernels at a small batch, not a GPU result): {CPU_REDUCED}", flush=True)
    if not cfg.compile:
        print("torch.compile baselines: off" + ("" if args.no_compile else " on CPU (pass --compile to time them)"))

    # A time-limited run (`timeout` sends SIGTERM; .ci/gpu uses it) stops cleanly: the
    # outputs are rewritten after every case, and the final report (with the chart) says
    # where the run stopped. Only the case in flight is lost.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    ceilings, rows, notes, groups = {}, [], [], []
    try:
        ceilings["copy_GBps"] = measure_copy_bandwidth(device, quick=cfg.quick and device != "cuda")
        if device == "cuda":
            ceilings["matmul_bf16_TFLOPs"] = measure_matmul_rate(device, torch.bfloat16)
            ceilings["matmul_tf32_TFLOPs"] = measure_matmul_rate(device, torch.float32, tf32=True)
        print("ceilings measured in this run: " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()), flush=True)
        for group in args.only:
            _run_group(
                group,
                cfg,
                ceilings,
                rows,
                notes,
                groups,
                lambda: write_outputs(out_dir, env, cfg, ceilings, rows, notes, groups),
            )
    except (KeyboardInterrupt, _Stopped) as exc:
        why = "SIGTERM (time limit)" if isinstance(exc, _Stopped) else "Ctrl-C"
        notes.append(
            f"Interrupted by {why} after {len(rows)} cases: the groups and cases after that point were not run."
        )
        print(f"\n[interrupted] {why}; writing what was measured", flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the final write is not interrupted
    write_outputs(out_dir, env, cfg, ceilings, rows, notes, groups, final=True)
    return exit_status(rows, notes)


def exit_status(rows, notes):
    """1 when one of ours failed (the gate, or a timing of ours) or the run was interrupted.
    Stock baselines' errors (eager_error, compile_error) do not count (see the docstring)."""
    failed = any(r.get("error") or r.get("ours_error") for r in rows)
    return 1 if failed or any(n.startswith("Interrupted") for n in notes) else 0


class _Stopped(BaseException):
    """Raised by the SIGTERM handler, so that the run writes its outputs and exits. A
    BaseException, like KeyboardInterrupt, so that the cases' `except Exception` (which
    records a failing implementation and moves on) does not swallow it."""


def _stop_on_sigterm(signum, frame):
    # `timeout` sends SIGTERM twice (to the process, then to its group): the second must
    # not cut the final write short. Its -k SIGKILL remains the backstop.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stopped()


def _run_group(group, cfg, ceilings, rows, notes, groups, save):
    """Run one group's cases, appending to rows/notes/groups; save() after every case."""
    t_group = time.perf_counter()
    try:
        module = importlib.import_module(f"cases.{group}")
    except ImportError as exc:
        notes.append(f"{group}: not benchmarked ({exc})")
        print(f"[skip] {group}: {exc}", flush=True)
        return
    groups.append(group)

    def progress(i, n, row):
        print(
            f"[{group} {i}/{n}] {row['case']} {row['dtype']} {row['layout']} {row.get('direction', '')}: "
            f"{_status(row)}",
            flush=True,
        )

    first = len(rows)
    if hasattr(module, "run_group"):  # groups that are not "ours vs stock" cases (loop)
        group_rows, group_notes = module.run_group(cfg, progress)
        rows += group_rows
        notes += group_notes
    else:
        group_cases = module.cases(cfg)
        for i, case in enumerate(group_cases, 1):
            rows.append(run_case(case, cfg, ceilings))
            progress(i, len(group_cases), rows[-1])
            save()
    # annotate(cfg, rows): per-group measurements that belong in the rows (peak memory)
    notes += getattr(module, "annotate", lambda cfg, rows: [])(cfg, rows[first:])
    notes += getattr(module, "extra_rows", lambda cfg: [])(cfg)
    secs = time.perf_counter() - t_group
    notes.append(
        f"{group}: {len(rows) - first} rows in {secs:.0f} s of wall time (compilation, "
        "tuning and correctness checks included)"
    )
    save()
    print(f"[{group}] {secs:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
