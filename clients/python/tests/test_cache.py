"""The read cache (clients/python/src/read_cache.h): decoded values are reused until their own
key changes, whoever changes it (another process, a clear, a dict recreated under the name), and
a caller that mutates a value it read never changes what the next read returns.

Reuse is observed through identity: a cached str is returned as the same object, a decoded one
is a new object each time."""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import helpers
import shmdict


def in_other_process(name, body):
    """Runs `body` (Python, with `d` the dict named `name`) in a new interpreter and waits."""
    code = "import shmdict\nd = shmdict.Dict(%r, create=False, auto_unlink=False)\n" % name
    code += textwrap.dedent(body) + "\nd.close()\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env=dict(os.environ))


def test_a_value_stays_cached_while_other_keys_change_in_another_process(d, name):
    d["s"] = "x" * 100
    d["other"] = 0
    first = d["s"]
    assert d["s"] is first
    in_other_process(name, "d['other'] = 1\nd['third'] = [1, 2]\ndel d['third']")
    assert d["other"] == 1
    assert d["s"] is first  # not decoded again: only the keys that changed were dropped


def test_another_processs_write_replaces_the_cached_value(d, name):
    d["l"] = [1, 2, 3]
    d["m"] = {"a": {"b": 1}}
    d["s"] = "old"
    assert (d["l"], d["m"], d["s"]) == ([1, 2, 3], {"a": {"b": 1}}, "old")
    in_other_process(name, "d['l'] = [4]\nd['m'] = {'a': {'b': 2}}\nd['s'] = 'new'")
    assert (d["l"], d["m"], d["s"]) == ([4], {"a": {"b": 2}}, "new")
    in_other_process(name, "del d['s']\nd.update({'l': 'now a str'})")
    assert "s" not in d
    assert d.get("s") is None
    assert d["l"] == "now a str"


def test_another_processs_clear_drops_every_cached_value(d, name):
    d.update({"a": 1, "b": [1], "c": {"x": 1}})
    assert [d["a"], d["b"], d["c"]] == [1, [1], {"x": 1}]
    in_other_process(name, "d.clear()\nd['a'] = 2")
    assert d["a"] == 2
    assert "b" not in d and "c" not in d
    with pytest.raises(KeyError):
        d["b"]


def test_writes_past_the_log_and_snapshots_drop_the_cache_safely(name):
    # The smallest log: the other process's writes lap it and snapshots replace the log's start,
    # so the cache's watcher finds its position gone.
    with shmdict.Dict(name, create=True, buffer_size=1 << 16) as d:
        d["kept"] = "same"
        d["changed"] = [0]
        d["late"] = {"v": 0}
        assert (d["kept"], d["changed"], d["late"]) == ("same", [0], {"v": 0})
        in_other_process(name, """
            for i in range(3000):
                d['filler'] = 'y' * 200
            d['changed'] = [1]
            d.dump()
            for i in range(3000):
                d['filler'] = i
            d['late'] = {'v': 1}
        """)
        assert d["kept"] == "same"
        assert d["changed"] == [1]
        assert d["late"] == {"v": 1}
        assert d["filler"] == 2999


def test_more_changes_than_the_cache_replays_still_read_the_latest(d, name):
    d["k"] = "before"
    d["untouched"] = "u"
    assert d["k"] == "before" and d["untouched"] == "u"
    in_other_process(name, "for i in range(5000):\n    d['n'] = i\nd['k'] = 'after'")
    assert d["k"] == "after"
    assert d["untouched"] == "u"
    assert d["n"] == 4999


def test_a_dict_deleted_and_created_again_is_read_as_an_uncached_read_would(name):
    old = shmdict.Dict(name, create=True, auto_unlink=False)
    try:
        old["a"] = "old"
        old["l"] = [1]
        assert old["a"] == "old" and old["l"] == [1]
        in_other_process_create(name)
        # This handle keeps the dict it mapped; its cache agrees with what the core reads.
        assert old["a"] == dict(old.items())["a"]
        assert old["l"] == dict(old.items())["l"]
        with shmdict.Dict(name, create=False, auto_unlink=False) as new:
            assert new["a"] == "new"
            assert new["l"] == [2]
            new["a"] = "newer"
            assert new["a"] == "newer"
    finally:
        old.close()
        shmdict.unlink_by_name(name)  # the recreated dict (auto_unlink=False everywhere)


