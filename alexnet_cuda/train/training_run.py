"""Setting up a training run: data, model, optimiser, lr schedule and (with --resume) the
checkpoint's state, gathered in one :class:`Run` that the loop's parts share.

The order of the steps is part of exact resume: the global RNG is seeded right before the
model is built (its initial weights), and a checkpoint's RNG state is restored after that,
so nothing between a restore and the first step draws from it.
"""

from __future__ import annotations

import math
import os
import random
import signal
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import distributed as D
from .augment import GPUAugment
from .checkpoint import find_resume, load_checkpoint, remove_stale_temps, restore
from .config import TrainConfig
from .data import (
    ImageFolderBytes,
    ImageFolderUint8,
    SyntheticImages,
    check_class_folders,
    check_readable_classes,
    collate_bytes,
    collate_uint8,
    default_stats_path,
    find_classes,
    first_readable,
    load_or_compute_stats,
    make_samples,
    reset_reported,
    synthetic_stats,
)
from .logs import MetricsWriter, log, make_progress
from .model_factory import build_model
from .monitor import LossMonitor
from .optim import MilestoneSchedule, PaperSGD, PlateauSchedule
from .resume import apply_safe_changes, compare, refusal
from .shards import is_prepared, prepared_data
from .step import make_step


def _worker_init(_worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group. DataLoader workers would exit on it
    # and the main process would then fail on its next fetch instead of checkpointing: the
    # workers ignore SIGINT and the main process decides (it stops them when it is done).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset, batch_size, sampler, workers, collate, pin):
    """The DataLoader of every pass (statistics, training, evaluation)."""
    if hasattr(dataset, "loader"):  # prepared raw shards: threads gather batches (shards.GatherLoader)
        return dataset.loader(batch_size, sampler, workers, pin)
    kwargs = dict(
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        drop_last=False,
        # private generator: iterator creation must not touch the global RNG (dropout)
        generator=torch.Generator().manual_seed(0),
    )
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_worker_init)
    return torch.utils.data.DataLoader(dataset, **kwargs)


def make_augment(cfg: TrainConfig, stats, device) -> GPUAugment:
    """The training augmentation (mean subtraction, crop, flip, PCA colour noise) for ``cfg``."""
    return GPUAugment(
        stats.mean(cfg.mean),
        stats.eigvals,
        stats.eigvecs,
        crop=cfg.crop,
        pca_std=cfg.pca_std,
        flip=cfg.flip,
        input_scale=cfg.input_scale,
        device=device,
    )


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def folder_data(cfg: TrainConfig, info: D.DistInfo, device, per_rank_bs: int) -> Dict:
    """Datasets, collate function and mean/PCA statistics of an ImageFolder tree (cfg.data)."""
    train_root = os.path.join(cfg.data, cfg.train_dir)
    val_root = os.path.join(cfg.data, cfg.val_dir)
    reset_reported()
    classes = find_classes(train_root)
    train_samples = make_samples(train_root, classes)
    val_samples = make_samples(val_root, classes) if os.path.isdir(val_root) else []
    if not train_samples:
        raise FileNotFoundError(f"no images under {train_root}")
    check_class_folders(train_root, val_root, classes, train_samples)
    check_readable_classes(train_root, classes, train_samples)
    if val_samples and first_readable(val_samples) is None:
        log.warning(
            "none of the %d validation images under %s can be read: validation skipped (no "
            "validation metrics), and the plateau schedule will keep lr constant",
            len(val_samples),
            val_root,
        )
        val_samples = []
    elif not val_samples:
        log.warning(
            "no validation images under %s: no evaluation, and the plateau schedule will keep lr constant", val_root
        )
    log.info(
        "%d classes, %d training images, %d validation images; %d process(es), batch %d per process",
        len(classes),
        len(train_samples),
        len(val_samples),
        info.world_size,
        per_rank_bs,
    )

    stats_file = cfg.stats_file or default_stats_path(
        train_root, cfg.image_size, len(train_samples), cfg.stats_max_images
    )
    stats_samples = train_samples[: cfg.stats_max_images] if cfg.stats_max_images else train_samples

    def stats_loader():
        ds = ImageFolderUint8(stats_samples, cfg.image_size)
        return make_loader(ds, 64, None, cfg.workers, collate_uint8, False)

    stats = load_or_compute_stats(
        stats_file,
        stats_loader,
        info.local_rank == 0,
        progress_factory=lambda: make_progress(len(stats_samples), "mean/PCA", cfg.progress, info.is_main),
        size=cfg.image_size,
    )
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


