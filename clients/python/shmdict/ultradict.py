"""A drop-in for UltraDict (github.com/ronny-rentner/UltraDict) on shmdict.

    from shmdict.ultradict import UltraDict     # instead of: from UltraDict import UltraDict

An UltraDict is a `dict` subclass, as UltraDict's is (directly: UltraDict also derives from
collections.UserDict, whose ABC metaclass makes every `u[k]` slower): `isinstance(u, dict)`,
`json.dumps(u)`, `u | {...}` and `obj.__dict__ = UltraDict(...)` work. The shared state lives
in a shmdict dict (`shmdict.Dict`, the engine); the UltraDict's own dict storage, and `u.data`,
hold this handle's decoded local copy of it, as UltraDict keeps one. Every access through the
UltraDict (`u[k]`, `in`, len, iteration, get, keys/values/items, repr, ==) first compares the
dict's commit revision with the copy's (one load from shared memory) and, when they differ,
applies only the keys changed since (through the engine's watch stream; everything is listed
again when the log no longer reaches back), so an unchanged value is never decoded again. A new
handle starts from a listing, not a replay of the log; each revision enters the copy whole before
another thread reads it without waiting; a child forked while a thread was changing the copy
lists everything again. C
code that reads the storage directly (json.dumps, attribute lookup in `obj.__dict__`) sees the
copy as of the handle's last access; so does `u.data`, the fastest read. Writes go to the
shared dict first, then into the copy.

`recurse` is stored in the dict itself (bit 0 of the core's per-dict user_flags, written by the
creator), so every process that attaches, with or without recurse=, turns the dicts it assigns
into nested shared dicts, and nested dicts read back as UltraDicts everywhere.

Deliberate differences from UltraDict (each where UltraDict is unsafe or cannot apply here):

==========================  ===================================================================
UltraDict                   this drop-in
==========================  ===================================================================
lock: multiprocessing       always the dict's robust cross-process lock; shared_lock= accepted
RLock unless shared_lock    and ignored (ParameterMismatch is never raised for it).
                            SharedLock, SharedMutexLock and RLock all name that lock's class.
writes and `with d.lock:`   the same: they wait for another holder as long as it holds the lock
wait forever                (Ctrl-C interrupts). shmdict.Dict's d[k] = v instead raises
                            shmdict.Timeout after its lock_timeout (10 s by default).
lock.steal(),               never take a live holder's lock: a holder that died is recovered by
steal_from_dead()           the core (through a kernel-released file lock, not a pid), so they
                            return True only when the lock could be taken (the holder they name
                            is gone or released it), else False. steal_after_timeout and
                            sleep_time are accepted and ignored.
lock.reset()                releases the lock only if this thread holds it; never frees another
                            process's lock.
buffer_size=10_000          a lower bound for the change log, which is at least 1 MiB (a power
                            of two): 10 kB would make the engine build a snapshot every few
                            hundred writes.
full_dump_size=             accepted and ignored (snapshots get segments of their own size);
                            FullDumpMemoryFull is never raised.
full_dump_counter           counts this handle's full dumps: dump(), load(force=True), a catch-
                            up that had to list everything again, and every value it wrote that
                            was too big for the log (over a quarter of buffer_size: such a value
                            goes to its own segment, where UltraDict writes a full dump).
                            A str, bytes or bytearray value is measured; other values are not.
recurse_register=           accepted and ignored: nested dicts are named under their parent and
                            unlinked with it. Assigning a dict is not atomic: the child is
                            cleared and filled, then referenced.
`data` (a dict)             a plain dict holding the local copy, like UltraDict's; writing to it
                            changes nothing shared (also as UltraDict), and a catch-up rewrites
                            only the keys changed since.
u | other, other | u        a plain dict (UltraDict: a new UltraDict in new shared memory).
u == other                  compares the contents (UltraDict's compares None with None).
copy()                      a plain dict of the contents.
status()                    UltraDict's keys with this engine's nearest values (see status()),
                            plus "shmdict": the engine's status.
get_memory()                the same helper (multiprocessing.shared_memory); the dict does not
                            use it.
cleanup()                   closes the handle like close() and returns the local copy.
keys                        keys other than str, int, float and bytes are pickled; a bool,
                            IntEnum or int-valued float key reads back as int in other
                            processes, a str subclass as str.
names                       [A-Za-z0-9_.-] (no '..'), at most 200 characters; '@' is reserved.
                            Other names raise ValueError.
MissingDependency           never raised: nothing beyond this package is needed.
==========================  ===================================================================

Trust: reading a pickled value runs code chosen by whoever wrote it, here any process that can
write the dict (its owner: segments are created 0600).
"""

