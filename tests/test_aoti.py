"""AOTInductor: a model with our layers, compiled into a package, runs in a fresh process
that never imports alexnet_cuda: from Python (torch.ops.load_library of the operator
library) and from C++ (examples/aoti/run_package.cpp). CPU; one small AlexNet, compiled
once for the module (the compile is most of the time)."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

import alexnet_cuda
from _binutils import binutils_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "aoti")

# Loads and runs the package with torch alone; argv: library, package, input, output.
RUN_IN_PYTHON = """
import sys
import torch
library, package, inputs, outputs = sys.argv[1:]
torch.ops.load_library(library)
runner = torch._inductor.aoti_load_package(package)
y = runner(torch.load(inputs))
assert "alexnet_cuda" not in sys.modules
torch.save(y, outputs)
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """(package path, input, eager output) of a small fused AlexNet."""
    torch.manual_seed(0)
    model = alexnet_cuda.models.AlexNet(num_classes=10, width=0.0625, dropout=0.0).eval()
    for p in model.parameters():  # N(0, 0.01) weights give near-constant logits: test real values
        nn.init.normal_(p, 0.0, 0.1)
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        expected = model(x)
    folder = tmp_path_factory.mktemp("aoti")
    program = torch.export.export(model, (x,))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "alexnet.pt2"))
    return path, x, expected


def test_library_has_no_python_dependency():
    """What lets a C++ program load the ops: no libpython/libtorch_python symbol needed."""
    undefined = binutils_output("nm", "-D", "--undefined-only", alexnet_cuda.library_path())
    python_symbols = [line for line in undefined.splitlines() if " Py" in line or " _Py" in line or "THP" in line]
    assert not python_symbols, python_symbols[:10]


def test_package_runs_from_python_without_alexnet_cuda(package, tmp_path):
    path, x, expected = package
    inputs, outputs = tmp_path / "x.pt", tmp_path / "y.pt"
    torch.save(x, inputs)
    proc = subprocess.run(
        [sys.executable, "-c", RUN_IN_PYTHON, alexnet_cuda.library_path(), path, str(inputs), str(outputs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(outputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_package_runs_from_cpp(package, tmp_path):
    path, x, expected = package
    cmake, compiler = shutil.which("cmake"), shutil.which("c++") or shutil.which("g++")
    if cmake is None or compiler is None:
        pytest.skip("the C++ example needs cmake and a C++ compiler; none found")
    if not os.path.isfile(os.path.join(EXAMPLE, "CMakeLists.txt")):
        pytest.skip("examples/aoti is not next to the tests (installed-package test run)")
    build = tmp_path / "build"
    torch_install = os.path.dirname(torch.__file__)
    for cmd in (
        [cmake, "-S", EXAMPLE, "-B", str(build), f"-DTORCH_INSTALL={torch_install}", "-DCMAKE_BUILD_TYPE=Release"],
        [cmake, "--build", str(build)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    inputs, outputs = tmp_path / "x.bin", tmp_path / "y.bin"
    x.numpy().tofile(inputs)
    proc = subprocess.run(
        [str(build / "run_package"), path, alexnet_cuda.library_path(), str(inputs), *map(str, x.shape), str(outputs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.from_file(str(outputs), size=expected.numel(), dtype=torch.float32).view(expected.shape)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
