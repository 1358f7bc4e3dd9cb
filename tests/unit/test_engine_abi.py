"""The native engine's constants are the controller's: counters value for value,
the per-leg SSRC cap, the pending transport-wide arrivals."""

from __future__ import annotations

import pytest

from sftd.controller.dataplane import MAX_SSRCS_PER_LEG, Counter
from sftd.controller.twcc import MAX_PENDING_ARRIVALS
from sftd.engine.dataplane import native_available

AVAILABLE, WHY_NOT = native_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)


def test_engine_constants_match_the_controller():
    from sftd.engine._engine import lib

    assert lib.SFTE_COUNTERS == len(Counter)
    for counter in Counter:
        assert getattr(lib, f"SFTE_{counter.name}") == counter.value, counter
    assert lib.SFTE_MAX_SSRCS_PER_LEG == MAX_SSRCS_PER_LEG
    assert lib.SFTE_ARRIVALS == MAX_PENDING_ARRIVALS
