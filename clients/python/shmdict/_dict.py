"""shmdict.Dict: a dict in shared memory, shared by every process on the host that opens its name;
shmdict.RemoteDict (shmdict.connect): the same dict reached through shmdict-bridge.

The engine is the C++ core (shmdict._core.DictBase, whose C slots serve d[k], d[k] = v, del,
`in` and len; for a remote dict it holds the C++ RemoteDict, with its mirror and resume logic);
this module adds the rest of the MutableMapping API, the value encodings that need Python (JSON,
pickle, a pluggable serializer), the cross-process lock shaped like threading.Lock (local only),
change watching (blocking and asyncio), and pickling for `spawn`ed processes. Both classes share
_Mapping; Dict adds what only shared memory offers (lock, nested, dump, refresh, unlink).
"""

import asyncio
import atexit
import importlib
import json
import math
import os
import pickle
import threading
import types
import weakref
from collections.abc import ItemsView, KeysView, Mapping, MutableMapping, ValuesView
from typing import Any, NamedTuple, Optional

from . import _core

# The core's type tags (core/api/include/shmdict/value.h).
TAG_JSON = 5
TAG_NESTED_DICT = 6
TAG_PICKLE = 8
TAG_USER_FIRST = 128


class _Absent:
    """The state of a key that is not in the dict, for compare_and_set()."""

    def __repr__(self):
        return "shmdict.ABSENT"


ABSENT = _Absent()
_MISSING = object()  # pop()'s "no default given"


def _update_pairs(other, kwargs) -> list:
    """The (key, value) pairs of dict.update(other, **kwargs): other a mapping, an object with
    keys(), or an iterable of pairs; kwargs last."""
    if isinstance(other, Mapping):
        pairs = list(other.items())
    elif hasattr(other, "keys"):
        pairs = [(k, other[k]) for k in other.keys()]
    else:
        pairs = [tuple(p) for p in other]
    pairs.extend(kwargs.items())
    return pairs


def _is_native(value) -> bool:
    """True for the values stored under the core's own tags (codec.h), whose encoding is a
    function of the value: equal values have equal bytes."""
    if value is None or type(value) in (bool, float, str, bytes):
        return True
    return type(value) is int and -(2**63) <= value < 2**63


class Change(NamedTuple):
    """One change delivered by Dict.watch(): op is 'set', 'delete' or 'clear', or 'snapshot'
    when the watcher had to resynchronize (the log no longer held the revisions it needed): then
    key is None and value is a plain dict of every entry at `revision`."""

    revision: int
    op: str
    key: Any
    value: Any

    @property
    def snapshot(self) -> bool:
        """True for the resynchronization entry (op 'snapshot')."""
        return self.op == "snapshot"


