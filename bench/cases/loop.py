"""Training-loop throughput: the bare training step vs the full loop the trainer runs.

Work order 8's check: with synthetic in-memory images (no disk, no decoding), the full loop
-- DataLoader (workers, collate, pinned memory) -> host-to-device copy -> the augmentation
on the device (random crop, flip, PCA lighting, mean subtraction) -> forward, backward and
the paper's SGD step -- must reach >= 90% of the img/s of the bare step, which is the same
step on one already augmented batch sitting on the device.

Nothing is re-implemented here: the data set, statistics and collate function come from
alexnet_cuda.train.data (SyntheticImages, synthetic_stats, collate_uint8), the DataLoader,
augmentation and step from alexnet_cuda.train.loop (_loader, make_augment, augment_batch,
train_step), the model from build_model and the optimiser is PaperSGD, all configured by
one TrainConfig as `python -m alexnet_cuda.train --synthetic N` would be.

Per dtype (fp32; bf16 = --amp bf16) and layout (nhwc = --channels-last), one row:

* bare: train_step on a pre-augmented batch, W steps back to back, then a sync; R such
  windows, each giving one ms/step sample (median and quartiles over the windows).
* full loop: the same, each step taking the next DataLoader batch and augmenting it.
* augment: augment_batch alone on a uint8 batch already on the device (time_stats:
  triton's do_bench on CUDA).
* data only (the same for every row): the DataLoader alone plus the copy to the device, no
  step: what the input pipeline can deliver at most.

The DataLoader's prefetch queue (workers x 4 batches) fills up while other things run; a
full queue would let a too-slow pipeline look fast for as many steps as it holds, so it is
drained before the full-loop and data-only windows (which then start with an empty queue:
at most one batch's wait, spread over the windows, counts against the loop).

CUDA: AlexNet (alexnet_cuda.models, fused kernels), 256x256 images, 227 crops, batch
cfg.batch (128), 4 workers (the trainer's default), W = 16 and R = 5. CPU (a smoke run):
the demo's SmallAlexNet on 28x28 images and 24 crops, 1 worker, W = 5, R = 3.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import torch

from common import Config, describe_error, summarize, sync, time_stats

from alexnet_cuda.train.config import TrainConfig
from alexnet_cuda.train.data import SyntheticImages, collate_uint8, synthetic_stats
from alexnet_cuda.train.loop import _loader, augment_batch, make_augment, train_step
from alexnet_cuda.train.model_factory import build_model
from alexnet_cuda.train.optim import PaperSGD

PREFETCH = 4  # alexnet_cuda.train.loop._loader's prefetch_factor


def _setup(cfg: Config) -> Dict[str, object]:
    if cfg.device == "cuda":
        geo = dict(arch="alexnet", image_size=256, crop=227, synthetic_classes=1000, workers=4, input_scale=1.0)
        images, window, repeats = max(4 * cfg.batch, 512), 16, 5
        name = f"AlexNet loop b{cfg.batch}, {{n}} synthetic 256x256 images"
    else:
        geo = dict(
            arch="small", width=16, image_size=28, crop=24, synthetic_classes=10, workers=1, input_scale=1 / 64
        )  # the demo's net and scale
        images, window, repeats = max(8 * cfg.batch, 64), 5, 3
        name = f"SmallAlexNet (CPU stand-in) loop b{cfg.batch}, {{n}} synthetic 28x28 images"
    return dict(
        geo=geo,
        images=images,
        window=max(window, PREFETCH * geo["workers"]),
        repeats=repeats,
        name=name.format(n=images),
    )


def _windows(step: Callable[[], None], device: str, window: int, repeats: int) -> Dict[str, float]:
    """ms per step over `repeats` windows of `window` back-to-back steps (sync at each end)."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(window):
            step()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3 / window)
    return summarize(times)


def _drain(it, n: int) -> None:
    for _ in range(n):
        next(it)


def _put(row: Dict, name: str, stats: Dict[str, float]) -> None:
    row[f"{name}_ms"] = stats["ms"]
    row[f"{name}_q1_ms"], row[f"{name}_q3_ms"], row[f"{name}_n"] = stats["q1_ms"], stats["q3_ms"], stats["n"]


