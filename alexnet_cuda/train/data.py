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

Decoding (:func:`decode_file`, one rule for every format: Pillow, 8-bit RGB out, :class:`UnreadableImage`
for anything that does not decode) runs in DataLoader worker processes (off the training loop's critical path), or on
the GPU with nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``): then the workers only
read the files' bytes (:class:`ImageFolderBytes`) and :func:`decode_batch` decodes a whole
batch at once on the device.

Unreadable or corrupt images never stop training: the dataset returns :class:`Unreadable`
(the path) for them, logs a warning once per file (per process) and the collate function drops them;
the loop counts the distinct files. The batch then has fewer images, which is the price of
not stopping.

Class folders follow torchvision's ImageFolder: a training class folder without images, or
none of whose images decodes, is an error (it would be a class no image has), and a class
folder found only in val/ is reported (its images cannot be scored). Link cycles are walked
once (:func:`make_samples`).
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
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")


def _tv():
    """torchvision is needed to decode images; imported lazily so the rest works without it."""
    try:
        import torchvision.io as tvio
        import torchvision.transforms.v2.functional as tvf
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ImportError("alexnet_cuda.train needs torchvision to decode images: pip install torchvision") from exc
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


def first_names(names: Sequence[str], most: int = 10) -> str:
    """The first `most` names, comma-separated, with " ..." when there are more."""
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def check_class_folders(
    train_root: str, val_root: str, classes: Sequence[str], train_samples: Sequence[Tuple[str, int]]
) -> None:
    """torchvision's rules: raise on a training class folder without images; warn about class
    folders that only val/ has (ignored)."""
    have = {label for _, label in train_samples}
    empty = [c for i, c in enumerate(classes) if i not in have]
    if empty:
        raise FileNotFoundError(
            f"class folders without images under {train_root}: {first_names(empty)} "
            f"(image extensions: {', '.join(IMG_EXTENSIONS)}); add images "
            f"or remove the folders (torchvision's ImageFolder refuses them too)"
        )
    if os.path.isdir(val_root):
        extra = sorted(
            set(e.name for e in os.scandir(val_root) if e.is_dir() and not e.name.startswith(".")) - set(classes)
        )
        if extra:
            log.warning(
                "class folders only in %s, not in training: %s: their images are ignored", val_root, first_names(extra)
            )


