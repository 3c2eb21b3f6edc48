"""Helpers shared by the test modules: run a call sync or async and keep what the caller saw."""

from __future__ import annotations

import time
from typing import Any, Callable

from llmrelay import TextDelta
from llmrelay.engine.assembler import Assembler
from llmrelay.engine.plan import Emit, Send
from llmrelay.stream import observe


async def drain(stream: Any, mode: str) -> tuple[list, BaseException | None]:
    """Iterate a `Stream` (mode "sync") or `AsyncStream` to its end: (events seen, error raised or None)."""
    events: list = []
    try:
        if mode == "sync":
            for e in stream:
                events.append(e)
        else:
            async for e in stream:
                events.append(e)
    except Exception as exc:  # noqa: BLE001 - inspected by the test
        return events, exc
    return events, None


async def run(client: Any, mode: str, model: Any, messages: Any = "hi", how: str = "stream", **kw: Any):
    """One call, streamed or completed, sync or async: (events seen, error or None, final or partial response)."""
    if how == "complete":
        try:
            r = client.complete(model, messages, **kw) if mode == "sync" else await client.acomplete(model, messages, **kw)
        except Exception as exc:  # noqa: BLE001
            return [], exc, getattr(exc, "partial", None)
        return [], None, r
    s = client.stream(model, messages, **kw) if mode == "sync" else client.astream(model, messages, **kw)
    events, error = await drain(s, mode)
    return events, error, s.response


def texts(events: list) -> str:
    """The answer text the caller saw (choice 0)."""
    return "".join(e.text for e in events if type(e) is TextDelta and e.choice == 0)


async def collect(client: Any, mode: str, model: Any, messages: Any, **kw: Any) -> tuple[list, Any]:
    """Stream a call to its end, sync or async: (every event, the final response). Errors propagate."""
    s = client.stream(model, messages, **kw) if mode == "sync" else client.astream(model, messages, **kw)
    if mode == "sync":
        events = list(s)
    else:
        events = [e async for e in s]
    return events, s.response


def drive(plan: Any, outcomes: list) -> tuple[Any, list, list]:
    """Run a control-flow plan by hand, with no transport. Each `Send` takes the next outcome: an
    exception to throw into the plan, a response to return, or (events, response), whose events go
    through the Send's observers. Returns (the plan's result, every action, the events seen)."""
    actions: list = []
    seen: list = []
    value = exc = None
    while True:
        try:
            action = plan.throw(exc) if exc is not None else plan.send(value)
        except StopIteration as stop:
            return stop.value, actions, seen
        value = exc = None
        actions.append(action)
        if type(action) is Send:
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                exc = outcome
            elif isinstance(outcome, tuple):
                events, value = outcome
                seen.extend(observe(iter(events), action.observers))
            else:
                value = outcome
        elif type(action) is Emit:
            seen.append(action.event)


async def complete_once(client: Any, mode: str, model: Any, messages: Any, **kw: Any) -> Any:
    """The whole response of one call: `complete()` (mode "sync"), or an async stream collected inside
    `async with`, then the client's async side closed. Errors propagate."""
    if mode == "sync":
        return client.complete(model, messages, **kw)
    try:
        async with client.astream(model, messages, **kw) as s:
            return await s.collect()
    finally:
        await client.aclose()


def assemble(events: list) -> Any:
    """The `Response` an `Assembler` builds from decoded events (a protocol test's check of a decoder)."""
    a = Assembler()
    for e in events:
        a.add(e)
    return a.build()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Until `condition()` holds (something another thread or process records); a hang guard, not a
    speed check: past `timeout` s it fails naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