def synthetic_data(cfg: TrainConfig, info: D.DistInfo, per_rank_bs: int) -> Dict:
    """--synthetic N: N random uint8 images in memory (no files, no decoding, no validation set),
    statistics computed from them (not cached). Every process generates the same images."""
    if cfg.gpu_decode or cfg.stats_only:
        raise ValueError("--synthetic has no files: --gpu-decode and --stats-only do not apply")
    train_ds = SyntheticImages(cfg.synthetic, cfg.image_size, cfg.synthetic_classes, seed=cfg.seed)
    stats = synthetic_stats(train_ds, cfg.stats_max_images)
    log.info(
        "synthetic data: %d random %dx%d uint8 images in memory (%.0f MiB), %d classes, no validation "
        "set; %d process(es), batch %d per process",
        len(train_ds),
        cfg.image_size,
        cfg.image_size,
        train_ds.images.numel() / 2**20,
        cfg.synthetic_classes,
        info.world_size,
        per_rank_bs,
    )
    return {"classes": train_ds.classes, "stats": stats, "train_ds": train_ds, "val_ds": None, "collate": collate_uint8}


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def _zero_acc() -> Dict:
    return {"loss_sum": 0.0, "correct": 0, "count": 0, "skipped": 0, "time": 0.0}


@dataclass
class Run:
    """Everything one training run holds; the loop's parts read and update it.

    ``step`` counts optimiser steps since the start of training (across resumes);
    ``epoch_step`` the batches done in the current epoch; ``acc`` the current epoch's
    running training metrics (saved in checkpoints, so a resumed epoch reports the whole
    epoch). ``step_fn`` does one optimiser step on an augmented batch
    (:func:`loop.train_step`'s signature); a faster implementation can replace it.
    """

    cfg: TrainConfig
    info: D.DistInfo
    device: torch.device
    classes: List[str]
    sampler: D.ResumableDistributedSampler
    train_loader: object
    val_loader: Optional[object]
    per_rank_bs: int
    steps_per_epoch: int
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[object]
    augment: GPUAugment
    amp_dtype: Optional[torch.dtype]
    writer: MetricsWriter
    monitor: LossMonitor
    step_fn: Callable
    on_step: Optional[Callable[[int, float], None]] = None
    start_epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    history: List[Dict] = field(default_factory=list)
    acc: Dict = field(default_factory=_zero_acc)
    train_size: int = 0  # training images (a resume compares it)
    skipped_files: set = field(default_factory=set)  # unreadable training files seen (distinct)
    checkpoint: Optional[str] = None  # the last file this run wrote
    checkpoint_step: Optional[int] = None  # and its step
    resumed_from: Optional[Tuple[str, int]] = None  # --resume's file and its step
    last_batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # the last step's input and labels
    skipped_train: int = 0
    interrupted: bool = False
    lr_at_epoch_start: float = 0.0  # the lr the epoch's metrics row reports

    @property
    def last_ckpt(self) -> str:
        return os.path.join(self.cfg.output, "last.pt")

    def facts(self) -> Dict:
        """What a checkpoint records about the data, for the next resume to compare."""
        return {"classes": list(self.classes), "train_size": self.train_size, "world_size": self.info.world_size}

    def result(self) -> Dict:
        """What :func:`loop.train` returns (see there)."""
        out = {
            "history": self.history,
            "step_losses": self.monitor.losses,
            "interrupted": self.interrupted,
            "checkpoint": self.checkpoint,
            "skipped_train": len(self.skipped_files) or self.skipped_train,
            "output": self.cfg.output,
            "classes": self.classes,
        }
        if self.checkpoint is not None:
            out["checkpoint_step"] = self.checkpoint_step
        return out


