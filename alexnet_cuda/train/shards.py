"""Reading a prepared dataset: the shards ``python -m alexnet_cuda.prepare`` writes.

A prepared folder holds the paper's 256x256 images (shorter side to 256, centre crop; the
resize of :func:`data.preprocess`), made once, in one or both of two formats:

* ``raw``: ``<split>-NNNNN.npy``, uint8 (N, 3, S, S) RGB, channel first (what the trainer's
  batches hold), memory-mapped with ``numpy.load(mmap_mode="r")``. No decoding at all: a batch
  is a gather of rows. 197 KB per image at 256 px (about 250 GB for ImageNet's training set).
* ``jpeg``: ``<split>-NNNNN.tar``, WebDataset-style (``KEY.jpg`` + ``KEY.cls`` members, the
  class index as text): the ``webdataset`` package and NVIDIA DALI's webdataset reader read
  it, as does Python's ``tarfile``. ``<split>-NNNNN.idx.npy`` holds each JPEG's (offset,
  size) in the tar so this module reads one image with one ``pread``. Decoded in DataLoader
  workers, or batched on the GPU with nvJPEG (``--gpu-decode``).

Next to them, for both formats: ``<split>-NNNNN.labels.npy`` (int64 class indices),
``<split>-NNNNN.json`` (the shard's record: its source files, unreadable files, and the size
and sha256 of each file; written last, so its presence means the shard is complete),
``stats.pt`` (the training set's mean image and RGB PCA, in :class:`data.DatasetStats`'s
format) and ``manifest.json`` (classes, formats, preprocessing parameters, every shard's
count, sizes and checksums). The manifest is how the trainer recognises a prepared folder.

Image i of a split is row ``i - first`` of the shard whose range holds it, shards in the
manifest's order; the order is the sorted order of the source files (the ImageFolder path's
order, less the unreadable files), so a global index means the same image in both paths.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import data as _data
from .data import Batch, DatasetStats, Unreadable, _report_unreadable, _tv, collate_uint8

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FORMATS = ("raw", "jpeg")
STATS_FILE = "stats.pt"

# data.DataError (what the CLI reports as one message, exit 2) where this version has it.
_DataError = getattr(_data, "DataError", ValueError)


class PreparedDataError(_DataError):
    """A prepared folder that is incomplete, damaged or from another version: the message names
    the file and says how to repair it (rerun prepare, which keeps the good shards)."""


def is_prepared(path: Optional[str]) -> bool:
    """True when ``path`` is a folder written by ``python -m alexnet_cuda.prepare``."""
    return bool(path) and os.path.isfile(os.path.join(path, MANIFEST))


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def shard_files(name: str, formats: Sequence[str]) -> List[str]:
    """The data files of shard ``name`` (without its .json record) for ``formats``."""
    files = [f"{name}.labels.npy"]
    if "raw" in formats:
        files.append(f"{name}.npy")
    if "jpeg" in formats:
        files += [f"{name}.tar", f"{name}.idx.npy"]
    return files


def check_files(folder: str, files: Dict[str, Dict], checksums: bool) -> List[str]:
    """Problems with ``files`` ({name: {"bytes", "sha256"}}) under ``folder``: missing, wrong
    size, or (``checksums``) wrong sha256. Each problem names its file."""
    problems = []
    for name, want in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{name}: missing")
        elif os.path.getsize(path) != want["bytes"]:
            problems.append(f"{name}: {os.path.getsize(path)} bytes, the manifest says {want['bytes']}")
        elif checksums and sha256_file(path) != want["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest's (the file is damaged)")
    return problems


def read_manifest(root: str) -> Dict:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except (OSError, ValueError) as exc:
        raise PreparedDataError(f"cannot read {path}: {exc}; rerun python -m alexnet_cuda.prepare") from exc
    if not isinstance(man, dict) or man.get("format_version") != FORMAT_VERSION:
        raise PreparedDataError(
            f"{path} is not a version-{FORMAT_VERSION} manifest of alexnet_cuda.prepare; "
            "rerun python -m alexnet_cuda.prepare"
        )
    return man


def verify(root: str, checksums: bool = True) -> List[str]:
    """Every problem of a prepared folder (each naming its file); [] when it is intact. Sizes
    only with ``checksums`` False (instant; the trainer does that at start)."""
    man = read_manifest(root)
    problems = []
    for split in man["splits"].values():
        for shard in split["shards"]:
            problems += check_files(root, shard["files"], checksums)
    problems += check_files(root, {STATS_FILE: man["stats"]["file"]}, checksums)
    return problems


# --------------------------------------------------------------------------------------
# Datasets over the shards of one split
# --------------------------------------------------------------------------------------
class _Shards:
    """Maps a split's global image index to (shard, row)."""

    def __init__(self, root: str, split: Dict):
        self.root = root
        self.names = [s["name"] for s in split["shards"]]
        counts = [int(s["count"]) for s in split["shards"]]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.labels = np.concatenate(
            [np.load(os.path.join(root, f"{n}.labels.npy")) for n in self.names] or [np.zeros(0, np.int64)]
        ).astype(np.int64)
        if len(self.labels) != self.starts[-1]:
            raise PreparedDataError(
                f"{root}: the label files hold {len(self.labels)} labels, the manifest "
                f"counts {self.starts[-1]} images; rerun python -m alexnet_cuda.prepare"
            )

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} of a split of {len(self)}")
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        return s, i - int(self.starts[s])


