"""The training loop: data -> GPU augmentation -> forward/backward -> the paper's SGD step,
with evaluation, lr schedule, checkpoints, logs and clean interruption.

Its parts, each a function or class of its own:

* setup (data, model, optimiser, resume): :func:`setup.setup_run`, which returns the
  :class:`setup.Run` every other part reads and updates;
* one epoch: :func:`run_epoch` (one step: :func:`train_batch`);
* the loss monitor, the divergence (NaN/inf/limit) guard: :class:`monitor.LossMonitor`;
* evaluation: :func:`evaluate_run`, and the epoch's metrics row: :func:`end_epoch`;
* checkpoint and stop: :func:`save`, :func:`stop_requested` and :func:`stop_run`.

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

Divergence guard. A loss that is NaN, infinite or above the loss limit stops training with
:class:`NonFiniteLossError`, whose message names the first bad step and ends with what to add
to the same command to go on: ``--resume <newest checkpoint> --lr <a tenth>``. That advice
works because every checkpoint's own weights are checked before it is written
(:func:`check_weights`); see monitor.py for the limit, where the check runs and why training
stops rather than skipping the step.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from . import distributed as D
from .augment import GPUAugment
from .checkpoint import save_checkpoint
from .config import TrainConfig, check_config, check_machine, check_paths
from .data import decode_batch
from .evaluate import evaluate
from .logs import log, make_progress, plot_curves, setup_logging
from .monitor import NonFiniteLossError
from .optim import MilestoneSchedule
from .training_run import Run, make_augment, make_loader, setup_run

# bench/cases/loop.py times the trainer's own loader, augmentation and step from here.
_loader = make_loader
__all__ = ["train", "train_step", "augment_batch", "make_augment", "NonFiniteLossError", "run_epoch"]


def _step_seed(seed: int, step: int, rank: int) -> int:
    # Distinct, well-spread 63-bit seeds per (seed, step, rank).
    return (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + rank * 0x94D049BB133111EB) % (2**63)


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
        log.warning(
            "%s received: finishing this step, saving a checkpoint and exiting "
            "(press Ctrl-C again to abort without saving)",
            self.signal_name,
        )
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
    still on the device (no sync). The default :attr:`setup.Run.step_fn`."""
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


# ------------------------------------------------------------------------------------------
# the whole run
# ------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig, model: Optional[torch.nn.Module] = None, *, on_step: Optional[Callable[[int, float], None]] = None
) -> Dict:
    """Train according to ``cfg``. ``model``: any nn.Module taking (N, 3, crop, crop) (default:
    :func:`models.build_model` from ``cfg.arch``). ``on_step(step, loss)`` is called after each
    optimiser step (it forces a device sync to read the loss; for tests and hooks).

    Returns a dict with ``history`` (per-epoch metrics), ``step_losses`` (loss of every step
    run in this call, in order), ``interrupted``, ``checkpoint`` (last written file),
    ``skipped_train`` and ``output``. Raises :class:`NonFiniteLossError` when a loss is NaN,
    infinite or above the loss limit (see the module docstring).
    """
    if cfg.data is None and not cfg.synthetic:
        raise ValueError("no dataset: give --data ROOT (with train/ and val/), --synthetic N or use --demo")
    problems = check_config(cfg, own_model=model is not None) or check_machine(cfg) + check_paths(cfg)
    if problems:
        raise ValueError("; ".join(problems))
    dev_type = (
        "cuda" if (cfg.device == "auto" and torch.cuda.is_available()) or cfg.device.startswith("cuda") else "cpu"
    )
    info = D.init_distributed(dev_type)
    setup_logging(info.is_main)
    try:
        return _train(cfg, model, on_step, info)
    finally:
        D.cleanup(info)


