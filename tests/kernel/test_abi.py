"""bpf/abi.py (Python's reading of sft_abi.h) against the compiled object's BTF."""

from __future__ import annotations

import json
import subprocess

import pytest

from sftd.bpf import abi, steer
from sftd.bpf.dataplane import OBJECT_PATH
from sftd.controller.dataplane import LAYER_PAUSED_AFTER, MAX_SSRCS_PER_LEG, Counter


def _btf_types_of(path: object) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["types"]


def _by_name(btf_types: list[dict]) -> dict[str, dict]:
    return {f"{t['kind']} {t['name']}": t for t in btf_types if t.get("name")}


@pytest.fixture(scope="module")
def btf_types() -> list[dict]:
    return _btf_types_of(OBJECT_PATH)


@pytest.fixture(scope="module")
def btf(btf_types: list[dict]) -> dict[str, dict]:
    return _by_name(btf_types)


def _btf_size(btf_types: list[dict], type_id: int) -> int:
    by_id = {t["id"]: t for t in btf_types}
    t = by_id[type_id]
    while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE"):
        t = by_id[t["type_id"]]
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * _btf_size(btf_types, t["type_id"])
    return t["size"]


def test_every_shared_struct_matches_btf(btf: dict[str, dict], btf_types: list[dict]) -> None:
    _assert_structs_match(btf, btf_types, abi.SHARED_STRUCTS)


def _assert_structs_match(btf: dict[str, dict], btf_types: list[dict],
                          names: tuple[str, ...]) -> None:
    a = abi.load()
    for name in names:
        t = btf.get(f"STRUCT {name}")
        assert t is not None, f"struct {name} is not in the object's BTF (unused by the programs?)"
        assert a.sizeof(name) == t["size"], name
        ctype = a.ffi.typeof(f"struct {name}")
        python_fields = [f for f, _ in ctype.fields]
        assert python_fields == [m["name"] for m in t["members"]], name
        for member in t["members"]:
            assert a.ffi.offsetof(f"struct {name}", member["name"]) * 8 == member["bits_offset"], \
                f"{name}.{member['name']}"
            field_type = dict(ctype.fields)[member["name"]].type
            assert a.ffi.sizeof(field_type) == _btf_size(btf_types, member["type_id"]), \
                f"{name}.{member['name']}"


def test_enums_match_btf(btf: dict[str, dict]) -> None:
    _assert_enums_match(btf, abi.SHARED_ENUMS)


def _assert_enums_match(btf: dict[str, dict], names: tuple[str, ...]) -> None:
    a = abi.load()
    for name in names:
        t = btf.get(f"ENUM {name}")
        assert t is not None, f"enum {name} is not in the object's BTF"
        assert {v["name"]: v["val"] for v in t["values"]} == a.enum_members(name)


def test_counter_enum_matches_controller() -> None:
    members = abi.load().enum_members("sft_counter")
    assert members.pop("SFT_CTR_MAX") == len(Counter)
    assert members == {f"SFT_CTR_{c.name}": c.value for c in Counter}


def test_layer_pause_threshold_is_the_same_on_both_planes() -> None:
    assert abi.load().consts.SFT_LAYER_STALE_NS == round(LAYER_PAUSED_AFTER * 1e9)


def test_ssrc_cap_matches_controller() -> None:
    assert abi.load().consts.SFT_MAX_SSRCS_PER_LEG == MAX_SSRCS_PER_LEG


def test_steering_object_matches_abi_and_python() -> None:
    types = _btf_types_of(steer.OBJECT_PATH)
    _assert_structs_match(_by_name(types), types, abi.STEER_STRUCTS)
    _assert_enums_match(_by_name(types), abi.STEER_ENUMS)
    members = abi.load().enum_members("sft_steer_counter")
    assert members.pop("SFT_STEER_MAX") == len(steer.SteerCounter)
    assert members == {f"SFT_STEER_{c.name}": c.value for c in steer.SteerCounter}


def test_sink_object_matches_abi() -> None:
    from sftd.sftload import sink

    types = _btf_types_of(sink.OBJECT_PATH)
    _assert_structs_match(_by_name(types), types, abi.SINK_STRUCTS)