def run_group(cfg: Config, progress: Callable) -> Tuple[List[Dict], List[str]]:
    s = _setup(cfg)
    device = torch.device(cfg.device)
    combos = [(dt, lay) for dt in cfg.dtypes if dt in ("fp32", "bf16") for lay in cfg.layouts]
    if cfg.reduced and cfg.quick:
        combos = combos[:1]
    base = TrainConfig(synthetic=s["images"], batch_size=cfg.batch, **s["geo"])
    dataset = SyntheticImages(base.synthetic, base.image_size, base.synthetic_classes, seed=base.seed)
    stats = synthetic_stats(dataset, 256)
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=10**9, generator=torch.Generator().manual_seed(0)
    )
    loader = _loader(dataset, cfg.batch, sampler, base.workers, collate_uint8, device.type == "cuda")
    it = iter(loader)
    queue = PREFETCH * base.workers
    window, repeats = s["window"], s["repeats"]
    rows, notes = [], []
    counter = {"step": 0}

    # The input pipeline alone: fetch and copy to the device.
    def fetch():
        batch = next(it)
        batch.images.to(device, non_blocking=True)
        batch.labels.to(device, non_blocking=True)

    _drain(it, queue + 1)
    data = _windows(fetch, cfg.device, window, repeats)

    for i, (dt, lay) in enumerate(combos, 1):
        run_cfg = TrainConfig(
            **{**base.to_dict(), "amp": "bf16" if dt == "bf16" else "none", "channels_last": lay == "nhwc"}
        )
        row = {
            "group": "loop",
            "case": s["name"],
            "dtype": dt,
            "layout": lay,
            "direction": "fwd+bwd",
            "images": cfg.batch,
            "workers": run_cfg.workers,
            "arch": run_cfg.arch,
            "crop": run_cfg.crop,
            "synthetic_images": len(dataset),
            "window_steps": window,
        }
        _put(row, "data", data)
        row["data_img_per_s"] = cfg.batch / (data["ms"] * 1e-3)
        try:
            torch.manual_seed(0)
            model = build_model(
                run_cfg.arch,
                run_cfg.synthetic_classes,
                crop=run_cfg.crop,
                fused=run_cfg.fused,
                dropout=run_cfg.dropout,
                width=run_cfg.width,
            ).to(device)
            if run_cfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.train()
            opt = PaperSGD(
                model.parameters(), lr=run_cfg.lr, momentum=run_cfg.momentum, weight_decay=run_cfg.weight_decay
            )
            augment = make_augment(run_cfg, stats, device)
            amp = torch.bfloat16 if run_cfg.amp == "bf16" else None

            def augmented(images):
                counter["step"] += 1
                return augment_batch(augment, images, run_cfg, counter["step"])

            first = next(it)
            images = first.images.to(device)
            labels = first.labels.to(device)
            x = augmented(images)

            # bare: the step alone on the same augmented batch
            for _ in range(3):
                train_step(model, opt, x, labels, amp)
            _put(row, "bare", _windows(lambda: train_step(model, opt, x, labels, amp), cfg.device, window, repeats))

            # the augmentation alone, on a batch already on the device
            _put(row, "augment", time_stats(augmented, [(images,)], cfg.device, cfg.quick))

            # the full loop: next batch -> augment -> step, as alexnet_cuda.train.loop does it
            def full():
                batch = next(it)
                train_step(model, opt, augmented(batch.images), batch.labels, amp)

            _drain(it, queue + 1)
            _put(row, "loop", _windows(full, cfg.device, window, repeats))
            row["bare_img_per_s"] = cfg.batch / (row["bare_ms"] * 1e-3)
            row["loop_img_per_s"] = cfg.batch / (row["loop_ms"] * 1e-3)
            row["loop_vs_bare_pct"] = 100 * row["bare_ms"] / row["loop_ms"]
            row["augment_pct_of_step"] = 100 * row["augment_ms"] / row["bare_ms"]
            # Freed before the next case; None, not del: the closures above name them.
            model = opt = x = images = labels = first = None
        except Exception as exc:  # noqa: BLE001 - report and move on
            row["error"] = describe_error(exc)
        if cfg.device == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        progress(i, len(combos), row)
        if "error" not in row:
            verdict = ("meets" if row["loop_vs_bare_pct"] >= 90 else "MISSES") + " the >= 90% target"
            notes.append(
                f"loop {dt} {lay}: the full loop runs at {row['loop_vs_bare_pct']:.0f}% of the bare step's img/s "
                f"({row['loop_img_per_s']:,.0f} vs {row['bare_img_per_s']:,.0f}); augmentation "
                f"{row['augment_ms']:.3f} ms per batch = {row['augment_pct_of_step']:.0f}% of a step; the data "
                f"pipeline alone delivers {row['data_img_per_s']:,.0f} img/s with {row['workers']} worker(s)"
                + (f"; {verdict}" if not cfg.reduced else " (CPU smoke run: not the GPU check)")
            )
    it = loader = None  # (None, not del: fetch() names it)
    return rows, notes