class PreparedRaw(torch.utils.data.Dataset):
    """The raw uint8 shards of one split, memory-mapped: item = (uint8 (3, S, S), label).

    The trainer reads it through :class:`GatherLoader` (setup.make_loader asks for
    :meth:`loader`): each batch is gathered straight from the maps into one tensor. The maps
    are opened lazily in each process that reads them.
    """

    def __init__(self, root: str, split: Dict, size: int):
        self.index = _Shards(root, split)
        self.size = size
        self._maps: Dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):  # DataLoader workers: reopen the maps in the worker
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def _map(self, s: int) -> np.ndarray:
        m = self._maps.get(s)
        if m is None:
            m = np.load(os.path.join(self.index.root, f"{self.index.names[s]}.npy"), mmap_mode="r")
            self._maps[s] = m
        return m

    def __getitem__(self, i: int):
        s, r = self.index.locate(int(i))
        return torch.from_numpy(np.array(self._map(s)[r])), int(self.index.labels[i])

    def gather(self, indices: Sequence[int], pin: bool = False) -> Batch:
        """Images ``indices`` as one Batch, copied straight from the maps into one (pinned, with
        ``pin``) uint8 (N, 3, S, S) tensor: one copy per image, no decode, no stack. numpy's
        copies release the GIL, so threads gather in parallel with the training step."""
        idx = np.asarray(indices, dtype=np.int64)
        out = torch.empty((len(idx), 3, self.size, self.size), dtype=torch.uint8, pin_memory=pin)
        dst = out.numpy()
        shard = np.searchsorted(self.index.starts, idx, side="right") - 1
        rows = idx - self.index.starts[shard]
        for j in range(len(idx)):
            dst[j] = self._map(int(shard[j]))[rows[j]]
        labels = torch.from_numpy(self.index.labels[idx])
        return Batch(out, labels.pin_memory() if pin else labels)

    def __getitems__(self, indices: Sequence[int]) -> Batch:  # a DataLoader's batched fetch
        return self.gather(indices)

    def loader(self, batch_size: int, sampler, workers: int, pin: bool) -> "GatherLoader":
        """What setup.make_loader returns for this dataset (see :class:`GatherLoader`)."""
        return GatherLoader(self, batch_size, sampler, workers, pin)