import collections
import collections.abc
import importlib
import logging
import mmap
import os
import pickle
import pprint
import sys
import threading
import time
import types
import weakref

from . import _core
from ._dict import Dict, Lock, _update_pairs

# The smallest change log the drop-in creates (see the module documentation on buffer_size).
MIN_BUFFER_SIZE = 1 << 20
# Bit 0 of the core's per-dict user_flags (docs/LAYOUT.md, IdentityBlock): the creator's recurse.
# Why a word in the main segment's header: its creator writes it before the ready word, so no
# attacher can ever see the dict without it (a flag set after creating would race the first
# attachers); a reserved key would show up in len() and iteration for every other client (C++,
# the CLI, the bridge); a segment of its own would need a name outside the reserved '@' scheme.
RECURSE_FLAG = 1

# The main segment's identity and commit words (docs/LAYOUT.md, "Main segment"), read directly so
# that the check "did anything change since the local copy?" costs one load, not a call into the
# engine (which would also catch the engine's own handle up). Used only when the segment has
# exactly the engine's layout version, otherwise the engine is asked. The version is the engine's
# own (a number kept here went stale at the bump to 5 and sent every UltraDict to the engine);
# the offsets below are that version's, and test_ultradict checks the word against the engine's
# revision, so a bump that moves them fails there instead of reading another field.
_MAIN_MAGIC = 0x3154434944484D53
_LAYOUT_VERSION = _core.LAYOUT_VERSION
_COMMIT_REVISION_WORD = 64 // 8  # commit_revision at byte 64, as 8-byte words
# A watch stream that trails the local copy by more than this many revisions (this handle's own
# writes, applied directly) is replaced by one from the copy's revision instead of read through.
_MAX_STREAM_LAG = 4096

_NOTHING = object()
_MEASURED = (str, bytes, bytearray)  # the values whose size full_dump_counter checks
_dict_getitem = dict.__getitem__
_dict_setitem = dict.__setitem__


class _Log:
    """UltraDict.log: the calls UltraDict's programs make on it (disable, set_level, the level
    names and the log functions), on the logger "shmdict.ultradict" only."""

    CRITICAL, ERROR, WARNING, INFO, DEBUG = (logging.CRITICAL, logging.ERROR, logging.WARNING,
                                             logging.INFO, logging.DEBUG)

    class Levels:
        """UltraDict.log.Levels: the level numbers by lower-case name."""

        critical, error, warning, info, debug = (logging.CRITICAL, logging.ERROR,
                                                 logging.WARNING, logging.INFO, logging.DEBUG)

    def __init__(self):
        self.logger = logging.getLogger("shmdict.ultradict")
        for name in ("debug", "info", "warning", "error", "critical", "exception"):
            setattr(self, name, getattr(self.logger, name))

    def disable(self, level=logging.CRITICAL):
        """Drops messages at `level` and below."""
        self.logger.setLevel(level + 1)

    def set_level(self, level):
        """Drops messages below `level` (a logging level number)."""
        self.logger.setLevel(level)


log = _Log()


