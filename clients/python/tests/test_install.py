"""The package installs where /usr/bin/python3 finds it: `cmake --install`, and the README's pip
commands (a venv with --system-site-packages, `pip install --no-build-isolation clients/python`),
run as written, offline, from the checkout, which they must leave as they found it."""

import os
import re
import subprocess

import pytest
import readme_commands
from conftest import BRIDGE, Bridge

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



# What the installed package must do in the venv: import from the venv (not the build tree), a
# local dict, and shmdict.connect through a real bridge to the same dict (argv: address, name).
VENV_PROBE = """
import sys
import shmdict, shmdict.ultradict
assert shmdict.__file__.startswith(sys.prefix + "/"), shmdict.__file__
address, name = sys.argv[1:]
with shmdict.Dict(name, create=True) as d:
    d["local"] = [1, None]
    with shmdict.connect(address, name, mirror=False) as r:
        assert r["local"] == [1, None], r["local"]
        r["remote"] = 42
    assert d["remote"] == 42
print(shmdict.__version__)
"""


def project_version():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        return re.search(r"project\(shmdict VERSION ([0-9.]+)", f.read()).group(1)


def package_tree():
    """Every path under clients/python: the build must add nothing there (build/, *.egg-info,
    dist/)."""
    top = os.path.join(SOURCE, "clients", "python")
    return sorted(os.path.relpath(os.path.join(d, f), top)
                  for d, dirs, files in os.walk(top) for f in dirs + files)


@pytest.mark.skipif(not SOURCE or not BRIDGE,
                    reason="needs the source tree and shmdict-bridge (run through ctest)")
def test_the_readmes_pip_commands_install_a_package_that_connects(tmp_path, name):
    commands = readme_commands.block(SOURCE, "pip-install")
    missing = readme_commands.missing_debian_packages(readme_commands.apt_packages(commands))
    assert not missing, f"the README's apt line names packages not installed here: {missing}"
    before = package_tree()
    out = readme_commands.run(commands, SOURCE, readme_commands.newcomer_env(tmp_path))
    assert package_tree() == before, "the pip build left files in clients/python"
    assert out.splitlines()[-1] == project_version()  # the block's last command prints it

    python = tmp_path / ".venvs" / "shmdict" / "bin" / "python"
    bridge = Bridge()
    try:
        bridge.start()
        out = subprocess.run([str(python), "-c", VENV_PROBE, bridge.address, name],
                             capture_output=True, text=True,
                             env=readme_commands.newcomer_env(tmp_path))
    finally:
        bridge.cleanup()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == project_version()


@pytest.mark.skipif(not SOURCE, reason="needs the source tree (run through ctest)")
def test_a_missing_grpc_is_named_as_the_debian_packages_to_install(tmp_path):
    # CMake then finds no package configuration files at all: gRPC's is the first it needs.
    env = dict(readme_commands.newcomer_env(tmp_path),
               SHMDICT_CMAKE_ARGS="-DCMAKE_FIND_ROOT_PATH=/nonexistent "
                                  "-DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages",
                    str(tmp_path / "venv")], check=True, env=env)
    proc = subprocess.run([str(tmp_path / "venv" / "bin" / "pip"), "install",
                           "--no-build-isolation", "clients/python"],
                          cwd=SOURCE, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "sudo apt install libgrpc++-dev protobuf-compiler-grpc" in proc.stdout + proc.stderr
