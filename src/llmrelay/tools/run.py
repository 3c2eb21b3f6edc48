"""Running tool calls: a thread pool for sync tools, tasks for async ones.

What to run and how to report it (`tools.check_call`, `tools.result_of`) is
shared; only the waiting differs between the two functions below. Results come
back in call order whatever order the tools finish in.

- Sync driver (`run_tools_sync`): every call of a round runs at once in a
  thread pool (one sync call alone runs in the caller's thread); an async tool
  runs in a pool thread on its own event loop. If the waiting is interrupted
  (KeyboardInterrupt), calls not yet started are cancelled and the pool is not
  waited for.
- Async driver (`run_tools_async`): async tools are tasks, sync tools run in
  `asyncio.to_thread`. Cancelling the awaiting task (closing the stream,
  a timeout) cancels every pending async tool and waits for their cleanup; a
  sync tool already running in a thread cannot be interrupted and finishes in
  the background, its result discarded.

A tool raising `Exception` becomes an error result; `BaseException`s
(KeyboardInterrupt, SystemExit, cancellation) propagate. The exception of each
failed call is kept on the returned list (`ToolResults.exceptions`, by call
index) so `tool_errors="raise"` can chain it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..messages import ToolCall
from .tool import Tool, check_call, result_of


class ToolResults(list):
    """The `ToolResult`s of one round in call order, plus the exceptions tools raised (by index)."""

    exceptions: dict[int, BaseException]

    def __init__(self, n: int = 0):
        super().__init__([None] * n)
        self.exceptions = {}


async def _await(aw: Any) -> Any:
    return await aw


def _invoke_sync(tool: Tool, kwargs: dict[str, Any]) -> Any:
    value = tool.invoke(kwargs)
    if inspect.isawaitable(value):  # an async tool, or a sync one that returned an awaitable
        return asyncio.run(value if inspect.iscoroutine(value) else _await(value))
    return value


def _guarded(results: ToolResults, call: ToolCall, index: int, tool: Tool, kwargs: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        results[index] = result_of(call, index, _invoke_sync(tool, kwargs), started=started)
    except Exception as exc:
        results.exceptions[index] = exc
        results[index] = result_of(call, index, error=exc, started=started)


def _prepare(calls: list[ToolCall], tools: dict[str, Tool]) -> tuple[ToolResults, list[tuple[ToolCall, int, Tool, dict[str, Any]]]]:
    results = ToolResults(len(calls))
    jobs = []
    for i, call in enumerate(calls):
        tool, kwargs, error = check_call(call, tools)
        if error is not None:
            results[i] = result_of(call, i, error=error)
        else:
            jobs.append((call, i, tool, kwargs))
    return results, jobs  # type: ignore[return-value]


def run_tools_sync(calls: list[ToolCall], tools: dict[str, Tool]) -> ToolResults:
    results, jobs = _prepare(calls, tools)
    if len(jobs) == 1 and not jobs[0][2].is_async:
        _guarded(results, *jobs[0])
    elif jobs:
        # an async tool never runs in the caller's thread: it may already run an event loop
        pool = ThreadPoolExecutor(max_workers=min(len(jobs), 32), thread_name_prefix="llmrelay-tool")
        try:
            futures = [pool.submit(_guarded, results, *job) for job in jobs]
            for f in futures:
                f.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return results


async def _guarded_async(results: ToolResults, call: ToolCall, index: int, tool: Tool, kwargs: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        if tool.is_async:
            value = await tool.invoke(kwargs)
        else:
            value = await asyncio.to_thread(tool.invoke, kwargs)
            if inspect.isawaitable(value):
                value = await value
        results[index] = result_of(call, index, value, started=started)
    except Exception as exc:
        results.exceptions[index] = exc
        results[index] = result_of(call, index, error=exc, started=started)


async def run_tools_async(calls: list[ToolCall], tools: dict[str, Tool]) -> ToolResults:
    """Cancelling the awaiting task cancels every pending tool task (and waits for their cleanup)."""
    results, jobs = _prepare(calls, tools)
    if len(jobs) == 1:
        await _guarded_async(results, *jobs[0])
    elif jobs:
        await asyncio.gather(*(_guarded_async(results, *job) for job in jobs))
    return results
