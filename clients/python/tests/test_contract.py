"""The mapping contract, written once and run against every transport: a local shmdict.Dict and
shmdict.connect() through a real shmdict-bridge on a Unix socket, with and without its mirror.

Each remote test creates its dict locally (the bridge never creates one); the `name` fixture
checks that nothing is left in /dev/shm."""

import asyncio
import collections.abc

import pytest

import shmdict
from conftest import HAS_REMOTE, NO_REMOTE_REASON

TRANSPORTS = ["local", "remote_mirror", "remote_no_mirror"]


@pytest.fixture(params=TRANSPORTS)
def store(request, name):
    """The dict under test, reached through the transport the parameter names."""
    if request.param == "local":
        with shmdict.Dict(name, create=True) as d:
            yield d
        return
    if not HAS_REMOTE:
        pytest.skip(NO_REMOTE_REASON)
    bridge = request.getfixturevalue("bridge")
    with shmdict.Dict(name, create=True):
        mirror = request.param == "remote_mirror"
        with shmdict.connect(bridge.address, name, mirror=mirror) as r:
            yield r


def test_is_a_mutable_mapping(store, request):
    assert isinstance(store, collections.abc.MutableMapping)
    assert isinstance(store, collections.abc.Mapping)
    local = request.node.callspec.params["store"] == "local"
    assert isinstance(store, shmdict.Dict if local else shmdict.RemoteDict)


def test_dict_contract(store):
    d = store
    d["a"] = 1
    d.update({"b": 2}, c=3)
    d.update([("d", 4)])
    assert len(d) == 4 and "a" in d and "z" not in d
    assert sorted(d) == ["a", "b", "c", "d"]
    assert sorted(d.keys()) == ["a", "b", "c", "d"]
    assert sorted(d.values()) == [1, 2, 3, 4]
    assert sorted(d.items()) == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert ("a", 1) in d.items() and ("a", 2) not in d.items()
    assert d == {"a": 1, "b": 2, "c": 3, "d": 4} and d != {"a": 1}
    assert d.get("a") == 1 and d.get("z") is None and d.get("z", 0) == 0
    assert d.pop("a") == 1 and d.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop("a")
    assert d.setdefault("b", 9) == 2 and d.setdefault("e", 5) == 5 and d["e"] == 5
    del d["e"]
    with pytest.raises(KeyError):
        del d["e"]
    with pytest.raises(KeyError):
        d["e"]
    k, v = d.popitem()
    assert k in {"b", "c", "d"} and v == {"b": 2, "c": 3, "d": 4}[k] and k not in d
    copy = d.copy()
    assert type(copy) is dict and copy == d
    d.clear()
    assert len(d) == 0 and d == {}
    with pytest.raises(KeyError):
        d.popitem()


def test_update_is_one_revision(store):
    before = store.revision
    store.update({f"k{i}": i for i in range(100)})
    assert store.revision == before + 1


def test_increment_and_compare_and_set(store):
    d = store
    assert d.increment("n") == 1 and d.increment("n", 41) == 42
    d["s"] = "x"
    with pytest.raises(shmdict.WrongType) as e:
        d.increment("s")
    assert isinstance(e.value, TypeError) and d.name in str(e.value)
    d["big"] = 2**63 - 1
    with pytest.raises(OverflowError):
        d.increment("big")
    assert d.compare_and_set("c", shmdict.ABSENT, "v1")
    assert not d.compare_and_set("c", shmdict.ABSENT, "v2")
    assert d.compare_and_set("c", "v1", None) and d["c"] is None
    assert d.compare_and_set("c", None, shmdict.ABSENT) and "c" not in d


def test_compare_and_set_compares_non_native_values_with_equality(store):
    d = store
    # Equal in Python, encoded apart: JSON keeps key order; a set's pickle follows its layout.
    d["j"] = {"a": 1, "b": 2}
    assert d.compare_and_set("j", {"b": 2, "a": 1}, [1])
    assert d["j"] == [1]
    d["s"] = {8, 16}
    assert d.compare_and_set("s", {16, 8}, shmdict.ABSENT) and "s" not in d
    assert not d.compare_and_set("j", {"a": 1}, [2]) and d["j"] == [1]
    assert not d.compare_and_set("missing", [1], [2]) and "missing" not in d


def test_wait_for_change_and_watch(store):
    d = store
    rev = d.revision
    assert d.wait_for_change(rev, timeout=0.05) is None
    d["a"] = 1
    assert d.wait_for_change(rev, timeout=10) == rev + 1
    d["b"] = 2
    del d["a"]
    d.clear()
    changes = []
    for c in d.watch(rev, timeout=10):
        changes.append(c)
        if len(changes) == 4:
            break
    assert [(c.op, c.key, c.value) for c in changes] == [
        ("set", "a", 1), ("set", "b", 2), ("delete", "a", None), ("clear", None, None)]
    assert [c.revision for c in changes] == [rev + 1, rev + 2, rev + 3, rev + 4]
    # Nothing after the clear: a watch that resumes there ends empty once its timeout passed.
    assert list(d.watch(rev + 4, timeout=0.05)) == []


def test_asyncio_changed_and_awatch(store):
    d = store

    async def main():
        rev = d.revision
        waiter = asyncio.ensure_future(d.changed(rev, timeout=10))
        stream = d.awatch(rev)
        await asyncio.sleep(0)
        d["a"] = 1
        assert await waiter == rev + 1
        change = await asyncio.wait_for(stream.__anext__(), 10)
        assert (change.revision, change.op, change.key, change.value) == (rev + 1, "set", "a", 1)
        assert await d.changed(d.revision, timeout=0.05) is None
        await stream.aclose()

    asyncio.run(main())
