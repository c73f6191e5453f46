"""shmdict: a synchronized dict in shared memory for the processes of one host.

    import shmdict
    d = shmdict.Dict("orders")          # attach or create; Dict() picks a random name
    d["apples"] = 3                     # visible to every process that opens "orders"
    with d.lock:                        # cross-process read-modify-write
        d["apples"] += 1

    r = shmdict.connect("unix:/run/shmdict/bridge.sock", "orders")  # through shmdict-bridge

`shmdict.ultradict.UltraDict` runs UltraDict programs on the same engine.
"""

from ._core import (
    AlreadyExists,
    Closed,
    DataLoss,
    Error,
    FailedPrecondition,
    InvalidArgument,
    LockHeld,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Timeout,
    Unavailable,
    WrongType,
)
from ._core import inspect as _inspect
from ._core import list_names as _list_names
from ._core import unlink_by_name as _unlink_by_name
from ._dict import ABSENT, Change, Dict, Lock, RemoteDict, connect

__all__ = [
    "ABSENT", "AlreadyExists", "Change", "Closed", "DataLoss", "Dict", "Error",
    "FailedPrecondition", "InvalidArgument", "Lock", "LockHeld", "NotFound", "OutOfRange",
    "PermissionDenied", "RemoteDict", "ResourceExhausted", "Timeout", "Unavailable",
    "WrongType",
    "connect", "inspect", "list_names", "unlink_by_name",
]


def unlink_by_name(name: str, ignore_errors: bool = False) -> None:
    """Removes every segment of the dict `name` (and its nested children). Processes that have
    it open keep working on their mappings. NotFound (a FileNotFoundError) if nothing was there,
    unless ignore_errors."""
    try:
        _unlink_by_name(name)
    except Error:
        if not ignore_errors:
            raise


def inspect(name: str) -> dict:
    """The status of the dict `name` without attaching to it; NotFound if missing."""
    return _inspect(name)


def list_names() -> list:
    """The names of the dicts on this host."""
    return _list_names()
