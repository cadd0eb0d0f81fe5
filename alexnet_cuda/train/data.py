"""ImageFolder data for AlexNet training: decoding, the paper's 256x256 preprocessing, mean and PCA.

What the paper does (section 2 and 4.1) and what this module does for it:

* rescale the shorter side to 256 and take the central 256x256 patch: :func:`preprocess`.
  The resize is ``torchvision.transforms.v2.functional.resize`` (bilinear, antialiased) on
  uint8 tensors, so the CPU (DataLoader worker) path and the GPU-decoding path run the same
  resize code.
* subtract the mean (per pixel, as the paper does, or per channel) computed over the
  training set: :func:`compute_stats` computes it once and caches it to a file.
* PCA over the RGB values of all training pixels for the colour noise: computed in the
  same pass (:class:`DatasetStats`).

Decoding runs in DataLoader worker processes (off the training loop's critical path), or on
the GPU with nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``): then the workers only
read the files' bytes (:class:`ImageFolderBytes`) and :func:`decode_batch` decodes a whole
batch at once on the device.

Unreadable or corrupt images never stop training: the dataset returns :class:`Unreadable`
(the path) for them, logs a warning once per file and the collate function drops them;
the loop counts the distinct files. The batch then has fewer images, which is the price of
not stopping.

Class folders follow torchvision's ImageFolder: a training class folder without images is
an error (it would be a class no image has), and a class folder found only in val/ is
reported (its images cannot be scored).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .._cache import cache_dir

log = logging.getLogger("alexnet_cuda.train")

# torchvision 0.29 deprecates torchvision.io's codecs in favour of TorchCodec but they work
# (and decode_jpeg(device="cuda") is the nvJPEG path this module wants); keep logs readable.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")


def _tv():
    """torchvision is needed to decode images; imported lazily so the rest works without it."""
    try:
        import torchvision.io as tvio
        import torchvision.transforms.v2.functional as tvf
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ImportError(
            "alexnet_cuda.train needs torchvision to decode images: pip install torchvision"
        ) from exc
    return tvio, tvf


# --------------------------------------------------------------------------------------
# Scanning an ImageFolder tree
# --------------------------------------------------------------------------------------
def find_classes(root: str) -> List[str]:
    """Sorted class folder names under ``root`` (like torchvision's ImageFolder)."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no class folders found under {root!r} (expected root/<class>/<image>)")
    return classes


def check_class_folders(train_root: str, val_root: str, classes: Sequence[str],
                        train_samples: Sequence[Tuple[str, int]]) -> None:
    """torchvision's rules: raise on a training class folder without images; warn about class
    folders that only val/ has (ignored)."""
    have = {label for _, label in train_samples}
    empty = [c for i, c in enumerate(classes) if i not in have]
    if empty:
        raise FileNotFoundError(
            f"class folders without images under {train_root}: {', '.join(empty[:10])}"
            f"{' ...' if len(empty) > 10 else ''} (image extensions: {', '.join(IMG_EXTENSIONS)}); add images "
            f"or remove the folders (torchvision's ImageFolder refuses them too)")
    if os.path.isdir(val_root):
        extra = sorted(set(e.name for e in os.scandir(val_root) if e.is_dir() and not e.name.startswith("."))
                       - set(classes))
        if extra:
            log.warning("class folders only in %s, not in training: %s: their images are ignored", val_root,
                        ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))


def make_samples(root: str, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """(path, class index) for every image file under root/<class>/, sorted for determinism.

    ``classes`` comes from the training folder so that val/ maps names to the same indices;
    a class folder missing under val/ is simply empty there.
    """
    samples = []
    for idx, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for dirpath, _, files in sorted(os.walk(folder, followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, f), idx))
    return samples


