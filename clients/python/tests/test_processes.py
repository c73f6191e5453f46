"""Several processes on one dict: forked and spawned writers under the lock, a lock holder
SIGKILLed, fork after use, Ctrl-C during a wait."""

import multiprocessing
import os
import platform
import signal
import threading
import time

import pytest

import helpers
import shmdict

WRITERS = 4
INCREMENTS = 300


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_incrementing_under_the_lock_reach_the_exact_total(d, method):
    ctx = multiprocessing.get_context(method)
    d["n"] = 0
    procs = [ctx.Process(target=helpers.increment_under_lock, args=(d, "n", INCREMENTS))
             for _ in range(WRITERS)]
    try:
        for p in procs:
            p.start()
        helpers.increment_under_lock(d, "n", INCREMENTS)  # the parent competes too
    finally:
        killed = helpers.stop(procs)
    assert killed == [], "a writer hung"
    assert [p.exitcode for p in procs] == [0] * WRITERS
    assert d["n"] == (WRITERS + 1) * INCREMENTS


def test_a_lock_holder_killed_with_sigkill_does_not_block_the_others(d):
    ctx = multiprocessing.get_context("spawn")
    d["n"] = 0
    parent_end, child_end = ctx.Pipe()
    holder = ctx.Process(target=helpers.hold_lock_forever, args=(d, child_end))
    writers = [ctx.Process(target=helpers.increment_under_lock, args=(d, "n", 100))
               for _ in range(2)]
    try:
        holder.start()
        assert parent_end.poll(60), "the holder did not take the lock"
        pid = parent_end.recv()
        assert d.lock.holder_pid == pid and d.lock.locked()
        assert not d.lock.acquire(blocking=False)
        with pytest.raises(shmdict.LockHeld) as e:
            with d.lock(blocking=False):
                pass
        assert e.value.blocking_pid == pid and str(pid) in str(e.value)

        for w in writers:
            w.start()
        os.kill(pid, signal.SIGKILL)
    finally:
        helpers.stop([holder], 30, kill=True)  # after an early failure; else already killed
        killed = helpers.stop(writers)
    assert killed == [], "a writer hung"
    assert [w.exitcode for w in writers] == [0, 0]
    assert d["n"] == 200
    assert d.status()["lock_recoveries"] >= 1
    with d.lock(timeout=5):
        d["after"] = 1


def test_lock_timeout_names_the_holder(d):
    with helpers.lock_holder(d) as pid:
        assert d.lock.acquire(timeout=0.05) is False
        with pytest.raises(TimeoutError) as e:
            with d.lock(timeout=0.05):
                pass
        assert e.value.blocking_pid == pid and f"pid {pid}" in str(e.value)


def test_a_dict_used_before_fork_works_in_the_child(d):
    d["parent"] = "p"
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=helpers.read_in_child, args=(d, child_end))
    try:
        child.start()
        assert parent_end.poll(60)
        name, value, items = parent_end.recv()
    finally:
        killed = helpers.stop([child], 60)
    assert killed == [], "the child hung"
    assert child.exitcode == 0
    assert (name, value, items) == (d.name, "p", {"parent": "p"})
    assert d["child"] == child.pid
    assert d.created  # the child's exit did not take the dict away
    assert os.path.exists(f"/dev/shm/shmdict.{d.name}")


@pytest.mark.parametrize("wait", ["wait_for_change", "lock.acquire"])
def test_ctrl_c_interrupts_a_blocking_wait(d, wait):
    ctx = multiprocessing.get_context("fork")
    holder = None
    child = None
    try:
        if wait == "lock.acquire":
            holder_end, holder_child_end = ctx.Pipe()
            holder = ctx.Process(target=helpers.hold_lock_forever, args=(d, holder_child_end))
            holder.start()
            assert holder_end.poll(60), "the holder did not take the lock"
        body = helpers.wait_until_interrupted if wait == "wait_for_change" else \
            helpers.acquire_until_interrupted
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(target=body, args=(d, child_end))
        child.start()
        assert parent_end.poll(60) and parent_end.recv() == "waiting"
        # Wait (with a deadline) until the child is blocked in a futex (the change counter's or
        # the lock's), so that the signal lands inside the wait and not before it.
        deadline = time.monotonic() + 30
        while not _in_futex(child.pid):
            assert time.monotonic() < deadline, "the child never blocked"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGINT)
        assert parent_end.poll(10), "SIGINT did not interrupt wait_for_change"
        assert parent_end.recv() == "interrupted"
    finally:
        helpers.stop([holder], 30, kill=True)
        killed = helpers.stop([child], 30)
    assert killed == [], "the child did not exit"


# futex's syscall number per architecture (the first field of /proc/PID/syscall).
_FUTEX = {"x86_64": "202", "aarch64": "98", "riscv64": "98", "ppc64le": "221", "s390x": "238",
          "i686": "240", "armv7l": "240"}


def _in_futex(pid):
    """True when pid is blocked in futex: by its syscall number where this architecture's is
    known, else by the kernel function it sleeps in."""
    try:
        if platform.machine() in _FUTEX:
            with open(f"/proc/{pid}/syscall") as f:
                return f.read().split()[0] == _FUTEX[platform.machine()]
        with open(f"/proc/{pid}/wchan") as f:
            return "futex" in f.read()
    except (OSError, IndexError):
        return False


def test_a_forked_child_closing_the_creators_dict_does_not_unlink_it(d):
    d["a"] = 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: use and close its copy of the creator's handle
        try:
            d["from_child"] = d["a"] + 1
            d.close()
            os.write(w, b"ok")
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        assert pipe.read() == b"ok"
    assert os.waitpid(pid, 0)[1] == 0
    assert d["from_child"] == 2
    assert os.path.exists(f"/dev/shm/shmdict.{d.name}")


def test_a_new_thread_in_a_forked_child_gets_a_fresh_handle(d):
    """A parent thread is inside wait_for_change when the main thread forks; in the child a new
    thread (which may get that dead thread's identity) reads and writes through the dict."""
    d["a"] = 1
    waiting = threading.Event()

    def wait():
        waiting.set()
        d.wait_for_change(timeout=60)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    try:
        assert waiting.wait(60)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                result = []
                t = threading.Thread(target=lambda: result.append(d["a"]) or d.update(b=2))
                t.start()
                t.join(60)
                d.close()
                os.write(w, b"ok" if result == [1] else b"bad")
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            assert pipe.read() == b"ok"
        assert os.waitpid(pid, 0)[1] == 0
        assert d["b"] == 2
    finally:
        d["wake"] = True  # ends the waiter's wait_for_change
        waiter.join(60)
        assert not waiter.is_alive(), "the waiter was not woken"
