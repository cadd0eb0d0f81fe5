// Function multi-versioning for the CPU kernels' hot loops.
//
// The extension is compiled for the baseline x86-64 ISA (SSE2), so that one build runs on
// every x86-64 CPU; PyTorch's own CPU kernels pick AVX2 or AVX-512 at run time. Marking a
// hot function ALEXNET_CPU_CLONES makes the compiler emit it three times (AVX-512, AVX2 and
// baseline) plus a resolver that the dynamic loader runs once (an ifunc) to pick the best
// clone for the CPU at hand: GCC's and Clang's `target_clones`. `flatten` inlines
// everything the function calls (pool_window, the lane loops, ...) into each clone, so the
// whole loop nest is compiled for that clone's ISA, not just its outer shell.
//
// Only for code whose results do not depend on the ISA: comparisons, selects, copies and
// integer arithmetic (the max-pool forward). No -ffast-math is involved, so the vector
// clones compute what the scalar one does, element for element.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(ALEXNET_CUDA_NO_CPU_CLONES) && !defined(__CUDACC__)
#define ALEXNET_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define ALEXNET_CPU_CLONES
#endif
