"""Compare two bench/run.py results.json files and flag regressions.

    python bench/compare.py OLD/results.json NEW/results.json [--threshold 0.10]

A case regresses when our time grows by more than the threshold (default 10%, above
the run-to-run noise of do_bench medians on one GPU) relative to the old run. Cases are
matched by (case, dtype, layout, direction). Runs on different devices are compared
with a warning: only same-GPU comparisons are meaningful. Exit code 1 on regressions.
"""

import argparse
import json
import sys


def key(row):
    return (row["case"], row["dtype"], row["layout"], row["direction"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--threshold", type=float, default=0.10, help="relative slow-down that counts (default 0.10)")
    args = p.parse_args(argv)
    with open(args.old) as f:
        old = json.load(f)
    with open(args.new) as f:
        new = json.load(f)
    dev_old = old["environment"].get("gpu") or old["environment"].get("cpu")
    dev_new = new["environment"].get("gpu") or new["environment"].get("cpu")
    if dev_old != dev_new:
        print(f"warning: different devices ({dev_old} vs {dev_new}); timings are not comparable")
    old_rows = {key(r): r for r in old["rows"]}
    regressions = 0
    print(f"{'case':58s} {'old ms':>9s} {'new ms':>9s} {'change':>8s}")
    for row in new["rows"]:
        before = old_rows.get(key(row))
        label = " ".join(key(row))
        if "error" in row:
            print(f"{label:58s} {'':>9s} {'':>9s}  {row['error'][:40]}")
            regressions += 1
            continue
        if not before or not before.get("ours_ms") or not row.get("ours_ms"):
            print(f"{label:58s} {'-':>9s} {row.get('ours_ms', float('nan')):9.3f}      new")
            continue
        change = row["ours_ms"] / before["ours_ms"] - 1
        flag = "  REGRESSION" if change > args.threshold else ("  faster" if change < -args.threshold else "")
        regressions += change > args.threshold
        print(f"{label:58s} {before['ours_ms']:9.3f} {row['ours_ms']:9.3f} {100 * change:+7.1f}%{flag}")
    print(f"\n{regressions} regression(s) beyond {100 * args.threshold:.0f}%")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
