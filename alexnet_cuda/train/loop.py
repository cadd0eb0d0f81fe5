"""The training loop: data -> GPU augmentation -> forward/backward -> the paper's SGD step,
with evaluation, lr schedule, checkpoints, logs and clean interruption.

Reproducibility and exact resume. Everything random is a function of (seed, epoch, step):

* the order of images: ResumableDistributedSampler shuffles with seed + epoch and can start
  in the middle of an epoch;
* the augmentation draws of step s: a CPU torch.Generator seeded from (seed, s, rank);
* dropout: the global torch RNG (CPU / CUDA), saved in every checkpoint;
* DataLoader worker seeds: drawn from a private generator, so creating a DataLoader
  iterator (which happens at a different point when resuming) never consumes the global
  RNG that dropout uses.

Hence a run stopped after step k (Ctrl-C, --max-steps, a crash after a checkpoint) and
resumed with --resume computes the same losses for steps k+1, ... as an uninterrupted run,
bit for bit on the CPU (tested), and up to the GPU kernels' own determinism on CUDA.

NaN/inf guard. A non-finite loss stops training with :class:`NonFiniteLossError`, whose
message names the first bad step and the last checkpoint (written before it). Losses stay
on the device between reads (a check per step would sync the GPU every step), so the check
runs where they are read back anyway: every ``--log-every`` steps, at the end of an epoch
and before every checkpoint; up to ``log_every - 1`` further steps may run on the diverged
weights, but no checkpoint is ever written after a non-finite loss. Stopping, rather than
skipping the step: a NaN loss has already produced NaN gradients and, by the time it is
seen, NaN weights and momentum, which no later step can repair.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from . import distributed as D
from .augment import GPUAugment
from .checkpoint import find_resume, load_checkpoint, restore, save_checkpoint
from .config import TrainConfig
from .data import (ImageFolderBytes, ImageFolderUint8, SyntheticImages, collate_bytes, collate_uint8, decode_batch,
                   default_stats_path, find_classes, load_or_compute_stats, make_samples, synthetic_stats)
from .evaluate import evaluate
from .logs import MetricsWriter, log, make_progress, plot_curves, setup_logging
from .models import build_model
from .optim import MilestoneSchedule, PaperSGD, PlateauSchedule


def _step_seed(seed: int, step: int, rank: int) -> int:
    # Distinct, well-spread 63-bit seeds per (seed, step, rank).
    return (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + rank * 0x94D049BB133111EB) % (2 ** 63)


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite; ``step`` is the (1-based) step where this process saw
    it first (None when another DDP process saw it)."""

    def __init__(self, message: str, step: Optional[int] = None):
        super().__init__(message)
        self.step = step


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between steps, so an interrupt never
    lands in the middle of an optimiser update; the loop then checkpoints and returns. A
    second Ctrl-C interrupts immediately (the default handler is restored after the first)."""

    def __init__(self):
        self.stop = False
        self.signal_name = None
        self._old = {}

    def _handler(self, signum, frame):
        self.stop = True
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: finishing this step, saving a checkpoint and exiting "
                    "(press Ctrl-C again to abort without saving)", self.signal_name)
        for s, h in self._old.items():
            signal.signal(s, h)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        if threading.current_thread() is threading.main_thread():
            for s, h in self._old.items():
                signal.signal(s, h)
        return False


def _worker_init(_worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group. DataLoader workers would exit on it
    # and the main process would then fail on its next fetch instead of checkpointing: the
    # workers ignore SIGINT and the main process decides (it stops them when it is done).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _loader(dataset, batch_size, sampler, workers, collate, pin):
    kwargs = dict(batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                  pin_memory=pin, drop_last=False,
                  # private generator: iterator creation must not touch the global RNG (dropout)
                  generator=torch.Generator().manual_seed(0))
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_worker_init)
    return torch.utils.data.DataLoader(dataset, **kwargs)


def make_augment(cfg: TrainConfig, stats, device) -> GPUAugment:
    """The training augmentation (mean subtraction, crop, flip, PCA colour noise) for ``cfg``."""
    return GPUAugment(stats.mean(cfg.mean), stats.eigvals, stats.eigvecs, crop=cfg.crop, pca_std=cfg.pca_std,
                      flip=cfg.flip, input_scale=cfg.input_scale, device=device)


def augment_batch(augment: GPUAugment, images: torch.Tensor, cfg: TrainConfig, step: int, rank: int = 0):
    """Step ``step``'s augmented input: draws from a generator seeded by (seed, step, rank)."""
    gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step, rank))
    x = augment(images, generator=gen)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_step(net, optimizer, x: torch.Tensor, labels: torch.Tensor, amp_dtype=None):
    """One optimiser step on an augmented batch: forward (autocast to ``amp_dtype`` if given),
    cross-entropy, backward, step. Returns (loss, logits, labels on the logits' device), all
    still on the device (no sync)."""
    with torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
        logits = net(x)
    logits = logits.float()
    y = labels.to(logits.device, non_blocking=True)
    n = y.numel()
    # sum / n (not mean): a batch emptied by unreadable images still runs (loss 0,
    # zero gradients), so every DDP rank joins every all-reduce.
    loss = F.cross_entropy(logits, y, reduction="sum") / max(n, 1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach(), y


def _folder_data(cfg: TrainConfig, info: D.DistInfo, device, per_rank_bs: int) -> Dict:
    """Datasets, collate function and mean/PCA statistics of an ImageFolder tree (cfg.data)."""
    train_root = os.path.join(cfg.data, cfg.train_dir)
    val_root = os.path.join(cfg.data, cfg.val_dir)
    classes = find_classes(train_root)
    train_samples = make_samples(train_root, classes)
    val_samples = make_samples(val_root, classes) if os.path.isdir(val_root) else []
    if not train_samples:
        raise FileNotFoundError(f"no images under {train_root}")
    if not val_samples:
        log.warning("no validation images under %s: no evaluation, and the plateau schedule "
                    "will keep lr constant", val_root)
    log.info("%d classes, %d training images, %d validation images; %d process(es), batch %d per process",
             len(classes), len(train_samples), len(val_samples), info.world_size, per_rank_bs)

    stats_file = cfg.stats_file or default_stats_path(train_root, cfg.image_size, len(train_samples),
                                                      cfg.stats_max_images)
    stats_samples = train_samples[: cfg.stats_max_images] if cfg.stats_max_images else train_samples

    def stats_loader():
        ds = ImageFolderUint8(stats_samples, cfg.image_size)
        return _loader(ds, 64, None, cfg.workers, collate_uint8, False)

    stats = load_or_compute_stats(
        stats_file, stats_loader, info.local_rank == 0,
        progress_factory=lambda: make_progress(len(stats_samples), "mean/PCA", cfg.progress, info.is_main))
    if cfg.stats_only:
        log.info("--stats-only: statistics are in %s", stats_file)
        return {"stats_only": True, "classes": classes, "stats_file": stats_file}
    log.info("training-set RGB PCA eigenvalues (0..1 units): %s", [round(v, 5) for v in stats.eigvals.tolist()])

    if cfg.gpu_decode and device.type != "cuda":
        log.warning("--gpu-decode without CUDA: decoding on the CPU in the main process (slower than workers)")
    if cfg.gpu_decode:
        train_ds, collate = ImageFolderBytes(train_samples), collate_bytes
        val_ds = ImageFolderBytes(val_samples)
    else:
        train_ds, collate = ImageFolderUint8(train_samples, cfg.image_size), collate_uint8
        val_ds = ImageFolderUint8(val_samples, cfg.image_size)
    return {"classes": classes, "stats": stats, "train_ds": train_ds, "val_ds": val_ds, "collate": collate}


def _synthetic_data(cfg: TrainConfig, info: D.DistInfo, per_rank_bs: int) -> Dict:
    """--synthetic N: N random uint8 images in memory (no files, no decoding, no validation set),
    statistics computed from them (not cached). Every process generates the same images."""
    if cfg.gpu_decode or cfg.stats_only:
        raise ValueError("--synthetic has no files: --gpu-decode and --stats-only do not apply")
    train_ds = SyntheticImages(cfg.synthetic, cfg.image_size, cfg.synthetic_classes, seed=cfg.seed)
    stats = synthetic_stats(train_ds, cfg.stats_max_images)
    log.info("synthetic data: %d random %dx%d uint8 images in memory (%.0f MiB), %d classes, no validation "
             "set; %d process(es), batch %d per process", len(train_ds), cfg.image_size, cfg.image_size,
             train_ds.images.numel() / 2 ** 20, cfg.synthetic_classes, info.world_size, per_rank_bs)
    return {"classes": train_ds.classes, "stats": stats, "train_ds": train_ds, "val_ds": None,
            "collate": collate_uint8}


def train(cfg: TrainConfig, model: Optional[torch.nn.Module] = None, *,
          on_step: Optional[Callable[[int, float], None]] = None) -> Dict:
    """Train according to ``cfg``. ``model``: any nn.Module taking (N, 3, crop, crop) (default:
    :func:`models.build_model` from ``cfg.arch``). ``on_step(step, loss)`` is called after each
    optimiser step (it forces a device sync to read the loss; for tests and hooks).

    Returns a dict with ``history`` (per-epoch metrics), ``step_losses`` (loss of every step
    run in this call, in order), ``interrupted``, ``checkpoint`` (last written file),
    ``skipped_train`` and ``output``. Raises :class:`NonFiniteLossError` when a loss is NaN or
    infinite (see the module docstring).
    """
    if cfg.data is None and not cfg.synthetic:
        raise ValueError("no dataset: give --data ROOT (with train/ and val/), --synthetic N or use --demo")
    dev_type = "cuda" if (cfg.device == "auto" and torch.cuda.is_available()) or cfg.device.startswith("cuda") else "cpu"
    info = D.init_distributed(dev_type)
    setup_logging(info.is_main)
    try:
        return _train(cfg, model, on_step, info)
    finally:
        D.cleanup(info)


def _train(cfg: TrainConfig, model, on_step, info: D.DistInfo) -> Dict:
    import numpy as np
    import random

    device, tower_devices = D.pick_devices(cfg.device, info, cfg.model_parallel)
    out_dir = cfg.output
    if info.is_main:
        os.makedirs(out_dir, exist_ok=True)

    if cfg.batch_size % info.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {info.world_size} processes")
    per_rank_bs = cfg.batch_size // info.world_size
    eval_bs = (cfg.eval_batch_size or cfg.batch_size) // info.world_size or 1

    # ---------------- data ----------------
    pin = device.type == "cuda"
    if cfg.synthetic:
        data = _synthetic_data(cfg, info, per_rank_bs)
    else:
        data = _folder_data(cfg, info, device, per_rank_bs)
    if data.get("stats_only"):
        return {"history": [], "step_losses": [], "interrupted": False, "checkpoint": None, "skipped_train": 0,
                "output": out_dir, "classes": data["classes"], "stats_file": data["stats_file"]}
    classes, stats, train_ds, val_ds, collate = (data[k] for k in ("classes", "stats", "train_ds", "val_ds", "collate"))
    sampler = D.ResumableDistributedSampler(len(train_ds), info.world_size, info.rank, shuffle=True, seed=cfg.seed)
    train_loader = _loader(train_ds, per_rank_bs, sampler, cfg.workers, collate, pin)
    val_loader = None
    if val_ds is not None and len(val_ds):
        val_loader = _loader(val_ds, eval_bs, D.shard_indices(len(val_ds), info), cfg.workers, collate, pin)
    steps_per_epoch = math.ceil(sampler.num_samples / per_rank_bs)

    # ---------------- model and optimiser ----------------
    torch.manual_seed(cfg.seed + info.rank)  # init is overwritten by rank 0's weights in DDP
    np.random.seed((cfg.seed + info.rank) % 2 ** 32)
    random.seed(cfg.seed + info.rank)
    if model is None:
        model = build_model(cfg.arch, len(classes), crop=cfg.crop, fused=cfg.fused, dropout=cfg.dropout,
                            devices=tower_devices, width=cfg.width)
    if tower_devices is None:
        model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = PaperSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.schedule == "plateau":
        scheduler = PlateauSchedule(optimizer, 0.1, cfg.lr_patience, cfg.lr_max_drops, cfg.lr_threshold)
    elif cfg.schedule == "milestones":
        scheduler = MilestoneSchedule(optimizer, cfg.milestones(), 0.1, cfg.lr)
    elif cfg.schedule == "constant":
        scheduler = None
    else:
        raise ValueError(f"unknown --schedule {cfg.schedule!r}")

    start_epoch, step, epoch_step = 0, 0, 0
    history: List[Dict] = []
    acc = {"loss_sum": 0.0, "correct": 0, "count": 0, "skipped": 0, "time": 0.0}
    if cfg.resume:
        path = find_resume(cfg.resume)
        ckpt = load_checkpoint(path)
        restore(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        if info.rank != 0:  # only rank 0's RNG state is in the file: reseed the others' dropout
            torch.manual_seed(cfg.seed + info.rank + 1_000_003 * ckpt["step"])
        start_epoch, step, epoch_step = ckpt["epoch"], ckpt["step"], ckpt["epoch_step"]
        history = list(ckpt.get("history", []))
        acc.update(ckpt.get("extra", {}).get("epoch_acc", {}))
        log.info("resumed from %s: epoch %d, step %d (%d into the epoch)", path, start_epoch + 1, step, epoch_step)

    net = D.wrap_ddp(model, info, device, cfg.model_parallel)
    if cfg.compile:
        net = torch.compile(net)

    augment = make_augment(cfg, stats, device)
    amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else None
    if cfg.amp not in ("none", "bf16"):
        raise ValueError(f"unknown --amp {cfg.amp!r}")

    writer = MetricsWriter(out_dir, info.is_main, cfg.tensorboard, resume=bool(cfg.resume))
    last_ckpt = os.path.join(out_dir, "last.pt")
    result = {"history": history, "step_losses": [], "interrupted": False, "checkpoint": None,
              "skipped_train": 0, "output": out_dir, "classes": classes}

    def save(epoch: int, ep_step: int) -> None:
        if info.is_main:
            save_checkpoint(last_ckpt, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                            step=step, epoch_step=ep_step, history=history, config=cfg.to_dict(),
                            extra={"epoch_acc": dict(acc), "classes": classes})
        D.barrier(info)
        result["checkpoint"] = last_ckpt
        result["checkpoint_step"] = step

    def run_eval():
        if val_loader is None:
            return {}
        batches = val_loader if not cfg.gpu_decode else (decode_batch(b, device, cfg.image_size) for b in val_loader)
        # The bare module, not the DDP wrapper: ranks may see different numbers of eval batches
        # and nothing here must issue collectives (counts are all-reduced once at the end).
        res = evaluate(model, batches, augment.normalize, cfg.crop, ten_crop=cfg.ten_crop, autocast_dtype=amp_dtype,
                       channels_last=cfg.channels_last, out_device=device if info.initialized and device.type == "cuda" else "cpu",
                       all_reduce=(lambda t: D.all_reduce_sum(info, t)) if info.initialized else None)
        return res.metrics(cfg.ten_crop)

    pending: List[torch.Tensor] = []
    # Running sums stay on the device (no sync per step); folded into ``acc`` when read.
    dev_sums: Dict[str, torch.Tensor] = {}

    def fold_sums() -> None:
        if dev_sums:
            acc["loss_sum"] += float(dev_sums.pop("loss"))
            acc["correct"] += int(dev_sums.pop("correct"))

    nonfinite: Dict[str, object] = {}  # the first step whose loss was NaN/inf (this process)

    def flush_losses() -> None:
        if pending:
            first = step - len(pending) + 1  # 1-based number of the step of pending[0]
            vals = torch.stack(pending).float().cpu().tolist()
            result["step_losses"].extend(vals)
            pending.clear()
            if not nonfinite:
                bad = next((i for i, v in enumerate(vals) if not math.isfinite(v)), None)
                if bad is not None:
                    nonfinite.update(step=first + bad, value=vals[bad])

    def guard_nonfinite(epoch: int, bar) -> None:
        """The NaN/inf guard: stop with NonFiniteLossError if a loss read back so far was not
        finite. Called right after flush_losses() at points that every DDP rank reaches at the
        same step (log steps, epoch ends, before every checkpoint), where the ranks agree with
        one all-reduce, so all of them stop together and no checkpoint holds diverged weights."""
        seen = bool(nonfinite)
        if info.initialized:
            flag = torch.tensor([1.0 if seen else 0.0], device=device if device.type == "cuda" else "cpu")
            if D.all_reduce_sum(info, flag).item() == 0:
                return
        elif not seen:
            return
        bar.close()
        writer.close()
        where = (f"at step {nonfinite['step']} (loss {nonfinite['value']})" if seen
                 else f"on another process (noticed at step {step})")
        last = (f"the last checkpoint, {result['checkpoint']}, is from step {result['checkpoint_step']}, before it"
                if result["checkpoint"] else "no checkpoint was written by this run")
        raise NonFiniteLossError(
            f"non-finite training loss {where}, epoch {epoch + 1}: training stopped and no checkpoint was "
            f"written after it; {last}. Lower --lr (or check the data and the model) and resume or restart.",
            step=nonfinite.get("step"))

    with _StopFlag() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            first = epoch_step if epoch == start_epoch else 0
            if first == 0:
                acc.update(loss_sum=0.0, correct=0, count=0, skipped=0, time=0.0)
            sampler.set_epoch(epoch, first * per_rank_bs)
            if isinstance(scheduler, MilestoneSchedule):
                scheduler.start_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            net.train()
            bar = make_progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress, info.is_main,
                                initial=first)
            epoch_step = first
            t_last, n_last = time.perf_counter(), 0
            t_epoch = time.perf_counter()
            for batch in (train_loader if first < steps_per_epoch else []):
                if cfg.gpu_decode:
                    batch = decode_batch(batch, device, cfg.image_size)
                acc["skipped"] += batch.skipped
                result["skipped_train"] += batch.skipped
                x = augment_batch(augment, batch.images, cfg, step, info.rank)
                ld, logits, y = train_step(net, optimizer, x, batch.labels, amp_dtype)
                n = y.numel()
                step += 1
                epoch_step += 1
                pending.append(ld)
                correct = (logits.argmax(1) == y).sum()
                if dev_sums:
                    dev_sums["loss"] += ld.double() * n
                    dev_sums["correct"] += correct
                else:
                    dev_sums.update(loss=ld.double() * n, correct=correct)
                acc["count"] += n
                n_last += n
                bar.update(1)
                if on_step is not None:
                    on_step(step, float(ld))
                if step % cfg.log_every == 0 or epoch_step == steps_per_epoch:
                    flush_losses()
                    guard_nonfinite(epoch, bar)
                    now = time.perf_counter()
                    ips = n_last * info.world_size / max(now - t_last, 1e-9)
                    t_last, n_last = now, 0
                    bar.set_postfix_str(f"loss {result['step_losses'][-1]:.4f} lr {lr:.2g} {ips:,.0f} img/s")
                    writer.step(step, {"epoch": epoch, "loss": result["step_losses"][-1], "lr": lr, "img_per_s": ips})
                stop_now = bool(cfg.max_steps and step >= cfg.max_steps)  # the same step on every rank
                if not info.initialized:
                    stop_now = stop_now or stop.stop
                elif step % cfg.log_every == 0:
                    # Signals reach ranks at slightly different times: agree on stopping every
                    # log_every steps (an all-reduce and a sync per step would stall the GPU queue).
                    flag = torch.tensor([1.0 if stop.stop else 0.0], device=device if device.type == "cuda" else "cpu")
                    stop_now = stop_now or bool(D.all_reduce_sum(info, flag).item() > 0)
                if stop_now:
                    flush_losses()
                    guard_nonfinite(epoch, bar)
                    fold_sums()
                    bar.close()
                    acc["time"] += time.perf_counter() - t_epoch
                    save(epoch, epoch_step)
                    result["interrupted"] = bool(stop.stop)
                    why = stop.signal_name or f"--max-steps {cfg.max_steps}"
                    log.info("stopped at step %d (%s); checkpoint %s; continue with --resume %s",
                             step, why, last_ckpt, out_dir)
                    writer.close()
                    return result
                if cfg.save_every and step % cfg.save_every == 0:
                    flush_losses()
                    guard_nonfinite(epoch, bar)
                    fold_sums()
                    save(epoch, epoch_step)
            flush_losses()
            guard_nonfinite(epoch, bar)
            fold_sums()
            bar.close()
            acc["time"] += time.perf_counter() - t_epoch

            tot = {k: acc[k] for k in ("loss_sum", "correct", "count", "skipped")}
            if info.initialized:  # epoch training metrics over all ranks (one all-reduce per epoch)
                t = torch.tensor([tot[k] for k in tot], dtype=torch.float64,
                                 device=device if device.type == "cuda" else "cpu")
                tot = dict(zip(tot, D.all_reduce_sum(info, t).tolist()))
            row = {"epoch": epoch, "step": step, "lr": lr,
                   "train_loss": tot["loss_sum"] / max(tot["count"], 1),
                   "train_top1_err": 1 - tot["correct"] / max(tot["count"], 1),
                   "train_img_per_s": tot["count"] / max(acc["time"], 1e-9),
                   "train_skipped": int(tot["skipped"])}
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                row.update(run_eval())
            dropped = scheduler.step(epoch, row.get("val_top1_err")) if scheduler is not None else False
            if dropped:
                log.info("validation error plateaued: lr -> %g", optimizer.param_groups[0]["lr"])
            history.append(row)
            writer.epoch(row)
            log.info("epoch %d/%d: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in row.items() if k != "epoch"), epoch + 1, cfg.epochs)
            save(epoch + 1, 0)
            epoch_step = 0
    writer.close()
    if info.is_main and cfg.plot:
        plot_curves(history, os.path.join(out_dir, "curves.png"))
    return result
