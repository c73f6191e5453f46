"""shmdict.Dict's own behaviour: type and key round-trips through a second handle, errors, modes,
nested dicts (the mapping contract it shares with the remote dict is test_contract.py)."""

import collections
import enum
import fractions
import multiprocessing
import os
import pickle

import pytest

import helpers
import shmdict


class Color(enum.IntEnum):
    RED = 1


VALUES = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64, 1.5, float("inf"), -0.0, "", "text é ✓",
    b"", b"\x00\xff", [1, "a", None, [2.5]], {"a": {"b": [True, None]}}, (1, 2), {1: "a"},
    {"a": (1,)}, [float("nan")] * 0, collections.OrderedDict(a=1), Color.RED, {1, 2},
    fractions.Fraction(1, 3), "lone \udc80 surrogate",
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_with_their_type(d, name, value):
    d["k"] = value
    other = shmdict.Dict(name, create=False)  # a second handle reads it from shared memory
    got = other["k"]
    assert got == value and type(got) is type(value)
    other.close()


def test_nan_round_trips(d):
    d["k"] = float("nan")
    assert d["k"] != d["k"]


@pytest.mark.parametrize("key", ["s", "", "é", 0, 1, -5, 2**80, 2.5, b"bytes", b"", (1, "a"),
                                 frozenset({1}), None], ids=repr)
def test_keys_round_trip_with_their_type(d, name, key):
    d[key] = "v"
    other = shmdict.Dict(name, create=False)
    assert list(other) == [key] and type(list(other)[0]) is type(key)
    assert other[key] == "v"
    other.close()


def test_keys_equal_in_python_are_one_key(d):
    d[1] = "int"
    d[True] = "bool"
    d[1.0] = "float"
    assert len(d) == 1 and d[1] == "float"


def test_str_keys_never_collide_with_other_keys(d):
    # Whatever str a program uses, it cannot name the slot of an int, bytes or tuple key.
    d[1] = "int"
    d[b"1"] = "bytes"
    d["1"] = "str"
    d["\xffi1"] = "str that looks like the escape"
    assert d[1] == "int" and d[b"1"] == "bytes" and d["1"] == "str"
    assert len(d) == 4


def test_unhashable_keys_are_a_type_error(d):
    with pytest.raises(TypeError):
        d[[1]] = 1
    with pytest.raises(TypeError):
        d[[1]]


def test_create_modes_raise_the_expected_errors(name):
    with pytest.raises(FileNotFoundError) as e:
        shmdict.Dict(name, create=False)
    assert name in str(e.value) and isinstance(e.value, shmdict.NotFound)
    with shmdict.Dict(name, create=True) as d:
        assert d.created
        with pytest.raises(FileExistsError):
            shmdict.Dict(name, create=True)
        other = shmdict.Dict(name)  # attach-or-create attaches
        assert not other.created
        other.close()
    with pytest.raises(ValueError):
        shmdict.Dict("bad/name")


def test_random_name_and_auto_unlink():
    d = shmdict.Dict()
    name = d.name
    assert name and os.path.exists(f"/dev/shm/shmdict.{name}")
    d.close()
    assert not os.path.exists(f"/dev/shm/shmdict.{name}")


def test_closed_dict_raises_value_error(name):
    d = shmdict.Dict(name)
    d.close()
    d.close()  # idempotent
    with pytest.raises(ValueError):
        d["a"]
    with pytest.raises(shmdict.Closed):
        d["a"] = 1


NOBODY = (65534, 65534)
ANOTHER_USER = (65532, 65532)


def _run_as(user, body):
    """Runs body() in a forked child as user (uid, gid) when this process is root, which file
    modes do not bind (CI runs as root); otherwise as this user. Fails if body() raised."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])
            body()
            code = 0
        except BaseException:  # noqa: BLE001 -- reported through the exit code and stderr
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the check as uid {user[0]} failed (stderr)"


def test_permission_error_for_a_foreign_mode(name):
    """A dict's segment carries its mode (0600 by default), and another user is refused with
    PermissionError. The second user needs root to become; without it, the owner's part runs."""

    def create():
        shmdict.Dict(name, create=True, auto_unlink=False).close()  # outlives the child

    def attach():
        with pytest.raises(PermissionError) as e:
            shmdict.Dict(name, create=False)
        assert name in str(e.value) and isinstance(e.value, shmdict.Error)

    try:
        _run_as(NOBODY, create)
        st = os.stat(f"/dev/shm/shmdict.{name}")
        assert st.st_mode & 0o777 == 0o600
        if os.geteuid() == 0:
            assert st.st_uid == NOBODY[0]
            _run_as(ANOTHER_USER, attach)
    finally:
        shmdict.unlink_by_name(name, ignore_errors=True)


