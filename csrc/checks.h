// Argument checks shared by the ops' entry points (csrc/<op>/<op>.cpp).
//
// Each public op (alexnet_cuda::local_response_norm, max_pool2d, relu_lrn_max_pool2d)
// checks its arguments in C++ before calling its kernels' op, with messages that name
// the argument and print values as Python does (torch.float32, (1, 8, 7, 7)), since
// Python users read them. The error classes:
//   TORCH_CHECK_VALUE  a bad value       -> alexnet_cuda.ops.ArgumentError (ValueError
//                                           and RuntimeError) from alexnet_cuda's
//                                           functions; ValueError through torch.ops
//   TORCH_CHECK_TYPE   a dtype without   -> alexnet_cuda.ops.DtypeError (TypeError and
//                      a kernel             NotImplementedError); TypeError through torch.ops
// (python_module.cpp re-raises them as the two classes.) Python-level types (a str for
// a size) are read before C++ is reached, by alexnet_cuda/ops/_args.py.
//
// Sizes are c10::SymInt: under torch.compile these checks run on fake tensors whose
// sizes may be symbolic, and a comparison then records a guard, as PyTorch's own do.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <sstream>
#include <string>

namespace alexnet_cuda {

// The kernels index window sizes, strides and channels with 32-bit ints.
constexpr int64_t kMaxInt32 = (int64_t(1) << 31) - 1;

// "torch.float32": a dtype as Python prints it.
inline std::string python_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    case at::kComplexHalf: return "torch.complex32";
    default: return std::string("torch.") + c10::toString(t);
  }
}

// "(1, 8, 7, 7)", "(5,)", "()": a shape or int pair as a Python tuple.
template <typename Ints>
std::string python_tuple(const Ints& v) {
  std::ostringstream s;
  s << '(';
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << (v.size() == 1 ? ",)" : ")");
  return s.str();
}

// Python's n // d for d > 0 (C++'s / truncates toward zero).
inline c10::SymInt floor_div(const c10::SymInt& n, int64_t d) { return n >= 0 ? n / d : -((-n + (d - 1)) / d); }

// Whether the extension was compiled with CUDA kernels (asked of the dispatcher once).
inline bool has_cuda_kernels() {
  static const bool has = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("alexnet_cuda::lrn_forward", "")
                              .hasKernelForDispatchKey(c10::DispatchKey::CUDA);
  return has;
}

// A clear error when alexnet_cuda has no kernel for `t`'s device (rather than the
// dispatcher's "could not run ... with arguments from the 'X' backend").
inline void check_device(const at::Tensor& t, const char* name, const char* op) {
  const auto type = t.device().type();
  if (type == c10::DeviceType::CPU || type == c10::DeviceType::Meta) return;
  if (type == c10::DeviceType::CUDA) {
    TORCH_CHECK(has_cuda_kernels(), op, ": ", name, " is on ", t.device(),
                " but alexnet_cuda was built without its CUDA kernels (no CUDA toolkit or a CPU-only "
                "torch at build time). Rebuild with CUDA_HOME set: pip install --no-build-isolation .");
    return;
  }
  TORCH_CHECK_NOT_IMPLEMENTED(false, op, ": ", name, " is on device '", c10::DeviceTypeName(type, /*lower_case=*/true),
                              "'; alexnet_cuda has kernels for cpu and cuda only");
}

// The op's input: a floating-point tensor (TypeError naming its dtype otherwise).
inline void check_floating(const at::Tensor& input, const char* op) {
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), op, ": input must be a floating-point tensor, got dtype ",
                   python_dtype(input.scalar_type()));
}

}  // namespace alexnet_cuda
