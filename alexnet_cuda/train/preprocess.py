"""``python -m alexnet_cuda.prepare``: the paper's 256x256 preprocessing done once, into shards.

The paper (section 2) rescaled every image so its shorter side is 256, took the central
256x256 patch, and trained on those pixels. The ImageFolder path of the trainer does that
again every epoch, decoding full-size JPEGs (about 114 images/s per core): far below what one
GPU's step consumes. This step does it once, in parallel over processes, and writes the
shards that :mod:`alexnet_cuda.train.shards` reads (formats: see there), together with the
training set's mean image and RGB PCA, accumulated in the same pass.

Each shard is one job: decode its images (unreadable ones are counted and listed in the
shard's record and the manifest, never fatal; an image whose decoder crashes its process
too, with worker processes), write its files under temporary names, rename
them, then write the shard's record (``<shard>.json``: sizes, sha256, sources) last. A rerun
keeps every shard whose record exists and whose files match it (size and sha256) and redoes
the rest, so a killed run resumes where it stopped. ``manifest.json`` is written when every
shard is done; the trainer recognises a prepared folder by it.

Statistics are integer sums (exact whatever the order of the shards), from which the mean
image and the covariance are formed as :func:`data.compute_stats` forms them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import data as D
from .logs import make_progress
from .shards import (
    FORMAT_VERSION,
    FORMATS,
    MANIFEST,
    STATS_FILE,
    check_files,
    read_manifest,
    sha256_file,
    shard_files,
    verify,
)

log = logging.getLogger("alexnet_cuda.prepare")

JPEG_QUALITY = 90  # FFCV's ImageNet default: 22 GB for the training set at 256 px


# --------------------------------------------------------------------------------------
# one shard
# --------------------------------------------------------------------------------------
def decode_image(path: str, size: int) -> torch.Tensor:
    """The trainer's own decoding and preprocessing (data.decode_file): the same pixels, and the
    same rules for bad files (it raises data.UnreadableImage for anything it cannot decode)."""
    return D.decode_file(path, size)


def _stat_sums(images: np.ndarray) -> Dict[str, np.ndarray]:
    """Exact integer sums of a shard's uint8 (N, 3, S, S) images: per-pixel sum, RGB sum and
    RGB outer-product sum (float64 products of integers below 2**53 are exact)."""
    n = images.shape[0]
    if n == 0:
        s = images.shape[-1]
        return {
            "n": np.int64(0),
            "pixels": np.int64(0),
            "sum_img": np.zeros((3, s, s), np.int64),
            "sum_rgb": np.zeros(3, np.int64),
            "sum_outer": np.zeros((3, 3), np.int64),
        }
    sum_outer = np.zeros((3, 3), np.int64)
    for img in images:  # per image: each sum below 2**53, so exact in float64
        rgb = img.reshape(3, -1).astype(np.float64)
        sum_outer += np.rint(rgb @ rgb.T).astype(np.int64)
    return {
        "n": np.int64(n),
        "pixels": np.int64(n * images.shape[2] * images.shape[3]),
        "sum_img": images.sum(0, dtype=np.int64),
        "sum_rgb": images.sum((0, 2, 3), dtype=np.int64),
        "sum_outer": sum_outer,
    }


def stats_from_sums(sums: Sequence[Dict[str, np.ndarray]]) -> D.DatasetStats:
    """:class:`data.DatasetStats` from the shards' integer sums, formed as compute_stats does."""
    n = sum(int(s["n"]) for s in sums)
    if n == 0:
        raise RuntimeError("no readable training images to compute the mean and PCA from")
    pixels = sum(int(s["pixels"]) for s in sums)
    sum_img = sum(torch.from_numpy(s["sum_img"]) for s in sums).to(torch.float64)
    sum_rgb = sum(torch.from_numpy(s["sum_rgb"]) for s in sums).to(torch.float64) / 255.0
    sum_outer = sum(torch.from_numpy(s["sum_outer"]) for s in sums).to(torch.float64) / 255.0**2
    mean_image = (sum_img / n).to(torch.float32)
    mu = sum_rgb / pixels
    cov = sum_outer / pixels - torch.outer(mu, mu)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    order = torch.argsort(eigvals, descending=True)
    return D.DatasetStats(
        mean_image, eigvals[order].clamp_min(0).to(torch.float32), eigvecs[:, order].to(torch.float32), n
    )


