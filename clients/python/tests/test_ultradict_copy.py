"""The UltraDict drop-in's local copy stays exact where threads meet it: a revision is in the
copy all or none."""

import threading

from shmdict import ultradict
from shmdict.ultradict import UltraDict

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
