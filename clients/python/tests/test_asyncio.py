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


def test_idle_waiters_occupy_no_executor_thread(d, name):
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
    assert len(notifier_threads()) <= 1  # one per dict, and it ends once no waiter is left


def test_changed_returns_at_once_for_a_past_revision_and_none_after_its_timeout(d):
    async def main():
        d["a"] = 1
        r = d.revision
        d["a"] = 2
        assert await d.changed(after=r) == r + 1
        assert await d.changed(timeout=0.01) is None

    asyncio.run(main())


def test_a_cancelled_waiter_is_dropped_and_the_notifier_thread_ends(d):
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
