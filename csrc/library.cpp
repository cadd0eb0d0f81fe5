// The alexnet_cuda operator library.
//
// Every op lives in its own folder under csrc/ (csrc/<op>/): a header with the math
// shared by the CPU and CUDA kernels, <op>_cpu.cpp (CPU kernels and the schema
// definitions, TORCH_LIBRARY_FRAGMENT), <op>_cuda.cu (CUDA kernels,
// TORCH_LIBRARY_IMPL(alexnet_cuda, CUDA)), <op>_autograd.cpp (autograd) and <op>.cpp (the
// public op: argument checks, then the kernels' op). This file only creates the
// namespace; python_module.cpp is the Python module that loads the library, and the
// Python side (alexnet_cuda/ops/) adds the fake (meta) kernels.
#include <torch/library.h>

#include "cpu_test_paths.h"

namespace alexnet_cuda {

CpuTestPaths& cpu_test_paths() {
  static CpuTestPaths paths;
  return paths;
}

}  // namespace alexnet_cuda

TORCH_LIBRARY(alexnet_cuda, m) {
  // Schemas are defined next to their kernels, with TORCH_LIBRARY_FRAGMENT. This one is
  // private, for the tests (cpu_test_paths.h); it takes no tensor, so it has one kernel
  // for every dispatch key.
  m.def("_set_cpu_test_paths(bool sweep, bool gather) -> ()", [](bool sweep, bool gather) {
    alexnet_cuda::cpu_test_paths().sweep.store(sweep, std::memory_order_relaxed);
    alexnet_cuda::cpu_test_paths().gather.store(gather, std::memory_order_relaxed);
  });
}
