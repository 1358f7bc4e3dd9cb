"""Supervision of the controller's background tasks.

A long-lived loop (timers, speaker selection, keyframe requests, feedback)
that raises is logged with its traceback and started again after a back-off
that doubles from ``min_backoff`` to ``max_backoff`` and resets once the loop
has run ``healthy_after`` seconds. While a loop waits for its restart it is
reported by ``down()`` (``/readyz`` answers 503 then). The process keeps
running: exiting would end every call on the node, while one failed loop only
degrades one feature until its restart.

One-shot tasks (``spawn``) are kept referenced until done and their
exceptions logged, instead of vanishing with ``asyncio.ensure_future``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("sftd.supervise")


@dataclass
class LoopStatus:
    running: bool = False
    restarts: int = 0
    last_error: str = ""


_detached: set[asyncio.Task[None]] = set()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


def detached(coro: Awaitable[None], name: str) -> asyncio.Task[None]:
    """A one-shot task outside any supervisor (e.g. a leg closing itself): kept
    referenced until done, its failure logged with the traceback."""
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    task.add_done_callback(_log_failure)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task


class Supervisor:
    def __init__(self, *, min_backoff: float = 0.5, max_backoff: float = 30.0,
                 healthy_after: float = 60.0) -> None:
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.loops: dict[str, LoopStatus] = {}
        self._loop_tasks: set[asyncio.Task[None]] = set()

    def start_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Runs ``loop()`` for the life of the supervisor, restarting it when it fails."""
        if name in self.loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        self.loops[name] = LoopStatus()
        task = asyncio.create_task(self._supervise(name, loop), name=f"supervise-{name}")
        self._loop_tasks.add(task)
        task.add_done_callback(self._loop_tasks.discard)

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        """A one-shot task whose failure is logged with its traceback."""
        return detached(coro, name)

    def down(self) -> list[str]:
        """Names of the loops not running now (failed, waiting for their restart)."""
        return [name for name, status in self.loops.items() if not status.running]

    def restarts(self) -> dict[str, int]:
        return {name: status.restarts for name, status in self.loops.items()}

    async def stop(self) -> None:
        """Cancels the loops; one-shot tasks (e.g. ending a participant) finish."""
        tasks = list(self._loop_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        status = self.loops[name]
        backoff = self.min_backoff
        while True:
            started = time.monotonic()
            status.running = True
            error: BaseException | None = None
            try:
                await loop()
            except asyncio.CancelledError:
                status.running = False
                raise
            except Exception as exc:  # noqa: BLE001 - logged with traceback, then restarted
                error = exc
            status.running = False
            status.restarts += 1
            status.last_error = f"{type(error).__name__}: {error}" if error else "returned"
            if time.monotonic() - started >= self.healthy_after:
                backoff = self.min_backoff
            log.error("background loop %s %s: restarting in %.1f s", name,
                      "failed" if error else "returned (it should run for the process's life)",
                      backoff, exc_info=error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
