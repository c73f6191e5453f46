"""shmdict.connect(): the remote dict through a real shmdict-bridge on a Unix socket.

Each test starts its own bridge in a temporary directory, creates its dict locally (the bridge
never creates one), and kills the bridge and unlinks the dict at the end (the `name` fixture
checks that nothing is left in /dev/shm)."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import shmdict

BRIDGE = os.environ.get("SHMDICT_BRIDGE")
CLI = os.environ.get("SHMDICT_CLI")

pytestmark = pytest.mark.skipif(
    not BRIDGE or not shmdict._core.HAS_REMOTE,
    reason="shmdict-bridge is not built (SHMDICT_BUILD_BRIDGE=OFF) or not run through ctest")


class Bridge:
    """A shmdict-bridge process on unix:DIR/bridge.sock; start() returns once it printed
    `ready`, kill() SIGKILLs and reaps it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="shmdict-pytest-")
        self.address = f"unix:{self.dir}/bridge.sock"
        self.process = None

    def start(self, timeout=60, extra_args=()):
        self.process = subprocess.Popen(
            [BRIDGE, "--listen", self.address, "--log-level", "warn", *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # Its presence record in the test's directory, not /dev/shm: it is SIGKILLed.
            env={"SHMDICT_BRIDGE_REGISTRY_DIR": self.dir})
        deadline = time.monotonic() + timeout
        output = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()  # the bridge prints `ready` or exits
            if not line:
                break
            output.append(line)
            if line.strip() == "ready":
                return
        self.kill()
        raise AssertionError(f"shmdict-bridge did not become ready: {''.join(output)}")

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)
            self.process.stdout.close()
            self.process = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bridge():
    b = Bridge()
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


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


def test_is_a_mutable_mapping_with_the_dict_contract(remote):
    from collections.abc import MutableMapping
    assert isinstance(remote, MutableMapping) and isinstance(remote, shmdict.RemoteDict)
    d = remote
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


def test_update_is_one_revision_and_counters(remote):
    before = remote.revision
    remote.update({f"k{i}": i for i in range(100)})
    assert remote.revision == before + 1
    assert remote.increment("n") == 1 and remote.increment("n", 41) == 42
    remote["s"] = "x"
    with pytest.raises(shmdict.WrongType) as e:
        remote.increment("s")
    assert isinstance(e.value, TypeError) and remote.name in str(e.value)
    assert remote.compare_and_set("c", shmdict.ABSENT, "v1")
    assert not remote.compare_and_set("c", shmdict.ABSENT, "v2")
    assert remote.compare_and_set("c", "v1", None) and remote["c"] is None
    assert remote.compare_and_set("c", None, shmdict.ABSENT) and "c" not in remote
    remote["j"] = {"a": 1, "b": 2}  # non-native: compared with ==
    assert remote.compare_and_set("j", {"b": 2, "a": 1}, [1]) and remote["j"] == [1]


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


def test_watch_and_wait_for_change(remote, local):
    rev = remote.revision
    assert remote.wait_for_change(rev, timeout=0.05) is None
    remote["a"] = 1
    assert remote.wait_for_change(rev, timeout=10) == rev + 1
    remote["b"] = 2
    del remote["a"]
    remote.clear()
    changes = []
    for c in remote.watch(rev, timeout=10):
        changes.append(c)
        if len(changes) == 4:
            break
    assert [(c.op, c.key, c.value) for c in changes] == [
        ("set", "a", 1), ("set", "b", 2), ("delete", "a", None), ("clear", None, None)]
    assert [c.revision for c in changes] == [rev + 1, rev + 2, rev + 3, rev + 4]


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


def test_asyncio_changed_and_awatch(remote):
    async def main():
        rev = remote.revision
        waiter = asyncio.ensure_future(remote.changed(rev, timeout=10))
        stream = remote.awatch(rev)
        await asyncio.sleep(0)
        remote["a"] = 1
        assert await waiter == rev + 1
        change = await asyncio.wait_for(stream.__anext__(), 10)
        assert (change.revision, change.op, change.key, change.value) == (rev + 1, "set", "a", 1)
        assert await remote.changed(remote.revision, timeout=0.05) is None
        await stream.aclose()

    asyncio.run(main())


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
