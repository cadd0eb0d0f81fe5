"""Benchmark alexnet_cuda's ops against stock PyTorch (eager and torch.compile) on one device.

    python bench/run.py                 # everything, on the GPU if there is one
    python bench/run.py --only lrn --dtype fp32 --layout nchw
    python bench/run.py --quick         # a smoke run (seconds on a CPU)

Every case is checked for correctness (ours vs stock eager) before it is timed; a wrong
result is reported as WRONG and not timed. Times are medians: on CUDA from CUDA events
via triton.testing.do_bench (L2 flushed between runs, inputs rotated over 3 buffers), on
CPU from perf_counter. The ceilings (copy bandwidth, matmul rate) are measured in the
same run on the same device, so "% of copy" compares like with like.

Results go to OUT/report.md, OUT/results.json and OUT/chart.png (matplotlib) with OUT
defaulting to bench/results/<device>. `python bench/compare.py OLD.json NEW.json` flags
regressions between two runs.
"""

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chart import plot  # noqa: E402
from common import Config, measure_copy_bandwidth, measure_matmul_rate, sync, time_fn  # noqa: E402

GROUPS = ["lrn", "maxpool", "stage", "conv", "model"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated groups to run (default: all of {','.join(GROUPS)}; "
                        "groups whose op is not in this build are skipped with a note)")
    p.add_argument("--dtype", default=None, help="comma-separated: fp32,bf16,fp16 (default fp32,bf16)")
    p.add_argument("--layout", default="nchw,nhwc", help="comma-separated: nchw,nhwc (default both)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 128 on CUDA, 8 on CPU, 2 with --quick on CPU)")
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions: a smoke run")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--compile", action="store_true",
                   help="time torch.compile baselines on CPU too (on by default on CUDA only: "
                        "compiling every case takes minutes on a small CPU)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
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
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            import subprocess

            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            env["driver"] = None
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def run_case(case, cfg, ceilings):
    row = {"group": case.group, "case": case.name, "dtype": case.dtype, "layout": case.layout,
           "direction": case.direction, "bytes": case.bytes, "flops": case.flops, **case.extra}
    # Every case compiles its own graphs: forget the previous cases' (same Python functions
    # at other shapes/dtypes would otherwise count towards dynamo's recompile limit).
    torch._dynamo.reset()
    inputs = [case.make_inputs() for _ in range(3)]
    # Correctness gate: ours vs stock eager (or the case's reference) on the same inputs.
    try:
        ours = case.impls["ours"](*inputs[0])
        ref = (case.reference or case.impls["eager"])(*inputs[0])
        if case.check:
            case.check(ours, ref)
    except Exception as exc:  # noqa: BLE001 - report and move on
        row["error"] = f"WRONG: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return row
    for name, fn in case.impls.items():
        try:
            t0 = time.perf_counter()
            fn(*inputs[0])  # warm-up (compilation for torch.compile)
            sync(cfg.device)
            if name == "compile":
                row["compile_s"] = round(time.perf_counter() - t0, 2)
            row[f"{name}_ms"] = time_fn(fn, inputs, cfg.device, cfg.quick)
        except Exception as exc:  # noqa: BLE001
            row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
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
            if case.dtype == "fp32" and case.extra.get("tf32") is False:
                rate = None  # IEEE fp32: no measured ceiling to compare with (tf32's would flatter)
            if rate:
                row["pct_matmul"] = 100 * row["ours_TFLOPs"] / rate
    return row


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(rows):
    head = ("| case | dtype | layout | dir | ours ms | eager ms | compile ms | vs eager | vs compile "
            "| GB/s | % copy BW | TFLOP/s | % matmul | img/s | compile s |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['dtype']} | {r['layout']} | {r['direction']} | {r['error']} |"
                         + " |" * 10)
            continue
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['layout']} | {r['direction']} | {fmt(r.get('ours_ms'), '.3f')} "
            f"| {fmt(r.get('eager_ms'), '.3f')} | {fmt(r.get('compile_ms'), '.3f')} "
            f"| {fmt(r.get('speedup_vs_eager'), '.2f')}x | {fmt(r.get('speedup_vs_compile'), '.2f')}x "
            f"| {fmt(r.get('ours_GBps'), '.0f')} | {fmt(r.get('pct_copy_bw'), '.0f')} "
            f"| {fmt(r.get('ours_TFLOPs'), '.1f')} | {fmt(r.get('pct_matmul'), '.0f')} "
            f"| {fmt(r.get('ours_img_per_s'), ',.0f')} | {fmt(r.get('compile_s'), '.1f')} |")
    return "\n".join(lines)


