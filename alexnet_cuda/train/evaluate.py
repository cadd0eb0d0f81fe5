"""Top-1 / top-5 error on the centre crop and on the paper's 10-crop average.

The paper's test-time procedure (section 4.1): "extracting five 224x224 patches (the four
corner patches and the center patch) as well as their horizontal reflections (hence ten
patches in all), and averaging the predictions made by the network's softmax layer on the
ten patches". :func:`ten_crop_probs` does exactly that, batched: the 10 views of a batch go
through the model as one (10*N)-image batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F

from .augment import center_crop, ten_crops


def topk_correct(logits_or_probs: torch.Tensor, labels: torch.Tensor, ks=(1, 5)):
    """Number of samples whose label is among the top-k scores, for each k (k capped at C)."""
    maxk = min(max(ks), logits_or_probs.shape[1])
    top = logits_or_probs.topk(maxk, dim=1).indices
    hit = top == labels[:, None]
    return [int(hit[:, : min(k, maxk)].any(1).sum()) for k in ks]


def ten_crop_probs(model: Callable, x: torch.Tensor, crop: int, chunk: Optional[int] = None) -> torch.Tensor:
    """Mean softmax over the 10 views of each image in x (N, C, S, S) -> (N, classes).

    ``chunk`` bounds how many views go through the model at once (default: all 10N).
    """
    n = x.shape[0]
    views = ten_crops(x, crop).reshape(10 * n, *x.shape[1:-2], crop, crop)
    if chunk is None or chunk >= 10 * n:
        logits = model(views)
    else:
        logits = torch.cat([model(views[i : i + chunk]) for i in range(0, 10 * n, chunk)])
    probs = F.softmax(logits.float(), dim=1)
    return probs.reshape(10, n, -1).mean(0)


@dataclass
class EvalResult:
    count: int = 0
    loss_sum: float = 0.0
    top1: int = 0
    top5: int = 0
    top1_10crop: int = 0
    top5_10crop: int = 0
    skipped: int = 0
    extra: dict = field(default_factory=dict)

    def add(self, other: "EvalResult") -> None:
        for k in ("count", "loss_sum", "top1", "top5", "top1_10crop", "top5_10crop", "skipped"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_tensor(self, device) -> torch.Tensor:
        return torch.tensor(
            [self.count, self.loss_sum, self.top1, self.top5, self.top1_10crop, self.top5_10crop, self.skipped],
            dtype=torch.float64,
            device=device,
        )

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "EvalResult":
        v = t.tolist()
        return cls(int(v[0]), v[1], int(v[2]), int(v[3]), int(v[4]), int(v[5]), int(v[6]))

    def metrics(self, ten_crop: bool = True) -> dict:
        """The validation metrics; only the skip count when no image could be read (no invented
        errors for the plateau schedule to act on)."""
        if self.count == 0:
            return {"val_skipped": self.skipped} if self.skipped else {}
        n = self.count
        out = {
            "val_loss": self.loss_sum / n,
            "val_top1_err": 1 - self.top1 / n,
            "val_top5_err": 1 - self.top5 / n,
        }
        if ten_crop:
            out["val10_top1_err"] = 1 - self.top1_10crop / n
            out["val10_top5_err"] = 1 - self.top5_10crop / n
        out["val_images"] = self.count
        out["val_skipped"] = self.skipped
        return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable,
    normalize: Callable,
    crop: int,
    *,
    ten_crop: bool = True,
    autocast_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    out_device=None,
    all_reduce: Optional[Callable] = None,
) -> EvalResult:
    """Run ``model`` over ``batches`` (data.Batch of uint8 (N,3,S,S)), centre and 10-crop.

    ``normalize`` turns the uint8 batch into the model's input scale on the right device
    (augment.GPUAugment.normalize). ``all_reduce`` (distributed) sums the counts over ranks.
    """
    was_training = model.training
    model.eval()
    res = EvalResult()
    try:
        for batch in batches:
            res.skipped += batch.skipped
            if batch.labels.numel() == 0:
                continue
            x = normalize(batch.images)
            dev_type = x.device.type

            def run(inp):
                if channels_last:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                with torch.autocast(dev_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    return model(inp)

            logits = run(center_crop(x, crop).contiguous()).float()
            labels = batch.labels.to(logits.device)
            res.loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            t1, t5 = topk_correct(logits, labels)
            res.top1 += t1
            res.top5 += t5
            if ten_crop:
                probs = ten_crop_probs(run, x, crop)
                t1, t5 = topk_correct(probs, labels.to(probs.device))
                res.top1_10crop += t1
                res.top5_10crop += t5
            res.count += labels.numel()
    finally:
        model.train(was_training)
    if all_reduce is not None:
        res = EvalResult.from_tensor(all_reduce(res.as_tensor(out_device or "cpu")))
    return res
