"""Command-line entry point (also what torchrun runs: torchrun ... -m alexnet_cuda.train ...)."""

from __future__ import annotations

import logging
import time

from .config import build_parser, config_from_args
from .demo import apply_demo
from .loop import NonFiniteLossError, train

log = logging.getLogger("alexnet_cuda.train")


def main(argv=None) -> int:
    cfg, demo, given = config_from_args(argv)
    if demo:
        cfg = apply_demo(cfg, given)
    elif cfg.data is None and not cfg.synthetic:
        build_parser().error("give --data ROOT (an ImageFolder tree with train/ and val/), --synthetic N, or --demo")
    t0 = time.perf_counter()
    try:
        result = train(cfg)
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        return 3
    hist = result["history"]
    if hist:
        last = hist[-1]
        summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("val_top1_err", "val_top5_err", "val10_top1_err",
                                                          "val10_top5_err") if k in last)
        log.info("done in %.0f s: %d epochs%s%s", time.perf_counter() - t0, len(hist),
                 "; " if summary else "", summary)
    if result["skipped_train"]:
        log.warning("%d unreadable training images were skipped", result["skipped_train"])
    return 130 if result["interrupted"] else 0
