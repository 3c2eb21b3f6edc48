"""The only code that touches sockets: sync and async HTTP over httpx.

A transport turns an `HTTPRequest` into an open response (status checked,
errors typed) whose body is iterated as bytes. Everything above it is sans-IO.

Choices made with numbers (see `make bench`):
- httpx is imported lazily, so `import llmrelay` stays cheap.
- One pool per scheme, built on first use: plain-http traffic (local servers,
  Ollama) never pays for loading the CA bundle (~20-40 ms); https reuses one
  process-wide verified SSL context.
- The async pool allows many concurrent streams (httpx's default of 100
  connections queues the 101st stream behind the first 100) but keeps only 20
  idle connections: httpcore 1.0's pool does O(idle x total) work per request,
  so 1,000 kept-alive connections made 500 concurrent streams take 9.2 s
  instead of 1.6 s (`make bench`). For many concurrent async streams the
  aiohttp backend is faster still (`Client(async_backend="aiohttp")`).
"""

from __future__ import annotations

import collections
import functools
import logging
import socket
import threading
import time
from typing import Any, AsyncIterator, Iterator

from ..errors import (
    APIConnectionError,
    APITimeoutError,
    StreamInterruptedError,
    status_error,
)
from ..call import HTTPRequest
from ..limits import DEFAULT_LIMITS, Limits
from ..redact import redact_url
from ..timeouts import Timeouts
from .decode import ACCEPT_ENCODING, BodyReader, ErrorBody, Labels, decodes_itself

ASYNC_MAX_CONNECTIONS = 10_000
ASYNC_MAX_KEEPALIVE = 20


@functools.cache
def _verified_ssl_context() -> Any:
    import ssl

    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover
        return ssl.create_default_context()


def _httpx() -> Any:
    import httpx

    if not _LOG_FILTER:
        global _HTTPError
        _HTTPError = httpx.HTTPError  # the sync body's per-chunk `except` without a function call
        _LOG_FILTER.append(_RedactURLs())
        logging.getLogger("httpx").addFilter(_LOG_FILTER[0])
    return httpx


