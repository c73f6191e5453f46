"""The package installs where /usr/bin/python3 finds it: `cmake --install` (the primary path) and
`pip install --no-build-isolation .` (setup.py / pyproject.toml)."""

import os
import shutil
import subprocess
import sys

import pytest

SOURCE = os.environ.get("SHMDICT_SOURCE_DIR")
BUILD = os.environ.get("SHMDICT_BUILD_DIR")
PROBE = ("import shmdict, shmdict.ultradict; d = shmdict.Dict(); d['k'] = [1, None]; "
         "assert d['k'] == [1, None]; d.close(); print(shmdict.__file__)")


def interpreter_path(prefix):
    """/usr/bin/python3's sys.path, as it is for a package installed under `prefix`."""
    out = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('\\n'.join(sys.path))"],
                         capture_output=True, text=True, check=True, env={}).stdout
    return [p for p in out.splitlines() if p.startswith(prefix + "/")]


def configured_prefix():
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith("CMAKE_INSTALL_PREFIX:"):
                return line.split("=", 1)[1].strip()
    raise AssertionError("CMAKE_INSTALL_PREFIX is not in the cache")


@pytest.mark.skipif(not BUILD, reason="needs the CMake build tree (run through ctest)")
def test_cmake_install_puts_the_package_on_the_interpreters_path(tmp_path):
    # The directory is chosen at configure time for the configured prefix (/usr/local by
    # default, /usr for distribution packages): install there, under DESTDIR.
    prefix = configured_prefix()
    env = dict(os.environ, DESTDIR=str(tmp_path))
    subprocess.run(["cmake", "--install", BUILD], env=env, check=True, capture_output=True)
    found = [p for p in interpreter_path(prefix)
             if os.path.isfile(f"{tmp_path}{p}/shmdict/__init__.py")]
    assert len(found) == 1, f"no directory of /usr/bin/python3's sys.path under {prefix} got it"
    out = subprocess.run(["/usr/bin/python3", "-c", PROBE], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": f"{tmp_path}{found[0]}"}).stdout
    assert out.strip() == f"{tmp_path}{found[0]}/shmdict/__init__.py"


@pytest.mark.skipif(not SOURCE, reason="needs the source tree (run through ctest)")
def test_pip_install_no_build_isolation_builds_a_working_package(tmp_path):
    if subprocess.run(["/usr/bin/python3", "-m", "pip", "--version"],
                      capture_output=True).returncode != 0:
        pytest.skip("pip is not installed for /usr/bin/python3 (Debian: python3-pip)")
    # A copy of what setup.py's CMake build reads, so that the in-tree build leaves nothing in
    # the checkout.
    tree = tmp_path / "src"
    tree.mkdir()
    shutil.copy(os.path.join(SOURCE, "CMakeLists.txt"), tree)
    for part in ("cmake", "core", "clients/python"):
        shutil.copytree(os.path.join(SOURCE, part), tree / part)
    target = tmp_path / "site"
    subprocess.run(["/usr/bin/python3", "-m", "pip", "install", "--disable-pip-version-check",
                    "--no-build-isolation", "--no-deps", "--no-cache-dir", "--target",
                    str(target), str(tree / "clients" / "python")],
                   check=True, capture_output=True,
                   env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(target)}).stdout
    assert out.strip() == f"{target}/shmdict/__init__.py"
