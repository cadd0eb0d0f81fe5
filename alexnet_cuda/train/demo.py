"""A no-download demo: watch the full training pipeline learn on a real dataset in minutes on a CPU.

THIS IS NOT IMAGENET. The data are scikit-learn's bundled handwritten digits (1,797 grey
8x8 images, 10 classes, shipped inside the scikit-learn wheel, so nothing is downloaded).
They are upscaled to 28x28 RGB PNGs and written as an ImageFolder tree (train/ and val/,
a fixed stratified 80/20 split), so the demo runs the very same code path as ImageNet
training: decoding in DataLoader workers, the mean image and RGB PCA computed and cached,
random crops (24 of 28) + PCA colour noise, the paper's SGD, plateau lr drops, centre and
10-crop evaluation, checkpoints, CSV/TensorBoard logs and curves.png.

One departure from the recipe: no training-time horizontal flips (``--flip`` turns them
back on), because handwritten digits are not mirror-symmetric; with flips the same run
ends near 88% instead of ~97% centre-crop accuracy. The 10-crop evaluation still averages
the flipped views, as the paper's does, which is why it scores a little below the centre
crop here.

The net is :class:`alexnet_cuda.train.model_factory.SmallAlexNet` (AlexNet's layer types and
two-tower grouping, scaled down to 24x24 inputs), because AlexNet proper needs 227x227.
The digits are grey, so the PCA has one dominant component (R = G = B) and the colour
noise is in effect a brightness jitter.
"""

from __future__ import annotations

import os

from .._cache import cache_dir

DEMO_DEFAULTS = dict(
    arch="small",
    width=16,
    image_size=28,
    crop=24,
    epochs=20,
    flip=False,  # digits are not mirror-symmetric (a flipped 2 is no 2): the one recipe change
    batch_size=32,
    lr=0.01,
    schedule="plateau",
    lr_patience=2,
    input_scale=1.0 / 64.0,  # keeps activations O(1) for this small net's default init
    workers=1,
    output="runs/demo",
    log_every=10,
)


def _cache_root() -> str:
    return cache_dir()


def prepare_digits_imagefolder(root: str = None, size: int = 28, val_every: int = 5) -> str:
    """Write the digits as root/{train,val}/<digit>/<index>.png (once) and return root.

    Every ``val_every``-th image of each class goes to val/ (a deterministic stratified split).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the demo needs scikit-learn (its bundled digits data set): pip install scikit-learn"
        ) from exc
    from PIL import Image
    import numpy as np

    root = root or os.path.join(_cache_root(), f"digits-imagefolder-{size}")
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    # Several torchrun processes may get here at once: each writes a private folder and
    # renames it into place (atomic); the losers discard theirs.
    final, root = root, f"{root}.tmp-{os.getpid()}"
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    seen = {}
    for i, (img, label) in enumerate(zip(images, digits.target)):
        k = seen.get(label, 0)
        seen[label] = k + 1
        split = "val" if k % val_every == 0 else "train"
        folder = os.path.join(root, split, str(label))
        os.makedirs(folder, exist_ok=True)
        pil = Image.fromarray(img, mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
        pil.save(os.path.join(folder, f"{i:04d}.png"))
    with open(os.path.join(root, ".complete"), "w") as f:
        f.write(f"sklearn digits, {len(images)} images, {size}x{size}\n")
    try:
        os.rename(root, final)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        if not os.path.exists(marker):
            raise
    return final


def apply_demo_defaults(cfg, given: set):
    """Set the demo's value of every option the user did not type (``given``: the typed ones)."""
    for k, v in DEMO_DEFAULTS.items():
        if k not in given:
            setattr(cfg, k, v)
    return cfg


def apply_demo(cfg, given: set):
    """The demo's defaults for every option not typed, and the digits as --data unless typed."""
    apply_demo_defaults(cfg, given)
    if "data" not in given or cfg.data is None:
        cfg.data = prepare_digits_imagefolder(size=cfg.image_size)
    return cfg
