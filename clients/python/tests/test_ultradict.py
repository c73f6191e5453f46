"""shmdict.ultradict.UltraDict runs UltraDict programs: the behaviour of UltraDict's own tests
and examples, plus the places where the drop-in is deliberately safer."""

import json
import marshal
import multiprocessing
import os
import pickle

import pytest

from conftest import segments
from shmdict import _core, ultradict
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
    assert ultra.data == {"a": 1, "b": 2} and type(ultra.data) is dict
    ultra.dump()
    ultra.load(force=True)
    ultra.apply_update()
    assert ultra.full_dump_counter >= 1 and ultra.status()["shmdict"]["entries"] == 2
    assert ultra.close(unlink=True) == {"a": 1, "b": 2}
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
    with helpers.lock_holder(ultra) as pid:
        with pytest.raises(UltraDict.Exceptions.CannotAcquireLock) as e:
            ultra.lock.acquire(block=False)
        assert e.value.blocking_pid == pid
        with pytest.raises(UltraDict.Exceptions.CannotAcquireLockTimeout) as e:
            with ultra.lock(timeout=0.05, steal_after_timeout=True):
                pass
        assert e.value.blocking_pid == pid and e.value.time_passed >= 0.05
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
    other = UltraDict(name=name)  # recurse is the dict's, not the attacher's
    other["nested"]["deeper"][0] += 1
    assert repr(ultra) == repr({"nested": {"deeper": {0: 2}}})
    assert isinstance(ultra["nested"], UltraDict) and isinstance(other["nested"], UltraDict)
    assert len(segments(name)) >= 3
    other.close()
    ultra.close()
    assert segments(name) == []


def test_a_serializer_module_pickles_by_name(name):
    ultra = UltraDict(name=name, serializer=marshal)
    ultra["t"] = (1, 2)  # not exact JSON: through the serializer
    copy = pickle.loads(pickle.dumps(ultra))
    assert copy.serializer is marshal and copy["t"] == (1, 2)
    copy.close()
    ultra.close()


def test_pickles_for_spawn_without_taking_ownership(ultra):
    ultra["a"] = 1
    copy = pickle.loads(pickle.dumps(ultra))
    assert isinstance(copy, UltraDict) and copy["a"] == 1 and copy.name == ultra.name
    copy.close()
    assert os.path.exists(f"/dev/shm/shmdict.{ultra.name}")


# ---- UltraDict's own tests (tests/tests.py), ported: its code cannot run in CI

def test_upstream_huge_value_counts_as_one_full_dump(ultra):
    assert ultra.full_dump_counter == 0
    ultra["huge"] = " " * 1_000_000
    assert ultra.full_dump_counter == 1
    assert len(ultra.data["huge"]) == 1_000_000
    other = UltraDict(name=ultra.name)
    assert len(other.data["huge"]) == 1_000_000
    other.close()


def test_upstream_iter_and_items(ultra):
    other = UltraDict(name=ultra.name)
    ultra[1] = 1
    ultra[2] = 2
    assert sum(1 for _ in other.items()) == 2
    assert ultra.items() == other.items()
    other.close()


def test_upstream_delete_every_key(name):
    ultra = UltraDict(name=name, buffer_size=10_000_000)
    for i in range(20_000):
        ultra[i] = "x" * 1000
    for i in list(ultra.keys()):
        del ultra[i]
    assert len(ultra) == 0
    ultra.close()


def fds_on_dev_shm():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/dev/shm/"):
            found.append(target)
    return found


def test_upstream_cleanup_closes_every_file_on_del(name):
    # UltraDict's test counts the files exactly (4 for a dict, 12 nested); the engine opens a
    # different number (the main segment per handle, a watch stream's handle, snapshots, the
    # commit word's mapping). What must hold is its "none left after del".
    before = fds_on_dev_shm()
    ultra = UltraDict(name=name, nested={1: 1})
    assert len(fds_on_dev_shm()) > len(before)
    del ultra
    assert fds_on_dev_shm() == before
    ultra = UltraDict(name=name, nested={1: 1}, recurse=True)
    assert isinstance(ultra["nested"], UltraDict)
    del ultra
    assert fds_on_dev_shm() == before
    assert segments(name) == []


