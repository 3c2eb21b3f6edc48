"""Optional async transport over aiohttp: the same interface as `transport.AsyncTransport`.

Why it exists (numbers from `make bench`, 2 cores): with hundreds of concurrent
streams the httpx/httpcore/anyio async stack spends several times more CPU per
chunk than aiohttp (whose HTTP parser and stream reader are C), so a busy event
loop falls behind the network. This transport keeps everything above it
unchanged: `open()` returns a body with `status_code`, `headers`
(case-insensitive `.get`), `aiter_bytes()`, `failed(exc)` and `aclose()`; `open()`
raises the same typed errors as the httpx transport, and so does the body once
whoever awaits its reads passes what they raise through `failed` (see `AiohttpBody`).

Choices:
- aiohttp is imported on first use only (it costs ~150 ms to import).
- One `ClientSession` per event loop, built on first use inside that loop; a
  session left behind by a closed loop is dropped, never reused.
- `trust_env` is off (aiohttp would then read ~/.netrc and the proxy variables
  in a worker thread on every request); proxy variables are read here once per
  origin instead, so `HTTPS_PROXY` / `NO_PROXY` still work as with httpx.
- Timeouts: `connect` bounds getting a connection (pool wait + TCP/TLS), with
  aiohttp's connect timer; `first_byte` bounds the wait for the headers once
  connected; from then on `idle` bounds each network wait in the body and
  `total` the whole call. The waits for headers and every open body of an event
  loop are checked by one periodic callback (`_IdleWatch`). aiohttp's own socket
  read timer would allocate, cancel and heap-push a timer for every chunk of
  every stream, and hold a timer, its context and a bound method for every
  request waiting for its headers: work and objects that grow with the streams
  in flight (bench/bench_scale.py).
- Redirects are not followed (as with httpx's default).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import time
import weakref
from typing import Any, Awaitable

from ..errors import InvalidRequestError, status_error
from ..call import HTTPRequest
from ..limits import DEFAULT_LIMITS, Limits
from ..timeouts import Timeouts
from .decode import ACCEPT_ENCODING, ErrorBody, Labels
from .httpx import ASYNC_MAX_CONNECTIONS, Body, _verified_ssl_context, typed_error

__all__ = ["AiohttpTransport", "AiohttpBody"]


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the aiohttp async backend needs aiohttp: pip install aiohttp") from exc
    return aiohttp


def _first_wait(t: Timeouts) -> float | None:
    """How long the headers may take once connected: the nearest of first_byte, first_token and total."""
    first = t.first_byte
    for bound in (t.first_token, t.total):
        if bound is not None:
            first = bound if first is None else min(first, bound)
    return first


@functools.lru_cache(maxsize=64)
def _client_timeout(t: Timeouts, read: bool) -> Any:
    """aiohttp's timeouts for a request: its socket read timer only when the wait for headers
    cannot be ours (`read`: no task to cancel, see `_IdleWatch.opening`)."""
    return _aiohttp().ClientTimeout(total=t.total, connect=t.connect, sock_read=_first_wait(t) if read else None)


def translate_error(exc: BaseException, *, phase: str, ctx: Labels, timeouts: Timeouts, started: float) -> Exception:
    """An aiohttp (or asyncio timeout) exception as one of ours."""
    aiohttp = _aiohttp()
    return typed_error(
        exc,
        timeout=isinstance(exc, (asyncio.TimeoutError, TimeoutError)),
        connect=isinstance(exc, aiohttp.ConnectionTimeoutError),
        phase=phase, ctx=ctx, timeouts=timeouts, started=started,
    )


def _keyed(headers: dict[str, str]) -> dict[Any, str]:
    """`headers` with `multidict.istr` names: aiohttp's case-insensitive dicts then keep no lowercased
    copy of each name for every request in flight (~0.3 KB per stream, bench/bench_scale.py)."""
    names = _NAMES
    try:
        return {names[k]: v for k, v in headers.items()}
    except KeyError:
        pass
    if len(names) < 256:  # bounded: a caller's own header names are few, but not ours to count
        from multidict import istr

        for k in headers:
            if k not in names and type(k) is str:
                names[k] = istr(k)
    return {names.get(k, k): v for k, v in headers.items()}


#: Header name -> the same name as an `istr` (made once).
_NAMES: dict[str, Any] = {}


class AiohttpTransport:
    """`session`: your own `aiohttp.ClientSession` (never closed here). Otherwise one is built
    per event loop with a connection limit of `limit` (0 = unlimited)."""

    def __init__(self, session: Any = None, *, limit: int = ASYNC_MAX_CONNECTIONS, limits: Limits = DEFAULT_LIMITS):
        _LIVE.add(self)  # closed at exit if the caller never did (no "Unclosed ..." warnings)
        self.limits = limits
        self._given = session
        self._limit = limit
        self._session: Any = None
        self._loop: Any = None
        self._proxies: dict[str, Any] = {}
        self._watch: _IdleWatch | None = None

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
                auto_decompress=False,  # decoded in `Body.reader`, within Limits (a gzip bomb stops there)
                headers=_keyed({"accept-encoding": ACCEPT_ENCODING}),
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

    async def open(self, req: HTTPRequest, timeouts: Timeouts, ctx: Labels) -> AiohttpBody:
        started = time.perf_counter()
        aiohttp = _aiohttp()
        session = self._get_session()
        url = req.url
        first = _first_wait(timeouts)
        task = asyncio.current_task() if first is not None else None
        # A session of ours: its request coroutine, awaited as is. `request()` wraps it in a context
        # manager whose `__await__` leaves a coroutine wrapper for every request waiting for headers.
        sending = (session.request if session is self._given else session._request)(
            req.method,
            url,
            headers=_keyed(req.wire_headers),
            data=req.body,
            timeout=_client_timeout(timeouts, task is None and first is not None),
            allow_redirects=False,
            ssl=_verified_ssl_context() if url.startswith("https:") else True,
            proxy=self._proxy(url),
        )
        if task is not None:  # the wait for headers is bounded by the watch (it cancels the task)
            watch = self._idle_watch()
            cancelling = task.cancelling()
            watch.expect(task, sending, first)  # type: ignore[arg-type]
        try:
            resp = await sending
        except asyncio.CancelledError:
            # ours: the watch took the task out of `opening` when it cancelled it (a caller's cancel leaves it in)
            if task is not None and task not in watch.opening and task.uncancel() <= cancelling:
                raise translate_error(asyncio.TimeoutError(), phase="headers", ctx=ctx, timeouts=timeouts,
                                      started=started) from None
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError) as exc:
            raise translate_error(exc, phase="headers", ctx=ctx, timeouts=timeouts, started=started) from exc
        except ValueError as exc:  # aiohttp refuses the request itself (e.g. a URL password and an auth header)
            raise InvalidRequestError(f"the request to {ctx.get('provider')} cannot be sent: {exc}") from None
        finally:
            sending = None
            if task is not None:
                watch.settled(task)
        if resp.status >= 400:
            headers = resp.headers
            decoded = session is self._given and getattr(session, "auto_decompress", True)
            error = ErrorBody(None if decoded else headers.get("content-encoding"), self.limits)
            try:
                while chunk := await resp.content.readany():
                    if error.add(chunk):
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError):
                pass
            finally:
                resp.close()
            raise status_error(
                resp.status,
                error.body,
                headers,
                truncated=error.truncated,
                provider=ctx.get("provider"),
                model=ctx.get("model"),
                request_id=headers.get("x-request-id") or headers.get("request-id"),
            )
        # a session of the caller's may decode the body itself
        decoded = session is self._given and getattr(session, "auto_decompress", True)
        body = AiohttpBody(resp, resp.status, timeouts, ctx, started, self.limits, decoded)
        conn = resp.connection
        if conn is not None and conn.protocol is not None:
            # From here on the idle / total deadline is ours (one periodic check for every open body),
            # not aiohttp's socket read timer, which allocates, cancels and heap-pushes a timer per chunk.
            conn.protocol.read_timeout = None
            conn.protocol.start_timeout()  # cancels the headers' timer
            if timeouts.idle is not None or timeouts.total is not None:
                body._watch = self._idle_watch()
                body._watch.add(body)
        return body

    def _idle_watch(self) -> _IdleWatch:
        loop = asyncio.get_running_loop()
        watch = self._watch
        if watch is None or watch.loop is not loop:
            watch = self._watch = _IdleWatch(loop)
        return watch

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


class _IdleWatch:
    """The deadlines of one event loop's requests waiting for headers (`first_byte`) and of its open
    bodies (idle gap, total), checked by one periodic callback: no timer per request, and O(1) per
    chunk (a clock read) instead of a timer per chunk per stream.

    A request waiting for headers is in `opening` (its task, its deadline) and `sending` (the
    coroutine it awaits): past the deadline the task is cancelled, and `open` turns that cancellation
    into a first-byte timeout; a request still getting its connection (aiohttp's connect timer
    bounds that) gets `first_byte` from then on instead. A body is checked only while its read waits
    for the network (a consumer that is slow to ask for the next chunk is not idle). A deadline fires
    at most a quarter of its wait late (at most 1 s)."""

    __slots__ = ("loop", "bodies", "handle", "interval", "opening", "sending", "waits", "connecting")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.bodies: set[AiohttpBody] = set()
        self.handle: Any = None
        self.interval = 1.0
        self.opening: dict[asyncio.Task[Any], float] = {}
        self.sending: dict[asyncio.Task[Any], Any] = {}
        self.waits: dict[asyncio.Task[Any], float] = {}
        self.connecting: set[asyncio.Task[Any]] = set()

    def add(self, body: AiohttpBody) -> None:
        t = body._timeouts
        self.bodies.add(body)
        self._arm(min(x for x in (t.idle, t.total) if x is not None))

    def expect(self, task: asyncio.Task[Any], sending: Any, wait: float) -> None:
        """`task` awaits `sending` (aiohttp's request) for at most `wait` seconds once connected."""
        self.opening[task] = time.monotonic() + wait
        self.sending[task] = sending
        self.waits[task] = wait
        self._arm(wait)

    def settled(self, task: asyncio.Task[Any]) -> None:
        self.opening.pop(task, None)
        self.sending.pop(task, None)
        self.waits.pop(task, None)
        self.connecting.discard(task)

    def _arm(self, wait: float) -> None:
        interval = min(1.0, max(0.005, wait / 4))
        if self.handle is None or interval < self.interval:
            if self.handle is not None:
                self.handle.cancel()
            self.interval = interval
            self.handle = self.loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.opening:
            for task in [t for t, end in self.opening.items() if now > end]:
                if _connecting(self.sending[task]):  # the wait for headers has not begun: look again soon
                    self.opening[task] = now + self.interval
                    self.connecting.add(task)
                    continue
                if task in self.connecting:  # connected since the last look: its wait for headers begins
                    self.connecting.discard(task)
                    self.opening[task] = now + self.waits[task]
                    continue
                del self.opening[task]  # (what tells `open` the cancel is the deadline's)
                task.cancel()
        for body in [b for b in self.bodies if b._since]:
            t = body._timeouts
            if ((t.idle is not None and now - body._since > t.idle) or (body._end_by and now > body._end_by)) and body._waiting():
                self.bodies.discard(body)
                body._expire()
        if self.bodies or self.opening:
            self.handle = self.loop.call_later(self.interval, self._tick)
        else:
            self.handle, self.interval = None, 1.0


def _connecting(sending: Any) -> bool:
    """aiohttp's request coroutine `sending` still waits for its connection (looked at only when a
    deadline passed: a walk down what it awaits, to aiohttp's `BaseConnector.connect`)."""
    connect = _aiohttp().BaseConnector.connect.__code__
    sending = getattr(sending, "_coro", sending)  # a caller's session: `request()`'s context manager around it
    for _ in range(32):
        code = getattr(sending, "cr_code", None)
        if code is None:
            return False
        if code is connect:
            return True
        sending = sending.cr_await
    return False


#: An identity body is read by the plain path while a read could not take it past `max_body`: one
#: read takes at most aiohttp's buffer (it stops reading at 128 KiB by default) plus one socket read
#: (256 KiB with asyncio's selector loop). Closer to the limit, reads are checked after they return.
_NEAR_LIMIT = 1 << 20


class AiohttpBody(Body):
    """The body is its own async iterator, and `__anext__` is a plain method that returns aiohttp's
    own read (`StreamReader.readany()`) to await, not a coroutine of ours around it: a stream in
    flight holds no frame of ours while it waits, and a chunk costs no extra coroutine
    (bench/bench_scale.py). So that read raises aiohttp's exceptions: whoever awaits it turns them
    into ours with `failed(exc)` (the async driver and the gateway's relay do). Far from `max_body`
    the limit is checked before each read; near it, and for a compressed body (decoded within
    `Limits`), reads go through a coroutine that checks what they returned (`_checked`)."""

    __slots__ = ("_since", "_watch", "_end_by")
    _errors = staticmethod(lambda *a, **kw: translate_error(*a, **kw))

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._since = 0.0  # monotonic time the last read began (it waits while `_waiting()`)
        self._watch: _IdleWatch | None = None
        total = self._timeouts.total
        self._end_by = time.monotonic() - (time.perf_counter() - self._started) + total if total is not None else 0.0

    @staticmethod
    def _library_errors() -> tuple[type[BaseException], ...]:
        aiohttp = _aiohttp()
        # Also what aiohttp's read raises without being a ClientError: a parser error of its pure-Python
        # parser (HttpProcessingError), and "Connection closed." (RuntimeError) once the parser dropped
        # the connection: a connection that broke mid-stream, to the caller.
        return (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, asyncio.TimeoutError, RuntimeError)

    def _waiting(self) -> bool:
        """A read of this body waits for the network now."""
        return bool(self._since) and getattr(self._resp.content, "_waiter", True) is not None

    def _expire(self) -> None:
        """The idle gap or the total deadline passed while waiting: fail the read as aiohttp's own timer would."""
        conn = self._resp.connection
        proto = conn.protocol if conn is not None else None
        on_timeout = getattr(proto, "_on_read_timeout", None)
        if on_timeout is not None:
            on_timeout()
        content = self._resp.content
        if content.exception() is None:  # the protocol had no payload to fail (after a parser error): fail the read
            content.set_exception(_aiohttp().ServerTimeoutError("Timeout on reading data from socket"))

    def aiter_bytes(self) -> AiohttpBody:
        return self

    def __aiter__(self) -> AiohttpBody:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        """The next read to await: bytes (`b""` once at the end), or StopAsyncIteration now."""
        content = self._resp.content
        received = content.total_bytes
        if self._inflate is not None or received > self.max_body - _NEAR_LIMIT:
            return self._checked()
        if content.at_eof() and content.exception() is None:
            self._unwatch()
            raise StopAsyncIteration
        self._since = time.monotonic()
        return content.readany()

    async def _checked(self) -> bytes:
        """A read checked once it returns: a compressed body's (decoded within `Limits`), or an identity
        body's near `max_body` (`readany` takes all that was received, so the limit is exact there, as
        on the other transports: the chunk that crosses it is never handed over)."""
        reader = self.reader
        if reader.tail:  # the rest of a compressed chunk
            return reader.more()
        content = self._resp.content
        self._since = time.monotonic()
        chunk = await content.readany()  # its errors are aiohttp's: whoever awaits this turns them into ours (`failed`)
        if not chunk:
            self._unwatch()
            raise StopAsyncIteration
        if self._inflate is not None:
            return reader.feed(chunk)
        if content.total_bytes > self.max_body:
            self.total = content.total_bytes
            self._unwatch()
            raise self._too_large()
        return chunk

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch.bodies.discard(self)

    async def aclose(self) -> None:
        self._unwatch()
        resp = self._resp
        if resp.content.at_eof():
            resp.release()  # back to the pool
        else:
            resp.close()  # mid-stream: drop the connection so the server sees the hang-up