class Exceptions:
    """UltraDict.Exceptions: the same names, each also the matching shmdict exception."""

    CannotAttachSharedMemory = _core.NotFound
    AlreadyExists = _core.AlreadyExists
    AlreadyClosed = _core.Closed

    class CannotAcquireLock(_core.LockHeld):
        """The lock is held elsewhere (acquire(block=False)): blocking_pid names the holder,
        timestamp is time.monotonic() when the attempt started."""

        def __init__(self, *args, blocking_pid=0, timestamp=None):
            super().__init__(*args)
            self.blocking_pid = blocking_pid
            self.timestamp = timestamp or time.monotonic()

    class CannotAcquireLockTimeout(CannotAcquireLock, TimeoutError):
        """acquire(timeout=...) gave up: as CannotAcquireLock, plus time_passed (seconds)."""

        def __init__(self, *args, time_passed=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.time_passed = time_passed

    class ParameterMismatch(_core.Error):
        """recurse= given to an attacher differs from the creator's (shared_lock never does)."""

    class FullDumpMemoryFull(_core.Error):
        """Kept for `except` clauses; never raised (see the module documentation)."""

    class MissingDependency(_core.Error):
        """Kept for `except` clauses; never raised (see the module documentation)."""


class UltraLock(Lock):
    """UltraDict's lock API on the dict's shared robust lock: `with d.lock:`, `with d.lock(...)`,
    acquire, release, steal, steal_from_dead, reset, status. A holder that dies (even
    SIGKILLed) releases it. Re-entrant for the thread that holds it."""

    __slots__ = ()

    def __call__(self, block=True, timeout=None, sleep_time=None, steal_after_timeout=False):
        """A context manager with its own blocking / timeout (seconds; None: forever)."""
        return UltraLock(self._dict_ref, block, timeout)

    def acquire(self, block=True, sleep_time=None, timeout=None, steal_after_timeout=False):
        """True once held. Not blocking: CannotAcquireLock naming the holder's pid when it is
        held; blocking with a timeout: CannotAcquireLockTimeout when it passes; without one it
        waits as long as the holder holds it (Ctrl-C interrupts)."""
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

    def steal(self, from_pid=0, release=False):
        """Takes the lock if it is held by `from_pid` and that holder is gone (the core recovers
        a dead holder's lock on the spot); never from a live holder. True if this thread now
        holds it (released again at once with release=True); False if the lock is free, held by
        another pid, or its holder is alive."""
        if self.owned():
            raise RuntimeError("cannot steal the lock: this thread holds it already")
        if self.get_remote_pid() != from_pid or not self.locked():
            return False
        if not self._dict()._lock_acquire(False, None):
            return False
        if release:
            self.release()
        return True

    def steal_from_dead(self, from_pid=0, release=False):
        """As steal(): the core never hands a live holder's lock over, so this is steal()."""
        return self.steal(from_pid=from_pid, release=release)

    def reset(self):
        """Releases every level of the lock this thread holds; never another holder's lock."""
        while self.owned():
            self.release()

    def reset_acquire_parameters(self):
        """Kept for UltraDict's API; each `with d.lock(...)` has its own parameters here."""

    def get_remote_pid(self):
        """The pid of the process holding the lock, 0 when free (see Lock.holder_pid)."""
        return self.holder_pid

    def get_remote_lock(self):
        """1 when some thread of some process holds the lock, else 0."""
        return int(self.locked())

    @property
    def has_lock(self):
        """1 when the calling thread holds the lock, else 0."""
        return int(self.owned())

    @property
    def pid(self):
        """This process's pid (UltraDict's lock.pid)."""
        return os.getpid()

    def status(self):
        """UltraDict's lock status keys: has_lock, lock_remote, pid, pid_remote."""
        return {"has_lock": self.has_lock, "lock_remote": self.get_remote_lock(),
                "pid": self.pid, "pid_remote": self.get_remote_pid()}

    def print_status(self, status=None):
        """Pretty-prints status() (or `status`)."""
        pprint.pprint(status or self.status())

    def cleanup(self):
        """Kept for UltraDict's API: the lock holds nothing of its own to free."""


class _Handle(Dict):
    """The engine under one UltraDict: a shmdict.Dict whose nested dicts open as UltraDicts, and
    which stores the creator's user_flags."""

    def __init__(self, name, *, user_flags, **kwargs):
        self._create_flags = user_flags
        super().__init__(name, **kwargs)

    def _open(self, name, create, buffer_size, mode, auto_unlink, lock_timeout):
        super()._open(name, create, buffer_size, mode, auto_unlink, lock_timeout,
                      self._create_flags)

    def _open_child(self, name):
        return UltraDict(name=name, create=False, auto_unlink=False, serializer=self._serializer)


class _AskEngine:
    """The commit word when the segment cannot be read directly: the engine's revision."""

    __slots__ = ("_handle",)

    def __init__(self, handle):
        self._handle = handle

    def __getitem__(self, index):
        return self._handle._revision()


class _ClosedWord:
    """The commit word of a closed UltraDict: every access raises AlreadyClosed."""

    __slots__ = ()

    def __getitem__(self, index):
        raise Exceptions.AlreadyClosed("UltraDict already closed")


_CLOSED = _ClosedWord()


def _map_commit_word(handle):
    """(words, mapping): a read-only view of the handle's own main segment's 8-byte words and the
    mmap behind it, or (_AskEngine, None) when the segment now under the handle's name is not the
    one the handle opened (unlinked and created again since) or not one of this layout."""
    try:
        fd = os.open(f"/dev/shm/shmdict.{handle.name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return _AskEngine(handle), None
    try:
        # The engine opened its segment by name before this: if the name was unlinked and
        # created again in between, this file is another dict's and its word would never (or
        # wrongly) move for this handle. The handle maps its segment, so that inode cannot be
        # reused while it lives: equal inodes mean the same file.
        if os.fstat(fd).st_ino != handle._incarnation():
            return _AskEngine(handle), None
        m = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError):
        return _AskEngine(handle), None
    finally:
        os.close(fd)  # mmap keeps a duplicate while the mapping lives; closed with it
    words = memoryview(m).cast("Q")
    if words[0] != _MAIN_MAGIC or words[1] & 0xFFFFFFFF != _LAYOUT_VERSION:
        words.release()
        m.close()
        return _AskEngine(handle), None
    return words, m


class _Hybrid:
    """A method that works on the class (as UltraDict's classmethod) and on an instance."""

    def __init__(self, func):
        self.func = func

    def __get__(self, obj, cls):
        return self.func.__get__(obj if obj is not None else cls)


# The open UltraDicts of this process, each reset in a forked child (see _after_fork).
_open_dicts = weakref.WeakValueDictionary()  # by id(): an UltraDict is unhashable


def _after_fork_in_child():
    for ultra in list(_open_dicts.values()):
        ultra._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _reattach(cls, name, kwargs):
    serializer = kwargs.get("serializer")
    if isinstance(serializer, str):  # a module (pickle, json, ...), pickled by its import name
        kwargs = dict(kwargs, serializer=importlib.import_module(serializer))
    return cls(name=name, create=False, auto_unlink=False, **kwargs)


class UltraDict(dict):
    """UltraDict(*args, name=None, create=None, buffer_size=10_000, serializer=pickle,
    shared_lock=None, full_dump_size=None, auto_unlink=None, recurse=None,
    recurse_register=None, **kwargs): see the module documentation.

    name: None picks a random one (see .name). create: None attaches or creates; True must
    create (AlreadyExists); False must attach (CannotAttachSharedMemory). auto_unlink (default
    True for the creator): unlink the dict when this handle closes. recurse: dicts assigned as
    values become nested shared dicts; stored in the dict by its creator, read by attachers
    (ParameterMismatch if an attacher passes the opposite). Initial items (*args, **kwargs) are
    written as with update().

    Thread-safety: an UltraDict may be shared by threads. Writes wait for another process's
    holder of the lock as long as it holds it (shmdict.Dict raises Timeout after 10 s instead).
    """

    Exceptions = Exceptions
    log = log
    SharedLock = UltraLock  # isinstance(d.lock, d.SharedLock) holds, as with shared_lock=True
    SharedMutexLock = UltraLock  # ... and UltraDict's Linux spelling of it
    RLock = UltraLock

    __slots__ = ("_word", "_map", "_rev", "_h", "data", "_mutex", "_stream", "_stream_rev",
                 "_pid", "_recurse", "_large", "__dict__", "__weakref__")

    __hash__ = None

    def __init__(self, *args, name=None, create=None, buffer_size=10_000, serializer=pickle,
                 shared_lock=None, full_dump_size=None, auto_unlink=None, recurse=None,
                 recurse_register=None, **kwargs):
        self._word, self._map = _CLOSED, None  # until open: every access raises AlreadyClosed
        self.closed = True
        self._h = _Handle(name, create=create,
                          buffer_size=max(int(buffer_size), MIN_BUFFER_SIZE),
                          auto_unlink=True if auto_unlink is None else bool(auto_unlink),
                          serializer=serializer, lock_timeout=float("inf"),
                          user_flags=RECURSE_FLAG if recurse else 0)
        shared_recurse = bool(self._h._user_flags() & RECURSE_FLAG)
        if recurse is not None and bool(recurse) != shared_recurse:
            dict_name = self._h.name
            self._h.close()
            raise Exceptions.ParameterMismatch(
                f"recurse={bool(recurse)} was given but dict '{dict_name}' was created with "
                f"recurse={shared_recurse}")
        self.closed = False
        self.name = self._h.name
        self.lock = UltraLock(self._h)
        self.recurse = self._recurse = shared_recurse
        self.recurse_register = None
        self.shared_lock = True
        self.serializer = serializer
        self.auto_unlink = self._h.created and (auto_unlink is None or bool(auto_unlink))
        self.full_dump_size = full_dump_size
        self.full_dump_counter = 0
        self.buffer_size = self._h._status()["log_capacity"]
        self._large = self.buffer_size // 4  # the core's own-segment threshold
        self.data = {}
        self._rev = 0
        self._mutex = threading.Lock()
        self._stream = None
        self._stream_rev = 0
        self._pid = os.getpid()
        self._word, self._map = _map_commit_word(self._h)
        _open_dicts[id(self)] = self
        self._catch_up()
        if args or kwargs:
            self.update(*args, **kwargs)

    # ---- keeping the local copy current
    def _catch_up(self):
        """Applies the changes since the local copy's revision (the hot paths call it only when
        the commit word moved)."""
        if self._pid != os.getpid():  # forked: the parent's stream is not ours
            self._after_fork()
        with self._mutex:
            target = self._word[_COMMIT_REVISION_WORD]
            if self._stream is None and self._rev == 0:
                # A new handle (or a child that forked mid-change): a listing at one revision
                # costs the dict's size, a replay from revision 0 the whole log's.
                self._list_all()
            if self._rev >= target:
                return
            if self._stream is None or self._rev - self._stream_rev > _MAX_STREAM_LAG:
                self._stream = self._open_stream()
                if self._stream is None:
                    self._list_all()
                    self.full_dump_counter += 1
                    return
            while self._rev < target:
                batch = self._stream.next(self._h, 4096, 1.0)
                if batch is None:
                    break  # the commit is visible to the stream within a second, always
                self._apply(batch)

    def _open_stream(self):
        """A watch stream from the copy's revision, or None when the name no longer means this
        handle's dict (the stream attaches by name: unlinked, or unlinked and created again)."""
        try:
            stream = _core.WatchStream(self._h, self._rev)
        except _core.NotFound:
            return None
        # Checked after the stream attached: an unlinked segment never gets its name back, so
        # the name meaning this handle's segment now means it meant it then.
        try:
            own = os.stat(f"/dev/shm/shmdict.{self.name}").st_ino == self._h._incarnation()
        except OSError:
            own = False
        if not own:
            return None
        self._stream_rev = self._rev
        return stream

    def _list_all(self):
        """Rebuilds the copy from a listing through this handle (under the mutex)."""
        # The revision is read first: the listing is of it or of a later one, and the catch-ups
        # that follow replay the changes since it, which leave the copy what the dict is either
        # way (each change sets, removes or clears outright). Until then the commit word is past
        # the copy's revision, so no thread reads the copy without the mutex.
        h = self._h
        revision = h._revision()
        items = list(h.items())
        data = self.data
        dict.clear(self)
        data.clear()
        for key, value in items:
            _dict_setitem(self, key, value)
            data[key] = value
        self._rev = revision  # last: see _apply
        if revision == 0 and self._stream is None:
            # Empty since ever: a stream from here is as cheap as a listing, and the next catch-
            # up must not take revision 0 for "never listed" and list again.
            self._stream = self._open_stream()

    def _after_fork(self):
        # A thread of the parent may have held the mutex at the fork, and the watch stream's
        # handle belongs to the parent. A thread holding the mutex may have been in the middle of
        # changing the copy (a listing half written, say): nothing in it can be trusted, so the
        # child lists everything again from revision 0.
        if self._mutex.locked():
            dict.clear(self)
            self.data.clear()
            self._rev = 0
        self._pid, self._mutex, self._stream = os.getpid(), threading.Lock(), None

    def _apply(self, batch):
        # self._rev moves once, after the whole batch: a reader in another thread that sees it
        # equal to the commit word reads the copy without the mutex, so it must never name a
        # revision whose changes (update() is several) are only partly in the copy.
        is_snapshot, snapshot_revision, items, changes, stream_revision = batch
        data = self.data
        applied = self._rev
        if is_snapshot:
            dict.clear(self)
            data.clear()
            for key, value in items:
                _dict_setitem(self, key, value)
                data[key] = value
            applied = snapshot_revision
            self.full_dump_counter += 1
        last = applied
        for revision, op, key, value in changes:
            if revision <= applied:
                continue  # this handle's own write, already in the copy
            if op == "set":
                _dict_setitem(self, key, value)
                data[key] = value
            elif op == "delete":
                dict.pop(self, key, None)
                data.pop(key, None)
            else:
                dict.clear(self)
                data.clear()
            last = revision
        # The stream delivered everything up to stream_revision: a revision without a change of
        # its own (none today) must not leave the copy behind the commit word for ever.
        self._rev = max(last, stream_revision)
        self._stream_rev = stream_revision

    def _wrote(self, before, pairs=(), deleted=()):
        """After this handle committed one revision: when it is the only commit since the copy's
        revision `before`, put it into the copy (the objects given, as UltraDict keeps them);
        otherwise catch up."""
        with self._mutex:
            if self._rev == before and self._word[_COMMIT_REVISION_WORD] == before + 1:
                data = self.data
                for key, value in pairs:
                    _dict_setitem(self, key, value)
                    data[key] = value
                for key in deleted:
                    dict.pop(self, key, None)
                    data.pop(key, None)
                self._rev = before + 1
                return
        self._catch_up()

    def _refresh(self):
        if self._word[_COMMIT_REVISION_WORD] != self._rev:
            self._catch_up()

    # ---- reads: the local copy after a catch-up
    # The hot reads look into `data`, which holds what the storage holds (a plain dict's
    # subscript is cheaper than calling dict.__getitem__ on self), as UltraDict reads its data.
    # The commit word's index is spelled as the literal 8 (_COMMIT_REVISION_WORD) on these paths:
    # a constant costs less than a global per call, and these run once per access.
    def __getitem__(self, key):
        if self._word[8] != self._rev:
            self._catch_up()
        try:
            return self.data[key]
        except KeyError:
            return _dict_getitem(self, key)  # a subclass's __missing__, or KeyError

    def get(self, key, default=None):
        """d[key], or default when the key is missing."""
        if self._word[8] != self._rev:
            self._catch_up()
        return self.data.get(key, default)

    def __contains__(self, key):
        if self._word[8] != self._rev:
            self._catch_up()
        return key in self.data

    def has_key(self, key):
        """key in d (UltraDict's spelling)."""
        return self.__contains__(key)

    def __len__(self):
        self._refresh()
        return dict.__len__(self)

    def __iter__(self):
        # Over the keys of this moment: a catch-up while the caller iterates must not break it.
        self._refresh()
        return iter(list(dict.keys(self)))

    def __reversed__(self):
        self._refresh()
        return iter(list(reversed(dict.keys(self))))

    def keys(self):
        """A live view of the local copy's keys (as of this call; later accesses move it)."""
        self._refresh()
        return dict.keys(self)

    def values(self):
        """A live view of the local copy's values (as keys())."""
        self._refresh()
        return dict.values(self)

    def items(self):
        """A live view of the local copy's items (as keys())."""
        self._refresh()
        return dict.items(self)

    def copy(self):
        """A plain dict of the contents."""
        self._refresh()
        return dict(self.data)

    def __repr__(self):
        try:
            self._refresh()
        except Exceptions.AlreadyClosed:
            pass
        return dict.__repr__(self)

    def __eq__(self, other):
        self._refresh()
        if isinstance(other, UltraDict):
            other._refresh()
        return dict.__eq__(self, other)

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __or__(self, other):
        if not isinstance(other, collections.abc.Mapping):
            return NotImplemented
        return self.copy() | dict(other)

    def __ror__(self, other):
        if not isinstance(other, collections.abc.Mapping):
            return NotImplemented
        return dict(other) | self.copy()

    def __ior__(self, other):
        self.update(other)
        return self

    # ---- writes: the shared dict first, then the local copy
    def __setitem__(self, key, value):
        """Stores the value for every process; waits for another holder of the lock as long as
        it holds it (shmdict.Dict raises Timeout after its lock_timeout instead)."""
        if self._recurse and isinstance(value, dict) and not isinstance(value, UltraDict):
            self._assign_dict(key, value)
            return
        before = self._word[8]
        self._h[key] = value
        if type(value) in _MEASURED and len(value) > self._large // 4:
            self._count_large(value)
        # _wrote() inlined, with acquire/release instead of `with` (which binds and calls
        # __enter__ and __exit__): this is the hot path of every write. Nothing between them can
        # raise once the engine accepted the key (it hashed it), but try/finally costs nothing.
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._rev == before and self._word[8] == before + 1:
                _dict_setitem(self, key, value)
                self.data[key] = value
                self._rev = before + 1
                return
        finally:
            mutex.release()
        self._catch_up()

    def _count_large(self, value):
        size = len(value.encode("utf-8", "surrogatepass")) if type(value) is str else len(value)
        if size > self._large:
            self.full_dump_counter += 1  # where UltraDict writes a full dump

    def __delitem__(self, key):
        """Removes the key for every process (KeyError if missing); waits like d[k] = v."""
        before = self._word[_COMMIT_REVISION_WORD]
        del self._h[key]
        self._wrote(before, deleted=(key,))

    def _assign_dict(self, key, value):
        # The child is created (or reused) under the key, then cleared and filled: its own
        # dict values recurse the same way, since a child carries its parent's flags.
        if key in self and not isinstance(self[key], UltraDict):
            del self[key]
        child = self._h.nested(key)
        child.clear()
        child.update(value)
        self._refresh()

    def update(self, other=(), /, **kwargs):
        """Sets every item as one atomic revision (a recurse dict's dict values are assigned
        one by one after it)."""
        pairs = _update_pairs(other, kwargs)
        nested = []
        if self._recurse:
            nested = [(k, v) for k, v in pairs
                      if isinstance(v, dict) and not isinstance(v, UltraDict)]
            if nested:
                pairs = [(k, v) for k, v in pairs
                         if not (isinstance(v, dict) and not isinstance(v, UltraDict))]
        if pairs:
            before = self._word[_COMMIT_REVISION_WORD]
            self._h._update(pairs)
            self._wrote(before, pairs)
        for k, v in nested:
            self._assign_dict(k, v)

    def pop(self, key, *default):
        """Removes the key and returns its value, atomically across processes."""
        value = self._h.pop(key, *default)
        self._refresh()
        return value

    def popitem(self):
        """Removes and returns the last item (KeyError when empty), under the lock."""
        with self.lock:
            self._refresh()
            if not dict.__len__(self):
                raise KeyError("popitem(): dictionary is empty")
            key = next(reversed(dict.keys(self)))
            return key, self.pop(key)

    def setdefault(self, key, default=None):
        """d[key], setting it to default first if missing, under the lock."""
        with self.lock:
            if key in self:
                return self[key]
            self[key] = default
            return default

    def clear(self):
        """Removes every key as one revision."""
        self._h.clear()
        self._refresh()

    @classmethod
    def fromkeys(cls, iterable, value=None):
        """A new UltraDict (random name) holding each key with value."""
        return cls({key: value for key in iterable})

    def append_update(self, key, item, delete=False):
        """UltraDict's low-level write: here the same as d[key] = item, or deleting key (a
        missing key is ignored) with delete=True."""
        if not delete:
            self[key] = item
        elif key in self:
            try:
                del self[key]
            except KeyError:
                pass

    def apply_update(self):
        """Catches the local copy up with the other processes' changes now."""
        self._refresh()

    # ---- full dumps (snapshots)
    def dump(self):
        """Publishes a snapshot of the current state now (UltraDict's full dump); returns its
        generation."""
        generation = self._h.dump()
        self.full_dump_counter += 1
        return generation

    def load(self, force=False):
        """Catches up; force lists the whole dict again from the latest snapshot (verified)."""
        if not force:
            self._refresh()
            return
        self._h.refresh(True)
        with self._mutex:
            self._rev = 0
            self._stream = None
        self._catch_up()  # lists everything (see _catch_up)
        self.full_dump_counter += 1

    # ---- status and lifetime
    def status(self):
        """UltraDict's status keys with their nearest values here: update_stream_position is
        the local copy's revision, update_stream_position_remote the dict's; the full dump
        fields describe the published snapshot; "shmdict" is the engine's status()."""
        engine = self._h.status()
        generation = engine.get("snapshot_generation", 0)
        return {
            "name": self.name,
            "buffer_size": self.buffer_size,
            "lock": self.lock,
            "shared_lock": True,
            "update_stream_position": self._rev,
            "update_stream_position_remote": engine["revision"],
            "full_dump_counter": self.full_dump_counter,
            "full_dump_counter_remote": generation,
            "full_dump_memory": None,
            "full_dump_size": self.full_dump_size,
            "full_dump_static_size_remote": 0,
            "full_dump_memory_name_remote": f"shmdict.{self.name}@s{generation}"
            if generation else "",
            "serializer": self.serializer,
            "lock_pid_remote": engine.get("lock_holder_pid", 0),
            "lock_remote": int(engine["lock_held"]),
            "shared_lock_remote": True,
            "recurse": self.recurse,
            "recurse_remote": self._recurse,
            "recurse_register": None,
            "closed": self.closed,
            "auto_unlink": self.auto_unlink,
            "shmdict": engine,
        }

    def print_status(self, status=None, stderr=False):
        """Pretty-prints status() (or `status`) to stdout, or stderr."""
        pprint.pprint(status or self.status(), stream=sys.stderr if stderr else sys.stdout)

    def get_memory(*, create=True, name=None, size=0):
        """UltraDict's helper: a multiprocessing.shared_memory.SharedMemory named `name`,
        attached (create=False), created (create=True: AlreadyExists if it exists) or either
        (None). Not used by the dict itself."""
        from multiprocessing import shared_memory
        if name:
            try:
                memory = shared_memory.SharedMemory(name=name)
            except FileNotFoundError:
                pass
            else:
                if create:
                    memory.close()
                    raise Exceptions.AlreadyExists(f"memory '{name}' already exists")
                return memory
        if create or create is None:
            if size <= 0:
                raise ValueError("creating shared memory needs size > 0")
            return shared_memory.SharedMemory(name=name, create=True, size=size)
        raise Exceptions.CannotAttachSharedMemory(f"could not attach memory '{name}'")

    get_memory = staticmethod(get_memory)

    def close(self, unlink=False, from_finalizer=False):
        """Closes this handle (and the nested dicts opened through it) and returns the local copy
        as a plain dict; None if already closed. unlink, or auto_unlink on the creator, also
        removes the dict for everyone. Idempotent."""
        if self.__dict__.get("closed", True):
            return None
        try:
            self._refresh()
        except _core.Error:
            pass
        self.closed = True
        _open_dicts.pop(id(self), None)
        if unlink:
            self._h.unlink()
        self._h.close()
        word, m = self._word, self._map
        self._word, self._map, self._stream = _CLOSED, None, None
        if m is not None:
            word.release()
            m.close()
        return dict(self.data)

    def cleanup(self):
        """As close() (see the module documentation)."""
        return self.close()

    def unlink(self):
        """Removes the dict for every process and closes this handle (as UltraDict)."""
        return self.close(unlink=True)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- a finalizer must not raise
            pass

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

    @_Hybrid
    def as_pure_dictionary(self_or_cls, to_convert=_NOTHING):
        """Plain dicts all the way down: of `to_convert`, or of the UltraDict it is called on."""
        if to_convert is _NOTHING:
            to_convert = self_or_cls
        if isinstance(to_convert, UltraDict):
            return {k: UltraDict.as_pure_dictionary(v) for k, v in to_convert.items()}
        return to_convert

    def __reduce__(self):
        # A `spawn`ed process (or any pickle) gets a handle attached by name, never an owner.
        serializer = self.serializer
        if isinstance(serializer, types.ModuleType):
            serializer = serializer.__name__
        return (_reattach, (self.__class__, self.name, {"serializer": serializer}))

    def __copy__(self):
        return _reattach(self.__class__, self.name, {"serializer": self.serializer})
