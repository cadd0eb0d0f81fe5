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
import math
import os
import random
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from .data import atomic_torch_save

FORMAT = 3  # 3: "checksum" over the whole payload; 2: over its tensors; 1: none (2 and 1 still load)
_REQUIRED = ("format", "model", "optimizer", "epoch", "step", "epoch_step", "rng")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file and the problem."""


def tensor_checksum(obj, whole: bool = False) -> str:
    """A hash of every tensor (dtype, shape and bytes) and numpy array inside ``obj``, visited in
    order through dicts, lists and tuples. ``whole``: every other value too (numbers, strings,
    the Python and numpy RNG states, the history, the config, the loss limit): a flipped bit
    anywhere in the payload, not only in tensor data, then fails the check."""
    h = hashlib.blake2b(digest_size=16)

    def visit(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(o, np.ndarray):
            if whole:
                h.update(f"{o.dtype}{o.shape}".encode())
            h.update(np.ascontiguousarray(o).tobytes())
        elif isinstance(o, dict):
            if whole:
                h.update(f"dict{len(o)}".encode())
            for k, v in o.items():
                h.update(repr(k).encode())
                visit(v)
        elif isinstance(o, (list, tuple)):
            if whole:
                h.update(f"{type(o).__name__}{len(o)}".encode())
            for v in o:
                visit(v)
        elif whole:
            h.update(f"{type(o).__name__}:{o!r};".encode())

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


def save_checkpoint(
    path: str,
    *,
    model,
    optimizer,
    scheduler,
    epoch: int,
    step: int,
    epoch_step: int,
    history: Optional[list] = None,
    config: Optional[dict] = None,
    extra: Optional[dict] = None,
) -> None:
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
    state["checksum"] = tensor_checksum(state, whole=True)
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
        raise CheckpointError(
            f"checkpoint {path}: not a readable PyTorch file, truncated or corrupt ({type(exc).__name__}: {why})"
        ) from exc


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    """The checkpoint in ``path``, its tensor data verified against its checksum."""
    ckpt = _read(path, map_location)
    missing = [k for k in _REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: not a checkpoint of alexnet_cuda.train (no "
            f"{', '.join(repr(k) for k in missing)}; a bare state_dict? load it with "
            f"torch.load and model.load_state_dict instead)"
        )
    if not isinstance(ckpt["format"], int) or ckpt["format"] > FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {ckpt['format']!r}, newer than this version reads ({FORMAT})")
    if "checksum" in ckpt:
        saved = ckpt.pop("checksum")
        if tensor_checksum(ckpt, whole=ckpt["format"] >= 3) != saved:
            what = "its tensors and other values" if ckpt["format"] >= 3 else "its tensor data"
            raise CheckpointError(
                f"checkpoint {path}: {what} do not match the checksum saved with them: the "
                f"file is corrupt or was edited (use an earlier copy)"
            )
    problem = _value_problem(ckpt)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}: the file is corrupt or was edited (use an earlier copy)")
    return ckpt


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _value_problem(ckpt: Dict[str, Any]) -> Optional[str]:
    """A value that no run writes: the position not a count, an optimiser lr, momentum or weight
    decay out of the options' ranges (or an lr above the run's --lr: schedules only divide it),
    a loss limit that is not a positive finite number."""
    for key in ("epoch", "step", "epoch_step"):
        if not _is_count(ckpt[key]):
            return f"{key} {ckpt[key]!r} is not a count"
    groups = ckpt["optimizer"].get("param_groups") if isinstance(ckpt["optimizer"], dict) else None
    if not isinstance(groups, list) or not groups:
        return "its optimiser state has no parameter groups"
    run_lr = (ckpt.get("config") or {}).get("lr")
    for g in groups:
        lr, momentum, decay = g.get("lr"), g.get("momentum", 0.0), g.get("weight_decay", 0.0)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lr, momentum, decay)):
            return (
                f"optimiser values lr {lr!r}, momentum {momentum!r}, weight decay {decay!r} are not all finite numbers"
            )
        if lr <= 0 or not 0 <= momentum < 1 or decay < 0:
            return f"optimiser values out of range: lr {lr!r}, momentum {momentum!r}, weight decay {decay!r}"
        if isinstance(run_lr, (int, float)) and lr > run_lr * (1 + 1e-6):
            return f"optimiser lr {lr!r} is above the run's --lr {run_lr!r} (schedules only lower it)"
    limit = (ckpt.get("extra") or {}).get("loss_limit")
    if limit is not None and not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0):
        return f"loss limit {limit!r} is not a positive finite number"
    return None


# Options that decide the shapes of the model's tensors (a changed class list too).
SHAPING = ("--arch", "--width", "--crop", "--synthetic-classes", "--fused", "class list")


def shape_mismatches(model_state: Dict[str, Any], saved_state: Dict[str, Any]) -> list:
    """Lines naming each tensor whose shape differs between the checkpoint and the model, and
    the tensors only one of them has."""
    lines = []
    for name, t in saved_state.items():
        now = model_state.get(name)
        if now is None:
            lines.append(f"{name}: in the checkpoint only")
        elif isinstance(t, torch.Tensor) and tuple(t.shape) != tuple(now.shape):
            lines.append(f"{name}: {tuple(t.shape)} in the checkpoint, {tuple(now.shape)} now")
    lines += [f"{name}: in this model only" for name in model_state if name not in saved_state]
    return lines


def _misfit(path: str, lines: list, changed: Sequence[str]) -> CheckpointError:
    shaping = [c for c in changed if c.startswith(SHAPING)] or list(changed)
    cause = (
        f"changed since the checkpoint: {'; '.join(shaping)}"
        if shaping
        else "no option that shapes the model changed: the file belongs to another model"
    )
    shown = "\n  ".join(lines[:10]) + ("\n  ..." if len(lines) > 10 else "")
    return CheckpointError(
        f"{path}: its weights do not fit this model ({len(lines)} tensor(s)):\n  {shown}\n{cause}. "
        f"--resume-allow-changes accepts a new data order, not another model shape: resume with the "
        f"checkpoint's values of these options, or start a new run (another --output)."
    )


def restore(
    ckpt: Dict[str, Any],
    *,
    model,
    optimizer,
    scheduler,
    restore_rng: bool = True,
    path: str = "checkpoint",
    changed: Sequence[str] = (),
) -> None:
    """Load the checkpoint's states. ``changed``: the options that differ from the checkpoint's run
    (resume.compare's lines), named when the weights do not fit."""
    target = unwrap(model)
    lines = shape_mismatches(target.state_dict(), ckpt["model"]) if isinstance(ckpt["model"], dict) else []
    if lines:
        raise _misfit(path, lines, changed)
    try:
        target.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if restore_rng:
            set_rng_state(ckpt["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        why = (str(exc).splitlines() or [""])[0][:300]
        raise CheckpointError(
            f"{path}: does not fit this model, optimiser or schedule ({type(exc).__name__}: {why})"
        ) from exc


def find_resume(path_or_dir: str) -> str:
    """``--resume`` accepts a file or a run folder (then its last.pt)."""
    if os.path.isdir(path_or_dir):
        path_or_dir = os.path.join(path_or_dir, "last.pt")
    if not os.path.isfile(path_or_dir):
        raise CheckpointError(f"--resume: no checkpoint at {path_or_dir}")
    return path_or_dir
