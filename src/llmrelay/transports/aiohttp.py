"""Optional async transport over aiohttp: the same interface as `transport.AsyncTransport`.

Why it exists (numbers from `make bench`, 2 cores): with hundreds of concurrent
streams the httpx/httpcore/anyio async stack spends several times more CPU per
chunk than aiohttp (whose HTTP parser and stream reader are C), so a busy event
loop falls behind the network. This transport keeps everything above it
unchanged: `open()` returns a body with `status_code`, `headers`
(case-insensitive `.get`), `aiter_bytes()` and `aclose()`, and errors are the
same typed errors as the httpx transport raises.

Choices:
- aiohttp is imported on first use only (it costs ~150 ms to import).
- One `ClientSession` per event loop, built on first use inside that loop; a
  session left behind by a closed loop is dropped, never reused.
- `trust_env` is off (aiohttp would then read ~/.netrc and the proxy variables
  in a worker thread on every request); proxy variables are read here once per
  origin instead, so `HTTPS_PROXY` / `NO_PROXY` still work as with httpx.
- Timeouts: `connect` bounds getting a connection (pool wait + TCP/TLS);
  `first_byte` bounds the wait for the headers; from then on `idle` bounds
  each gap in the body (aiohttp's socket read timer, switched after the
  headers); `total` bounds the whole call, body included.
- Redirects are not followed (as with httpx's default).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import time
import weakref
from typing import Any, AsyncIterator

from ..errors import status_error
from ..call import HTTPRequest
from ..timeouts import Timeouts
from .httpx import ASYNC_MAX_CONNECTIONS, Body, _body_read_timeout, _verified_ssl_context, typed_error

__all__ = ["AiohttpTransport", "AiohttpBody"]


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the aiohttp async backend needs aiohttp: pip install aiohttp") from exc
    return aiohttp


@functools.lru_cache(maxsize=64)
def _client_timeout(t: Timeouts) -> Any:
    first = t.first_byte
    for bound in (t.first_token, t.total):
        if bound is not None:
            first = bound if first is None else min(first, bound)
    return _aiohttp().ClientTimeout(total=t.total, connect=t.connect, sock_read=first)


def translate_error(exc: BaseException, *, phase: str, ctx: dict[str, Any], timeouts: Timeouts, started: float) -> Exception:
    """An aiohttp (or asyncio timeout) exception as one of ours."""
    aiohttp = _aiohttp()
    return typed_error(
        exc,
        timeout=isinstance(exc, (asyncio.TimeoutError, TimeoutError)),
        connect=isinstance(exc, aiohttp.ConnectionTimeoutError),
        phase=phase, ctx=ctx, timeouts=timeouts, started=started,
    )


class AiohttpTransport:
    """`session`: your own `aiohttp.ClientSession` (never closed here). Otherwise one is built
    per event loop with a connection limit of `limit` (0 = unlimited)."""

    def __init__(self, session: Any = None, *, limit: int = ASYNC_MAX_CONNECTIONS):
        _LIVE.add(self)  # closed at exit if the caller never did (no "Unclosed ..." warnings)
        self._given = session
        self._limit = limit
        self._session: Any = None
        self._loop: Any = None
        self._proxies: dict[str, Any] = {}

    def _get_session(self) -> Any:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or self._loop is not loop or session.closed:
            if session is not None:
                _discard(session)  # its loop is gone: close its sockets now, not in a GC warning
            aiohttp = _aiohttp()
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=15,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,
                auto_decompress=True,
            )
            self._session, self._loop = session, loop
        return session

    def _proxy(self, url: str) -> Any:
        """The env proxy for this URL's origin, looked up once (aiohttp's trust_env does it per request, in a thread)."""
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        if key not in self._proxies:
            import urllib.request

            scheme = origin[0].rstrip(":")
            host = origin[2] if len(origin) > 2 else ""
            proxies = urllib.request.getproxies()
            proxy = proxies.get(scheme)
            if proxy and urllib.request.proxy_bypass(host.rsplit(":", 1)[0] if host.count(":") == 1 else host):
                proxy = None
            self._proxies[key] = proxy or None
        return self._proxies[key]

    async def open(self, req: HTTPRequest, timeouts: Timeouts, ctx: dict[str, Any]) -> AiohttpBody:
        started = time.perf_counter()
        aiohttp = _aiohttp()
        session = self._get_session()
        url = req.url
        try:
            resp = await session.request(
                req.method,
                url,
                headers=req.headers,
                data=req.body,
                timeout=_client_timeout(timeouts),
                allow_redirects=False,
                ssl=_verified_ssl_context() if url.startswith("https:") else True,
                proxy=self._proxy(url),
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError) as exc:
            raise translate_error(exc, phase="headers", ctx=ctx, timeouts=timeouts, started=started) from exc
        if resp.status >= 400:
            try:
                body = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError):
                body = b""
            finally:
                resp.release()
            headers = resp.headers
            raise status_error(
                resp.status,
                body,
                headers,
                provider=ctx.get("provider"),
                model=ctx.get("model"),
                request_id=headers.get("x-request-id") or headers.get("request-id"),
            )
        conn = resp.connection
        if conn is not None and conn.protocol is not None:
            # from here on, a read waits at most the idle gap
            conn.protocol.read_timeout = _body_read_timeout(timeouts, started)
            conn.protocol.start_timeout()
        return AiohttpBody(resp, resp.status, timeouts, ctx, started)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                await session.close()
            except RuntimeError:  # its event loop is gone
                _discard(session)

    def close(self) -> None:
        """Without an event loop (`Client.close()`): drop the session, closing its sockets."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            _discard(session)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be half gone
            pass


_LIVE: weakref.WeakSet[AiohttpTransport] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for transport in list(_LIVE):
        transport.close()


def _discard(session: Any) -> None:
    """Close a session's connections synchronously (aiohttp 3.x `BaseConnector._close`)."""
    connector = getattr(session, "_connector", None)
    close = getattr(connector, "_close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # a half-dead loop: nothing more to release
        pass


class AiohttpBody(Body):
    __slots__ = ()
    _errors = staticmethod(lambda *a, **kw: translate_error(*a, **kw))

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        aiohttp = _aiohttp()
        readany = self._resp.content.readany
        try:
            while True:
                chunk = await readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError) as exc:
            raise self._translate(exc) from exc

    async def aclose(self) -> None:
        resp = self._resp
        if resp.content.at_eof():
            resp.release()  # back to the pool
        else:
            resp.close()  # mid-stream: drop the connection so the server sees the hang-up
