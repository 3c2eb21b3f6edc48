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
from typing import TYPE_CHECKING, Any, Callable, Generator

from ..errors import APIError, IncompleteToolCallError, LengthFinishReasonError, ToolExecutionError, ToolLoopLimitError
from ..messages import Message, ToolCall
from ..call import Call
from ..response import Response
from ..usage import Usage

if TYPE_CHECKING:
    from ..events import ToolResult
    from ..tools.tool import Tool


@dataclass(slots=True)
class Send:
    call: Call
    #: Callables that see each event as it passes (middleware); each returns the
    #: event to hand on (possibly changed) or None to drop it.
    observers: tuple[Any, ...] = ()


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


def map_sends(plan: Plan, handle: Callable[[Send], Plan]) -> Plan:
    """Run `plan`, performing each of its `Send` actions with the sub-plan `handle(send)`.

    Every other action passes through to the driver; results and errors go back
    into `plan`, which may handle them or let them rise. Middleware and
    structured output are both built on this.
    """
    value: Any = None
    exc: BaseException | None = None
    while True:
        try:
            action = plan.throw(exc) if exc is not None else plan.send(value)
        except StopIteration as stop:
            return stop.value
        value = exc = None
        try:
            if type(action) is Send:
                value = yield from handle(action)
            else:
                value = yield action
        except GeneratorExit:
            plan.close()
            raise
        except Exception as error:
            exc = error


def single(call: Call) -> Plan:
    """One request, one response."""
    return _Single(call)


def answered(call: Call, response: Response) -> Response:
    """The end of a one-request plan: `response`, with the exchange (the call's messages and the
    answer) as its messages. `_Single`, `reliability.retry.RetryPlan` and the driver's `Run` end so."""
    response.messages = [*call.messages, response.to_message()]
    return response


def thrown(typ: Any, val: Any = None, tb: Any = None) -> BaseException:
    """The exception of a generator's `throw(typ, val, tb)`, for the plan objects that stand in for one."""
    if val is None:
        val = typ() if isinstance(typ, type) else typ
    if tb is not None:
        val = val.with_traceback(tb)
    exc: BaseException = val
    return exc


def single_call(plan: Any) -> Call | None:
    """The call of a plan made by `single` (as it was made: nothing sent yet), else None. A driver
    may run such a plan itself instead of holding it (`llmrelay.stream.run.Run`)."""
    return plan.call if type(plan) is _Single and plan.state == 0 else None


class _Single(Generator[Any, Any, Response]):
    """`single` as a small object rather than a generator function: one is held by every stream in
    flight (a generator and its frame are ~200 bytes, this ~50). It behaves as the generator

        response = yield Send(call)
        response.messages = [*call.messages, response.to_message()]
        return response
    """

    __slots__ = ("call", "state")

    def __init__(self, call: Call):
        self.call = call
        self.state = 0  # 0: not started, 1: at the yield, 2: finished

    def send(self, value: Any) -> Any:
        state = self.state
        if state == 0:
            if value is not None:
                raise TypeError("can't send non-None value to a just-started generator")
            self.state = 1
            return Send(self.call)
        if state == 2:
            raise StopIteration
        self.state = 2
        raise StopIteration(answered(self.call, value))

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.state = 2  # nothing in `single` catches: the error ends it, as it would a generator
        raise thrown(typ, val, tb)

    def close(self) -> None:
        self.state = 2


