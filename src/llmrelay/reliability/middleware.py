"""Middleware: one interface that wraps every model turn, for stream and complete, sync and async.

A middleware's `turn(call, send)` is a generator around one model turn (a
plan, see `llmrelay.engine.plan`): it may change the call, call `send` zero or more
times (`response = yield from send(call)`), catch errors, sleep (`yield
Sleep(s)`), emit events (`yield Emit(event)`) and return the response. It
never touches sockets, threads or an event loop, so the same code serves
`stream`, `astream`, `complete` and `acomplete`.

To see events as they pass, give `send` an observer (`send(call, on_event=fn)`:
`fn(event)` returns the event to hand on, possibly changed, or None to drop it),
or override `on_event(event, call)` for a stateless one.

    class Stopwatch(llmrelay.Middleware):
        def turn(self, call, send):
            started = time.monotonic()
            seen = []
            response = yield from send(call, on_event=lambda e: seen.append(e.type) or e)
            print(call.model, f"{time.monotonic() - started:.2f}s", len(seen), "events")
            return response

    client = llmrelay.Client(middleware=[Stopwatch()])

Middlewares run outermost first: `Client(middleware=[a, b])` gives `a(b(model))`.
A model list or `Router` wraps all of them (each fallback target goes through
the chain), and the client's `Retry` is innermost (each attempt is retried).
"""

from __future__ import annotations

from typing import Any, Callable, Generator, Sequence

from ..engine.plan import Plan, Send, map_sends
from ..call import Call

SendFn = Callable[..., Plan]


class Middleware:
    """Base class: override `turn` and/or `on_event`. The default passes everything through."""

    def turn(self, call: Call, send: SendFn) -> Plan:
        if type(self).on_event is Middleware.on_event:
            return (yield from send(call))
        return (yield from send(call, on_event=lambda event: self.on_event(event, call)))

    def on_event(self, event: Any, call: Call) -> Any:
        return event


def run_turn(call: Call, chain: Sequence[Middleware], index: int = 0, observers: tuple[Any, ...] = ()) -> Plan:
    """One model turn through `chain[index:]`, ending in the driver's `Send`."""
    if index == len(chain):
        return (yield Send(call, observers))

    def send(c: Call, on_event: Callable[[Any], Any] | None = None) -> Plan:
        return run_turn(c, chain, index + 1, (on_event,) + observers if on_event is not None else observers)

    return (yield from chain[index].turn(call, send))


def with_middleware(plan: Plan, chain: Sequence[Middleware]) -> Plan:
    """Run `plan`, routing each of its `Send` actions through the middleware chain (without a
    chain, `plan` itself: no generator layer to keep per stream in flight)."""
    if not chain:
        return plan
    return map_sends(plan, lambda send: run_turn(send.call, chain, 0, send.observers))


Gen = Generator[Any, Any, Any]
