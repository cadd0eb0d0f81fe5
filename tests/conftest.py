import zlib

import pytest
import torch

CUDA = torch.cuda.is_available()
NO_CUDA_REASON = "no CUDA GPU on this machine: CUDA kernels are compiled but not run"

# Parametrize a test over devices; CUDA cases are collected and skipped visibly without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason=NO_CUDA_REASON))]


def skip_unless_free_gpu_memory(gib):
    """Skip the calling (CUDA) test unless the GPU has `gib` GiB free: for the tests past
    2^31 elements."""
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free GPU memory")


def pytest_report_header(config):
    return f"torch {torch.__version__}, CUDA available: {CUDA}"


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different seed per test (fresh data everywhere), reproducible from the test id
    # (crc32, not hash(): str hashes change between processes).
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
