"""Values written from Python are read natively by the CLI and by C++, and the other way round."""

import json
import os
import subprocess

import pytest

import shmdict


CLI = os.environ.get("SHMDICT_CLI")
PEER = os.environ.get("SHMDICT_INTEROP_PEER")


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not CLI, reason="the CLI is not built (SHMDICT_BUILD_CLI=OFF)")
def test_cli_reads_python_values_with_their_types(d):
    d.update({"s": "é", "i": -3, "f": 1.5, "b": True, "n": None, "y": b"\x00\x01",
              "j": {"a": [1, None]}, "t": (1, 2), "ik": {1: "a"}, 7: "int key"})
    rows = [json.loads(line) for line in run(CLI, "export", d.name).splitlines()]
    by_key = {r.get("key", r.get("key_hex")): r for r in rows}
    assert by_key["s"] == {"key": "s", "type": "str", "value": "é"}
    assert by_key["i"] == {"key": "i", "type": "int", "value": -3}
    assert by_key["f"] == {"key": "f", "type": "float", "value": 1.5}
    assert by_key["b"] == {"key": "b", "type": "bool", "value": True}
    assert by_key["n"] == {"key": "n", "type": "null", "value": None}
    assert by_key["j"] == {"key": "j", "type": "json", "value": {"a": [1, None]}}
    # JSON only where it round-trips: a tuple and int dict keys are pickled, and say so.
    assert by_key["t"]["type"] == "pickle" and by_key["ik"]["type"] == "pickle"
    assert by_key["y"]["type"] == "bytes"
    assert by_key["ff6937"] == {"key_hex": "ff6937", "type": "str", "value": "int key"}
    assert run(CLI, "get", d.name, "s") == "é\n"


@pytest.mark.skipif(not CLI, reason="the CLI is not built (SHMDICT_BUILD_CLI=OFF)")
def test_python_reads_cli_values(d):
    for key, value, type_ in [("s", "text", "str"), ("i", "12", "int"), ("f", "0.25", "float"),
                              ("b", "false", "bool"), ("j", '{"x":[1]}', "json"),
                              ("n", "null", "null")]:
        run(CLI, "set", d.name, key, value, "--type", type_)
    assert d.copy() == {"s": "text", "i": 12, "f": 0.25, "b": False, "j": {"x": [1]}, "n": None}
    assert type(d["b"]) is bool and type(d["i"]) is int


@pytest.mark.skipif(not PEER, reason="SHMDICT_INTEROP_PEER is not set (run through ctest)")
def test_cpp_reads_python_values_and_python_reads_cpp_values(d):
    d.update({"s": "é", "i": -3, "f": 2.5, "b": False, "n": None, "y": b"\x00", "j": [1]})
    lines = sorted(run(PEER, "dump", d.name).splitlines())
    assert lines == sorted([
        "s".encode().hex() + " str é", "i".encode().hex() + " int -3",
        "f".encode().hex() + " float 2.5", "b".encode().hex() + " bool false",
        "n".encode().hex() + " null null", "y".encode().hex() + " bytes 0x00",
        "j".encode().hex() + " json [1]"])
    run(PEER, "write", d.name)
    got = {k: v for k, v in d.items() if str(k).startswith("c.")}
    assert got == {"c.str": "from C++ é", "c.int": -42, "c.float": 2.5, "c.bool": True,
                   "c.null": None, "c.bytes": b"\x00\xff", "c.json": {"a": [1, 2]}}
    assert type(got["c.bool"]) is bool


@pytest.mark.skipif(not PEER, reason="SHMDICT_INTEROP_PEER is not set (run through ctest)")
def test_a_reader_does_not_follow_a_reference_to_a_dict_other_than_its_child(d, name):
    # A raw writer stored a nested-dict value naming another dict: reading it must not open that
    # dict (the reader was never given it), and the error names it.
    victim = name + ".victim"
    with shmdict.Dict(victim, create=True) as other:
        other["secret"] = 1
        for reference in (victim, victim + "@c12ab", d.name + "x@c12"):
            run(PEER, "set-ref", d.name, "ref", reference)
            with pytest.raises(shmdict.FailedPrecondition, match=f"'{reference}'"):
                d["ref"]
            with pytest.raises(shmdict.FailedPrecondition):
                d.copy()
            with pytest.raises(shmdict.FailedPrecondition, match=f"'{reference}'"):
                d.nested("ref")
        del d["ref"]
        assert other["secret"] == 1, "deleting the reference must not unlink the other dict"
    # A child of its own dict is still followed.
    child = d.nested("own")
    child["x"] = 2
    assert d["own"]["x"] == 2
