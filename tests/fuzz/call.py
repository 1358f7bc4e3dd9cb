"""A running call on a real ``sftd`` (fixtures ``sftd``/``wire_client`` from
tests/conftest.py): two victims that must keep getting media from each other,
plus the attacker's own joined client."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from tests.e2e.helpers import frames_from, gets_media, media_table, new_convid, wait_until

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Exception in callback|"
                       r"--- Logging error ---|Task exception was never retrieved")


@dataclass
class Call:
    server: Any
    a: Any
    b: Any
    fuzzer: Any

    async def start(self) -> None:
        await wait_until(lambda: gets_media(self.a, [self.b]) and gets_media(self.b, [self.a]),
                         30, "media between the two victims",
                         lambda: media_table([self.a, self.b, self.fuzzer]))
        await self.fuzzer.wait_datachannel()

    def alive(self) -> None:
        assert self.server.alive, f"sftd died:\n{self.server.log_tail(60)}"

    async def media_continues(self, timeout: float = 15.0) -> None:
        """Both victims decode more audio and video from each other than now."""
        self.alive()
        before = (frames_from(self.a, self.b), frames_from(self.b, self.a))

        def more() -> bool:
            now = (frames_from(self.a, self.b), frames_from(self.b, self.a))
            return all(n[0] >= o[0] + 10 and n[1] >= o[1] + 5 for n, o in zip(now, before))

        await wait_until(more, timeout, "victims keep receiving media",
                         lambda: media_table([self.a, self.b, self.fuzzer])
                         + "\n" + self.server.log_tail(40))
        self.alive()

    def tracebacks(self) -> list[str]:
        """Log excerpts around every traceback or asyncio callback error."""
        lines = self.server.log_text().splitlines()
        return ["\n".join(lines[max(0, i - 2):i + 25]) for i, line in enumerate(lines)
                if TRACEBACK.search(line)]

    def no_tracebacks(self) -> None:
        """Fail on a traceback or asyncio callback error in the sftd log."""
        for excerpt in self.tracebacks():
            raise AssertionError(f"traceback in the sftd log:\n{excerpt}")


async def start_call(sftd: Any, wire_client: Any) -> Call:
    conv = new_convid()
    a = await wire_client(sftd, conv, "victim-a")
    b = await wire_client(sftd, conv, "victim-b")
    fuzzer = await wire_client(sftd, conv, "fuzzer")
    call = Call(sftd, a, b, fuzzer)
    await call.start()
    return call


def settle() -> Any:
    return asyncio.sleep(0.02)
