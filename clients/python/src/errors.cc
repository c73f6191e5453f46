#include "errors.h"

#include <string>

namespace shmdict::python {

PyObject* g_error = nullptr;
PyObject* g_closed = nullptr;

namespace {

struct ErrorClass {
  StatusCode code;
  const char* name;
  PyObject* builtin;
  PyObject* cls;
};
ErrorClass g_errors[] = {
    {StatusCode::kInvalidArgument, "InvalidArgument", PyExc_ValueError, nullptr},
    {StatusCode::kNotFound, "NotFound", PyExc_FileNotFoundError, nullptr},
    {StatusCode::kAlreadyExists, "AlreadyExists", PyExc_FileExistsError, nullptr},
    {StatusCode::kPermissionDenied, "PermissionDenied", PyExc_PermissionError, nullptr},
    {StatusCode::kDeadlineExceeded, "Timeout", PyExc_TimeoutError, nullptr},
    {StatusCode::kUnavailable, "LockHeld", PyExc_BlockingIOError, nullptr},
    {StatusCode::kFailedPrecondition, "FailedPrecondition", nullptr, nullptr},
    {StatusCode::kOutOfRange, "OutOfRange", PyExc_OverflowError, nullptr},
    {StatusCode::kResourceExhausted, "ResourceExhausted", PyExc_MemoryError, nullptr},
    {StatusCode::kDataLoss, "DataLoss", nullptr, nullptr},
};
// shmdict.Unavailable: a remote dict's UNAVAILABLE (the bridge cannot be reached), a
// ConnectionError.
PyObject* g_unavailable = nullptr;
// shmdict.WrongType: a FailedPrecondition that is a TypeError, for the calls whose only
// precondition is the type of the stored value (increment, nested).
PyObject* g_wrong_type = nullptr;

}  // namespace

namespace {

// A bridge refuses pickled values unless its operator allowed them (its --allow-pickle: any
// writer could then run code in every Python reader), and says so in its message. This client
// pickles the values it cannot store natively, so its user needs to hear what to change.
std::string RemoteMessage(const Status& status) {
  const bool refused = status.code() == StatusCode::kInvalidArgument ||
                       status.code() == StatusCode::kPermissionDenied;
  if (!refused || status.message().find("--allow-pickle") == std::string::npos) {
    return status.message();
  }
  return "the bridge refused a pickled value: this client pickles values that are not None, "
         "bool, int, float, str, bytes or exact JSON; store such a type, give connect() "
         "another serializer (serializer=..., serializer_tag=128..255), or have the bridge's "
         "operator start it with --allow-pickle (any writer can then run code in every Python "
         "reader) [bridge: " +
         status.message() + "]";
}

}  // namespace

void SetStatusError(const Status& status, ErrorContext context) {
  PyObject* cls = g_error;
  for (const ErrorClass& e : g_errors) {
    if (e.code == status.code()) cls = e.cls;
  }
  if (context.type_check && status.code() == StatusCode::kFailedPrecondition) cls = g_wrong_type;
  if (context.remote && status.code() == StatusCode::kUnavailable) cls = g_unavailable;
  const std::string message = context.remote ? RemoteMessage(status) : status.message();
  PyObject* exc = PyObject_CallFunction(cls, "s", message.c_str());
  if (exc == nullptr) return;
  PyObject* code = PyUnicode_FromStringAndSize(StatusCodeName(status.code()).data(),
                                               StatusCodeName(status.code()).size());
  if (code != nullptr) {
    PyObject_SetAttrString(exc, "code", code);
    Py_DECREF(code);
  }
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
}

void ThrowStatus(const Status& status, ErrorContext context) {
  SetStatusError(status, context);
  throw py::error_already_set();
}

void DefineErrors(py::module_& m) {
  g_error = PyErr_NewExceptionWithDoc("shmdict.Error", "Base of every shmdict error.",
                                      PyExc_Exception, nullptr);
  if (g_error == nullptr) throw py::error_already_set();
  m.add_object("Error", py::handle(g_error));
  for (ErrorClass& e : g_errors) {
    py::tuple bases = e.builtin != nullptr
                          ? py::make_tuple(py::handle(g_error), py::handle(e.builtin))
                          : py::make_tuple(py::handle(g_error));
    const std::string qualified = std::string("shmdict.") + e.name;
    e.cls = PyErr_NewException(qualified.c_str(), bases.ptr(), nullptr);
    if (e.cls == nullptr) throw py::error_already_set();
    m.add_object(e.name, py::handle(e.cls));
  }
  g_closed = PyErr_NewException(
      "shmdict.Closed", py::make_tuple(py::handle(g_error), py::handle(PyExc_ValueError)).ptr(),
      nullptr);
  if (g_closed == nullptr) throw py::error_already_set();
  m.add_object("Closed", py::handle(g_closed));
  PyObject* failed_precondition = nullptr;
  for (const ErrorClass& e : g_errors) {
    if (e.code == StatusCode::kFailedPrecondition) failed_precondition = e.cls;
  }
  g_wrong_type = PyErr_NewException(
      "shmdict.WrongType",
      py::make_tuple(py::handle(failed_precondition), py::handle(PyExc_TypeError)).ptr(), nullptr);
  if (g_wrong_type == nullptr) throw py::error_already_set();
  m.add_object("WrongType", py::handle(g_wrong_type));
  g_unavailable = PyErr_NewException(
      "shmdict.Unavailable",
      py::make_tuple(py::handle(g_error), py::handle(PyExc_ConnectionError)).ptr(), nullptr);
  if (g_unavailable == nullptr) throw py::error_already_set();
  m.add_object("Unavailable", py::handle(g_unavailable));
}

}  // namespace shmdict::python
