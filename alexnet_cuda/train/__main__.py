"""python -m alexnet_cuda.train --help"""

from __future__ import annotations

import sys

import torch

from .cli import main

if __name__ == "__main__":
    # The paper's N(0, 0.01) init drives CPU gradients into denormals within a few steps,
    # which x86 processes many times slower; flushing them to zero costs nothing in
    # accuracy. Process-wide, so here (the process belongs to the CLI) and not in main(),
    # which tests call in-process. No effect on GPUs.
    torch.set_flush_denormal(True)
    sys.exit(main())
