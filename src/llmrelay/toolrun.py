"""Running tool calls: a thread pool for sync tools, tasks for async ones.

What to run and how to report it (`tools.check_call`, `tools.result_of`) is
shared; only the waiting differs between the two functions below. Results come
back in call order whatever order the tools finish in.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .events import ToolResult
from .messages import ToolCall
from .tools import Tool, check_call, result_of


def _invoke_sync(tool: Tool, kwargs: dict[str, Any]) -> Any:
    if tool.is_async:
        return asyncio.run(tool.fn(**kwargs))  # type: ignore[misc]
    return tool.fn(**kwargs)  # type: ignore[misc]


def _guarded(call: ToolCall, index: int, tool: Tool, kwargs: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    try:
        return result_of(call, index, _invoke_sync(tool, kwargs), started=started)
    except Exception as exc:
        return result_of(call, index, error=exc, started=started)


def run_tools_sync(calls: list[ToolCall], tools: dict[str, Tool]) -> list[ToolResult]:
    results: list[ToolResult | None] = [None] * len(calls)
    jobs = []
    for i, call in enumerate(calls):
        tool, kwargs, error = check_call(call, tools)
        if error is not None:
            results[i] = result_of(call, i, error=error)
        else:
            jobs.append((call, i, tool, kwargs))
    if len(jobs) == 1:
        call, i, tool, kwargs = jobs[0]
        results[i] = _guarded(call, i, tool, kwargs)
    elif jobs:
        with ThreadPoolExecutor(max_workers=min(len(jobs), 16), thread_name_prefix="llmrelay-tool") as pool:
            for job, result in zip(jobs, pool.map(lambda j: _guarded(*j), jobs)):
                results[job[1]] = result
    return results  # type: ignore[return-value]


async def _guarded_async(call: ToolCall, index: int, tool: Tool, kwargs: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    try:
        if tool.is_async:
            value = await tool.fn(**kwargs)  # type: ignore[misc]
        else:
            value = await asyncio.to_thread(tool.fn, **kwargs)  # type: ignore[arg-type]
        return result_of(call, index, value, started=started)
    except Exception as exc:
        return result_of(call, index, error=exc, started=started)


async def run_tools_async(calls: list[ToolCall], tools: dict[str, Tool]) -> list[ToolResult]:
    """Cancelling the awaiting task cancels every pending tool task."""
    results: list[ToolResult | None] = [None] * len(calls)
    pending: dict[int, Any] = {}
    for i, call in enumerate(calls):
        tool, kwargs, error = check_call(call, tools)
        if error is not None:
            results[i] = result_of(call, i, error=error)
        else:
            pending[i] = _guarded_async(call, i, tool, kwargs)  # type: ignore[arg-type]
    if pending:
        done = await asyncio.gather(*pending.values())
        for i, result in zip(pending, done):
            results[i] = result
    return results  # type: ignore[return-value]