def write_outputs(out_dir, env, batch, ceilings, rows, notes, final=False):
    """report.md, results.json and chart.png; also called after every group, so an
    interrupted run keeps what it measured."""
    report = [f"# alexnet_cuda benchmark ({env['date']})", "",
              "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None), "",
              f"Batch {batch}. Ceilings measured in this run: "
              + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()), "",
              "Median ms; speed-up = stock ms / ours ms; % copy BW = the case's fewest bytes over our time, "
              "against the measured copy bandwidth; % matmul = our TFLOP/s against the measured matmul rate "
              "(bf16 for bf16/fp16 cases, tf32 for fp32).", "", table(rows), ""]
    if notes:
        report += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(report))
    results = {"environment": env, "batch": batch, "ceilings": ceilings, "rows": rows, "notes": notes}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    chart = plot(results, os.path.join(out_dir, "chart.png")) if final else None
    if final:
        print()
        print(table(rows))
        print(f"\nwrote {out_dir}/report.md, results.json" + (", chart.png" if chart else " (no chart: matplotlib missing)"))


def main(argv=None):
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device == "cuda" else (2 if args.quick else 8))
    cfg = Config(
        device=device,
        batch=batch,
        dtypes=(args.dtype or "fp32,bf16").split(","),
        layouts=args.layout.split(","),
        quick=args.quick,
        compile=not args.no_compile and (device == "cuda" or args.compile),
    )
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", device)
    os.makedirs(out_dir, exist_ok=True)
    env = environment(device)
    print(f"alexnet_cuda benchmark on {env.get('gpu', env.get('cpu'))} ({device}), batch {batch}"
          + ("" if device == "cuda" else " -- CPU run: the CPU kernels at a small batch, not a GPU result"),
          flush=True)
    if not cfg.compile:
        print("torch.compile baselines: off" + ("" if args.no_compile else " on CPU (pass --compile to time them)"))

    ceilings = {"copy_GBps": measure_copy_bandwidth(device)}
    if device == "cuda":
        ceilings["matmul_bf16_TFLOPs"] = measure_matmul_rate(device, torch.bfloat16)
        ceilings["matmul_tf32_TFLOPs"] = measure_matmul_rate(device, torch.float32, tf32=True)
    print("ceilings measured in this run: " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()), flush=True)

    rows, notes = [], []
    for group in args.only.split(","):
        try:
            module = importlib.import_module(f"cases.{group}")
        except ImportError as exc:
            notes.append(f"{group}: not benchmarked ({exc})")
            print(f"[skip] {group}: {exc}", flush=True)
            continue
        group_cases = module.cases(cfg)
        for i, case in enumerate(group_cases, 1):
            row = run_case(case, cfg, ceilings)
            rows.append(row)
            status = row.get("error") or (
                f"ours {fmt(row.get('ours_ms'), '.3f')} ms, eager {fmt(row.get('eager_ms'), '.3f')}, "
                f"compile {fmt(row.get('compile_ms'), '.3f')}")
            print(f"[{group} {i}/{len(group_cases)}] {case.name} {case.dtype} {case.layout} {case.direction}: {status}",
                  flush=True)
        for extra in getattr(module, "extra_rows", lambda cfg: [])(cfg):
            notes.append(extra)
        write_outputs(out_dir, env, batch, ceilings, rows, notes)

    write_outputs(out_dir, env, batch, ceilings, rows, notes, final=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
