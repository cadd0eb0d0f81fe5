"""The paper's SGD update and its learning-rate schedules.

Paper (section 5), with momentum m = 0.9 and weight decay d = 0.0005:

    v <- m * v - d * lr * w - lr * grad
    w <- w + v

``torch.optim.SGD(momentum=m, weight_decay=d)`` instead keeps a buffer of gradients and
applies the learning rate afterwards:

    b <- m * b + (grad + d * w)
    w <- w - lr * b

While lr is constant the two are the same sequence of weights (v = -lr * b). They differ
when lr changes: torch rescales the whole history at once (the step after a drop from lr to
lr/10 is lr/10 * (m*b + ...), so the accumulated velocity shrinks 10x instantly), while the
paper's velocity keeps the old lr's momentum and lets it decay at rate m (0.9^k). The drop
is therefore a little softer in the paper's form. :class:`PaperSGD` implements the paper's
form exactly; tests check that it equals torch.optim.SGD at constant lr and differs as
described at a drop.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay inside the velocity, as written in the paper.

    State per parameter: ``velocity`` (v above). Uses foreach ops (one kernel launch per
    op for all parameters of a device/dtype) where available.
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        foreach: Optional[bool] = None,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            params: List[torch.Tensor] = []
            grads: List[torch.Tensor] = []
            vels: List[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                vels.append(state["velocity"])
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type in ("cuda", "cpu") for p in params)
            if foreach:
                # v = m*v - (wd*lr)*w - lr*g ; w = w + v   (same arithmetic order as the loop below)
                torch._foreach_mul_(vels, m)
                if wd != 0:
                    torch._foreach_add_(vels, params, alpha=-wd * lr)
                torch._foreach_add_(vels, grads, alpha=-lr)
                torch._foreach_add_(params, vels)
            else:
                for p, g, v in zip(params, grads, vels):
                    v.mul_(m)
                    if wd != 0:
                        v.add_(p, alpha=-wd * lr)
                    v.add_(g, alpha=-lr)
                    p.add_(v)
        return loss


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


class PlateauSchedule:
    """Divide lr by ``factor`` when the validation error has not improved for ``patience``
    evaluations, at most ``max_drops`` times (the paper: by 10, three times in ~90 epochs).

    "Improved" means lower than the best so far by more than ``threshold`` (absolute, in
    error fraction). After a drop the patience counter restarts.
    """

    def __init__(self, optimizer, factor: float = 0.1, patience: int = 5, max_drops: int = 3, threshold: float = 1e-3):
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.max_drops = max_drops
        self.threshold = threshold
        self.best = math.inf
        self.bad_epochs = 0
        self.drops = 0
        self.drop_epochs: List[int] = []

    def step(self, epoch: int, val_error: Optional[float] = None) -> bool:
        """Call after each epoch's evaluation. Returns True when lr was dropped."""
        if val_error is None:
            return False
        if val_error < self.best - self.threshold:
            self.best = val_error
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.patience and self.drops < self.max_drops:
            _set_lr(self.optimizer, self.optimizer.param_groups[0]["lr"] * self.factor)
            self.drops += 1
            self.drop_epochs.append(epoch)
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self):
        return {
            k: getattr(self, k)
            for k in ("factor", "patience", "max_drops", "threshold", "best", "bad_epochs", "drops", "drop_epochs")
        }

    def load_state_dict(self, d):
        for k, v in d.items():
            setattr(self, k, v)


class MilestoneSchedule:
    """Fixed schedule: lr = base * factor^(number of milestones <= epoch).

    ``--lr-milestones 25,51,79`` (the default) is an example spread over ~90 epochs: the paper
    only says lr was divided by 10 three times, when validation error stopped improving
    (:class:`PlateauSchedule`); we know of no published log with these epochs.
    ``epoch`` is the 0-based index of the epoch about to start.
    """

    def __init__(self, optimizer, milestones: Sequence[int], factor: float = 0.1, base_lr: Optional[float] = None):
        self.optimizer = optimizer
        self.milestones = sorted(int(m) for m in milestones)
        self.factor = factor
        self.base_lr = base_lr if base_lr is not None else optimizer.param_groups[0]["lr"]
        self.drop_epochs: List[int] = []

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.factor ** sum(1 for m in self.milestones if m <= epoch)

    def start_epoch(self, epoch: int) -> None:
        lr = self.lr_at(epoch)
        if lr != self.optimizer.param_groups[0]["lr"]:
            self.drop_epochs.append(epoch)
        _set_lr(self.optimizer, lr)

    def step(self, epoch: int, val_error: Optional[float] = None) -> bool:
        return False  # nothing depends on validation

    def state_dict(self):
        return {
            "milestones": self.milestones,
            "factor": self.factor,
            "base_lr": self.base_lr,
            "drop_epochs": self.drop_epochs,
        }

    def load_state_dict(self, d):
        for k, v in d.items():
            setattr(self, k, v)