class _RedactURLs(logging.Filter):
    """httpx logs each request's URL (INFO): no `?key=` value or URL password in those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(a).__name__ == "URL" for a in args):
            record.args = tuple(redact_url(str(a)) if type(a).__name__ == "URL" else a for a in args)
        return True


_LOG_FILTER: list[_RedactURLs] = []


class _NotLoaded(Exception):
    """Stands for `httpx.HTTPError` until httpx is loaded (it is imported lazily)."""


_HTTPError: type[Exception] = _NotLoaded


def _request_timeout(t: Timeouts) -> Any:
    first = t.first_byte
    for bound in (t.first_token, t.total):
        if bound is not None:
            first = bound if first is None else min(first, bound)
    return _httpx().Timeout(connect=t.connect, read=first, write=t.write, pool=t.connect)


def _body_read_timeout(t: Timeouts, started: float) -> float | None:
    idle = t.idle
    if t.total is not None:
        left = max(0.001, t.total - (time.perf_counter() - started))
        idle = left if idle is None else min(idle, left)
    return idle


def typed_error(exc: BaseException, *, timeout: bool, connect: bool, phase: str, ctx: Labels,
                timeouts: Timeouts, started: float) -> Exception:
    """A transport failure as one of ours, whatever the HTTP library. `timeout`: it was a timeout;
    `connect`: getting a connection timed out; `phase`: "headers" (before the response) or "body"."""
    kw = {"provider": ctx.get("provider"), "model": ctx.get("model")}
    elapsed = time.perf_counter() - started
    if timeout:
        if connect:
            kind = "connect"
        elif timeouts.total is not None and elapsed >= timeouts.total - 0.01:
            kind = "total"
        elif phase == "body":
            kind = "idle"
        else:
            kind = "first_byte"
        return APITimeoutError(f"{kind} timeout after {elapsed:.2f}s talking to {kw['provider']}", kind=kind, **kw)
    if phase == "body":
        return StreamInterruptedError(f"connection to {kw['provider']} broke mid-stream: {exc}", **kw)
    return APIConnectionError(f"could not reach {kw['provider']}: {exc}", **kw)


def translate_error(exc: BaseException, *, phase: str, ctx: Labels, timeouts: Timeouts, started: float) -> Exception:
    """An httpx exception as one of ours."""
    httpx = _httpx()
    return typed_error(
        exc,
        timeout=isinstance(exc, httpx.TimeoutException),
        connect=isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)),
        phase=phase, ctx=ctx, timeouts=timeouts, started=started,
    )


class _Pools:
    """Lazily built httpx clients, one per scheme (plain http never builds a CA context).

    Built under a lock, so threads making their first call together share one pool; every
    client ever built is remembered, so `close()` closes every connection this transport opened.
    Async pools belong to the event loop that built them: a client used again
    under a new loop (a second `asyncio.run`) gets new pools instead of
    "Event loop is closed"."""

    def __init__(self, client: Any, transport: Any, is_async: bool):
        self._given = client
        self._transport = transport
        self._async = is_async
        self._by_scheme: dict[str, Any] = {}
        self._loop: Any = None
        self._lock = threading.Lock()
        self._built: list[Any] = []

    def get(self, url: str) -> Any:
        if self._given is not None:
            return self._given
        scheme = "https" if url.startswith("https:") else "http"
        loop: Any = None
        if self._async:
            import asyncio

            loop = asyncio.get_running_loop()
        client = self._by_scheme.get(scheme)
        if client is None or loop is not self._loop:
            with self._lock:
                if loop is not self._loop:
                    self._by_scheme, self._loop = {}, loop  # the old loop's connections die with it
                client = self._by_scheme.get(scheme)
                if client is None:
                    client = self._by_scheme[scheme] = self._build(scheme)
                    self._built.append((client, loop))
        return client

    def _build(self, scheme: str) -> Any:
        httpx = _httpx()
        verify: Any = _verified_ssl_context() if scheme == "https" else False
        headers = {"accept-encoding": ACCEPT_ENCODING}  # only what we decode within Limits
        if self._async:
            limits = httpx.Limits(max_connections=ASYNC_MAX_CONNECTIONS, max_keepalive_connections=ASYNC_MAX_KEEPALIVE)
            return httpx.AsyncClient(verify=verify, transport=self._transport, limits=limits, timeout=None, headers=headers)
        return httpx.Client(verify=verify, transport=self._transport, timeout=None, headers=headers)

    def owned(self) -> list[tuple[Any, Any]]:
        """Every (client, event loop) built so far (forgotten here: a later call builds new ones)."""
        with self._lock:
            built, self._built, self._by_scheme, self._loop = self._built, [], {}, None
        return built


def _drop_sockets(client: Any) -> None:
    """Close the sockets of an async pool whose event loop is gone (it can no longer be awaited)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    for conn in list(getattr(pool, "_connections", None) or ()):
        stream = getattr(getattr(conn, "_connection", None), "_network_stream", None)
        try:
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sock.close()
        except Exception:  # half torn down already: nothing more to release
            pass


def _send_args(pools: _Pools, req: HTTPRequest, timeouts: Timeouts) -> tuple[Any, Any]:
    client = pools.get(req.url)
    headers = req.wire_headers
    if pools._given is not None and "accept-encoding" not in headers:  # a caller's client may ask for br, zstd...
        headers = {**headers, "accept-encoding": ACCEPT_ENCODING}
    request = client.build_request(req.method, req.url, headers=headers, content=req.body, timeout=_request_timeout(timeouts))
    return client, request


def _after_headers(request: Any, timeouts: Timeouts, started: float) -> None:
    # httpcore reads the per-request "timeout" extension when the body read
    # starts: from here on, a read waits at most the idle gap.
    request.extensions["timeout"] = {**request.extensions.get("timeout", {}), "read": _body_read_timeout(timeouts, started)}


