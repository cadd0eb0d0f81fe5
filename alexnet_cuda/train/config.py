"""Training options: one dataclass (the importable API) and the argparse CLI built from it."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from typing import List, Optional


@dataclass
class TrainConfig:
    # data
    data: Optional[str] = None  # folder with train/ and val/ (ImageFolder layout)
    train_dir: str = "train"
    val_dir: str = "val"
    image_size: int = 256  # shorter side -> 256, centre 256x256 (paper)
    crop: int = 227  # 227 (sizes work out) or 224 (paper text)
    mean: str = "pixel"  # pixel (paper) | channel | none
    pca_std: float = 0.1  # std of the PCA colour-noise alphas; 0 disables
    flip: bool = True
    input_scale: float = 1.0  # 1.0 = raw 0..255 units minus mean, as the paper
    stats_file: Optional[str] = None  # cache of the mean image + RGB PCA
    stats_max_images: int = 0  # 0 = the whole training set
    stats_only: bool = False  # compute/cache the mean and PCA, then exit
    workers: int = 4
    gpu_decode: bool = False  # nvJPEG via torchvision.io.decode_jpeg(device='cuda')
    synthetic: int = 0  # N random in-memory images instead of --data (benchmarking)
    synthetic_classes: int = 1000
    # model
    arch: str = "alexnet"  # alexnet | small (demo)
    width: int = 32  # SmallAlexNet width
    fused: bool = True
    dropout: float = 0.5
    model_parallel: bool = False  # the two towers on two GPUs per process
    # optimisation (paper, section 5)
    epochs: int = 90
    batch_size: int = 128  # global batch, split over DDP processes
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"  # plateau | milestones | constant
    lr_patience: int = 5
    lr_max_drops: int = 3
    lr_threshold: float = 1e-3
    lr_milestones: str = "25,51,79"  # an example spread over 90 epochs (see optim.MilestoneSchedule)
    bias_decay: bool = True  # weight decay on biases too (the paper's text); see README
    # execution
    device: str = "auto"
    amp: str = "none"  # none | bf16
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False  # the whole step replayed from one CUDA graph (train/step.py)
    seed: int = 0
    # evaluation
    eval_every: int = 1
    ten_crop: bool = True
    eval_batch_size: int = 0  # 0 = batch_size
    # output
    output: str = "runs/alexnet"
    resume: Optional[str] = None
    resume_allow_changes: bool = False  # resume even if batch size, seed, crop, classes... changed
    save_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    max_steps: int = 0  # stop (and checkpoint) after this many steps in total
    log_every: int = 20
    progress: str = "auto"  # auto | on | off
    tensorboard: bool = True
    plot: bool = True

    def to_dict(self):
        return asdict(self)

    def milestones(self) -> List[int]:
        return [int(s) for s in self.lr_milestones.split(",") if s.strip()]


_CHOICES = {
    "mean": ["pixel", "channel", "none"],
    "arch": ["alexnet", "small"],
    "schedule": ["plateau", "milestones", "constant"],
    "amp": ["none", "bf16"],
    "progress": ["auto", "on", "off"],
}

_HELP = {
    "data": "dataset root holding train/ and val/, one folder per class (JPEG/PNG)",
    "image_size": "images are rescaled (shorter side) and centre-cropped to this square",
    "crop": "training/test crop size: 227 (faithful) or 224",
    "mean": "mean subtraction: pixel (per-pixel mean image, the paper), channel, none",
    "pca_std": "std of the per-image PCA colour-noise coefficients (paper: 0.1; 0 = off)",
    "flip": "random horizontal flips",
    "input_scale": "multiply the mean-subtracted 0..255 pixel values by this",
    "stats_file": "where the training-set mean/PCA are cached (default: ~/.cache/alexnet_cuda/)",
    "stats_max_images": "compute mean/PCA on the first N training images only (0 = all)",
    "stats_only": "compute and cache the training-set mean/PCA (to --stats-file), then exit",
    "workers": "DataLoader worker processes (decoding runs there)",
    "gpu_decode": "decode JPEGs on the GPU with nvJPEG (workers only read bytes)",
    "synthetic": "instead of --data: N random uint8 images of --image-size held in memory (no disk, no "
    "decoding, no validation set), for measuring the loader + augmentation + step pipeline; "
    "nothing is learnt from them",
    "synthetic_classes": "number of (random) labels of --synthetic",
    "arch": "alexnet (alexnet_cuda.models.AlexNet) or small (the demo's AlexNet-style net)",
    "width": "channel width of --arch small",
    "fused": "use the project's fused kernels in AlexNet (--no-fused: stock torch layers)",
    "model_parallel": "put AlexNet's two towers on two GPUs (per process)",
    "batch_size": "global batch size (split over DDP processes)",
    "schedule": "plateau: lr/10 when val error stops improving; milestones: fixed epochs; constant",
    "lr_patience": "plateau: epochs without improvement before dividing lr by 10",
    "lr_max_drops": "plateau: at most this many drops",
    "lr_milestones": "milestones: comma-separated 0-based epochs at which lr is divided by 10 (the "
    "default is an example spread over 90 epochs, not taken from a published log)",
    "device": "auto, cpu, cuda, cuda:N",
    "amp": "bf16: autocast the forward pass to bfloat16",
    "channels_last": "NHWC memory format for the model and its inputs",
    "compile": "torch.compile the model (train/step.py)",
    "cuda_graphs": "capture the whole training step (forward, loss, backward, SGD update) in one CUDA graph "
    "after 3 warm-up steps and replay it: no per-kernel launches on the host; without CUDA "
    "(or if the capture fails) it says so and runs the ordinary step; not with "
    "--model-parallel or several processes (train/step.py)",
    "ten_crop": "also evaluate the paper's 10-crop average",
    "output": "run folder: checkpoints, metrics.csv, steps.csv, TensorBoard logs, curves.png",
    "resume": "checkpoint file or run folder to continue from (exactly); --lr, --momentum, "
    "--weight-decay, --epochs, cadences and workers may change, and apply",
    "resume_allow_changes": "with --resume: accept changes that alter the data order, labels or model "
    "(batch size, seed, crop, classes, ...); the epoch then restarts from its start",
    "bias_decay": "apply weight decay to biases too (the paper's text is silent; cuda-convnet and Caffe's "
    "bvlc_alexnet exclude biases, --no-bias-decay)",
    "save_every": "also checkpoint every N steps",
    "max_steps": "stop after N optimiser steps in total (checkpointed; resume continues)",
    "train_dir": "training subfolder of --data",
    "val_dir": "validation subfolder of --data (same class folder names as train/)",
    "dropout": "dropout probability on fc6 and fc7 outputs",
    "lr": "initial learning rate (paper: 0.01)",
    "momentum": "momentum of the paper's SGD update",
    "weight_decay": "weight decay, inside the momentum term as in the paper",
    "lr_threshold": "plateau: an improvement must exceed this (absolute, in error fraction)",
    "seed": "seed for data order, augmentation and initialisation",
    "eval_every": "evaluate every N epochs (and after the last)",
    "eval_batch_size": "evaluation batch size (0 = --batch-size; 10-crop runs 10x this)",
    "log_every": "write steps.csv / update the progress bar every N steps",
    "epochs": "number of epochs (paper: ~90)",
    "progress": "progress bars: auto (if tqdm and a terminal), on, off",
    "tensorboard": "write TensorBoard logs (needs the tensorboard package)",
    "plot": "write curves.png at the end (needs matplotlib)",
}


# Accepted ranges of the numeric options: (low, high, low included, high included); None = unbounded.
# Checked when the command line is parsed, before any data is read, and again by check_config
# for configs built in Python. The upper bounds keep a typo from asking for more than a machine
# serves: image sizes up to 4x the paper's 256 (a 100000 px image side is 30 GB per image),
# batches of 64k images, SmallAlexNet up to AlexNet's fc width (8 x 512 = 4096), 32-bit seeds
# (numpy's generator takes no more), 100k classes (fc8 alone is 1.6 GB at 100k). Counts of steps and
# epochs are only kept below 2**62 (no C integer overflows). The worker count and --synthetic's
# memory depend on the machine: see check_machine.
_BIG = 2**62
_RANGES = {
    "image_size": (1, 1024, True, True),
    "crop": (1, 1024, True, True),
    "pca_std": (0, 1e3, True, True),
    "input_scale": (0, 1e6, False, True),
    "stats_max_images": (0, _BIG, True, True),
    "workers": (0, 1024, True, True),
    "synthetic": (0, _BIG, True, True),
    "synthetic_classes": (1, 100_000, True, True),
    "width": (2, 512, True, True),
    "dropout": (0, 1, True, False),
    "epochs": (1, _BIG, True, True),
    "batch_size": (1, 65536, True, True),
    "lr": (0, 1e3, False, True),
    "momentum": (0, 1, True, False),
    "weight_decay": (0, 1e3, True, True),
    "lr_patience": (0, _BIG, True, True),
    "lr_max_drops": (0, _BIG, True, True),
    "lr_threshold": (0, 1, True, True),
    "seed": (0, 2**32 - 1, True, True),
    "eval_every": (1, _BIG, True, True),
    "eval_batch_size": (0, 65536, True, True),
    "save_every": (0, _BIG, True, True),
    "max_steps": (0, _BIG, True, True),
    "log_every": (1, _BIG, True, True),
}


def _range_text(name: str) -> str:
    lo, hi, lo_in, hi_in = _RANGES[name]
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if lo_in else '>'} {lo}")
    if hi is not None:
        parts.append(f"{'<=' if hi_in else '<'} {hi}")
    return " and ".join(parts)


def _in_range(name: str, value) -> bool:
    lo, hi, lo_in, hi_in = _RANGES[name]
    if isinstance(value, float) and not math.isfinite(value):  # NaN and inf are in no range
        return False
    if lo is not None and (value < lo or (value == lo and not lo_in)):
        return False
    return hi is None or value < hi or (value == hi and hi_in)


def _ranged(name: str, typ):
    """argparse type: ``typ`` within _RANGES[name], else an error naming the accepted range."""

    def parse(text: str):
        try:
            value = typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if typ is int else 'a number'}")
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number: must be {_range_text(name)}")
        if not _in_range(name, value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {_range_text(name)}")
        return value

    parse.__name__ = typ.__name__  # argparse names the type in its own messages
    return parse


def _milestones_problem(text: str) -> Optional[str]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        return f"--lr-milestones {text!r}: expected comma-separated epoch numbers, e.g. 25,51,79"
    if any(v < 0 for v in values):
        return f"--lr-milestones {text!r}: epochs must be >= 0"
    return None


def check_config(cfg: TrainConfig, own_model: bool = False) -> List[str]:
    """Every problem with ``cfg``'s values, as messages naming the option (empty: all good).
    The ranges of single options, and what depends on several: the crop must fit in the
    image, AlexNet takes 227 or 224 crops, SmallAlexNet's grouped convs need an even width
    (not checked with ``own_model``: train() was given a model, --arch does not apply)."""
    problems = [
        f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be {_range_text(name)}"
        for name in _RANGES
        if not _in_range(name, getattr(cfg, name))
    ]
    if problems:
        return problems
    if cfg.crop > cfg.image_size:
        problems.append(
            f"--crop {cfg.crop} is larger than the images (--image-size {cfg.image_size}): "
            f"the crop must be <= --image-size"
        )
    if own_model:
        pass
    elif cfg.arch == "alexnet" and cfg.crop not in (224, 227):
        problems.append(f"--crop {cfg.crop}: --arch alexnet takes 227 (no conv1 padding) or 224 (padding 2)")
    if cfg.arch == "small" and cfg.width % 2:
        problems.append(f"--width {cfg.width}: must be even (--arch small has two-group convolutions)")
    if cfg.synthetic and (cfg.gpu_decode or cfg.stats_only):
        problems.append("--synthetic has no files: --gpu-decode and --stats-only do not apply")
    if cfg.cuda_graphs and cfg.model_parallel:
        problems.append(
            "--cuda-graphs with --model-parallel: one CUDA graph captures one device's work; drop one of them"
        )
    milestones = _milestones_problem(cfg.lr_milestones)
    return problems + ([milestones] if milestones else [])


def _device_problem(device: str, model_parallel: bool) -> Optional[str]:
    """Whether --device names a device this machine has (and --model-parallel its two GPUs)."""
    import torch

    kind, sep, index = device.partition(":")
    if device not in ("auto", "cpu") and not (kind == "cuda" and (not sep or index.isdigit())):
        return f"--device {device!r}: expected auto, cpu, cuda or cuda:N (N a GPU number)"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "cuda" and not gpus:
        return f"--device {device}: no CUDA GPU on this machine (use --device cpu or auto)"
    if index and int(index) >= gpus:
        return f"--device {device}: this machine has {gpus} CUDA GPU(s), numbered 0 to {gpus - 1}"
    if model_parallel and (device == "cpu" or gpus < 2):
        return (
            f"--model-parallel puts AlexNet's two towers on two GPUs: it needs two CUDA GPUs per process, "
            f"this machine has {gpus}" + (" (and --device is cpu)" if device == "cpu" else "")
        )
    return None


def _total_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_machine(cfg: TrainConfig) -> List[str]:
    """What this machine cannot serve: a device it has not, more DataLoader workers than 4 per
    CPU core (each is a process holding a copy of the dataset's state), --synthetic images
    that do not fit in half of the memory."""
    problems = []
    device = _device_problem(cfg.device, cfg.model_parallel)
    if device:
        problems.append(device)
    cpus = os.cpu_count() or 1
    if cfg.workers > 4 * cpus:
        problems.append(f"--workers {cfg.workers}: at most {4 * cpus} on this machine (4 per CPU core, {cpus} cores)")
    memory = _total_memory()
    need = cfg.synthetic * 3 * cfg.image_size**2
    if memory and need > memory // 2:
        problems.append(
            f"--synthetic {cfg.synthetic}: {cfg.synthetic} images of {cfg.image_size}x{cfg.image_size} "
            f"take {need / 2**30:.1f} GiB, over half of this machine's {memory / 2**30:.0f} GiB"
        )
    return problems


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _write_problem(folder: str) -> Optional[str]:
    """Why a file cannot be created in ``folder`` (an existing folder), or None. Tried for real:
    permissions say nothing about /proc or read-only mounts, least of all to root."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".alexnet_cuda-write-test-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.remove(probe)
    return None


def _folder_to_write_problem(option: str, path: str) -> Optional[str]:
    """A folder that is, or can be created and is, writable."""
    if not path:
        return f"{option} '': give a folder"
    if os.path.lexists(path) and not os.path.isdir(path):
        return f"{option} {path}: exists and is not a folder"
    base = _existing_ancestor(path)
    if not os.path.isdir(base):
        return f"{option} {path}: {base} is not a folder"
    why = _write_problem(base)
    return f"{option} {path}: cannot write in {base} ({why})" if why else None


def _file_to_write_problem(option: str, path: str) -> Optional[str]:
    """A file that can be read (if it exists) or created (if not)."""
    if not path:
        return f"{option} '': give a file name"
    if os.path.isdir(path):
        return f"{option} {path}: is a folder; give a file name"
    if os.path.lexists(path):
        if not os.path.isfile(path):
            return f"{option} {path}: not a regular file"
        if not os.access(path, os.R_OK):
            return f"{option} {path}: cannot be read (permission denied)"
        return None
    folder = os.path.dirname(os.path.abspath(path))
    problem = _folder_to_write_problem(option, folder)
    return problem and problem.replace(f"{option} {folder}", f"{option} {path}", 1)


def check_paths(cfg: TrainConfig) -> List[str]:
    """--output, --stats-file, --resume and --data: the right kind of thing, readable or
    writable, before any work (a run must not fail after an hour-long statistics pass for a
    file it cannot write)."""
    problems = [_folder_to_write_problem("--output", cfg.output)]
    if cfg.stats_file is not None:
        problems.append(_file_to_write_problem("--stats-file", cfg.stats_file))
    if cfg.resume is not None:
        if not cfg.resume:
            problems.append("--resume '': give a checkpoint file or a run folder")
        elif os.path.isdir(cfg.resume) and not os.path.isfile(os.path.join(cfg.resume, "last.pt")):
            problems.append(f"--resume {cfg.resume}: a folder without last.pt (no checkpoint to resume from)")
        elif not os.path.exists(cfg.resume):
            problems.append(f"--resume {cfg.resume}: no such file or folder")
        elif not os.path.isdir(cfg.resume) and not os.path.isfile(cfg.resume):
            problems.append(f"--resume {cfg.resume}: not a regular file")
    if cfg.data is not None and not cfg.synthetic:
        train = os.path.join(cfg.data, cfg.train_dir)
        if not cfg.data:
            problems.append("--data '': give the dataset folder (holding train/ and val/)")
        elif not os.path.isdir(train) and not os.path.isfile(os.path.join(cfg.data, "manifest.json")):
            problems.append(
                f"--data {cfg.data}: no folder {train} (expected {cfg.train_dir}/ and {cfg.val_dir}/, "
                f"one folder per class in each, or a prepared folder with its manifest.json)"
            )
    return [p for p in problems if p]


def build_parser(typed_only: bool = False) -> argparse.ArgumentParser:
    """The CLI. ``typed_only``: every default is argparse.SUPPRESS, so a parse returns just the
    options that were typed (how --demo tells a typed value from a default)."""
    p = argparse.ArgumentParser(
        prog="python -m alexnet_cuda.train",
        description="Train AlexNet the way Krizhevsky et al. (2012) did: 256x256 images minus the "
        "mean, random 227 crops + flips + PCA colour noise on the GPU, SGD with momentum "
        "0.9 and weight decay 5e-4 (the paper's update), lr 0.01 divided by 10 on "
        "plateaus, centre and 10-crop evaluation. Scale out with torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="no-download demo: scikit-learn's bundled 8x8 digits upscaled to 28x28, a small "
        "AlexNet-style net, about a minute on a CPU (NOT ImageNet); options typed on the "
        "command line override the demo's settings",
    )
    for f in fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        default = argparse.SUPPRESS if typed_only else f.default
        help_ = _HELP.get(f.name, f.name.replace("_", " "))
        if f.type in ("bool", bool):
            p.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
            continue
        typ = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
        if f.name in _RANGES:
            help_ += f" ({_range_text(f.name)})"
            typ = _ranged(f.name, typ)
        p.add_argument(name, dest=f.name, type=typ, default=default, help=help_, choices=_CHOICES.get(f.name))
    return p


def config_from_args(argv=None):
    """(TrainConfig, demo flag, set of option names typed on the command line)."""
    ns = build_parser().parse_args(argv)
    # A second parse with SUPPRESS defaults holds only what was typed, so --demo never
    # replaces a typed value, even one equal to the general default (--demo --flip).
    given = set(vars(build_parser(typed_only=True).parse_args(argv))) - {"demo"}
    kwargs = {f.name: getattr(ns, f.name) for f in fields(TrainConfig)}
    return TrainConfig(**kwargs), ns.demo, given
