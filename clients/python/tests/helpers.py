"""Process bodies for the multi-process tests: importable by name, so that `spawn`ed children
(which re-import their target's module) find them."""

import contextlib
import multiprocessing
import os
import time


def stop(procs, timeout=120, kill=False):
    """Joins the multiprocessing processes (None and never-started entries are skipped) within
    one deadline, then SIGKILLs and reaps any still running, so that a hung child fails the test
    instead of hanging it. Returns the pids that had to be killed; a test asserts it is empty.
    kill: SIGKILL them first (lock holders that never exit by themselves)."""
    deadline = time.monotonic() + timeout
    killed = []
    for p in procs:
        if p is None or p.pid is None:
            continue
        if kill:
            p.kill()
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            killed.append(p.pid)
            p.kill()
            p.join(30)
    return killed


def increment_under_lock(d, key, count):
    """The lost-update probe: a read-modify-write that is only correct under the lock."""
    for _ in range(count):
        with d.lock:
            d[key] = d[key] + 1


def hold_lock_forever(d, conn):
    d.lock.acquire()
    conn.send(os.getpid())
    while True:  # until SIGKILLed by the test
        time.sleep(3600)


@contextlib.contextmanager
def lock_holder(d):
    """A forked child that takes d's lock and holds it until the with block ends (then it is
    SIGKILLed and reaped); yields its pid."""
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    holder = ctx.Process(target=hold_lock_forever, args=(d, child_end))
    try:
        holder.start()
        assert parent_end.poll(60), "the holder did not take the lock"
        yield parent_end.recv()
    finally:
        stop([holder], 30, kill=True)


def wait_until_interrupted(d, conn):
    try:
        conn.send("waiting")
        d.wait_for_change(timeout=None)
        conn.send("changed")
    except KeyboardInterrupt:
        conn.send("interrupted")


def read_in_child(d, conn):
    conn.send((d.name, d["parent"], dict(d.items())))
    d["child"] = os.getpid()


def acquire_until_interrupted(d, conn):
    try:
        conn.send("waiting")
        d.lock.acquire()
        conn.send("acquired")
    except KeyboardInterrupt:
        conn.send("interrupted")


def set_composite_keys(d):
    """Run in a spawned child, whose hash seed differs from the parent's."""
    d[frozenset({"a", "b", "c", "d"})] = 1
    d[("x", frozenset({"y", "z"}))] = 2
