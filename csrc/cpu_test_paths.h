// CPU test paths: which CPU kernels run where two give the same result.
//
// The CPU has its own fast kernels, but CI has no GPU, so the tests also run the CUDA
// kernels' per-item code on the CPU (the "sweep" bodies of lrn_sweep.h and
// relu_lrn_max_pool2d_sweep.h, and max-pool's forward and gather backward items) to check its arithmetic
// and indexing. These flags choose those paths. They are process-wide, off by default,
// and set only through the private op alexnet_cuda::_set_cpu_test_paths, which the
// tests' fixtures call (tests/conftest.py): no environment variable is read.
#pragma once

#include <atomic>

namespace alexnet_cuda {

struct CpuTestPaths {
  std::atomic<bool> sweep{false};   // relu_lrn_max_pool2d: the sweep kernels before the native ones;
                                    // max_pool2d forward: the CUDA kernels' items
  std::atomic<bool> gather{false};  // max_pool2d backward: the CUDA kernels' gather items
};

CpuTestPaths& cpu_test_paths();  // defined in library.cpp

}  // namespace alexnet_cuda