def in_other_process_create(name):
    code = textwrap.dedent(f"""
        import shmdict
        shmdict.unlink_by_name({name!r})
        d = shmdict.Dict({name!r}, create=True, auto_unlink=False)
        d['a'] = 'new'
        d['l'] = [2]
        d.close()
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("value", [
    [1, 2, [3, 4], {"x": [5]}],
    {"a": 1, "b": [1, 2], "c": {"d": {"e": []}}},
    [{"k": "v"}] * 3,
])
def test_mutating_a_value_read_never_changes_the_next_read(d, value):
    import copy
    d["v"] = value
    expected = copy.deepcopy(value)
    for _ in range(3):  # the miss that fills the cache, then hits
        got = d["v"]
        assert got == expected
        if isinstance(got, list):
            got.append("junk")
            got[2 if len(got) > 3 else 0] = "junk"
            for item in got:
                if isinstance(item, (list, dict)):
                    item.clear()
        else:
            got["new"] = 1
            for v in got.values():
                if isinstance(v, (list, dict)):
                    v.clear()
            del got["a"]
    assert d["v"] == expected
    assert d.get("v") == expected


def test_mutating_the_value_written_never_changes_the_next_read(d):
    value = [1, [2]]
    d["v"] = value
    assert d["v"] == [1, [2]]
    value[1].append(3)
    value.append(4)
    assert d["v"] == [1, [2]]


def test_the_cache_stays_within_its_key_and_byte_bounds(d):
    d._set_read_cache_limits(3, 1 << 20)
    for i in range(10):
        d[f"k{i}"] = f"value {i}"
    for _ in range(2):
        for i in range(10):
            assert d[f"k{i}"] == f"value {i}"
            assert d._read_cache_info()["keys"] <= 3
    d._set_read_cache_limits(100, 64 << 10)
    d["big"] = "x" * (20 << 10)  # over a quarter of the bytes: never cached
    d["small"] = "y" * 100
    assert d["big"] == "x" * (20 << 10) and d["small"] == "y" * 100
    info = d._read_cache_info()
    assert info["keys"] == 1 and 0 < info["bytes"] <= 64 << 10
    assert d["big"] is not d["big"]  # decoded each time
    assert d["small"] is d["small"]
    for i in range(10):
        d[f"m{i}"] = "z" * (10 << 10)
        assert d[f"m{i}"] == "z" * (10 << 10)
        assert d._read_cache_info()["bytes"] <= 64 << 10
    d._set_read_cache_limits(0, 1 << 20)
    assert d["small"] == "y" * 100
    assert d._read_cache_info()["keys"] == 0


def test_values_of_unknown_mutability_are_decoded_each_time(d):
    d["set"] = {1, 2}  # pickled: a set is mutable and not copied by the cache
    first = d["set"]
    first.add(3)
    assert d["set"] == {1, 2}
    assert d["set"] is not d["set"]


def test_keys_of_every_cacheable_kind_are_dropped_when_they_change(d, name):
    keys = ["str", 7, 2.5, 3.0, True, b"raw"]
    for i, k in enumerate(keys):
        d[k] = f"v{i}"
    before = [d[k] for k in keys]
    in_other_process(name, "for i, k in enumerate(%r):\n    d[k] = 'w%%d' %% i" % (keys,))
    assert [d[k] for k in keys] != before
    assert d[b"raw"] == "w5" and d["str"] == "w0" and d[2.5] == "w2"
    assert d[3] == "w3" and d[1] == "w4"  # 3.0 is the key 3, True the key 1


class SwitchOnLoad:
    """Pickled as a call of load_switching_threads: reading it runs Python code that lets the
    thread named "decoder" stop mid-read until another thread wrote."""

    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        return (load_switching_threads, (self.payload,))


decoding = threading.Event()
written = threading.Event()


def load_switching_threads(payload):
    if threading.current_thread().name == "decoder":
        decoding.set()
        assert written.wait(60), "the writer never wrote"
    return payload


def read_while_another_thread_writes(reader, writer):
    """`reader` reads "k" (a pickled "old") in a thread whose decoding waits for `writer` to set
    "k" to "new"; returns what that thread read."""
    decoding.clear()
    written.clear()
    got = []
    decoder = threading.Thread(target=lambda: got.append(reader["k"]), name="decoder")
    decoder.start()
    try:
        assert decoding.wait(60)
        writer["k"] = "new"
    finally:
        written.set()
        decoder.join(60)
    return got


def test_a_value_read_while_another_thread_writes_its_key_is_not_cached(d):
    d["k"] = SwitchOnLoad("old")
    d["warm"] = 1
    assert d["warm"] == 1  # the cache follows the current revision
    assert read_while_another_thread_writes(d, d) == ["old"]
    # The value decoded before the write is not kept (the next read would drop it anyway here:
    # the revision moved).
    assert d._read_cache_info()["keys"] == 1  # "warm" only
    assert d["k"] == "new"


def test_a_mirror_reads_its_own_write_while_another_thread_decoded_the_old_value(bridge, name):
    import time

    with shmdict.Dict(name, create=True) as local, \
            shmdict.connect(bridge.address, name, mirror=True) as remote:
        local["k"] = SwitchOnLoad("old")
        local["warm"] = 1
        deadline = time.monotonic() + 30
        while remote.get("warm") != 1:  # the mirror caught up; nothing of "k" is cached
            assert time.monotonic() < deadline, "the mirror never saw the writes"
            time.sleep(0.01)
        assert remote._read_cache_info()["keys"] == 1
        assert read_while_another_thread_writes(remote, remote) == ["old"]
        # Kept, "old" would be read back until the mirror moves.
        assert remote._read_cache_info()["keys"] == 1
        assert remote["k"] == "new"


def test_a_forked_child_reads_what_its_parent_wrote_after_caching(d):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork")
    ctx = multiprocessing.get_context("fork")
    d["a"] = [1]
    assert d["a"] == [1]
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=helpers.read_in_child, args=(d, child_end))
    d["parent"] = "p"
    p.start()
    try:
        _, parent_value, items = parent_end.recv()
    finally:
        assert helpers.stop([p]) == []
    assert parent_value == "p" and items["a"] == [1]
    assert d["child"] == p.pid


def test_a_remote_mirrors_cache_follows_writes_and_hands_out_copies(bridge, name):
    import time

    with shmdict.Dict(name, create=True) as local, \
            shmdict.connect(bridge.address, name, mirror=True) as remote:
        local["l"] = [1, [2]]
        local["s"] = "same"
        deadline = time.monotonic() + 30
        while remote.get("l") != [1, [2]]:  # the mirror catches up
            assert time.monotonic() < deadline, "the mirror never saw the write"
            time.sleep(0.01)
        got = remote["l"]
        got.append(3)
        got[1].append(4)
        assert remote["l"] == [1, [2]]
        local["l"] = "changed"
        while remote.get("l") != "changed":
            assert time.monotonic() < deadline, "the mirror never saw the change"
            time.sleep(0.01)
        assert remote["s"] == "same"
        remote["l"] = [5]  # its own write is read back, not the cached old value
        assert remote["l"] == [5]


def test_get_shared_hands_out_the_cached_object_until_its_key_changes(d, name):
    d["l"] = [1, 2]
    first = d._get_shared("l")
    assert first == [1, 2] and d._get_shared("l") is first
    assert d["l"] is not first  # d[k] still copies
    in_other_process(name, "d['other'] = 1")
    assert d._get_shared("l") is first
    in_other_process(name, "d['l'] = [3]")
    assert d._get_shared("l") == [3]
    assert d._get_shared("missing", "default") == "default"
    assert d._get_shared("missing") is None
