"""Each KernelDataPlane verb is all or nothing: a map write that fails midway
leaves no entry of the leg in any map, no lost slot id and no lost ring."""

from __future__ import annotations

import struct

import pytest
from harness import make_peer

from sftd.bpf import libbpf
from sftd.bpf.dataplane import KernelDataPlane, KernelDataPlaneError
from tests.conftest import owned_name

LEG_KEYED = ("sft_leg_by_addr", "sft_legs", "sft_leases", "sft_leg_state", "sft_streams",
             "sft_stream_state", "sft_fanout")


def leg_entries(dp: KernelDataPlane, leg_id: int) -> dict[str, int]:
    """How many entries of ``leg_id`` each leg-keyed map holds."""
    key = struct.pack("<I", leg_id)
    found = {}
    for name in LEG_KEYED:
        m = dp.maps[name]
        if name == "sft_leg_by_addr":
            count = sum(1 for k in m.keys() if m.lookup(k) == key)
        else:
            count = sum(1 for k in m.keys() if k[:4] == key)
        if count:
            found[name] = count
    return found


def slot_in_use(dp: KernelDataPlane, slot_id: int) -> bool:
    return dp.maps["sft_slots"].lookup(struct.pack("<I", slot_id)) != bytes(
        dp.abi.sizeof("sft_slot"))


def test_third_map_write_failing_leaves_nothing(dp, netns):
    leases = dp.maps["sft_leases"]
    fillers = [struct.pack("<I", 1_000_000 + i) for i in range(leases.max_entries)]
    for key in fillers:  # a full map makes add_leg's third write (the lease) fail
        leases.update(key, struct.pack("<Q", 1))
    peer = make_peer(0, 40000)
    free_slots = len(dp._free_slot_ids)
    with pytest.raises(libbpf.MapOperationFailed):
        dp.add_leg(peer.spec)
    assert leg_entries(dp, peer.leg_id) == {}
    assert peer.leg_id not in dp._legs and not dp._slots
    assert len(dp._free_slot_ids) == free_slots

    for key in fillers:
        leases.delete(key)
    dp.add_leg(peer.spec)  # the same leg goes in once there is room
    assert leg_entries(dp, peer.leg_id) == {"sft_leg_by_addr": 1, "sft_legs": 1,
                                            "sft_leases": 1, "sft_leg_state": 1}
    dp.remove_leg(peer.leg_id)
    assert leg_entries(dp, peer.leg_id) == {}


def test_slot_failing_midway_frees_its_id_and_rings(netns):
    # room for 2 audio rings (32) and one video ring (128), not a second video ring
    plane = KernelDataPlane((), (40000, 40999), instance=owned_name("fail"),
                            keystream_entries=300)
    try:
        free_slots = len(plane._free_slot_ids)
        peer = make_peer(0, 40000, n_audio=2, n_video=2)
        with pytest.raises(KernelDataPlaneError, match="keystream map full"):
            plane.add_leg(peer.spec)
        assert leg_entries(plane, peer.leg_id) == {}
        assert not plane._slots and len(plane._free_slot_ids) == free_slots
        assert not any(slot_in_use(plane, i) for i in range(8))
        # every ring came back: a leg that fits is served from the same entries
        fits = make_peer(1, 40001, n_audio=2, n_video=1)
        plane.add_leg(fits.spec)
        assert len(plane._slots) == 3
    finally:
        plane.close()
