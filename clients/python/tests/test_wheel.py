"""The README's wheel commands (`python3 -m build --no-isolation --wheel`, Debian's python3-build,
then `pip install` of the wheel into a fresh venv) run as written, offline; the wheel holds the
whole package (extension with the bridge client, stubs, py.typed, version) and the package's
own tests pass against the installed copy. Slow (a full build): its own CTest test."""

import glob
import os
import subprocess
import zipfile

import pytest
import readme_commands
from conftest import BRIDGE

SOURCE = os.environ.get("SHMDICT_SOURCE_DIR")
TESTS = os.path.dirname(os.path.abspath(__file__))


def package_tree():
    top = os.path.join(SOURCE, "clients", "python")
    return sorted(os.path.relpath(os.path.join(d, f), top)
                  for d, dirs, files in os.walk(top) for f in dirs + files)


@pytest.mark.skipif(not SOURCE or not BRIDGE,
                    reason="needs the source tree and shmdict-bridge (run through ctest)")
def test_a_wheel_built_once_installs_into_a_fresh_venv_and_passes_the_tests(tmp_path):
    commands = readme_commands.block(SOURCE, "wheel")
    missing = readme_commands.missing_debian_packages(readme_commands.apt_packages(commands))
    assert not missing, f"the README's apt line names packages not installed here: {missing}"
    before = package_tree()
    env = readme_commands.newcomer_env(tmp_path)
    readme_commands.run(commands, SOURCE, env)
    assert package_tree() == before, "the wheel build left files in clients/python"

    wheels = glob.glob(str(tmp_path / "shmdict-wheels" / "shmdict-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for part in ("py.typed", "__init__.pyi", "_core.pyi", "_dict.pyi", "ultradict.pyi",
                 "_version.py", "__init__.py", "_dict.py", "ultradict.py"):
        assert f"shmdict/{part}" in names, f"the wheel lacks shmdict/{part}: {sorted(names)}"
    assert any(n.startswith("shmdict/_core.") and n.endswith(".so") for n in names)

    python = str(tmp_path / ".venvs" / "shmdict-wheel" / "bin" / "python")
    where = subprocess.run([python, "-c", "import shmdict; print(shmdict.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(tmp_path / ".venvs" / "shmdict-wheel") + "/"), where
    # The package's tests, as ctest runs them but importing the installed package: the
    # environment names the programs they start; PYTHONPATH (the build tree) is left out.
    test_env = dict(os.environ, **env, PYTHONDONTWRITEBYTECODE="1")
    test_env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS,
                           f"--ignore={TESTS}/test_install.py", f"--ignore={TESTS}/test_wheel.py"],
                          env=test_env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