def _json_exact(value, depth=0) -> bool:
    """True when json.loads(json.dumps(value)) gives back an equal value of the same types:
    exact dicts with str keys, lists, str, int, finite floats, bool and None. Tuples, int keys,
    subclasses (enums, OrderedDict) and NaN would come back different, so they are pickled."""
    if depth > 100:
        return False
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(_json_exact(v, depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and _json_exact(v, depth + 1) for k, v in value.items())
    return False


class _ItemsView(ItemsView):
    def __iter__(self):
        return iter(self._mapping._items())  # one consistent revision


class _ValuesView(ValuesView):
    def __iter__(self):
        return iter(self._mapping._values())


class Lock(_core.LockBase):
    """The dict's cross-process lock, shaped like threading.Lock.

    While a thread holds it, writes from every other thread and process wait, so a
    read-modify-write inside `with d.lock:` is atomic. It is the core's robust lock: a holder
    that dies (even SIGKILLed) releases it, and the next holder finds a consistent dict.
    Differences from threading.Lock: it is re-entrant for the thread that holds it (as the
    core's lock is for its holder), and only that thread may release it (RuntimeError otherwise).
    `with d.lock:` waits up to the dict's lock_timeout and then raises shmdict.Timeout naming the
    holder's pid; `with d.lock(timeout=..., blocking=...)` chooses. __enter__ and __exit__ are
    in C (LockBase), falling back to _enter_slow when the lock is not free.
    """

    __slots__ = ("_blocking", "_timeout")

    def __init__(self, owner, blocking=True, timeout=None):
        self._dict_ref = owner if isinstance(owner, weakref.ref) else weakref.ref(owner)
        self._blocking = blocking
        self._timeout = timeout

    def _dict(self):
        d = self._dict_ref()
        if d is None:
            raise _core.Closed("the dict of this lock no longer exists")
        return d

    def acquire(self, blocking=True, timeout=-1) -> bool:
        """Like threading.Lock.acquire: True when taken, False when not (non-blocking, or the
        timeout in seconds passed; -1 waits forever). Ctrl-C interrupts the wait."""
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if timeout is not None and timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number or -1")
        wait = None if timeout is None or timeout == -1 else float(timeout)
        return self._dict()._lock_acquire(blocking, wait)

    def release(self) -> None:
        """Releases one level of the calling thread's hold (it is re-entrant); RuntimeError if
        this thread does not hold it."""
        self._dict()._lock_release()

    def locked(self) -> bool:
        """True when some thread of some process holds the lock."""
        return self._dict()._status()["lock_held"]

    def owned(self) -> bool:
        """True when the calling thread holds the lock."""
        return self._dict()._lock_owned()

    @property
    def holder_pid(self) -> int:
        """The pid of the process holding the lock (diagnostics only), 0 when free. It is the
        holder's pid in its own pid namespace: see status()["lock_holder_in_this_pid_namespace"]
        for holders in other containers."""
        return self._dict()._status()["lock_holder_pid"]

    def __call__(self, blocking=True, timeout=None):
        """A context manager with its own blocking / timeout (seconds; None: the dict's
        lock_timeout)."""
        return Lock(self._dict_ref, blocking, timeout)

    def _enter_slow(self):
        """__enter__ when the lock was not free: wait as configured, or raise naming the
        holder."""
        d = self._dict()
        timeout = d._lock_timeout if self._timeout is None else self._timeout
        if d._lock_acquire(self._blocking, timeout if self._blocking else None):
            return self
        pid = self.holder_pid
        if self._blocking:
            exc = _core.Timeout(f"dict '{d.name}': the lock is held by pid {pid}; "
                                f"gave up after {timeout} s")
        else:
            exc = _core.LockHeld(f"dict '{d.name}': the lock is held by pid {pid}")
        exc.code = "DEADLINE_EXCEEDED" if self._blocking else "UNAVAILABLE"
        exc.blocking_pid = pid
        raise exc

    def __repr__(self):
        d = self._dict_ref()
        return f"<shmdict.Lock of {d.name if d is not None else '(closed)'!r}>"


_live = weakref.WeakValueDictionary()


@atexit.register
def _close_all():
    for d in list(_live.values()):
        try:
            d.close()
        except Exception:  # noqa: BLE001 -- at exit, one dict's failure must not stop the others
            pass


class _ModuleRef(NamedTuple):
    """A serializer that is a module (pickle, json, ...), pickled by its import name."""

    name: str


def _serializer_for_pickle(settings):
    if isinstance(settings.get("serializer"), types.ModuleType):
        settings["serializer"] = _ModuleRef(settings["serializer"].__name__)
    return settings


def _serializer_from_pickle(kwargs):
    serializer = kwargs.get("serializer")
    if isinstance(serializer, _ModuleRef):
        kwargs = dict(kwargs, serializer=importlib.import_module(serializer.name))
    return kwargs


def _reconnect(address, name, kwargs):
    return RemoteDict(address, name, **_serializer_from_pickle(kwargs))


def _reattach(cls, name, kwargs):
    return cls(name=name, create=False, auto_unlink=False, **_serializer_from_pickle(kwargs))


def _resolve(future, result, exc):
    if not future.done():
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class _ChangeNotifier:
    """Wakes the asyncio waiters of one dict object (changed(), and awatch() through it) without
    the event loop's default executor: a thread of its own waits on the dict (the core's futex
    wait, no polling) while any waiter is pending, and hands each new revision to the waiters'
    loops with call_soon_threadsafe, which writes to the loop's self-pipe, a descriptor the loop
    watches. N waiters, on any number of loops, cost this one thread and no executor thread. A
    waiter is gone when its future is done (cancelled, timed out) or its loop closed. With none
    left the thread stays for _IDLE seconds, so that awatch(), which waits again after each
    change, does not start a thread per change; then it ends, and starts again with the next
    waiter."""

    _SLICE = 0.25
    _IDLE = 30.0

    def __init__(self, owner):
        self._owner = weakref.ref(owner)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a waiter came, or stop()
        self._waiters = []  # (after, loop, future): resolved when a revision > after commits
        self._thread = None
        self._stopping = False
        self._pid = os.getpid()

    def _after_fork(self):
        """In a forked child: the parent's thread and waiters are not here, and the lock may
        have been held by that thread at the fork."""
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._arrived = threading.Condition(self._lock)
            self._pid, self._waiters, self._thread = os.getpid(), [], None

    def wait(self, after, loop):
        future = loop.create_future()
        self._after_fork()
        with self._lock:
            if self._stopping:
                raise _core.Closed("the dict is closed")
            self._waiters.append((after, loop, future))
            self._arrived.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shmdict-notifier")
                self._thread.start()
        return future

    def stop(self):
        """Fails the pending waiters with shmdict.Closed and waits for the thread to end."""
        self._after_fork()
        with self._lock:
            self._stopping = True
            self._arrived.notify_all()
            thread = self._thread
        self._fail(_core.Closed("the dict was closed while waiting for a change"))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _drop_gone(self):
        """With the lock: drops the waiters nobody waits for any more. A future that is done was
        cancelled (a task's cancel, wait_for's timeout); a closed loop runs nothing again, even
        when it closed without cancelling its futures. Returns whether any waiter is left."""
        self._waiters = [w for w in self._waiters if not w[2].done() and not w[1].is_closed()]
        return bool(self._waiters)

    def _take(self, due):
        """Removes and returns the waiters for which due(after) holds."""
        with self._lock:
            taken = [w for w in self._waiters if due(w[0])]
            self._waiters = [w for w in self._waiters if not due(w[0])]
        return taken

    def _fail(self, exc):
        self._hand_over(self._take(lambda after: True), None, exc)

    @staticmethod
    def _hand_over(waiters, result, exc):
        for _, loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future, result, exc)
            except RuntimeError:
                pass  # its loop is closed: nobody waits any more

    def _run(self):
        seen = None  # the latest revision this thread saw
        while True:
            with self._lock:
                self._drop_gone()
                if not self._waiters and not self._stopping:
                    self._arrived.wait_for(lambda: self._stopping or self._drop_gone(),
                                           self._IDLE)
                    seen = None  # the dict may have moved on while nobody waited
                if self._stopping or not self._waiters:
                    self._thread = None
                    return
                lowest = min(after for after, _, _ in self._waiters)
            d = self._owner()
            try:
                if d is None:
                    raise _core.Closed("the dict was garbage-collected while waited for")
                if seen is None:
                    seen = d._revision()
                # Any revision after the one seen wakes the thread: a waiter that arrived meanwhile
                # with a lower `after` than the others is served without delay.
                revision = d._wait_for_change(min(lowest, seen), self._SLICE)
            except BaseException as exc:  # noqa: BLE001 -- handed to every waiter
                with self._lock:
                    self._thread = None
                    failed, self._waiters = self._waiters, []
                self._hand_over(failed, None, exc)
                return
            finally:
                del d
            if revision is not None:
                seen = revision
                self._hand_over(self._take(lambda after: after < revision), revision, None)


