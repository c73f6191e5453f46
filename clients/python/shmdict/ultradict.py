"""A drop-in for UltraDict (github.com/ronny-rentner/UltraDict, main at 54f8ccc) on shmdict.

    from shmdict.ultradict import UltraDict     # instead of: from UltraDict import UltraDict

The constructor, the lock, the exceptions and the maintenance methods keep UltraDict's names and
signatures. Where UltraDict is unsafe this is safe instead; the deliberate differences:

- The lock is always shared between all processes (UltraDict's default lock is a
  multiprocessing.RLock that unrelated or spawned processes do not share). shared_lock is
  accepted and changes nothing; ParameterMismatch is never raised for it.
- A holder that died is recovered by the core (its death is seen through an open-file lock the
  kernel releases, never through a pid), not "stolen" by pid; steal_after_timeout and
  sleep_time are accepted and ignored, and `with d.lock:` waits for a live holder for as long as
  it holds the lock (Ctrl-C interrupts).
- buffer_size is a lower bound for the size of the change log, which is at least 1 MiB (and a
  power of two): UltraDict's 10 kB default would make shmdict build a snapshot every few hundred
  small writes (a build starts when half the log is used, an eighth once the dict is 8 logs
  big), about 25% more per write here.
  full_dump_size is accepted and ignored (snapshots get segments of their own size), so
  FullDumpMemoryFull is never raised. A value bigger than the buffer goes to its own segment,
  not through a full dump, so full_dump_counter does not move for it.
- recurse_register is accepted and ignored: nested dicts are named under their parent and are
  unlinked with it. Pass recurse=True in every process that assigns dicts (attaching processes
  still read nested dicts as UltraDicts without it). Assigning a dict is not atomic: the child
  is cleared and filled, then referenced.
- `data` is a read-only view of the handle's state (never a copy), which catches up with other
  processes' changes on access.
- An UltraDict is a collections.abc.MutableMapping, not a dict subclass, and it is unhashable.
- Writes, like `with d.lock:`, wait for another process's holder of the lock for as long as it
  holds it (UltraDict waits forever; shmdict.Dict's default lock_timeout is 10 s).
- Keys other than str, int, float and bytes are pickled; see shmdict.Dict for the encodings.
  Keys that equal an int or a str come back as that type: a bool, IntEnum or int-valued float
  key reads back as int, a str subclass (StrEnum, ...) as str.
- Names are shmdict's: [A-Za-z0-9_.-] (no '..'), at most 200 characters; '@' is reserved for the
  segments of nested dicts and snapshots. UltraDict accepts other names; these raise ValueError.
- MissingDependency is never raised: nothing beyond this package is needed.
"""

import pickle
import pprint
import time
from collections.abc import Mapping

from . import _core
from ._dict import Dict, Lock

# The smallest change log the drop-in creates (see the module documentation on buffer_size).
MIN_BUFFER_SIZE = 1 << 20


