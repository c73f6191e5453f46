"""Shared fixtures: a unique dict name per test, and a check that the test left nothing behind
in /dev/shm (every segment of a dict is named shmdict.NAME or shmdict.NAME@...); a real
shmdict-bridge for the remote tests."""

import glob
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # helpers.py, also for spawned children

import shmdict  # noqa: E402

_counter = itertools.count()


def segments(name):
    return glob.glob(f"/dev/shm/shmdict.{glob.escape(name)}") + glob.glob(
        f"/dev/shm/shmdict.{glob.escape(name)}@*")


@pytest.fixture
def name(request):
    test = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.originalname)[:80]
    n = f"py.{test}.{os.getpid()}.{next(_counter)}"
    yield n
    left = segments(n)
    shmdict.unlink_by_name(n, ignore_errors=True)
    assert not left, f"the test left segments behind: {left}"


@pytest.fixture
def d(name):
    with shmdict.Dict(name, create=True) as handle:
        yield handle


BRIDGE = os.environ.get("SHMDICT_BRIDGE")
HAS_REMOTE = bool(BRIDGE) and shmdict._core.HAS_REMOTE
NO_REMOTE_REASON = "shmdict-bridge is not built (SHMDICT_BUILD_BRIDGE=OFF) or not run through ctest"


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
    if not HAS_REMOTE:
        pytest.skip(NO_REMOTE_REASON)
    b = Bridge()
    try:
        # The tests store what Python stores (pickles for what JSON cannot say), as a bridge
        # trusted with that does; the test of the refusal starts a Bridge() of its own without it.
        b.start(extra_args=("--allow-pickle",))
        yield b
    finally:
        b.cleanup()
