"""Builds shmdict._core for `pip install` and `python3 -m build` (see pyproject.toml) by running
the repository's CMake build for the one target `shmdict_python`, so that the extension is
compiled from exactly the sources CMake lists (core/, clients/cpp, clients/python), with the same
flags, and includes the bridge client (shmdict.connect; Debian's gRPC).

Needs a checkout of the repository (the top-level CMakeLists.txt and the folders it adds) and the
Debian packages the README's "Python" section lists. Everything the build writes goes to a
temporary directory (setuptools' build and egg-info directories included), never into the
checkout: several builds may run side by side from one checkout.

Environment: CMAKE_BUILD_PARALLEL_LEVEL (default: every CPU), SHMDICT_CMAKE_ARGS (extra
`cmake` configure arguments, split on blanks).
"""

import atexit
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # the repository: clients/python/../..

# What a CMake package that configure could not find is called in Debian, for a pip user who
# never ran CMake. Keys are the names CMake prints ("provided by \"gRPC\"", "Could NOT find X").
DEBIAN_PACKAGES = {
    "gRPC": "libgrpc++-dev protobuf-compiler-grpc",
    "Protobuf": "libprotobuf-dev protobuf-compiler",
    "CLI11": "libcli11-dev",
    "spdlog": "libspdlog-dev",
    "nlohmann_json": "nlohmann-json3-dev",
    "PkgConfig": "pkg-config",
    "cpp-httplib": "libcpp-httplib-dev",
    "Python3": "python3-dev",
    "pybind11": "pybind11-dev",
    "Threads": "libc6-dev",
}


def project_version():
    """The version in the top-level CMakeLists.txt's project(): the one the C++ binaries print
    (--version) and shmdict.__version__ reports."""
    path = os.path.join(ROOT, "CMakeLists.txt")
    try:
        with open(path) as f:
            found = re.search(r"project\(\s*shmdict\s+VERSION\s+([0-9.]+)", f.read())
    except OSError:
        found = None
    if not found:
        raise SystemExit(f"shmdict: no project(shmdict VERSION ...) in {path}: build from a "
                         "checkout of the repository (pip install clients/python)")
    return found.group(1)


def pybind11_cmake_args():
    try:
        import pybind11
        return [f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
    except ImportError:
        return []  # Debian's pybind11-dev installs its CMake package where CMake looks


def missing_packages(cmake_output):
    """The Debian packages for the CMake packages that configure reported missing."""
    names = re.findall(r'provided by\s+"([\w+-]+)"|Could NOT find ([\w+-]+)|'
                       r"The following required packages were not found:\s+- ([\w+-]+)",
                       cmake_output)
    missing = []
    for groups in names:
        name = next(g for g in groups if g)
        package = DEBIAN_PACKAGES.get(name)
        if package and package not in missing:
            missing.append(package)
    return missing


def run_logged(command, log_path):
    """Runs command with its output on our stderr (pip shows it with -v, and on failure) and in
    log_path, for missing_packages()."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            sys.stderr.write(line)
            log.write(line)
        return proc.wait()


class CMakeExtension(Extension):
    """An extension whose sources CMake knows: setuptools gets none."""

    def __init__(self, name, target):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        configure = [
            "cmake", "-S", ROOT, "-B", build_dir, *generator,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DSHMDICT_BUILD_PYTHON=ON",
            "-DSHMDICT_BUILD_TESTS=OFF",
            "-DSHMDICT_BUILD_CLI=OFF",
            "-DSHMDICT_BUILD_BENCH=OFF",
            # The bridge client, so that shmdict.connect works in the installed package.
            "-DSHMDICT_BUILD_BRIDGE=ON",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ] + pybind11_cmake_args() + os.environ.get("SHMDICT_CMAKE_ARGS", "").split()
        log = os.path.join(self.build_temp, "configure.log")
        os.makedirs(self.build_temp, exist_ok=True)
        if run_logged(configure, log) != 0:
            with open(log) as f:
                missing = missing_packages(f.read())
            hint = (f"install them (Debian 12: sudo apt install {' '.join(missing)}) and run pip "
                    "again" if missing else "see CMake's message above")
            raise SystemExit("shmdict: configuring the C++ build failed: packages it needs are "
                             f"missing: {hint}. The README's Python section lists them all.")
        # Every CPU unless the user says otherwise: the build is ~100 C++ files (gRPC's generated
        # code among them), minutes on one core.
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        built = subprocess.run(["cmake", "--build", build_dir, "--target", ext.target,
                                "--parallel", jobs])
        if built.returncode != 0:
            raise SystemExit("shmdict: compiling the extension failed (see the compiler's "
                             "message above)")
        package = os.path.join(build_dir, "python", "shmdict")
        outputs = glob.glob(os.path.join(package, "_core*.so"))
        if len(outputs) != 1:
            raise SystemExit(f"shmdict: expected one _core*.so from CMake, found {outputs}")
        destination = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(outputs[0], destination)
        # The version module CMake generated from project(... VERSION): beside the extension.
        shutil.copyfile(os.path.join(package, "_version.py"),
                        os.path.join(os.path.dirname(destination), "_version.py"))


if not sysconfig.get_platform().startswith("linux"):
    # POSIX shared memory in /dev/shm, futexes, and the writer lock's liveness locks (open file
    # description locks on the segment: docs/WRITER_LOCK.md) are Linux facilities.
    raise SystemExit("shmdict needs Linux")
os.chdir(HERE)
# setuptools writes build/ and shmdict.egg-info/ beside setup.py unless told otherwise: a
# directory of our own keeps the checkout clean (and lets two builds run at once).
scratch = tempfile.mkdtemp(prefix="shmdict-setup-")
atexit.register(shutil.rmtree, scratch, ignore_errors=True)
setup(version=project_version(),
      ext_modules=[CMakeExtension("shmdict._core", target="shmdict_python")],
      cmdclass={"build_ext": CMakeBuild},
      options={"build": {"build_base": os.path.join(scratch, "build")},
               "egg_info": {"egg_base": scratch}})
