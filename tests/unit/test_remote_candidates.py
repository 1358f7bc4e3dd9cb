"""Which answer candidates the full-ICE SFT checks: the kernel's real routes
decide what the media addresses reach; the rest is refused and counted."""

from __future__ import annotations

import collections

from sftd.controller.leg import MAX_REMOTE_CANDIDATES, usable_candidates
from sftd.controller.sdp import Candidate


def cand(host: str, priority: int = 100, port: int = 5000) -> Candidate:
    return Candidate(foundation="1", component=1, transport="udp", priority=priority,
                     host=host, port=port, type="host")


def test_loopback_media_reaches_only_loopback():
    refused: collections.Counter[str] = collections.Counter()
    got = usable_candidates([cand("127.0.0.1"), cand("::1"), cand("224.0.0.1"),
                             cand("0.0.0.0"), cand("255.255.255.255"), cand("240.0.0.1"),
                             cand("192.0.2.7"), cand("not-an-address"), cand("abc.local")],
                            ["127.0.0.1"], refused=refused)
    assert [c.host for c in got] == ["127.0.0.1", "abc.local"]
    assert refused == {"candidate_family": 1, "candidate_special": 4,
                       "candidate_unroutable": 1, "candidate_not_ip": 1}


def test_at_most_a_few_candidates_best_first():
    refused: collections.Counter[str] = collections.Counter()
    many = [cand("127.0.0.1", priority=p, port=6000 + p) for p in range(40)]
    got = usable_candidates(many, ["127.0.0.1"], refused=refused)
    assert len(got) == MAX_REMOTE_CANDIDATES
    assert [c.priority for c in got] == list(range(39, 39 - MAX_REMOTE_CANDIDATES, -1))
    assert refused == {"candidate_excess": 40 - MAX_REMOTE_CANDIDATES}


def test_loopback_candidates_refused_when_media_is_not_on_loopback():
    # 192.0.2.1 (TEST-NET) stands for a media address; without a route from it the
    # route check refuses too, so only the loopback rule is asked of the result
    refused: collections.Counter[str] = collections.Counter()
    assert usable_candidates([cand("127.0.0.1")], ["192.0.2.1"], check_route=False,
                             refused=refused) == []
    assert refused == {"candidate_unroutable": 1}
