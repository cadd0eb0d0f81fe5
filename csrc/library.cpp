// The alexnet_cuda operator library.
//
// Every op lives in its own folder under csrc/ (csrc/<op>/): a header with the math
// shared by the CPU and CUDA kernels, <op>_cpu.cpp (CPU kernels and the schema
// definitions, TORCH_LIBRARY_FRAGMENT), <op>_cuda.cu (CUDA kernels,
// TORCH_LIBRARY_IMPL(alexnet_cuda, CUDA)), <op>_autograd.cpp (autograd) and <op>.cpp (the
// public op: argument checks, then the kernels' op). This file only creates the
// namespaces; python_module.cpp is the Python module that loads the library, and the
// Python side (alexnet_cuda/ops/) adds the fake (meta) kernels.
#include <torch/library.h>

// Schemas are defined next to their kernels, with TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(alexnet_cuda, m) {}

// Private test ops: the CUDA kernels' per-item code run on the CPU, so that CI checks it
// without a GPU (max_pool2d_cuda_items_cpu.cpp, relu_lrn_max_pool2d_cpu.cpp). Production
// ops never call them; the tests do (tests/conftest.py).
TORCH_LIBRARY(alexnet_cuda_test, m) {}