def _error_ctx(resp: Any, ctx: Labels) -> dict[str, Any]:
    headers = resp.headers
    return {
        "provider": ctx.get("provider"),
        "model": ctx.get("model"),
        "request_id": headers.get("x-request-id") or headers.get("request-id"),
    }


class SyncTransport:
    """Sync HTTP over httpx.

    A stream dropped without `close()` may be finalized by the garbage collector anywhere,
    including inside another request that holds httpcore's pool lock. So every open body
    stays referenced here (never garbage, never finalized mid-request); an abandoned one
    only shuts its socket down (no lock: the server sees the hang-up at once) and waits in
    `_abandoned` until the next `open()` or `close()` releases it from a safe place."""

    def __init__(self, client: Any = None, transport: Any = None, limits: Limits = DEFAULT_LIMITS):
        self._pools = _Pools(client, transport, is_async=False)
        self.limits = limits
        self._open: set[SyncBody] = set()
        self._abandoned: collections.deque[SyncBody] = collections.deque()

    def open(self, req: HTTPRequest, timeouts: Timeouts, ctx: Labels) -> SyncBody:
        if self._abandoned:
            self.reap()
        started = time.perf_counter()
        httpx = _httpx()
        client, request = _send_args(self._pools, req, timeouts)
        try:
            resp = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate_error(exc, phase="headers", ctx=ctx, timeouts=timeouts, started=started) from exc
        if resp.status_code >= 400:
            error = ErrorBody(resp.headers.get("content-encoding"), self.limits)
            try:
                for raw in resp.iter_raw():
                    if error.add(raw):
                        break
            except httpx.HTTPError:
                pass
            finally:
                resp.close()
            raise status_error(resp.status_code, error.body, resp.headers, truncated=error.truncated, **_error_ctx(resp, ctx))
        _after_headers(request, timeouts, started)
        body = SyncBody(resp, resp.status_code, timeouts, ctx, started, self.limits)
        body.start(self)
        return body

    def reap(self) -> None:
        """Release the connections of streams that were dropped without being closed."""
        while self._abandoned:
            try:
                body = self._abandoned.popleft()
            except IndexError:  # another thread took the last one
                return
            body.close()

    def close(self) -> None:
        self.reap()
        for body in list(self._open):
            body.close()
        for client, _ in self._pools.owned():
            client.close()


class Body(BodyReader):
    """An open response (status already checked) whose decoded bytes a subclass iterates; shared
    by every transport. It is its own `BodyReader` (`reader`: one object per stream in flight,
    not two), which decodes and counts them within `Limits`; `_errors` turns the HTTP library's
    exceptions into ours."""

    __slots__ = ("_resp", "_timeouts", "_started", "status_code", "headers", "_raw_ok")
    _errors: Any = staticmethod(lambda *a, **kw: translate_error(*a, **kw))

    def __init__(self, resp: Any, status_code: int, timeouts: Timeouts, ctx: Labels, started: float,
                 limits: Limits = DEFAULT_LIMITS, decoded: bool = False):
        self._resp = resp
        self._timeouts = timeouts
        self._started = started
        self.status_code = status_code
        self.headers = resp.headers
        encoding = None if decoded else resp.headers.get("content-encoding")
        self._raw_ok = not decodes_itself(encoding)  # else the library decodes (an encoding we did not ask for)
        BodyReader.__init__(self, encoding if self._raw_ok else None, limits, ctx)

    @property
    def reader(self) -> BodyReader:
        return self

    def _translate(self, exc: BaseException) -> Exception:
        return self._errors(exc, phase="body", ctx=self._ctx, timeouts=self._timeouts, started=self._started)

    def failed(self, exc: BaseException) -> BaseException:
        """An error raised while reading this body, as one of ours: the HTTP library's errors are
        translated (the original chained as the cause), anything else is returned as it is."""
        if not isinstance(exc, self._library_errors()):
            return exc
        error = self._translate(exc)
        error.__cause__ = exc
        return error

    @staticmethod
    def _library_errors() -> tuple[type[BaseException], ...]:
        return (_httpx().HTTPError,)