def param_groups(model: torch.nn.Module, bias_decay: bool):
    """All parameters in one group, or (``bias_decay`` False) biases in a second group without
    weight decay, as cuda-convnet's layer files and Caffe's bvlc_alexnet do."""
    if bias_decay:
        return list(model.parameters())
    named = list(model.named_parameters())
    biases = [p for n, p in named if n.endswith("bias")]
    others = [p for n, p in named if not n.endswith("bias")]
    return [{"params": others}, {"params": biases, "weight_decay": 0.0, "no_decay": True}]


def build_optimisation(cfg: TrainConfig, model: torch.nn.Module):
    """The paper's SGD on ``model``'s parameters and the lr schedule ``cfg.schedule`` names."""
    optimizer = PaperSGD(
        param_groups(model, cfg.bias_decay), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    if cfg.schedule == "plateau":
        scheduler = PlateauSchedule(optimizer, 0.1, cfg.lr_patience, cfg.lr_max_drops, cfg.lr_threshold)
    elif cfg.schedule == "milestones":
        scheduler = MilestoneSchedule(optimizer, cfg.milestones(), 0.1, cfg.lr)
    elif cfg.schedule == "constant":
        scheduler = None
    else:
        raise ValueError(f"unknown --schedule {cfg.schedule!r}")
    return optimizer, scheduler


def _seeded_model(cfg: TrainConfig, model, info: D.DistInfo, device, tower_devices, num_classes: int):
    """The model on its device(s), initialised from the seed (DDP then copies rank 0's weights)."""
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed((cfg.seed + info.rank) % 2**32)
    random.seed(cfg.seed + info.rank)
    if model is None:
        model = build_model(
            cfg.arch,
            num_classes,
            crop=cfg.crop,
            fused=cfg.fused,
            dropout=cfg.dropout,
            devices=tower_devices,
            width=cfg.width,
        )
    if tower_devices is None:
        model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _check_changes(run: Run, ckpt: Dict, path: str) -> List[str]:
    """Compare the checkpoint's run with this one; log the safe changes, refuse the others
    (unless --resume-allow-changes). Returns the accepted changes that restart the epoch."""
    saved, extra = ckpt.get("config", {}), ckpt.get("extra", {})
    safe, restarting = compare(saved, run.cfg, run.facts(), extra)
    for line in safe:
        log.info("resume: %s", line)
    if restarting and not run.cfg.resume_allow_changes:
        raise refusal(path, restarting)
    for line in restarting:
        log.warning("resume (--resume-allow-changes): %s", line)
    return restarting


def resume_into(run: Run) -> None:
    """Load ``run.cfg.resume``'s checkpoint into the run: weights, optimiser, schedule, RNG,
    position (epoch, step, step inside the epoch), history and the epoch's running metrics;
    then apply the options that changed (see resume.py)."""
    cfg, info = run.cfg, run.info
    path = find_resume(cfg.resume)
    ckpt = load_checkpoint(path)
    restart_epoch = _check_changes(run, ckpt, path)
    restore(ckpt, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, path=path, changed=restart_epoch)
    applied = apply_safe_changes(cfg, ckpt.get("config", {}), run.optimizer, run.scheduler)
    if applied:
        log.info("resume: %s from the command line now apply to the optimiser and schedule", ", ".join(applied))
    if info.rank != 0:  # only rank 0's RNG state is in the file: reseed the others' dropout
        torch.manual_seed(cfg.seed + info.rank + 1_000_003 * ckpt["step"])
    run.start_epoch, run.step, run.epoch_step = ckpt["epoch"], ckpt["step"], ckpt["epoch_step"]
    run.history = list(ckpt.get("history", []))
    extra = ckpt.get("extra", {})
    run.acc.update(extra.get("epoch_acc", {}))
    run.resumed_from = (path, ckpt["step"])
    run.monitor.limit = extra.get("loss_limit")  # the same divergence limit as the run it continues
    run.skipped_files.update(extra.get("skipped_files", []))
    if restart_epoch and run.epoch_step:
        log.warning(
            "resume: epoch %d restarts from its beginning (it was %d steps in)", run.start_epoch + 1, run.epoch_step
        )
        run.epoch_step = 0
        run.acc.update(_zero_acc())
    log.info(
        "resumed from %s: epoch %d, step %d (%d into the epoch)", path, run.start_epoch + 1, run.step, run.epoch_step
    )


def setup_run(
    cfg: TrainConfig, model: Optional[torch.nn.Module], info: D.DistInfo, step_fn: Callable, on_step=None
) -> Optional[Run]:
    """Data, model, optimiser and schedule for ``cfg``, resumed if ``cfg.resume``. Returns None
    (and a dict in ``Run``'s place) for --stats-only, which ends after the statistics."""
    device, tower_devices = D.pick_devices(cfg.device, info, cfg.model_parallel)
    if info.is_main:
        os.makedirs(cfg.output, exist_ok=True)
        remove_stale_temps(os.path.join(cfg.output, "last.pt"))  # of saves killed midway
    if cfg.batch_size % info.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {info.world_size} processes")
    per_rank_bs = cfg.batch_size // info.world_size
    eval_bs = (cfg.eval_batch_size or cfg.batch_size) // info.world_size or 1

    pin = device.type == "cuda"
    data_fn = prepared_data if is_prepared(cfg.data) else folder_data  # a folder prepare wrote has a manifest
    data = synthetic_data(cfg, info, per_rank_bs) if cfg.synthetic else data_fn(cfg, info, device, per_rank_bs)
    if data.get("stats_only"):
        return data
    sampler = D.ResumableDistributedSampler(
        len(data["train_ds"]), info.world_size, info.rank, shuffle=True, seed=cfg.seed
    )
    train_loader = make_loader(data["train_ds"], per_rank_bs, sampler, cfg.workers, data["collate"], pin)
    val_ds, val_loader = data["val_ds"], None
    if val_ds is not None and len(val_ds):
        val_loader = make_loader(val_ds, eval_bs, D.shard_indices(len(val_ds), info), cfg.workers, data["collate"], pin)

    model = _seeded_model(cfg, model, info, device, tower_devices, len(data["classes"]))
    optimizer, scheduler = build_optimisation(cfg, model)
    if cfg.amp not in ("none", "bf16"):
        raise ValueError(f"unknown --amp {cfg.amp!r}")
    run = Run(
        cfg=cfg,
        info=info,
        device=device,
        classes=data["classes"],
        sampler=sampler,
        train_loader=train_loader,
        val_loader=val_loader,
        per_rank_bs=per_rank_bs,
        steps_per_epoch=math.ceil(sampler.num_samples / per_rank_bs),
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=scheduler,
        augment=None,
        amp_dtype=None,
        writer=None,
        monitor=LossMonitor(info, device, len(data["classes"])),
        step_fn=step_fn,
        on_step=on_step,
        train_size=len(data["train_ds"]),
    )
    if cfg.resume:
        resume_into(run)
    run.net = D.wrap_ddp(model, info, device, cfg.model_parallel)
    run.augment = make_augment(cfg, data["stats"], device)
    run.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else None
    if cfg.compile or cfg.cuda_graphs:  # otherwise step_fn as given (loop.train_step)
        run.step_fn = make_step(
            run.net, optimizer, amp_dtype=run.amp_dtype, compile=cfg.compile, cuda_graph=cfg.cuda_graphs
        ).as_step_fn()
    run.writer = MetricsWriter(cfg.output, info.is_main, cfg.tensorboard, resume=bool(cfg.resume))
    if cfg.resume:  # rows a killed run wrote after its checkpoint are written again from here
        run.writer.drop_rows_after(run.step, run.start_epoch)
    return run
