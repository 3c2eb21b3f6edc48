"""Tasks the gateway starts and does not await (a release, a settlement, closing a retired client)."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

__all__ = ["Background"]


class Background:
    """Holds each task until it is done (the event loop keeps only a weak reference to a task);
    `wait()` awaits those still running, at shutdown. Falsy when none are running."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float | None = None) -> None:
        """Until every task has ended (their errors are theirs: none is raised here), or `timeout` s."""
        if self._tasks:
            done, _ = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: no "exception never retrieved" at collection
