"""`Stream` and `AsyncStream`: the public iterators over one model call.

All decisions live in `StreamCore` (pure: decoder + assembler + clock); the two
drivers only move bytes from the transport into it, so sync and async share
every rule. The request is sent when iteration starts (or on `with` entry).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

from . import events as ev
from .assembler import Assembler
from .errors import APIError, MalformedChunkError, ProviderStreamError, StreamInterruptedError
from .response import Response, Timings
from .usage import Usage, estimate_tokens

if TYPE_CHECKING:
    from .protocols._base import Call, HTTPRequest

_perf = time.perf_counter
_CONTENT = frozenset(ev.CONTENT_EVENTS)
_StreamError = ev.StreamError


class StreamCore:
    """Per-call state, no I/O: feeds bytes to the decoder, folds events, keeps time."""

    __slots__ = (
        "call", "request", "decoder", "assembler", "_add", "t_dispatch", "t_first", "busy",
        "t_resume", "pending", "done", "error", "aborted", "request_id",
    )

    def __init__(self, call: Call, request: HTTPRequest, decoder: Any):
        self.call = call
        self.request = request
        self.decoder = decoder
        self.assembler = Assembler()
        self._add = self.assembler.add
        self.t_dispatch: float | None = None
        self.t_first: float | None = None
        self.busy = 0.0  # time inside llmrelay + waiting on the network
        self.t_resume = 0.0
        self.pending: APIError | None = None
        self.done = False
        self.error: BaseException | None = None
        self.aborted = False
        self.request_id: str | None = None

    @property
    def ctx(self) -> dict[str, Any]:
        return {"provider": self.call.provider.name, "model": self.call.model}

    def dispatch(self) -> None:
        self.t_dispatch = self.t_resume = _perf()

    def headers(self, headers: Any) -> None:
        self.request_id = headers.get("x-request-id") or headers.get("request-id") or headers.get("x-groq-id")

    def feed(self, data: bytes) -> Iterator[Any]:
        """Decode one network chunk; fold every event first (so a close mid-batch loses
        nothing), then hand them out, timing only what is not the caller's own time."""
        if self.pending is not None:
            raise self.pending
        events = self._fold(self.decoder.feed(data))
        for e in events:
            self.busy += _perf() - self.t_resume
            yield e
            self.t_resume = _perf()

    def finish(self) -> Iterator[Any]:
        if self.pending is not None:
            raise self.pending
        events = self._fold(self.decoder.end())
        if self.pending is None and not self.decoder.complete:
            why = "the connection closed in the middle of an event" if self.decoder.cut else "the stream ended before its final event"
            self.pending = StreamInterruptedError(f"{self.call.provider.name} stream interrupted: {why}", **self.ctx)
        for e in events:
            self.busy += _perf() - self.t_resume
            yield e
            self.t_resume = _perf()
        if self.pending is not None:
            raise self.pending
        self.busy += _perf() - self.t_resume
        self.done = True

    def _fold(self, events: list) -> list:
        add = self._add
        for i, e in enumerate(events):
            t = type(e)
            if t is _StreamError:
                self.pending = self._stream_error(e)
                return events[:i]
            if self.t_first is None and t in _CONTENT:
                self.t_first = _perf()
            add(e)
        return events

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around a driver loop: an early close marks the call aborted; any error gets the partial response."""
        try:
            yield
        except GeneratorExit:
            self.aborted = True
            raise
        except BaseException as exc:
            raise self.fail(exc) from None

    def _stream_error(self, e: ev.StreamError) -> APIError:
        cls = MalformedChunkError if e.kind == "malformed" else ProviderStreamError
        return cls(
            f"{self.call.provider.name} reported an error in the stream: {e.message}",
            code=e.code,
            status=e.status,
            body=e.data,
            **self.ctx,
        )

    def fail(self, exc: BaseException) -> BaseException:
        """Record the error and attach the partial response to it."""
        self.error = exc
        if isinstance(exc, APIError):
            exc.request_id = exc.request_id or self.request_id
            exc.partial = self.response()
        return exc

    def response(self) -> Response:
        """The response as it stands (complete, partial, failed or aborted)."""
        a = self.assembler
        r = a.build(Response(provider=self.call.provider.name, requested_model=self.call.model))
        r.model = r.model or self.call.model
        r.request_id = self.request_id
        if self.done:
            r.status = "truncated" if r.finish_reason == "length" else "ok"
        elif self.aborted and self.error is None:
            r.status = "aborted"
        else:
            r.status = "error" if self.error is not None else ("aborted" if self.aborted else "error")
        r.error = self.error
        if r.usage.output_tokens is None or r.usage.input_tokens is None:
            _estimate_usage(r, self.call)
        r.timings = self.timings(r.usage)
        return r

    def timings(self, usage: Usage) -> Timings:
        if self.t_dispatch is None:
            return Timings()
        ttft = self.t_first - self.t_dispatch if self.t_first is not None else None
        total = self.busy
        out_tokens = usage.output_tokens
        tps = None
        if out_tokens and ttft is not None and total > ttft:
            tps = out_tokens / (total - ttft)
        return Timings(ttft, total, tps)


def _estimate_usage(r: Response, call: Call) -> None:
    """Usage the provider never reported (cut or cancelled): estimated, and marked so."""
    u = r.usage
    if u.output_tokens is None:
        produced = r.text + r.reasoning + (r.refusal or "") + "".join(c.raw_arguments for c in r.tool_calls)
        u.output_tokens = estimate_tokens(produced)
        u.estimated = True
    if u.input_tokens is None:
        prompt = "".join(m.text for m in call.messages)
        u.input_tokens = estimate_tokens(prompt)
        u.estimated = True


class _BaseStream:
    def __init__(self, core: StreamCore):
        self._core = core
        self._final: Response | None = None

    @property
    def call(self) -> Call:
        return self._core.call

    @property
    def request(self) -> HTTPRequest:
        return self._core.request

    @property
    def response(self) -> Response:
        """The response so far (final once the stream is exhausted or closed)."""
        return self._final if self._final is not None else self._core.response()

    @property
    def usage(self) -> Usage:
        return self._core.assembler.usage

    @property
    def text(self) -> str:
        return self._core.assembler.text

    def _finalize(self) -> Response:
        if self._final is None:
            self._final = self._core.response()
        return self._final


class Stream(_BaseStream):
    """Iterate for typed events; `.text_stream` for text; `.collect()` for the `Response`.

    Use as a context manager (or call `.close()`) to release the connection at once.
    """

    def __init__(self, core: StreamCore, open_body: Callable[[], Any]):
        super().__init__(core)
        self._open_body = open_body
        self._body: Any = None
        self._gen: Iterator[Any] | None = None

    def __enter__(self) -> Stream:
        self._start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        return self._start()

    def __next__(self) -> Any:
        return next(self._start())

    def _start(self) -> Iterator[Any]:
        if self._gen is None:
            self._gen = self._run()
            core = self._core
            core.dispatch()
            try:
                self._body = self._open_body()
            except BaseException as exc:
                self._gen = iter(())
                raise core.fail(exc) from None
            core.headers(self._body.headers)
        return self._gen

    def _run(self) -> Iterator[Any]:
        core = self._core
        try:
            with core.guard():
                for chunk in self._body.iter_bytes():
                    yield from core.feed(chunk)
                yield from core.finish()
        finally:
            self._body.close()
            self._finalize()

    @property
    def text_stream(self) -> Iterator[str]:
        """Only the answer text (choice 0), as `str` pieces."""
        for e in self:
            if type(e) is ev.TextDelta and e.choice == 0:
                yield e.text

    def collect(self) -> Response:
        """Finish the stream (also when half consumed) and return the `Response`."""
        for _ in self._start():
            pass
        return self._finalize()

    def close(self) -> None:
        """Close the HTTP connection now. What arrived stays in `.response` (status "aborted")."""
        if self._gen is not None:
            if self._final is None:
                self._core.aborted = True
            self._gen.close()
            if self._body is not None:
                self._body.close()
        self._finalize()


class AsyncStream(_BaseStream):
    """`async for` events; `.text_stream`; `await .collect()`; `await .aclose()`."""

    def __init__(self, core: StreamCore, open_body: Callable[[], Any]):
        super().__init__(core)
        self._open_body = open_body
        self._body: Any = None
        self._gen: AsyncIterator[Any] | None = None

    async def __aenter__(self) -> AsyncStream:
        await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def __anext__(self) -> Any:
        gen = await self._start()
        return await gen.__anext__()

    async def _iterate(self) -> AsyncIterator[Any]:
        gen = await self._start()
        async for e in gen:
            yield e

    async def _start(self) -> AsyncIterator[Any]:
        if self._gen is None:
            self._gen = self._run()
            core = self._core
            core.dispatch()
            try:
                self._body = await self._open_body()
            except BaseException as exc:
                self._gen = _empty()
                raise core.fail(exc) from None
            core.headers(self._body.headers)
        return self._gen

    async def _run(self) -> AsyncIterator[Any]:
        core = self._core
        try:
            with core.guard():
                async for chunk in self._body.aiter_bytes():
                    for e in core.feed(chunk):
                        yield e
                for e in core.finish():
                    yield e
        finally:
            await self._body.aclose()
            self._finalize()

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Only the answer text (choice 0), as `str` pieces."""
        return _async_text(self)

    async def collect(self) -> Response:
        gen = await self._start()
        async for _ in gen:
            pass
        return self._finalize()

    async def aclose(self) -> None:
        if self._gen is not None:
            if self._final is None:
                self._core.aborted = True
            await self._gen.aclose()
            if self._body is not None:
                await self._body.aclose()
        self._finalize()


async def _async_text(stream: AsyncStream) -> AsyncIterator[str]:
    async for e in stream:
        if type(e) is ev.TextDelta and e.choice == 0:
            yield e.text



async def _empty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover
