"""Builds shmdict._core with setuptools for `pip install .` (see pyproject.toml).

The sources are the core's (../../core/src) and the bindings' (src/); the build needs a C++20
compiler, pybind11 (Debian: pybind11-dev, or the pybind11 wheel) and the Python headers
(python3-dev). The CMake build is the primary path; this one
exists for environments that install Python packages with pip.
"""

import glob
import os
import sysconfig

from setuptools import Extension, setup

# `core` here is a symlink to the repository's core/ (../../core): setuptools accepts only
# relative source paths, and ones leading out of this directory (../..) would put objects beside
# the sources instead of in its build directory.
os.chdir(os.path.dirname(os.path.abspath(__file__)))
CORE = "core"


def pybind11_include():
    try:
        import pybind11
        return [pybind11.get_include()]
    except ImportError:
        return []  # Debian's pybind11-dev installs the headers on the default include path


core_sources = sorted(p for p in glob.glob(os.path.join(CORE, "src", "*.cc"))
                      if not p.endswith("_test.cc"))
if not core_sources:
    raise SystemExit("shmdict: the core's sources are not under clients/python/core (a symlink "
                     "to ../../core); build from a checkout: pip install clients/python")

extension = Extension(
    "shmdict._core",
    sources=core_sources + ["src/codec.cc", "src/module.cc"],
    include_dirs=[os.path.join(CORE, "include"), os.path.join(CORE, "src")]
    + pybind11_include(),
    extra_compile_args=["-std=c++20", "-fvisibility=hidden"],
    libraries=["rt"],
    language="c++",
)

if sysconfig.get_platform().startswith("linux"):
    setup(ext_modules=[extension])
else:
    raise SystemExit("shmdict needs Linux (POSIX shared memory, futexes, glibc robust mutexes)")
