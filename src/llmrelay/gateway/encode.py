"""What the three outbound encoders share: SSE framing, quiet observation, errors and usage in each shape.

An encoder turns llmrelay's typed events into one inbound protocol's stream
(`encode(event) -> bytes`), its closing frames (`end()`), its in-stream error
frame (`error(exc)`) and its non-streaming body (`body(response)`).

`observe(event)` runs the same state machine without writing anything: on the
fast path the client already got the provider's own bytes for those events,
and the encoder only needs to know where the stream stands (open content
block, tool indexes, ids) in case a fallback makes the gateway continue the
stream itself.
"""

from __future__ import annotations

import json
import time
from random import getrandbits
from typing import Any

from ..errors import (
    AllModelsFailedError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidRequestError,
    LLMRelayError,
    ProviderStreamError,
    UnknownProviderError,
)
from .. import events as ev
from ..usage import Usage

__all__ = ["Encoder", "GatewayError", "status_of", "chat_usage", "anthropic_usage", "responses_usage", "new_id", "dumps"]



def _compact_encoder() -> Any:
    """`json.dumps(obj, ensure_ascii=False, separators=(",", ":"))` as one C encoder built once: the
    stdlib's `encode` builds a new one (and a closure) for every call, a third of the cost of a small
    body. Without the circular-reference check: what the gateway encodes is its own dicts of values
    decoded from JSON, which cannot hold a cycle."""
    std = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another interpreter): the stdlib's own path
        return std.encode
    encode = make(None, std.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


#: Compact JSON text (see `_compact_encoder`).
dumps = _compact_encoder()


def new_id(prefix: str) -> str:
    """96 random bits: unique, not secret. `random` (reseeded in forked workers), not a system call per id."""
    return prefix + "%024x" % getrandbits(96)


class GatewayError(Exception):
    """An error the gateway itself answers (auth, limits, unknown model, bad body)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


_KIND = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         408: "timeout_error", 413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
         500: "api_error", 502: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def status_of(exc: BaseException) -> tuple[int, str, str, dict[str, str]]:
    """(HTTP status, error kind, message, headers) for any error a request can end with."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.kind, exc.message, exc.headers
    if isinstance(exc, AllModelsFailedError) and exc.exceptions:
        status, kind, message, headers = status_of(exc.exceptions[-1])
        return status, kind, message, headers
    headers: dict[str, str] = {}
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, APIStatusError):
        status = exc.status_code
        if exc.retry_after is not None:
            headers["retry-after"] = str(max(0, int(exc.retry_after + 0.999)))
        body = exc.body
        if isinstance(body, dict):  # the provider's own message, not our wrapper's
            err = body.get("error")
            inner = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else body.get("message")
            if isinstance(inner, str) and inner:
                message = inner
    elif isinstance(exc, APITimeoutError):
        status = 504
    elif isinstance(exc, APIConnectionError):
        status = 502
    elif isinstance(exc, ProviderStreamError):
        status = exc.status_code if isinstance(getattr(exc, "status_code", None), int) else 502
    elif isinstance(exc, (InvalidRequestError, UnknownProviderError)):
        status = 400
    elif isinstance(exc, LLMRelayError):
        status = 500
    else:
        status, message = 500, "internal gateway error"
    return status, _KIND.get(status, "api_error" if status >= 500 else "invalid_request_error"), message, headers


def chat_usage(u: Usage) -> dict[str, Any]:
    inp, out = u.input_tokens or 0, u.output_tokens or 0
    return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens or 0},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0}}


def anthropic_usage(u: Usage) -> dict[str, Any]:
    """Anthropic counts cache reads and writes apart from input_tokens; llmrelay counts them inside."""
    cached, written = u.cached_input_tokens or 0, u.cache_write_tokens or 0
    return {"input_tokens": max(0, (u.input_tokens or 0) - cached - written),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached,
            "output_tokens": u.output_tokens or 0}


def responses_usage(u: Usage) -> dict[str, Any]:
    inp, out = u.input_tokens or 0, u.output_tokens or 0
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": u.cached_input_tokens or 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0},
            "total_tokens": inp + out}


class Encoder:
    """Base: `_sse` writes one frame unless observing quietly."""

    protocol = ""
    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, model: str, include_usage: bool = False):
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.usage = Usage()
        self.quiet = False
        self.ended = False

    def _sse(self, obj: Any, event: str | None = None) -> bytes:
        if self.quiet:
            return b""
        data = dumps(obj).encode()
        if event is None:
            return b"data: " + data + b"\n\n"
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"

    def observe(self, e: Any) -> None:
        self.quiet = True
        try:
            self.encode(e)
        finally:
            self.quiet = False

    def encode(self, e: Any) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    #: A provider's response id is kept when it has this prefix (the protocol's own id shape).
    id_prefix = ""

    def _meta(self, e: Any) -> bytes:
        """Usage and the stream's start (model, id) update state and write nothing."""
        t = type(e)
        if t is ev.UsageEvent:
            self.usage.merge(e.usage)
        elif t is ev.StreamStart and not self.started:  # type: ignore[attr-defined]
            if e.model:
                self.model = e.model
            if e.id and e.id.startswith(self.id_prefix):
                self.id = e.id
        return b""

    def end(self) -> bytes:
        """The closing frames, once."""
        if self.ended:
            return b""
        self.ended = True
        return self._end()

    def _end(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def error(self, exc: BaseException) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def body(self, response: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def error_body(status: int, kind: str, message: str) -> dict[str, Any]:
        """The OpenAI error shape (Chat and Responses); Anthropic overrides it."""
        return {"error": {"message": message, "type": kind, "param": None, "code": _code(status, kind)}}


def _code(status: int, kind: str) -> str | None:
    return {429: "rate_limit_exceeded", 401: "invalid_api_key", 404: "model_not_found"}.get(status, None)