def _train(cfg: TrainConfig, model, on_step, info: D.DistInfo) -> Dict:
    run = setup_run(cfg, model, info, step_fn=train_step, on_step=on_step)
    if not isinstance(run, Run):  # --stats-only: the statistics were the whole job
        return {
            "history": [],
            "step_losses": [],
            "interrupted": False,
            "checkpoint": None,
            "skipped_train": 0,
            "output": cfg.output,
            "classes": run["classes"],
            "stats_file": run["stats_file"],
        }
    try:
        with _StopFlag() as stop:
            for epoch in range(run.start_epoch, cfg.epochs):
                if run_epoch(run, epoch, stop):
                    return run.result()
                end_epoch(run, epoch)
    finally:
        run.writer.close()
    if info.is_main and cfg.plot:
        plot_curves(run.history, os.path.join(cfg.output, "curves.png"))
    return run.result()


# ------------------------------------------------------------------------------------------
# one epoch
# ------------------------------------------------------------------------------------------
class _Throughput:
    """Images per second (all ranks) since the last log step, for the progress bar and steps.csv."""

    def __init__(self, world_size: int):
        self.world_size, self.t, self.n = world_size, time.perf_counter(), 0

    def read(self) -> float:
        now = time.perf_counter()
        ips = self.n * self.world_size / max(now - self.t, 1e-9)
        self.t, self.n = now, 0
        return ips


def _start_epoch(run: Run, epoch: int) -> int:
    """Position the sampler (mid-epoch after a resume) and the schedule; returns the first step."""
    first = run.epoch_step if epoch == run.start_epoch else 0
    if first == 0:
        run.acc.update(loss_sum=0.0, correct=0, count=0, skipped=0, time=0.0)
    run.sampler.set_epoch(epoch, first * run.per_rank_bs)
    if isinstance(run.scheduler, MilestoneSchedule):
        run.scheduler.start_epoch(epoch)
    run.epoch_step = first
    return first


def train_batch(run: Run, batch) -> int:
    """Augment one batch and take one optimiser step; returns the number of images used."""
    cfg = run.cfg
    if cfg.gpu_decode:
        batch = decode_batch(batch, run.device, cfg.image_size)
    run.acc["skipped"] += batch.skipped
    run.skipped_train += batch.skipped
    run.skipped_files.update(batch.skipped_paths)
    run.last_batch = None  # freed before the next batch is made: the peak memory stays one batch
    x = augment_batch(run.augment, batch.images, cfg, run.step, run.info.rank)
    loss, logits, y = run.step_fn(run.net, run.optimizer, x, batch.labels, run.amp_dtype)
    run.last_batch = (x, y)  # for the check of the weights before a checkpoint (see save)
    run.step += 1
    run.epoch_step += 1
    run.monitor.record(loss, logits, y)
    run.acc["count"] += y.numel()
    if run.on_step is not None:
        run.on_step(run.step, float(loss))
    return y.numel()


def newest_checkpoint(run: Run) -> Optional[Tuple[str, int]]:
    """(file, step) to resume from after a divergence: the newest checkpoint this run wrote, else
    the one it resumed from. Any will do: each one's weights were checked before it was written."""
    if run.checkpoint is not None:
        return run.checkpoint, run.checkpoint_step
    return run.resumed_from


def lower_lr(run: Run) -> float:
    """A tenth of the lr (the paper's drop), as --lr means it on resume (resume.py): the milestone
    schedule's base lr, otherwise the current lr."""
    if isinstance(run.scheduler, MilestoneSchedule):
        return run.scheduler.base_lr / 10
    return run.optimizer.param_groups[0]["lr"] / 10


def update_size_options(run: Run) -> str:
    """The options whose values set the size of an update, with this run's values: a divergence
    is one of them too large (or the data or model), not always --lr."""
    cfg = run.cfg
    return (
        f"the options that set the size of the updates: --lr {run.optimizer.param_groups[0]['lr']:.3g}, "
        f"--momentum {cfg.momentum:g}, --weight-decay {cfg.weight_decay:g}, --input-scale {cfg.input_scale:g}"
    )


def _check_losses(run: Run, epoch: int) -> None:
    run.monitor.check(run.step, epoch, newest_checkpoint(run), lower_lr(run), update_size_options(run))


