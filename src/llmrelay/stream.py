"""`Stream` and `AsyncStream`: the public iterators over one model call.

A `Stream` runs a plan (`llmrelay.engine.plan`: one request, or the tool loop, ...).
Each model turn is a `StreamCore` (`llmrelay.engine.turn`: decoder + assembler + clock); the two
drivers only perform the plan's actions and move bytes from the transport into
the core, so sync and async share every rule. The request is sent when
iteration starts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Generator, Generic, Iterator

from . import events as ev
from .errors import APIError, StreamInterruptedError, StreamResetError
from .observability.hooks import CallContext, Hooks, notify
from .engine.plan import Emit, RunTools, Send, Sleep
from .response import OutputT, Response
from .engine.turn import StreamCore, body_error, first_token_watchdog, observe, observed
from .usage import Usage

if TYPE_CHECKING:
    from .call import Call, HTTPRequest

__all__ = ["Stream", "AsyncStream", "StreamCore", "observe", "TEXT_RESETS", "RESET_SEPARATOR"]

#: What `text_stream` does at a fallback restart (`Reset`): raise `StreamResetError` (default),
#: yield `RESET_SEPARATOR` then the new answer, or just go on with the new answer's text.
TEXT_RESETS = ("raise", "separator", "continue")
#: The visible break `text_reset="separator"` yields before the restarted answer (a Markdown rule).
RESET_SEPARATOR = "\n\n---\n\n"


class _BaseStream(Generic[OutputT]):
    """What `Stream` and `AsyncStream` share: the plan, the current turn, the final response.

    Generic in the type of `response.output` (`output=Weather` gives a `Stream[Weather]`).

    The event generator runs on a twin of the stream (`_runner`): the same attributes, but not
    the same object, so the generator does not reference the stream and no reference cycle
    holds them. A stream dropped without `close()` is then finalized at once by reference
    counting, where the caller drops it, instead of at some later garbage collection (which may
    run in the middle of another request, in any thread)."""

    __slots__ = ("_gen", "__dict__", "__weakref__")

    def __init__(self, plan: Any, engine: Any, hooks: tuple[Hooks, ...] = (), context: CallContext | None = None):
        self._plan = plan
        self._engine = engine
        self._core: StreamCore | None = None
        self._final: Response | None = None
        self._gen: Any = None
        self._hooks = hooks
        self.context = context if context is not None else CallContext()
        self._started = False
        self._closing = False  # close() was called (else a GeneratorExit comes from the garbage collector)
        #: `text_stream` at a fallback restart: one of `TEXT_RESETS`.
        self.text_reset = "raise"

    @property
    def call(self) -> Call | None:
        return self._core.call if self._core is not None else None

    @property
    def request(self) -> HTTPRequest | None:
        """The HTTP request of the current (or last) turn."""
        return self._core.request if self._core is not None else None

    @property
    def response(self) -> Response[OutputT]:
        """The response so far (final once the stream is exhausted or closed)."""
        if self._final is not None:
            return self._final
        if self._core is None:  # nothing sent yet: no output either
            empty: Response[Any] = Response(status="aborted" if self._gen is not None else "ok")
            return empty
        return self._core.response()

    @property
    def usage(self) -> Usage:
        return self._core.assembler.usage if self._core is not None else Usage()

    @property
    def text(self) -> str:
        return self._core.assembler.text if self._core is not None else ""

    @property
    def cost(self) -> Any:
        """Live cost (`llmrelay.cost.Cost`) of the usage so far, estimated (`.estimated`) while the
        provider has not reported it; once the stream is done, the response's cost (every turn).

        Cheap to read on every event: the price lookup is memoized per (provider, model) and a
        result per usage, so only a changed token count is priced again (≈0.1 ms).
        genai-prices is imported by the first read, not before."""
        return self.response.cost

    @property
    def correlation_id(self) -> str:
        """One id for the whole call: every tool round, retry and fallback attempt."""
        return self.context.correlation_id

    def _begin_turn(self, call: Call) -> StreamCore:
        """The turn's core, dispatched (`self._engine.open(core)` then sends its request)."""
        core: StreamCore = self._engine.turn(call)
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
            return self._plan.throw(exc) if exc is not None else self._plan.send(value)
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
        self._plan.close()
        if self._final is None:
            self._final = self._core.response() if self._core is not None else Response(status="aborted")
            if self._started:
                notify(self._hooks, "on_call_end", self.context, self._final, None)