def tool_loop(
    call: Call,
    tools: dict[str, Tool],
    *,
    max_rounds: int = 10,
    run_tools: bool = True,
    raise_tool_errors: bool = False,
) -> Plan:
    """Stream a turn; if it ends with tool calls, run them and stream the next turn.

    Rules (each one documented behaviour):

    - A turn "asks for tools" when its choice 0 holds tool calls, whatever its
      finish reason (some services end such a turn with "stop" or none at all).
    - At most `max_rounds` rounds of tool execution, so at most `max_rounds + 1`
      requests; a model still asking for tools after that gets
      `ToolLoopLimitError` (`.messages`: the transcript, `.response`: the turns
      so far merged); its last calls are not run.
    - Every call gets exactly one result, in call order: the tool's value, or an
      error text sent back to the model (the tool raised; the arguments are not
      JSON or do not match the schema; the tool is unknown). With
      `raise_tool_errors`, the first failed result raises `ToolExecutionError`
      instead (after the round's `ToolResult` events; `.messages` holds the
      transcript with the round's results, the tool's exception is the cause).
    - The loop stops, running nothing of the turn, and returns it as the final
      response when: `run_tools` is False (manual mode); the turn was cut by the
      token limit (finish reason "length": its last call is usually incomplete,
      and asking again would be cut the same way; the calls keep `.error`, the
      response has status "truncated"); or a call names a tool given only as a
      schema (no function: the caller runs it, as in manual mode).
    - `tool_choice` "required" or a tool name applies to the first request
      only; later requests leave the choice to the model, else it could never
      answer and every loop would end in `ToolLoopLimitError`.
    - A request that fails gets the transcript it carried as `.partial.messages`.
    - The caller's messages are never mutated; `response.messages` is the whole
      transcript and `response.turns` every request's own response, with usage
      summed over them on the final one.
    """
    messages = list(call.messages)
    turns: list[Response] = []
    rounds = 0
    current = call  # the first turn sends the call as prepared (already encoded)
    while True:
        try:
            response = yield Send(current)
        except APIError as exc:
            partial = getattr(exc, "partial", None)
            if partial is not None and not partial.messages:
                partial.messages = list(messages)
            raise
        turns.append(response)
        messages = [*messages, response.to_message()]
        calls = response.tool_calls
        if (
            not calls
            or not run_tools
            or response.finish_reason == "length"
            or any(tools.get(c.name) is not None and tools[c.name].fn is None for c in calls)
        ):
            return _merge(turns, messages)
        if rounds >= max_rounds:
            raise ToolLoopLimitError(
                f"the model still asked for tools after {max_rounds} tool rounds (max_tool_rounds={max_rounds})",
                messages=messages,
                response=_merge(turns, messages),
            )
        rounds += 1
        results: list[ToolResult] = yield RunTools(calls, tools)
        messages = [*messages, *(Message.tool(r.call_id or "", r.content, r.name, r.error is not None) for r in results)]
        if raise_tool_errors:
            failed = next((i for i, r in enumerate(results) if r.error is not None), None)
            if failed is not None:
                cause = getattr(results, "exceptions", {}).get(failed)
                raise ToolExecutionError(results[failed], messages=messages) from cause
        choice = call.tool_choice if call.tool_choice in (None, "auto", "none") else None
        current = replace(call, messages=messages, tool_choice=choice)


def raise_on_length(plan: Plan) -> Plan:
    """`on_length="raise"`: a final answer cut by the output limit raises instead of returning
    (`IncompleteToolCallError` when a tool call was cut, else `LengthFinishReasonError`)."""
    response = yield from plan
    if response.finish_reason == "length":
        cut = [c for c in response.tool_calls if c.arguments is None]
        if cut:
            raise IncompleteToolCallError(
                f"the output limit cut tool call {cut[0].name!r} ({cut[0].error})", response=response
            )
        raise LengthFinishReasonError("the answer was cut by the output limit (finish_reason 'length')", response=response)
    return response


def _merge(turns: list[Response], messages: list[Message]) -> Response:
    """A copy of the last turn's response, with usage summed over every request, the whole
    transcript, and `text` / `reasoning` joined over every turn as the caller saw them stream
    (`turns` keep their own usage and text: the last one is not the sum)."""
    final = replace(turns[-1]) if len(turns) > 1 else turns[-1]
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
        final._text = "".join(t.text for t in turns)
        final._reasoning = "".join(t.reasoning for t in turns)
        first = turns[0].timings
        final.timings = replace(final.timings, time_to_first_token=first.time_to_first_token,
                                time_to_first_text=_first_text(turns),
                                total=sum(t.timings.total or 0.0 for t in turns), dispatched_at=first.dispatched_at)
    return final


def _first_text(turns: list[Response]) -> float | None:
    """Time from the first request's dispatch to the first visible text, whichever turn it came in."""
    start = turns[0].timings.dispatched_at
    for t in turns:
        timings = t.timings
        if timings.time_to_first_text is not None:
            if t is turns[0]:
                return timings.time_to_first_text
            if start is None or timings.dispatched_at is None:
                return None
            return timings.dispatched_at - start + timings.time_to_first_text
    return None
