"""The library's cache folder: $ALEXNET_CUDA_CACHE, else ~/.cache/alexnet_cuda.

It holds the trainer's dataset statistics, the demo's digits and conv2d_relu's per-shape
kernel choices; each is safe to delete (it is computed again), and a file in it whose content
is not what the library wrote is treated as missing (with a warning naming it)."""

import logging
import os

_log = logging.getLogger("alexnet_cuda")
_warned = set()


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "alexnet_cuda")


def cache_dir() -> str:
    """$ALEXNET_CUDA_CACHE if it is a folder or can become one; otherwise (it names a file, say)
    the default folder, with one warning."""
    chosen = os.environ.get("ALEXNET_CUDA_CACHE")
    if not chosen:
        return default_cache_dir()
    if os.path.lexists(chosen) and not os.path.isdir(chosen):
        if chosen not in _warned:
            _warned.add(chosen)
            _log.warning("ALEXNET_CUDA_CACHE=%s is not a folder: caching in %s instead (point it at a folder)",
                         chosen, default_cache_dir())
        return default_cache_dir()
    return chosen
