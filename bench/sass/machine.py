"""The machine model (H100 SXM) and the budgets every AlexNet record is held to."""

SMS = 132
SCHEDULERS_PER_SM = 4  # each issues one warp-instruction per clock: 128 lane-ops per clock per SM
MUFU_LANES_PER_CLOCK = 16  # per SM: a warp's MUFU instruction takes the pipe 2 clocks, 1/8 of the issue rate
CLOCK_HZ = 1.755e9
DRAM_BYTES_PER_S = 3.0e12  # measured copy bandwidth (bench/NOTES.md)
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32
REGS_PER_SM = 65536
SMEM_PER_SM = 233472  # 228 KiB
REG_ALLOC_UNIT = 8  # registers per thread are allocated in multiples of 8 (256 per warp)
THREADS = 256  # kThreads of every sweep / max-pool kernel (lrn_sweep.h, max_pool2d_cuda.cu)
WARP = 32

# Budgets: max(issue_ms x tail, mufu_ms) <= 0.7 x floor_ms, no spills, occupancy >= 50%,
# >= 32 KB of global loads in flight per SM.
BUDGET_TIME_OVER_FLOOR = 0.7
BUDGET_OCCUPANCY = 0.5
BUDGET_BYTES_IN_FLIGHT_PER_SM = 32 * 1024
