"""Scripted provider failures for the replay server: test how your application survives them.

Each helper returns a `Reply` to `enqueue` on a `ReplayServer`; every request
takes the next reply, so a script reads as the story of the calls:

    import llmrelay
    from llmrelay.testing import ReplayServer, client_for, faults

    with ReplayServer() as server:
        server.enqueue(
            faults.status(429, retry_after=0.1),                       # rate limited
            faults.cut("openai_chat/text_usage_chunk.sse", after=4),   # cut mid-answer
            faults.ok("anthropic/text_basic.sse"),                     # the fallback answers
        )
        client = client_for(server, retry=llmrelay.Retry(1, initial_delay=0.01))
        response = client.complete(["openai:gpt-4o", "anthropic:claude-sonnet-4-5"], "Hi")
        print(response.text, response.resumed, [a.model for a in response.attempts])
        # ... True ['openai:gpt-4o', 'openai:gpt-4o', 'anthropic:claude-sonnet-4-5']
        print(len(server.requests))   # 3: the 429, its retry (cut), the fallback

The faults:

- `status(code, message, retry_after=…, protocol=…)`: an HTTP error with the
  provider's own error body and a `Retry-After` header (seconds, or a
  `datetime` sent as an HTTP date).
- `reset()`: the connection is reset before any response header.
- `cut(recording, after=N)`: N events of the recording, then the connection
  drops without ending the body.
- `stall(recording, after=N, seconds=S, keepalive=0)`: N events, a silence of
  S seconds (or only keep-alive pings every `keepalive` seconds), then the
  rest: trips `Timeouts(idle=…)`, or `first_token=…` before content.
- `error_event(protocol, recording, after=N)`: N events, then an error
  *inside* the 200 stream, in that protocol's own format (OpenAI Chat
  `data: {"error": …}` or Groq-style `event: error`, Anthropic `event: error`
  with an `overloaded_error`, Gemini a chunk with a top-level `error`, Ollama an
  `{"error": …}` line, OpenAI Responses `response.failed` or `error`, Cohere a
  `message-end` with finish reason ERROR).
- `malformed(recording, after=N)`: N events, then a chunk that is not JSON.
- `drip(recording, delay=S)`: the whole recording, one event every S seconds.
- `ok(recording)`: the recording, one piece per event (a healthy reply).

`recording` is a bundled recording name (see `llmrelay.testing.recordings`),
raw body bytes, or a `Reply` (which keeps its own chunking: `cut` and `stall`
then count its pieces). "Events" are SSE events, or lines for NDJSON bodies;
the fault replies send one per piece, and `events(recording)` lists them, so
you can count where content starts. Every helper takes extra `Reply` fields as
keywords (`delay=`, `headers=`...). `error_chunk(protocol)` and
`error_body(protocol, status)` give the raw bytes / JSON to build your own.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import json
from dataclasses import replace
from typing import Any

from ..wire.eventstream import encode_message, split_messages
from .recordings import content_type_for, read_recording
from .server import Reply

__all__ = ["status", "reset", "cut", "stall", "error_event", "malformed", "drip", "ok", "events", "error_chunk",
           "error_body", "PROTOCOLS"]

#: The protocols `error_event` and `status` know the formats of.
PROTOCOLS = ("openai_chat", "openai_responses", "anthropic", "gemini", "ollama", "cohere", "cohere_v1")

_NDJSON = frozenset({"ollama", "cohere_v1"})
#: HTTP status -> the Bedrock in-band exception that stands for it.
_BEDROCK_EXCEPTIONS = {400: "validationException", 408: "modelTimeoutException", 424: "modelStreamErrorException",
                       429: "throttlingException", 500: "internalServerException", 503: "serviceUnavailableException"}

_MESSAGES = {
    400: "Bad request",
    401: "Invalid API key",
    403: "Permission denied",
    404: "Model not found",
    408: "Request timeout",
    409: "Conflict",
    422: "Unprocessable entity",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
    529: "Overloaded",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 429: "requests"}


def _protocol(name: str) -> str:
    """A protocol name, or a provider name ("groq", "openrouter"...) resolved to its protocol."""
    if name in PROTOCOLS:
        return name
    from ..providers import PROVIDERS

    provider = PROVIDERS.get(name)
    if provider is None:
        raise ValueError(f"unknown protocol or provider {name!r}; protocols: {', '.join(PROTOCOLS)}")
    return provider.protocol


def _reply(source: Any, **kw: Any) -> Reply:
    """A `Reply` from a recording name, body bytes or a `Reply` (kept as it is but for `kw`);
    one piece per event unless told."""
    if isinstance(source, Reply):
        return replace(source, **kw)
    kw.setdefault("chunking", "events")
    if isinstance(source, (bytes, bytearray)):
        headers = kw.pop("headers", {})
        headers.setdefault("content-type", _content_type(bytes(source)))
        return Reply(bytes(source), headers=headers, **kw)
    if isinstance(source, str):
        return Reply.recording(source, **kw)
    raise TypeError(f"expected a recording name, bytes or a Reply; got {type(source).__name__}")


def _is_eventstream(body: bytes) -> bool:
    return body[:1] == b"\0" and split_messages(body) is not None


def _is_sse(body: bytes) -> bool:
    return b"\n\n" in body or b"\r\n\r\n" in body or body.startswith((b"data:", b"event:", b":"))


def _body(source: Any) -> bytes:
    if isinstance(source, Reply):
        return source.body
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    return read_recording(source)


def events(source: Any) -> list[bytes]:
    """The events of a body (SSE events, AWS event-stream messages, or NDJSON / JSON lines),
    as the "events" chunking sends them."""
    body = _body(source)
    if _is_eventstream(body):
        return split_messages(body) or [body]
    return Reply(body, chunking="events").pieces()


def ok(source: Any, **kw: Any) -> Reply:
    """A healthy reply: the recording, one piece per event."""
    return _reply(source, **kw)


def drip(source: Any, delay: float = 0.05, **kw: Any) -> Reply:
    """A slow but healthy stream: one event every `delay` seconds."""
    return _reply(source, delay=delay, **kw)


def cut(source: Any, after: int, **kw: Any) -> Reply:
    """`after` events of the recording, then the connection closes without ending the body."""
    return _reply(source, cut_after=after, **kw)


def stall(source: Any, after: int, seconds: float, *, keepalive: float = 0.0, **kw: Any) -> Reply:
    """`after` events, then `seconds` of silence, then the rest of the recording.

    `keepalive`: during the stall, a keep-alive every that many seconds (an SSE
    comment, or a blank NDJSON line): the connection looks alive, no token comes
    (what `Timeouts(first_token=…)` catches and `idle` cannot)."""
    if keepalive:
        body = _body(source)
        if _is_eventstream(body):  # no keep-alive in AWS event streams: an event that carries no content
            ping = encode_message({":event-type": "keepAlive", ":content-type": "application/json", ":message-type": "event"}, b"{}")
            kw.setdefault("keepalive_bytes", ping)
        kw.setdefault("keepalive_bytes", b": keep-alive\n\n" if _is_sse(body) else b"\n")
    return _reply(source, stall_after=after, stall=seconds, keepalive=keepalive, **kw)


def reset(**kw: Any) -> Reply:
    """The server reads the request and resets the connection before any header."""
    return Reply(reset=True, **kw)


def _retry_after_header(value: Any) -> str:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return email.utils.format_datetime(value.astimezone(_dt.timezone.utc), usegmt=True)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def error_body(protocol: str, code: int, message: str | None = None) -> Any:
    """The JSON body a provider of `protocol` sends with HTTP status `code`."""
    protocol = _protocol(protocol)
    message = message or _MESSAGES.get(code, f"HTTP {code}")
    if protocol == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(code, "api_error"), "message": message}}
    if protocol == "gemini":
        status = _GOOGLE_STATUS.get(code, "UNAVAILABLE" if code >= 500 else "UNKNOWN")
        return {"error": {"code": code, "message": message, "status": status}}
    if protocol == "ollama":
        return {"error": message}
    if protocol in ("cohere", "cohere_v1", "bedrock", "bedrock_invoke"):
        return {"message": message}
    kind = _OPENAI_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None,
                      "code": "rate_limit_exceeded" if code == 429 else None}}


def status(
    code: int,
    message: str | None = None,
    *,
    retry_after: Any = None,
    retry_after_ms: float | None = None,
    protocol: str = "openai_chat",
    body: Any = None,
    **kw: Any,
) -> Reply:
    """HTTP `code` with the provider's error body (or `body`: bytes, str or a JSON object).

    `retry_after`: seconds (int/float), a `datetime` (sent as an HTTP date) or a
    header string sent verbatim; `retry_after_ms`: the `retry-after-ms` header."""
    headers = dict(kw.pop("headers", {}))
    if retry_after is not None:
        headers["retry-after"] = _retry_after_header(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = repr(float(retry_after_ms))
    if body is None:
        body = error_body(protocol, code, message)
    if isinstance(body, (bytes, bytearray)):
        raw = bytes(body)
    elif isinstance(body, str):
        raw = body.encode()
        headers.setdefault("content-type", "text/plain")
    else:
        raw = json.dumps(body).encode()
    headers.setdefault("content-type", "application/json")
    kw.setdefault("chunking", "whole")
    return Reply(raw, status=code, headers=headers, **kw)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def error_chunk(protocol: str, message: str = "Overloaded", *, status: int = 529, code: Any = None,
                style: str | None = None) -> bytes:
    """One in-band error, as `protocol` sends it inside a 200 stream.

    `style` picks a variant: OpenAI Chat "data" (default: a `data:` chunk with
    `error`) or "event" (Groq's `event: error`); OpenAI Responses "failed"
    (default: `response.failed`) or "error" (an `error` event)."""
    protocol = _protocol(protocol)
    if protocol == "openai_chat":
        err = {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
               "code": code if code is not None else status}
        if style == "event":
            return _sse({"error": err}, event="error")
        return _sse({"error": err})
    if protocol == "anthropic":
        kind = code or _ANTHROPIC_TYPES.get(status, "api_error")
        return _sse({"type": "error", "error": {"type": kind, "message": message}}, event="error")
    if protocol == "gemini":
        return _sse({"error": {"code": status, "message": message,
                               "status": code or _GOOGLE_STATUS.get(status, "UNAVAILABLE")}})
    if protocol == "ollama":
        return (json.dumps({"error": message}) + "\n").encode()
    if protocol == "openai_responses":
        err = {"code": code or ("server_error" if status >= 500 else "invalid_request"), "message": message}
        if style == "error":
            return _sse({"type": "error", **err, "param": None}, event="error")
        return _sse({"type": "response.failed",
                     "response": {"id": "resp_fault", "object": "response", "status": "failed", "error": err,
                                  "output": [], "usage": None}}, event="response.failed")
    if protocol == "cohere":
        return _sse({"type": "message-end", "delta": {"finish_reason": code or "ERROR", "error": message}},
                    event="message-end")
    if protocol == "cohere_v1":  # v1 has no error event: a stream-end with finish_reason ERROR
        return (json.dumps({"is_finished": True, "event_type": "stream-end", "finish_reason": code or "ERROR",
                            "response": {"text": "", "finish_reason": code or "ERROR"}}) + "\n").encode()
    if protocol in ("bedrock", "bedrock_invoke"):  # an exception message of the AWS event stream
        kind = code or _BEDROCK_EXCEPTIONS.get(status, "internalServerException")
        return encode_message({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                              json.dumps({"message": message}).encode())
    raise ValueError(f"no in-band error format for protocol {protocol!r}")  # pragma: no cover


def error_event(
    protocol: str,
    recording: Any = None,
    *,
    after: int = 0,
    message: str = "Overloaded",
    status: int = 529,
    code: Any = None,
    style: str | None = None,
    **kw: Any,
) -> Reply:
    """A 200 stream: the first `after` events of `recording` (none without one), then an
    in-band error in `protocol`'s own format (see `error_chunk`)."""
    proto = _protocol(protocol)
    body = (b"".join(events(recording)[:after]) if recording is not None else b"") + error_chunk(
        proto, message, status=status, code=code, style=style)
    if isinstance(recording, Reply):
        return _reply(recording, body=body, **kw)
    headers = kw.pop("headers", {})
    headers.setdefault("content-type", content_type_for(recording) if isinstance(recording, str) else _content_type(body, proto))
    return _reply(body, headers=headers, **kw)


def _content_type(body: bytes, protocol: str | None = None) -> str:
    if protocol in ("bedrock", "bedrock_invoke") or _is_eventstream(body):
        return "application/vnd.amazon.eventstream"
    if protocol in _NDJSON:
        return "application/x-ndjson"
    return "text/event-stream" if _is_sse(body) else "application/x-ndjson"


def malformed(source: Any, after: int = 0, *, garbage: bytes | None = None, **kw: Any) -> Reply:
    """The first `after` events, then a chunk that is not JSON (`garbage`), then the rest."""
    parts = events(source)
    if garbage is None:
        body = _body(source)
        if _is_eventstream(body):  # a message whose CRC does not check out
            bad = bytearray(encode_message({":event-type": "contentBlockDelta", ":message-type": "event"}, b"{}"))
            bad[-1] ^= 0xFF
            garbage = bytes(bad)
        else:
            garbage = b"data: {not json\n\n" if _is_sse(body) else b"{not json\n"
    body = b"".join(parts[:after]) + garbage + b"".join(parts[after:])
    if isinstance(source, Reply):
        return _reply(source, body=body, **kw)
    headers = kw.pop("headers", {})
    headers.setdefault("content-type", content_type_for(source) if isinstance(source, str) else _content_type(body))
    return _reply(body, headers=headers, **kw)
