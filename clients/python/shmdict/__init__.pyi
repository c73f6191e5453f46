# Type stubs for the shmdict package (PEP 561: py.typed is beside them).
from typing import Any

from ._core import (
    AlreadyExists as AlreadyExists,
    Closed as Closed,
    DataLoss as DataLoss,
    Error as Error,
    FailedPrecondition as FailedPrecondition,
    InvalidArgument as InvalidArgument,
    LockHeld as LockHeld,
    NotFound as NotFound,
    OutOfRange as OutOfRange,
    PermissionDenied as PermissionDenied,
    ResourceExhausted as ResourceExhausted,
    Timeout as Timeout,
    Unavailable as Unavailable,
    WrongType as WrongType,
)
from ._dict import (
    ABSENT as ABSENT,
    Change as Change,
    Dict as Dict,
    Lock as Lock,
    RemoteDict as RemoteDict,
    connect as connect,
)

__version__: str

def unlink_by_name(name: str, ignore_errors: bool = False) -> None: ...
def inspect(name: str) -> dict[str, Any]: ...
def list_names() -> list[str]: ...