class SyncBody(Body):
    """Iterates the decoded body. Kept referenced by its transport while open (see `SyncTransport`)."""

    __slots__ = ("_raw", "_transport")

    def start(self, transport: SyncTransport) -> None:
        self._transport: SyncTransport | None = transport
        transport._open.add(self)
        self._raw = self._resp.iter_raw() if self._raw_ok else self._resp.iter_bytes()

    @property
    def socket(self) -> Any:
        """The underlying socket, when the transport exposes one (for the first-token watchdog)."""
        stream = self._resp.extensions.get("network_stream")
        return stream.get_extra_info("socket") if stream is not None else None

    def iter_bytes(self) -> Iterator[bytes]:
        """The decoded body. A plain `for` over the raw iterator, never `yield from`: closing this
        generator (even from the garbage collector) must not close httpx's iterator, whose
        close takes the pool lock; `close()` / `abandon()` release it."""
        reader = self.reader
        try:
            if reader._inflate is None:  # identity: count, inline
                limit, total = reader.max_body, 0
                for raw in self._raw:
                    total += len(raw)
                    if total > limit:
                        reader.total = total
                        raise reader._too_large()
                    yield raw
                reader.total = total
            else:
                for raw in self._raw:
                    yield reader.feed(raw)
                    while reader.tail:
                        yield reader.more()
        except _HTTPError as exc:
            raise self._translate(exc) from exc

    def abandon(self) -> None:
        """Dropped without close (maybe by the garbage collector, maybe inside another request
        holding the pool lock): hang up on the server now, take no lock, release the pool slot later."""
        try:
            sock = self.socket
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        transport = getattr(self, "_transport", None)
        if transport is not None:
            transport._abandoned.append(self)

    def close(self) -> None:
        transport = getattr(self, "_transport", None)
        if transport is not None:
            self._transport = None
            transport._open.discard(self)
        raw = getattr(self, "_raw", None)
        self._raw = iter(())
        try:
            if raw is not None and hasattr(raw, "close"):
                raw.close()
        finally:
            self._resp.close()


class AsyncTransport:
    def __init__(self, client: Any = None, transport: Any = None, limits: Limits = DEFAULT_LIMITS):
        self._pools = _Pools(client, transport, is_async=True)
        self.limits = limits

    async def open(self, req: HTTPRequest, timeouts: Timeouts, ctx: Labels) -> AsyncBody:
        started = time.perf_counter()
        httpx = _httpx()
        client, request = _send_args(self._pools, req, timeouts)
        try:
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate_error(exc, phase="headers", ctx=ctx, timeouts=timeouts, started=started) from exc
        if resp.status_code >= 400:
            error = ErrorBody(resp.headers.get("content-encoding"), self.limits)
            try:
                async for raw in resp.aiter_raw():
                    if error.add(raw):
                        break
            except httpx.HTTPError:
                pass
            finally:
                await resp.aclose()
            raise status_error(resp.status_code, error.body, resp.headers, truncated=error.truncated, **_error_ctx(resp, ctx))
        _after_headers(request, timeouts, started)
        return AsyncBody(resp, resp.status_code, timeouts, ctx, started, self.limits)

    async def aclose(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for client, owner in self._pools.owned():
            if owner is loop or owner is None:
                await client.aclose()
            else:  # built under an event loop that has ended
                _drop_sockets(client)


class AsyncBody(Body):
    __slots__ = ()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        reader = self.reader
        try:
            async for raw in self._resp.aiter_raw() if self._raw_ok else self._resp.aiter_bytes():
                yield reader.feed(raw)
                while reader.tail:
                    yield reader.more()
        except _httpx().HTTPError as exc:
            raise self._translate(exc) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()
