"""Tracing as hooks: OpenTelemetry spans and metrics (GenAI conventions). `RecordingHooks` (recording.py) keeps them in memory.

    from llmrelay.observability import OpenTelemetryHooks, RecordingHooks
    client = llmrelay.Client(hooks=[OpenTelemetryHooks()])    # pip install 'llmrelay[otel]'

`OpenTelemetryHooks` imports `opentelemetry` when it is built, never at
`import llmrelay`. Spans of one logical call (`stream()` / `complete()`):

- `chat {model}` (CLIENT): the whole call, including retries, fallbacks and tool
  rounds; the parent of the spans below (and a child of the span current when
  iteration started). Request attributes are those of the first request
  (`gen_ai.request.model` is the model first asked for); `gen_ai.response.*` are
  the final answer's (the model that answered after a fallback) and usage is
  summed over tool rounds. Retries and fallbacks are span events
  (`llmrelay.retry`, `llmrelay.fallback`) plus counts (`llmrelay.retry.count`,
  `llmrelay.fallback.count`). `gen_ai.response.time_to_first_chunk` here is the
  wall time from the call's start to its first content (backoff included).
- `chat {model}` (CLIENT), one per model request (turn): every attempt of a
  retry, every model of a fallback, every round of a tool loop, each with its
  own provider, `server.address`/`server.port`, usage, time to first chunk
  (`llmrelay.turn` numbers them from 1).
- `execute_tool {name}` (INTERNAL), one per tool result, timed from the tool's
  measured duration (it is created after the tool ran, so spans the tool makes
  itself are not its children).

Every span carries `gen_ai.conversation.id` (the caller's `tags["conversation_id"]`
if given, else the correlation id) and `llmrelay.correlation_id`, plus
`llmrelay.status` (ok, truncated, error, aborted); the call span also gets the
caller's scalar tags as `llmrelay.tag.<key>`. Errors set status ERROR and
`error.type` (the exception class name). A caller's early `close()` ends every
open span with `llmrelay.status="aborted"` and status UNSET (a choice, not a
failure; `aborted_is_error=True` makes it ERROR with `error.type="aborted"`).
Nothing is recorded per chunk. At most `max_open_calls` calls are tracked at
once (a stream never closed nor collected); the oldest beyond that is ended
with `llmrelay.status="abandoned"`.

Content (`gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions`, `gen_ai.tool.definitions`, tool arguments and
results) only with `capture_content=True`; inline image data is never copied.
API keys and headers are never read; known keys are masked in error texts.

Convention versions: by default the names of semantic conventions v1.36 where
they differ from the latest: `gen_ai.system` (e.g. "xai"). With
`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` (or
`latest_experimental=True`): `gen_ai.provider.name` (e.g. "x_ai") instead.
Attributes added after v1.36 that replace nothing (cache and reasoning usage,
time to first chunk, the content attributes) are emitted in both modes.

Metrics (per logical call, same attributes as the span): the histograms
`gen_ai.client.operation.duration` (s), `gen_ai.client.token.usage` (by
`gen_ai.token.type`: input, output; estimated usage is not recorded) and
`gen_ai.client.operation.time_to_first_chunk` (s).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .hooks import CallContext, Hooks
from .recording import _scrub

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: llmrelay provider -> `gen_ai.provider.name` (latest); other names pass through.
PROVIDER_NAMES = {
    "openai-responses": "openai", "gemini": "gcp.gemini", "cohere-v1": "cohere", "mistral": "mistral_ai", "xai": "x_ai",
}
#: llmrelay provider -> `gen_ai.system` (v1.36).
SYSTEM_NAMES = {"openai-responses": "openai", "gemini": "gcp.gemini", "cohere-v1": "cohere", "mistral": "mistral_ai"}
_USAGE = (
    ("input_tokens", "gen_ai.usage.input_tokens"), ("output_tokens", "gen_ai.usage.output_tokens"),
    ("cached_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("cache_write_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
)
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]
_TOKEN_BUCKETS = [4.0**i for i in range(14)]


def _first_model(requested: Any) -> str:
    if hasattr(requested, "models"):
        requested = requested.models
    if isinstance(requested, (list, tuple)) and requested:
        requested = requested[0]
    return str(requested).partition(":")[2] or str(requested) if requested is not None else ""


def _error_type(exc: BaseException | None) -> str:
    return type(exc).__qualname__ if exc is not None else "_OTHER"


def _part(p: Any) -> dict[str, Any]:
    t = getattr(p, "type", None)
    if t == "text":
        return {"type": "text", "content": p.text}
    if t == "reasoning":
        return {"type": "reasoning", "content": p.text}
    if t == "tool_call":
        return {"type": "tool_call", "id": p.id, "name": p.name,
                "arguments": p.arguments if p.arguments is not None else p.raw_arguments}
    if t == "image":  # never the inline data
        if p.url and not p.url.startswith("data:"):
            return {"type": "uri", "modality": "image", "uri": p.url}
        return {"type": "blob", "modality": "image", "mime_type": p.media_type}
    return {"type": str(t)}


def _messages_json(messages: Any) -> tuple[str, str | None]:
    """(gen_ai.input.messages, gen_ai.system_instructions) as JSON strings."""
    out, system = [], []
    for m in messages:
        if m.role == "system":
            system.extend(_part(p) for p in m.parts)
        elif m.role == "tool":
            out.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": m.tool_call_id, "response": m.text}]})
        else:
            out.append({"role": m.role, "parts": [_part(p) for p in m.parts]})
    return _dumps(out), (_dumps(system) if system else None)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


@dataclass(slots=True)
class _Call:
    span: Any
    context: Any
    t0: float
    turn: Any = None
    ttft: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # for metrics
    secrets: set = field(default_factory=set)
    retries: int = 0
    fallbacks: int = 0
    tools: dict[str, str] = field(default_factory=dict)  # tool name -> description
    arguments: dict[str, str] = field(default_factory=dict)  # call id -> arguments JSON


class OpenTelemetryHooks(Hooks):
    """OpenTelemetry spans (and metrics) for every call; see the module docstring."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None, capture_content: bool = False, *,
                 latest_experimental: bool | None = None, aborted_is_error: bool = False, max_open_calls: int = 10_000):
        from opentelemetry import metrics, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from importlib.metadata import PackageNotFoundError, version

        try:
            __version__ = version("llmrelay")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            __version__ = "0"

        self._trace, self._kind, self._Status, self._Code = trace, SpanKind, Status, StatusCode
        self._tracer = trace.get_tracer("llmrelay", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("llmrelay", __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram("gen_ai.client.operation.duration", "s", "GenAI operation duration",
                                                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self._tokens = meter.create_histogram("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used",
                                              explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self._ttft = meter.create_histogram("gen_ai.client.operation.time_to_first_chunk", "s",
                                            "Time to receive the first chunk of a streaming response",
                                            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        if latest_experimental is None:
            latest_experimental = "gen_ai_latest_experimental" in {
                v.strip() for v in os.environ.get(OPT_IN_ENV, "").split(",")}
        self.latest_experimental = latest_experimental
        self.capture_content = capture_content
        self.aborted_is_error = aborted_is_error
        self.max_open_calls = max_open_calls
        self._calls: collections.OrderedDict[str, _Call] = collections.OrderedDict()
        self._lock = threading.Lock()

    # -- attributes -----------------------------------------------------------
    def _provider_attr(self, provider: str) -> tuple[str, str]:
        if self.latest_experimental:
            return "gen_ai.provider.name", PROVIDER_NAMES.get(provider, provider)
        return "gen_ai.system", SYSTEM_NAMES.get(provider, provider)

    def _request_attrs(self, call: Any, request: Any) -> dict[str, Any]:
        key, value = self._provider_attr(call.provider.name)
        a: dict[str, Any] = {key: value, "gen_ai.request.model": call.model}
        p = call.params
        for name, attr in (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                           ("seed", "seed"), ("stop", "stop_sequences")):
            v = getattr(p, name)
            if v is not None:
                a["gen_ai.request." + attr] = list(v) if name == "stop" else v
        if p.n is not None and p.n != 1:
            a["gen_ai.request.choice.count"] = p.n
        try:
            url = urlsplit(request.url)
            if url.hostname:
                a["server.address"] = url.hostname
                a["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            pass
        return a

    def _response_attrs(self, r: Any) -> dict[str, Any]:
        a: dict[str, Any] = {"llmrelay.status": r.status}
        if r.id:
            a["gen_ai.response.id"] = r.id
        if r.model:
            a["gen_ai.response.model"] = r.model
        reasons = [c.finish_reason for c in r.choices if c.finish_reason]
        if reasons:
            a["gen_ai.response.finish_reasons"] = reasons
        for name, attr in _USAGE:
            v = getattr(r.usage, name)
            if v is not None:
                a[attr] = v
        if r.usage.estimated:
            a["llmrelay.usage.estimated"] = True
        if r.request_id:
            a["llmrelay.response.request_id"] = r.request_id
        return a

    def _output_json(self, r: Any) -> str:
        return _dumps([{"role": "assistant", "parts": [_part(p) for p in c.parts], "finish_reason": c.finish_reason or ""}
                       for c in r.choices])

    def _end(self, span: Any, status: str, error: BaseException | None, secrets: Any) -> None:
        """Status for an outcome, then end the span."""
        if error is not None or status == "error":
            span.set_attribute("error.type", _error_type(error))
            span.set_status(self._Status(self._Code.ERROR, _scrub(str(error), secrets)[:500] if error else status))
            if error is not None:
                span.add_event("exception", {"exception.type": _error_type(error),
                                             "exception.message": _scrub(str(error), secrets)[:2000]})
        elif status in ("aborted", "abandoned") and self.aborted_is_error:
            span.set_attribute("error.type", "aborted")
            span.set_status(self._Status(self._Code.ERROR, status))
        span.end()

    # -- the hooks ------------------------------------------------------------
    def _state(self, ctx: CallContext) -> _Call | None:
        """The open call, or None once it has ended (a late hook then records nothing)."""
        return self._calls.get(ctx.correlation_id)

    def on_call_start(self, ctx: CallContext) -> None:
        attrs = self._common(ctx, {"gen_ai.operation.name": "chat", "gen_ai.request.stream": ctx.stream})
        for k, v in ctx.tags.items():
            if isinstance(v, (str, bool, int, float)):
                attrs[f"llmrelay.tag.{k}"] = v
        span = self._tracer.start_span(f"chat {_first_model(ctx.requested)}".strip(), kind=self._kind.CLIENT, attributes=attrs)
        state = _Call(span, self._trace.set_span_in_context(span), time.perf_counter())
        state.attrs = {"gen_ai.operation.name": "chat"}
        with self._lock:
            self._calls[ctx.correlation_id] = state
            while len(self._calls) > self.max_open_calls:  # bounded: a stream never closed nor collected
                _, old = self._calls.popitem(last=False)
                for s in (old.turn, old.span):
                    if s is not None:
                        s.set_attribute("llmrelay.status", "abandoned")
                        self._end(s, "abandoned", None, ())

    def _common(self, ctx: CallContext, span_attrs: dict[str, Any]) -> dict[str, Any]:
        conversation = ctx.tags.get("conversation_id") or ctx.correlation_id
        return {"gen_ai.conversation.id": str(conversation), "llmrelay.correlation_id": ctx.correlation_id, **span_attrs}

    def on_turn_start(self, ctx: CallContext, call: Any, request: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        if call.api_key:
            state.secrets.add(call.api_key)
        attrs = self._request_attrs(call, request)
        if call.tools:
            state.tools.update({t.name: t.description for t in call.tools if getattr(t, "name", None)})
        if "gen_ai.request.model" not in state.attrs:  # the first request describes the call
            state.span.update_name(f"chat {call.model}")
            state.span.set_attributes(attrs)
            state.attrs.update({k: v for k, v in attrs.items() if k.startswith(("gen_ai.provider", "gen_ai.system", "server."))
                                or k == "gen_ai.request.model"})
            if self.capture_content:
                self._content_in(state.span, call, state.secrets, tools=True)
        turn_attrs = self._common(ctx, {"gen_ai.operation.name": "chat", "gen_ai.request.stream": ctx.stream,
                                        "llmrelay.turn": ctx.turns, **attrs})
        state.turn = self._tracer.start_span(f"chat {call.model}", context=state.context, kind=self._kind.CLIENT,
                                             attributes=turn_attrs)
        if self.capture_content:
            self._content_in(state.turn, call, state.secrets, tools=False)

    def _content_in(self, span: Any, call: Any, secrets: Any, tools: bool) -> None:
        messages, system = _messages_json(call.messages)
        span.set_attribute("gen_ai.input.messages", _scrub(messages, secrets))
        if system is not None:
            span.set_attribute("gen_ai.system_instructions", _scrub(system, secrets))
        if tools and call.tools:
            span.set_attribute("gen_ai.tool.definitions", _dumps([
                {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                for t in call.tools if hasattr(t, "parameters")]))

    def on_first_token(self, ctx: CallContext, call: Any, ttft: float) -> None:
        if (state := self._state(ctx)) is None:
            return
        if state.turn is not None:
            state.turn.set_attribute("gen_ai.response.time_to_first_chunk", ttft)
        if state.ttft is None:
            state.ttft = time.perf_counter() - state.t0
            state.span.set_attribute("gen_ai.response.time_to_first_chunk", state.ttft)

    def on_turn_end(self, ctx: CallContext, call: Any, response: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        span, state.turn = state.turn, None
        if span is None:
            return
        span.set_attributes(self._response_attrs(response))
        error = response.error
        if error is not None:
            code = getattr(error, "code", None)
            status_code = getattr(error, "status_code", None)
            if code is not None:
                span.set_attribute("llmrelay.error.code", str(code))
            if isinstance(status_code, int):
                span.set_attribute("http.response.status_code", status_code)
        if self.capture_content:
            state.arguments = {c.id: c.arguments_json for c in response.tool_calls if c.id}  # this round's only
        if self.capture_content and response.status != "error":
            span.set_attribute("gen_ai.output.messages", _scrub(self._output_json(response), state.secrets))
        self._end(span, response.status, error, state.secrets)

    def on_tool_result(self, ctx: CallContext, result: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        end = time.time_ns()
        attrs = self._common(ctx, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": result.name,
                                   "gen_ai.tool.type": "function"})
        if result.call_id:
            attrs["gen_ai.tool.call.id"] = result.call_id
        if state.tools.get(result.name):
            attrs["gen_ai.tool.description"] = state.tools[result.name]
        if self.capture_content:
            if result.call_id in state.arguments:
                attrs["gen_ai.tool.call.arguments"] = _scrub(state.arguments[result.call_id], state.secrets)
            attrs["gen_ai.tool.call.result"] = _scrub(result.content, state.secrets)
        span = self._tracer.start_span(f"execute_tool {result.name}", context=state.context, kind=self._kind.INTERNAL,
                                       attributes=attrs, start_time=end - int(result.duration * 1e9))
        if result.error is not None:
            span.set_attribute("error.type", "tool_error")
            span.set_status(self._Status(self._Code.ERROR, _scrub(result.error, state.secrets)[:500]))
        span.set_attribute("llmrelay.status", "error" if result.error is not None else "ok")
        span.end(end_time=end)

    def on_retry(self, ctx: CallContext, event: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        state.retries += 1
        state.span.add_event("llmrelay.retry", {
            "llmrelay.retry.attempt": event.attempt, "llmrelay.retry.delay": event.delay,
            "error.type": _error_type(event.error), "llmrelay.model": f"{event.provider or ''}:{event.model or ''}"})

    def on_fallback(self, ctx: CallContext, event: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        state.fallbacks += 1
        state.span.add_event("llmrelay.fallback", {
            "llmrelay.fallback.from": event.from_model, "llmrelay.fallback.to": event.to_model,
            "llmrelay.fallback.mode": event.mode, "error.type": _error_type(event.error)})

    def on_call_end(self, ctx: CallContext, response: Any, error: BaseException | None) -> None:
        with self._lock:
            state = self._calls.pop(ctx.correlation_id, None)
        if state is None:
            return
        elapsed = time.perf_counter() - state.t0
        span = state.span
        if state.turn is not None:  # an aborted async turn can end after its call: end it now
            state.turn.set_attributes(self._response_attrs(response) if response is not None else {})
            state.turn.set_attribute("llmrelay.status", "aborted")
            self._end(state.turn, "aborted", None, state.secrets)
            state.turn = None
        status = "error" if error is not None else (response.status if response is not None else "ok")
        if error is None and response is not None and status == "error":
            error = response.error
        if response is not None:
            span.set_attributes(self._response_attrs(response))
            if self.capture_content and status != "error":
                span.set_attribute("gen_ai.output.messages", _scrub(self._output_json(response), state.secrets))
        span.set_attributes({"llmrelay.status": status, "llmrelay.retry.count": state.retries,
                             "llmrelay.fallback.count": state.fallbacks, "llmrelay.turns": ctx.turns})
        self._end(span, status, error, state.secrets)
        # metrics, per logical call
        attrs = dict(state.attrs)
        if response is not None and response.model:
            attrs["gen_ai.response.model"] = response.model
        if error is not None:
            attrs["error.type"] = _error_type(error)
        self._duration.record(elapsed, attrs)
        if state.ttft is not None:
            self._ttft.record(state.ttft, attrs)
        if response is not None and not response.usage.estimated:
            for kind, value in (("input", response.usage.input_tokens), ("output", response.usage.output_tokens)):
                if value is not None:
                    self._tokens.record(value, {**attrs, "gen_ai.token.type": kind})


from .recording import HookRecord, RecordingHooks  # noqa: E402  (importable from here too)

__all__ = ["OpenTelemetryHooks", "RecordingHooks", "HookRecord", "OPT_IN_ENV"]