def run_epoch(run: Run, epoch: int, stop: _StopFlag) -> bool:
    """Train one epoch (from ``run.epoch_step`` after a resume). Returns True when training
    stopped inside it (signal or --max-steps; checkpointed by :func:`stop_run`)."""
    cfg = run.cfg
    first = _start_epoch(run, epoch)
    lr = run.optimizer.param_groups[0]["lr"]
    run.lr_at_epoch_start = lr
    run.net.train()
    bar = make_progress(
        run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress, run.info.is_main, initial=first
    )
    meter, t_epoch = _Throughput(run.info.world_size), time.perf_counter()
    try:
        for batch in run.train_loader if first < run.steps_per_epoch else []:
            meter.n += train_batch(run, batch)
            bar.update(1)
            if run.step % cfg.log_every == 0 or run.epoch_step == run.steps_per_epoch:
                _check_losses(run, epoch)
                ips = meter.read()
                last = run.monitor.losses[-1]
                bar.set_postfix_str(f"loss {last:.4f} lr {lr:.2g} {ips:,.0f} img/s")
                run.writer.step(run.step, {"epoch": epoch, "loss": last, "lr": lr, "img_per_s": ips})
            if stop_requested(run, stop):
                stop_run(run, epoch, stop, t_epoch)
                return True
            if cfg.save_every and run.step % cfg.save_every == 0:
                _check_losses(run, epoch)
                run.monitor.fold_into(run.acc)
                save(run, epoch, run.epoch_step)
        _check_losses(run, epoch)
        run.monitor.fold_into(run.acc)
    finally:
        bar.close()
    run.acc["time"] += time.perf_counter() - t_epoch
    return False


# ------------------------------------------------------------------------------------------
# evaluation and the end of an epoch
# ------------------------------------------------------------------------------------------
def evaluate_run(run: Run) -> Dict:
    """Centre-crop (and 10-crop) validation metrics of the model, over all ranks; {} without
    a validation set."""
    if run.val_loader is None:
        return {}
    cfg, info = run.cfg, run.info
    batches = run.val_loader
    if cfg.gpu_decode:
        batches = (decode_batch(b, run.device, cfg.image_size) for b in run.val_loader)
    # The bare module, not the DDP wrapper: ranks may see different numbers of eval batches
    # and nothing here must issue collectives (counts are all-reduced once at the end).
    out_device = run.device if info.initialized and run.device.type == "cuda" else "cpu"
    res = evaluate(
        run.model,
        batches,
        run.augment.normalize,
        cfg.crop,
        ten_crop=cfg.ten_crop,
        autocast_dtype=run.amp_dtype,
        channels_last=cfg.channels_last,
        out_device=out_device,
        all_reduce=(lambda t: D.all_reduce_sum(info, t)) if info.initialized else None,
    )
    metrics = res.metrics(cfg.ten_crop)
    if "val_top1_err" not in metrics:
        log.warning(
            "validation skipped: none of its %d images could be read (no validation metrics this epoch)", res.skipped
        )
    return metrics


def epoch_metrics(run: Run, epoch: int) -> Dict:
    """The epoch's training metrics row, summed over all ranks (one all-reduce)."""
    acc = run.acc
    tot = {k: acc[k] for k in ("loss_sum", "correct", "count", "skipped")}
    if run.info.initialized:
        t = torch.tensor(
            [tot[k] for k in tot], dtype=torch.float64, device=run.device if run.device.type == "cuda" else "cpu"
        )
        tot = dict(zip(tot, D.all_reduce_sum(run.info, t).tolist()))
    return {
        "epoch": epoch,
        "step": run.step,
        "lr": run.lr_at_epoch_start,
        "train_loss": tot["loss_sum"] / max(tot["count"], 1),
        "train_top1_err": 1 - tot["correct"] / max(tot["count"], 1),
        "train_img_per_s": tot["count"] / max(acc["time"], 1e-9),
        "train_skipped": int(tot["skipped"]),
    }


