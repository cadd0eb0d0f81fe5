"""Small image folders and trainer arguments shared by the trainer's CLI tests."""

import numpy as np
from PIL import Image


def image_folder(root, classes=("a", "b"), n=3, seed=0):
    """root/{train,val}/<class>/<i>.png, n random 30x30 RGB PNGs each."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def folder_args(data, out, *extra):
    """A one-epoch run of the small net on an image folder, quiet, with its own stats file."""
    return [
        "--data",
        str(data),
        "--arch",
        "small",
        "--width",
        "8",
        "--image-size",
        "28",
        "--crop",
        "24",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--output",
        str(out),
        "--progress",
        "off",
        "--no-tensorboard",
        "--no-plot",
        "--stats-file",
        str(out) + "-stats.pt",
        "--no-ten-crop",
        "--epochs",
        "1",
        "--input-scale",
        "0.015625",
        *extra,
    ]


def log_messages(caplog):
    return "\n".join(r.getMessage() for r in caplog.records)
