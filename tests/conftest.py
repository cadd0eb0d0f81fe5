import importlib.util
import math
import os
import sys
import zlib

import pytest
import torch

CUDA = torch.cuda.is_available()
NO_CUDA_REASON = "no CUDA GPU on this machine: CUDA kernels are compiled but not run"

# Parametrize a test over devices; CUDA cases are collected and skipped visibly without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason=NO_CUDA_REASON))]


def skip_unless_free_memory(device, gib):
    """Skip the calling test unless `device` has `gib` GiB free: for the tests past 2^31
    elements. CUDA: the GPU's free memory; CPU: Linux's MemAvailable."""
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info()
    else:
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            free = int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            pytest.skip("cannot tell how much memory is free (no /proc/meminfo)")
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free {device} memory")


def big_randn(shape, device, dtype, period=1_000_003):
    """Normal random values for the tests past 2^31 elements, repeating with a prime
    period: an offset wrapped by any power of two (the bug those tests hunt) reads a
    different value, while filling 2^31 elements costs one copy instead of ~15 s of
    randn on a 2-core CPU."""
    numel = math.prod(shape)
    base = torch.randn(min(period, numel), device=device, dtype=dtype)
    return base.repeat(-(-numel // base.numel()))[:numel].view(shape)


def poison(device, nbytes):
    """Leave NaN bytes in the allocator's free memory (on CUDA, the caching allocator's
    next blocks), so that an output element a kernel forgets to write shows up as NaN (or
    a huge index) instead of a lucky value left there by an earlier result. Call it right
    before the op allocates its output."""
    torch.full((nbytes // 4 + 1,), float("nan"), device=device)


def saved_tensors(fn, x):
    """The tensors autograd saves while fn(x) runs."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(x)
    return saved


BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def load_bench_module(name):
    """bench/<name>.py as a module (bench/ holds scripts, not a package), with bench/ on
    sys.path while it loads: its files import their siblings (common, chart) by plain name."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, BENCH)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(BENCH)
    return module


def pytest_report_header(config):
    return f"torch {torch.__version__}, CUDA available: {CUDA}"


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different seed per test (fresh data everywhere), reproducible from the test id
    # (crc32, not hash(): str hashes change between processes).
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
