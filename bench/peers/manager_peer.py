#!/usr/bin/python3
"""Python's multiprocessing.Manager().dict() as a peer in shmdict_peers.

The C++ harness starts this script with /usr/bin/python3 and drives it like every other peer:
one JSON command per line on stdin, one JSON result per line on stdout (nothing else is ever
printed there). It builds the same workload as the harness (keys "key:<i>", values from the same
formula, checked against probe values the harness sends; the access order and the mix's write
positions read from the file the harness wrote) and times every operation with
time.monotonic_ns() (CLOCK_MONOTONIC, the clock the harness uses), into the same log-linear
histogram buckets (see bench/peers/harness.h).

What one operation is: a call on the DictProxy, i.e. a request pickled and sent over the
manager's Unix socket to its server process, which answers. Standard library only.

  manager_peer.py --serve     the command loop (what the harness runs)
  manager_peer.py --attach    internal: a fresh process that attaches to a dict and exits
"""

import ctypes
import json
import multiprocessing
import multiprocessing.managers
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from array import array

SUB_BITS = 6
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def set_parent_death_signal():
    """Dies with its parent (PR_SET_PDEATHSIG), like every process the harness starts."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class Histogram:
    """The harness's Histogram: exact below 64 ns, then 64 buckets per power of two."""

    def __init__(self):
        self.counts = {}

    def add(self, ns):
        if ns < 64:
            b = ns if ns >= 0 else 0
        else:
            e = ns.bit_length() - 1
            b = ((e - SUB_BITS + 1) << SUB_BITS) + ((ns >> (e - SUB_BITS)) & 63)
        self.counts[b] = self.counts.get(b, 0) + 1

    def merge(self, serialized):
        if serialized == "-":
            return
        for item in serialized.split(";"):
            b, c = item.split(":")
            self.counts[int(b)] = self.counts.get(int(b), 0) + int(c)

    def serialize(self):
        if not self.counts:
            return "-"
        return ";".join("%d:%d" % (b, self.counts[b]) for b in sorted(self.counts))


def key_of(i):
    return "key:%d" % i