def test_upstream_export_as_pure_dict(name):
    value = {"1": "hello", "2": 5, "3": {"1": 1, "2": {"1": True, "2": None, "3": [1, 2, 3]},
                                         "3": [4, 5, 6, {"7": 8}]}}
    ultra = UltraDict(value, name=name, recurse=True)
    assert isinstance(ultra["3"]["2"], UltraDict)
    pure = ultra.as_pure_dictionary()
    assert pure == value and type(pure["3"]["2"]) is dict
    assert UltraDict.as_pure_dictionary(ultra) == value
    ultra.close()


def test_upstream_oop_example_uses_it_as_an_instance_dict(name):
    class Shared:
        def __init__(self):
            object.__setattr__(self, "__dict__", UltraDict(name=name))

        def __getattr__(self, attr):
            return self.__dict__[attr]

        def __setattr__(self, attr, value):
            self.__dict__[attr] = value

    first, second = Shared(), Shared()
    first.something = "some value"
    assert second.something == "some value"
    second.__dict__.close()
    first.__dict__.close()


def test_log_attribute_takes_upstreams_calls():
    UltraDict.log.disable(UltraDict.log.CRITICAL)
    UltraDict.log.set_level(UltraDict.log.Levels.error)


# ---- a dict subclass holding the local copy

def test_it_is_a_dict_that_c_code_reads(ultra):
    other = UltraDict(name=ultra.name)
    ultra.update({"a": 1, "b": [1, 2]})
    assert isinstance(other, dict) and isinstance(other, UltraDict)
    assert json.loads(json.dumps(other)) == {}  # C code reads the copy as of the last access
    assert len(other) == 2
    assert json.loads(json.dumps(other)) == {"a": 1, "b": [1, 2]}
    assert other | {"c": 3} == {"a": 1, "b": [1, 2], "c": 3}
    assert {"c": 3} | other == {"c": 3, "a": 1, "b": [1, 2]}
    other |= {"c": 3}
    assert ultra["c"] == 3 and ultra == {"a": 1, "b": [1, 2], "c": 3} and ultra != {}
    assert dict(ultra) == ultra.copy() == ultra.data == {"a": 1, "b": [1, 2], "c": 3}
    assert ultra.has_key("a") and not ultra.has_key("z")
    other.close()


def test_the_local_copy_follows_every_kind_of_change(ultra):
    other = UltraDict(name=ultra.name)
    ultra.update({i: i for i in range(10)})
    assert other[5] == 5
    kept = other["list"] = [1, 2]
    assert other["list"] is kept  # the object written is the one kept, as UltraDict's
    del ultra[5]
    ultra[6] = "six"
    assert 5 not in other and other[6] == "six" and other.get(5, "gone") == "gone"
    assert other.pop(7) == 7 and 7 not in ultra
    assert other.setdefault(8, 0) == 8 and other.setdefault("new", 0) == 0 and ultra["new"] == 0
    ultra.clear()
    assert len(other) == 0 and other.data == {} and json.dumps(other) == "{}"
    ultra["x"] = 1
    assert other.popitem() == ("x", 1) and len(ultra) == 0
    other.close()


def test_a_copy_the_log_no_longer_reaches_is_listed_again(name):
    ultra = UltraDict(name=name, buffer_size=1)
    other = UltraDict(name=name)
    before = other.full_dump_counter
    for i in range(40_000):  # several logs of 1 MiB
        ultra[i % 1000] = "v" * 100 + str(i)
    assert other[999] == "v" * 100 + "39999" and len(other) == 1000
    assert other.full_dump_counter > before  # it listed everything again
    other.close()
    ultra.close()


def test_data_is_the_local_copy_as_of_the_last_access(ultra):
    other = UltraDict(name=ultra.name)
    ultra["k"] = 1
    assert type(other.data) is dict and "k" not in other.data
    assert other["k"] == 1 and other.data["k"] == 1
    other.close()


