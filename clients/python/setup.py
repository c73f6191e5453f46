"""Builds shmdict._core for `pip install .` (see pyproject.toml) by running the repository's CMake
build for the one target `shmdict_python`, so that the extension is compiled from exactly the
sources CMake lists (core/CMakeLists.txt, clients/python/CMakeLists.txt), with the same flags.

Needs a checkout of the repository (the top-level CMakeLists.txt, cmake/, core/ and
clients/python/), CMake >= 3.25, a C++20 compiler, pybind11 (Debian: pybind11-dev; or the
pybind11 wheel) and the Python headers (python3-dev). The extension is built without the bridge
client (shmdict.connect then raises ImportError); the CMake build with SHMDICT_BUILD_BRIDGE=ON
is the path that includes it.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # the repository: clients/python/../..


def pybind11_cmake_args():
    try:
        import pybind11
        return [f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
    except ImportError:
        return []  # Debian's pybind11-dev installs its CMake package where CMake looks


class CMakeExtension(Extension):
    """An extension whose sources CMake knows: setuptools gets none."""

    def __init__(self, name, target):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not os.path.isfile(os.path.join(ROOT, "CMakeLists.txt")):
            raise SystemExit(f"shmdict: no CMakeLists.txt at {ROOT}: build from a checkout of "
                             "the repository (pip install clients/python)")
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        configure = [
            "cmake", "-S", ROOT, "-B", build_dir,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DSHMDICT_BUILD_PYTHON=ON",
            "-DSHMDICT_BUILD_TESTS=OFF",
            "-DSHMDICT_BUILD_CLI=OFF",
            "-DSHMDICT_BUILD_BENCH=OFF",
            "-DSHMDICT_BUILD_BRIDGE=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ] + pybind11_cmake_args()
        subprocess.run(configure, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        built = subprocess.run(["cmake", "--build", build_dir, "--target", ext.target,
                                "--parallel", jobs])
        if built.returncode != 0:
            raise SystemExit("shmdict: building the extension failed (see above); CMake builds "
                             "it only when it finds pybind11 and the Python headers")
        outputs = glob.glob(os.path.join(build_dir, "python", "shmdict", "_core*.so"))
        if len(outputs) != 1:
            raise SystemExit(f"shmdict: expected one _core*.so from CMake, found {outputs}")
        destination = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(outputs[0], destination)


if not sysconfig.get_platform().startswith("linux"):
    # POSIX shared memory in /dev/shm, futexes, and the writer lock's liveness locks (open file
    # description locks on the segment: docs/WRITER_LOCK.md) are Linux facilities.
    raise SystemExit("shmdict needs Linux")
os.chdir(HERE)
setup(ext_modules=[CMakeExtension("shmdict._core", target="shmdict_python")],
      cmdclass={"build_ext": CMakeBuild})
