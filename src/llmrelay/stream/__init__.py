"""`Stream` and `AsyncStream`: the public iterators over one model call.

A stream is a handle on a `Run` (`llmrelay.stream.run`): the plan (`llmrelay.engine.plan`: one
request, or the tool loop, ...), each model turn's `StreamCore` (`llmrelay.engine.turn`: decoder +
assembler + clock), and the sync and async drivers, which only perform the plan's actions and move
bytes from the transport into the core, so sync and async share every rule. The request is sent
when iteration starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Generator, Generic, Iterator

from .. import events as ev
from ..errors import StreamResetError
from ..observability.hooks import CallContext
from ..response import OutputT, Response
from ..engine.turn import StreamCore, observe
from ..usage import Usage
from .run import Run

if TYPE_CHECKING:
    from ..call import Call, HTTPRequest

__all__ = ["Stream", "AsyncStream", "StreamCore", "observe", "TEXT_RESETS", "RESET_SEPARATOR"]

#: What `text_stream` does at a fallback restart (`Reset`): raise `StreamResetError` (default),
#: yield `RESET_SEPARATOR` then the new answer, or just go on with the new answer's text.
TEXT_RESETS = ("raise", "separator", "continue")
#: The visible break `text_reset="separator"` yields before the restarted answer (a Markdown rule).
RESET_SEPARATOR = "\n\n---\n\n"


class _BaseStream(Generic[OutputT]):
    """What `Stream` and `AsyncStream` share: a handle on the call's `Run` (the plan, the current
    turn, the final response), and the event generator once iteration began.

    Generic in the type of `response.output` (`output=Weather` gives a `Stream[Weather]`).
    The generator runs on the `Run`, which does not reference the stream (see `llmrelay.stream.run`)."""

    __slots__ = ("_run", "_gen", "__dict__", "__weakref__")

    def __init__(self, run: Run):
        self._run = run
        self._gen: Any = None

    @property
    def context(self) -> CallContext:
        """The call's context: its correlation and conversation ids, tags, turns."""
        return self._run.context

    @property
    def text_reset(self) -> str:
        """`text_stream` at a fallback restart: one of `TEXT_RESETS`."""
        return self._run.text_reset

    @text_reset.setter
    def text_reset(self, value: str) -> None:
        self._run.text_reset = value

    @property
    def _core(self) -> StreamCore | None:
        """The current (or last) turn."""
        return self._run._core

    @property
    def call(self) -> Call | None:
        core = self._run._core
        return core.call if core is not None else None

    @property
    def request(self) -> HTTPRequest | None:
        """The HTTP request of the current (or last) turn."""
        core = self._run._core
        return core.request if core is not None else None

    @property
    def response(self) -> Response[OutputT]:
        """The response so far (final once the stream is exhausted or closed)."""
        run = self._run
        if run._final is not None:
            return run._final
        if run._core is None:  # nothing sent yet: no output either
            empty: Response[Any] = Response(status="aborted" if self._gen is not None else "ok")
            return empty
        return run._core.response()

    @property
    def usage(self) -> Usage:
        core = self._run._core
        return core.assembler.usage if core is not None and core.assembler is not None else Usage()

    @property
    def text(self) -> str:
        core = self._run._core
        return core.assembler.text if core is not None and core.assembler is not None else ""

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
        return self._run.context.correlation_id


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
            self._gen = self._run.drive()
        return self._gen

    def __next__(self) -> ev.Event:
        return next(iter(self))

    @property
    def text_stream(self) -> Iterator[str]:
        """Only the answer text (choice 0), as `str` pieces. At a fallback restart, `text_reset`
        (per call or on the `Client`) decides: raise `StreamResetError`, yield `RESET_SEPARATOR`,
        or go on with the new answer's text."""
        events: Iterator[Any] = iter(self)
        for e in events:
            if type(e) is ev.TextDelta and e.choice == 0:
                yield e.text
            elif type(e) is ev.Reset and (separator := on_reset(self, e)):
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
        self._run._closing = True
        if self._gen is None:
            self._gen = _nothing()  # a closed stream iterates as empty (and closes again)
            self._run._abandon()
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
            self._gen = self._run.adrive()
        return self._gen

    async def __anext__(self) -> ev.Event:
        return await self.__aiter__().__anext__()

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
            self._run._abandon()
        else:
            await self._gen.aclose()


async def _async_partials(stream: AsyncStream[Any]) -> AsyncIterator[ev.PartialOutput]:
    events: AsyncIterator[Any] = aiter(stream)
    async for e in events:
        if type(e) is ev.PartialOutput:
            yield e


async def _async_text(stream: AsyncStream[Any]) -> AsyncIterator[str]:
    events: AsyncIterator[Any] = aiter(stream)
    async for e in events:
        if type(e) is ev.TextDelta and e.choice == 0:
            yield e.text
        elif type(e) is ev.Reset and (separator := on_reset(stream, e)):
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
