"""A media interface that goes away while sftd runs (a removed bridge or VPN
link under the default "every interface"): offers leave its address out,
say so once, and calls on the other interfaces go on."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import host_veth
from tests.e2e.helpers import gets_media, media_table, new_convid, wait_until

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]


@pytest.fixture
def vanishing_link():
    """A veth pair (no dummy driver in every kernel) with an address on one end."""
    address = f"198.18.{os.getpid() % 250}.{(os.getpid() // 250) % 250 + 1}"
    with host_veth("vg", (f"{address}/32",)) as (name, _):
        yield name, address


async def test_offers_leave_out_a_removed_interface(vanishing_link, sftd_factory, wire_client):
    name, address = vanishing_link
    sftd = await sftd_factory("-O", f"lo,{name}")
    subprocess.run(["ip", "link", "del", name], check=True)

    conv = new_convid()
    clients = [await wire_client(sftd, conv, f"user{i}") for i in range(2)]
    await wait_until(lambda: all(gets_media(c, [o for o in clients if o is not c])
                                 for c in clients),
                     30, "media between the two clients", lambda: media_table(clients))
    log = sftd.log_text()
    assert log.count(f"media address {address} is gone") == 1, log[-3000:]
    assert "offer failed" not in log, log[-3000:]