class _Mapping(_core.DictBase, MutableMapping):
    """What Dict and RemoteDict share: the MutableMapping API, compare_and_set, revisions and
    watching, the value codec hooks. The C++ side (shmdict._core) runs each call on the local
    dict or the RemoteDict through one interface (shmdict::Store)."""

    def _init_codec(self, serializer, serializer_tag):
        """After the subclass checked serializer_tag (before opening)."""
        self._serializer = serializer
        if serializer is pickle:
            self._serializer_tag = TAG_PICKLE
        else:
            self._serializer_tag = TAG_USER_FIRST if serializer_tag is None else serializer_tag
        self._children = {}

    # ---- identity
    @property
    def name(self) -> str:
        """The dict's name (for Dict(None), the random one it was given)."""
        return self._name()

    def __repr__(self):
        """shmdict.Dict('name', {...}) with the items of one revision."""
        if self._closed():
            return f"<shmdict.{type(self).__name__} (closed)>"
        return f"shmdict.{type(self).__name__}({self.name!r}, {dict(self._items())!r})"

    # ---- the mapping API (d[k], d[k] = v, del d[k], `in`, len and get are C slots/methods)
    def __iter__(self):
        """The keys of one revision: changes made meanwhile do not disturb the iteration."""
        return iter(self._keys())

    def keys(self):
        """A view of the keys; each iteration reads one revision."""
        return KeysView(self)

    def items(self):
        """A view of the (key, value) pairs; each iteration reads one revision."""
        return _ItemsView(self)

    def values(self):
        """A view of the values; each iteration reads one revision."""
        return _ValuesView(self)

    def update(self, other=(), /, **kwargs):
        """Sets every item of other (a mapping, or (key, value) pairs) and of kwargs as one
        atomic revision: other processes see all of them or none. Waits for the lock as
        d[k] = v does."""
        self._update(_update_pairs(other, kwargs))

    def pop(self, key, default=_MISSING):
        """Removes key and returns its value, atomically across processes; default if the key
        is missing, KeyError when no default is given. Waits for the lock as d[k] = v does."""
        found, value = self._pop(key)
        if found:
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def copy(self) -> dict:
        """A plain dict of one revision."""
        return dict(self._items())

    def compare_and_set(self, key, expected, desired) -> bool:
        """Sets key to desired only if its value equals expected, atomically across processes;
        shmdict.ABSENT as expected means "the key must be missing", as desired "delete it".
        Returns True if it swapped.

        Native values (None, bool, int within int64, float, str, bytes) compare by their stored
        bytes, in one write. Others compare with Python's ==: their encodings are not canonical
        (JSON keeps a dict's key order, pickles of equal sets differ between processes with other
        hash seeds), so the current value is read and compared decoded, then swapped only if its
        stored bytes did not change meanwhile (retrying if they did)."""
        desired = () if desired is ABSENT else (desired,)
        if expected is ABSENT or _is_native(expected):
            return self._compare_and_set(key, () if expected is ABSENT else (expected,), desired)
        return self._compare_and_set_equal(key, expected, desired)

    # ---- revisions and changes
    @property
    def revision(self) -> int:
        """The revision reads reflect: a local handle catches up first; a remote one with a
        mirror reports the mirror's, without one the latest it saw (its writes and reads)."""
        return self._revision()

    def wait_for_change(self, after: Optional[int] = None, timeout: Optional[float] = None):
        """Blocks until a revision after `after` (default: the current one) is committed and
        returns it; None when timeout seconds pass first. Ctrl-C interrupts it."""
        return self._wait_for_change(self._revision() if after is None else after, timeout)

    def watch(self, after_revision: int = 0, timeout: Optional[float] = None):
        """Yields every change after after_revision as Change(revision, op, key, value), in
        revision order, without gaps; a Change with op 'snapshot' first when the log no longer
        holds those revisions. Stops when timeout seconds pass without a change (None: never).
        A remote dict's watch reconnects and resumes by itself when the bridge goes away."""
        stream = _core.WatchStream(self, after_revision)
        while True:
            batch = stream.next(self, 1024, timeout)
            if batch is None:
                return
            yield from self._changes(batch)

    async def changed(self, after: Optional[int] = None, timeout: Optional[float] = None):
        """asyncio: await the next revision after `after`, as wait_for_change()."""
        current = self._revision()
        if after is None:
            after = current
        elif current > after:
            return current
        notifier = self.__dict__.get("_notifier")
        if notifier is None:
            notifier = self.__dict__.setdefault("_notifier", _ChangeNotifier(self))
        future = notifier.wait(after, asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None  # wait_for cancelled the future: the notifier drops it

    async def awatch(self, after_revision: int = 0, timeout: Optional[float] = None):
        """asyncio: `async for change in d.awatch(...)`, as watch(): stops when timeout seconds
        pass without a change (None: never). Waits through changed(), so no executor thread."""
        stream = _core.WatchStream(self, after_revision)
        lag = 0.0
        while True:
            batch = stream.next(self, 1024, 0)  # what is there now, without waiting
            if batch is not None:
                lag = 0.0
                for change in self._changes(batch):
                    yield change
                continue
            if lag:
                # The dict announced a revision the stream has not received yet (a remote
                # stream behind the mirror): wait a little, longer each time, up to 50 ms.
                await asyncio.sleep(lag)
                lag = min(lag * 2, 0.05)
            if await self.changed(stream.revision, timeout) is None:
                return
            lag = lag or 0.001

    @staticmethod
    def _changes(batch):
        is_snapshot, snapshot_revision, items, changes, _ = batch
        if is_snapshot:
            yield Change(snapshot_revision, "snapshot", None, dict(items))
        for revision, op, key, value in changes:
            yield Change(revision, op, key, value)

    def status(self) -> dict:
        """A plain dict of diagnostics: sizes, revision, snapshot generation, lock holder (see
        docs/ for each field); a remote dict's comes from the bridge."""
        return self._status()

    def close(self) -> None:
        """Closes the handles (a local Dict unlinks the dict when this handle created it with
        auto_unlink). Idempotent. Nested dicts opened through it are closed too."""
        for child in self._children.values():
            child.close()
        notifier = self.__dict__.get("_notifier")
        if notifier is not None:
            notifier.stop()  # its thread waits on the dict: close() would find the dict busy
        self._close()
        _live.pop(id(self), None)

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed()

    def __enter__(self):
        """`with Dict(...) as d:` closes d at the end of the block."""
        return self

    def __exit__(self, *exc_info):
        """Closes the handle; never suppresses the exception."""
        self.close()
        return False

    # ---- hooks called by the C++ codec (clients/python/src/codec.h)
    def _encode_other(self, value):
        if _json_exact(value):
            try:
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                                  allow_nan=False)
                return TAG_JSON, text.encode("utf-8")
            except (UnicodeEncodeError, RecursionError):
                pass  # lone surrogates, deep nesting: the serializer keeps them exactly
        if self._serializer is pickle:
            return TAG_PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return self._serializer_tag, self._serializer.dumps(value)

    def _decode_other(self, tag, data):
        if tag == TAG_JSON:
            return json.loads(data)
        if tag == TAG_PICKLE:
            return pickle.loads(data)
        if tag == TAG_NESTED_DICT:
            # Only a child of this very dict is opened: a reference to any other dict (stored by
            # a raw writer) would make this reader open a dict it was never given.
            _core.check_nested_reference(self.name, data)
            return self._child(data.decode("utf-8"))
        if tag == self._serializer_tag:
            return self._serializer.loads(data)
        return data  # a tag this handle does not know (another client's): its raw bytes

    @staticmethod
    def _encode_key_other(key):
        return pickle.dumps(key, protocol=4)  # one fixed protocol: equal keys, equal bytes

    @staticmethod
    def _decode_key_other(data):
        return pickle.loads(data)

    def _child(self, name):
        child = self._children.get(name)
        if child is None or child.closed:
            child = self._open_child(name)
            self._children[name] = child
        return child


