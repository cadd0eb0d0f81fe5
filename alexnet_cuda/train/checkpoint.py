"""Checkpoints that resume exactly, written atomically.

A checkpoint holds everything the next step depends on: model and optimiser state (the
PaperSGD velocities), the lr schedule, the epoch and step (including the position inside
the epoch, so a resume mid-epoch continues with the very next batch), and all RNG states:
torch CPU and every CUDA device (dropout), numpy and Python ``random`` (for user code that
uses them). Data order and augmentation draws are functions of (seed, epoch, step), see
loop.py, so they need no saved state.

Files are written to a temporary name in the same folder and moved into place with
os.replace, which is atomic on POSIX: an interrupted save never leaves a truncated
checkpoint behind, and the previous one stays valid until the new one is complete. The
temporary file of a save killed midway (``kill -9``) is removed by the next save or start.

Every checkpoint carries a checksum of its tensor data, verified on load: torch.load checks
no checksums itself, so a flipped bit inside a tensor would otherwise load silently. Every
load error is a :class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from .data import atomic_torch_save

FORMAT = 2  # 2: with "checksum"; 1 (no checksum) still loads
_REQUIRED = ("format", "model", "optimizer", "epoch", "step", "epoch_step", "rng")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file and the problem."""


def tensor_checksum(obj) -> str:
    """A hash of every tensor (dtype, shape and bytes) and numpy array inside ``obj``, visited in
    order through dicts, lists and tuples; other values are not part of it."""
    h = hashlib.blake2b(digest_size=16)

    def visit(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(o, np.ndarray):
            h.update(np.ascontiguousarray(o).tobytes())
        elif isinstance(o, dict):
            for k, v in o.items():
                h.update(repr(k).encode())
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)

    visit(obj)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str) -> int:
    """Delete the temporary files that saves of ``path`` killed midway left behind (their
    process is gone); returns how many. A live process's file is left alone."""
    folder, base = os.path.split(os.path.abspath(path))
    removed = 0
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.tmp.*")):
        pid = tmp.rsplit(".", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            try:
                os.remove(tmp)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


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
        "format": FORMAT,
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
    state["checksum"] = tensor_checksum(state)
    remove_stale_temps(path)
    atomic_torch_save(state, path)


def _read(path: str, map_location) -> Any:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({exc.strerror})") from exc
    if size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty (0 bytes), not a checkpoint")
    try:
        # weights_only=False: the checkpoint contains numpy / python RNG states (our own files).
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        why = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch file, truncated or corrupt "
                              f"({type(exc).__name__}: {why})") from exc


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    """The checkpoint in ``path``, its tensor data verified against its checksum."""
    ckpt = _read(path, map_location)
    missing = [k for k in _REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: not a checkpoint of alexnet_cuda.train (no "
                              f"{', '.join(repr(k) for k in missing)}; a bare state_dict? load it with "
                              f"torch.load and model.load_state_dict instead)")
    if not isinstance(ckpt["format"], int) or ckpt["format"] > FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {ckpt['format']!r}, newer than this version "
                              f"reads ({FORMAT})")
    if "checksum" in ckpt:
        saved = ckpt.pop("checksum")
        if tensor_checksum(ckpt) != saved:
            raise CheckpointError(f"checkpoint {path}: its tensor data do not match the checksum saved "
                                  f"with them: the file is corrupt (use an earlier copy)")
    return ckpt


def restore(ckpt: Dict[str, Any], *, model, optimizer, scheduler, restore_rng: bool = True,
            path: str = "checkpoint") -> None:
    try:
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        why = (str(exc).splitlines() or [""])[0][:300]
        raise CheckpointError(f"{path}: does not fit this model or optimiser ({why})") from exc
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng:
        set_rng_state(ckpt["rng"])


def find_resume(path_or_dir: str) -> str:
    """``--resume`` accepts a file or a run folder (then its last.pt)."""
    if os.path.isdir(path_or_dir):
        path_or_dir = os.path.join(path_or_dir, "last.pt")
    if not os.path.isfile(path_or_dir):
        raise CheckpointError(f"--resume: no checkpoint at {path_or_dir}")
    return path_or_dir
