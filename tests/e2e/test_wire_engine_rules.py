"""What Wire's calling engine expects of the SFT beyond media: props reach the
others once they are authorised (and on every change), and only the first
CONFPART of a new conference tells its creator to start the call."""

from __future__ import annotations

import pytest

from sftd import econn

from .helpers import new_convid, wait_until

pytestmark = pytest.mark.timeout(60)


async def send_props(client, props: dict) -> None:  # noqa: ANN001
    """As soon as the data channel is open, as Wire's engine does."""
    await wait_until(lambda: client.send_propsync(dict(props)), 10, "an open data channel")


def props_from(receiver, sender) -> list[dict]:  # noqa: ANN001
    return [m.get("props") for m in receiver.received.messages
            if m.type == econn.PROPSYNC and m.src_userid == sender.userid
            and m.src_clientid == sender.clientid]


async def test_props_sent_before_authorisation_reach_the_others(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    # the engine sends its props as soon as the data channel opens: alone, unauthorised
    await send_props(a, {"videosend": "true", "muted": "false"})
    b = await wire_client(sftd, conv, "b")
    await send_props(b, {"videosend": "false", "muted": "true"})
    await wait_until(lambda: {"videosend": "true", "muted": "false"} in props_from(b, a), 10,
                     "a's props at b once both authorised each other")
    await wait_until(lambda: {"videosend": "false", "muted": "true"} in props_from(a, b), 10,
                     "b's props at a")
    # and every change after that
    assert a.send_propsync({"videosend": "false", "muted": "true"})
    await wait_until(lambda: props_from(b, a)[-1] == {"videosend": "false", "muted": "true"},
                     10, "a's change at b")


async def test_props_never_reach_someone_not_authorised(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a", refuse={"c"})
    await send_props(a, {"videosend": "true", "muted": "false"})
    b = await wire_client(sftd, conv, "b")
    c = await wire_client(sftd, conv, "c")
    await wait_until(lambda: props_from(b, a), 10, "a's props at b")
    assert a.send_propsync({"videosend": "true", "muted": "true"})
    await wait_until(lambda: len(props_from(b, a)) >= 2, 10, "a's change at b")
    assert props_from(c, a) == []


async def test_only_the_first_confpart_says_should_start(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    await wait_until(lambda: a.received.confparts >= 1, 10, "a's first CONFPART")
    b = await wire_client(sftd, conv, "b")
    await wait_until(lambda: len(a.others()) == 1 and len(b.others()) == 1, 10, "both listed")
    confparts = [m for m in a.received.messages if m.type == econn.CONFPART and not m.resp]
    assert [m.get("should_start") for m in confparts] == [True] + [False] * (len(confparts) - 1)
    assert all(m.get("should_start") is False for m in b.received.messages
               if m.type == econn.CONFPART and not m.resp)
