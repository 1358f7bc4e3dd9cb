"""The whole server on the native data plane: ``sftd --dataplane native -O lo``
with three aiortc clients in one call. Every client decodes every other one's
audio and video, the engine's workers read the legs' sockets (no media packet
reaches the event loop) and ICE consent, DTLS and RTCP go on through the upcalls."""

from __future__ import annotations

import pytest

from sftd.engine.dataplane import native_available

from .helpers import gets_media, media_table, new_convid, wait_until

AVAILABLE, WHY_NOT = native_available()
pytestmark = [pytest.mark.timeout(90), pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)]

DETAIL = 'sft_dataplane_detail_total{{counter="{}"}}'
PACKETS = 'sft_dataplane_packets_total{{counter="{}"}}'


@pytest.mark.sftd_args("--dataplane", "native", "-w", "2")
async def test_three_clients_through_the_native_engine(sftd, wire_client):
    conv = new_convid()
    clients = [await wire_client(sftd, conv, f"native{i}") for i in range(3)]
    await wait_until(lambda: all(gets_media(c, [o for o in clients if o is not c])
                                 for c in clients),
                     40, "decoded audio+video from each other participant",
                     lambda: media_table(clients))
    for rx in clients:
        assert not rx.received.unknown_csrc_packets, rx.received.unknown_csrc_packets
    # receiver reports and PINGs need RTCP and the data channel: upcalls work
    await wait_until(lambda: all(c.received.pongs >= 1 for c in clients), 10, "PING echoes")

    received = sum(s.audio_packets + s.video_packets  # before the metrics: media goes on
                   for c in clients for s in c.received.by_person.values())
    metrics = await sftd.metrics()
    assert metrics['sft_dataplane_info{dataplane="native"}'] == 1
    assert metrics[DETAIL.format("USERSPACE_MEDIA")] == 0  # the interpreter forwarded nothing
    assert metrics[DETAIL.format("UPCALLS")] > 0  # STUN consent, DTLS, RTCP went back
    assert metrics[DETAIL.format("UPCALLS_DROPPED")] == 0
    assert metrics[PACKETS.format("TX_PACKETS")] >= received > 0
    assert metrics[PACKETS.format("DROP_AUTH")] == 0
    assert metrics[PACKETS.format("DROP_REPLAY")] == 0
