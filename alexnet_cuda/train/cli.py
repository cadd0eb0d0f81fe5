"""Command-line entry point (also what torchrun runs: torchrun ... -m alexnet_cuda.train ...).

Exit codes: 0 done, 2 a bad option, data folder or checkpoint (one message, no traceback),
3 training diverged (a NaN/inf loss, or one above the limit: see monitor.py; the message ends
with the options to add to resume), 130 stopped by a signal (checkpointed; --resume goes on).
"""

from __future__ import annotations

import logging
import time

from .checkpoint import CheckpointError
from .config import build_parser, check_config, check_machine, check_paths, config_from_args
from .data import DataError
from .demo import apply_demo, apply_demo_defaults
from .loop import NonFiniteLossError, train
from .resume import ResumeError

log = logging.getLogger("alexnet_cuda.train")


def _config(argv):
    """The run's TrainConfig; bad values end here with argparse's usage error (exit 2)."""
    cfg, demo, given = config_from_args(argv)
    parser = build_parser()
    if demo:
        apply_demo_defaults(cfg, given)
    elif cfg.data is None and not cfg.synthetic:
        parser.error("give --data ROOT (an ImageFolder tree with train/ and val/), --synthetic N, or --demo")
    problems = check_config(cfg) or check_machine(cfg) + check_paths(cfg)
    if problems:
        parser.error("; ".join(problems))
    return apply_demo(cfg, given) if demo else cfg


def _summary(result, t0: float) -> None:
    hist = result["history"]
    if hist:
        last = hist[-1]
        summary = ", ".join(
            f"{k} {last[k]:.4f}"
            for k in ("val_top1_err", "val_top5_err", "val10_top1_err", "val10_top5_err")
            if k in last
        )
        log.info("done in %.0f s: %d epochs%s%s", time.perf_counter() - t0, len(hist), "; " if summary else "", summary)
    if result["skipped_train"]:
        log.warning("%d unreadable training images were skipped", result["skipped_train"])


def main(argv=None) -> int:
    cfg = _config(argv)
    t0 = time.perf_counter()
    try:
        result = train(cfg)
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        return 3
    except (CheckpointError, ResumeError, DataError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    _summary(result, t0)
    return 130 if result["interrupted"] else 0
