"""The state of one call in flight and its two drivers (sync and async), shared by `Stream` and
`AsyncStream` (`llmrelay.stream`).

A `Run` holds the plan (`llmrelay.engine.plan`: one request, or the tool loop, ...), the current
model turn (a `StreamCore`: decoder + assembler + clock) and the final response. Its drivers only
perform the plan's actions and move bytes from the transport into the core, so sync and async share
every rule. The event generator runs on the `Run`, not on the public stream: the generator does not
reference the stream, so no reference cycle holds them, and a stream dropped without `close()` is
finalized at once by reference counting, where the caller drops it, instead of at some later
garbage collection (which may run in the middle of another request, in any thread). One slotted
object, not a second stream sharing the first one's attribute dict: one object and ~0.3 KB less
for every stream in flight (bench/bench_scale.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, AsyncGenerator, Generator

from .. import events as ev
from ..errors import APIError, StreamInterruptedError
from ..observability.hooks import CallContext, Hooks, notify
from ..engine.plan import Emit, RunTools, Send, Sleep, answered, single_call
from ..response import Response
from ..engine.turn import StreamCore, body_error, first_token_watchdog, observe, observed
from ..engine.turns import Turns

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["Run", "turn_failed", "turn_ended"]


class Run(Turns):
    """One call in flight: the plan, the current turn, the final response, the hooks and context;
    as a `Turns`, it builds and sends the call's model turns."""

    __slots__ = ("_plan", "_core", "_final", "_hooks", "context", "_started", "_closing", "text_reset")

    def __init__(self, plan: Any, hooks: tuple[Hooks, ...], context: CallContext, *turns: Any):
        super().__init__(*turns)
        # A one-request plan is run by `_step` itself (None here): one object less per stream in flight.
        self._plan = None if single_call(plan) is self.first_call else plan
        self._core: StreamCore | None = None
        self._final: Response[Any] | None = None
        self._hooks = hooks
        self.context = context
        self._started = False
        self._closing = False  # close() was called (else a GeneratorExit comes from the garbage collector)
        #: `text_stream` at a fallback restart: one of `TEXT_RESETS`.
        self.text_reset = "raise"

    def _begin_turn(self, call: Call) -> StreamCore:
        """The turn's core, dispatched (`self.open(core)` then sends its request)."""
        core: StreamCore = self.turn(call)
        self._core = core
        core.context = self.context  # its correlation and conversation ids
        self.context.turns += 1
        if self._hooks:
            ctx, hooks = self.context, self._hooks
            core.on_first_token = lambda ttft: notify(hooks, "on_first_token", ctx, call, ttft)
            notify(hooks, "on_turn_start", ctx, call, core.request)
        core.dispatch()
        return core

    def _step(self, value: Any, exc: BaseException | None) -> Any:
        """Advance the plan; returns the next action, or None when it is done."""
        if not self._started:
            self._started = True
            notify(self._hooks, "on_call_start", self.context)
        try:
            plan = self._plan
            if plan is not None:
                return plan.throw(exc) if exc is not None else plan.send(value)
            # `engine.plan.single`: send the call; its response, with the exchange as its messages, ends the plan
            if exc is not None:
                raise exc
            if value is None:
                return Send(self.first_call)
            raise StopIteration(answered(self.first_call, value))
        except StopIteration as stop:
            final: Response[Any] = stop.value
            final.correlation_id = self.context.correlation_id
            final.conversation_id = self.context.conversation_id
            self._final = final
            notify(self._hooks, "on_call_end", self.context, final, None)
            return None
        except BaseException as error:
            self._final = self._core.response() if self._core is not None else Response(status="error", error=error)
            notify(self._hooks, "on_call_end", self.context, self._final, error)
            raise

    def _performed(self, action: Any, value: Any) -> None:
        """Tell the hooks about tool results, retries and fallbacks (never per chunk)."""
        if not self._hooks:
            return
        if type(action) is RunTools:
            for result in value:
                notify(self._hooks, "on_tool_result", self.context, result)
        elif type(action.event) is ev.RetryEvent:
            notify(self._hooks, "on_retry", self.context, action.event)
        elif type(action.event) is ev.FallbackEvent:
            notify(self._hooks, "on_fallback", self.context, action.event)

    def _abandon(self) -> None:
        """After an early close: the plan stops (no further requests), the turn is kept as aborted."""
        if self._core is not None and self._final is None:
            self._core.aborted = True
        if self._plan is not None:
            self._plan.close()
        if self._final is None:
            self._final = self._core.response() if self._core is not None else Response(status="aborted")
            if self._started:
                notify(self._hooks, "on_call_end", self.context, self._final, None)

    def drive(self) -> Generator[Any, None, None]:
        """The sync driver: the plan's actions performed, each model turn's bytes moved into its core."""
        value: Any = None
        exc: BaseException | None = None
        try:
            while (action := self._step(value, exc)) is not None:
                value = exc = None
                kind = type(action)
                try:
                    if kind is Send:
                        value = yield from self._turn(action.call, action.observers)
                    elif kind is RunTools:
                        from ..tools.run import run_tools_sync

                        value = run_tools_sync(action.calls, action.tools)
                        self._performed(action, value)
                        yield from value
                    elif kind is Emit:
                        self._performed(action, None)
                        yield action.event
                    elif kind is Sleep:
                        time.sleep(action.seconds)
                except APIError as error:
                    exc = error
        except (GeneratorExit, KeyboardInterrupt):
            self._abandon()
            raise

    def _turn(self, call: Call, observers: tuple[Any, ...]) -> Generator[Any, None, Response[Any]]:
        core = self._begin_turn(call)
        try:
            body = self.open(core)
            core.headers(body.headers)
            watchdog = first_token_watchdog(core, body)
            feed = observed(core, observers) or core.feed
            dropped = False
            try:
                try:
                    chunks = body.iter_bytes()
                    if watchdog is not None:  # until the first token, then the plain loop
                        for chunk in chunks:
                            yield from feed(chunk)
                            core.resume()
                            if core.t_first is not None:
                                watchdog.cancel()
                                break
                    for chunk in chunks:
                        yield from feed(chunk)
                        core.resume()
                except StreamInterruptedError:
                    if watchdog is not None and watchdog.fired and core.t_first is None:
                        raise core.timed_out() from None
                    if not core.decoder.complete:  # closed after the final event: nothing is missing
                        raise
                finally:
                    if watchdog is not None:
                        watchdog.cancel()
                yield from observe(core.finish(), observers)
            except GeneratorExit:
                # Not closed by close(): the garbage collector is finalizing a dropped stream, maybe
                # inside another request that holds the pool's lock. Take no lock here.
                dropped = not self._closing
                raise
            finally:
                if dropped and hasattr(body, "abandon"):
                    body.abandon()
                else:
                    body.close()
        except BaseException as exc:
            error = turn_failed(core, exc)
            if error is None:
                raise
            raise error from None
        finally:
            if self._hooks:
                turn_ended(self, core)
        return core.response()

    async def adrive(self) -> AsyncGenerator[Any, None]:
        """The async driver (as `drive`)."""
        # One async generator for the whole call: a model turn runs inline, not in a nested async
        # generator, which would cost every event a second hop and every stream in flight another
        # frame and asyncio's weak reference to it (bench/bench_scale.py).
        import asyncio  # already loaded by whoever runs this; not by `import llmrelay`

        value: Any = None
        exc: BaseException | None = None
        try:
            while (action := self._step(value, exc)) is not None:
                value = exc = None
                try:  # (no local for the action's type: every local is 8 bytes of every stream in flight)
                    if type(action) is Send:
                        core = self._begin_turn(action.call)
                        observers, action = action.observers, None  # not held while the turn runs
                        try:
                            body = await self.open(core)
                            try:  # the body is closed here, now: async generators are not closed for us
                                core.headers(body.headers)
                                feed = observed(core, observers)
                                chunks = body.aiter_bytes().__aiter__()
                                try:
                                    while True:
                                        try:
                                            if core.t_first is None and core.deadline is not None:  # first_token, even in silence
                                                chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, core.deadline - time.perf_counter()))
                                            else:
                                                chunk = await chunks.__anext__()
                                        except StopAsyncIteration:
                                            break
                                        except Exception as failure:  # a transport's read may raise its library's errors
                                            raise body_error(body, core, failure)
                                        if not chunk:  # the end, read as b"": the next __anext__ says so
                                            continue
                                        # Nothing of a chunk is held while the next one is awaited: not its
                                        # bytes (a batched read joins several events), its list or its last event.
                                        events = core.feed(chunk) if feed is None else feed(chunk)
                                        chunk = None
                                        for e in events:
                                            yield e
                                        events = e = None
                                        core.resume()
                                except StreamInterruptedError:
                                    if not core.decoder.complete:  # closed after the final event: nothing is missing
                                        raise
                                for e in observe(core.finish(), observers):
                                    yield e
                            finally:
                                await body.aclose()
                        except BaseException as failure:
                            exc = turn_failed(core, failure)  # the error to raise (None: re-raise as is)
                            if exc is None:
                                raise
                            raise exc from None
                        finally:
                            if self._hooks:
                                turn_ended(self, core)
                        value = core.response()
                    elif type(action) is RunTools:
                        value = await _run_tools(action)
                        self._performed(action, value)
                        for e in value:
                            yield e
                        e = None
                    elif type(action) is Emit:
                        self._performed(action, None)
                        yield action.event
                    elif type(action) is Sleep:
                        await asyncio.sleep(action.seconds)
                except APIError as failure:
                    exc = failure
        except (GeneratorExit, asyncio.CancelledError):
            self._abandon()
            raise


# Around one model turn, for both drivers (a try/except/finally calling these two, not a context
# manager object: that and its bound __exit__ would be two more objects per stream in flight).
def turn_failed(core: StreamCore, exc: BaseException) -> BaseException | None:
    """The turn ended with `exc`: an early close (or a cancelled task) marks it aborted (None: the
    driver re-raises `exc` as it is); any other error is recorded with the partial response
    attached (`StreamCore.fail`), and the driver raises what this returns."""
    if isinstance(exc, (GeneratorExit, KeyboardInterrupt)) or type(exc).__name__ == "CancelledError":
        core.aborted = True  # the caller's abort (an asyncio task cancelled, too)
        return None
    return core.fail(exc)


def turn_ended(run: Run, core: StreamCore) -> None:
    """`on_turn_end`, for every outcome of the turn."""
    notify(run._hooks, "on_turn_end", run.context, core.call, core.response())


async def _run_tools(action: RunTools) -> Any:
    # Not inline in `Run.adrive`: every local there is 8 bytes of every stream in flight's frame.
    from ..tools.run import run_tools_async

    return await run_tools_async(action.calls, action.tools)
