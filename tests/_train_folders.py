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


# The small net, one quiet process: no workers, progress bars, TensorBoard, plots or 10-crop
# test; inputs scaled as the demo does (on raw pixels this small net diverges).
QUIET_SMALL_RUN = (
    "--arch small --width 8 --crop 24 --workers 0 --progress off --no-tensorboard --no-plot --no-ten-crop "
    "--input-scale 0.015625"
).split()


def folder_args(data, out, *extra):
    """A one-epoch run of the small net on an image folder, quiet, with its own stats file."""
    return ["--data", str(data), "--output", str(out), "--stats-file", f"{out}-stats.pt"] + (
        "--image-size 28 --batch-size 4 --epochs 1".split() + QUIET_SMALL_RUN + list(extra)
    )


def synthetic_args(out, *extra):
    """A run of the small net on 32 synthetic images of 4 classes, quiet, logging every step."""
    return ["--synthetic", "32", "--output", str(out)] + (
        "--synthetic-classes 4 --image-size 32 --batch-size 8 --log-every 1".split() + QUIET_SMALL_RUN + list(extra)
    )


def log_messages(caplog):
    return "\n".join(r.getMessage() for r in caplog.records)
