"""PNG chart of a bench/run.py result: speed-ups per case and the fraction of the floor reached."""

import json
import sys


def plot(results, path):
    """Write a two-panel chart: ours vs stock (compile, else eager), and % of copy bandwidth.

    Returns the path, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results["rows"] if r.get("ours_ms")]
    env = results["environment"]
    title = (
        f"alexnet_cuda on {env.get('gpu') or env.get('cpu')} ({env['device']}), "
        f"batch {results['batch']}, {env['date'][:10]}"
        + (" -- reduced CPU run, not a GPU result" if results.get("reduced") else "")
    )
    if not rows:  # e.g. --only loop: nothing of the "ours vs stock" kind to draw
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no op or model case was timed in this run (see report.md)", ha="center", va="center")
        fig.suptitle(title, fontsize=9)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    labels = [f"{r['case']} {r['dtype']} {r['layout']} {r['direction']}" for r in rows]
    has_compile = any(r.get("speedup_vs_compile") for r in rows)
    base = "compile" if has_compile else "eager"
    speedups = [r.get(f"speedup_vs_{base}") or 0.0 for r in rows]
    floor = [r.get("pct_copy_bw") or r.get("pct_matmul") or 0.0 for r in rows]
    height = max(4.0, 0.22 * len(rows) + 1.5)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, height), sharey=True)
    y = range(len(rows))
    ax1.barh(y, speedups, color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
    ax1.axvline(1.0, color="black", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel(f"speed-up over stock PyTorch {'torch.compile' if has_compile else 'eager'} (log)")
    ax1.set_yticks(list(y))
    ax1.set_yticklabels(labels, fontsize=7)
    ax1.invert_yaxis()
    ax2.barh(y, floor, color="tab:blue")
    ax2.axvline(100.0, color="black", lw=0.8)
    ax2.set_xlabel("% of the measured ceiling (copy bandwidth for memory-bound ops, matmul rate for convs)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/chart.py results.json chart.png")
    with open(sys.argv[1]) as f:
        print(plot(json.load(f), sys.argv[2]) or "matplotlib is not installed")
