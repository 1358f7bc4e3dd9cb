"""``h``: a harness of each data plane in turn (tests/dataplane/planes.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.dataplane.planes import PLANE_HARNESSES, Harness


@pytest.fixture(params=[pytest.param(name, marks=marks, id=name)
                        for name, (_cls, marks) in PLANE_HARNESSES.items()])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    cls, marks = PLANE_HARNESSES[request.param]
    if any(m.name == "kernel" for m in marks) and os.geteuid() != 0:
        pytest.skip(f"the {request.param} plane needs root (BPF, network namespaces)")
    harness = cls()
    try:
        yield harness
    finally:
        harness.close()
