// Op descriptors: each dispatcher op's name, schema and C++ signature, written once
// (csrc/ops.h), and what defines, registers and calls an op from its descriptor.
//
// A descriptor is a struct with
//   kName       the op's name in the alexnet_cuda namespace ("max_pool2d_forward");
//   kArguments  the rest of its schema: "(Tensor input, ...) -> Tensor";
//   Signature   the C++ function type the dispatcher calls its kernels with;
//   Kernel      (optional) the device kernels' type, where it differs from Signature:
//               a SymInt[] argument is an IntArrayRef for the CPU and CUDA kernels.
// define<Ops...> adds the schemas, impl<Ops...> registers one kernel for each op (a kernel
// of another type does not compile), call<Op> runs the op through the dispatcher.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>
#include <type_traits>
#include <utility>

namespace alexnet_cuda {

template <typename... Ops>
void define(torch::Library& m) {
  (m.def((std::string(Ops::kName) + Ops::kArguments).c_str()), ...);
}

template <typename Op, typename = void>
struct KernelOf {
  using type = typename Op::Signature;
};
template <typename Op>
struct KernelOf<Op, std::void_t<typename Op::Kernel>> {
  using type = typename Op::Kernel;
};

// CPU or CUDA kernels, one for each op named: impl<Forward, Backward>(m, &fwd, &bwd).
template <typename... Ops>
void impl(torch::Library& m, typename KernelOf<Ops>::type*... kernels) {
  (m.impl(Ops::kName, kernels), ...);
}

// Kernels that take their op's own signature: autograd, Meta, CompositeImplicitAutograd.
template <typename... Ops>
void impl_symbolic(torch::Library& m, typename Ops::Signature*... kernels) {
  (m.impl(Ops::kName, kernels), ...);
}

// The op's dispatcher handle, looked up once.
template <typename Op>
const c10::TypedOperatorHandle<typename Op::Signature>& handle() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow((std::string("alexnet_cuda::") + Op::kName).c_str(), "")
                             .template typed<typename Op::Signature>();
  return op;
}

// op(args...) through the dispatcher, from the key below the caller's.
template <typename Op, typename... Args>
decltype(auto) call(Args&&... args) {
  return handle<Op>().call(std::forward<Args>(args)...);
}

}  // namespace alexnet_cuda
