"""The loss monitor: per-step losses and the epoch's running sums, kept on the device between
reads, and the NaN/inf guard that runs where they are read.

Reading a loss back syncs the GPU, so a check per step would stall its queue. The monitor
collects each step's loss (and the batch's loss sum and correct count) as device tensors and
reads them at points every DDP rank reaches at the same step: log steps, epoch ends and
before every checkpoint. Up to ``log_every - 1`` steps may run past a non-finite loss, but
no checkpoint is ever written after one. Stopping, rather than skipping the step: a NaN loss
has already produced NaN gradients and, by the time it is seen, NaN weights and momentum,
which no later step can repair.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from . import distributed as D


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite; ``step`` is the (1-based) step where this process saw
    it first (None when another DDP process saw it)."""

    def __init__(self, message: str, step: Optional[int] = None):
        super().__init__(message)
        self.step = step


class LossMonitor:
    """Losses of every step (``losses``, read back in order), device-side running sums, and the
    first non-finite loss this process read (``first_bad``: step and value)."""

    def __init__(self, info: D.DistInfo, device: torch.device):
        self.info = info
        self.flag_device = device if device.type == "cuda" else torch.device("cpu")
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

    def read(self, step: int) -> None:
        """Read back the losses recorded since the last read; ``step`` is the last one's number."""
        if not self._pending:
            return
        first = step - len(self._pending) + 1  # 1-based number of the step of pending[0]
        vals = torch.stack(self._pending).float().cpu().tolist()
        self.losses.extend(vals)
        self._pending.clear()
        if self.first_bad is None:
            bad = next((i for i, v in enumerate(vals) if not math.isfinite(v)), None)
            if bad is not None:
                self.first_bad = {"step": first + bad, "value": vals[bad]}

    def fold_into(self, acc: Dict) -> None:
        """Add the device-side sums to the epoch's ``acc`` (loss_sum, correct) and reset them."""
        if self._sums:
            acc["loss_sum"] += float(self._sums.pop("loss"))
            acc["correct"] += int(self._sums.pop("correct"))

    def any_nonfinite(self) -> bool:
        """Whether this process, or under DDP any process, has read a non-finite loss. Every rank
        must call it at the same step (one all-reduce), so all of them stop together."""
        seen = self.first_bad is not None
        if not self.info.initialized:
            return seen
        flag = torch.tensor([1.0 if seen else 0.0], device=self.flag_device)
        return D.all_reduce_sum(self.info, flag).item() > 0

    def check(self, step: int, epoch: int, checkpoint: Optional[str], checkpoint_step: Optional[int]) -> None:
        """Read the pending losses, then raise :class:`NonFiniteLossError` if any was not finite
        (here or on another rank). ``checkpoint``: the last file this run wrote, named in the
        message as the place to resume from."""
        self.read(step)
        if not self.any_nonfinite():
            return
        bad = self.first_bad
        where = (f"at step {bad['step']} (loss {bad['value']})" if bad is not None
                 else f"on another process (noticed at step {step})")
        last = (f"the last checkpoint, {checkpoint}, is from step {checkpoint_step}, before it"
                if checkpoint else "no checkpoint was written by this run")
        raise NonFiniteLossError(
            f"non-finite training loss {where}, epoch {epoch + 1}: training stopped and no checkpoint was "
            f"written after it; {last}. Lower --lr (or check the data and the model) and resume or restart.",
            step=bad["step"] if bad is not None else None)
