"""shmdict.ultradict.UltraDict runs UltraDict programs: the behaviour of UltraDict's own tests
and examples, plus the places where the drop-in is deliberately safer."""

import multiprocessing
import os
import pickle

import pytest

from conftest import segments
from shmdict.ultradict import UltraDict

import helpers


@pytest.fixture
def ultra(name):
    u = UltraDict(name=name, create=True)
    yield u
    u.close()


def test_two_handles_see_each_others_writes(ultra):
    other = UltraDict(name=ultra.name)
    for i in range(50):
        ultra[i] = i
    for i in range(50, 100):
        other[i] = i
    assert len(ultra) == len(other) == 100
    assert ultra.items() == other.items()
    other.close()


def test_a_value_larger_than_the_buffer_works(ultra):
    size = 2 * ultra.buffer_size
    ultra["huge"] = " " * size
    assert len(ultra.data["huge"]) == size
    other = UltraDict(name=ultra.name)
    assert len(other.data["huge"]) == size
    other.close()


def test_parameters_are_accepted_and_the_lock_is_shared(name):
    ultra = UltraDict(name=name, shared_lock=True, buffer_size=4096 * 8, full_dump_size=4096 * 8)
    other = UltraDict(name=ultra.name)
    assert isinstance(ultra.lock, ultra.SharedLock) and isinstance(other.lock, other.SharedLock)
    assert ultra.buffer_size == other.buffer_size >= 4096 * 8
    other.close()
    ultra.close()


def test_initial_data_and_the_dict_api(name):
    ultra = UltraDict({"a": 1}, name=name, b=2)
    assert ultra == {"a": 1, "b": 2} and repr(ultra) == repr({"a": 1, "b": 2})
    assert dict(ultra.data) == {"a": 1, "b": 2}
    with pytest.raises(TypeError):
        ultra.data["c"] = 3  # a read-only view
    ultra.dump()
    ultra.load(force=True)
    ultra.apply_update()
    assert ultra.full_dump_counter >= 1 and ultra.status()["entries"] == 2
    ultra.close(unlink=True)
    assert segments(name) == []


def test_create_modes_raise_ultradicts_exceptions(name):
    with pytest.raises(UltraDict.Exceptions.CannotAttachSharedMemory):
        UltraDict(name=name, create=False)
    ultra = UltraDict(name=name, create=True)
    with pytest.raises(UltraDict.Exceptions.AlreadyExists):
        UltraDict(name=name, create=True)
    ultra.close()
    with pytest.raises(UltraDict.Exceptions.AlreadyClosed):
        ultra["x"]


def test_unlink_by_name(name):
    ultra = UltraDict(name=name, auto_unlink=False)
    ultra.close()
    assert UltraDict.unlink_by_name(name) is True
    assert UltraDict.unlink_by_name(name, ignore_errors=True) is False
    with pytest.raises(UltraDict.Exceptions.CannotAttachSharedMemory):
        UltraDict.unlink_by_name(name)


def test_lock_api(ultra):
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    holder = ctx.Process(target=helpers.hold_lock_forever, args=(ultra, child_end))
    try:
        holder.start()
        assert parent_end.poll(60)
        pid = parent_end.recv()
        with pytest.raises(UltraDict.Exceptions.CannotAcquireLock) as e:
            ultra.lock.acquire(block=False)
        assert e.value.blocking_pid == pid
        with pytest.raises(UltraDict.Exceptions.CannotAcquireLockTimeout) as e:
            with ultra.lock(timeout=0.05, steal_after_timeout=True):
                pass
        assert e.value.blocking_pid == pid and e.value.time_passed >= 0.05
    finally:
        helpers.stop([holder], 30, kill=True)
    # The killed holder is recovered by the core: no stealing needed.
    with ultra.lock:
        assert ultra.lock.acquire() is True  # re-entrant, as UltraDict's
        assert ultra.lock.release() is True
    assert ultra.lock.release() is False


def counter_worker(ultra, count):
    for _ in range(count):
        with ultra.lock:
            ultra["counter"] += 1


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parallel_example_counts_exactly(ultra, method):
    # UltraDict's examples/parallel.py: two processes increment one counter under the lock.
    ctx = multiprocessing.get_context(method)
    ultra["counter"] = 0
    procs = [ctx.Process(target=counter_worker, args=(ultra, 2000)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
    finally:
        killed = helpers.stop(procs)
    assert killed == [], "a worker hung"
    assert [p.exitcode for p in procs] == [0, 0]
    assert ultra["counter"] == 4000


def test_recurse_nested_example_and_cleanup(name):
    # UltraDict's examples/nested.py
    ultra = UltraDict(name=name, recurse=True)
    ultra["nested"] = {"deeper": {0: 1}}
    other = UltraDict(name=name)  # attaching without recurse still reads the nested dicts
    other["nested"]["deeper"][0] += 1
    assert repr(ultra) == repr({"nested": {"deeper": {0: 2}}})
    assert isinstance(ultra["nested"], UltraDict) and isinstance(other["nested"], UltraDict)
    assert len(segments(name)) >= 3
    other.close()
    ultra.close()
    assert segments(name) == []


def test_pickles_for_spawn_without_taking_ownership(ultra):
    ultra["a"] = 1
    copy = pickle.loads(pickle.dumps(ultra))
    assert isinstance(copy, UltraDict) and copy["a"] == 1 and copy.name == ultra.name
    copy.close()
    assert os.path.exists(f"/dev/shm/shmdict.{ultra.name}")
