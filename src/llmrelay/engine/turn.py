"""One model turn, without I/O: bytes in, typed events out, folded as they pass.

`StreamCore` feeds each network chunk to the protocol decoder, folds the
events into the assembler, keeps the clock (time to first token and busy time,
which excludes the caller's own time between chunks), enforces first-token and
total deadlines between chunks, and builds the `Response` for every outcome
(ok, truncated, error, aborted). The sync and async drivers in `stream/run.py`
only move bytes into it.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Iterator

from .. import events as ev
from .assembler import Assembler
from ..errors import (
    APIError,
    APITimeoutError,
    MalformedChunkError,
    ProviderStreamError,
    StreamInterruptedError,
    UnexpectedResponseError,
)
from ..response import Response, Timings
from ..timeouts import Timeouts
from ..usage import Usage, estimate_tokens

if TYPE_CHECKING:
    from ..call import Call, HTTPRequest

_perf = time.perf_counter
#: How much of a body is kept for the error of a 200 that is not a stream (only until something decodes).
HEAD = 512
_CONTENT = frozenset(ev.CONTENT_EVENTS)
_StreamError = ev.StreamError
_TextDelta = ev.TextDelta


class StreamCore:
    """Per-call state, no I/O: feeds bytes to the decoder, folds events, keeps time."""

    __slots__ = (
        "call", "request", "decoder", "assembler", "t_dispatch", "t_first", "t_text", "busy", "n_events",
        "t_resume", "pending", "done", "error", "aborted", "request_id", "timeouts", "deadline",
        "on_first_token", "context", "prices", "content_type", "head",
    )  # 22 slots: 208 bytes, a size class aiohttp's short-lived objects do not share (see bench/README.md)

    def __init__(self, call: Call, request: HTTPRequest, decoder: Any):
        self.call = call
        self.request = request
        # A decoder, or its class: then it and the assembler are built when the headers come
        # (`headers`), so a stream still connecting or waiting for its response holds neither.
        self.decoder = decoder
        self.assembler: Assembler | None = None if isinstance(decoder, type) else Assembler()
        self.t_dispatch: float | None = None
        self.t_first: float | None = None  # time to the first token of any kind (busy clock)
        self.t_text: float | None = None  # time to the first visible answer text (choice 0)
        self.busy = 0.0  # time inside llmrelay + waiting on the network
        self.n_events = 0  # decoded events (counted per network chunk, not per event)
        self.t_resume = 0.0
        self.pending: APIError | None = None
        self.done = False
        self.error: BaseException | None = None
        self.aborted = False
        self.request_id: str | None = None
        self.timeouts: Timeouts | None = None
        self.deadline: float | None = None  # the nearer of first-token and total, until the first token
        self.on_first_token: Any = None  # called once with the TTFT (hooks)
        self.context: Any = None  # the call's CallContext (its correlation and conversation ids), or None
        self.prices: Any = None  # a client's PriceTable, for Response.cost
        self.content_type: str | None = None
        self.head = b""  # the body's first bytes, kept until an event decodes (see `not_a_stream`)

    @property
    def ctx(self) -> dict[str, Any]:
        return {"provider": self.call.provider.name, "model": self.call.model}

    def get(self, key: str, /) -> Any:
        """`ctx[key]` without a dict: the transport gets the turn itself as its error labels
        (`transports.decode.Labels`), so a body in flight holds no dict of its own."""
        if key == "provider":
            return self.call.provider.name
        return self.call.model if key == "model" else None

    @property
    def end_by(self) -> float | None:
        """The total deadline (None: none, or not dispatched yet)."""
        t, start = self.timeouts, self.t_dispatch
        return start + t.total if t is not None and t.total is not None and start is not None else None

    @property
    def correlation_id(self) -> str | None:
        return self.context.correlation_id if self.context is not None else None

    @property
    def conversation_id(self) -> str | None:
        return self.context.conversation_id if self.context is not None else None

    def dispatch(self) -> None:
        self.t_dispatch = self.t_resume = now = _perf()
        t = self.timeouts
        if t is not None:
            end_by = self.end_by
            first = now + t.first_token if t.first_token is not None else None
            self.deadline = min(d for d in (first, end_by) if d is not None) if (first or end_by) else None

    def timed_out(self) -> APITimeoutError:
        if self.t_first is None and self.timeouts is not None and self.timeouts.first_token is not None and (
            self.end_by is None or _perf() < self.end_by
        ):
            return APITimeoutError(f"no content within first_token={self.timeouts.first_token}s", kind="first_token", **self.ctx)
        total = self.timeouts.total if self.timeouts is not None else None
        return APITimeoutError(f"total timeout: the call took more than {total}s", kind="total", **self.ctx)

    def headers(self, headers: Any) -> None:
        """The response's headers came (before any `feed`)."""
        if self.assembler is None:
            self.decoder = self.decoder()
            self.assembler = Assembler()
        self.request_id = headers.get("x-request-id") or headers.get("request-id") or headers.get("x-groq-id")
        self.content_type = headers.get("content-type")

    def not_a_stream(self) -> UnexpectedResponseError:
        """A 200 whose body decoded to nothing: say what came instead (content type, first bytes)."""
        head = self.head
        what = self.content_type or "no content type"
        shown = f"the body starts with {head[:200].decode('utf-8', 'replace')!r}" if head else "the body is empty"
        return UnexpectedResponseError(
            f"{self.call.provider.name} answered HTTP 200 with {what}, not the stream asked for; {shown}",
            content_type=self.content_type, body=head.decode("utf-8", "replace") or None, **self.ctx,
        )

    def feed(self, data: bytes) -> list:
        """Decode one network chunk and fold every event (so a close mid-batch loses nothing);
        the driver hands them out, then calls `resume()`. A list, not a generator: no generator
        object and no two clock reads per event. The caller's time between the events of a
        chunk is not counted in `busy` (the clock stops here and restarts at `resume`)."""
        if self.pending is not None:
            raise self.pending
        if self.deadline is not None and _perf() > self.deadline:
            raise self.timed_out()
        if not self.n_events:  # nothing decoded yet: keep the first bytes for `not_a_stream`
            self._keep_head(data)
        events = self._fold(self.decoder.feed(data))
        self.n_events += len(events)
        self.busy += _perf() - self.t_resume
        return events

    def resume(self) -> None:
        """The caller took the last event of a chunk: llmrelay's clock (`busy`) runs again."""
        self.t_resume = _perf()

    def finish(self) -> Iterator[Any]:
        if self.pending is not None:
            raise self.pending
        events = self._fold(self.decoder.end())
        self.n_events += len(events)
        if self.pending is None and not self.decoder.complete:
            if not self.n_events and not self.decoder.cut:  # nothing at all was decoded
                self.pending = self.not_a_stream()
            else:
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

    def _keep_head(self, data: bytes) -> None:
        n = len(self.head)
        if n < HEAD:
            self.head += data[: HEAD - n]

    def _fold(self, events: list) -> list:
        add = self.assembler.add  # type: ignore[union-attr]  # built by `headers`, before any feed
        for i, e in enumerate(events):
            t = type(e)
            if t is _StreamError:
                if not self.n_events and not i and e.kind == "malformed" and not _streamy(self.content_type):
                    self.pending = self.not_a_stream()  # e.g. an HTML page where NDJSON was expected
                else:
                    self.pending = self._stream_error(e)
                return events[:i]
            try:
                add(e)
            except TypeError as exc:  # a value of the wrong type in the provider's JSON
                self.pending = MalformedChunkError(f"{self.call.provider.name} sent a malformed chunk: {exc}", **self.ctx)
                return events[:i]
            if self.t_text is None:  # once the first text came, this is the only test per event
                if t is _TextDelta and e.text and e.choice == 0:
                    self.t_text = self.busy + (_perf() - self.t_resume)
                    if self.t_first is None:
                        self._first(self.t_text)
                elif self.t_first is None and t in _CONTENT:
                    # on the same clock as `busy`: the caller's time before this is not ours
                    self._first(self.busy + (_perf() - self.t_resume))
        return events

    def _first(self, t: float) -> None:
        self.t_first = t
        self.deadline = self.end_by
        self.head = b""  # a stream after all: not needed for an error any more
        if self.on_first_token is not None:
            self.on_first_token(t)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around a driver loop: an early close marks the call aborted; any error gets the partial response."""
        try:
            yield
        except (GeneratorExit, KeyboardInterrupt):
            self.aborted = True
            raise
        except BaseException as exc:
            if type(exc).__name__ == "CancelledError":  # asyncio task cancelled: the caller's abort
                self.aborted = True
                raise
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
        """Record the error, scrub the call's secrets from it (a provider may echo the key in an
        error body) and attach the partial response to it."""
        self.error = exc
        if isinstance(exc, APIError):
            exc.request_id = exc.request_id or self.request_id
            exc.provider = exc.provider or self.call.provider.name
            exc.model = exc.model or self.call.model
            from ..redact import request_secrets, scrub_error  # errors only: `import llmrelay` stays lean

            call, req = self.call, self.request
            scrub_error(exc, request_secrets(call.api_key, req.headers if req is not None else None,
                                             req.url if req is not None else call.base_url, call.extra_headers))
            exc.partial = self.response()
        return exc

    def response(self) -> Response:
        """The response as it stands (complete, partial, failed or aborted)."""
        a = self.assembler if self.assembler is not None else Assembler()  # (no response yet)
        r = a.build(Response(provider=self.call.provider.name, requested_model=self.call.model))
        r.model = r.model or self.call.model
        r.request_id = self.request_id
        r.correlation_id = self.correlation_id
        r.conversation_id = self.conversation_id
        if self.prices is not None:
            r._prices = self.prices
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
        ttft = self.t_first
        total = self.busy
        out_tokens = usage.output_tokens
        tps = None
        if out_tokens and ttft is not None and total > ttft:
            tps = out_tokens / (total - ttft)
        per_chunk = None
        if ttft is not None and self.n_events > 1 and total > ttft:
            per_chunk = (total - ttft) / (self.n_events - 1)
        return Timings(ttft, total, tps, self.t_text, self.t_dispatch, per_chunk)


def _streamy(content_type: str | None) -> bool:
    """A content type a stream may come as (an undecodable frame in it is a malformed chunk)."""
    ct = (content_type or "").lower()
    return "event-stream" in ct or "json" in ct


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


# -- what the drivers share around a turn: middleware observers, the first-token watchdog --
def observed(core: StreamCore, observers: tuple[Any, ...]) -> Any:
    """`core.feed` through the middleware observers; None when there are none (the driver calls
    `core.feed` itself: no extra layer per chunk, no bound method held per stream in flight)."""
    if not observers:
        return None
    return lambda chunk: observe(iter(core.feed(chunk)), observers)


def observe(events: Iterator[Any], observers: tuple[Any, ...]) -> Iterator[Any]:
    """Pass each event through the middleware observers (None drops it; a list stands for
    several events, in order, each handed to the observers after the one that returned it)."""
    if not observers:
        yield from events
        return
    for e in events:
        for i, fn in enumerate(observers):
            e = fn(e)
            if e is None:
                break
            if type(e) is list:
                if i + 1 == len(observers):
                    yield from e
                else:
                    yield from _observe_rest(e, observers, i + 1)
                break
        else:
            yield e


def _observe_rest(batch: list, observers: tuple[Any, ...], start: int) -> Iterator[Any]:
    for e in batch:
        for i in range(start, len(observers)):
            e = observers[i](e)
            if e is None:
                break
            if type(e) is list:
                yield from _observe_rest(e, observers, i + 1)
                break
        else:
            yield e


class Watchdog:
    """Sync streams: enforce the first-token deadline on a silent body by shutting the socket down."""

    def __init__(self, seconds: float, sock: Any):
        import threading

        self.fired = False
        self._sock = sock
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        import socket

        self.fired = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()


def first_token_watchdog(core: StreamCore, body: Any) -> Watchdog | None:
    if core.t_first is not None or core.deadline is None:
        return None
    sock = getattr(body, "socket", None)
    if sock is None:
        return None
    return Watchdog(max(0.0, core.deadline - time.perf_counter()), sock)


def body_error(body: Any, core: StreamCore, exc: Exception) -> BaseException:
    """What the async driver raises for `exc` from awaiting a body's next chunk: a plain timeout
    (the `first_token` / `total` deadline's `wait_for`, or the HTTP library's total timer) is the
    turn's own; the HTTP library's errors become ours (`failed`); anything else is raised as it is."""
    if type(exc) is TimeoutError:
        error: BaseException = core.timed_out()
        error.__suppress_context__ = True
        return error
    failed = getattr(body, "failed", None)
    return failed(exc) if failed is not None else exc
