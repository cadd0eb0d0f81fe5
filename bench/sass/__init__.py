"""Static performance read of the CUDA kernels from their sm_90 SASS (no GPU needed).

    python -m bench.sass [--json FILE] [--compile] [--update] [--only OPS] [--warps N]

For every kernel instantiation AlexNet's shapes launch (LRN size 5, max-pool 3/2 and the
fused ReLU -> LRN -> max-pool stage with lrn_groups=2; forward and backward; fp32 and
bf16; NCHW and channels_last; (128,96,55,55) and (128,256,27,27)) the kernel's SASS is
run for whole warps (all 32 lanes, divergent paths one after another) sampled across the
launch, on the op's real tensors, and every stored element is checked against the
extension's CPU kernels. bench/SASS.md describes the method and its assumptions.

Modules: tools (cubins, symbols, SASS text), operands + semantics (the interpreter's
operand decoding and instruction rules), memory + warp (emulated global memory, the
warp scheduler), cases (per-op kernel parameters and launch), reference (real tensors
and the CPU results), analysis (a lane's path), measure (sampling, the time model,
budgets), report (table, command line).
"""

from .cases import all_cases
from .measure import FULL_RUN_WARPS, TEST_WARPS, verdicts
from .report import budget_key, budget_table, format_table, main, run_cases
from .tools import ToolMissing, occupancy

__all__ = [
    "all_cases",
    "FULL_RUN_WARPS",
    "TEST_WARPS",
    "verdicts",
    "budget_key",
    "budget_table",
    "format_table",
    "main",
    "run_cases",
    "ToolMissing",
    "occupancy",
]