class GatherLoader:
    """Batches of :class:`PreparedRaw` gathered by ``threads`` threads of this process, straight
    into pinned memory where CUDA is used (``pin``), in the sampler's order; up to ``prefetch``
    batches per thread ahead of the training loop. ``threads`` 0: gathered when asked for.

    Why threads and not DataLoader worker processes: a gather is a memory copy. A worker's
    batch would be copied again into shared memory, then again into pinned memory; measured
    here, one worker process delivered about a tenth of what the same core gathers directly.
    Iterating again starts a new pass over the sampler (which DDP and resume position with
    set_epoch), like a DataLoader.
    """

    def __init__(self, dataset: PreparedRaw, batch_size: int, sampler, threads: int, pin: bool, prefetch: int = 4):
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.threads, self.pin, self.prefetch = threads, pin, prefetch
        # The threads pin on this process's GPU (setup_run has selected it): a thread's current
        # device is its own, and pinning from device 0 would put a CUDA context of every DDP
        # rank on GPU 0 (the DataLoader's pin thread does the same).
        self.device = torch.cuda.current_device() if pin and torch.cuda.is_available() else None

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return -(-n // self.batch_size)

    def _batches(self):
        order = iter(self.sampler) if self.sampler is not None else iter(range(len(self.dataset)))
        while True:
            chunk = list(itertools.islice(order, self.batch_size))
            if not chunk:
                return
            yield chunk

    def __iter__(self):
        if self.threads == 0:
            for chunk in self._batches():
                yield self.dataset.gather(chunk, self.pin)
            return
        init = (torch.cuda.set_device, (self.device,)) if self.device is not None else (None, ())
        with ThreadPoolExecutor(
            self.threads, thread_name_prefix="gather", initializer=init[0], initargs=init[1]
        ) as pool:
            ahead: collections.deque = collections.deque()
            for chunk in self._batches():
                ahead.append(pool.submit(self.dataset.gather, chunk, self.pin))
                if len(ahead) > self.prefetch * self.threads:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()


class PreparedJpeg(torch.utils.data.Dataset):
    """The JPEG tar shards of one split: item = (uint8 (3, S, S), label), decoded here (in a
    DataLoader worker); or, with ``raw_bytes`` (for nvJPEG on the GPU, see data.decode_batch),
    (uint8 1-D tensor of the JPEG, label, True, key). A JPEG that fails to decode is
    :class:`data.Unreadable` (named by shard and row), never fatal."""

    def __init__(self, root: str, split: Dict, size: int, raw_bytes: bool = False):
        self.index = _Shards(root, split)
        self.size = size
        self.raw_bytes = raw_bytes
        self._offsets = [np.load(os.path.join(root, f"{n}.idx.npy")) for n in self.index.names]
        self._fds: Dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def read(self, i: int) -> bytes:
        s, r = self.index.locate(int(i))
        fd = self._fds.get(s)
        if fd is None:
            fd = self._fds[s] = os.open(os.path.join(self.index.root, f"{self.index.names[s]}.tar"), os.O_RDONLY)
        offset, size = (int(v) for v in self._offsets[s][r])
        return os.pread(fd, size, offset)

    def key(self, i: int) -> str:
        s, r = self.index.locate(int(i))
        return f"{self.index.names[s]}.tar:{r}"

    def __getitem__(self, i: int):
        tvio, _ = _tv()
        data = torch.frombuffer(bytearray(self.read(i)), dtype=torch.uint8)
        label = int(self.index.labels[i])
        if self.raw_bytes:
            return data, label, True, self.key(i)
        try:
            img = tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB)
        except Exception as exc:  # a damaged shard: the batch goes on without this image
            _report_unreadable(exc, self.key(i))
            return Unreadable(self.key(i))
        if img.shape[-2:] != (self.size, self.size):
            _report_unreadable(ValueError(f"{tuple(img.shape)} instead of {self.size}x{self.size}"), self.key(i))
            return Unreadable(self.key(i))
        return img, label


def collate_prepared(items) -> Batch:
    """Collate for prepared datasets: :class:`PreparedRaw` already returns a whole Batch."""
    if isinstance(items, Batch):
        return items
    return collate_uint8(items)


