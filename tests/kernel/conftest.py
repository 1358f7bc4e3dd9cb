"""Kernel data-plane tests: real programs through BPF_PROG_TEST_RUN, maps filled by
``KernelDataPlane``. They need root; CI runs them as root and they must not skip there."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Namespace  # noqa: E402

from tests.conftest import owned_name

pytestmark = pytest.mark.kernel


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel data-plane tests need root (BPF, network namespaces)")
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    with Namespace() as ns:
        yield ns


class InitialIndex:
    """The SRTP index new slots start at; tests move it next to a rollover."""

    def __init__(self) -> None:
        self.value = 1000

    def __call__(self) -> int:
        return self.value


@pytest.fixture
def initial_index() -> InitialIndex:
    return InitialIndex()


@pytest.fixture
def dp(netns: Namespace, initial_index: InitialIndex):  # type: ignore[no-untyped-def]
    from sftd.bpf.dataplane import KernelDataPlane, kernel_available

    ok, reason = kernel_available()
    assert ok, reason  # root but unusable is a failure, never a skip
    plane = KernelDataPlane((), (40000, 40999), instance=owned_name("dp"),
                            slot_initial_index=initial_index)
    try:
        yield plane
    finally:
        plane.close()
