// The alexnet_cuda operator library.
//
// Every op lives in its own folder under csrc/ (csrc/<op>/): a header with the math
// shared by the CPU and CUDA kernels and the op's descriptors (name, schema, C++
// signature: descriptor.h), <op>.cpp (the public op: argument checks, the schema
// definitions and the Meta kernels), <op>_cpu.cpp (CPU kernels), <op>_cuda.cu (CUDA
// kernels) and <op>_autograd.cpp (autograd). This file only creates the namespaces;
// python_module.cpp is the Python module that loads the library.
#include <torch/library.h>

// Schemas are defined in csrc/<op>/<op>.cpp, with TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(alexnet_cuda, m) {}

// Private test ops: the CUDA kernels' per-item code run on the CPU, so that CI checks it
// without a GPU (max_pool2d_cuda_items_cpu.cpp, relu_lrn_max_pool2d_cpu.cpp). Production
// ops never call them; the tests do (tests/conftest.py).
TORCH_LIBRARY(alexnet_cuda_test, m) {}
