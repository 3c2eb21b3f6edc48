"""The fast path: forward the client's own body, relay the provider's own bytes, decode them on the side.

For each upstream request of a gateway request:

- the body (`Relay.wire_body`, llmrelay's `wire_body` option, asked while the
  request is built, so it is built once): when the provider speaks the inbound
  protocol and nothing of the answer has reached the client yet, the client's
  own JSON goes upstream (model replaced, streaming forced), so fields llmrelay
  does not model still arrive; otherwise llmrelay's encoding (another protocol,
  or a fallback continuation);
- the bytes (`RelayTransport`, which wraps llmrelay's async transport and finds
  the request's `Relay` through a context variable): on a raw turn of a streaming request each complete SSE event is
  written to the client as soon as it is read, while llmrelay's decoder reads
  usage, errors and text from the same bytes. A chunk whose events made the
  decoder report an error is held back: the client then gets the gateway's
  continuation (fallback) or the protocol's error frame, never the provider's
  error followed by more text.

Every read is timed, so the gateway's own overhead is the wall time minus the
time spent waiting for the provider.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

__all__ = ["RelayTransport", "Relay", "CURRENT"]

CURRENT: contextvars.ContextVar[Relay | None] = contextvars.ContextVar("llmrelay_gateway_relay", default=None)
_perf = time.perf_counter
_FORWARD_HEADERS = ("anthropic-beta",)


class Relay:
    """One gateway request's view of its upstream requests."""

    __slots__ = ("protocol", "body", "streaming", "raw_ok", "raw_turn", "sent", "unrelayed", "stream", "write", "upstream_wait",
                 "upstream_requests", "headers", "content_seen", "encoder", "protocols", "raw_body")

    def __init__(self, protocol: str, body: dict[str, Any], streaming: bool, protocols: dict[str, str],
                 headers: dict[str, str] | None = None):
        self.protocol = protocol
        self.body = body
        self.streaming = streaming
        self.protocols = protocols  # provider name -> protocol
        self.raw_ok = True  # may the next upstream request carry the client's body / be relayed raw
        self.raw_turn = False  # is the current upstream response relayed raw
        self.sent = 0  # bytes of the answer written to the client
        self.unrelayed: list[Any] = []  # events decoded from bytes not (yet) written
        self.stream: Any = None
        self.write: Any = None  # async fn(bytes): write to the client (starts the response)
        self.upstream_wait = 0.0
        self.upstream_requests = 0
        self.headers = headers or {}
        self.content_seen = False
        self.encoder: Any = None
        self.raw_body: Any = None  # the body last given to llmrelay as the client's own

    def release(self) -> None:
        """Drop the references that make cycles (the stream's engine holds `wire_body`, a method of ours;
        `write` is the exchange's, which holds us), so a finished request is freed at once by reference
        counting instead of by the garbage collector (~70 objects a request, every young collection)."""
        self.stream = self.write = self.encoder = None
        self.unrelayed.clear()

    def wire_body(self, call: Any) -> dict[str, Any] | None:
        """llmrelay's `wire_body` hook: the client's body for this upstream request, or None
        (llmrelay encodes it: another protocol, or a continuation)."""
        if not self.raw_ok or self.content_seen or self.protocols.get(call.provider.name) != self.protocol:
            self.raw_body = None
            return None
        body = dict(self.body)
        body["model"] = call.model
        body["stream"] = True
        if self.protocol == "openai_chat":
            opts = body.get("stream_options")
            body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        self.raw_body = body
        return body

    def raw_request(self, req: Any) -> Any:
        """The request as built from the client's body (with the headers we forward), or None."""
        if self.raw_body is None or req.json is not self.raw_body:
            return None
        forward = [name for name in _FORWARD_HEADERS if name in self.headers]
        if forward:
            req = type(req)(req.method, req.url, {**req.wire_headers, **{n: self.headers[n] for n in forward}}, req.body, req.json)
        return req

    def translate(self) -> bytes:
        """Leave raw mode for good: the encoder writes from here on, starting with what was held back."""
        self.raw_ok = self.raw_turn = False
        enc = self.encoder
        out = b"".join(enc.encode(e) for e in self.unrelayed)
        self.unrelayed.clear()
        return out

    def observe_relayed(self) -> None:
        observe = self.encoder.observe
        for e in self.unrelayed:
            observe(e)
        self.unrelayed.clear()


class RelayTransport:
    """Wraps an async transport (`open`, `aclose`, `close`); see the module docstring."""

    def __init__(self, inner: Any):
        self.inner = inner

    async def open(self, req: Any, timeouts: Any, ctx: dict[str, Any]) -> Any:
        relay = CURRENT.get()
        if relay is None:
            return await self.inner.open(req, timeouts, ctx)
        raw = relay.raw_request(req)
        relay.upstream_requests += 1
        t0 = _perf()
        try:
            body = await self.inner.open(raw if raw is not None else req, timeouts, ctx)
        finally:
            relay.upstream_wait += _perf() - t0
        relay.raw_turn = raw is not None and relay.streaming
        return RelayBody(body, relay, relay.raw_turn)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class RelayBody:
    __slots__ = ("_inner", "_relay", "_raw", "status_code", "headers")

    def __init__(self, inner: Any, relay: Relay, raw: bool):
        self._inner = inner
        self._relay = relay
        self._raw = raw
        self.status_code = inner.status_code
        self.headers = inner.headers

    async def aiter_bytes(self) -> Any:
        relay = self._relay
        chunks = self._inner.aiter_bytes().__aiter__()
        anext = chunks.__anext__
        held = b""
        try:
            while True:
                t0 = _perf()
                try:
                    chunk = await anext()
                except StopAsyncIteration:
                    relay.upstream_wait += _perf() - t0
                    return
                relay.upstream_wait += _perf() - t0
                yield chunk  # llmrelay decodes it; the gateway sees its events before we go on
                if relay.stream._run._core.pending is not None:
                    return  # the provider reported an error: hold these bytes back, fail over now
                if not self._raw:
                    continue
                if not relay.raw_turn:
                    self._raw = False  # switched: the encoder writes from here on
                    continue
                data = held + chunk
                # Only whole events are relayed (0: none ends here): an error frame written after a
                # cut must not land in the middle of a half-sent event.
                lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
                end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
                if end:
                    held = data[end:]
                    relay.observe_relayed()
                    relay.sent += end
                    await relay.write(data[:end] if held else data)
                else:
                    held = data
        finally:
            await chunks.aclose()

    def failed(self, exc: BaseException) -> BaseException:
        """An error from reading the upstream body, as one of ours (see `Body.failed`)."""
        failed = getattr(self._inner, "failed", None)
        return failed(exc) if failed is not None else exc

    async def aclose(self) -> None:
        await self._inner.aclose()