class Stream(_BaseStream[OutputT]):
    """Iterate for typed events; `.text_stream` for text; `.collect()` for the `Response`.

    The request is sent when iteration starts. Use as a context manager (or
    call `.close()`) to release the connection at once.
    """

    _gen: Generator[Any, None, None] | None

    def __enter__(self) -> Stream[OutputT]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[ev.Event]:
        if self._gen is None:
            self._gen = _runner(self)._drive()
        return self._gen

    def __next__(self) -> ev.Event:
        return next(iter(self))

    def _drive(self) -> Generator[Any, None, None]:
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
                        from .tools.run import run_tools_sync

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
            body = self._engine.open(core)
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

    @property
    def text_stream(self) -> Iterator[str]:
        """Only the answer text (choice 0), as `str` pieces. At a fallback restart, `text_reset`
        (per call or on the `Client`) decides: raise `StreamResetError`, yield `RESET_SEPARATOR`,
        or go on with the new answer's text."""
        events: Iterator[Any] = iter(self)
        for e in events:
            t = type(e)
            if t is ev.TextDelta and e.choice == 0:
                yield e.text
            elif t is ev.Reset:
                separator = on_reset(self, e)
                if separator:
                    yield separator

    @property
    def partial_stream(self) -> Iterator[ev.PartialOutput]:
        """Structured output (`output=`): only the `PartialOutput` events (the object so far)."""
        events: Iterator[Any] = iter(self)
        for e in events:
            if type(e) is ev.PartialOutput:
                yield e

    def collect(self) -> Response[OutputT]:
        """Finish the stream (also when half consumed) and return the `Response`."""
        for _ in self:
            pass
        return self.response

    def close(self) -> None:
        """Close the HTTP connection now. What arrived stays in `.response` (status "aborted")."""
        self._closing = True
        if self._gen is None:
            self._gen = _nothing()  # a closed stream iterates as empty (and closes again)
            self._abandon()
        else:
            self._gen.close()


class AsyncStream(_BaseStream[OutputT]):
    """`async for` events; `.text_stream`; `await .collect()`; `await .aclose()`.

    Awaiting it gives the stream itself (`stream = await client.astream(...)`), so code
    written for SDKs whose streaming call is a coroutine works unchanged. Nothing is sent
    until iteration starts either way.
    """

    _gen: AsyncGenerator[Any, None] | None

    async def __aenter__(self) -> AsyncStream[OutputT]:
        return self

    def __await__(self) -> Generator[Any, None, AsyncStream[OutputT]]:
        return self
        yield  # pragma: no cover - makes this a generator: `await stream` returns at once

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[ev.Event]:
        if self._gen is None:
            self._gen = _runner(self)._drive()
        return self._gen

    async def __anext__(self) -> ev.Event:
        return await self.__aiter__().__anext__()

    async def _drive(self) -> AsyncGenerator[Any, None]:
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
                            body = await self._engine.open(core)
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

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Only the answer text (choice 0), as `str` pieces."""
        return _async_text(self)

    @property
    def partials(self) -> AsyncIterator[ev.PartialOutput]:
        """Structured output (`output=`): only the `PartialOutput` events (the object so far)."""
        return _async_partials(self)

    async def collect(self) -> Response[OutputT]:
        async for _ in self:
            pass
        return self.response

    async def aclose(self) -> None:
        if self._gen is None:
            self._gen = _empty()
            self._abandon()
        else:
            await self._gen.aclose()


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


def turn_ended(stream: _BaseStream[Any], core: StreamCore) -> None:
    """`on_turn_end`, for every outcome of the turn."""
    notify(stream._hooks, "on_turn_end", stream.context, core.call, core.response())


def _runner(stream: _BaseStream) -> Any:
    """A second handle on `stream`'s state (it shares the attribute dict, not the `_gen` slot) for
    the event generator to hold: see `_BaseStream`."""
    twin = object.__new__(type(stream))
    twin.__dict__ = stream.__dict__
    twin._gen = None
    return twin


async def _run_tools(action: RunTools) -> Any:
    # Not inline in `AsyncStream._drive`: every local there is 8 bytes of every stream in flight's frame.
    from .tools.run import run_tools_async

    return await run_tools_async(action.calls, action.tools)


async def _async_partials(stream: AsyncStream[Any]) -> AsyncIterator[ev.PartialOutput]:
    events: AsyncIterator[Any] = aiter(stream)
    async for e in events:
        if type(e) is ev.PartialOutput:
            yield e


async def _async_text(stream: AsyncStream[Any]) -> AsyncIterator[str]:
    events: AsyncIterator[Any] = aiter(stream)
    async for e in events:
        t = type(e)
        if t is ev.TextDelta and e.choice == 0:
            yield e.text
        elif t is ev.Reset:
            separator = on_reset(stream, e)
            if separator:
                yield separator


def on_reset(stream: _BaseStream[Any], event: ev.Reset) -> str:
    """`text_stream` met a restart: raise (`text_reset="raise"`), or the text to yield ("" or the separator)."""
    mode = stream.text_reset
    if mode == "raise":
        raise_reset(event)
    return RESET_SEPARATOR if mode == "separator" and event.discarded_text else ""


def raise_reset(event: ev.Reset) -> None:
    """`text_stream` cannot express "discard what you printed": raise rather than repeat text."""
    raise StreamResetError(
        "the answer restarted on another model (fallback mode 'restart'); iterate the events to handle Reset, "
        "or pass text_reset='separator' or 'continue'",
        discarded_text=event.discarded_text,
    )


def _nothing() -> Generator[Any, None, None]:
    return
    yield  # pragma: no cover


async def _empty() -> AsyncGenerator[Any, None]:
    return
    yield  # pragma: no cover
