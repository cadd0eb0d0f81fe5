"""Process groups, device placement and data sharding for torchrun / DDP.

One process per GPU (or per GPU pair with --model-parallel, the paper's two towers on two
GPUs). torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them
we run as a single process and no process group is created.

Backend: NCCL when training on CUDA, gloo on CPU. With --model-parallel each process owns
GPUs (2*local_rank, 2*local_rank+1) and wraps the model in DDP with device_ids=None, which
is how DDP supports multi-device modules.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str, backend: Optional[str] = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device_type == "cuda" else "gloo"))
    return DistInfo(rank, world, local_rank, True)


def cleanup(info: DistInfo) -> None:
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.initialized:
        dist.barrier()


def all_reduce_sum(info: DistInfo, t: torch.Tensor) -> torch.Tensor:
    if info.initialized:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def pick_devices(device: str, info: DistInfo, model_parallel: bool) -> Tuple[torch.device, Optional[Tuple[str, str]]]:
    """The input device of this process and, with model parallelism, its two tower devices."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but CUDA is not available")
        if model_parallel:
            first = 2 * info.local_rank
            if first + 1 >= torch.cuda.device_count():
                raise RuntimeError(
                    f"--model-parallel needs 2 GPUs per process: local rank {info.local_rank} wants "
                    f"cuda:{first} and cuda:{first + 1}, {torch.cuda.device_count()} visible"
                )
            devs = (f"cuda:{first}", f"cuda:{first + 1}")
            torch.cuda.set_device(first)
            return torch.device(devs[0]), devs
        if ":" in device:
            dev = torch.device(device)
        else:
            dev = torch.device("cuda", info.local_rank if info.initialized else torch.cuda.current_device())
        torch.cuda.set_device(dev)
        return dev, None
    if model_parallel:
        raise RuntimeError("--model-parallel needs CUDA GPUs")
    return torch.device(device), None


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device, model_parallel: bool):
    if not info.initialized:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if model_parallel or device.type != "cuda":
        # Multi-device module (or CPU): DDP must not be told a single device.
        return DDP(model, device_ids=None)
    return DDP(model, device_ids=[device.index], output_device=device.index)


class ResumableDistributedSampler(torch.utils.data.Sampler):
    """DistributedSampler semantics (shuffle with seed + epoch, pad to equal shards, rank-strided)
    plus ``start``: skip the first ``start`` samples of this rank's shard, so a resume in the
    middle of an epoch continues with the very next batch.

    Works without a process group too (num_replicas=1, rank=0).
    """

    def __init__(
        self, n: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ):
        self.n = n
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        if drop_last and n % num_replicas:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total = self.num_samples * num_replicas
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def indices(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.total > len(idx):
            pad = self.total - len(idx)
            idx += (idx * math.ceil(pad / max(len(idx), 1)))[:pad]
        else:
            idx = idx[: self.total]
        return idx[self.rank : self.total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def shard_indices(n: int, info: DistInfo):
    """Unpadded rank-strided shard, for evaluation (no sample counted twice)."""
    return list(range(info.rank, n, info.world_size))
