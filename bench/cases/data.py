"""Input pipeline throughput: images/s per core of each way the trainer reads ImageNet.

The kernels aim at a training step that consumes 13,100 images/s (9.77 ms at batch 128, the
last GPU run) to 36,600 images/s (the 3.5 ms goal) on one GPU. This group measures what one
CPU core delivers on each path and how many cores each needs for those two rates:

* ImageFolder (the baseline, no preparation): data.ImageFolderUint8 decodes the full-size
  file and resizes it to 256 (data.decode_file) in DataLoader workers, every epoch;
* JPEG-256 shards (prepare --format jpeg, quality 90): shards.PreparedJpeg decodes the
  256x256 JPEG (torchvision.io.decode_jpeg) in the workers;
* raw shards (prepare --format raw): shards.PreparedRaw gathers uint8 rows of a memory map;
* nvJPEG (CUDA only): the JPEG-256 shards' bytes decoded on the GPU, batched
  (data.decode_batch), the path of --gpu-decode;
* prepare: the one-off preparation itself (decode + resize + write both formats + stats).

The photos are real: scikit-learn's two sample photos (640x427) written at three sizes
(scale 1, 0.75, 0.5) and three JPEG qualities (75, 90, 95), repeated over two classes:
random noise compresses unlike photos. Each path is timed through the trainer's own loader
(setup.make_loader: DataLoader worker processes for ImageFolder and JPEG shards, gather
threads for raw shards) with 0 workers (everything in this process: exactly one core), 1
worker and N workers (N = the cores here); torch uses one thread. One-core rates come from
the 0-worker row. The files sit in the page cache: disk reads are not timed.

Finally the whole loop: the trainer's loader over the raw shards -> augmentation -> step,
against the bare step on one pre-augmented batch (cases/loop.py's method) and against the
same loop on batches already in memory (what the augmentation costs, which is no data
cost). On the CPU: the demo's SmallAlexNet (cases/loop.py's stand-in), batch 32, the step on
one torch thread and one gather thread beside it. On CUDA: AlexNet bf16 NHWC at --batch,
4 gather threads into pinned memory, the GPU check of the target.

Targets (one core): raw shards >= 10,000 images/s; JPEG-256 shards >= 700 images/s; the
whole loop with raw shards >= 90% of the bare step's images/s. The machine may be shared:
each row is the median of several windows, and the report gives their spread.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import sklearn.datasets  # noqa: F401  (the sample photos; without scikit-learn the group is skipped)
import torch
import torchvision  # noqa: F401  (decoding; likewise)

from common import Config, describe_error, summarize, sync

from alexnet_cuda.train import data as D
from alexnet_cuda.train import shards as S
from alexnet_cuda.train.config import TrainConfig
from alexnet_cuda.train.loop import _loader, augment_batch, make_augment, train_step
from alexnet_cuda.train.model_factory import build_model
from alexnet_cuda.train.optim import PaperSGD
from alexnet_cuda.train.preprocess import prepare

RATES = {"9.77 ms step": 13_100, "3.5 ms step": 36_600}  # images/s one GPU's step consumes at batch 128
TARGETS = {"raw": 10_000, "jpeg": 700}  # images/s on one core
SIZE = 256


def write_photos(root: str, copies: int) -> Dict[str, float]:
    """root/train/<class>/: the two sample photos at 3 scales x 3 qualities, ``copies`` times over
    two classes (and a small val/). Returns the mean file size and pixel count."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    sizes, pixels = [], []
    for split, reps in (("train", copies), ("val", 1)):
        for c in range(2):
            d = os.path.join(root, split, f"class{c}")
            os.makedirs(d)
            for k in range(reps):
                for p, photo in enumerate(photos):
                    for scale in (1.0, 0.75, 0.5):
                        im = Image.fromarray(photo)
                        if scale != 1.0:
                            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
                        for q in (75, 90, 95):
                            path = os.path.join(d, f"{k}_{p}_{scale}_{q}.jpg")
                            im.save(path, quality=q)
                            sizes.append(os.path.getsize(path))
                            pixels.append(im.width * im.height)
    return {"file_kb": float(np.mean(sizes)) / 1e3, "megapixels": float(np.mean(pixels)) / 1e6}