def test_fromkeys_get_memory_and_append_update(name):
    made = UltraDict.fromkeys(["a", "b"], 0)
    assert made == {"a": 0, "b": 0} and isinstance(made, UltraDict)
    made.close()
    memory = UltraDict.get_memory(create=True, name=name + "_memory", size=100)
    with pytest.raises(UltraDict.Exceptions.AlreadyExists):
        UltraDict.get_memory(create=True, name=name + "_memory", size=100)
    attached = UltraDict.get_memory(create=False, name=name + "_memory")
    assert attached.size >= 100
    attached.close()
    memory.close()
    memory.unlink()
    with pytest.raises(UltraDict.Exceptions.CannotAttachSharedMemory):
        UltraDict.get_memory(create=False, name=name + "_memory")
    ultra = UltraDict(name=name)
    ultra.append_update("k", 1)
    ultra.append_update("k", None, delete=True)
    ultra.append_update("missing", None, delete=True)
    assert ultra == {}
    ultra.close()


def test_close_returns_the_contents_and_unlink_closes(name, capsys):
    ultra = UltraDict({"a": 1}, name=name)
    ultra.print_status(stderr=True)
    assert "update_stream_position" in capsys.readouterr().err
    status = ultra.status()
    for key in ("name", "buffer_size", "lock", "shared_lock", "update_stream_position",
                "update_stream_position_remote", "full_dump_counter", "full_dump_counter_remote",
                "full_dump_memory_name_remote", "lock_pid_remote", "lock_remote", "recurse",
                "recurse_remote", "closed", "auto_unlink", "shmdict"):
        assert key in status, key
    other = UltraDict(name=name)
    assert other.unlink() == {"a": 1} and other.closed and segments(name) == []
    with pytest.raises(UltraDict.Exceptions.AlreadyClosed):
        other["a"]
    assert ultra.close() == {"a": 1} and ultra.close() is None
    assert repr(ultra) == "{'a': 1}"  # the last copy, as UltraDict prints after close


# ---- recurse lives in the dict

def test_recurse_is_the_creators_for_every_attacher(name):
    ultra = UltraDict(name=name, recurse=True)
    other = UltraDict(name=name)
    assert other.recurse and other.status()["recurse_remote"]
    other["m"] = {"y": 0}
    other["m"]["x"] = 1  # a live nested dict, also for the attacher's own assignment
    assert ultra["m"] == {"y": 0, "x": 1} and isinstance(ultra["m"], UltraDict)
    other["m"]["deeper"] = {"z": 1}  # a child carries its parent's recurse
    ultra["m"]["deeper"]["z"] += 1
    assert other["m"]["deeper"]["z"] == 2
    with pytest.raises(UltraDict.Exceptions.ParameterMismatch):
        UltraDict(name=name, recurse=False)
    plain = UltraDict(name=name + ".plain")
    plain["m"] = {"y": 0}
    assert type(plain["m"]) is dict and not UltraDict(name=plain.name).recurse
    plain.close()
    other.close()
    ultra.close()
    assert segments(name) == [] and segments(name + ".plain") == []


# ---- UltraDict's lock surface

def test_lock_steal_reset_and_status(ultra):
    lock = ultra.lock
    assert lock.pid == os.getpid() and lock.has_lock == 0 and lock.get_remote_pid() == 0
    assert lock.steal(from_pid=12345) is False  # nothing to steal
    with lock:
        assert lock.has_lock == 1 and lock.get_remote_pid() == os.getpid()
        assert lock.status() == {"has_lock": 1, "lock_remote": 1, "pid": os.getpid(),
                                 "pid_remote": os.getpid()}
    lock.acquire()
    lock.acquire()
    lock.reset()  # every level this thread holds
    assert lock.has_lock == 0 and not lock.locked()
    with helpers.lock_holder(ultra) as pid:
        assert lock.steal(from_pid=pid) is False  # never from a live holder
        assert lock.steal_from_dead(from_pid=pid + 1) is False  # not the holder
    assert lock.steal_from_dead(from_pid=pid, release=True) is True  # the holder died
    assert lock.has_lock == 0 and not lock.locked()


def writer_in_child(ultra, count):
    for i in range(count):
        ultra[f"child{i}"] = i


