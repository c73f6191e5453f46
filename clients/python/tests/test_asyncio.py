"""asyncio waits (changed(), awatch()) cost no thread of the event loop's executor: they are woken
by the dict's notifier thread through the loop's own descriptor (shmdict/_dict.py,
_ChangeNotifier)."""

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading

import pytest

import shmdict

WAITERS = 50


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The default executor, counting the calls submitted to it."""

    def __init__(self):
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


def write_in_other_process(name, code):
    full = f"import shmdict\nd = shmdict.Dict({name!r}, create=False, auto_unlink=False)\n{code}\n"
    subprocess.run([sys.executable, "-c", full], check=True, timeout=120, env=dict(os.environ))


def notifier_threads():
    return [t for t in threading.enumerate() if t.name == "shmdict-notifier"]


@pytest.fixture
def notifier_starts(monkeypatch):
    """The list of notifier threads started (one entry each) while the test runs."""
    starts = []
    run = shmdict._dict._ChangeNotifier._run

    def counted(self):
        starts.append(threading.current_thread())
        return run(self)

    monkeypatch.setattr(shmdict._dict._ChangeNotifier, "_run", counted)
    return starts


def idle_for(monkeypatch, seconds):
    """How long a notifier without waiters keeps its thread."""
    monkeypatch.setattr(shmdict._dict._ChangeNotifier, "_IDLE", seconds, raising=False)


def mapped(name):
    """The mappings of the dict's segment in this process: a handle each."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if f"/shmdict.{name}" in line)


def test_idle_waiters_occupy_no_executor_thread(d, name, notifier_starts, monkeypatch):
    idle_for(monkeypatch, 0)
    async def main():
        loop = asyncio.get_running_loop()
        executor = CountingExecutor()
        loop.set_default_executor(executor)
        waiters = [asyncio.create_task(d.changed()) for _ in range(WAITERS)]
        for _ in range(10):
            await asyncio.sleep(0)  # every waiter task reaches its await
        assert executor.submitted == 0
        # Unrelated executor work runs on an idle executor while every waiter still waits.
        assert await loop.run_in_executor(None, threading.get_ident) != threading.get_ident()
        assert executor.submitted == 1
        assert not any(w.done() for w in waiters)
        revision = await loop.run_in_executor(
            None, write_in_other_process, name, "d['k'] = 1\nprint(d.revision)")
        results = await asyncio.gather(*waiters)
        assert set(results) == {d.revision}
        assert executor.submitted == 2
        return revision

    asyncio.run(main())
    assert len(notifier_starts) == 1  # one thread for the 50 waiters
    notifier_starts[0].join(60)  # it ends once no waiter is left
    assert not notifier_starts[0].is_alive()


def test_changed_returns_at_once_for_a_past_revision_and_none_after_its_timeout(d):
    async def main():
        d["a"] = 1
        r = d.revision
        d["a"] = 2
        assert await d.changed(after=r) == r + 1
        assert await d.changed(timeout=0.01) is None

    asyncio.run(main())


def test_a_cancelled_waiter_is_dropped_and_the_notifier_thread_ends(d, monkeypatch):
    idle_for(monkeypatch, 0)

    async def main():
        task = asyncio.create_task(d.changed())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The notifier sees no waiter left after its current wait slice and ends.
        for t in notifier_threads():
            await asyncio.get_running_loop().run_in_executor(None, t.join, 30)
        assert notifier_threads() == []
        d["x"] = 1  # a later waiter starts it again
        waiter = asyncio.create_task(d.changed())
        await asyncio.sleep(0)
        d["x"] = 2
        assert await waiter == d.revision

    asyncio.run(main())


def test_waiters_on_two_event_loops_are_both_woken(d, name):
    results = []

    def run_loop():
        async def wait():
            results.append(await d.changed(after=start))
        asyncio.run(wait())

    start = d.revision
    threads = [threading.Thread(target=run_loop) for _ in range(2)]
    for t in threads:
        t.start()
    write_in_other_process(name, "d['k'] = 'v'")
    for t in threads:
        t.join(60)
    assert results == [start + 1, start + 1]


def test_awatch_yields_another_processs_changes_without_the_executor(d, name):
    async def main():
        loop = asyncio.get_running_loop()
        executor = CountingExecutor()
        loop.set_default_executor(executor)
        seen = []

        async def consume():
            async for change in d.awatch(d.revision, timeout=None):
                seen.append((change.op, change.key, change.value))
                if change.op == "clear":
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        await loop.run_in_executor(None, write_in_other_process, name,
                                   "d['a'] = [1]\ndel d['a']\nd.clear()")
        await asyncio.wait_for(task, 60)
        assert executor.submitted == 1  # only the writer above
        return seen

    seen = asyncio.run(main())
    assert seen == [("set", "a", [1]), ("delete", "a", None), ("clear", None, None)]


