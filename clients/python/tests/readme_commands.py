"""The README's install commands, run as written: test_install.py and test_wheel.py take them
from the marked blocks of the repository's README.md (`<!-- NAME:begin -->` ... `:end -->`),
so the documented commands and the tested ones cannot drift apart."""

import os
import re
import shlex
import subprocess


def block(source_dir, name):
    """The shell commands of README.md's block `name`, continuation lines joined, comments and
    blank lines dropped."""
    with open(os.path.join(source_dir, "README.md")) as f:
        text = f.read()
    found = re.search(rf"<!-- {name}:begin -->\s*```sh\n(.*?)```\s*<!-- {name}:end -->", text,
                      re.S)
    assert found, f"README.md has no ```sh block marked {name}"
    commands = []
    for line in found.group(1).replace("\\\n", " ").splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def apt_packages(commands):
    """The packages of the block's `sudo apt install` lines."""
    packages = []
    for command in commands:
        words = shlex.split(command)
        if words[:3] == ["sudo", "apt", "install"]:
            packages += [w for w in words[3:] if not w.startswith("-")]
    return packages


def missing_debian_packages(packages):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
                         capture_output=True, text=True).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def newcomer_env(home):
    """A shell as a newcomer's on Debian 12: Debian's python3 first on PATH, HOME in the test's
    directory (the README's ~/ paths), nothing of the test run's PYTHONPATH (which points at the
    build tree), and pip offline (PIP_NO_INDEX: the commands must not need PyPI)."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # The one exception: a test run that compiles through ccache (CI exports the launcher) lends
    # it to the pip builds, which change only how fast the extension compiles. Each build runs in
    # a fresh temporary directory of the same depth, so with paths made relative to it
    # (CCACHE_BASEDIR=/) and the directory not hashed, the second README build (test_wheel after
    # test_install, or a CI retry) hits the cache instead of compiling for two more minutes.
    if os.environ.get("CMAKE_CXX_COMPILER_LAUNCHER") == "ccache":
        env.update({"CMAKE_CXX_COMPILER_LAUNCHER": "ccache", "CCACHE_BASEDIR": "/",
                    "CCACHE_NOHASHDIR": "1"})
        # The cache the test run uses (its HOME's configuration would be lost with HOME).
        cache_dir = os.environ.get("CCACHE_DIR") or subprocess.run(
            ["ccache", "-k", "cache_dir"], capture_output=True, text=True).stdout.strip()
        if cache_dir:
            env["CCACHE_DIR"] = cache_dir
    return env


def run(commands, cwd, env):
    """Runs the commands other than apt's in one bash, stopping at the first failure; returns
    the output (an AssertionError with it when a command fails)."""
    script = "set -euo pipefail\n" + "\n".join(
        c for c in commands if not c.startswith("sudo apt "))
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, (f"README commands failed ({proc.returncode}):\n{script}\n"
                                  f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout
