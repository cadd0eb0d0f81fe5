"""Build the alexnet_cuda C++/CUDA extension (``alexnet_cuda._C``) from ``csrc/``.

Build against the torch that is already installed (see README: ``pip install
--no-build-isolation .``). What gets compiled:

* ``alexnet_cuda/libalexnet_cuda_ops.so``, the operator library: every ``csrc/**/*.cpp``
  file but the Python module (the CPU kernels and the op registrations), and every
  ``csrc/**/*.cu`` file when a CUDA toolkit is found *and* the installed torch is a CUDA
  build. No GPU is needed to compile. Architectures come from ``TORCH_CUDA_ARCH_LIST``
  (default ``8.0;9.0+PTX``: A100, H100, and PTX for newer). It needs libtorch but not
  Python, so ``torch.ops.load_library`` and C++ programs (AOTInductor packages) load it.
* ``alexnet_cuda._C``, the Python module (``csrc/python_module.cpp``: the native
  bindings), linked against the operator library.

Host code is compiled without debug information (``-g0``, see ``host_flags``) unless
``CFLAGS`` asks for it; CUDA code keeps ``-lineinfo``.

The toolkit is looked up in this order, because torch's own guess (the parent of
the ``nvcc`` found on PATH) is wrong when that ``nvcc`` is a wrapper script:
``CUDA_HOME`` / ``CUDA_PATH`` (trusted, but must contain ``bin/nvcc``), then the
directory ``nvcc --dryrun`` reports as its real home, then ``/usr/local/cuda``.
``ALEXNET_CUDA_FORCE_CPU=1`` skips CUDA entirely. ``MAX_JOBS`` caps the parallel
compile jobs (ninja; unchanged files are not recompiled on rebuild).
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# Compiler flags, shared with bench/sass/ (`python -m bench.sass --compile` compiles the .cu
# files the same way).
CXX_FLAGS = ["-O3", "-fopenmp"]  # the C++ standard is torch's choice (C++20 for torch >= 2.12)
NVCC_FLAGS = ["-O3", "-lineinfo"]


def fatbin_flags(torch_cuda):
    """How the CUDA code is packed: --compress-mode=size for CUDA >= 13, whose drivers (580
    and newer, which torch's CUDA 13 builds need anyway) all read it. It stores the library's
    sm_80/sm_90 SASS and its PTX about 10x smaller than the default compression (max_pool2d:
    7.8 MB -> 0.8 MB). Older toolkits keep nvcc's default."""
    major = int(str(torch_cuda).split(".")[0]) if torch_cuda else 0
    return ["--compress-mode=size"] if major >= 13 else []


def host_flags(cxx_flags=CXX_FLAGS, environ=os.environ):
    """CXX_FLAGS, and -g0 unless this build's CFLAGS ask for debug information (-g).

    setuptools puts Python's own CFLAGS first on every compile command, and they hold -g:
    host debug information, three quarters of the library's size. -g0, later on the
    command line, overrides it. A build that sets CFLAGS with -g (.ci/sanitize, for line
    numbers in its reports) keeps it."""
    wants_debug = any(flag.startswith("-g") and flag != "-g0" for flag in environ.get("CFLAGS", "").split())
    return list(cxx_flags) if wants_debug else list(cxx_flags) + ["-g0"]


def _log(msg):
    print(f"[alexnet_cuda build] {msg}", file=sys.stderr, flush=True)


def _is_toolkit(path):
    return (
        bool(path)
        and os.path.isfile(os.path.join(path, "bin", "nvcc"))
        and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))
    )


STANDARD_DIRS = ("/usr/local/cuda",)