def _time_loader(
    dataset, collate, workers: int, batch: int, seconds: float, repeats: int, finish: Callable = None, pin: bool = False
) -> Dict[str, float]:
    """Images/s of the trainer's DataLoader over ``dataset`` (random order, endless): the median
    over ``repeats`` windows of about ``seconds`` each, after one warm-up window."""
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=10**9, generator=torch.Generator().manual_seed(0)
    )
    loader = _loader(dataset, batch, sampler, workers, collate, pin)
    it = iter(loader)
    rates = []
    try:
        for r in range(repeats + 1):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                b = next(it)
                if finish is not None:
                    b = finish(b)
                n += b.labels.numel()
            if r:  # the first window warms up (worker start, page cache, prefetch)
                rates.append(n / (time.perf_counter() - t0))
    finally:
        del it, loader
    rates.sort()
    med = rates[len(rates) // 2]
    return {"img_per_s": med, "min_img_per_s": rates[0], "max_img_per_s": rates[-1]}


def _row(path: str, workers: int, stats: Dict[str, float], extra: Dict) -> Dict:
    cores = max(workers, 1)
    per_core = stats["img_per_s"] / cores
    row = {
        "group": "data",
        "case": path,
        "dtype": "uint8",
        "layout": "nchw",
        "direction": "read",
        "workers": workers,
        **stats,
        "img_per_s_per_core": per_core,
        "spread_pct": 100 * (stats["max_img_per_s"] - stats["min_img_per_s"]) / stats["img_per_s"],
        **extra,
    }
    for label, rate in RATES.items():
        row[f"cores_for_{rate}"] = math.ceil(rate / per_core)
    return row


def _loop_setup(cfg: Config) -> Dict:
    """The loop row's geometry: on CUDA the paper's AlexNet as the trainer runs it fastest (bf16,
    channels last, 4 gather threads, pinned memory); on the CPU cases/loop.py's stand-in (the
    demo's SmallAlexNet, 24x24 crops) at batch 32, one torch thread, one gather thread."""
    if cfg.device == "cuda":
        return dict(
            geo=dict(arch="alexnet", crop=227, workers=4, input_scale=1.0, amp="bf16", channels_last=True),
            batch=cfg.batch,
            name=f"whole loop, raw shards, AlexNet b{cfg.batch} bf16 NHWC",
        )
    return dict(
        geo=dict(arch="small", width=16, crop=24, workers=1, input_scale=1 / 64),
        batch=32,
        name="whole CPU loop, raw shards, SmallAlexNet b32 crop 24",
    )


def _loop_row(cfg: Config, prepared: str, seconds: float) -> Dict:
    """The whole loop from the raw shards vs the bare step (cases/loop.py's method), and vs the
    same loop on batches already in memory (the augmentation's share, which is no data cost).

    Windows of the three alternate, so that a busy neighbour on a shared machine slows all
    three alike rather than one of them."""
    setup = _loop_setup(cfg)
    device, batch = torch.device(cfg.device), setup["batch"]
    run_cfg = TrainConfig(data=prepared, image_size=SIZE, batch_size=batch, **setup["geo"])
    man = S.read_manifest(prepared)
    dataset = S.PreparedRaw(prepared, man["splits"]["train"], SIZE)
    stats = D.DatasetStats.from_state_dict(torch.load(os.path.join(prepared, S.STATS_FILE), weights_only=True))
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=10**9, generator=torch.Generator().manual_seed(0)
    )
    it = iter(_loader(dataset, batch, sampler, run_cfg.workers, S.collate_prepared, device.type == "cuda"))
    torch.manual_seed(0)
    model = build_model(
        run_cfg.arch,
        len(man["classes"]),
        crop=run_cfg.crop,
        fused=run_cfg.fused,
        dropout=run_cfg.dropout,
        width=run_cfg.width,
    ).to(device)
    if run_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = PaperSGD(model.parameters(), lr=run_cfg.lr, momentum=run_cfg.momentum, weight_decay=run_cfg.weight_decay)
    augment = make_augment(run_cfg, stats, device)
    amp = torch.bfloat16 if run_cfg.amp == "bf16" else None
    step = {"n": 0}

    def augmented(images):
        step["n"] += 1
        return augment_batch(augment, images, run_cfg, step["n"])

    # distinct batches (32 on the CPU: reusing a few hot ones would flatter this row by ~3% here)
    in_memory = [next(it) for _ in range(4 if device.type == "cuda" else 32)]
    in_memory = [(b.images.to(device), b.labels.to(device)) for b in in_memory]
    x, labels = augmented(in_memory[0][0]), in_memory[0][1]

    def bare():
        train_step(model, opt, x, labels, amp)

    def memory():
        images, y = in_memory[step["n"] % len(in_memory)]
        train_step(model, opt, augmented(images), y, amp)

    def loop():
        b = next(it)
        train_step(model, opt, augmented(b.images), b.labels, amp)

    for _ in range(3):
        bare()
    sync(cfg.device)
    t0 = time.perf_counter()
    bare()
    sync(cfg.device)
    window = max(3, int(seconds / 3 / (time.perf_counter() - t0)))
    repeats = 3 if cfg.quick else 7
    times = {"bare": [], "memory": [], "loop": []}
    for _ in range(4 * run_cfg.workers + 1):  # the prefetch queue starts full: empty it first
        next(it)
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("memory", memory), ("loop", loop)):
            sync(cfg.device)
            t0 = time.perf_counter()
            for _ in range(window):
                fn()
            sync(cfg.device)
            times[name].append((time.perf_counter() - t0) * 1e3 / window)
    row = {
        "group": "data",
        "case": setup["name"],
        "dtype": run_cfg.amp if amp else "fp32",
        "layout": "nhwc" if run_cfg.channels_last else "nchw",
        "direction": "fwd+bwd",
        "workers": run_cfg.workers,
        "images": batch,
        "window_steps": window,
    }
    for name, t in times.items():
        st = summarize(t)
        row[f"{name}_ms"], row[f"{name}_q1_ms"], row[f"{name}_q3_ms"], row[f"{name}_n"] = (
            st["ms"],
            st["q1_ms"],
            st["q3_ms"],
            st["n"],
        )
        row[f"{name}_img_per_s"] = batch / (st["ms"] * 1e-3)
    row["loop_vs_bare_pct"] = 100 * row["bare_ms"] / row["loop_ms"]
    row["loop_vs_memory_pct"] = 100 * row["memory_ms"] / row["loop_ms"]
    return row


