// The extension's Python module, alexnet_cuda._C. Importing it runs the ops' static
// registrations (TORCH_LIBRARY in library.cpp and csrc/<op>/); it also holds native
// bindings of the three public ops, which alexnet_cuda/ops/ calls in eager mode.
//
// Why native bindings: a call through torch.ops.alexnet_cuda.<op> matches every Python
// argument against the schema and converts it to an IValue, about 3 us per call on our
// CPU machine, more than all of F.max_pool2d (2.6 us; PyTorch's own
// torch.ops.aten.max_pool2d costs 5.4 us where torch.max_pool2d costs 2.3). These
// METH_FASTCALL functions read arguments the Python side has already normalized (an exact
// torch.Tensor, [h, w] lists, ints, floats, bools), call the C++ function that is also
// the op's CompositeImplicitAutograd kernel (ops.h: same checks, same dispatch below),
// and raise the C++ argument errors as alexnet_cuda's own classes (checks.h). For
// anything else (a Tensor subclass or an active __torch_function__ mode, which torch.ops
// honours; a SymInt) they return NotImplemented and the Python side calls torch.ops.
#include <ATen/PythonTorchFunctionTLS.h>
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <variant>
#include <tuple>

#include "ops.h"

namespace alexnet_cuda {
namespace {

using Pair = std::array<int64_t, 2>;

// ---- readers: each returns false when the argument is not the plain kind it reads.

bool read(PyObject* o, const at::Tensor*& t) {
  if (!THPVariable_CheckExact(o) || at::impl::torch_function_mode_enabled()) return false;
  t = &THPVariable_Unpack(o);
  return true;
}

bool read(PyObject* o, int64_t& v) {
  if (!PyLong_CheckExact(o)) return false;
  int overflow = 0;
  v = PyLong_AsLongLongAndOverflow(o, &overflow);
  return overflow == 0;
}

bool read(PyObject* o, double& v) {
  if (!PyFloat_CheckExact(o)) return false;
  v = PyFloat_AS_DOUBLE(o);
  return true;
}

bool read(PyObject* o, bool& v) {
  if (o != Py_True && o != Py_False) return false;
  v = o == Py_True;
  return true;
}

bool read(PyObject* o, Pair& v) {
  return PyList_CheckExact(o) && PyList_GET_SIZE(o) == 2 && read(PyList_GET_ITEM(o, 0), v[0]) &&
         read(PyList_GET_ITEM(o, 1), v[1]);
}

// Reads args[0..n) into `out`'s members, in order; false if any is not plain.
template <typename... T>
bool read_all(PyObject* const* args, Py_ssize_t nargs, std::tuple<T...>& out) {
  if (nargs != static_cast<Py_ssize_t>(sizeof...(T))) return false;
  return std::apply([&](auto&... v) {
    Py_ssize_t i = 0;
    return (read(args[i++], v) && ...);
  }, out);
}

// ---- results and errors.

PyObject* wrap(at::Tensor t) { return THPVariable_Wrap(std::move(t)); }

PyObject* wrap(std::tuple<at::Tensor, at::Tensor> t) {
  PyObject* out = PyTuple_New(2);
  if (!out) return nullptr;
  PyTuple_SET_ITEM(out, 0, wrap(std::move(std::get<0>(t))));
  PyTuple_SET_ITEM(out, 1, wrap(std::move(std::get<1>(t))));
  return out;
}

PyObject* wrap(std::monostate) { Py_RETURN_NONE; }

// Sets alexnet_cuda.ops._args.<name> (ArgumentError or DtypeError) with e's message.
PyObject* raise(const char* name, const c10::Error& e) {
  PyObject* module = PyImport_ImportModule("alexnet_cuda.ops._args");
  if (!module) return nullptr;
  PyObject* cls = PyObject_GetAttrString(module, name);
  Py_DECREF(module);
  if (!cls) return nullptr;
  PyErr_SetString(cls, e.what_without_backtrace());
  Py_DECREF(cls);
  return nullptr;
}

// The GIL released while C++ runs, as PyTorch's own bindings do.
struct ReleaseGil {
  PyThreadState* state = PyEval_SaveThread();
  ~ReleaseGil() { PyEval_RestoreThread(state); }
};

// Runs fn() without the GIL and wraps its result; argument errors become alexnet_cuda's
// classes, every other error what PyTorch's bindings raise for it.
template <typename Fn>
PyObject* run(Fn fn) {
  HANDLE_TH_ERRORS
  try {
    auto result = [&] {
      ReleaseGil release;
      return fn();
    }();
    return wrap(std::move(result));
  } catch (const c10::ValueError& e) {
    return raise("ArgumentError", e);
  } catch (const c10::TypeError& e) {
    return raise("DtypeError", e);
  }
  END_HANDLE_TH_ERRORS
}

// ---- the bindings: the ops' arguments in ops.h's order.

PyObject* local_response_norm_native(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  std::tuple<const at::Tensor*, int64_t, double, double, double, bool> a;
  if (!read_all(args, nargs, a)) Py_RETURN_NOTIMPLEMENTED;
  return run([&] { return std::apply([](auto input, auto... rest) { return lrn::local_response_norm(*input, rest...); }, a); });
}

PyObject* max_pool2d_native(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  std::tuple<const at::Tensor*, Pair, Pair, Pair, Pair, bool, bool> a;
  if (!read_all(args, nargs, a)) Py_RETURN_NOTIMPLEMENTED;
  return run([&] { return std::apply([](auto input, auto... rest) { return max_pool2d::max_pool2d(*input, rest...); }, a); });
}

PyObject* relu_lrn_max_pool2d_native(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  std::tuple<const at::Tensor*, int64_t, double, double, double, Pair, Pair, int64_t, bool> a;
  if (!read_all(args, nargs, a)) Py_RETURN_NOTIMPLEMENTED;
  return run([&] { return std::apply([](auto input, auto... rest) { return relu_lrn_max_pool2d::relu_lrn_max_pool2d(*input, rest...); }, a); });
}

PyObject* check_relu_lrn_max_pool2d_args_native(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  std::tuple<int64_t, Pair, Pair, int64_t> a;
  if (!read_all(args, nargs, a)) Py_RETURN_NOTIMPLEMENTED;
  return run([&] {
    std::apply([](auto... v) { relu_lrn_max_pool2d::check_args(v...); }, a);
    return std::monostate{};
  });
}

#define ALEXNET_METHOD(name) \
  { #name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(name##_native)), METH_FASTCALL, nullptr }

PyMethodDef methods[] = {
    ALEXNET_METHOD(local_response_norm),
    ALEXNET_METHOD(max_pool2d),
    ALEXNET_METHOD(relu_lrn_max_pool2d),
    ALEXNET_METHOD(check_relu_lrn_max_pool2d_args),
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace
}  // namespace alexnet_cuda

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, alexnet_cuda::methods};
  return PyModule_Create(&module_def);
}