def test_a_forked_child_keeps_a_current_copy(ultra):
    ultra["before"] = 1
    len(ultra)  # the parent's copy and stream exist before the fork
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=writer_in_child, args=(ultra, 100))
    try:
        child.start()
    finally:
        assert helpers.stop([child]) == []
    assert child.exitcode == 0
    assert len(ultra) == 101 and ultra["child99"] == 99


def test_threads_sharing_one_ultradict_keep_its_copy_exact(ultra):
    import threading
    other = UltraDict(name=ultra.name)  # a second writer: some writes miss the fast path

    def work(handle, t):
        for i in range(300):
            handle[(t, i % 7)] = i
            assert handle[(t, i % 7)] == i
            if i % 50 == 0:
                del handle[(t, i % 7)]

    threads = [threading.Thread(target=work, args=(ultra if t % 2 else other, t))
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = UltraDict(name=ultra.name)
    assert ultra.copy() == other.copy() == fresh.copy() == dict(ultra.data) == dict(other.data)
    assert len(fresh) == 4 * 7
    fresh.close()
    other.close()


def test_a_child_forked_while_a_thread_updates_the_copy_does_not_hang(ultra):
    ultra["before"] = 1
    ctx = multiprocessing.get_context("fork")
    child = None
    try:
        with ultra._mutex:  # as if another thread were catching up at the moment of the fork
            child = ctx.Process(target=writer_in_child, args=(ultra, 10))
            child.start()
    finally:
        assert helpers.stop([child], 60) == [], "the child hung on the parent's mutex"
    assert child.exitcode == 0 and ultra["child9"] == 9


def test_the_changed_check_is_one_load_from_the_dicts_own_mapping(ultra):
    # Every access asks "did the dict change since the local copy?": from the mapped commit word
    # when the segment has the engine's layout, not through a call into the engine (which a
    # layout number of the drop-in's own, left behind by a layout bump, silently caused).
    other = UltraDict(name=ultra.name)
    try:
        for handle in (ultra, other):
            assert isinstance(handle._word, memoryview), \
                f"{type(handle._word).__name__}: the check calls into the engine"
        # The word is the commit revision itself (the offsets are the layout version's): it
        # moves with every write, by any handle, to the revision the engine reports.
        word = ultradict._COMMIT_REVISION_WORD
        start = ultra._h._revision()
        for i in range(1, 6):
            other[i] = i
            assert ultra._word[word] == other._word[word] == ultra._h._revision() == start + i
        assert len(ultra) == 5 and ultra[5] == 5
    finally:
        other.close()


def write_by_name(name, count):
    """A writer in another process, attached by name with its own (unpatched) layout check."""
    ultra = UltraDict(name=name, create=False)
    for i in range(count):
        ultra[f"child{i}"] = i
    ultra.close()


def test_a_segment_of_another_layout_asks_the_engine_and_sees_other_writers(name, monkeypatch):
    monkeypatch.setattr(ultradict, "_LAYOUT_VERSION", _core.LAYOUT_VERSION + 1)
    ultra = UltraDict(name=name, create=True)
    try:
        assert isinstance(ultra._word, ultradict._AskEngine)
        ultra["before"] = 1
        assert len(ultra) == 1  # the copy is current before the other process writes
        child = multiprocessing.get_context("spawn").Process(target=write_by_name,
                                                             args=(name, 10))
        try:
            child.start()
        finally:
            assert helpers.stop([child]) == []
        assert child.exitcode == 0
        assert len(ultra) == 11 and ultra["child9"] == 9 and "child0" in ultra
        assert ultra.get("child5") == 5 and ultra.data["child5"] == 5
    finally:
        ultra.close()


def test_a_subclass_missing_hook_answers_missing_keys(name):
    class WithDefault(UltraDict):
        def __missing__(self, key):
            return f"no {key}"

    ultra = WithDefault(name=name)
    ultra["a"] = 1
    assert ultra["a"] == 1 and ultra["b"] == "no b" and "b" not in ultra
    with pytest.raises(KeyError):
        UltraDict(name=name)["b"]
    ultra.close()
