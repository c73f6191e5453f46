"""The UltraDict drop-in's local copy stays exact where threads, forks and a re-created name meet
it: a revision is in the copy all or none, a child forked in the middle of a catch-up lists
everything again, the commit word and the watch stream are the handle's own dict's, and a new
handle starts from a listing."""

import multiprocessing
import threading

import shmdict
from shmdict import ultradict
from shmdict.ultradict import UltraDict

import helpers

KEYS = [f"k{j}" for j in range(40)]


class _WatchedMutex:
    """The copy's mutex, telling when one given thread starts waiting for it."""

    def __init__(self, lock, watched, waiting):
        self._lock, self._watched, self._waiting = lock, watched, waiting

    def __enter__(self):
        if threading.current_thread() is self._watched[0]:
            self._waiting.set()
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()

    def locked(self):
        return self._lock.locked()


def test_a_revision_is_in_the_copy_all_or_none_for_every_thread(name, monkeypatch):
    reader = UltraDict(name=name, create=True)
    writer = UltraDict(name=name)  # another handle: its update reaches `reader` by a catch-up
    reader.update(dict.fromkeys(KEYS, 0))
    writer.update(dict.fromkeys(KEYS, 1))  # one revision of 40 keys

    paused, resume, waiting, done = (threading.Event() for _ in range(4))
    real_setitem = ultradict._dict_setitem

    calls = []

    def slow_setitem(d, key, value):
        if d is reader and threading.current_thread() is catching_up:
            calls.append(key)
            if len(calls) == 2:
                paused.set()  # one key of the revision is in the copy, 39 are not yet
                resume.wait(60)
        real_setitem(d, key, value)

    checker, seen = [None], []
    reader._mutex = _WatchedMutex(reader._mutex, checker, waiting)
    monkeypatch.setattr(ultradict, "_dict_setitem", slow_setitem)
    catching_up = threading.Thread(target=reader.copy)
    checker[0] = threading.Thread(target=lambda: (seen.append([reader[k] for k in KEYS]),
                                                  done.set()))
    try:
        catching_up.start()
        assert paused.wait(60)
        checker[0].start()
        # The checker either reads without the mutex (the copy claims to be current) or waits
        # for the catch-up to finish: let it go as far as it can before the catch-up goes on.
        while not (done.is_set() or waiting.is_set()):
            done.wait(0.001)
        resume.set()
        catching_up.join()
        checker[0].join()
        assert seen == [[1] * len(KEYS)], "a thread read a revision half applied by a catch-up"
        assert reader.copy() == dict.fromkeys(KEYS, 1)
    finally:
        resume.set()
        catching_up.join()
        if checker[0].ident is not None:
            checker[0].join()
        writer.close()
        reader.close()


def _compare_with_a_fresh_handle(u, conn):
    fresh = UltraDict(name=u.name, create=False, auto_unlink=False)
    conn.send((u.copy(), dict(dict.items(u)), fresh.copy()))
    fresh.close()


def test_a_child_forked_in_the_middle_of_a_catch_up_lists_everything_again(name, monkeypatch):
    owner = UltraDict(name=name, create=True)
    owner.update({f"a{i}": i for i in range(20)})
    u = UltraDict(name=name)
    owner["y"] = 0
    u.copy()  # u's watch stream has read up to here
    # u's own writes go into its copy without the stream: they overwrite the log (1 MiB) the
    # stream has not read, so its next batch is a listing of everything. A stream opened at u's
    # revision after the full dump would read changes only.
    for i in range(15):
        u["big"] = str(i) * 100_000
    u.dump()
    u["s"] = 1
    u["s"] = 2
    owner["x"] = 1  # the change u has to catch up with

    paused, resume = threading.Event(), threading.Event()
    calls = []
    real_setitem = ultradict._dict_setitem

    def slow_setitem(d, key, value):
        real_setitem(d, key, value)
        if d is u and threading.current_thread() is catching_up:
            calls.append(key)
            if len(calls) == 3:  # the listing is half written into the copy
                paused.set()
                resume.wait(60)

    monkeypatch.setattr(ultradict, "_dict_setitem", slow_setitem)
    catching_up = threading.Thread(target=u.copy)
    catching_up.start()
    child = None
    try:
        assert paused.wait(60), "the catch-up did not list everything"
        receive, send = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=_compare_with_a_fresh_handle, args=(u, send))
        child.start()
        send.close()
        assert receive.poll(60)
        copy, storage, truth = receive.recv()
        resume.set()
        catching_up.join()
        assert len(truth) == 24 and truth["x"] == 1
        assert copy == truth and storage == truth
        assert u.copy() == truth  # and the parent finished its own catch-up
    finally:
        resume.set()
        catching_up.join()
        killed = helpers.stop([child])
        u.close()
        owner.close()
    assert killed == [] and child.exitcode == 0


def test_the_commit_word_is_the_handles_own_dict_when_the_name_is_created_again(
        name, monkeypatch):
    with shmdict.Dict(name, create=True, auto_unlink=False) as original:
        original.update({"a": 1, "b": 2})
    impostor = []
    real_open = ultradict._Handle._open

    def open_then_recreate(self, *args):
        real_open(self, *args)
        # Between the engine's open and the drop-in's mapping of the commit word by name: the
        # name now means another, empty dict.
        shmdict.unlink_by_name(name)
        impostor.append(shmdict.Dict(name, create=True, auto_unlink=False))

    monkeypatch.setattr(ultradict._Handle, "_open", open_then_recreate)
    u = UltraDict(name=name, create=False, auto_unlink=False)
    monkeypatch.undo()
    try:
        assert u.copy() == {"a": 1, "b": 2} and u["a"] == 1
        impostor[0]["z"] = 0  # moves the other dict's word, never this one's
        u["c"] = 3
        assert u.copy() == {"a": 1, "b": 2, "c": 3} and "z" not in u
        # A write the copy did not make itself (the engine handle under it: no other handle can
        # find this dict any more) reaches it by a catch-up, never through a stream of the other.
        u._h["d"] = 4
        assert u["d"] == 4 and u.copy() == {"a": 1, "b": 2, "c": 3, "d": 4}
    finally:
        u.close()
        impostor[0].close()
        shmdict.unlink_by_name(name)


_decodes = []


def _decode_counted(value):
    _decodes.append(value)
    return Counted(value)


class Counted(int):
    """An int whose every decoding (unpickling) is counted."""

    def __reduce__(self):
        return (_decode_counted, (int(self),))


def test_a_new_handle_starts_from_a_listing_not_a_replay_of_the_log(name):
    owner = UltraDict(name=name, create=True)
    for i in range(300):  # 300 revisions in the log, one key in the dict
        owner["k"] = Counted(i)
    _decodes.clear()
    other = UltraDict(name=name)
    try:
        assert other.copy() == {"k": 299}
        assert _decodes == [299]  # one value decoded, not the 300 the log holds
        owner["k"] = Counted(300)
        assert other["k"] == 300 and _decodes == [299, 300]  # and then only the change
    finally:
        other.close()
        owner.close()