def test_custom_serializer_gets_its_own_tag(name):
    class Upper:
        @staticmethod
        def dumps(value):
            return repr(value).encode()

        @staticmethod
        def loads(data):
            return ("loaded", data.decode())

    with shmdict.Dict(name, serializer=Upper, serializer_tag=200) as d:
        d["x"] = (1, 2)
        d["native"] = "str stays native"
        assert d["x"] == ("loaded", "(1, 2)")
        assert d["native"] == "str stays native"
        plain = shmdict.Dict(name, create=False)
        assert plain["x"] == b"(1, 2)"  # a handle without that serializer sees the raw bytes
        plain.close()


class _RawTags(shmdict.Dict):
    """A Dict whose _encode_other stores the (tag, bytes) of a _Raw value as they are: the raw
    way a caller hands the core a tag and its bytes."""

    def _encode_other(self, value):
        if isinstance(value, _Raw):
            return value.tag, value.data
        return super()._encode_other(value)


class _Raw:
    def __init__(self, tag, data):
        self.tag, self.data = tag, data


@pytest.mark.parametrize("tag,data", [
    (2, b"\x01\x02\x03"),        # a 3-byte int
    (4, b"\x01\x01\x01\x01\x01"),  # a 5-byte bool
    (4, b"\x02"),                # a bool byte other than 0 and 1
    (3, b""),                    # a float of no bytes
    (1, b"\xff"),                # a str that is not UTF-8
    (1, b"\xed\xa0\x80"),        # a surrogate
    (5, b"{\"a\": 1} x"),         # JSON with trailing garbage
    (7, b"x"),                   # a null with bytes
    (6, b"other"),               # a nested-dict reference: only nested() stores one
])
def test_raw_values_must_be_a_valid_encoding_of_their_tag(name, tag, data):
    with _RawTags(name, create=True) as d:
        d["kept"] = 1
        with pytest.raises(shmdict.InvalidArgument, match="'bad'"):
            d["bad"] = _Raw(tag, data)
        with pytest.raises(shmdict.InvalidArgument, match="'bad'"):
            d.update({"other": 2, "bad": _Raw(tag, data)})
        with pytest.raises(shmdict.InvalidArgument, match="'bad'"):
            d.setdefault("bad", _Raw(tag, data))
        assert d.copy() == {"kept": 1}, "nothing was written"
        d["good"] = _Raw(2, (5).to_bytes(8, "little", signed=True))
        d["user"] = _Raw(200, b"\xff any bytes")
        with shmdict.Dict(name, create=False) as reader:  # decodes the stored bytes
            assert reader["good"] == 5 and reader["user"] == b"\xff any bytes"


def test_pickles_by_name(d):
    d["a"] = 1
    other = pickle.loads(pickle.dumps(d))
    assert other.name == d.name and other["a"] == 1 and not other.created
    other.close()
    assert d["a"] == 1  # the copy did not unlink the dict


def test_iteration_sees_one_revision(d):
    d.update({f"k{i}": i for i in range(1000)})
    keys = iter(d)
    d["new"] = 1
    assert len(list(keys)) == 1000


def test_nested_dicts_are_unlinked_with_the_parent(name):
    parent = shmdict.Dict(name, create=True)
    child = parent.nested("child")
    child["x"] = 1
    grandchild = child.nested("g")
    grandchild["y"] = 2
    assert parent["child"]["g"]["y"] == 2
    with pytest.raises(shmdict.WrongType):
        parent["s"] = "str"
        parent.nested("s")
    from conftest import segments
    assert len(segments(name)) >= 3
    parent.close()
    assert child.closed and grandchild.closed
    assert segments(name) == []


def test_watch_yields_a_flagged_snapshot_when_the_log_moved_on(name):
    with shmdict.Dict(name, buffer_size=64 << 10) as d:
        for i in range(3000):  # several times the 64 KiB log
            d[f"k{i % 50}"] = "x" * 100
        d.dump()
        first = next(d.watch(1, timeout=5))
        assert first.snapshot and first.op == "snapshot"
        assert first.value == d.copy() and first.revision == d.revision


def test_status(d):
    d["a"] = 1
    st = d.status()
    assert st["name"] == d.name and st["entries"] == 1 and st["revision"] == d.revision
    assert st["creator_pid"] == os.getpid() and st["lock_holder_pid"] == 0
    # Not a replica: the replica fields are there, empty.
    assert st["replica_of"] == "" and st["replica_listen"] == ""
    assert st["upstream_revision"] == 0 and st["upstream_connected"] is False


