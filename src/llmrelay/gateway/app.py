"""The gateway as a bare ASGI application (no framework: routing is four string compares).

    POST /v1/chat/completions   OpenAI Chat Completions (stream and not)
    POST /v1/messages           Anthropic Messages
    POST /v1/responses          OpenAI Responses
    GET  /v1/models             the configured model names (those the key may use)
    GET  /health/live           the process answers
    GET  /health/ready          the configuration is loaded, the gateway is not shutting down, the limits store answers
    GET  /metrics               Prometheus

`GatewayApp(config_path)` loads the config at lifespan startup (or at once with
`load_now=True`); `reload()` (SIGHUP) swaps in a new generation without
touching requests in flight.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from .background import Background
from .config import GatewayConfig, load
from .encode import GatewayError
from .handler import ENDPOINTS, Exchange, error_response, handle
from .ids import request_id
from .metrics import Metrics
from .state import Gateway

__all__ = ["GatewayApp"]

log = logging.getLogger("llmrelay.gateway")
_perf = time.perf_counter
_ROUTES = {b"/v1/chat/completions": "openai_chat", b"/v1/messages": "anthropic", b"/v1/responses": "openai_responses",
           b"/chat/completions": "openai_chat", b"/messages": "anthropic", b"/responses": "openai_responses"}
_JSON = [(b"content-type", b"application/json")]


class GatewayApp:
    def __init__(self, config: GatewayConfig | str, *, load_now: bool = False, async_backend: str = "aiohttp",
                 tracer_provider: Any = None, tune_gc: bool = False):
        #: Freeze the heap and raise the collector's threshold at startup (`_freeze_heap`): process-wide, so
        #: only the process that is the gateway (`llmrelay serve`, server.py) asks for it, never an app or a
        #: test that mounts a GatewayApp beside its own objects.
        self.tune_gc = tune_gc
        self.tracer_provider = tracer_provider  # OpenTelemetry (server: {otel: true}); None: the global one
        self.config_path = config if isinstance(config, str) else config.path
        self._config = None if isinstance(config, str) else config
        self.async_backend = async_backend
        self.gateway: Gateway | None = None
        self.metrics = Metrics()
        self.ready = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._retired: list[Gateway] = []
        self._store_check: tuple[float, bool] | None = None  # (when, reachable): the readiness probe's cache
        self._closing = Background()  # retired generations' clients being closed
        self.shared: Any = None  # with --workers N: this worker's side of the server (workers.py)
        self._live_ids: set[str] = set()  # request ids given by clients, of the requests in flight (ids.py)
        if load_now:
            self._install(self._config or load(self.config_path))  # type: ignore[arg-type]

    def _install(self, config: GatewayConfig) -> None:
        for warning in config.warnings:
            log.warning("%s", warning)
        old, self.gateway = self.gateway, Gateway(config, async_backend=self.async_backend,
                                                    tracer_provider=self.tracer_provider)
        self.metrics.log_hook = self.gateway.log_hook
        self._store_check = None
        if old is not None:
            old.retired = True
            self._retired.append(old)
            self._reap()

    def reload(self) -> bool:
        """Load the config file again; on error keep the running one (and log why)."""
        try:
            config = load(self.config_path) if self.config_path else self._config
            self._install(config)  # type: ignore[arg-type]
        except Exception as exc:
            log.error("config reload failed, keeping the running configuration: %s", exc)
            return False
        log.info("configuration reloaded from %s", self.config_path)
        return True

    def _reap(self) -> None:
        for gw in [g for g in self._retired if g.in_flight == 0]:
            self._retired.remove(gw)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                gw.client.close()
            else:
                self._closing.spawn(gw.client.aclose())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        import os

        state = os.environ.get("LLMRELAY_GATEWAY_STATE")  # workers.STATE_ENV: a worker of `serve --workers N`
        if state and self.shared is None:
            from .workers import Shared

            self.shared = Shared(state, self)  # before the config is loaded: a reload from now on is seen
        if self.gateway is None:
            self._install(self._config or load(self.config_path))  # type: ignore[arg-type]
        import aiohttp  # noqa: F401 - the upstream client: loaded before ready, not by the first request

        # the price data (~0.2 s to load) warms up in a thread: ready does not wait for it
        warm = _warm_up_then_freeze() if self.tune_gc else asyncio.to_thread(_warm_up)
        self._tasks.append(asyncio.ensure_future(warm))
        self._tasks.append(asyncio.ensure_future(self.metrics.watch_loop()))
        try:
            import signal

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.shared.on_hup if self.shared else self.reload)
        except (ImportError, NotImplementedError, RuntimeError, AttributeError, ValueError):
            pass  # no SIGHUP (Windows) or not the main thread
        if self.shared is not None:
            self._tasks.append(asyncio.ensure_future(self.shared.run()))
            self.shared.flush()  # the file says this worker is up (and takes SIGHUP)
        if self.tune_gc:
            _freeze_heap(self.gateway)
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        await self._closing.wait()
        gws = [g for g in [self.gateway, *self._retired] if g is not None]
        for gw in gws:
            await gw.aclose()
        if self.shared is not None:
            self.shared.flush(alive=False)  # the supervisor folds it into the server's totals

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = _perf()
        path = scope.get("raw_path") or scope["path"].encode()
        path = path.split(b"?", 1)[0]
        method = scope["method"]
        gw = self.gateway
        protocol = _ROUTES.get(path)
        cors = gw.options.cors if gw is not None else ()
        extra: list[tuple[bytes, bytes]] = []
        if cors:
            extra = self._cors_headers(scope, cors)
            if method == "OPTIONS":
                await send({"type": "http.response.start", "status": 204, "headers": extra + [
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (b"access-control-allow-headers", b"authorization, content-type, x-api-key, anthropic-version, anthropic-beta"),
                    (b"access-control-max-age", b"600")]})
                await send({"type": "http.response.body", "body": b""})
                return
        if protocol is not None and method == "POST":
            if gw is None:
                await self._plain(send, 503, b'{"error":{"message":"not ready"}}')
                return
            x = Exchange(send, t0, gw.options.overhead_header, extra)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                rid, given = request_id(headers, self._live_ids)
            except GatewayError as exc:
                body = exc
            else:
                extra.append((b"x-request-id", rid.encode()))
                if protocol == "anthropic":
                    extra.append((b"request-id", rid.encode()))
                body = await _read_body(receive, gw.options.max_body_bytes, headers)
            if isinstance(body, GatewayError):
                await error_response(x, protocol, body)
                self.metrics.request_done(ENDPOINTS[protocol], "-", str(body.status), x.overhead_ms())
                return
            gw.in_flight += 1
            self.metrics.in_flight += 1
            if given:
                self._live_ids.add(rid)
            try:
                await handle(gw, protocol, body, headers, receive, x, self.metrics, rid)
            finally:
                gw.in_flight -= 1
                self.metrics.in_flight -= 1
                if given:
                    self._live_ids.discard(rid)
                if gw.retired and gw.in_flight == 0:
                    self._reap()
            return
        if method in ("GET", "HEAD"):
            if path == b"/health/live":
                await self._plain(send, 200, b'{"status":"ok"}', extra)
                return
            if path == b"/health/ready":
                status, body = await self._readiness(gw)
                await self._plain(send, status, body, extra)
                return
            if path == b"/metrics":
                text = self.metrics.render(self.shared.others() if self.shared is not None else None)
                await self._plain(send, 200, text, extra, b"text/plain; version=0.0.4; charset=utf-8")
                return
            if path in (b"/v1/models", b"/models") and gw is not None:
                await self._models(gw, scope, send, extra)
                return
        await self._plain(send, 404 if method in ("GET", "POST", "HEAD") else 405,
                          b'{"error":{"message":"no such endpoint","type":"not_found_error"}}', extra)

    async def _readiness(self, gw: Gateway | None) -> tuple[int, bytes]:
        """Ready: the config is loaded, the gateway is not shutting down and the limits store (when there is
        one) answers a PING; a store that does not is a 503 only with `on_store_error: closed` (the requests
        would be refused), else the body says so. The log writer's counts go in the body."""
        import json

        if not self.ready or gw is None:
            return 503, b'{"status":"starting"}'
        body: dict[str, Any] = {"status": "ready"}
        status = 200
        shared = gw.shared
        if shared is not None:
            now = _perf()
            if self._store_check is None or now - self._store_check[0] > 1.0:  # at most one PING a second
                self._store_check = (now, await shared.reachable())
            ok = self._store_check[1]
            body["limits_store"] = "ok" if ok else "unreachable"
            if not ok and shared.options.on_store_error == "closed":
                status, body["status"] = 503, "limits store unreachable"
        hook = gw.log_hook
        if hook is not None:
            st = hook.stats
            body["logs"] = {"written": st.written, "lost": st.lost}
        return status, json.dumps(body).encode()

    async def _models(self, gw: Gateway, scope: dict[str, Any], send: Any, extra: list[tuple[bytes, bytes]]) -> None:
        import json

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            key = gw.authenticate(headers)
        except GatewayError as exc:
            x = Exchange(send, _perf(), False, extra)
            await error_response(x, "openai_chat", exc)
            return
        data = [{"id": name, "object": "model", "created": int(self.metrics.started), "owned_by": "llmrelay",
                 "type": "model", "display_name": name}
                for name in gw.config.routes if gw.allowed(key, name)]
        body = json.dumps({"object": "list", "data": data, "has_more": False}).encode()
        await self._plain(send, 200, body, extra)

    @staticmethod
    def _cors_headers(scope: dict[str, Any], allowed: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
        origin = next((v for k, v in scope["headers"] if k.lower() == b"origin"), None)
        if origin is None:
            return []
        if "*" in allowed:
            return [(b"access-control-allow-origin", b"*")]
        if origin.decode("latin-1") in allowed:
            return [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        return []

    @staticmethod
    async def _plain(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
                     content_type: bytes = b"application/json") -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _freeze_heap(gw: Gateway | None) -> None:
    """Everything loaded so far (modules, config, the client, the price data) lives as long as the process:
    move it out of the collector's generations (`gc.freeze`, a list splice), so the collections that
    the requests' short-lived objects trigger never walk it. Unfrozen, the ~85,000 objects of a
    running gateway made each full collection cost ~50 ms (the collector was ~20% of the CPU per request);
    young collections also run 14x less often (threshold 10,000: most request objects die by reference
    counting anyway)."""
    if gw is not None:  # the modules the first request would import
        from ..engine.prepare import protocol_module

        for protocol in set(gw.protocols.values()):
            try:
                protocol_module(protocol)
            except ImportError:
                pass
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def _warm_up_then_freeze() -> None:
    await asyncio.to_thread(_warm_up)
    _freeze_heap(None)


def _warm_up() -> None:
    """Load the price data now, so the first request's cost (metrics) does not."""
    try:
        from ..cost.prices import response_cost  # noqa: F401
        from ..response import Response

        Response(provider="openai", model="gpt-4o").cost  # noqa: B018 - loads the price database once
    except Exception:  # pricing is optional
        pass


async def _read_body(receive: Any, limit: int, headers: dict[str, str]) -> bytes | GatewayError:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return GatewayError(413, f"the request body is larger than {limit} bytes", "request_too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return GatewayError(499, "client disconnected", "invalid_request_error")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return GatewayError(413, f"the request body is larger than {limit} bytes", "request_too_large")
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
