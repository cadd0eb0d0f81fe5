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
// honours; a SymInt) they return NotImplemented and the Python side calls torch.ops
// through `call_op`, which raises the errors as the same classes: the classes are this
// module's (ArgumentError, DtypeError; alexnet_cuda.ops._args exports them), and the
// one place that turns the C++ checks' errors into them is here.
#include <ATen/PythonTorchFunctionTLS.h>
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <tuple>
#include <type_traits>
#include <variant>

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

// What a C++ parameter type is read into: a tensor by pointer, an int[2] as a Pair,
// a scalar as itself.
template <typename T>
struct Held {
  using type = std::decay_t<T>;
};
template <>
struct Held<const at::Tensor&> {
  using type = const at::Tensor*;
};
template <>
struct Held<at::IntArrayRef> {
  using type = Pair;
};

const at::Tensor& pass(const at::Tensor* t) { return *t; }
at::IntArrayRef pass(const Pair& v) { return v; }
template <typename T>
T pass(T v) {
  return v;
}

// Reads args[0..n) into `out`'s members, in order; false if any is not plain.
template <typename... T>
bool read_all(PyObject* const* args, Py_ssize_t nargs, std::tuple<T...>& out) {
  if (nargs != static_cast<Py_ssize_t>(sizeof...(T))) return false;
  return std::apply(
      [&](auto&... v) {
        Py_ssize_t i = 0;
        return (read(args[i++], v) && ...);
      },
      out);
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

// alexnet_cuda's error classes (alexnet_cuda.ops._args documents them), created with the module.
PyObject* argument_error = nullptr;  // ArgumentError(ValueError, RuntimeError)
PyObject* dtype_error = nullptr;     // DtypeError(TypeError, NotImplementedError)

PyObject* raise(PyObject* cls, const char* message) {
  PyErr_SetString(cls, message);
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
      if constexpr (std::is_void_v<decltype(fn())>) {
        fn();
        return std::monostate{};
      } else {
        return fn();
      }
    }();
    return wrap(std::move(result));
  } catch (const c10::ValueError& e) {
    return raise(argument_error, e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    return raise(dtype_error, e.what_without_backtrace());
  }
  END_HANDLE_TH_ERRORS
}

// ---- the bindings: one per function of ops.h, its arguments read as that function's
// parameter types say.

template <auto fn>
struct Binding;

template <typename R, typename... A, R (*fn)(A...)>
struct Binding<fn> {
  static PyObject* call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    std::tuple<typename Held<A>::type...> held;
    if (!read_all(args, nargs, held)) Py_RETURN_NOTIMPLEMENTED;
    return run([&] { return std::apply([](const auto&... v) { return fn(pass(v)...); }, held); });
  }
};

// call_op(op, *args): op(*args) (a torch.ops overload: the path for what the bindings
// decline), its C++ checks' errors raised as the bindings raise them. torch.ops turns
// them into exactly ValueError and TypeError.
PyObject* call_op(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1) return raise(PyExc_TypeError, "call_op: expected the op to call");
  PyObject* out = PyObject_Vectorcall(args[0], args + 1, nargs - 1, nullptr);
  if (out) return out;
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyObject* cls = type == PyExc_ValueError ? argument_error : type == PyExc_TypeError ? dtype_error : nullptr;
  if (!cls) {
    PyErr_Restore(type, value, traceback);
    return nullptr;
  }
  PyErr_NormalizeException(&type, &value, &traceback);
  PyObject* message = PyObject_Str(value);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
  if (!message) return nullptr;
  PyErr_SetObject(cls, message);
  Py_DECREF(message);
  return nullptr;
}

template <typename Fn>
constexpr PyCFunction fastcall(Fn* f) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

#define ALEXNET_BINDING(name, fn) {name, fastcall(&Binding<&fn>::call), METH_FASTCALL, nullptr}

PyMethodDef methods[] = {
    ALEXNET_BINDING("local_response_norm", lrn::local_response_norm),
    ALEXNET_BINDING("max_pool2d", max_pool2d::pooled<&max_pool2d::max_pool2d>),
    ALEXNET_BINDING("relu_lrn_max_pool2d", relu_lrn_max_pool2d::relu_lrn_max_pool2d),
    ALEXNET_BINDING("check_relu_lrn_max_pool2d_args", relu_lrn_max_pool2d::check_args),
    {"call_op", fastcall(&call_op), METH_FASTCALL, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

// A new exception class named alexnet_cuda.ops._args.<name>, deriving from both bases.
PyObject* error_class(const char* name, const char* doc, PyObject* base1, PyObject* base2) {
  PyObject* bases = PyTuple_Pack(2, base1, base2);
  if (!bases) return nullptr;
  PyObject* cls = PyErr_NewExceptionWithDoc(name, doc, bases, nullptr);
  Py_DECREF(bases);
  return cls;
}

bool add(PyObject* module, const char* name, PyObject* value) {
  if (!value) return false;
  Py_INCREF(value);
  if (PyModule_AddObject(module, name, value) < 0) {
    Py_DECREF(value);
    return false;
  }
  return true;
}

}  // namespace
}  // namespace alexnet_cuda

extern "C" PyObject* PyInit__C(void) {
  using namespace alexnet_cuda;
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  if (!module) return nullptr;
  argument_error = error_class("alexnet_cuda.ops._args.ArgumentError",
                               "A bad argument value: a ValueError, and the RuntimeError PyTorch raises for it.",
                               PyExc_ValueError, PyExc_RuntimeError);
  dtype_error = error_class("alexnet_cuda.ops._args.DtypeError",
                            "A dtype without a kernel: a TypeError, and the NotImplementedError PyTorch raises.",
                            PyExc_TypeError, PyExc_NotImplementedError);
  if (!add(module, "ArgumentError", argument_error) || !add(module, "DtypeError", dtype_error) ||
      PyModule_AddIntConstant(module, "MAX_WINDOW_TAPS", max_pool2d::kMaxLocalArgmaxWindow) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