def value_of(i, variant, size):
    prefix = "v%d:%013d:" % (variant % 10, i)
    if size <= len(prefix):
        return prefix[:size]
    fill = size - len(prefix)
    start = i % 26
    return prefix + (ALPHABET * ((start + fill) // 26 + 1))[start:start + fill]


def smaps_rollup(pid="self"):
    fields = {}
    with open("/proc/%s/smaps_rollup" % pid) as f:
        for line in f:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[-1] == "kB":
                fields[name] = int(parts[0])
    return fields


def start_manager():
    """A fresh server process ('spawn'): a forked one would carry the driver's workload lists,
    and its RSS would count them."""
    manager = multiprocessing.managers.SyncManager(ctx=multiprocessing.get_context("spawn"))
    manager.start(set_parent_death_signal)
    return manager


def manager_rss_kib(manager):
    return smaps_rollup(manager._process.pid).get("Rss", 0)


class Workload:
    def __init__(self, n, value_bytes, variants, order_file=None):
        self.n = n
        self.keys = [key_of(i) for i in range(n)]
        self.values = [[value_of(i, v, value_bytes) for i in range(n)] for v in range(variants)]
        self.order = array("I")
        self.mix = b""
        if order_file:
            if self.order.itemsize != 4 or sys.byteorder != "little":
                raise RuntimeError("the order file holds little-endian uint32")
            with open(order_file, "rb") as f:
                self.order.fromfile(f, n)
                self.mix = f.read(n)
            if len(self.mix) != n:
                raise RuntimeError("order file is short")


def import_items(d, w, batch):
    """What a user does to load many keys: d.update() with a chunk at a time."""
    keys, values = w.keys, w.values[0]
    for start in range(0, w.n, batch):
        d.update(dict(zip(keys[start:start + batch], values[start:start + batch])))


def run_role(d, w, writer, first, end_ns):
    """The reader or writer of a multi-process run (see RunRole in client_peer.h)."""
    hist = Histogram()
    ops = mismatches = 0
    n = w.n
    k = first % n
    variant = 1
    keys, order, v0, v1 = w.keys, w.order, w.values[0], w.values[1]
    start = time.monotonic_ns()
    previous = start
    while True:
        i = order[k]
        if writer:
            d[keys[i]] = (v1 if variant else v0)[i]
        else:
            got = d.get(keys[i])
            if got != v0[i] and got != v1[i]:
                mismatches += 1
        k += 1
        if k == n:
            k = 0
            variant ^= 1
        now = time.monotonic_ns()
        hist.add(now - previous)
        previous = now
        ops += 1
        if now >= end_ns:
            break
    return {"ops": ops, "elapsed_ns": time.monotonic_ns() - start, "mismatches": mismatches,
            "hist": hist.serialize()}


def role_process(d, w, writer, first, ready, go, end_ns, results):
    set_parent_death_signal()
    try:
        for k in range(min(w.n, 1000)):
            d.get(w.keys[w.order[k]])
        ready.put(True)
        go.wait()
        results.put(("writer" if writer else "reader", run_role(d, w, writer, first, end_ns.value)))
    except Exception:  # reported by the parent as a failed child
        results.put(("error", traceback.format_exc()))


class Peer:
    def __init__(self):
        self.manager = None
        self.d = None
        self.w = None
        self.expected = None
        self.write_runs = 0
        self.empty_kib = 0
        self.big = None

    def start(self, c):
        w = Workload(c["keys"], c["value_bytes"], 2, c["order_file"])
        for i, value in c["probes"]:
            if w.values[0][i] != value:
                raise RuntimeError("value formula differs from the harness's at key %d: %r != %r"
                                   % (i, w.values[0][i], value))
        self.w = w
        self.manager = start_manager()
        self.empty_kib = manager_rss_kib(self.manager)
        self.d = self.manager.dict()
        import_items(self.d, w, c["batch"])
        if len(self.d) != w.n:
            raise RuntimeError("dict holds %d keys after importing %d" % (len(self.d), w.n))
        self.expected = bytearray(w.n)
        warm = self.run({"kind": "read", "max_ops": w.n, "time_box_ns": c["time_box_ns"] // 4})
        if warm["mismatches"]:
            raise RuntimeError("%d wrong values in the warm-up reads" % warm["mismatches"])
        return {}

    def run(self, c):
        """One timed run: the loop of RunOps in client_peer.h."""
        kind = c["kind"]
        variant = 0
        if kind != "read":
            variant = 1 if self.write_runs % 2 == 0 else 0
            self.write_runs += 1
        w, d, expected = self.w, self.d, self.expected
        keys, order, mix, values = w.keys, w.order, w.mix, w.values
        written = values[variant]
        n = min(c["max_ops"], w.n)
        hist = Histogram()
        mismatches = 0
        start = time.monotonic_ns()
        deadline = start + c["time_box_ns"]
        previous = start
        k = 0
        while k < n:
            i = order[k]
            if kind == "write" or (kind == "mix" and mix[k]):
                d[keys[i]] = written[i]
                expected[i] = variant
            else:
                if d.get(keys[i]) != values[expected[i]][i]:
                    mismatches += 1
            k += 1
            now = time.monotonic_ns()
            hist.add(now - previous)
            previous = now
            if now >= deadline:
                break
        return {"ops": k, "elapsed_ns": time.monotonic_ns() - start, "mismatches": mismatches,
                "hist": hist.serialize()}

    def memory(self, _):
        return {"kib": manager_rss_kib(self.manager), "empty_kib": self.empty_kib}

    def multi(self, c):
        ctx = multiprocessing.get_context("fork")
        readers = c["readers"]
        ready, results = ctx.Queue(), ctx.Queue()
        go = ctx.Event()
        end_ns = ctx.Value("q", 0)
        w = self.w
        procs = [ctx.Process(target=role_process,
                             args=(self.d, w, True, 0, ready, go, end_ns, results))]
        for r in range(readers):
            procs.append(ctx.Process(target=role_process,
                                     args=(self.d, w, False, w.n * r // readers, ready, go,
                                           end_ns, results)))
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=120)
            end_ns.value = time.monotonic_ns() + 10_000_000 + c["time_box_ns"]
            go.set()
            reads = {"ops": 0, "elapsed_ns": 0, "mismatches": 0}
            read_hist = Histogram()
            writes = None
            for _ in procs:
                role, r = results.get(timeout=c["time_box_ns"] / 1e9 + 120)
                if role == "error":
                    raise RuntimeError("child failed: " + r)
                if role == "writer":
                    writes = r
                else:
                    reads["ops"] += r["ops"]
                    reads["mismatches"] += r["mismatches"]
                    reads["elapsed_ns"] = max(reads["elapsed_ns"], r["elapsed_ns"])
                    read_hist.merge(r["hist"])
            reads["hist"] = read_hist.serialize()
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
                    p.join()
        return {"reads": reads, "writes": writes}

    def stop(self, _):
        if self.manager is not None:
            self.d = None
            self.manager.shutdown()
            self.manager = None
        return {}

    def bulk(self, c):
        n, value_bytes = c["keys"], c["value_bytes"]
        if self.big is None or self.big.n != n:
            self.big = Workload(n, value_bytes, 1)
        w = self.big
        probe = c["probe"]
        if w.values[0][probe] != c["probe_value"]:
            raise RuntimeError("value formula differs from the harness's at key %d" % probe)
        manager = start_manager()
        try:
            empty_kib = manager_rss_kib(manager)
            d = manager.dict()
            start = time.monotonic_ns()
            import_items(d, w, c["batch"])
            import_ns = time.monotonic_ns() - start
            count = len(d)
            if count != n:
                raise RuntimeError("dict holds %d keys after importing %d" % (count, n))
            kib = manager_rss_kib(manager)
            request = {"proxy": pickle.dumps(d).hex(),
                       "authkey": bytes(multiprocessing.current_process().authkey).hex(),
                       "probe_key": w.keys[probe], "probe_value": w.values[0][probe]}
            attach_now = attach(request)
            time.sleep(c["settle_ns"] / 1e9)
            attach_settled = attach(request)
            del d
        finally:
            manager.shutdown()
        return {"import_ns": import_ns, "keys": count, "kib": kib, "empty_kib": empty_kib,
                "attach_now": attach_now, "attach_settled": attach_settled}


def attach(request):
    """Runs attach_main in a fresh interpreter and returns its figures."""
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--attach"],
                           input=json.dumps(request), capture_output=True, text=True,
                           timeout=120, check=False)
    if child.returncode != 0:
        raise RuntimeError("attach child failed: " + child.stderr.strip())
    return json.loads(child.stdout)


def attach_main():
    """A fresh interpreter: from unpickling the proxy (connect + incref) to the first get."""
    set_parent_death_signal()
    request = json.loads(sys.stdin.read())
    multiprocessing.current_process().authkey = bytes.fromhex(request["authkey"])
    blob = bytes.fromhex(request["proxy"])
    before = smaps_rollup()
    start = time.monotonic_ns()
    d = pickle.loads(blob)
    value = d.get(request["probe_key"])
    attach_ns = time.monotonic_ns() - start
    after = smaps_rollup()
    if value != request["probe_value"]:
        sys.stderr.write("attach: %r reads %r, expected %r\n"
                         % (request["probe_key"], value, request["probe_value"]))
        return 1
    print(json.dumps({"attach_ns": attach_ns,
                      "pss_kib": after.get("Pss", 0) - before.get("Pss", 0),
                      "rss_kib": after.get("Rss", 0) - before.get("Rss", 0)}))
    return 0


def serve():
    set_parent_death_signal()
    peer = Peer()
    handlers = {"start": peer.start, "run": peer.run, "memory": peer.memory,
                "multi": peer.multi, "stop": peer.stop, "bulk": peer.bulk}
    for line in sys.stdin:
        command = json.loads(line)
        name = command.get("cmd")
        if name == "quit":
            peer.stop(None)
            print(json.dumps({"ok": True}), flush=True)
            return 0
        try:
            reply = handlers[name](command)
            reply["ok"] = True
        except Exception:  # the harness reports it as this peer's error
            reply = {"ok": False, "error": traceback.format_exc()}
        print(json.dumps(reply), flush=True)
    peer.stop(None)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    if sys.argv[1:] == ["--attach"]:
        sys.exit(attach_main())
    sys.stderr.write(__doc__)
    sys.exit(2)
