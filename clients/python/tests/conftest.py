"""Shared fixtures: a unique dict name per test, and a check that the test left nothing behind
in /dev/shm (every segment of a dict is named shmdict.NAME or shmdict.NAME@...)."""

import glob
import itertools
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # helpers.py, also for spawned children

import shmdict  # noqa: E402

_counter = itertools.count()


def segments(name):
    return glob.glob(f"/dev/shm/shmdict.{glob.escape(name)}") + glob.glob(
        f"/dev/shm/shmdict.{glob.escape(name)}@*")


@pytest.fixture
def name(request):
    test = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.originalname)[:80]
    n = f"py.{test}.{os.getpid()}.{next(_counter)}"
    yield n
    left = segments(n)
    shmdict.unlink_by_name(n, ignore_errors=True)
    assert not left, f"the test left segments behind: {left}"


@pytest.fixture
def d(name):
    with shmdict.Dict(name, create=True) as handle:
        yield handle
