"""help() and inspect show the API as written: every public method and property of the package's
classes (the Python ones and the C types under them) has its own docstring, and the native
methods carry real signatures (CPython's text-signature form) instead of pybind11's
`(self: handle, key: handle)`."""

import inspect
import pydoc

import pytest

import shmdict
from shmdict import _core

CLASSES = [shmdict.Dict, shmdict.RemoteDict, shmdict.Lock, shmdict.Change, _core.DictBase,
           _core.LockBase]


def own_public_members():
    """(class, name, object) for each public member a shmdict class defines (inherited ones
    from collections.abc and object keep their own documentation)."""
    for cls in CLASSES:
        for klass in cls.__mro__:
            if not (klass.__module__ or "").startswith("shmdict"):
                continue
            for name, member in vars(klass).items():
                if not name.startswith("_") or name in ("__enter__", "__exit__"):
                    yield klass, name, member


@pytest.mark.parametrize("klass,name,member", list(own_public_members()),
                         ids=lambda v: getattr(v, "__name__", v) if isinstance(v, (type, str))
                         else "")
def test_every_public_member_has_a_docstring(klass, name, member):
    if isinstance(member, property):
        member = member.fget
    if not callable(member) and not inspect.isfunction(member):
        return  # a data attribute (a NamedTuple field's default, ...)
    doc = member.__doc__  # not inspect.getdoc, which would fall back to a base class's
    assert doc and len(doc) > 15, f"{klass.__name__}.{name} has no real docstring: {doc!r}"


@pytest.mark.parametrize("name,params", [
    ("get", ["key", "default"]), ("setdefault", ["key", "default"]),
    ("increment", ["key", "delta"]), ("clear", []), ("popitem", [])])
def test_native_methods_show_their_signature(name, params):
    with shmdict.Dict() as d:
        signature = inspect.signature(getattr(d, name))
    assert list(signature.parameters) == params
    assert "handle" not in str(signature)


def test_help_shows_no_stray_comments_and_states_the_write_timeout():
    text = pydoc.render_doc(shmdict.Dict, renderer=pydoc.plaintext)
    assert "# ----" not in text and "self: handle" not in text
    assert "shmdict.Timeout" in text and "lock_timeout" in text
    assert "10 s by default" in inspect.getdoc(_core.DictBase)