def test_awatch_over_100_changes_starts_one_notifier_thread_and_no_handle(
        d, name, notifier_starts, monkeypatch):
    idle_for(monkeypatch, 3600)  # no pause of the test may end the thread
    changes = 100

    async def main():
        seen = asyncio.Queue()

        start = d.revision

        async def consume():
            async for change in d.awatch(start, timeout=None):
                await seen.put(change.value)

        task = asyncio.create_task(consume())
        d["k"] = 0
        assert await asyncio.wait_for(seen.get(), 60) == 0
        handles = mapped(name)  # the notifier thread's included
        for i in range(1, changes):
            d["k"] = i  # after the consumer waits again: each change wakes the notifier
            assert await asyncio.wait_for(seen.get(), 60) == i
        task.cancel()
        return handles

    handles = asyncio.run(main())
    assert len(notifier_starts) == 1
    assert mapped(name) <= handles  # the stream, cancelled, closed its own
    d.close()  # wakes the idle thread and waits for it
    assert not notifier_starts[0].is_alive()


def test_the_handles_of_ended_threads_are_released(d, name):
    threads = 30
    d["k"] = 1
    assert d["k"] == 1
    before = mapped(name)
    for _ in range(3):
        all_reading = threading.Barrier(threads + 1)

        def read():
            assert d["k"] == 1
            all_reading.wait(60)

        workers = [threading.Thread(target=read) for _ in range(threads)]
        for w in workers:
            w.start()
        all_reading.wait(60)
        per_handle = (mapped(name) - before) // threads
        assert per_handle >= 1
        for w in workers:
            w.join(60)
    # A thread not seen before returns the ended threads' handles to the pool, which keeps at
    # most 8 (shared_dict.h's kDefaultMaxIdleHandles), and uses one more (an ended thread's when
    # it got that thread's identity).
    late = threading.Thread(target=d.__getitem__, args=("k",))
    late.start()
    late.join(60)
    assert mapped(name) <= before + 9 * per_handle


def test_a_waiter_whose_loop_closed_without_cancelling_it_is_dropped(
        d, notifier_starts, monkeypatch):
    idle_for(monkeypatch, 0)
    loop = asyncio.new_event_loop()

    async def start_waiting():
        task = asyncio.create_task(d.changed())
        await asyncio.sleep(0)  # the waiter is registered
        return task

    task = loop.run_until_complete(start_waiting())
    loop.close()  # the task stays pending: nothing will ever resolve or cancel it
    assert len(notifier_starts) == 1
    notifier_starts[0].join(60)
    assert not notifier_starts[0].is_alive()
    del task


def test_awatch_stops_when_its_timeout_passes_without_a_change(d):
    async def main():
        d["before"] = 1
        return [c async for c in d.awatch(d.revision, timeout=0.05)]

    assert asyncio.run(main()) == []


def test_closing_the_dict_fails_its_waiters_with_closed(name):
    async def main():
        d = shmdict.Dict(name, create=True)
        waiter = asyncio.create_task(d.changed())
        await asyncio.sleep(0)
        d.close()
        with pytest.raises(shmdict.Closed):
            await waiter

    asyncio.run(main())


def _wait_in_forked_child(d, conn):
    async def main():
        waiter = asyncio.create_task(d.changed())
        await asyncio.sleep(0)
        d["child"] = 1
        return await asyncio.wait_for(waiter, 60)

    conn.send(asyncio.run(main()) == d.revision)


def test_a_forked_child_waits_with_a_notifier_of_its_own(d):
    import multiprocessing
    import helpers
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork")
    ctx = multiprocessing.get_context("fork")
    started = threading.Event()
    parent_result = []

    def parent_loop():
        async def main():
            waiter = asyncio.create_task(d.changed())
            await asyncio.sleep(0)
            started.set()  # the parent's notifier thread is waiting now
            parent_result.append(await asyncio.wait_for(waiter, 60))
        asyncio.run(main())

    t = threading.Thread(target=parent_loop)
    t.start()
    assert started.wait(60)
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=_wait_in_forked_child, args=(d, child_end))
    p.start()
    try:
        assert parent_end.recv() is True
    finally:
        assert helpers.stop([p]) == []
    t.join(60)
    assert parent_result and parent_result[0] >= 1