def find_cuda_home(fallback_dirs=None):
    """Return the CUDA toolkit root, or None. Never trusts a wrapper's location.

    fallback_dirs: where to look last (default /usr/local/cuda, then /usr/local/cuda-*).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            if _is_toolkit(value):
                return os.path.realpath(value)
            raise SystemExit(
                f"[alexnet_cuda build] {var}={value!r} is set but is not a CUDA toolkit "
                "(no bin/nvcc and include/cuda_runtime.h there). Fix or unset it."
            )
    nvcc = shutil.which("nvcc")
    if nvcc:
        # `nvcc --dryrun` prints `#$ _HERE_=<toolkit>/bin`: the real binary's directory,
        # even when the nvcc on PATH is a shell wrapper that execs it from elsewhere.
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True, timeout=60)
            match = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.M)
            if match and _is_toolkit(os.path.dirname(match.group(1).strip())):
                return os.path.realpath(os.path.dirname(match.group(1).strip()))
        except (OSError, subprocess.SubprocessError):
            pass
        guess = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_toolkit(guess):
            return guess
    if fallback_dirs is None:
        fallback_dirs = list(STANDARD_DIRS) + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for guess in fallback_dirs:
        if _is_toolkit(guess):
            return os.path.realpath(guess)
    return None


def cuda_library_includes(cuda_home):
    """Header dirs for cuBLAS/cuSPARSE/cuSOLVER when the toolkit lacks them.

    torch's ATen/cuda/CUDAContext.h includes them; a minimal toolkit (nvcc + cudart)
    does not ship them, but the nvidia-* wheels that a CUDA build of torch depends on
    do (site-packages/nvidia/cu13/include, or nvidia/<lib>/include for CUDA 12).
    """
    if os.path.isfile(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    dirs = []
    for base in (spec.submodule_search_locations or []) if spec else []:
        for inc in sorted(glob.glob(os.path.join(base, "*", "include"))):
            if glob.glob(os.path.join(inc, "cu*.h")):
                dirs.append(inc)
    return dirs


BUILD_INFO = os.path.join(ROOT, "alexnet_cuda", "_build_info.py")


def write_build_info(torch_version, path=BUILD_INFO):
    """Record the torch the extension is compiled against: `import alexnet_cuda` compares
    it with the torch it runs with before loading the binary (alexnet_cuda/_extension.py),
    so a mismatch is a clear error instead of an undefined-symbol traceback."""
    with open(path, "w") as f:
        f.write('"""Written by setup.py at build time; not in git."""\n\n')
        f.write(f"TORCH_VERSION = {torch_version!r}\n")


# The operator library: a plain shared library (no Python module in it), built first.
OPS_EXTENSION = "alexnet_cuda.libalexnet_cuda_ops"
OPS_LIBRARY = "libalexnet_cuda_ops.so"


def build_with_ops_library(build_extension):
    """torch's BuildExtension, naming the operator library ``libalexnet_cuda_ops.so`` (not
    a Python module's ``<name>.<abi tag>.so``) and linking the Python module against it."""

    class BuildWithOpsLibrary(build_extension):
        def get_ext_filename(self, fullname):
            # Called with the dotted name, or with its last part only (distutils'
            # get_ext_fullpath, which then adds the package's folder itself).
            *package, name = fullname.split(".")
            if name == OPS_EXTENSION.split(".")[-1]:
                return os.path.join(*package, OPS_LIBRARY)
            return super().get_ext_filename(fullname)

        def build_extension(self, ext):
            if ext.name != OPS_EXTENSION:
                ext.library_dirs.append(os.path.dirname(self.get_ext_fullpath(OPS_EXTENSION)))
            super().build_extension(ext)

    return BuildWithOpsLibrary


def main():
    try:
        import torch
    except ImportError:
        raise SystemExit(
            "[alexnet_cuda build] torch is not importable in this build environment.\n"
            "`pip install .` installs it into the build environment itself (pyproject.toml);\n"
            "to build against the torch you already have, install torch first and run\n"
            "    pip install --no-build-isolation .\n"
        )
    write_build_info(torch.__version__)
    _log(f"compiling against torch {torch.__version__}")

    cuda_home = None
    if os.environ.get("ALEXNET_CUDA_FORCE_CPU", "0") == "1":
        _log("ALEXNET_CUDA_FORCE_CPU=1: building the CPU kernels only.")
    elif torch.version.cuda is None:
        _log(f"torch {torch.__version__} is a CPU-only build: building the CPU kernels only.")
    else:
        cuda_home = find_cuda_home()
        if cuda_home is None:
            _log(
                "no CUDA toolkit found (CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda): "
                "building the CPU kernels only. Set CUDA_HOME to build the CUDA kernels."
            )
        else:
            # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
            os.environ["CUDA_HOME"] = cuda_home
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
            _log(
                f"CUDA toolkit {cuda_home}, torch CUDA {torch.version.cuda}, "
                f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}"
            )

    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    python_module = os.path.join("csrc", "python_module.cpp")
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    sources.remove(python_module)
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    include_dirs = [os.path.join(ROOT, "csrc")]
    # py_limited_api=True: torch then links the library without libtorch_python (and
    # defines Py_LIMITED_API, which it does not use: it includes no Python header).
    ops = dict(py_limited_api=True, include_dirs=include_dirs, extra_link_args=["-fopenmp"])
    if cuda_home is not None:
        ops_library = CUDAExtension(
            OPS_EXTENSION,
            sources + cuda_sources,
            extra_compile_args={"cxx": host_flags(), "nvcc": NVCC_FLAGS + fatbin_flags(torch.version.cuda)},
            **dict(ops, include_dirs=include_dirs + cuda_library_includes(cuda_home)),
        )
    else:
        ops_library = CppExtension(OPS_EXTENSION, sources, extra_compile_args={"cxx": host_flags()}, **ops)
    module = CppExtension(
        "alexnet_cuda._C",
        [python_module],
        include_dirs=include_dirs,
        extra_compile_args={"cxx": host_flags()},
        # Found next to the module at run time; its directory is added at build time
        # (BuildWithOpsLibrary), when the build's output folder is known.
        libraries=[":" + OPS_LIBRARY],
        extra_link_args=["-Wl,-rpath,$ORIGIN"],
    )

    setup(
        ext_modules=[ops_library, module],  # in this order: the module links the library
        cmdclass={"build_ext": build_with_ops_library(BuildExtension).with_options(use_ninja=True)},
    )


# setuptools runs this file as __main__; tests import it to check find_cuda_home().
if __name__ == "__main__":
    main()