# --------------------------------------------------------------------------------------
# Decoding and the paper's preprocessing
# --------------------------------------------------------------------------------------
def preprocess(img: torch.Tensor, size: int = 256) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): shorter side to ``size``, then centre crop.

    Works on any device (the GPU-decoding path calls it on CUDA tensors).
    """
    _, tvf = _tv()
    h, w = img.shape[-2:]
    if min(h, w) != size:
        # v2's resize with a single int rescales the shorter side, keeping the aspect ratio.
        img = tvf.resize(img, [size], antialias=True)
    return tvf.center_crop(img, [size, size])


def _decode_pil(path: str) -> torch.Tensor:
    """Fallback decoder (Pillow) for a torchvision without torchvision.io codecs."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def decode_file(path: str, size: int = 256) -> torch.Tensor:
    """Read, decode (any of JPEG/PNG/WebP, grey or CMYK -> RGB) and preprocess one image."""
    tvio, _ = _tv()
    if hasattr(tvio, "decode_image"):
        img = tvio.decode_image(tvio.read_file(path), mode=tvio.ImageReadMode.RGB)
    else:  # pragma: no cover - future torchvision
        img = _decode_pil(path)
    return preprocess(img, size)


@dataclass(frozen=True)
class Unreadable:
    """A dataset item that could not be read or decoded (the collate functions drop it)."""

    path: str