class _UsesTheDictWhilePickled:
    """A value whose pickling reads and writes the same dict (re-entering the handle)."""

    dict_ = None

    def __reduce__(self):
        self.dict_[(1, "re-entrant key")] = self.dict_.get("other", 0) + 1
        return (_UsesTheDictWhilePickled, ())


def test_encoding_that_uses_the_same_dict_does_not_corrupt_the_call(d):
    d["other"] = 41
    _UsesTheDictWhilePickled.dict_ = d
    d[("k", 1)] = _UsesTheDictWhilePickled()
    assert isinstance(d[("k", 1)], _UsesTheDictWhilePickled)
    assert d[(1, "re-entrant key")] == 42
    assert sorted(map(repr, d)) == sorted(map(repr, ["other", ("k", 1), (1, "re-entrant key")]))


class _CountsUnpickling:
    loads = 0

    def __reduce__(self):
        return (_CountsUnpickling._load, ())

    @staticmethod
    def _load():
        _CountsUnpickling.loads += 1
        return _CountsUnpickling()


def test_membership_does_not_decode_the_value(d):
    d[("k",)] = _CountsUnpickling()
    before = _CountsUnpickling.loads
    assert ("k",) in d and ("other",) not in d and "k" not in d
    assert _CountsUnpickling.loads == before


def test_errors_carry_the_status_code_and_are_builtin_exceptions(name):
    with pytest.raises(shmdict.NotFound) as e:
        shmdict.Dict(name, create=False)
    assert e.value.code == "NOT_FOUND" and isinstance(e.value, shmdict.Error)
    assert not isinstance(e.value, shmdict.FailedPrecondition)
    assert issubclass(shmdict.WrongType, shmdict.FailedPrecondition)
    assert issubclass(shmdict.WrongType, TypeError)
    assert not issubclass(shmdict.FailedPrecondition, TypeError)


def _explode():
    raise RuntimeError("this value cannot be unpickled")


class Unpicklable:
    """Pickles fine, fails to unpickle: the probe for calls that decode what they remove."""

    def __reduce__(self):
        return (_explode, ())


def test_pop_and_popitem_keep_a_value_that_fails_to_decode(d):
    d["k"] = Unpicklable()
    with pytest.raises(RuntimeError):
        d.pop("k")
    assert "k" in d
    with pytest.raises(RuntimeError):
        d.popitem()
    assert "k" in d and len(d) == 1
    d["k"] = 5
    assert d.pop("k") == 5 and "k" not in d


def test_infinite_and_huge_timeouts_mean_forever(name):
    for timeout in (float("inf"), 1e20):
        d = shmdict.Dict(name, create=True, lock_timeout=timeout)
        try:
            d["a"] = 1
            with d.lock:
                d["b"] = 2
            assert d.lock.acquire(timeout=timeout)
            d.lock.release()
            assert d.wait_for_change(after=0, timeout=timeout) >= 1
            assert next(d.watch(0, timeout=timeout)) is not None
        finally:
            d.close()


def test_negative_or_nan_timeouts_are_value_errors(d, name):
    for bad in (-1.0, float("nan"), float("-inf")):
        with pytest.raises(ValueError):
            shmdict.Dict(name, lock_timeout=bad)
    with pytest.raises(ValueError):
        d.wait_for_change(after=0, timeout=-1)
    with pytest.raises(ValueError):
        d.lock.acquire(timeout=-2)


def test_tuple_and_frozenset_keys_are_canonical(d):
    # {8, 16} and {16, 8} are equal, but collide in the hash table and iterate in insertion order.
    assert list({8, 16}) != list({16, 8})
    d[frozenset([8, 16])] = "s"
    assert d[frozenset([16, 8])] == "s" and len(d) == 1
    d[(1, "a")] = "t"
    assert d[(1.0, "a")] == "t" and d[(True, "a")] == "t" and len(d) == 2
    key = (1, "é", b"\xff", 2.5, None, (3, frozenset({"x"})), 2**70)
    d[key] = "nested"
    assert d[key] == "nested"
    assert set(d.keys()) == {frozenset({8, 16}), (1, "a"), key}
    assert all(type(k) in (tuple, frozenset) for k in d.keys())
    d[()] = "empty tuple"
    d[frozenset()] = "empty set"
    assert (d[()], d[frozenset()], len(d)) == ("empty tuple", "empty set", 5)


def test_frozenset_keys_written_by_a_process_with_another_hash_seed(d):
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=helpers.set_composite_keys, args=(d,))
    try:
        child.start()
    finally:
        killed = helpers.stop([child], 60)
    assert killed == [] and child.exitcode == 0
    assert d[frozenset({"d", "c", "b", "a"})] == 1
    assert d[("x", frozenset({"z", "y"}))] == 2
    assert len(d) == 2
