"""Per-conference packet counters: an ended conference's entry goes, and a full
map is counted (SFT_K_TC_CONF_COUNTER_FULL) instead of silently not counting."""

from __future__ import annotations

import os
import struct

from harness import rtp
from test_srtp_fanout import AUDIO_SSRC, TC_ACT_SHOT, Conference, _prime

from sftd.controller.dataplane import StreamKind


def test_full_conference_map_is_counted_and_reset_frees_entries(dp, netns, initial_index):
    conf = Conference(dp, netns, 2, StreamKind.AUDIO, initial_index.value)
    conference_id = conf.pub.spec.conference_id
    _prime(conf, AUDIO_SSRC, 10, 0)

    def forward(seq: int) -> None:
        plain = rtp(seq, seq * 960, AUDIO_SSRC, os.urandom(40))
        assert conf.send(plain) == TC_ACT_SHOT
        conf.check_forwarded(plain)  # both copies went out, counted or not

    forward(11)
    assert dp.read_conference_packets() == {conference_id: 2}
    dp.reset_conference(conference_id)  # the conference ended
    assert dp.read_conference_packets() == {}

    counters = dp.maps["sft_conf_packets"]
    fillers = [struct.pack("<I", 100_000 + i) for i in range(counters.max_entries)]
    for key in fillers:
        counters.update(key, bytes(counters._stride * counters._cpus))
    forward(12)
    assert dp.read_kernel_counters()["TC_CONF_COUNTER_FULL"] == 1
    for key in fillers[:10]:
        dp.reset_conference(struct.unpack("<I", key)[0])
    forward(13)
    assert dp.read_conference_packets()[conference_id] == 2
    assert dp.read_kernel_counters()["TC_CONF_COUNTER_FULL"] == 1
