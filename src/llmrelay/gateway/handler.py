"""One model request through the gateway: auth, limits, the llmrelay stream, and the answer in the client's protocol.

Streaming answers start (status 200 and headers) with the first byte of the
answer, so anything that fails before it (bad key, unknown model, the
provider's 429 after retries and fallbacks) still gets its real HTTP status,
error shape and `Retry-After`. From then on a failure with no fallback left is
the protocol's in-stream error frame.

A client that hangs up cancels the request's task at once (the upstream
connection is closed by llmrelay's stream as it unwinds, and the log row says
"aborted"); with `on_client_disconnect: drain` the upstream is read to the end
instead, for complete usage, and nothing more is written.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from .. import events as ev
from ..errors import InvalidRequestError
from .encode import GatewayError, dumps as _dumps, status_of
from .ids import apply as apply_ids
from .inbound import parse
from .out_anthropic import AnthropicEncoder
from .out_chat import ChatEncoder
from .out_responses import ResponsesEncoder
from .relay import CURRENT, Relay

__all__ = ["handle", "ENCODERS", "error_response"]

ENCODERS = {"openai_chat": ChatEncoder, "anthropic": AnthropicEncoder, "openai_responses": ResponsesEncoder}
ENDPOINTS = {"openai_chat": "chat", "anthropic": "messages", "openai_responses": "responses"}
_perf = time.perf_counter
_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # the C scanner, not in the stubs
_CONTENT = frozenset((ev.TextDelta, ev.ReasoningDelta, ev.RefusalDelta, ev.ToolCallStart))
_RESTART = frozenset((ev.RetryEvent, ev.FallbackEvent))  # one set test per relayed event, not two lookups
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class Exchange:
    """The client side of one request: sends the response start once, counts what was written."""

    __slots__ = ("send", "t0", "started", "done", "disconnected", "overhead_header", "relay", "extra_headers", "last_write")

    def __init__(self, send: Any, t0: float, overhead_header: bool, extra_headers: list[tuple[bytes, bytes]]):
        self.send = send
        self.t0 = t0
        self.started = False
        self.done = False
        self.disconnected = False
        self.overhead_header = overhead_header
        self.relay: Relay | None = None
        self.extra_headers = extra_headers
        self.last_write = t0

    def overhead_ms(self) -> float:
        wait = self.relay.upstream_wait if self.relay is not None else 0.0
        return max(0.0, (_perf() - self.t0 - wait) * 1000.0)

    def _headers(self, base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        headers = base + self.extra_headers
        if self.overhead_header:
            headers.append((b"x-llmrelay-overhead-ms", b"%.3f" % self.overhead_ms()))
        return headers

    async def start_stream(self) -> None:
        if not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": 200, "headers": self._headers(list(_SSE_HEADERS))})

    async def write(self, data: bytes) -> None:
        if self.disconnected:
            return
        if not self.started:
            await self.start_stream()
        self.last_write = _perf()
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"") -> None:
        self.done = True
        if self.disconnected:
            return
        if not self.started:
            await self.start_stream()
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.done = True
        if self.disconnected or self.started:
            return
        self.started = True
        body = _dumps(obj).encode()
        base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        base.extend((k.encode(), v.encode()) for k, v in (headers or {}).items())
        await self.send({"type": "http.response.start", "status": status, "headers": self._headers(base)})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _loads(data: bytes) -> Any:
    """`json.loads(data)` without its encoding sniffing and wrapper calls when the body is plain UTF-8
    JSON (the C scanner on the decoded text); anything else (another encoding, a BOM, surrounding
    whitespace, an error) takes `json.loads` itself: the same result or the same error."""
    try:
        text = data.decode("utf-8")
        obj, end = _scan_once(text, 0)
        if end == len(text):
            return obj
    except (UnicodeDecodeError, StopIteration):
        pass
    return json.loads(data)


async def error_response(x: Exchange, protocol: str, exc: BaseException) -> int:
    status, kind, message, headers = status_of(exc)
    await x.json(status, ENCODERS.get(protocol, ChatEncoder).error_body(status, kind, message), headers)
    return status


async def _watch_disconnect(receive: Any, x: Exchange, task: asyncio.Task[Any], cancel: bool) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not x.done:
                x.disconnected = True
                if cancel:
                    task.cancel()
            return


async def handle(gw: Any, protocol: str, body_bytes: bytes, headers: dict[str, str], receive: Any, x: Exchange,
                 metrics: Any, correlation_id: str | None = None) -> None:
    endpoint = ENDPOINTS[protocol]
    key = None
    model = "-"
    try:
        key = gw.authenticate(headers)
        try:
            body = _loads(body_bytes)
        except ValueError as exc:
            raise GatewayError(400, f"the body is not valid JSON: {exc}") from None
        inbound = parse(protocol, body)
        model = inbound.model
        if not gw.allowed(key, model):
            raise GatewayError(403 if key is not None and model in gw.config.routes else 404,
                               f"this key may not use the model {model!r}", "permission_error")
        route = gw.route(model)
        apply_ids(inbound, headers, correlation_id)
    except (GatewayError, InvalidRequestError) as exc:
        status = await error_response(x, protocol, exc)
        metrics.request_done(endpoint, model if model in gw.config.routes else "-", str(status), x.overhead_ms())
        return
    charge = None  # the key's budget reservation (budget.py), settled with the real usage at the end
    try:
        if key is not None and key.budget is not None:
            charge = await gw.budgets.reserve(key, route, inbound.body, body_bytes, x)
        held = gw.acquire(key)  # None, or the shared limits store's admission: one round trip
        if held is not None:
            held = await held
    except BaseException as exc:
        if charge is not None:  # refused by the limits (or cancelled): nothing was spent
            await gw.budgets.settle(charge)
        if not isinstance(exc, GatewayError):
            raise
        status = await error_response(x, protocol, exc)
        metrics.request_done(endpoint, model, str(status), x.overhead_ms())
        return
    try:
        await _serve(gw, protocol, inbound, route, key, headers, receive, x, metrics)
    finally:
        try:
            if held is None:
                gw.release(key)
            else:
                await gw.shared.release(held)  # also when cancelled or failed
        finally:
            if charge is not None:
                await gw.budgets.settle(charge)


async def _serve(gw: Any, protocol: str, inbound: Any, route: Any, key: Any, headers: dict[str, str], receive: Any,
                 x: Exchange, metrics: Any) -> None:
    if gw.tracer is None:
        return await _answer(gw, protocol, inbound, route, key, headers, receive, x, metrics)
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    # the server span, in the client's trace when it sent `traceparent` (W3C; the global propagator);
    # llmrelay's OpenTelemetry hooks open the call and upstream spans inside it
    attributes = {"http.request.method": "POST", "llmrelay.gateway.endpoint": ENDPOINTS[protocol],
                  "llmrelay.gateway.model": route.name, "llmrelay.gateway.key": key.name if key is not None else "",
                  "llmrelay.gateway.stream": inbound.stream}
    for name, attr in (("correlation_id", "llmrelay.correlation_id"), ("conversation_id", "gen_ai.conversation.id")):
        if inbound.kwargs.get(name) is not None:
            attributes[attr] = inbound.kwargs[name]
    with gw.tracer.start_as_current_span(f"POST {ENDPOINTS[protocol]} {route.name}", context=extract(headers),
                                         kind=SpanKind.SERVER, attributes=attributes) as span:
        await _answer(gw, protocol, inbound, route, key, headers, receive, x, metrics)
        span.set_attribute("llmrelay.gateway.overhead_ms", x.overhead_ms())
        span.set_attribute("llmrelay.gateway.aborted", x.disconnected)


async def _answer(gw: Any, protocol: str, inbound: Any, route: Any, key: Any, headers: dict[str, str], receive: Any,
                  x: Exchange, metrics: Any) -> None:
    endpoint = ENDPOINTS[protocol]
    opts = gw.call_options(route)
    model_arg = opts.pop("model")
    tags = {"gateway_key": key.name if key is not None else None, "gateway_model": route.name, "gateway_endpoint": endpoint}
    user_tags = inbound.kwargs.pop("tags", None)  # gateway_user (ids.py)
    if user_tags:
        tags.update(user_tags)
    encoder = ENCODERS[protocol](route.name, inbound.include_usage)
    relay = Relay(protocol, inbound.body, inbound.stream, gw.protocols, headers)
    relay.encoder = encoder
    relay.write = x.write
    x.relay = relay
    status = "ok"
    stream = None
    task = asyncio.current_task()
    assert task is not None
    watcher = task.get_loop().create_task(_watch_disconnect(receive, x, task, gw.options.on_client_disconnect == "cancel"))
    keepalive = None
    if inbound.stream and gw.options.keepalive > 0:
        keepalive = asyncio.ensure_future(_keepalive(x, gw.options.keepalive, gw.options.keepalive_grace))
    token = CURRENT.set(relay)
    if inbound.stream:
        metrics.in_flight_streams += 1
    try:
        try:
            stream = gw.client.astream(model_arg, inbound.messages, tags=tags, wire_body=relay.wire_body, **inbound.kwargs,
                                       **opts)
        except Exception as exc:  # the request cannot be encoded for its target (unsupported parameter, ...)
            status = str(await error_response(x, protocol, exc))
            return
        relay.stream = stream
        if inbound.stream:
            status = await _stream(stream, relay, encoder, x, protocol)
        else:
            status = await _complete(stream, relay, encoder, x, protocol)
    except asyncio.CancelledError:
        if not x.disconnected:
            raise
        task.uncancel()
        status = "aborted"
    finally:
        CURRENT.reset(token)
        watcher.cancel()
        if keepalive is not None:
            keepalive.cancel()
        if inbound.stream:
            metrics.in_flight_streams -= 1
        if stream is not None:
            if x.disconnected:
                status = "aborted"
            tags["gateway_overhead_ms"] = round(x.overhead_ms(), 3)
            await stream.aclose()
        response = stream.response if stream is not None else None
        metrics.request_done(endpoint, route.name, status, x.overhead_ms(), response, relay.upstream_requests)
        relay.release()  # no cycles left: the request's objects go now, by reference counting


async def _stream(stream: Any, relay: Relay, encoder: Any, x: Exchange, protocol: str) -> str:
    tags = stream.context.tags
    write = x.write
    unrelayed = relay.unrelayed  # cleared in place, never replaced
    hold = unrelayed.append
    try:
        async for e in stream:
            t = type(e)
            if relay.raw_turn:  # the provider's bytes go to the client; keep the events until they did
                if t in _RESTART:
                    if relay.sent or any(type(u) in _CONTENT for u in unrelayed):
                        data = relay.translate()  # the continuation is ours to write, in the same stream
                        if data:
                            await write(data)
                    else:
                        relay.raw_turn = False
                        unrelayed.clear()  # nothing reached the client: the next answer starts afresh
                    continue
                if t in _CONTENT:
                    relay.content_seen = True
                hold(e)
                continue
            if t in _CONTENT:
                relay.content_seen = True
            elif t is ev.Finish:
                tags["gateway_overhead_ms"] = round(x.overhead_ms(), 3)
            data = encoder.encode(e)
            if data:
                relay.raw_ok = False
                await write(data)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if not x.started:  # nothing written yet: a real HTTP status
            return str(await error_response(x, protocol, exc))
        data = relay.translate() if relay.raw_turn else b""
        await x.finish(data + encoder.error(exc))
        return "error"
    if relay.raw_turn and relay.sent:
        await x.finish()  # the provider's own closing frames were relayed
    else:
        data = relay.translate() if relay.raw_turn else b""
        await x.finish(data + encoder.end())
    return "ok" if stream.response.status in ("ok", "truncated") else stream.response.status


async def _complete(stream: Any, relay: Relay, encoder: Any, x: Exchange, protocol: str) -> str:
    tags = stream.context.tags
    try:
        async for e in stream:
            t = type(e)
            if t in _CONTENT:
                relay.content_seen = True  # a fallback now continues llmrelay's way, not with the client's body
            elif t is ev.Finish:
                tags["gateway_overhead_ms"] = round(x.overhead_ms(), 3)
        response = stream.response
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return str(await error_response(x, protocol, exc))
    await x.json(200, encoder.body(response))
    return "ok"


async def _keepalive(x: Exchange, interval: float, grace: float) -> None:
    """SSE comments while the answer is silent; the first only after `grace` without a byte."""
    await asyncio.sleep(grace)
    while not x.done and not x.disconnected:
        idle = _perf() - x.last_write
        if x.started and idle < interval:
            await asyncio.sleep(interval - idle)
            continue
        await x.write(b": keep-alive\n\n")
        await asyncio.sleep(interval)
