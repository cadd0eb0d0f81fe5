"""Training options: one dataclass (the importable API) and the argparse CLI built from it."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import List, Optional


@dataclass
class TrainConfig:
    # data
    data: Optional[str] = None          # folder with train/ and val/ (ImageFolder layout)
    train_dir: str = "train"
    val_dir: str = "val"
    image_size: int = 256               # shorter side -> 256, centre 256x256 (paper)
    crop: int = 227                     # 227 (sizes work out) or 224 (paper text)
    mean: str = "pixel"                 # pixel (paper) | channel | none
    pca_std: float = 0.1                # std of the PCA colour-noise alphas; 0 disables
    flip: bool = True
    input_scale: float = 1.0            # 1.0 = raw 0..255 units minus mean, as the paper
    stats_file: Optional[str] = None    # cache of the mean image + RGB PCA
    stats_max_images: int = 0           # 0 = the whole training set
    stats_only: bool = False            # compute/cache the mean and PCA, then exit
    workers: int = 4
    gpu_decode: bool = False            # nvJPEG via torchvision.io.decode_jpeg(device='cuda')
    synthetic: int = 0                  # N random in-memory images instead of --data (benchmarking)
    synthetic_classes: int = 1000
    # model
    arch: str = "alexnet"               # alexnet | small (demo)
    width: int = 32                     # SmallAlexNet width
    fused: bool = True
    dropout: float = 0.5
    model_parallel: bool = False        # the two towers on two GPUs per process
    # optimisation (paper, section 5)
    epochs: int = 90
    batch_size: int = 128               # global batch, split over DDP processes
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"           # plateau | milestones | constant
    lr_patience: int = 5
    lr_max_drops: int = 3
    lr_threshold: float = 1e-3
    lr_milestones: str = "25,51,79"     # drops in the released AlexNet logs
    # execution
    device: str = "auto"
    amp: str = "none"                   # none | bf16
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    # evaluation
    eval_every: int = 1
    ten_crop: bool = True
    eval_batch_size: int = 0            # 0 = batch_size
    # output
    output: str = "runs/alexnet"
    resume: Optional[str] = None
    save_every: int = 0                 # also checkpoint every N steps (0: at epoch ends only)
    max_steps: int = 0                  # stop (and checkpoint) after this many steps in total
    log_every: int = 20
    progress: str = "auto"              # auto | on | off
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
    "lr_milestones": "milestones: comma-separated 0-based epochs at which lr is divided by 10",
    "device": "auto, cpu, cuda, cuda:N",
    "amp": "bf16: autocast the forward pass to bfloat16",
    "channels_last": "NHWC memory format for the model and its inputs",
    "compile": "torch.compile the model",
    "ten_crop": "also evaluate the paper's 10-crop average",
    "output": "run folder: checkpoints, metrics.csv, steps.csv, TensorBoard logs, curves.png",
    "resume": "checkpoint file or run folder to continue from (exactly)",
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m alexnet_cuda.train",
        description="Train AlexNet the way Krizhevsky et al. (2012) did: 256x256 images minus the "
                    "mean, random 227 crops + flips + PCA colour noise on the GPU, SGD with momentum "
                    "0.9 and weight decay 5e-4 (the paper's update), lr 0.01 divided by 10 on "
                    "plateaus, centre and 10-crop evaluation. Scale out with torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--demo", action="store_true",
                   help="no-download demo: scikit-learn's bundled 8x8 digits upscaled to 28x28, a small "
                        "AlexNet-style net, about a minute on a CPU (NOT ImageNet); other options "
                        "given explicitly override the demo's settings")
    for f in fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        default = f.default
        help_ = _HELP.get(f.name, f.name.replace("_", " "))
        if f.type in ("bool", bool):
            p.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            typ = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            p.add_argument(name, dest=f.name, type=typ, default=default, help=help_,
                           choices=_CHOICES.get(f.name))
    return p


def config_from_args(argv=None):
    """(TrainConfig, demo flag, set of option names given explicitly on the command line)."""
    p = build_parser()
    ns = p.parse_args(argv)
    # Which options the user typed, so --demo's defaults never override them.
    given = set()
    for f in fields(TrainConfig):
        if getattr(ns, f.name) != p.get_default(f.name):
            given.add(f.name)
    demo = ns.demo
    kwargs = {f.name: getattr(ns, f.name) for f in fields(TrainConfig)}
    return TrainConfig(**kwargs), demo, given
