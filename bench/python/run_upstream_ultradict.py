#!/usr/bin/python3
"""Runs UltraDict's own test module and examples, unchanged, against shmdict's drop-in.

    PYTHONPATH=build/python /usr/bin/python3 bench/python/run_upstream_ultradict.py \\
        /path/to/UltraDict-checkout [--timeout 300] [--keep]

UltraDict's code stays out of this project: this script copies the checkout's tests/ and
examples/ into a temporary directory whose parent holds only a shim package `UltraDict` (its
`UltraDict` is shmdict.ultradict.UltraDict), so the `sys.path.insert(0, '..')` lines of the
upstream files find the shim, never the upstream package. Then it runs tests/tests.py (verbose
unittest, one line per test) and every example with a timeout, from the copy's root as
UltraDict's tests do, and prints each result. Exit status: 0 when every test passed.

Needs the shmdict package on sys.path (PYTHONPATH=build/python from a build tree); psutil for
upstream's test_cleanup (Debian: python3-psutil).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import shmdict
import shmdict.ultradict

HEAD_BYTES = 1 << 20
TAIL_BYTES = 1 << 16

SHIM = '''"""Shim written by run_upstream_ultradict.py: UltraDict's name for shmdict's drop-in."""
from shmdict.ultradict import Exceptions, UltraDict  # noqa: F401
'''


def mapped_dicts(pgid):
    """The shmdict dict names that the processes of group `pgid` have mapped."""
    names = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    path = line.split(maxsplit=5)[-1].strip()
                    if path.startswith("/dev/shm/shmdict."):
                        names.add(path[len("/dev/shm/shmdict."):].split("@")[0])
        except (OSError, IndexError, ValueError):
            continue
    return names


def run(cmd, cwd, env, timeout):
    """(exit status or None on timeout, output). The program runs in a session of its own, so
    that on timeout its whole process group (multiprocessing children too) is SIGKILLed; the
    dicts those processes had mapped are unlinked then (an example that loops forever never
    reaches its own cleanup). The output kept is bounded: its first MiB and its last 64 KiB
    (some examples print the dict in an endless loop)."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    head, tail = bytearray(), bytearray()

    def drain():
        while chunk := p.stdout.read1(1 << 16):
            if len(head) < HEAD_BYTES:
                head.extend(chunk)
            else:
                tail.extend(chunk)
                del tail[:-TAIL_BYTES]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        code = p.wait(timeout)
    except subprocess.TimeoutExpired:
        names = mapped_dicts(p.pid)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        for name in names:
            shmdict.unlink_by_name(name, ignore_errors=True)
        code = None
    reader.join(30)
    p.stdout.close()
    cut = b"\n[...]\n" if tail and len(head) >= HEAD_BYTES else b""
    return code, (bytes(head) + cut + bytes(tail)).decode(errors="replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="an UltraDict checkout (holds tests/ and examples/)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds per program (examples that loop forever are cut there)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    top = tempfile.mkdtemp(prefix="shmdict-upstream-ultradict-")
    try:
        os.mkdir(os.path.join(top, "UltraDict"))
        with open(os.path.join(top, "UltraDict", "__init__.py"), "w") as f:
            f.write(SHIM)
        repo = os.path.join(top, "repo")
        for part in ("tests", "examples"):
            shutil.copytree(os.path.join(args.upstream, part), os.path.join(repo, part))
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(shmdict.ultradict.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([top, package_dir]),
                   PYTHONDONTWRITEBYTECODE="1")

        print(f"== UltraDict's tests/tests.py against {shmdict.ultradict.__file__}")
        code, out = run([sys.executable, "tests/tests.py", "-v"], repo, env, args.timeout)
        results = [line for line in out.splitlines() if " ... " in line]
        print("\n".join(results) if results else out)
        failures = out[out.find("\n===="):] if "\n====" in out else ""
        if failures:
            print(failures.rstrip())
        print(f"-- tests.py exit status: {'timeout' if code is None else code}\n")

        print("== examples/*.py")
        for name in sorted(os.listdir(os.path.join(repo, "examples"))):
            if not name.endswith(".py"):
                continue
            ecode, eout = run([sys.executable, os.path.join("examples", name)], repo, env,
                              args.timeout)
            last = eout.strip().splitlines()[-1] if eout.strip() else ""
            status = f"timeout after {args.timeout:g} s" if ecode is None else f"exit {ecode}"
            print(f"{name:36} {status:24} last line: {last[:100]}")
        return 0 if code == 0 else 1
    finally:
        if args.keep:
            print(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
