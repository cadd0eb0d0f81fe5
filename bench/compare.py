"""Compare two bench/run.py results.json files: regressions beyond noise, missing and new cases.

    python bench/compare.py OLD/results.json NEW/results.json [--threshold 0.10] [--allow-missing]

Cases are matched by (group, case, dtype, layout, direction). For each case in both files,
our time (``ours_ms``; for training-loop rows the full loop, the bare step and the
augmentation) is compared. A slow-down counts as a REGRESSION only when it exceeds

    max(threshold, noise),   noise = the larger of the two runs' IQR / median

where IQR is the interquartile range of that timing's repeated runs, stored by run.py next
to the median (``<impl>_q1_ms``, ``<impl>_q3_ms``; files without them count as noiseless, so
only the threshold applies). A speed-up beyond the same limit is reported as "faster".

Also flagged: cases of the old file that are missing from the new one (MISSING: a group
that stopped importing, a case that was dropped), cases whose correctness gate or timing
failed in the new run (ERROR), and, for information, cases that are new and cases that
failed in the old run and pass in the new one (fixed).

Only runs on the same device are comparable; different devices, batch sizes or a reduced
(CPU) run against a full one give a warning. Exit code 1 when there is a regression, an
error, or a missing case (unless --allow-missing, e.g. to compare a --only run with a
full one); 0 otherwise.
"""

import argparse
import json
import sys

TIMED = ("ours", "loop", "bare", "augment")  # timings that are ours (stock ones are context)


def key(row):
    return (row.get("group", ""), row["case"], row.get("dtype", ""), row.get("layout", ""), row.get("direction", ""))


def label(k):
    return " ".join(str(p) for p in k[1:] if p)


def rel_iqr(row, impl):
    """(q3 - q1) / median of one timing, 0.0 when the file does not have the quartiles."""
    ms, q1, q3 = row.get(f"{impl}_ms"), row.get(f"{impl}_q1_ms"), row.get(f"{impl}_q3_ms")
    if not ms or q1 is None or q3 is None:
        return 0.0
    return max(0.0, (q3 - q1) / ms)


def errors(row):
    """The new row's failures: the correctness gate, or one of our timings."""
    out = [row["error"]] if row.get("error") else []
    out += [f"{impl}: {row[f'{impl}_error']}" for impl in TIMED if row.get(f"{impl}_error")]
    return out


def compare(old, new, threshold):
    """(lines to print, counts) for two loaded results files."""
    lines, counts = [], {"regression": 0, "faster": 0, "error": 0, "missing": 0, "new": 0, "fixed": 0, "same": 0}
    for field, name in (("device", "device"), ("gpu", "GPU"), ("cpu", "CPU")):
        a, b = old["environment"].get(field), new["environment"].get(field)
        if a != b:
            lines.append(f"warning: different {name} ({a} vs {b}); timings are not comparable")
    if old.get("batch") != new.get("batch"):
        lines.append(f"warning: different batch sizes ({old.get('batch')} vs {new.get('batch')})")
    if bool(old.get("reduced")) != bool(new.get("reduced")) or bool(old.get("quick")) != bool(new.get("quick")):
        lines.append("warning: one run is reduced/--quick and the other is not: different repetitions and cases")

    old_rows = {key(r): r for r in old["rows"]}
    new_rows = {key(r): r for r in new["rows"]}
    lines.append(f"{'case':66s} {'timing':8s} {'old ms':>9s} {'new ms':>9s} {'change':>8s} {'noise':>6s}  verdict")
    for k, row in new_rows.items():
        before = old_rows.get(k)
        errs = errors(row)
        if errs:
            counts["error"] += 1
            was = "" if before is None or errors(before) else " (passed before)"
            lines.append(f"{label(k):66s} {'':8s} {'':>9s} {'':>9s} {'':>8s} {'':>6s}  ERROR{was}: {errs[0][:80]}")
            continue
        if before is None:
            counts["new"] += 1
            ms = next((row[f"{i}_ms"] for i in TIMED if row.get(f"{i}_ms") is not None), None)
            lines.append(
                f"{label(k):66s} {'':8s} {'-':>9s} {'-' if ms is None else format(ms, '9.3f'):>9s} "
                f"{'':>8s} {'':>6s}  new"
            )
            continue
        if errors(before):  # no old timing to compare with: say that it passes now
            counts["fixed"] += 1
            lines.append(
                f"{label(k):66s} {'':8s} {'':>9s} {'':>9s} {'':>8s} {'':>6s}  "
                f"fixed (was ERROR: {errors(before)[0][:60]})"
            )
        for impl in TIMED:
            a, b = before.get(f"{impl}_ms"), row.get(f"{impl}_ms")
            if not a or not b:
                continue
            change = b / a - 1
            noise = max(rel_iqr(before, impl), rel_iqr(row, impl))
            limit = max(threshold, noise)
            if change > limit:
                verdict = f"REGRESSION (> {100 * limit:.0f}%)"
                counts["regression"] += 1
            elif change < -limit:
                verdict = "faster"
                counts["faster"] += 1
            else:
                verdict = "" if abs(change) <= threshold else f"within noise ({100 * noise:.0f}%)"
                counts["same"] += 1
            lines.append(
                f"{label(k):66s} {impl:8s} {a:9.3f} {b:9.3f} {100 * change:+7.1f}% {100 * noise:5.0f}%  {verdict}"
            )
    for k in old_rows:
        if k not in new_rows:
            counts["missing"] += 1
            lines.append(f"{label(k):66s} {'':8s} {'':>9s} {'':>9s} {'':>8s} {'':>6s}  MISSING from the new run")
    lines.append("")
    lines.append(
        f"{counts['regression']} regression(s) beyond max({100 * threshold:.0f}%, noise), "
        f"{counts['error']} error(s), {counts['missing']} missing case(s), {counts['new']} new, "
        f"{counts['fixed']} fixed, {counts['faster']} faster"
    )
    return lines, counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="relative slow-down that counts when the runs' own noise is smaller (default 0.10)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="cases of OLD that NEW lacks are listed but do not fail the comparison",
    )
    args = p.parse_args(argv)
    with open(args.old) as f:
        old = json.load(f)
    with open(args.new) as f:
        new = json.load(f)
    lines, counts = compare(old, new, args.threshold)
    print("\n".join(lines))
    bad = counts["regression"] + counts["error"] + (0 if args.allow_missing else counts["missing"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
