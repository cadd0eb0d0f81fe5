"""Progress bars, metrics files and curves. tqdm, tensorboard and matplotlib are optional:
without them training runs the same, with plain log lines, no TensorBoard files and no PNG."""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from typing import Dict, List, Optional

log = logging.getLogger("alexnet_cuda.train")


def setup_logging(is_main: bool) -> None:
    if not logging.getLogger().handlers and not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.WARNING)


class _PlainProgress:
    """Fallback when tqdm is missing or output is not a terminal: a log line every few seconds."""

    def __init__(self, total: Optional[int], desc: str, every_s: float = 30.0):
        self.total, self.desc, self.n, self.every_s = total, desc, 0, every_s
        self.t0 = self.last = time.perf_counter()
        self.postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            eta = ""
            if self.total:
                rate = self.n / max(now - self.t0, 1e-9)
                eta = f" eta {(self.total - self.n) / max(rate, 1e-9):.0f}s"
            log.info("%s %d/%s%s %s", self.desc, self.n, self.total or "?", eta, self.postfix)

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        pass


def make_progress(total: Optional[int], desc: str, mode: str, is_main: bool, initial: int = 0):
    """tqdm bar (loss, img/s in the postfix; tqdm shows the ETA) or the plain fallback."""
    enabled = is_main and (mode == "on" or (mode == "auto" and sys.stderr.isatty()))
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=False)
        except ImportError:
            pass
    bar = _PlainProgress(total, desc, every_s=30.0 if is_main else float("inf"))
    bar.n = initial
    return bar


class MetricsWriter:
    """metrics.csv (one row per epoch), steps.csv (every log_every steps) and TensorBoard."""

    def __init__(self, out_dir: str, enabled: bool, tensorboard: bool, resume: bool):
        self.enabled = enabled
        self.out_dir = out_dir
        self.tb = None
        self._epoch_fields: Optional[List[str]] = None
        if not enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        self.epoch_path = os.path.join(out_dir, "metrics.csv")
        self.step_path = os.path.join(out_dir, "steps.csv")
        if not resume:
            for p in (self.epoch_path, self.step_path):
                if os.path.exists(p):
                    os.remove(p)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:
                log.info("tensorboard is not installed: skipping TensorBoard logs (metrics.csv has everything)")

    def drop_rows_after(self, step: int, epoch: int) -> None:
        """On resume: drop steps.csv rows after ``step`` and metrics.csv rows of epochs from
        ``epoch`` on, which a run killed after its last checkpoint wrote; they are written again."""
        if not self.enabled:
            return
        for path, key, keep in (
            (self.step_path, "step", lambda v: int(v) <= step),
            (self.epoch_path, "epoch", lambda v: int(v) < epoch),
        ):
            if not os.path.exists(path):
                continue
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames, [r for r in reader if keep(r[key])]
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)

    def _append(self, path: str, row: Dict) -> None:
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row.keys()))
            if new:
                w.writeheader()
            w.writerow(row)

    def step(self, step: int, row: Dict) -> None:
        if not self.enabled:
            return
        self._append(self.step_path, {"step": step, **row})
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def epoch(self, row: Dict) -> None:
        if not self.enabled:
            return
        self._append(self.epoch_path, row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self.tb.add_scalar(f"epoch/{k}", v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_curves(history: List[Dict], path: str) -> bool:
    """loss and error curves per epoch to a PNG; False (with a note) without matplotlib."""
    if not history:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: skipping %s", path)
        return False
    ep = [h["epoch"] + 1 for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(ep, [h["train_loss"] for h in history], label="train loss")
    if "val_loss" in history[0]:
        a1.plot(ep, [h.get("val_loss") for h in history], label="val loss (centre crop)")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.legend()
    a2.plot(ep, [h["train_top1_err"] for h in history], label="train top-1 (augmented)")
    for k, lab in (
        ("val_top1_err", "val top-1 (centre)"),
        ("val_top5_err", "val top-5 (centre)"),
        ("val10_top1_err", "val top-1 (10-crop)"),
        ("val10_top5_err", "val top-5 (10-crop)"),
    ):
        if k in history[0]:
            a2.plot(ep, [h.get(k) for h in history], label=lab)
    a2.set_xlabel("epoch")
    a2.set_ylabel("error")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
