"""One Dict shared by Python threads."""

import threading

THREADS = 4
INCREMENTS = 500


def test_threads_sharing_a_handle_incrementing_under_the_lock_reach_the_exact_total(d):
    d["n"] = 0

    def work():
        for _ in range(INCREMENTS):
            with d.lock:
                d["n"] = d["n"] + 1

    threads = [threading.Thread(target=work, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # Daemon threads: a hung one fails the test here, and does not keep pytest from exiting.
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert d["n"] == THREADS * INCREMENTS


def test_threads_writing_and_reading_distinct_keys(d):
    errors = []

    def work(t):
        try:
            for i in range(300):
                d[f"t{t}.{i}"] = i
                assert d[f"t{t}.{i}"] == i
                assert d.increment("total") > 0
            assert len([k for k in d if k.startswith(f"t{t}.")]) == 300
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []
    assert d["total"] == THREADS * 300 and len(d) == THREADS * 300 + 1


def test_the_lock_excludes_other_threads_of_the_same_process(d):
    taken = threading.Event()
    release = threading.Event()
    seen = {}

    def holder():
        with d.lock:
            taken.set()
            release.wait(60)

    t = threading.Thread(target=holder)
    t.start()
    assert taken.wait(60)
    seen["try"] = d.lock.acquire(blocking=False)
    seen["owned"] = d.lock.owned()
    release.set()
    t.join(60)
    assert seen == {"try": False, "owned": False}
    assert d.lock.acquire(timeout=5)
    assert d.lock.acquire(blocking=False)  # re-entrant for its holder
    d.lock.release()
    d.lock.release()
    try:
        d.lock.release()
        raise AssertionError("releasing an unheld lock must fail")
    except RuntimeError:
        pass


def test_a_write_from_another_thread_waits_for_the_lock_holder(d):
    d["v"] = "before"
    done = threading.Event()

    def writer():
        d["v"] = "writer"
        done.set()

    with d.lock:
        t = threading.Thread(target=writer)
        t.start()
        # The writer needs the lock this thread holds: it cannot finish, whatever the timing.
        assert not done.wait(0.2)
        d["v"] = "holder"
    t.join(60)
    assert done.is_set() and d["v"] == "writer"


def test_close_is_refused_while_another_thread_holds_the_lock(d):
    taken = threading.Event()
    release = threading.Event()
    seen = {}

    def holder():
        with d.lock:
            seen["created"] = d.created  # the creator's flag, whichever thread asks
            taken.set()
            release.wait(60)

    t = threading.Thread(target=holder)
    t.start()
    assert taken.wait(60)
    try:
        d.close()
        raise AssertionError("close() must refuse while another thread holds the lock")
    except ValueError as e:
        assert "another thread holds its lock" in str(e)
    finally:
        release.set()
        t.join(60)
    assert seen == {"created": True}
    d.close()
    assert d.closed