class ImageFolderUint8(torch.utils.data.Dataset):
    """Decoded, preprocessed images: item = (uint8 (3, size, size), label), or Unreadable.

    Decoding happens here, so with ``num_workers > 0`` it runs in the DataLoader's worker
    processes, in parallel with the training step.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], size: int = 256):
        self.samples = list(samples)
        self.size = size
        self._warned = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            return decode_file(path, self.size), label
        except Exception as exc:  # corrupt, truncated, unreadable: skip, never stop
            if path not in self._warned:  # once per file per worker
                self._warned.add(path)
                log.warning("skipping unreadable image %s: %s", path, str(exc).splitlines()[0][:200])
            return Unreadable(path)


class ImageFolderBytes(torch.utils.data.Dataset):
    """Undecoded files for GPU decoding: item = (uint8 1-D tensor of the file, label, is_jpeg, path),
    or Unreadable."""

    def __init__(self, samples: Sequence[Tuple[str, int]]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            tvio, _ = _tv()
            data = tvio.read_file(path)
        except Exception as exc:
            log.warning("skipping unreadable file %s: %s", path, exc)
            return Unreadable(path)
        return data, label, path.lower().endswith(_JPEG_EXTENSIONS), path


@dataclass
class Batch:
    """A collated batch: images uint8 (N, 3, S, S) (or raw bytes before decoding), labels, and
    how many items of the requested batch were dropped because they could not be read, and
    their paths (where known). ``paths``: the files of undecoded bytes (for decode_batch)."""

    images: object
    labels: torch.Tensor
    skipped: int = 0
    skipped_paths: tuple = ()
    paths: tuple = ()

    def pin_memory(self):  # DataLoader(pin_memory=True) calls this on custom batch types
        if isinstance(self.images, torch.Tensor):
            self.images = self.images.pin_memory()
        self.labels = self.labels.pin_memory()
        return self


def _split(items):
    """(readable items, paths of the unreadable ones, how many were dropped)."""
    good = [it for it in items if it is not None and not isinstance(it, Unreadable)]
    bad = tuple(it.path for it in items if isinstance(it, Unreadable))
    return good, bad, len(items) - len(good)


def collate_uint8(items) -> Batch:
    good, bad, skipped = _split(items)
    if not good:
        return Batch(torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped, bad)
    images = torch.stack([g[0] for g in good])
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    return Batch(images, labels, skipped, bad)


def collate_bytes(items) -> Batch:
    good, bad, skipped = _split(items)
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    paths = tuple(g[3] if len(g) > 3 else "" for g in good)
    return Batch([(g[0], g[2]) for g in good], labels, skipped, bad, paths)


def decode_batch(batch: Batch, device: torch.device, size: int = 256) -> Batch:
    """Decode a :func:`collate_bytes` batch on ``device`` (nvJPEG on CUDA) and preprocess it.

    JPEGs are decoded together with one batched ``decode_jpeg`` call; if that call fails (one
    corrupt file fails the whole call) each JPEG is retried alone so only the bad ones are
    dropped. Non-JPEG files (PNG, WebP) are decoded on the CPU.
    """
    if isinstance(batch.images, torch.Tensor):
        return batch
    tvio, _ = _tv()
    device = torch.device(device)
    items = batch.images
    decoded: List[Optional[torch.Tensor]] = [None] * len(items)
    jpeg_idx = [i for i, (_, is_jpeg) in enumerate(items) if is_jpeg]
    dev = "cuda" if device.type == "cuda" else "cpu"
    if jpeg_idx:
        try:
            outs = tvio.decode_jpeg([items[i][0] for i in jpeg_idx], mode=tvio.ImageReadMode.RGB, device=dev)
            for i, img in zip(jpeg_idx, outs):
                decoded[i] = img
        except Exception:
            for i in jpeg_idx:
                try:
                    decoded[i] = tvio.decode_jpeg(items[i][0], mode=tvio.ImageReadMode.RGB, device=dev)
                except Exception as exc:
                    log.warning("skipping undecodable JPEG in batch (item %d): %s", i, str(exc)[:200])
    for i, (data, is_jpeg) in enumerate(items):
        if not is_jpeg:
            try:
                decoded[i] = tvio.decode_image(data, mode=tvio.ImageReadMode.RGB)
            except Exception as exc:
                log.warning("skipping undecodable image in batch (item %d): %s", i, str(exc)[:200])
    keep = [i for i, d in enumerate(decoded) if d is not None]
    skipped = batch.skipped + len(items) - len(keep)
    bad = batch.skipped_paths + tuple(batch.paths[i] for i, d in enumerate(decoded)
                                      if d is None and i < len(batch.paths) and batch.paths[i])
    if not keep:
        return Batch(torch.empty(0, 3, size, size, dtype=torch.uint8, device=device),
                     batch.labels[:0], skipped, bad)
    images = torch.stack([preprocess(decoded[i].to(device), size) for i in keep])
    return Batch(images, batch.labels[keep], skipped, bad)


# --------------------------------------------------------------------------------------
# Training-set statistics: mean image / mean colour and the RGB PCA (cached to a file)
# --------------------------------------------------------------------------------------
@dataclass
class DatasetStats:
    """What the paper computes over the training set.

    mean_image: float32 (3, S, S), per-pixel mean in 0..255 units.
    eigvals, eigvecs: PCA of the 3x3 covariance of RGB values over all training pixels,
        computed on values scaled to [0, 1] (see augment.pca_noise for why), eigvecs[:, i]
        is the i-th principal direction, eigvals descending.
    count: number of images that went in.
    """

    mean_image: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    count: int

    def mean(self, mode: str = "pixel") -> torch.Tensor:
        """The mean to subtract: (3, S, S) for 'pixel' (the paper), (3, 1, 1) for 'channel'."""
        if mode == "pixel":
            return self.mean_image
        if mode == "channel":
            return self.mean_image.mean(dim=(1, 2), keepdim=True)
        if mode == "none":
            return torch.zeros(3, 1, 1)
        raise ValueError(f"unknown mean mode {mode!r} (pixel, channel, none)")

    def state_dict(self):
        return {"mean_image": self.mean_image, "eigvals": self.eigvals, "eigvecs": self.eigvecs,
                "count": self.count}

    @classmethod
    def from_state_dict(cls, d):
        return cls(d["mean_image"], d["eigvals"], d["eigvecs"], int(d["count"]))


def default_stats_path(root: str, size: int, n_files: int, max_images: int) -> str:
    """A cache file keyed by the training folder, image size and file count.

    Kept under ~/.cache (or $ALEXNET_CUDA_CACHE) rather than in the data folder, which is
    often read-only; computing it over ImageNet takes a full decoding pass.
    """
    key = f"{os.path.realpath(root)}|{size}|{n_files}|{max_images}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"stats-{digest}.pt")


@torch.no_grad()
def compute_stats(loader: Callable, progress: Optional[Callable] = None) -> DatasetStats:
    """Accumulate the mean image and the RGB covariance over every batch of ``loader``.

    ``loader`` yields :class:`Batch` objects of uint8 images. Sums are in float64 so a
    million images do not lose precision.
    """
    sum_img = None
    sum_rgb = torch.zeros(3, dtype=torch.float64)
    sum_outer = torch.zeros(3, 3, dtype=torch.float64)
    n_img = 0
    n_pix = 0
    for batch in loader:
        x = batch.images
        if x.numel() == 0:
            continue
        x = x.to(torch.float64)
        s = x.sum(0)
        sum_img = s if sum_img is None else sum_img + s
        rgb = x.permute(1, 0, 2, 3).reshape(3, -1) / 255.0  # PCA in [0,1] units
        sum_rgb += rgb.sum(1)
        sum_outer += rgb @ rgb.T
        n_img += x.shape[0]
        n_pix += rgb.shape[1]
        if progress is not None:
            progress(x.shape[0])
    if n_img == 0:
        raise RuntimeError("no readable training images to compute the mean and PCA from")
    mean_image = (sum_img / n_img).to(torch.float32)
    mu = sum_rgb / n_pix
    cov = sum_outer / n_pix - torch.outer(mu, mu)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(eigvals, descending=True)
    eigvals = eigvals[order].clamp_min(0).to(torch.float32)
    eigvecs = eigvecs[:, order].to(torch.float32)
    return DatasetStats(mean_image, eigvals, eigvecs, n_img)


def atomic_torch_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace: a reader never
    sees a half-written file, and a crash leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_or_compute_stats(path: str, make_loader: Callable, is_main: bool = True,
                          progress_factory=None, poll_s: float = 2.0) -> DatasetStats:
    """Load the cached statistics, or compute them (``is_main``) and cache them.

    Under torchrun, ``is_main`` is local rank 0 of each node and the other processes poll for
    the file rather than wait in a collective: over ImageNet the pass takes far longer than a
    process group's timeout. Each node computes its own copy unless the file already exists
    (a shared folder, or a file made beforehand with ``--stats-only`` and copied).
    """
    if not os.path.exists(path):
        if is_main:
            log.info("computing the training-set mean and RGB PCA (cached to %s)", path)
            prog = progress_factory() if progress_factory else None
            stats = compute_stats(make_loader(), progress=prog.update if prog else None)
            if prog:
                prog.close()
            atomic_torch_save(stats.state_dict(), path)
        else:
            import time

            while not os.path.exists(path):  # written atomically by the node's local rank 0
                time.sleep(poll_s)
    return DatasetStats.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


# --------------------------------------------------------------------------------------
# Synthetic in-memory images (no disk, no decoding): for measuring the rest of the pipeline
# --------------------------------------------------------------------------------------
class SyntheticImages(torch.utils.data.Dataset):
    """``n`` random uint8 (3, size, size) images and labels, generated once and held in memory.

    Items are (uint8 image, label) like :class:`ImageFolderUint8`'s, so the same DataLoader,
    collate function, augmentation and step run on them; only reading and decoding files is
    left out. ``n * 3 * size**2`` bytes (197 KB per 256x256 image). Not for learning
    anything: the pixels are uniform noise and the labels random.
    """

    def __init__(self, n: int, size: int = 256, num_classes: int = 1000, seed: int = 0):
        if n < 1:
            raise ValueError(f"need at least one synthetic image, got {n}")
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g).tolist()
        self.classes = [f"synthetic{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def synthetic_stats(dataset: SyntheticImages, max_images: int = 0) -> DatasetStats:
    """Mean image and RGB PCA of (the first ``max_images`` of) a synthetic set, not cached."""
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    images = dataset.images[:n]
    return compute_stats(Batch(images[i:i + 64], torch.empty(0)) for i in range(0, n, 64))
