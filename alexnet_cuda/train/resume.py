"""What --resume does with options that differ from the checkpoint's run.

A checkpoint stores its run's whole config, class list, number of training images and
number of processes. On resume every difference is explained:

* options that are safe to change apply to the resumed run and are logged: the optimiser's
  lr, momentum and weight decay (written into its param_groups: the checkpoint's optimiser
  state would otherwise win, and "lower --lr and resume" could not work), the schedule's
  parameters, epochs, cadences, workers and everything about speed or output;
* options that would silently change the data order, the labels, the augmentation or the
  model (batch size, seed, crop, classes, number of processes, ...) are refused with a
  :class:`ResumeError`, unless ``--resume-allow-changes``: then the current epoch restarts
  from its beginning, a clean boundary for the new data order.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from .config import TrainConfig
from .optim import MilestoneSchedule, PlateauSchedule

# Changing these mid-run changes which images come in which order, their labels, what the
# model sees or the model itself: refused unless --resume-allow-changes.
RESTARTING = (
    "batch_size",
    "seed",
    "crop",
    "image_size",
    "train_dir",
    "synthetic",
    "synthetic_classes",
    "mean",
    "pca_std",
    "flip",
    "input_scale",
    "stats_max_images",
    "arch",
    "width",
    "dropout",
    "schedule",
    "bias_decay",
)
# Written into the optimiser (and the schedule) after its state is restored.
OPTIMISER = ("lr", "momentum", "weight_decay")
SCHEDULE = ("lr_patience", "lr_max_drops", "lr_threshold", "lr_milestones")


class ResumeError(ValueError):
    """--resume with options that would change the data order, labels or model."""


def _opt(name: str) -> str:
    return "--" + name.replace("_", "-")


def compare(saved: Dict, cfg: TrainConfig, run_facts: Dict, saved_facts: Dict) -> Tuple[List[str], List[str]]:
    """(safe changes, restarting changes) between the checkpoint's run and this one, as lines.
    ``run_facts``/``saved_facts``: classes, train_size and world_size now and in the checkpoint
    (a key missing from an older checkpoint is not compared)."""
    safe, restarting = [], []
    now = cfg.to_dict()
    for name, value in now.items():
        if name not in saved or saved[name] == value or name in ("resume", "resume_allow_changes"):
            continue
        line = f"{_opt(name)}: {saved[name]!r} in the checkpoint, {value!r} now"
        (restarting if name in RESTARTING else safe).append(line)
    for fact, what in (("world_size", "number of processes"), ("train_size", "number of training images")):
        if saved_facts.get(fact) is not None and saved_facts[fact] != run_facts[fact]:
            restarting.append(f"{what}: {saved_facts[fact]} in the checkpoint, {run_facts[fact]} now")
    old, new = saved_facts.get("classes"), run_facts["classes"]
    if old is not None and list(old) != list(new):
        gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        detail = f"missing now: {gone[:5]}, new: {added[:5]}" if gone or added else "same names, other order"
        restarting.append(
            f"class list ({len(old)} in the checkpoint, {len(new)} now; {detail}): labels would change meaning"
        )
    return safe, restarting


def refusal(path: str, restarting: List[str]) -> ResumeError:
    lines = "\n  ".join(restarting)
    return ResumeError(
        f"cannot resume {path} exactly: these differ from the checkpoint's run and would change the data "
        f"order, the labels or the model:\n  {lines}\nResume with the checkpoint's values, or add "
        f"--resume-allow-changes to accept them (the current epoch then restarts from its beginning)."
    )


def apply_safe_changes(cfg: TrainConfig, saved: Dict, optimizer, scheduler) -> List[str]:
    """Write changed optimiser and schedule options into the restored optimiser and schedule;
    returns what was applied, for the log. A changed --lr becomes the current lr (with the
    milestone schedule: its base, which later drops divide), and the velocities are rescaled
    to it."""
    applied = []
    # What --lr replaces: the milestone schedule's base (the current lr is base * 0.1^drops, so the
    # ratio is the same), otherwise the current lr.
    milestones = isinstance(scheduler, MilestoneSchedule)
    old_lr = scheduler.base_lr if milestones else optimizer.param_groups[0]["lr"]
    if "lr" in saved and saved["lr"] != cfg.lr and old_lr > 0:
        # PaperSGD's velocity holds lr-scaled steps: without rescaling, the old lr's momentum
        # would keep moving the weights at the old speed for tens of steps (what makes
        # "lower --lr and resume" fail after a divergence).
        for state in optimizer.state.values():
            if "velocity" in state:
                state["velocity"].mul_(cfg.lr / old_lr)
    for name in OPTIMISER:
        if name in saved and saved[name] != getattr(cfg, name):
            if name == "lr" and milestones:
                scheduler.base_lr = cfg.lr  # start_epoch sets the lr from it
            for group in optimizer.param_groups:
                if name == "weight_decay" and group.get("no_decay"):
                    continue  # the bias group (--no-bias-decay) keeps no decay
                group[name] = getattr(cfg, name)
            applied.append(_opt(name))
    if isinstance(scheduler, PlateauSchedule):
        for name, attr in (("lr_patience", "patience"), ("lr_max_drops", "max_drops"), ("lr_threshold", "threshold")):
            if name in saved and saved[name] != getattr(cfg, name):
                setattr(scheduler, attr, getattr(cfg, name))
                applied.append(_opt(name))
    if isinstance(scheduler, MilestoneSchedule) and saved.get("lr_milestones", cfg.lr_milestones) != cfg.lr_milestones:
        scheduler.milestones = sorted(cfg.milestones())
        applied.append("--lr-milestones")
    return applied