def make_samples(root: str, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """(path, class index) for every image file under root/<class>/, sorted for determinism.

    ``classes`` comes from the training folder so that val/ maps names to the same indices;
    a class folder missing under val/ is simply empty there.

    Symbolic links are followed, but a folder is walked once: a link back to a folder already
    walked, to ``root`` or to another class's folder (``ln -s .. train/0/loop`` would walk every
    other class again under class 0 and label it 0) is skipped, and a file reached twice (by
    two links) is counted once; each with one warning.
    """
    root_real = os.path.realpath(root)
    class_reals = {os.path.realpath(os.path.join(root, name)) for name in classes}
    walked = {root_real}
    seen_files = set()
    samples = []
    skipped_dirs, repeated_files = [], []
    for idx, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for dirpath, dirnames, files in os.walk(folder, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in walked or (real in class_reals and dirpath != folder):
                skipped_dirs.append((dirpath, real))
                dirnames[:] = []
                continue
            walked.add(real)
            dirnames.sort()
            for f in sorted(files):
                if not f.lower().endswith(IMG_EXTENSIONS):
                    continue
                path = os.path.join(dirpath, f)
                file_real = os.path.realpath(path)
                if file_real in seen_files:
                    repeated_files.append(path)
                    continue
                seen_files.add(file_real)
                samples.append((path, idx))
    _warn_links(root, skipped_dirs, repeated_files)
    return samples


def _warn_links(root: str, skipped_dirs, repeated_files) -> None:
    if skipped_dirs:
        shown = ", ".join(f"{display_path(d)} -> {display_path(r)}" for d, r in skipped_dirs[:5])
        log.warning(
            "%s: %d linked folder(s) lead to a folder already walked (a link cycle, or a link to "
            "another class), not walked again: %s%s",
            display_path(root),
            len(skipped_dirs),
            shown,
            " ..." if len(skipped_dirs) > 5 else "",
        )
    if repeated_files:
        shown = ", ".join(display_path(p) for p in repeated_files[:5])
        log.warning(
            "%s: %d image(s) reached a second time through a link, counted once: %s%s",
            display_path(root),
            len(repeated_files),
            shown,
            " ..." if len(repeated_files) > 5 else "",
        )


def check_readable_classes(
    train_root: str, classes: Sequence[str], samples: Sequence[Tuple[str, int]], decode: Callable = None
) -> None:
    """Refuse, like an empty class folder, a class none of whose images decodes: training would
    have a class without examples. Decodes each class's files in order up to the first that
    works (one per class in a healthy tree)."""
    decode = decode or read_rgb
    first_good = {}
    for path, label in samples:
        if label in first_good:
            continue
        try:
            decode(path)
            first_good[label] = path
        except UnreadableImage:
            pass  # reported when training reads it
    dead = [c for i, c in enumerate(classes) if i not in first_good]
    if dead:
        raise DataError(
            f"class folders whose images are all unreadable under {display_path(train_root)}: "
            f"{first_names(dead)} ({len(dead)} of {len(classes)} "
            f"classes); replace the files or remove the folders (a class without examples cannot be learnt)"
        )


def first_readable(samples: Sequence[Tuple[str, int]], decode: Callable = None) -> Optional[str]:
    """The first file of ``samples`` that decodes, or None (then there is nothing to evaluate)."""
    decode = decode or read_rgb
    for path, _ in samples:
        try:
            decode(path)
            return path
        except UnreadableImage:
            continue
    return None


class DataError(ValueError):
    """A data folder or statistics file that training cannot use; the message says why and names it."""


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


class UnreadableImage(Exception):
    """A file that is not an image this module can decode (corrupt, truncated, not an image,
    an unreadable file, an absurd shape). ``path`` is the file (or a name given with the bytes)."""

    def __init__(self, path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{display_path(path)}: {reason}")


def display_path(path) -> str:
    """``path`` as printable text: names that are not valid UTF-8 (bytes, or str with surrogate
    escapes from os.walk) show their undecodable bytes as \\xNN instead of failing to log."""
    raw = os.fsencode(path) if isinstance(path, (str, os.PathLike)) else bytes(path)
    return raw.decode("utf-8", "backslashreplace")


# Longer side at most this many times the shorter one: the shorter-side resize of a 1 x 100000
# strip would allocate gigabytes for the 256 x 256 centre kept of it.
MAX_ASPECT = 32


def _pil_to_rgb_uint8(im) -> torch.Tensor:
    """A decoded Pillow image of any mode -> uint8 (3, H, W) RGB.

    16-bit values keep their high byte (as torchvision's uint16 -> uint8 conversion does);
    palette images go through RGBA so their transparency is read, then, like any alpha
    channel, dropped; grey is repeated over the three channels; CMYK uses Pillow's conversion.
    """
    import numpy as np

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(im).astype(np.int64).clip(0, 65535) >> 8
        return torch.from_numpy(grey.astype(np.uint8)).unsqueeze(0).expand(3, -1, -1).contiguous()
    if im.mode == "F":
        grey = np.asarray(im).clip(0, 255).round()
        return torch.from_numpy(grey.astype(np.uint8)).unsqueeze(0).expand(3, -1, -1).contiguous()
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _decode_with_pillow(fp, where) -> torch.Tensor:
    """Pillow decodes ``fp`` (a path or a file object); ``where`` names it in the error."""
    import warnings as _warnings

    from PIL import Image

    try:
        with _warnings.catch_warnings():
            # Pillow warns about odd but decodable files (bad EXIF, large pixel counts): they decode.
            _warnings.simplefilter("ignore")
            with Image.open(fp) as im:
                w, h = im.size
                if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
                    raise UnreadableImage(
                        where, f"{w}x{h} pixels: the longer side is over {MAX_ASPECT} times the shorter one"
                    )
                im.load()
                return _pil_to_rgb_uint8(im)
    except UnreadableImage:
        raise
    except Exception as exc:  # OSError, SyntaxError, DecompressionBombError, MemoryError, ValueError...
        raise UnreadableImage(where, _reason(exc)) from exc


def _reason(exc: Exception) -> str:
    """One short line saying why a file did not decode (the path is printed beside it)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow can read"
    if isinstance(exc, OSError) and exc.strerror:  # no such file, a directory, permission denied
        return exc.strerror
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return text or type(exc).__name__


def read_rgb(path) -> torch.Tensor:
    """Read and decode one image file -> uint8 (3, H, W) RGB, any size.

    ``path``: str (also with the surrogate escapes os.walk gives names that are not UTF-8),
    bytes or os.PathLike; it is opened as the original bytes. Every format goes through
    Pillow, which reports damaged data as an exception (libpng, as called by
    ``torchvision.io.decode_image``, crashes the process with SIGSEGV on some damaged PNGs).
    JPEG pixels equal torchvision's (both use libjpeg-turbo). Raises :class:`UnreadableImage`
    for anything that does not decode, never anything else for bad content.
    """
    return _decode_with_pillow(os.fsencode(path), path)


def decode_bytes(data, name=None) -> torch.Tensor:
    """:func:`read_rgb` for a file's content already in memory (bytes or a uint8 tensor);
    ``name``: the path to report in the error."""
    import io

    if isinstance(data, torch.Tensor):
        data = data.contiguous().numpy().tobytes()
    return _decode_with_pillow(io.BytesIO(data), name if name is not None else "<bytes>")


def decode_file(path, size: int = 256) -> torch.Tensor:
    """Read, decode and preprocess one image -> uint8 (3, size, size): the trainer's (and the
    prepare step's) one decoding rule. Any format Pillow reads (JPEG, PNG, WebP, ...), 8 or 16
    bits, grey, palette, CMYK or with alpha, becomes 8-bit RGB; the file name may be any bytes.
    Raises :class:`UnreadableImage` for a file that does not decode."""
    return preprocess(read_rgb(path), size)


@dataclass(frozen=True)
class Unreadable:
    """A dataset item that could not be read or decoded (the collate functions drop it)."""

    path: str


# Files already reported unreadable in this process: the statistics pass, every epoch and the
# evaluation read the same files (with --workers 0 all in this process); one warning each.
_REPORTED: set = set()


def reset_reported() -> None:
    """Start a new run's reports (a second train() call in this process reports its files again)."""
    _REPORTED.clear()


def _report_unreadable(exc: Exception, path) -> None:
    if path not in _REPORTED:
        _REPORTED.add(path)
        reason = exc.reason if isinstance(exc, UnreadableImage) else str(exc).splitlines()[0][:200]
        log.warning("skipping unreadable image %s: %s", display_path(path), reason)


class ImageFolderUint8(torch.utils.data.Dataset):
    """Decoded, preprocessed images: item = (uint8 (3, size, size), label), or Unreadable.

    Decoding happens here, so with ``num_workers > 0`` it runs in the DataLoader's worker
    processes, in parallel with the training step.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], size: int = 256):
        self.samples = list(samples)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            return decode_file(path, self.size), label
        except Exception as exc:  # corrupt, truncated, unreadable: skip, never stop
            _report_unreadable(exc, path)
            return Unreadable(path)


def _is_jpeg(data: torch.Tensor) -> bool:
    """JPEG by its first bytes (SOI marker), whatever the file's extension says."""
    return data.numel() >= 3 and bytes(data[:3].tolist()) == b"\xff\xd8\xff"


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
            with open(os.fsencode(path), "rb") as f:
                data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        except Exception as exc:
            _report_unreadable(exc, path)
            return Unreadable(path)
        return data, label, _is_jpeg(data), path


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
                    name = batch.paths[i] if i < len(batch.paths) else f"item {i} of the batch"
                    _report_unreadable(exc, name)
    for i, (data, is_jpeg) in enumerate(items):
        if not is_jpeg:  # PNG, WebP...: Pillow on the CPU (the same rules as decode_file)
            try:
                decoded[i] = decode_bytes(data, batch.paths[i] if i < len(batch.paths) else None)
            except UnreadableImage as exc:
                _report_unreadable(exc, exc.path)
    keep = [i for i, d in enumerate(decoded) if d is not None]
    skipped = batch.skipped + len(items) - len(keep)
    bad = batch.skipped_paths + tuple(
        batch.paths[i] for i, d in enumerate(decoded) if d is None and i < len(batch.paths) and batch.paths[i]
    )
    if not keep:
        return Batch(torch.empty(0, 3, size, size, dtype=torch.uint8, device=device), batch.labels[:0], skipped, bad)
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
        return {"mean_image": self.mean_image, "eigvals": self.eigvals, "eigvecs": self.eigvecs, "count": self.count}

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
        raise DataError("no readable training images to compute the mean and PCA from")
    mean_image = (sum_img / n_img).to(torch.float32)
    mu = sum_rgb / n_pix
    cov = sum_outer / n_pix - torch.outer(mu, mu)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(eigvals, descending=True)
    eigvals = eigvals[order].clamp_min(0).to(torch.float32)
    eigvecs = eigvecs[:, order].to(torch.float32)
    return DatasetStats(mean_image, eigvals, eigvecs, n_img)


def write_replace(path: str, write) -> None:
    """write(file object) to a temporary file in the same folder, fsync, then os.replace: a
    reader never sees a half-written ``path``, and a crash leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj, path: str) -> None:
    """torch.save through :func:`write_replace`."""
    write_replace(path, lambda f: torch.save(obj, f))


def _stats_problem(d, size: Optional[int]) -> Optional[str]:
    """Why a loaded statistics object is not one :func:`load_or_compute_stats` wrote, or None."""
    if not isinstance(d, dict):
        return f"holds a {type(d).__name__}, not the statistics"
    shapes = {"mean_image": (3, size, size) if size else None, "eigvals": (3,), "eigvecs": (3, 3)}
    for key, shape in shapes.items():
        t = d.get(key)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.dim() != (len(shape) if shape else 3):
            return f"no float32 tensor {key!r} of the expected rank"
        if shape and tuple(t.shape) != shape:
            return f"{key} has shape {tuple(t.shape)}, expected {shape} (another --image-size?)"
        if not torch.isfinite(t).all():
            return f"{key} holds NaN or infinite values"
    if d["mean_image"].shape[0] != 3 or d["mean_image"].shape[1] != d["mean_image"].shape[2]:
        return f"mean_image has shape {tuple(d['mean_image'].shape)}, expected (3, S, S)"
    count = d.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return f"count {count!r} is not a positive image count"
    return None


def read_stats(path: str, size: Optional[int] = None) -> Tuple[Optional[DatasetStats], Optional[str]]:
    """(statistics, None) from ``path``, or (None, why not): missing, unreadable, truncated,
    garbage, someone else's file or for another image size are all just 'not usable'."""
    if not os.path.lexists(path):
        return None, "missing"
    if os.path.isdir(path):
        return None, "is a folder"
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, empty, garbage, a pickle with foreign objects
        return (
            None,
            f"not a statistics file torch.save wrote ({type(exc).__name__}: truncated, garbage or other objects)",
        )
    why = _stats_problem(d, size)
    return (None, why) if why else (DatasetStats.from_state_dict(d), None)


def load_or_compute_stats(
    path: str,
    make_loader: Callable,
    is_main: bool = True,
    progress_factory=None,
    poll_s: float = 2.0,
    size: Optional[int] = None,
) -> DatasetStats:
    """Load the cached statistics, or compute them (``is_main``) and cache them.

    A file that is not what this function wrote (truncated, garbage, another program's, for
    another ``size``) is a cache miss: one warning naming it, then computed again and replaced.
    A cache that cannot be written is a warning too: the statistics then serve this run only.

    Under torchrun, ``is_main`` is local rank 0 of each node and the other processes poll for
    the file rather than wait in a collective: over ImageNet the pass takes far longer than a
    process group's timeout. Each node computes its own copy unless the file already exists
    (a shared folder, or a file made beforehand with ``--stats-only`` and copied).
    """
    stats, why = read_stats(path, size)
    if stats is not None:
        return stats
    if not is_main:
        import time

        while stats is None:  # written atomically by the node's local rank 0
            time.sleep(poll_s)
            stats, _ = read_stats(path, size)
        return stats
    if why != "missing":
        log.warning(
            "statistics cache %s: %s; it is not what this program wrote, so it is computed again (and replaced)",
            display_path(path),
            why,
        )
    log.info("computing the training-set mean and RGB PCA (cached to %s)", display_path(path))
    prog = progress_factory() if progress_factory else None
    stats = compute_stats(make_loader(), progress=prog.update if prog else None)
    if prog:
        prog.close()
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "is a folder", path)
        atomic_torch_save(stats.state_dict(), path)
    except OSError as exc:
        log.warning(
            "cannot write the statistics cache %s (%s): the statistics serve this run only",
            display_path(path),
            exc.strerror or exc,
        )
    return stats


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
    return compute_stats(Batch(images[i : i + 64], torch.empty(0)) for i in range(0, n, 64))
