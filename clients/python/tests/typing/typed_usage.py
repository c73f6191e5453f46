# Must type-check with mypy --strict against the package's stubs (tests/test_typing.py): the
# documented API, written as a typed program would use it.
import asyncio
import json
from typing import Any, Optional

import shmdict
from shmdict.ultradict import UltraDict

version: str = shmdict.__version__


def local() -> int:
    with shmdict.Dict(create=True) as d:
        d["apples"] = 3
        with d.lock:
            d["apples"] += 1
        taken: bool = d.lock.acquire(timeout=1.0)
        if taken:
            d.lock.release()
        with d.lock(timeout=0.5):
            pass
        n: int = d.increment("apples", 2)
        swapped: bool = d.compare_and_set("apples", 6, 7)
        revision: int = d.revision
        after: Optional[int] = d.wait_for_change(revision, timeout=0.0)
        for change in d.watch(0, timeout=0.0):
            op: str = change.op
            assert isinstance(change, shmdict.Change) and op and not change.snapshot
        child: shmdict.Dict = d.nested("child")
        child["x"] = 1
        snapshot: dict[str, Any] = d.status()
        plain: dict[Any, Any] = d.copy()
        generation: int = d.dump()
        d.refresh(force=True)
        del d["apples"]
        return n + int(swapped) + (after or 0) + len(snapshot) + len(plain) + generation


async def changes(d: shmdict.Dict) -> Optional[int]:
    async for change in d.awatch(0, timeout=0.1):
        key: Any = change.key
        print(key)
    return await d.changed(timeout=0.1)


def remote(address: str) -> None:
    try:
        r: shmdict.RemoteDict = shmdict.connect(address, "orders", mirror=False, timeout=1.0)
    except (shmdict.NotFound, shmdict.Unavailable) as e:
        code: str = e.code
        print(code)
        return
    with r:
        r["k"] = [1, 2]


def errors(name: str) -> None:
    try:
        shmdict.Dict(name, create=False)
    except shmdict.Error:
        pass
    except FileNotFoundError:
        pass
    shmdict.unlink_by_name(name, ignore_errors=True)
    names: list[str] = shmdict.list_names()
    print(names)


def ultra() -> None:
    u = UltraDict(name=None, buffer_size=1 << 20, recurse=False)
    u["k"] = 1
    with u.lock:
        u["k"] += 1
    counter: int = u.full_dump_counter
    print(counter, u.data["k"])
    try:
        if u.lock.acquire(block=False):
            u.lock.release()
    except UltraDict.Exceptions.CannotAcquireLock as e:
        print(e.blocking_pid)
    # The drop-in is a dict, with UltraDict's methods and lock methods.
    as_dict: dict[Any, Any] = u
    merged: dict[Any, Any] = u | {"m": 1}
    u |= {"n": 2}
    present: bool = u.has_key("n")
    u.append_update("n", 3)
    u.append_update("m", None, delete=True)
    u.apply_update()
    holder: int = u.lock.get_remote_pid()
    held: int = u.lock.has_lock
    stolen: bool = u.lock.steal_from_dead(from_pid=holder)
    u.lock.reset()
    plain: Any = UltraDict.as_pure_dictionary(u)
    UltraDict.log.set_level(UltraDict.log.WARNING)
    print(json.dumps(as_dict), merged, present, held, stolen, plain, u.keys(), u.status()["name"])
    fresh: UltraDict = UltraDict.fromkeys(["a", "b"], 0)
    last: Optional[dict[Any, Any]] = fresh.close(unlink=True)
    print(last)
    u.close(unlink=True)


if __name__ == "__main__":
    local()
    ultra()
    asyncio.run(changes(shmdict.Dict()))
