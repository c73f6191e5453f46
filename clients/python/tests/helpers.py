"""Process bodies for the multi-process tests: importable by name, so that `spawn`ed children
(which re-import their target's module) find them."""

import os
import time


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