class Dict(_Mapping):
    """A dict in shared memory; see the package documentation.

    Dict(name=None, *, create=None, buffer_size=4 MiB, mode=0o600, auto_unlink=True,
         lock_timeout=10.0, serializer=pickle, serializer_tag=128)

    name: 1..200 characters of [A-Za-z0-9_.-]; None picks a random one (see .name).
    create: None attaches or creates; True must create (FileExistsError / shmdict.AlreadyExists
        if it exists); False must attach (FileNotFoundError / shmdict.NotFound if missing).
    buffer_size: the change log's size in bytes, used when creating.
    auto_unlink: when this handle created the dict, unlink it when the handle is closed or the
        interpreter exits.
    lock_timeout: seconds a write, or `with d.lock:`, waits for another holder of the lock.
    serializer: a module or object with dumps/loads for values that are neither native (None,
        bool, int within int64, float, str, bytes) nor exact JSON (dicts with str keys, lists);
        pickle by default (tag "pickle"), else stored under serializer_tag (128..255).

    d[k] = v, del d[k] and the other writes wait while another thread or process holds the
    lock (`with d.lock:`), up to lock_timeout, then raise shmdict.Timeout (a TimeoutError)
    naming the holder's pid. Reads never wait.

    Thread-safety: a Dict may be shared by threads; each thread gets its own core handle.
    """

    def __init__(self, name=None, *, create=None, buffer_size=4 << 20, mode=0o600,
                 auto_unlink=True, lock_timeout=10.0, serializer=pickle, serializer_tag=None):
        if serializer_tag is not None and not TAG_USER_FIRST <= serializer_tag <= 255:
            raise ValueError("serializer_tag must be in 128..255")
        self._open(name or "", create, int(buffer_size), int(mode), bool(auto_unlink),
                   float(lock_timeout))
        self._init_codec(serializer, serializer_tag)
        self._lock_timeout = float(lock_timeout)
        self._settings = {"buffer_size": buffer_size, "mode": mode, "lock_timeout": lock_timeout,
                          "serializer": serializer, "serializer_tag": serializer_tag}
        self.lock = Lock(self)
        _live[id(self)] = self

    @property
    def created(self) -> bool:
        """True if this handle created the dict."""
        return self._created()

    def __reduce__(self):
        # A `spawn`ed process (or any pickle) gets a handle attached by name, never an owner.
        settings = _serializer_for_pickle(self._reattach_settings())
        return (_reattach, (self.__class__, self.name, settings))

    def _reattach_settings(self) -> dict:
        """The constructor's keyword arguments that a re-attached copy needs."""
        return dict(self._settings)

    def nested(self, key) -> "Dict":
        """The child dict stored under key, created (with the reference) if the key is missing.
        Children are unlinked with their parent. shmdict.WrongType if key holds another value."""
        return self._child(self._nested(key))

    def dump(self) -> int:
        """Publishes a snapshot of the current state now; returns its generation."""
        return self._dump()

    def refresh(self, force: bool = False) -> None:
        """Catches up with the log now; force reloads from the latest snapshot and verifies it."""
        self._refresh(force)

    def unlink(self) -> None:
        """Removes the dict's names (and its children's) now; handles stay usable."""
        self._unlink()

    def _open_child(self, name):
        return Dict(name, create=False, auto_unlink=False, lock_timeout=self._lock_timeout,
                    serializer=self._serializer, serializer_tag=self._settings["serializer_tag"])


