"""Run a binutils tool (nm, readelf) on a file, skipping the test where it is not installed."""

import shutil
import subprocess

import pytest


def binutils_output(tool, *args):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} (binutils) not found")
    return subprocess.run([path, *args], capture_output=True, text=True, check=True).stdout
