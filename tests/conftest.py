import contextlib
import glob
import importlib.util
import math
import os
import sys
import zlib

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_the_built_package():
    """`python -m pytest` puts the current directory first on sys.path. From a checkout
    whose extension was installed by pip rather than built in place, `import alexnet_cuda`
    would then find the unbuilt sources: leave the checkout off sys.path in that case, so
    `pytest tests` and `python -m pytest tests` test the same installed package."""
    if glob.glob(os.path.join(ROOT, "alexnet_cuda", "_C*.so")):
        return  # built in place: the checkout is the package
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != ROOT]


_import_the_built_package()

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


def rand(shape, device, dtype=torch.float32, scale=1.0):
    """Normal random values (never all zeros) times ``scale``, drawn in float64 and then
    cast, so every dtype sees the same values."""
    return (torch.randn(shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def layout(x, kind):
    """x in a memory layout: "contiguous", "channels_last" (channels innermost, any rank),
    "strided" (every other element along the last dim: neither format, not dense) or
    "channels_last_strided" (NHWC-like strides, not dense)."""
    if kind == "contiguous":
        return x.contiguous()
    if kind == "channels_last":
        perm = (0, *range(2, x.dim()), 1)
        inv = [perm.index(i) for i in range(x.dim())]
        return x.permute(perm).contiguous().permute(inv)
    if kind == "strided":
        return torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    if kind == "channels_last_strided":
        return layout(torch.repeat_interleave(x, 2, dim=-1), "channels_last")[..., ::2]
    raise ValueError(kind)


def offset_view(x, offset):
    """x's values in a tensor of the same layout whose data starts `offset` elements into
    its storage (offset 1: not 16-byte aligned, which turns vector loads off)."""
    flat = torch.empty(x.numel() + offset, dtype=x.dtype, device=x.device)
    return flat[offset:].as_strided(x.shape, x.stride()).copy_(x)


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


BENCH = os.path.join(ROOT, "bench")


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


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-sweep",
        action="store_true",
        help="run every CPU test on the CUDA kernels' per-item code (the sweep kernels and "
        "max-pool's CUDA items, the alexnet_cuda_test ops) where it applies, instead of the "
        "CPU kernels: for the sanitizer run (.ci/sanitize)",
    )


# The CPU runs of the CUDA kernels' per-item code are private test ops, each with the
# schema of the kernel op it stands in for: alexnet_cuda_test::<op> for alexnet_cuda::<op>
# (csrc/library.cpp). "sweep" names the forward items (and relu_lrn_max_pool2d's backward),
# "gather" max-pool's backward items.
_CUDA_ITEM_OPS = {
    "sweep": ("relu_lrn_max_pool2d_forward", "relu_lrn_max_pool2d_backward", "max_pool2d_forward"),
    "gather": ("max_pool2d_backward",),
}
_SESSION_PATHS = {"sweep": False, "gather": False}  # the paths --cpu-sweep forces
_routes = {"library": None}  # the registrations in force, to remove


def pytest_configure(config):
    if config.getoption("--cpu-sweep"):
        _SESSION_PATHS.update(sweep=True, gather=True)


def _route_cpu_calls(**paths):
    """Route the kernel ops' CPU calls to the test ops for the session's paths (--cpu-sweep)
    with `paths` on top: a CPU kernel registered from Python over the production one, so
    the public ops (argument checks, autograd, 3-D inputs) run on the CUDA items. The
    previous routes are removed first, which brings the production kernels back."""
    import alexnet_cuda  # noqa: F401  (loads the extension that defines the ops)

    if _routes["library"] is not None:
        _routes["library"]._destroy()
        _routes["library"] = None
    paths = {**_SESSION_PATHS, **paths}
    names = [name for path, on in paths.items() if on for name in _CUDA_ITEM_OPS[path]]
    if not names:
        return
    library = torch.library.Library("alexnet_cuda", "IMPL")
    for name in names:
        test_op = getattr(torch.ops.alexnet_cuda_test, name).default
        library.impl(name, lambda *args, _op=test_op: _op(*args), "CPU")
    _routes["library"] = library


@contextlib.contextmanager
def cpu_runs_cuda_items(sweep=True, gather=True):
    """Within the block, CPU calls run the CUDA kernels' per-item code (the test ops) for
    the paths asked for (both by default), the session's paths for the others."""
    _route_cpu_calls(sweep=sweep, gather=gather)
    try:
        yield
    finally:
        _route_cpu_calls()


def session_runs_cuda_items():
    """Whether this session's CPU tests run the CUDA kernels' per-item code (--cpu-sweep):
    their results then follow CUDA's rules where CUDA's differ from the CPU's."""
    return _SESSION_PATHS["sweep"]


@pytest.fixture(autouse=True)
def _session_routes():
    # Every test starts on the session's paths, also after a test that set them itself.
    if any(_SESSION_PATHS.values()):
        _route_cpu_calls()


@pytest.fixture
def cpu_sweep():
    """On CPU, run the CUDA kernels' per-item (sweep) code instead of the CPU kernels
    wherever it applies (the alexnet_cuda_test ops), so CI checks its arithmetic and
    indexing without a GPU."""
    with cpu_runs_cuda_items(sweep=True, gather=_SESSION_PATHS["gather"]):
        yield


@pytest.fixture
def cpu_gather():
    """On CPU, run max-pool's CUDA gather backward instead of the CPU scatter."""
    with cpu_runs_cuda_items(sweep=_SESSION_PATHS["sweep"], gather=True):
        yield
