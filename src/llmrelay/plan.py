"""Control flow written once for sync and async: plans that yield actions.

A plan is a generator. It yields an action; the driver (`Stream` or
`AsyncStream`) performs it and sends the result back:

- `Send(call)`: stream one model turn to the caller; the result is its `Response`
  (a failure is thrown into the plan, so a policy may catch it).
- `RunTools(calls)`: run tool calls (threads for sync tools, tasks for async
  ones); the result is the list of `ToolResult`s, in call order. The driver
  emits each `ToolResult` event.
- `Emit(event)`: hand one extra event to the caller.
- `Sleep(seconds)`: wait (time.sleep / asyncio.sleep).

The plan's return value is the final `Response`. Plans hold no sockets, no
threads and no event loop, so they are tested by driving them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generator

from .errors import ToolExecutionError, ToolLoopLimitError
from .messages import Message, ToolCall
from .protocols._base import Call
from .response import Response
from .usage import Usage

if TYPE_CHECKING:
    from .events import ToolResult
    from .tools import Tool


@dataclass(slots=True)
class Send:
    call: Call


@dataclass(slots=True)
class RunTools:
    calls: list[ToolCall]
    tools: dict[str, Tool]


@dataclass(slots=True)
class Emit:
    event: Any


@dataclass(slots=True)
class Sleep:
    seconds: float


Plan = Generator[Any, Any, Response]


def single(call: Call) -> Plan:
    """One request, one response."""
    response = yield Send(call)
    response.messages = [*call.messages, response.to_message()]
    return response


def tool_loop(
    call: Call,
    tools: dict[str, Tool],
    *,
    max_rounds: int = 10,
    run_tools: bool = True,
    raise_tool_errors: bool = False,
) -> Plan:
    """Stream a turn; if it ends with tool calls, run them and stream the next turn.

    At most `max_rounds` rounds of tool execution, so at most `max_rounds + 1`
    requests; a model still asking for tools after that gets `ToolLoopLimitError`
    carrying the transcript. The caller's messages are never mutated.
    """
    messages = list(call.messages)
    turns: list[Response] = []
    rounds = 0
    current = call  # the first turn sends the call as prepared (already encoded)
    while True:
        response = yield Send(current)
        turns.append(response)
        messages = [*messages, response.to_message()]
        calls = response.tool_calls
        if not calls or not run_tools:
            return _merge(turns, messages)
        if rounds >= max_rounds:
            raise ToolLoopLimitError(
                f"the model still asked for tools after {max_rounds} tool rounds (max_tool_rounds={max_rounds})",
                messages=messages,
                response=_merge(turns, messages),
            )
        rounds += 1
        results: list[ToolResult] = yield RunTools(calls, tools)
        if raise_tool_errors:
            failed = next((r for r in results if r.error is not None), None)
            if failed is not None:
                raise ToolExecutionError(failed, messages=messages)
        messages = [*messages, *(Message.tool(r.call_id or "", r.content, r.name) for r in results)]
        current = replace(call, messages=messages)


def _merge(turns: list[Response], messages: list[Message]) -> Response:
    """The last turn's response, with usage summed over every request and the whole transcript."""
    final = turns[-1]
    final.messages = messages
    final.turns = turns
    if len(turns) > 1:
        total = Usage()
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
            values = [getattr(t.usage, name) for t in turns]
            if any(v is not None for v in values):
                setattr(total, name, sum(v or 0 for v in values))
        costs = [t.usage.provider_cost for t in turns]
        if any(c is not None for c in costs):
            total.provider_cost = sum(c or 0.0 for c in costs)
        total.estimated = any(t.usage.estimated for t in turns)
        total.raw = final.usage.raw
        final.usage = total
        first = turns[0].timings
        final.timings = replace(final.timings, time_to_first_token=first.time_to_first_token,
                                total=sum(t.timings.total or 0.0 for t in turns))
    return final
