"""The package's type stubs (PEP 561: py.typed and .pyi files beside the modules): mypy accepts a
typed program using the documented API and rejects one that misuses it; mypy's stubtest finds
the stubs and the runtime package in agreement (a method added, removed or re-signed without its
stub fails here). Runs against whichever shmdict is imported: the build tree, or an installed copy
(test_wheel.py), where mypy must find the stubs through site-packages."""

import os
import re
import subprocess
import sys

import pytest

import shmdict

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "typing")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(shmdict.__file__)))
INSTALLED = os.path.basename(PACKAGE_PARENT) in ("site-packages", "dist-packages")

try:
    import mypy  # noqa: F401
except ImportError:
    mypy = None
pytestmark = pytest.mark.skipif(mypy is None, reason="mypy is not installed (Debian: python3-mypy)")


def mypy_env():
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH",)}
    if not INSTALLED:  # mypy refuses site-packages in MYPYPATH; installed, it finds py.typed
        env["MYPYPATH"] = PACKAGE_PARENT
    return env


def run_mypy(*args):
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                           os.devnull, "--python-executable", sys.executable, *args],
                          capture_output=True, text=True, env=mypy_env())


def test_a_typed_program_using_the_api_type_checks():
    proc = run_mypy("--strict", os.path.join(HERE, "typed_usage.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_typed_program_runs():
    # The stubs describe what the package does: the same program runs without error.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), PACKAGE_PARENT) if p and not INSTALLED))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "typed_usage.py")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_misuse_is_rejected():
    path = os.path.join(HERE, "typed_error.py")
    with open(path) as f:
        expected = {i for i, line in enumerate(f, 1) if "# error" in line}
    proc = run_mypy("--strict", path)
    reported = {int(n) for n in re.findall(r"typed_error\.py:(\d+): error", proc.stdout)}
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert reported == expected, proc.stdout


def test_the_stubs_match_the_runtime_package():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "shmdict", "--mypy-config-file", os.devnull,
         "--allowlist", os.path.join(HERE, "stubtest_allowlist.txt")],
        capture_output=True, text=True, env=dict(mypy_env(), PYTHONPATH=os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH"), PACKAGE_PARENT) if p and not INSTALLED)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_version_is_the_projects():
    source = os.environ.get("SHMDICT_SOURCE_DIR")
    if not source:
        pytest.skip("needs the source tree (run through ctest)")
    with open(os.path.join(source, "CMakeLists.txt")) as f:
        version = re.search(r"project\(shmdict VERSION ([0-9.]+)", f.read()).group(1)
    assert shmdict.__version__ == version
