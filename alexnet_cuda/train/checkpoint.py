"""Checkpoints that resume exactly, written atomically.

A checkpoint holds everything the next step depends on: model and optimiser state (the
PaperSGD velocities), the lr schedule, the epoch and step (including the position inside
the epoch, so a resume mid-epoch continues with the very next batch), and all RNG states:
torch CPU and every CUDA device (dropout), numpy and Python ``random`` (for user code that
uses them). Data order and augmentation draws are functions of (seed, epoch, step), see
loop.py, so they need no saved state.

Files are written to a temporary name in the same folder and moved into place with
os.replace, which is atomic on POSIX: an interrupted save never leaves a truncated
checkpoint behind, and the previous one stays valid until the new one is complete.
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from .data import atomic_torch_save


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> Dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # a different GPU count: restore what we can, dropout masks will differ
            for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)


def save_checkpoint(path: str, *, model, optimizer, scheduler, epoch: int, step: int, epoch_step: int,
                    history: Optional[list] = None, config: Optional[dict] = None,
                    extra: Optional[dict] = None) -> None:
    """Write the checkpoint atomically. ``epoch_step`` = batches already done in ``epoch``."""
    state = {
        "format": 1,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "step": step,
        "epoch_step": epoch_step,
        "rng": rng_state(),
        "history": history or [],
        "config": config or {},
        "extra": extra or {},
    }
    atomic_torch_save(state, path)


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    # weights_only=False: the checkpoint contains numpy / python RNG states (our own files).
    return torch.load(path, map_location=map_location, weights_only=False)


def restore(ckpt: Dict[str, Any], *, model, optimizer, scheduler, restore_rng: bool = True) -> None:
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng:
        set_rng_state(ckpt["rng"])


def find_resume(path_or_dir: str) -> str:
    """``--resume`` accepts a file or a run folder (then its last.pt)."""
    if os.path.isdir(path_or_dir):
        path_or_dir = os.path.join(path_or_dir, "last.pt")
    if not os.path.isfile(path_or_dir):
        raise FileNotFoundError(f"no checkpoint at {path_or_dir}")
    return path_or_dir