class RemoteDict(_Mapping):
    """A dict on another host or outside this container, reached through shmdict-bridge: the
    C++ RemoteDict (clients/cpp) bound as a MutableMapping. Returned by shmdict.connect().

    It offers Dict's mapping API, increment, compare_and_set, revision, wait_for_change, watch,
    changed/awatch, status and close, with the same value and key encodings, so both clients and
    C++ read each other's values. Not offered (they need shared memory): lock, nested() (reading
    a nested dict's value opens the child remotely), dump, refresh, unlink, created.

    mirror=True keeps a local copy fed by a Watch stream: reads are local and trail other
    clients' writes by the propagation delay, never this handle's own. mirror=False: every read
    asks the bridge. When the bridge goes away the handle reconnects by itself (reads serve the
    mirror meanwhile); calls that need the bridge raise shmdict.Unavailable (a ConnectionError).
    A missing dict raises NotFound (a FileNotFoundError): the bridge never creates one.

    Thread-safety: a RemoteDict may be shared by threads (they share one connection); calls
    release the GIL. After fork() the child must connect() again.
    """

    def __init__(self, address, name, *, mirror=True, timeout=10.0, serializer=pickle,
                 serializer_tag=None, token=None, tls_ca=None, tls_cert=None, tls_key=None):
        if serializer_tag is not None and not TAG_USER_FIRST <= serializer_tag <= 255:
            raise ValueError("serializer_tag must be in 128..255")
        self._connect(str(address), str(name), bool(mirror),
                      None if timeout is None else float(timeout), token or "",
                      str(tls_ca or ""), str(tls_cert or ""), str(tls_key or ""))
        self._init_codec(serializer, serializer_tag)
        # Kept to reconnect (children, pickles): the token travels with a pickled handle.
        self._settings = {"mirror": mirror, "timeout": timeout, "serializer": serializer,
                          "serializer_tag": serializer_tag, "token": token, "tls_ca": tls_ca,
                          "tls_cert": tls_cert, "tls_key": tls_key}
        self.address = str(address)
        _live[id(self)] = self

    def __reduce__(self):
        # A `spawn`ed process (or any pickle) connects again.
        return (_reconnect, (self.address, self.name, _serializer_for_pickle(dict(self._settings))))

    def _open_child(self, name):
        return RemoteDict(self.address, name, **self._settings)


def connect(address: str, name: str, *, mirror: bool = True, timeout: Optional[float] = 10.0,
            serializer=pickle, serializer_tag=None, token: Optional[str] = None,
            tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
            tls_key: Optional[str] = None) -> RemoteDict:
    """Opens the dict `name` through the shmdict-bridge at `address` ("unix:/path/to/socket",
    "host:port"). timeout: seconds for connecting (with a mirror: until it holds the whole
    dict) and for each call (None: no limit). NotFound (a FileNotFoundError) if the dict does
    not exist, Unavailable (a ConnectionError) if the bridge cannot be reached, ImportError if
    this shmdict was built without the bridge client (gRPC; pip install includes it).

    token: sent as "authorization: Bearer TOKEN" to a bridge started with --token-file
    (PermissionDenied, a PermissionError, without a known one, and for a write with a
    read-only token). tls_ca: PEM file of the CA that signed a TLS bridge's certificate;
    tls_cert and tls_key: this client's certificate for a bridge that demands mTLS."""
    return RemoteDict(address, name, mirror=mirror, timeout=timeout, serializer=serializer,
                      serializer_tag=serializer_tag, token=token, tls_ca=tls_ca,
                      tls_cert=tls_cert, tls_key=tls_key)
