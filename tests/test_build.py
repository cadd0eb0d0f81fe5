"""setup.py: CUDA toolkit discovery (no GPU needed) and host compile flags."""

import importlib.util
import os
import shutil
import stat

import pytest
from _binutils import binutils_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, "setup.py")


def load_setup():
    if not os.path.exists(SETUP):
        pytest.skip("setup.py is not next to the tests (installed-package test run)")
    spec = importlib.util.spec_from_file_location("alexnet_cuda_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only: main() runs under __main__
    return module


def real_toolkit(setup):
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if setup._is_toolkit(os.environ.get(var)):
            return os.path.realpath(os.environ[var])
    for guess in ["/usr/local/cuda"]:
        if setup._is_toolkit(guess):
            return os.path.realpath(guess)
    pytest.skip("no CUDA toolkit on this machine")


def test_cuda_home_is_honoured_first(tmp_path, monkeypatch):
    setup = load_setup()
    home = real_toolkit(setup)
    monkeypatch.setenv("CUDA_HOME", home)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvcc on PATH at all
    assert setup.find_cuda_home() == home


def test_bad_cuda_home_is_a_clear_error(tmp_path, monkeypatch):
    setup = load_setup()
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    with pytest.raises(SystemExit, match="CUDA_HOME=.* is not a CUDA toolkit"):
        setup.find_cuda_home()


def test_wrapper_nvcc_on_path_does_not_mislead(tmp_path, monkeypatch):
    # A shell script named nvcc in <prefix>/bin that execs the real compiler: torch's own
    # guess would be <prefix>, which has no CUDA headers. No fallback directories, so
    # only asking the wrapper (nvcc --dryrun) can find the toolkit.
    setup = load_setup()
    home = real_toolkit(setup)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {home}/bin/nvcc "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(shutil.which('sh'))}")
    assert setup.find_cuda_home(fallback_dirs=[]) == home


def test_no_toolkit_anywhere_gives_none(tmp_path, monkeypatch):
    setup = load_setup()
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert setup.find_cuda_home(fallback_dirs=[str(tmp_path)]) is None


def test_build_info_records_the_torch_version(tmp_path):
    setup = load_setup()
    path = tmp_path / "_build_info.py"
    setup.write_build_info("2.99.0+cu999", path=str(path))
    namespace = {}
    exec(path.read_text(), namespace)
    assert namespace["TORCH_VERSION"] == "2.99.0+cu999"


def test_mismatched_torch_is_a_clear_import_error():
    # An extension built against another torch: `import alexnet_cuda` must name both
    # versions and the command that fixes it, before loading the binary (which would fail
    # with an undefined symbol, or load and misbehave).
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys, types
        fake = types.ModuleType("alexnet_cuda._build_info")
        fake.TORCH_VERSION = "2.0.0+built"
        sys.modules["alexnet_cuda._build_info"] = fake
        import torch
        try:
            import alexnet_cuda
        except ImportError as e:
            print("IMPORT ERROR:", e)
            print("RUNNING:", torch.__version__)
        else:
            print("imported")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    running = out.split("RUNNING:")[-1].strip()
    assert "IMPORT ERROR: alexnet_cuda was compiled against torch 2.0.0+built" in out, out
    assert f"but torch {running} is installed" in out
    assert "pip install --no-build-isolation --force-reinstall --no-deps ." in out


def test_host_code_has_no_debug_information_unless_cflags_ask():
    # Python's CFLAGS (first on the compile command) hold -g; -g0 after them drops it.
    setup = load_setup()
    assert setup.host_flags(environ={})[-1] == "-g0"
    assert setup.host_flags(environ={"CFLAGS": "-O2 -g0"})[-1] == "-g0"
    assert "-g0" not in setup.host_flags(environ={"CFLAGS": "-fsanitize=address -g"})


def test_installed_library_has_no_debug_sections():
    """What keeps the install small: the operator library carries no host DWARF."""
    import alexnet_cuda

    sections = binutils_output("readelf", "-S", "-W", alexnet_cuda.library_path())
    assert ".text" in sections and ".debug_info" not in sections


def test_cuda_13_fatbins_are_compressed_for_size():
    # CUDA 13 drivers (580+, which torch's CUDA 13 builds need) read --compress-mode=size;
    # older toolkits may not have the option, and their drivers may not read it.
    setup = load_setup()
    assert setup.fatbin_flags("13.0") == ["--compress-mode=size"]
    assert setup.fatbin_flags("12.8") == [] and setup.fatbin_flags(None) == []
