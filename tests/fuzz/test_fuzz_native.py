"""The fuzz of tests/fuzz/test_fuzz_dataplane.py on the native plane: random and
mutated SRTP over real UDP sockets into ``NativeDataPlane.handle_packet`` (inline
engine, so every datagram takes the event loop's path and is accounted for as
there). The same invariants: nothing forwarded unless authentic, each input
counted exactly once, every copy decrypts with the subscriber's keys."""

from __future__ import annotations

import pytest
from hypothesis import given

from sftd.controller.dataplane import SRTP_AEAD_AES_128_GCM, SRTP_AES_CM_128_HMAC_SHA1_80
from sftd.engine.dataplane import NativeDataPlane, native_available

from .conftest import examples
from .test_fuzz_dataplane import Plane, operations, prepare
from .test_fuzz_dataplane import test_srtp_into_handle_packet as _srtp_fuzz

AVAILABLE, WHY_NOT = native_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)


class NativePlane(Plane):
    def __init__(self, profile: str) -> None:
        super().__init__(profile)
        self.plane.close()
        self.plane = NativeDataPlane(workers=0)  # type: ignore[assignment]


@pytest.fixture(params=[SRTP_AES_CM_128_HMAC_SHA1_80, SRTP_AEAD_AES_128_GCM])
async def native_plane(request):
    p = await prepare(NativePlane(request.param))
    yield p
    p.close()


@examples(ci=150, long=1500)
@given(ops=operations())
async def test_srtp_into_the_native_plane(native_plane, ops):
    await _srtp_fuzz.hypothesis.inner_test(native_plane, ops)