def end_epoch(run: Run, epoch: int) -> None:
    """Metrics, evaluation (every --eval-every epochs and after the last), the lr schedule,
    logs and the epoch-end checkpoint."""
    cfg = run.cfg
    row = epoch_metrics(run, epoch)
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
        row.update(evaluate_run(run))
    dropped = run.scheduler.step(epoch, row.get("val_top1_err")) if run.scheduler is not None else False
    if dropped:
        log.info("validation error plateaued: lr -> %g", run.optimizer.param_groups[0]["lr"])
    run.history.append(row)
    run.writer.epoch(row)
    log.info(
        "epoch %d/%d: "
        + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch"),
        epoch + 1,
        cfg.epochs,
    )
    save(run, epoch + 1, 0)
    run.epoch_step = 0


# ------------------------------------------------------------------------------------------
# checkpoint and stop
# ------------------------------------------------------------------------------------------
def check_weights(run: Run) -> None:
    """Record the loss of the weights about to be checkpointed, on the batch of the step that made
    them. A step's loss is that of the weights before it: without this, the last checkpoint before
    a divergence can hold weights whose own loss is already huge (seen on the demo: a checkpoint
    whose next loss was 1e12), and resuming from it diverges at any lr. Eval mode (no dropout, so no
    RNG is drawn: resume stays exact) on the bare module (no DDP collectives)."""
    if run.last_batch is None:  # no step since the weights were loaded or initialised
        return
    x, y = run.last_batch
    was_training = run.model.training
    run.model.eval()
    try:
        with torch.no_grad(), torch.autocast(x.device.type, dtype=run.amp_dtype) if run.amp_dtype else nullcontext():
            logits = run.model(x).float()
        loss = F.cross_entropy(logits, y.to(logits.device), reduction="sum") / max(y.numel(), 1)
    finally:
        run.model.train(was_training)
    run.monitor.check_weights_loss(run.step, float(loss))


def save(run: Run, epoch: int, epoch_step: int) -> None:
    """Write last.pt (rank 0) for position (epoch, epoch_step); every rank waits for it. Raises
    :class:`NonFiniteLossError` instead when a loss read so far, or the loss of the weights
    themselves (:func:`check_weights`), diverged: every checkpoint file is one to resume from."""
    check_weights(run)
    _check_losses(run, epoch if epoch_step else max(epoch - 1, 0))  # the epoch the weights come from
    if run.info.is_main:
        save_checkpoint(
            run.last_ckpt,
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            epoch=epoch,
            step=run.step,
            epoch_step=epoch_step,
            history=run.history,
            config=run.cfg.to_dict(),
            extra={
                "epoch_acc": dict(run.acc),
                "skipped_files": sorted(run.skipped_files),
                "loss_limit": run.monitor.limit,
                **run.facts(),
            },
        )
    D.barrier(run.info)
    run.checkpoint, run.checkpoint_step = run.last_ckpt, run.step


def stop_requested(run: Run, stop: _StopFlag) -> bool:
    """--max-steps reached, or a signal received (under DDP: on any rank, agreed every
    --log-every steps, so every rank stops after the same step)."""
    cfg, info = run.cfg, run.info
    stop_now = bool(cfg.max_steps and run.step >= cfg.max_steps)  # the same step on every rank
    if not info.initialized:
        return stop_now or stop.stop
    if run.step % cfg.log_every == 0:
        # Signals reach ranks at slightly different times: agree on stopping every
        # log_every steps (an all-reduce and a sync per step would stall the GPU queue).
        flag = torch.tensor([1.0 if stop.stop else 0.0], device=run.device if run.device.type == "cuda" else "cpu")
        stop_now = stop_now or bool(D.all_reduce_sum(info, flag).item() > 0)
    return stop_now


def stop_run(run: Run, epoch: int, stop: _StopFlag, t_epoch: float) -> None:
    """Stop inside an epoch: check the losses, checkpoint the exact position and say how to go on."""
    _check_losses(run, epoch)
    run.monitor.fold_into(run.acc)
    run.acc["time"] += time.perf_counter() - t_epoch
    save(run, epoch, run.epoch_step)
    run.interrupted = bool(stop.stop)
    why = stop.signal_name or f"--max-steps {run.cfg.max_steps}"
    log.info(
        "stopped at step %d (%s); checkpoint %s; continue with --resume %s",
        run.step,
        why,
        run.last_ckpt,
        run.cfg.output,
    )