def _write_tar(path: str, keys: Sequence[str], jpegs: Sequence[bytes], labels: Sequence[int]) -> np.ndarray:
    """WebDataset-style tar (KEY.jpg, KEY.cls); returns each JPEG's (offset, size) in it."""

    def write(f):
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, jpg, label in zip(keys, jpegs, labels):
                for name, payload in ((f"{key}.jpg", jpg), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(payload), 0, 0o644  # reproducible bytes
                    tar.addfile(info, io.BytesIO(payload))

    D.write_replace(path, write)
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    return np.array(
        [[members[f"{k}.jpg"].offset_data, members[f"{k}.jpg"].size] for k in keys], dtype=np.int64
    ).reshape(-1, 2)


def _encode_jpeg(img: torch.Tensor, quality: int) -> bytes:
    tvio, _ = D._tv()
    return tvio.encode_jpeg(img, quality=quality).numpy().tobytes()


def make_shard(job: Dict) -> Dict:
    """Decode, preprocess and write one shard; returns its record (also written as <name>.json).

    ``job``: out, name, split, root (the split's source folder), items [(relative path,
    label, key)], size, formats, quality, stats (whether to write the statistics sums).
    """
    out, name, size = job["out"], job["name"], job["size"]
    images, labels, keys, sources, unreadable = [], [], [], [], []
    crashed = set(job.get("crashed", ()))
    for rel, label, key in job["items"]:
        if rel in crashed:
            unreadable.append({"file": D.display_path(rel), "error": "the decoder crashed on it (its process died)"})
            continue
        try:
            img = decode_image(os.path.join(job["root"], rel), size)
            if img.dtype != torch.uint8 or tuple(img.shape) != (3, size, size):
                raise ValueError(f"decoded to {tuple(img.shape)} {img.dtype}, not (3, {size}, {size}) uint8")
        except Exception as exc:  # corrupt, truncated, unreadable (data.UnreadableImage): listed, never fatal
            reason = getattr(exc, "reason", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            unreadable.append({"file": D.display_path(rel), "error": reason[:200]})
            continue
        images.append(img.numpy())
        labels.append(label)
        keys.append(key)
        sources.append(rel)
    arr = np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)
    lab = np.asarray(labels, dtype=np.int64)
    path = lambda suffix: os.path.join(out, name + suffix)  # noqa: E731
    D.write_replace(path(".labels.npy"), lambda f: np.save(f, lab))
    if "raw" in job["formats"]:
        D.write_replace(path(".npy"), lambda f: np.save(f, arr))
    if "jpeg" in job["formats"]:
        offsets = _write_tar(
            path(".tar"), keys, [_encode_jpeg(torch.from_numpy(a), job["quality"]) for a in arr], labels
        )
        D.write_replace(path(".idx.npy"), lambda f: np.save(f, offsets))
    files = shard_files(name, job["formats"])
    if job["stats"]:
        sums = _stat_sums(arr)
        D.write_replace(path(".stats.npz"), lambda f: np.savez(f, **sums))
        files.append(f"{name}.stats.npz")
    record = {
        "name": name,
        "split": job["split"],
        "params": job["params"],
        "count": len(lab),
        "sources": [rel for rel, _, _ in job["items"]],
        "kept": sources,
        "unreadable": unreadable,
        "files": {
            f: {"bytes": os.path.getsize(os.path.join(out, f)), "sha256": sha256_file(os.path.join(out, f))}
            for f in files
        },
    }
    D.write_replace(path(".json"), lambda f: f.write(json.dumps(record, indent=1).encode()))
    return record


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the process that started it dies. Without it, a
    prepare killed with kill -9 leaves its workers waiting for work forever."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the workers exit when they next read the queue
        pass


def _init_worker() -> None:
    _die_with_parent()
    torch.set_num_threads(1)  # one process per core: torch's intra-op threads would oversubscribe


# --------------------------------------------------------------------------------------
# planning, resuming, running
# --------------------------------------------------------------------------------------
def plan(src: str, split_dirs: Dict[str, str], classes: List[str], shard_size: int) -> Dict[str, List[Dict]]:
    """{split: [shard job skeletons]}: each split's sorted files cut into shards of shard_size."""
    jobs = {}
    for split, sub in split_dirs.items():
        root = os.path.join(src, sub)
        samples = D.make_samples(root, classes) if os.path.isdir(root) else []
        items = [(os.path.relpath(p, root), label, f"{i:09d}") for i, (p, label) in enumerate(samples)]
        jobs[split] = [
            {"split": split, "root": root, "name": f"{split}-{k // shard_size:05d}", "items": items[k : k + shard_size]}
            for k in range(0, len(items), shard_size)
        ]
    return jobs


def finished_record(out: str, job: Dict) -> Optional[Dict]:
    """The shard's record if the shard is complete and intact for this job, else None (redo it)."""
    path = os.path.join(out, job["name"] + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if rec.get("params") != job["params"] or rec.get("sources") != [rel for rel, _, _ in job["items"]]:
        log.info("%s: made with other parameters or files: made again", job["name"])
        return None
    problems = check_files(out, rec.get("files", {}), checksums=True)
    if problems:
        log.warning("%s is damaged (%s): made again", job["name"], "; ".join(problems))
        return None
    return rec


def remove_temps(out: str) -> None:
    """Temporary files of writes a killed run left behind."""
    for e in os.scandir(out):
        if e.name.startswith(".") and ".tmp." in e.name:
            os.remove(e.path)


def _in_own_process(fn, *args):
    """fn(*args) in a process of its own: if it dies, the caller knows which call killed it
    (BrokenProcessPool)."""
    with ProcessPoolExecutor(max_workers=1, initializer=_init_worker) as pool:
        return pool.submit(fn, *args).result()


def _decode_probe(path: str, size: int) -> None:
    try:
        decode_image(path, size)
    except Exception:  # an ordinary unreadable image: make_shard lists it
        pass


def _run_isolated(job: Dict) -> Dict:
    """A shard in a process of its own; if a decoder crash kills that process, each of the
    shard's images is decoded in a process of its own to find the ones that crash, and the
    shard is made without them (listed as unreadable)."""
    try:
        return _in_own_process(make_shard, job)
    except BrokenProcessPool:
        crashed = []
        for rel, _, _ in job["items"]:
            try:
                _in_own_process(_decode_probe, os.path.join(job["root"], rel), job["size"])
            except BrokenProcessPool:
                crashed.append(rel)
        log.warning("%s: the decoder crashed on %s", job["name"], ", ".join(D.display_path(c) for c in crashed))
        return _in_own_process(make_shard, {**job, "crashed": crashed})


def run_jobs(jobs: List[Dict], workers: int, progress) -> Tuple[List[Dict], List[str]]:
    """Run shard jobs over ``workers`` processes (in this process if 0). Returns (records, names
    of shards that failed). A worker killed by a crash in native code breaks the pool: the
    shards not done yet then run one process each, and the images that crash are found and
    listed as unreadable (:func:`_run_isolated`). With ``workers`` 0 such a crash ends the run
    (a rerun resumes)."""
    records, failed = [], []
    pending = list(jobs)
    if workers == 0:
        for job in pending:
            records.append(make_shard(job))
            progress(len(job["items"]))
        return records, failed
    try:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            futures = {pool.submit(make_shard, job): job for job in pending}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    records.append(fut.result())
                except BrokenProcessPool:
                    raise
                except Exception as exc:  # a shard's write failed (disk full, ...): report it
                    log.error("%s failed: %s", job["name"], exc)
                    failed.append(job["name"])
                pending.remove(job)
                progress(len(job["items"]))
    except BrokenProcessPool:
        log.warning(
            "a worker process died (a crash in native code); the %d shards left run one process each", len(pending)
        )
        for job in pending:
            try:
                records.append(_run_isolated(job))
            except Exception as exc:  # noqa: BLE001 - BrokenProcessPool included
                log.error("%s failed: %s", job["name"], exc or type(exc).__name__)
                failed.append(job["name"])
            progress(len(job["items"]))
    return records, failed


def _split_summary(records: List[Dict]) -> Dict:
    records = sorted(records, key=lambda r: r["name"])
    return {
        "count": sum(r["count"] for r in records),
        "unreadable": [u for r in records for u in r["unreadable"]],
        "shards": [{"name": r["name"], "count": r["count"], "files": r["files"]} for r in records],
    }


def write_manifest(out: str, src: str, classes: List[str], params: Dict, records: Dict[str, List[Dict]]) -> Dict:
    """Merge the training shards' statistics into stats.pt, then write manifest.json (last)."""
    train = sorted(records["train"], key=lambda r: r["name"])
    sums = []
    for r in train:
        with np.load(os.path.join(out, f"{r['name']}.stats.npz")) as z:
            sums.append({k: z[k] for k in z.files})
    stats = stats_from_sums(sums)
    D.atomic_torch_save(stats.state_dict(), os.path.join(out, STATS_FILE))
    splits = {split: _split_summary(recs) for split, recs in records.items()}
    counts = np.zeros(len(classes), np.int64)
    for r in train:
        counts += np.bincount(np.load(os.path.join(out, f"{r['name']}.labels.npy")), minlength=len(classes))
    man = {
        "format_version": FORMAT_VERSION,
        "tool": "python -m alexnet_cuda.prepare",
        "source": os.path.abspath(src),
        "classes": classes,
        "train_images_per_class": counts.tolist(),
        **params,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stats": {
            "file": {
                "bytes": os.path.getsize(os.path.join(out, STATS_FILE)),
                "sha256": sha256_file(os.path.join(out, STATS_FILE)),
            },
            "count": stats.count,
            "eigvals": stats.eigvals.tolist(),
        },
        "splits": splits,
    }
    D.write_replace(os.path.join(out, MANIFEST), lambda f: f.write(json.dumps(man, indent=1).encode()))
    return man


def prepare(
    src: str,
    out: str,
    *,
    size: int = 256,
    formats: Sequence[str] = ("raw",),
    quality: int = JPEG_QUALITY,
    shard_size: int = 1000,
    workers: int = 0,
    train_dir: str = "train",
    val_dir: str = "val",
    progress: str = "auto",
) -> Dict:
    """Prepare ``src`` (train/ and val/ ImageFolder trees) into ``out``; returns the manifest.
    Resumes a killed run (see the module docstring). Raises ValueError on bad arguments."""
    formats = sorted(set(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"format: {', '.join(bad) or 'none'} given; choose from {', '.join(FORMATS)}")
    if size < 1 or shard_size < 1 or workers < 0 or not 1 <= quality <= 100:
        raise ValueError("size and shard_size must be >= 1, workers >= 0, quality in 1..100")
    classes = D.find_classes(os.path.join(src, train_dir))
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, MANIFEST)):
        os.remove(os.path.join(out, MANIFEST))  # rewritten when every shard is done
    remove_temps(out)
    preprocessing = {
        "size": size,
        "resize": "shorter side to size, bilinear antialiased "
        "(torchvision.transforms.v2.functional.resize, as alexnet_cuda.train.data.preprocess)",
        "crop": "centre size x size",
        "layout": "uint8 (N, 3, size, size) RGB",
        "jpeg_quality": quality if "jpeg" in formats else None,
    }
    params = {"preprocessing": preprocessing, "formats": formats, "shard_size": shard_size, "classes": classes}
    plans = plan(src, {"train": train_dir, "val": val_dir}, classes, shard_size)
    if not plans["train"]:
        raise FileNotFoundError(f"no images under {os.path.join(src, train_dir)}")
    todo, records = [], {split: [] for split in plans}
    for split, jobs in plans.items():
        for job in jobs:
            job.update(out=out, size=size, formats=formats, quality=quality, stats=split == "train", params=params)
            rec = finished_record(out, job)
            (records[split].append(rec) if rec else todo.append(job))
    kept = sum(len(r) for r in records.values())
    if kept:
        log.info("resuming: %d shards already done and intact, %d to make", kept, len(todo))
    total = sum(len(j["items"]) for j in todo)
    bar = make_progress(total, "prepare", progress, True)
    try:
        done, failed = run_jobs(todo, workers, bar.update)
    finally:
        bar.close()
    for rec in done:
        records[rec["split"]].append(rec)
    if failed:
        raise RuntimeError(f"shards not made: {', '.join(failed)}; run the same command again to retry them")
    man = write_manifest(out, src, classes, {k: v for k, v in params.items() if k != "classes"}, records)
    empty = [c for c, n in zip(classes, man["train_images_per_class"]) if n == 0]
    if empty:
        log.warning(
            "training classes without a readable image: %s (the trainer refuses such a set)", ", ".join(empty[:10])
        )
    return man


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m alexnet_cuda.prepare",
        description=(
            "Resize an ImageFolder dataset once to the paper's 256x256 (shorter side to 256, centre crop), "
            "into shards the trainer reads (--data OUT), with its mean image and RGB PCA. Resumes when run "
            "again. --verify OUT checks a prepared folder's checksums."
        ),
    )
    p.add_argument("--data", help="dataset root holding train/ and val/, one folder per class")
    p.add_argument("--out", help="output folder (a fast local disk)")
    p.add_argument(
        "--format",
        default="raw",
        help="raw, jpeg or raw,jpeg (default raw: 197 KB per image, no "
        "decoding when training; jpeg: ~20 KB per image at quality 90, decoded when training)",
    )
    p.add_argument("--quality", type=int, default=JPEG_QUALITY, help="JPEG quality of the jpeg format (default 90)")
    p.add_argument("--size", type=int, default=256, help="image side (default 256, the paper's)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes decoding in parallel (default: every core; 0 = in this process)",
    )
    p.add_argument("--train-dir", default="train")
    p.add_argument("--val-dir", default="val")
    p.add_argument("--progress", default="auto", choices=["auto", "on", "off"])
    p.add_argument(
        "--verify",
        metavar="OUT",
        help="check OUT's files against its manifest (sizes and sha256) "
        "and exit: 0 intact, 1 damaged (each damaged file named)",
    )
    args = p.parse_args(argv)
    if args.verify is None and (not args.data or not args.out):
        p.error("--data and --out are required (or --verify OUT)")
    if args.data and not os.path.isdir(os.path.join(args.data, args.train_dir)):
        p.error(f"--data: no {args.train_dir}/ folder under {args.data!r}")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out!r} is a file, not a folder")
    for name in ("quality", "size", "shard_size", "workers"):
        v = getattr(args, name)
        lo, hi = {
            "quality": (1, 100),
            "size": (1, 4096),
            "shard_size": (1, 10**6),
            "workers": (0, 4 * (os.cpu_count() or 1)),
        }[name]
        if not lo <= v <= hi:
            p.error(f"--{name.replace('_', '-')} {v}: must be in {lo}..{hi}")
    args.format = [f.strip() for f in args.format.split(",") if f.strip()]
    if not args.format or any(f not in FORMATS for f in args.format):
        p.error(f"--format: choose from {', '.join(FORMATS)} (comma-separated)")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.verify is not None:
        problems = verify(args.verify, checksums=True)
        for line in problems:
            print(f"damaged: {line}", file=sys.stderr)
        print(f"{args.verify}: {'intact' if not problems else f'{len(problems)} damaged file(s)'}")
        return 1 if problems else 0
    t0 = time.perf_counter()
    try:
        man = prepare(
            args.data,
            args.out,
            size=args.size,
            formats=args.format,
            quality=args.quality,
            shard_size=args.shard_size,
            workers=args.workers,
            train_dir=args.train_dir,
            val_dir=args.val_dir,
            progress=args.progress,
        )
    except (OSError, ValueError) as exc:  # no images, no class folders, an unwritable --out: one message
        log.error("%s", exc)
        return 2
    except RuntimeError as exc:  # shards that could not be made (named): a rerun retries them
        log.error("%s", exc)
        return 1
    for split, s in man["splits"].items():
        log.info(
            "%s: %d images in %d shards, %d unreadable%s",
            split,
            s["count"],
            len(s["shards"]),
            len(s["unreadable"]),
            "".join(f"\n  unreadable: {u['file']}: {u['error']}" for u in s["unreadable"]),
        )
    log.info(
        "done in %.0f s: %s (train with: python -m alexnet_cuda.train --data %s)",
        time.perf_counter() - t0,
        os.path.join(args.out, MANIFEST),
        args.out,
    )
    return 0


__all__ = ["prepare", "main", "stats_from_sums", "read_manifest", "verify"]
