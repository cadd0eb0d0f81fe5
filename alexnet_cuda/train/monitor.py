"""The loss monitor: per-step losses and the epoch's running sums, kept on the device between
reads, and the divergence guard that runs where they are read.

Reading a loss back syncs the GPU, so a check per step would stall its queue. The monitor
collects each step's loss (and the batch's loss sum and correct count) as device tensors and
reads them at points every DDP rank reaches at the same step: log steps, epoch ends and
before every checkpoint.

Diverged means a loss that is NaN or infinite, or above the loss limit: ``LIMIT_FACTOR``
times the larger of ln(classes) (the loss of a uniform guess) and the run's first loss. A
healthy run never averages ten times worse than guessing; a diverging one passes that level
a step or two before its losses overflow, which is what keeps its checkpoints usable.

Training stops at a diverged loss rather than skipping the step: by the time it is read, its
gradients are already in the weights and the momentum, which no later step can repair.
Up to ``log_every - 1`` steps may run past it, but no checkpoint is ever written after it,
and each checkpoint's own weights are checked before it is written (loop.save), so every
checkpoint file is one to resume from.
"""

from __future__ import annotations

import math
import shlex
from typing import Dict, List, Optional, Tuple

import torch

from . import distributed as D

LIMIT_FACTOR = 10.0


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN, infinite or above the loss limit (the run diverged); ``step`` is
    the (1-based) step where this process saw it first (None when another DDP process saw it).
    The message ends with the options to add to the same command to go on (see
    :func:`resume_advice`)."""

    def __init__(self, message: str, step: Optional[int] = None):
        super().__init__(message)
        self.step = step


def resume_advice(resume_from: Optional[Tuple[str, int]], lower_lr: float, causes: str = "") -> str:
    """The end of the divergence message: what to add to the same command. ``resume_from``:
    (file, step) of the newest checkpoint, or None. ``causes``: the options whose values set the
    size of the updates (named so a too-large one other than --lr can be found)."""
    lr = f"{lower_lr:.3g}"
    check = f"or check the data, the model and {causes}" if causes else "or check the data and the model"
    if resume_from is None:
        return (
            f"No checkpoint to resume from: restart with a tenth of the lr ({check}); run the same command "
            f"followed by: --lr {lr}"
        )
    path, step = resume_from
    return (
        f"{path} (step {step}) had its weights checked before it was written: resume from it with a tenth "
        f"of the lr ({check}); run the same command followed by: --resume {shlex.quote(path)} --lr {lr}"
    )


class LossMonitor:
    """Losses of every step (``losses``, read back in order), device-side running sums, the
    loss limit (``limit``, None until the first loss is read) and the first diverged loss this
    process saw (``first_bad``: step, value and what it was)."""

    def __init__(self, info: D.DistInfo, device: torch.device, num_classes: int = 2):
        self.info = info
        self.flag_device = device if device.type == "cuda" else torch.device("cpu")
        self.chance_loss = math.log(max(num_classes, 2))
        self.limit: Optional[float] = None
        self.losses: List[float] = []
        self.first_bad: Optional[Dict] = None
        self._pending: List[torch.Tensor] = []
        self._sums: Dict[str, torch.Tensor] = {}

    def record(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One step's mean loss and predictions, on the device (no sync)."""
        n = labels.numel()
        self._pending.append(loss)
        correct = (logits.argmax(1) == labels).sum()
        if self._sums:
            self._sums["loss"] += loss.double() * n
            self._sums["correct"] += correct
        else:
            self._sums.update(loss=loss.double() * n, correct=correct)

    def diverged(self, value: float) -> bool:
        """NaN, infinite or above the limit; the first finite value sets the limit."""
        if not math.isfinite(value):
            return True
        if self.limit is None:
            self.limit = LIMIT_FACTOR * max(self.chance_loss, value)
        return value > self.limit

    def _flag(self, step: int, value: float, what: str) -> None:
        if self.first_bad is None and self.diverged(value):
            self.first_bad = {"step": step, "value": value, "what": what}

    def read(self, step: int) -> None:
        """Read back the losses recorded since the last read; ``step`` is the last one's number."""
        if not self._pending:
            return
        first = step - len(self._pending) + 1  # 1-based number of the step of pending[0]
        vals = torch.stack(self._pending).float().cpu().tolist()
        self.losses.extend(vals)
        self._pending.clear()
        for i, v in enumerate(vals):
            self._flag(first + i, v, "training loss")

    def check_weights_loss(self, step: int, value: float) -> None:
        """The loss of the weights about to be checkpointed (after ``step``), on that step's batch."""
        self._flag(step, value, "loss of the weights after it")

    def fold_into(self, acc: Dict) -> None:
        """Add the device-side sums to the epoch's ``acc`` (loss_sum, correct) and reset them."""
        if self._sums:
            acc["loss_sum"] += float(self._sums.pop("loss"))
            acc["correct"] += int(self._sums.pop("correct"))

    def any_diverged(self) -> bool:
        """Whether this process, or under DDP any process, has seen a diverged loss. Every rank
        must call it at the same step (one all-reduce), so all of them stop together."""
        seen = self.first_bad is not None
        if not self.info.initialized:
            return seen
        flag = torch.tensor([1.0 if seen else 0.0], device=self.flag_device)
        return D.all_reduce_sum(self.info, flag).item() > 0

    def check(
        self, step: int, epoch: int, resume_from: Optional[Tuple[str, int]], lower_lr: float, causes: str = ""
    ) -> None:
        """Read the pending losses, then raise :class:`NonFiniteLossError` if any diverged (here or
        on another rank). ``resume_from``: (file, step) of the newest checkpoint this run wrote or
        resumed from; ``lower_lr``: the --lr to advise; ``causes``: see :func:`resume_advice`."""
        self.read(step)
        if not self.any_diverged():
            return
        bad = self.first_bad
        if bad is None:
            where = f"on another process (noticed at step {step})"
        else:
            limit = f"above the limit {self.limit:.4g}" if math.isfinite(bad["value"]) else "not finite"
            where = f"at step {bad['step']} ({bad['what']} {bad['value']:.4g}, {limit})"
        raise NonFiniteLossError(
            f"training diverged {where}, epoch {epoch + 1}: training stopped and no checkpoint was written "
            f"after it. {resume_advice(resume_from, lower_lr, causes)}",
            step=bad["step"] if bad is not None else None,
        )