def _paths(prepared: str, source: str) -> List[Tuple[str, object, Callable, Dict]]:
    man = S.read_manifest(prepared)
    split = man["splits"]["train"]
    classes = D.find_classes(os.path.join(source, "train"))
    samples = D.make_samples(os.path.join(source, "train"), classes)
    raw_bytes = sum(s["files"][f"{s['name']}.npy"]["bytes"] for s in split["shards"]) / split["count"]
    jpeg_bytes = sum(s["files"][f"{s['name']}.tar"]["bytes"] for s in split["shards"]) / split["count"]
    return [
        (
            "ImageFolder (today: full-size decode + resize to 256)",
            D.ImageFolderUint8(samples, SIZE),
            D.collate_uint8,
            {"bytes_per_image": sum(os.path.getsize(p) for p, _ in samples) / len(samples)},
        ),
        (
            "JPEG-256 shards, quality 90, CPU decode",
            S.PreparedJpeg(prepared, split, SIZE),
            S.collate_prepared,
            {"bytes_per_image": jpeg_bytes},
        ),
        (
            "raw uint8 shards (memory-map gather; workers = threads)",
            S.PreparedRaw(prepared, split, SIZE),
            S.collate_prepared,
            {"bytes_per_image": raw_bytes},
        ),
    ]


