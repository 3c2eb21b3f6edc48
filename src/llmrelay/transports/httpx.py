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

import functools
import time
from typing import Any, AsyncIterator, Iterator

from ..errors import (
    APIConnectionError,
    APITimeoutError,
    StreamInterruptedError,
    status_error,
)
from ..call import HTTPRequest
from ..timeouts import Timeouts

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

    return httpx


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


def typed_error(exc: BaseException, *, timeout: bool, connect: bool, phase: str, ctx: dict[str, Any],
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


def translate_error(exc: BaseException, *, phase: str, ctx: dict[str, Any], timeouts: Timeouts, started: float) -> Exception:
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

    Async pools belong to the event loop that built them: a client used again
    under a new loop (a second `asyncio.run`) gets new pools instead of
    "Event loop is closed"."""

    def __init__(self, client: Any, transport: Any, is_async: bool):
        self._given = client
        self._transport = transport
        self._async = is_async
        self._by_scheme: dict[str, Any] = {}
        self._loop: Any = None

    def get(self, url: str) -> Any:
        if self._given is not None:
            return self._given
        if self._async:
            import asyncio

            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                self._by_scheme, self._loop = {}, loop  # the old loop's connections die with it
        scheme = "https" if url.startswith("https:") else "http"
        client = self._by_scheme.get(scheme)
        if client is None:
            client = self._by_scheme[scheme] = self._build(scheme)
        return client

    def _build(self, scheme: str) -> Any:
        httpx = _httpx()
        verify: Any = _verified_ssl_context() if scheme == "https" else False
        if self._async:
            limits = httpx.Limits(max_connections=ASYNC_MAX_CONNECTIONS, max_keepalive_connections=ASYNC_MAX_KEEPALIVE)
            return httpx.AsyncClient(verify=verify, transport=self._transport, limits=limits, timeout=None)
        return httpx.Client(verify=verify, transport=self._transport, timeout=None)

    def owned(self) -> list[Any]:
        return list(self._by_scheme.values())


def _send_args(pools: _Pools, req: HTTPRequest, timeouts: Timeouts) -> tuple[Any, Any]:
    client = pools.get(req.url)
    request = client.build_request(req.method, req.url, headers=req.headers, content=req.body, timeout=_request_timeout(timeouts))
    return client, request


def _after_headers(request: Any, timeouts: Timeouts, started: float) -> None:
    # httpcore reads the per-request "timeout" extension when the body read
    # starts: from here on, a read waits at most the idle gap.
    request.extensions["timeout"] = {**request.extensions.get("timeout", {}), "read": _body_read_timeout(timeouts, started)}


def _error_ctx(resp: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    headers = resp.headers
    return {
        "provider": ctx.get("provider"),
        "model": ctx.get("model"),
        "request_id": headers.get("x-request-id") or headers.get("request-id"),
    }


class SyncTransport:
    def __init__(self, client: Any = None, transport: Any = None):
        self._pools = _Pools(client, transport, is_async=False)

    def open(self, req: HTTPRequest, timeouts: Timeouts, ctx: dict[str, Any]) -> SyncBody:
        started = time.perf_counter()
        httpx = _httpx()
        client, request = _send_args(self._pools, req, timeouts)
        try:
            resp = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate_error(exc, phase="headers", ctx=ctx, timeouts=timeouts, started=started) from exc
        if resp.status_code >= 400:
            try:
                body = resp.read()
            except httpx.HTTPError:
                body = b""
            finally:
                resp.close()
            raise status_error(resp.status_code, body, resp.headers, **_error_ctx(resp, ctx))
        _after_headers(request, timeouts, started)
        return SyncBody(resp, resp.status_code, timeouts, ctx, started)

    def close(self) -> None:
        for client in self._pools.owned():
            client.close()


class Body:
    """An open response (status already checked) whose bytes a subclass iterates; shared by
    every transport. `_errors` turns the HTTP library's exceptions into ours."""

    __slots__ = ("_resp", "_timeouts", "_ctx", "_started", "status_code", "headers")
    _errors: Any = staticmethod(lambda *a, **kw: translate_error(*a, **kw))

    def __init__(self, resp: Any, status_code: int, timeouts: Timeouts, ctx: dict[str, Any], started: float):
        self._resp = resp
        self._timeouts = timeouts
        self._ctx = ctx
        self._started = started
        self.status_code = status_code
        self.headers = resp.headers

    def _translate(self, exc: BaseException) -> Exception:
        return self._errors(exc, phase="body", ctx=self._ctx, timeouts=self._timeouts, started=self._started)


class SyncBody(Body):
    __slots__ = ()

    @property
    def socket(self) -> Any:
        """The underlying socket, when the transport exposes one (for the first-token watchdog)."""
        stream = self._resp.extensions.get("network_stream")
        return stream.get_extra_info("socket") if stream is not None else None

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            yield from self._resp.iter_bytes()
        except _httpx().HTTPError as exc:
            raise self._translate(exc) from exc

    def close(self) -> None:
        self._resp.close()


class AsyncTransport:
    def __init__(self, client: Any = None, transport: Any = None):
        self._pools = _Pools(client, transport, is_async=True)

    async def open(self, req: HTTPRequest, timeouts: Timeouts, ctx: dict[str, Any]) -> AsyncBody:
        started = time.perf_counter()
        httpx = _httpx()
        client, request = _send_args(self._pools, req, timeouts)
        try:
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate_error(exc, phase="headers", ctx=ctx, timeouts=timeouts, started=started) from exc
        if resp.status_code >= 400:
            try:
                body = await resp.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await resp.aclose()
            raise status_error(resp.status_code, body, resp.headers, **_error_ctx(resp, ctx))
        _after_headers(request, timeouts, started)
        return AsyncBody(resp, resp.status_code, timeouts, ctx, started)

    async def aclose(self) -> None:
        for client in self._pools.owned():
            await client.aclose()


class AsyncBody(Body):
    __slots__ = ()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except _httpx().HTTPError as exc:
            raise self._translate(exc) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()
