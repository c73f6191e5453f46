"""shmdict.connect(): the remote dict through a real shmdict-bridge on a Unix socket.

Each test starts its own bridge in a temporary directory, creates its dict locally (the bridge
never creates one), and kills the bridge and unlinks the dict at the end (the `name` fixture
checks that nothing is left in /dev/shm)."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import shmdict
from conftest import HAS_REMOTE, NO_REMOTE_REASON, Bridge

CLI = os.environ.get("SHMDICT_CLI")

pytestmark = pytest.mark.skipif(not HAS_REMOTE, reason=NO_REMOTE_REASON)


@pytest.fixture
def local(name):
    with shmdict.Dict(name, create=True) as handle:
        yield handle


@pytest.fixture(params=[True, False], ids=["mirror", "no_mirror"])
def remote(request, bridge, local):
    with shmdict.connect(bridge.address, local.name, mirror=request.param) as r:
        yield r


def eventually(predicate, timeout=30):
    """Waits for predicate() (another client's write reaching a mirror) with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def test_local_only_parts_are_absent(remote):
    for attr in ("lock", "nested", "dump", "refresh", "unlink"):
        assert not hasattr(remote, attr)
    status = remote.status()
    assert status["name"] == remote.name and status["revision"] >= 0
    assert status["mirror"] in (True, False)


VALUES = {"s": "é", "i": -3, "f": 1.5, "b": True, "n": None, "y": b"\x00\x01",
          "j": {"a": [1, None]}, "t": (1, 2), "ik": {1: "a"}, 7: "int key", (1, "x"): "tuple key"}


def test_values_cross_between_remote_local_and_the_cli(bridge, local):
    with shmdict.connect(bridge.address, local.name) as r:
        r.update(VALUES)
        assert local.copy() == VALUES and type(local["b"]) is bool
        if CLI:
            assert run(CLI, "get", local.name, "s") == "é\n"
            assert run(CLI, "get", local.name, "i") == "-3\n"
            assert run(CLI, "--remote", bridge.address, "get", local.name, "s") == "é\n"
        local["from_local"] = [1, 2]
        eventually(lambda: "from_local" in r)
        assert r["from_local"] == [1, 2] and r.copy() == dict(VALUES, from_local=[1, 2])
        if CLI:
            run(CLI, "set", local.name, "from_cli", "12", "--type", "int")
            eventually(lambda: "from_cli" in r)
            assert r["from_cli"] == 12 and type(r["from_cli"]) is int
    with shmdict.connect(bridge.address, local.name, mirror=False) as r:
        assert r.copy() == local.copy()


def test_watch_resumes_across_a_bridge_sigkill_with_no_gap_and_no_duplicate(bridge, local):
    local["x"] = 0
    with shmdict.connect(bridge.address, local.name) as r:
        start = local.revision
        stream = r.watch(start, timeout=60)
        local["a"] = 1
        first = next(stream)
        assert (first.revision, first.op, first.key, first.value) == (start + 1, "set", "a", 1)
        bridge.kill()
        for i in range(5):  # committed while the bridge is down
            local[f"down{i}"] = i
        bridge.start()
        local["after"] = True
        seen = [next(stream) for _ in range(6)]
        assert [c.revision for c in seen] == list(range(start + 2, start + 8))
        assert [c.key for c in seen] == [f"down{i}" for i in range(5)] + ["after"]
        assert not any(c.snapshot for c in seen)
        eventually(lambda: r.get("after") is True)  # the mirror resumed too


def test_watch_from_zero_starts_with_a_flagged_snapshot_when_the_dict_has_one(bridge, name):
    with shmdict.Dict(name, create=True, buffer_size=64 << 10) as local:
        for i in range(3000):  # several times the 64 KiB log
            local[f"k{i % 50}"] = "x" * 100
        local.dump()
        with shmdict.connect(bridge.address, name) as r:
            first = next(r.watch(1, timeout=30))
            assert first.snapshot and first.op == "snapshot"
            assert first.value == local.copy() and first.revision == local.revision


@pytest.mark.parametrize("mirror", [True, False], ids=["mirror", "no_mirror"])
def test_a_dict_deleted_and_created_again_under_a_connected_remote_is_read_and_written_anew(
        bridge, name, mirror):
    old = shmdict.Dict(name, create=True)
    try:
        # timeout: how long a read without mirror waits for the old dict's revision before it
        # asks which dict the name holds.
        with shmdict.connect(bridge.address, name, mirror=mirror, timeout=3) as r:
            for key in ("a", "b", "c"):
                r[key] = "old-" + key  # revisions 1 to 3 of the old dict
            assert r["a"] == "old-a"  # a mirror's read cache keeps it, at revision 3
            r["c"] = "old-c2"
            r["c"] = "old-c3"  # revision 5, no read since: the cache still says 3
            changes = r.watch(4, timeout=60)
            assert next(changes).revision == 5  # its stream watches the old dict
            # Unlinking and creating again is not atomic: the bridge, stopped meanwhile, must not
            # look in between (it would find no dict at all).
            os.kill(bridge.process.pid, signal.SIGSTOP)
            try:
                old.unlink()
                old.close()
                new = shmdict.Dict(name, create=True)
            finally:
                os.kill(bridge.process.pid, signal.SIGCONT)
            with new:
                for key in ("a", "b", "x"):
                    new[key] = "new-" + key  # revisions 1 to 3 of the new dict
                if mirror:
                    # The mirror started over and holds the new dict at the revision the cache
                    # was filled at (read without touching the cache: no read in between).
                    eventually(lambda: r.revision == 3)
                assert r["a"] == "new-a"
                assert "c" not in r
                assert r.get("x") == "new-x"
                r["d"] = "new-d"
                assert new["d"] == "new-d"
                assert r["d"] == "new-d"
                assert sorted(r.keys()) == ["a", "b", "d", "x"]
                # A watch of the old dict ends with what it sent, never a change of the new one.
                with pytest.raises(shmdict.Error) as ended:
                    for change in changes:
                        assert change.value.startswith("old-"), change
                assert ended.value.code == "ABORTED", ended.value
                assert "deleted or replaced" in str(ended.value)
    finally:
        old.close()


def test_unknown_dict_is_file_not_found(bridge, name):
    with pytest.raises(FileNotFoundError) as e:
        shmdict.connect(bridge.address, name)
    assert isinstance(e.value, shmdict.NotFound) and name in str(e.value)
    assert e.value.code == "NOT_FOUND"


def test_no_bridge_is_a_connection_error(name):
    directory = tempfile.mkdtemp(prefix="shmdict-pytest-")
    try:
        with pytest.raises(ConnectionError) as e:
            shmdict.connect(f"unix:{directory}/none.sock", name, timeout=1)
        assert isinstance(e.value, shmdict.Unavailable) and e.value.code == "UNAVAILABLE"
        assert name in str(e.value)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_calls_while_the_bridge_is_down_raise_connection_error(bridge, local):
    with shmdict.connect(bridge.address, local.name, mirror=False, timeout=2) as r:
        r["a"] = 1
        bridge.kill()
        with pytest.raises(ConnectionError) as e:
            r["b"] = 2
        assert isinstance(e.value, shmdict.Unavailable) and local.name in str(e.value)


def test_threads_share_one_handle(remote):
    import threading
    errors = []

    def work(t):
        try:
            for _ in range(50):
                remote.increment("n")
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and remote["n"] == 200


def test_closed_remote_dict_raises_value_error(bridge, local):
    r = shmdict.connect(bridge.address, local.name)
    r.close()
    r.close()
    assert r.closed
    with pytest.raises(ValueError):
        r["a"]


def test_ctrl_c_interrupts_a_remote_wait(remote):
    import signal
    import threading
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            remote.wait_for_change(timeout=None)
    finally:
        timer.cancel()


def test_a_token_bridge_needs_the_token_and_a_read_only_token_cannot_write(name):
    """connect(token=...) reaches a bridge started with --token-file; without a token the
    bridge refuses (PermissionDenied: the core has no UNAUTHENTICATED), and a read-only token
    reads but cannot write."""
    b = Bridge()
    try:
        with open(os.path.join(b.dir, "tokens"), "w") as tokens:
            tokens.write("writer-secret rw\nreader-secret ro\n")
        b.start(extra_args=("--token-file", os.path.join(b.dir, "tokens")))
        with shmdict.Dict(name, create=True) as local:
            local["k"] = 1
            with pytest.raises(shmdict.PermissionDenied):
                shmdict.connect(b.address, name, mirror=False, timeout=10)
            with pytest.raises(PermissionError):
                shmdict.connect(b.address, name, mirror=False, timeout=10, token="wrong")
            with shmdict.connect(b.address, name, mirror=False, token="writer-secret") as writer:
                writer["k"] = 2
            with shmdict.connect(b.address, name, token="reader-secret") as reader:
                assert reader["k"] == 2
                with pytest.raises(shmdict.PermissionDenied):
                    reader["k"] = 3
            assert local["k"] == 2
    finally:
        b.cleanup()


def test_a_bridge_refusing_pickles_is_reported_with_what_to_allow():
    # The bridge's refusal (INVALID_ARGUMENT or PERMISSION_DENIED naming --allow-pickle) becomes
    # an error that tells this client's user what to change; other errors keep their message.
    for code, cls in ((3, shmdict.InvalidArgument), (7, shmdict.PermissionDenied)):
        bridge_says = "dict 'd': key 'k': pickled values are refused (start with --allow-pickle)"
        with pytest.raises(cls) as refused:
            shmdict._core._raise_status(code, bridge_says, True)
        message = str(refused.value)
        assert "start it with --allow-pickle" in message and "serializer" in message
        assert bridge_says in message and refused.value.code in ("INVALID_ARGUMENT",
                                                                "PERMISSION_DENIED")
    with pytest.raises(shmdict.InvalidArgument) as other:
        shmdict._core._raise_status(3, "dict 'd': key is empty", True)
    assert str(other.value) == "dict 'd': key is empty"


def test_a_pickle_refused_by_a_default_bridge_says_what_to_allow(local):
    b = Bridge()
    try:
        b.start()  # without --allow-pickle
        with shmdict.connect(b.address, local.name, mirror=False) as r:
            with pytest.raises(shmdict.Error, match="start it with --allow-pickle"):
                r["t"] = (1, 2)
            r["n"] = [1, 2]  # exact JSON, not a pickle
        assert local.copy() == {"n": [1, 2]}
    finally:
        b.cleanup()