def run_group(cfg: Config, progress: Callable) -> Tuple[List[Dict], List[str]]:
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    seconds = 0.2 if cfg.quick else 1.5
    repeats = 2 if cfg.quick else 5
    copies = 1 if cfg.quick else 8
    worker_counts = [0, 1] if cfg.quick else sorted({0, 1, ncpu})
    batch = 32
    rows, notes = [], []
    tmp = tempfile.mkdtemp(prefix="alexnet_cuda_bench_data_")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core means one core: decode and resize must not use the other
    try:
        source, prepared = os.path.join(tmp, "photos"), os.path.join(tmp, "prepared")
        photo = write_photos(source, copies)
        n_train = copies * 2 * 2 * 9
        t0 = time.perf_counter()
        prepare(source, prepared, size=SIZE, formats=["raw", "jpeg"], shard_size=64, workers=0, progress="off")
        prep_s = time.perf_counter() - t0
        n_all = n_train + 2 * 2 * 9
        rows.append(
            _row(
                "prepare (one-off: decode, resize, write raw + JPEG-256, mean/PCA)",
                0,
                {"img_per_s": n_all / prep_s, "min_img_per_s": n_all / prep_s, "max_img_per_s": n_all / prep_s},
                {"images": n_all},
            )
        )
        progress(1, 1, rows[-1])
        paths = _paths(prepared, source)
        total = len(paths) * len(worker_counts) + (1 if cfg.device == "cuda" else 0) + 1
        i = 1
        for name, dataset, collate, extra in paths:
            for workers in worker_counts:
                try:
                    stats = _time_loader(
                        dataset, collate, workers, batch, seconds, repeats, pin=cfg.device == "cuda"
                    )  # into pinned memory, as the trainer on CUDA
                    rows.append(
                        _row(
                            name,
                            workers,
                            stats,
                            {
                                **extra,
                                "images": batch,
                                "photo_kb": photo["file_kb"],
                                "photo_megapixels": photo["megapixels"],
                            },
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - report and move on
                    rows.append(
                        {
                            "group": "data",
                            "case": name,
                            "dtype": "uint8",
                            "layout": "nchw",
                            "direction": "read",
                            "workers": workers,
                            "error": describe_error(exc),
                        }
                    )
                i += 1
                progress(i, total, rows[-1])
        if cfg.device == "cuda":
            dataset = S.PreparedJpeg(prepared, S.read_manifest(prepared)["splits"]["train"], SIZE, raw_bytes=True)
            dev = torch.device("cuda")

            def on_gpu(b):
                out = D.decode_batch(b, dev, SIZE)
                sync("cuda")
                return out

            try:
                stats = _time_loader(dataset, D.collate_bytes, 4, 128, seconds, repeats, finish=on_gpu, pin=True)
                rows.append(
                    _row(
                        "JPEG-256 shards, nvJPEG batched on the GPU (4 workers read the bytes; per core: "
                        "per reading worker)",
                        4,
                        stats,
                        {"images": 128},
                    )
                )
            except Exception as exc:  # noqa: BLE001
                rows.append(
                    {
                        "group": "data",
                        "case": "nvJPEG",
                        "dtype": "uint8",
                        "layout": "nchw",
                        "direction": "read",
                        "workers": 4,
                        "error": describe_error(exc),
                    }
                )
            i += 1
            progress(i, total, rows[-1])
        try:  # still one thread for the step: the gather thread has the other core
            rows.append(_loop_row(cfg, prepared, seconds))
        except Exception as exc:  # noqa: BLE001
            rows.append(
                {
                    "group": "data",
                    "case": "whole CPU loop",
                    "dtype": "fp32",
                    "layout": "nchw",
                    "direction": "fwd+bwd",
                    "error": describe_error(exc),
                }
            )
        progress(total, total, rows[-1])
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    notes += _notes(rows, photo, ncpu)
    return rows, notes


def _notes(rows: List[Dict], photo: Dict, ncpu: int) -> List[str]:
    notes = [
        f"photos: scikit-learn's two sample photos at 3 sizes x 3 JPEG qualities, mean {photo['file_kb']:.0f} KB, "
        f"{photo['megapixels']:.2f} megapixels (ImageNet's training images: ~110 KB, ~0.18 megapixels); "
        f"{ncpu} cores here, shared with other work: see the min..max spread of each row"
    ]
    one_core = {r["case"]: r for r in rows if r.get("workers") == 0 and "error" not in r}
    for key, target in TARGETS.items():
        row = next((r for c, r in one_core.items() if c.startswith("raw" if key == "raw" else "JPEG-256")), None)
        if row:
            verdict = "meets" if row["img_per_s"] >= target else "MISSES"
            notes.append(
                f"{row['case']}: {row['img_per_s']:,.0f} images/s on one core: {verdict} the >= {target:,} "
                f"target; {row['cores_for_13100']} core(s) for 13,100 images/s, {row['cores_for_36600']} "
                f"for 36,600"
            )
    base = next((r for c, r in one_core.items() if c.startswith("ImageFolder")), None)
    if base:
        notes.append(
            f"baseline ImageFolder: {base['img_per_s']:,.0f} images/s on one core: {base['cores_for_13100']} "
            f"cores for 13,100 images/s, {base['cores_for_36600']} for 36,600"
        )
    loop = next((r for r in rows if r["case"].startswith("whole") and "error" not in r), None)
    if loop:
        verdict = "meets" if loop["loop_vs_bare_pct"] >= 90 else "MISSES"
        notes.append(
            f"{loop['case']}: {loop['loop_vs_bare_pct']:.0f}% of the bare step's images/s "
            f"({loop['loop_img_per_s']:,.0f} vs {loop['bare_img_per_s']:,.0f}): {verdict} the >= 90% target; "
            f"{loop['loop_vs_memory_pct']:.0f}% of the same loop (augmentation included) on batches already "
            f"in memory ({loop['memory_img_per_s']:,.0f}), so the shards cost "
            f"{100 - loop['loop_vs_memory_pct']:.0f}% and the augmentation "
            f"{100 * (1 - loop['bare_ms'] / loop['memory_ms']):.0f}% of the bare step's rate"
        )
    return notes
