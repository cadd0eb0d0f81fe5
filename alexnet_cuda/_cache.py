"""The library's cache folder: $ALEXNET_CUDA_CACHE, else ~/.cache/alexnet_cuda.

It holds the trainer's dataset statistics, the demo's digits and conv2d_relu's per-shape
kernel choices; each is safe to delete (it is computed again)."""

import os


def cache_dir() -> str:
    return os.environ.get("ALEXNET_CUDA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "alexnet_cuda"))