# --------------------------------------------------------------------------------------
# The trainer's data from a prepared folder (setup.setup_run calls this for --data PREPARED)
# --------------------------------------------------------------------------------------
def _prepared_stats(cfg, info, root: str, train_ds, stats_path: str):
    """The mean/PCA: prepare's (stats.pt, over every training image) unless --stats-file or
    --stats-max-images ask for another file or subset, which is then computed from the shards
    (the same pixels the ImageFolder path decodes) and cached like the ImageFolder path's."""
    from .data import default_stats_path, load_or_compute_stats
    from .logs import make_progress
    from .training_run import make_loader

    if not cfg.stats_file and not cfg.stats_max_images:
        return stats_path, DatasetStats.from_state_dict(torch.load(stats_path, map_location="cpu", weights_only=True))
    n = min(cfg.stats_max_images or len(train_ds), len(train_ds))
    path = cfg.stats_file or default_stats_path(root, cfg.image_size, len(train_ds), cfg.stats_max_images)

    def loader():
        return make_loader(train_ds, 64, list(range(n)), cfg.workers, collate_prepared, False)

    return path, load_or_compute_stats(
        path,
        loader,
        info.local_rank == 0,
        progress_factory=lambda: make_progress(n, "mean/PCA", cfg.progress, info.is_main),
    )


def _check_prepared(root: str, man: Dict, cfg) -> None:
    size = man["preprocessing"]["size"]
    if size != cfg.image_size:
        raise PreparedDataError(
            f"--data {root} holds {size}x{size} images and --image-size is {cfg.image_size}: "
            f"use --image-size {size}, or prepare again with --size {cfg.image_size}"
        )
    problems = verify(
        root, checksums=False
    )  # sizes only: instant (python -m alexnet_cuda.prepare --verify checks sha256)
    if problems:
        raise PreparedDataError(
            f"--data {root} is damaged: {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}; rerun python -m alexnet_cuda.prepare with the "
            f"same arguments (it keeps the intact shards and makes the others again)"
        )
    empty = [c for c, n in zip(man["classes"], man["train_images_per_class"]) if n == 0]
    if empty:
        raise PreparedDataError(
            f"--data {root}: training classes without a readable image: {', '.join(empty[:10])}"
            " (a class no image has); fix or remove them and prepare again"
        )


def prepared_data(cfg, info, device, per_rank_bs: int) -> Dict:
    """Datasets, collate function and statistics of a prepared folder (cfg.data), in the form
    setup.folder_data returns. Raw shards are preferred when both formats are there."""
    from .logs import log

    root = cfg.data
    man = read_manifest(root)
    _check_prepared(root, man, cfg)
    fmt = "raw" if "raw" in man["formats"] else "jpeg"
    gpu_bytes = fmt == "jpeg" and cfg.gpu_decode
    if cfg.gpu_decode and fmt == "raw":
        log.info("--gpu-decode: %s holds raw shards, there is nothing to decode", root)

    def dataset(split):
        if fmt == "raw":
            return PreparedRaw(root, man["splits"][split], cfg.image_size)
        return PreparedJpeg(root, man["splits"][split], cfg.image_size, raw_bytes=gpu_bytes)

    train_ds = dataset("train")
    val_ds = dataset("val") if "val" in man["splits"] else None
    # statistics need decoded images, also when training decodes on the GPU
    stats_ds = PreparedJpeg(root, man["splits"]["train"], cfg.image_size) if gpu_bytes else train_ds
    unreadable = sum(len(s["unreadable"]) for s in man["splits"].values())
    log.info(
        "prepared data %s (%s shards): %d classes, %d training images, %d validation images (%d files were "
        "unreadable when prepared); %d process(es), batch %d per process",
        root,
        fmt,
        len(man["classes"]),
        len(train_ds),
        len(val_ds) if val_ds is not None else 0,
        unreadable,
        info.world_size,
        per_rank_bs,
    )
    if val_ds is None or not len(val_ds):
        log.warning("no validation images in %s: no evaluation, and the plateau schedule will keep lr constant", root)
    stats_file, stats = _prepared_stats(cfg, info, root, stats_ds, os.path.join(root, STATS_FILE))
    if cfg.stats_only:
        log.info("--stats-only: statistics are in %s", stats_file)
        return {"stats_only": True, "classes": man["classes"], "stats_file": stats_file}
    from .data import collate_bytes

    return {
        "classes": list(man["classes"]),
        "stats": stats,
        "train_ds": train_ds,
        "val_ds": val_ds,
        "collate": collate_bytes if gpu_bytes else collate_prepared,
    }