class Exceptions:
    """UltraDict.Exceptions: the same names, each also the matching shmdict exception."""

    CannotAttachSharedMemory = _core.NotFound
    AlreadyExists = _core.AlreadyExists
    AlreadyClosed = _core.Closed

    class CannotAcquireLock(_core.LockHeld):
        def __init__(self, *args, blocking_pid=0, timestamp=None):
            super().__init__(*args)
            self.blocking_pid = blocking_pid
            self.timestamp = timestamp or time.monotonic()

    class CannotAcquireLockTimeout(CannotAcquireLock, TimeoutError):
        def __init__(self, *args, time_passed=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.time_passed = time_passed

    class ParameterMismatch(_core.Error):
        """Kept for `except` clauses; never raised (see the module documentation)."""

    class FullDumpMemoryFull(_core.Error):
        """Kept for `except` clauses; never raised (see the module documentation)."""

    class MissingDependency(_core.Error):
        """Kept for `except` clauses; never raised (see the module documentation)."""


class UltraLock(Lock):
    """UltraDict's lock API on the shared robust lock: `with d.lock:`, `with d.lock(...)`,
    acquire(block, sleep_time, timeout, steal_after_timeout) and release()."""

    __slots__ = ()

    def __call__(self, block=True, timeout=None, sleep_time=None, steal_after_timeout=False):
        return UltraLock(self._dict_ref, block, timeout)

    def acquire(self, block=True, sleep_time=None, timeout=None, steal_after_timeout=False):
        """True once held; CannotAcquireLock (not blocking) or CannotAcquireLockTimeout naming
        the holder's pid when it cannot be taken."""
        d = self._dict()
        start = time.monotonic()
        if d._lock_acquire(bool(block), timeout if block and timeout else None):
            return True
        pid = self.holder_pid
        if not block:
            raise Exceptions.CannotAcquireLock(f"dict '{d.name}': lock held by pid {pid}",
                                               blocking_pid=pid, timestamp=start)
        raise Exceptions.CannotAcquireLockTimeout(
            f"dict '{d.name}': lock held by pid {pid} for more than {timeout} s",
            blocking_pid=pid, timestamp=start, time_passed=time.monotonic() - start)

    def release(self, *args):
        """True if released, False if this thread did not hold it (as UltraDict)."""
        d = self._dict()
        if not d._lock_owned():
            return False
        d._lock_release()
        return True

    def _enter_slow(self):
        self.acquire(self._blocking, timeout=self._timeout)
        return self

    def status(self):
        return {"has_lock": self.owned(), "pid_remote": self.holder_pid}

    def print_status(self, status=None):
        pprint.pprint(status or self.status())


class _DataView(Mapping):
    """UltraDict.data: a read-only mapping over the handle's state, not a copy."""

    __slots__ = ("_owner",)

    def __init__(self, owner):
        self._owner = owner

    def __getitem__(self, key):
        return self._owner[key]

    def __iter__(self):
        return iter(self._owner)

    def __len__(self):
        return len(self._owner)

    def __repr__(self):
        return repr(self._owner.copy())


class UltraDict(Dict):
    """See the module documentation."""

    Exceptions = Exceptions
    SharedLock = UltraLock  # `isinstance(d.lock, d.SharedLock)` holds, as with shared_lock=True
    RLock = UltraLock

    def __new__(cls, *args, recurse=None, **kwargs):
        if recurse and cls is UltraDict:
            cls = _RecursiveUltraDict  # a separate class keeps d[k] = v a C slot without recurse
        return super().__new__(cls)

    def __init__(self, *args, name=None, create=None, buffer_size=10_000, serializer=pickle,
                 shared_lock=None, full_dump_size=None, auto_unlink=None, recurse=None,
                 recurse_register=None, **kwargs):
        super().__init__(name, create=create, buffer_size=max(int(buffer_size), MIN_BUFFER_SIZE),
                         auto_unlink=True if auto_unlink is None else auto_unlink,
                         serializer=serializer, lock_timeout=float("inf"))
        self.lock = UltraLock(self)
        self.recurse = bool(recurse)
        self.shared_lock = True
        self.full_dump_size = full_dump_size
        if args or kwargs:
            self.update(*args, **kwargs)

    def _reattach_settings(self):
        return {"serializer": self._serializer, "recurse": self.recurse}

    def __repr__(self):
        return repr(self.copy())  # as UltraDict, which prints like the dict it holds

    @property
    def data(self):
        return _DataView(self)

    @property
    def buffer_size(self):
        return self.status()["log_capacity"]

    @property
    def full_dump_counter(self):
        return self.status()["snapshot_generation"]

    def load(self, force=False):
        self.refresh(force)

    def apply_update(self):
        self.refresh()

    def print_status(self, status=None):
        pprint.pprint(status or self.status())

    def close(self, unlink=False):
        if unlink and not self.closed:
            self.unlink()
        super().close()

    @staticmethod
    def unlink_by_name(name, ignore_errors=False):
        """True if the dict was there and is now unlinked; False (ignore_errors) or
        CannotAttachSharedMemory if it was not."""
        try:
            _core.unlink_by_name(name)
            return True
        except _core.Error:
            if not ignore_errors:
                raise
            return False

    def _open_child(self, name):
        return UltraDict(name=name, create=False, auto_unlink=False, recurse=self.recurse,
                         serializer=self._serializer)


class _RecursiveUltraDict(UltraDict):
    """recurse=True: a dict assigned as a value becomes a nested UltraDict."""

    def __setitem__(self, key, value):
        if isinstance(value, dict) and not isinstance(value, Dict):
            if key in self and not isinstance(self[key], Dict):
                del self[key]
            child = self.nested(key)
            child.clear()
            child.update(value)
            return
        super().__setitem__(key, value)

    def update(self, other=(), /, **kwargs):
        items = list(other.items() if hasattr(other, "items") else other) + list(kwargs.items())
        plain = [(k, v) for k, v in items if not (isinstance(v, dict) and not isinstance(v, Dict))]
        super().update(plain)
        for k, v in items:
            if isinstance(v, dict) and not isinstance(v, Dict):
                self[k] = v
