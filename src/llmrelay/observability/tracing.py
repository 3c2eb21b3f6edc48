"""Tracing as hooks: OpenTelemetry spans and metrics (GenAI conventions). `RecordingHooks` (recording.py) keeps them in memory.

    from llmrelay.observability import OpenTelemetryHooks, RecordingHooks
    client = llmrelay.Client(hooks=[OpenTelemetryHooks()])    # pip install 'llmrelay[otel]'

`OpenTelemetryHooks` imports `opentelemetry` when it is built, never at
`import llmrelay`. Spans of one logical call (`stream()` / `complete()`):

- `llmrelay.call {model}` (INTERNAL): the whole call, including retries,
  fallbacks and tool rounds; the parent of the spans below (and a child of the
  span current when iteration started). It is not an inference span: it carries
  no `gen_ai.operation.name` and no `gen_ai.usage.*` (a backend that sums usage
  over spans counts each request once). Its totals over every request it made
  (failed attempts included) are `llmrelay.call.usage.*` and
  `llmrelay.call.cost.usd`; `llmrelay.request.model` (the model first asked
  for), `llmrelay.response.model` and `llmrelay.provider` (who answered),
  `llmrelay.call.time_to_first_chunk` (wall time from the call's start to its
  first content, backoff included) and `llmrelay.call.time_to_first_text`.
  Retries and fallbacks are span events (`llmrelay.retry`, `llmrelay.fallback`)
  plus counts (`llmrelay.retry.count`, `llmrelay.fallback.count`).
- `chat {model}` (CLIENT), the GenAI inference span, one per HTTP request
  (turn): every attempt of a retry, every model of a fallback, every round of a
  tool loop, each with its provider, request parameters (reasoning:
  `gen_ai.request.reasoning.level` from `reasoning_effort`,
  `llmrelay.request.thinking_budget`), `server.address`/`server.port`,
  `gen_ai.request.stream` (true: every llmrelay request streams on the wire,
  `complete()` included), usage (`gen_ai.usage.*`), finish reasons,
  `gen_ai.response.time_to_first_chunk`, `llmrelay.response.time_to_first_text`,
  `llmrelay.response.time_per_output_chunk` and its cost (`llmrelay.cost.usd`,
  when a price is known); `llmrelay.turn` numbers them from 1.
- `execute_tool {name}` (INTERNAL), one per tool result, timed from the tool's
  measured duration (it is created after the tool ran, so spans the tool makes
  itself are not its children).

`gen_ai.conversation.id` is set only from the caller's `conversation_id=`
(never a generated id); every span carries `llmrelay.correlation_id` (the
caller's `correlation_id=` or a generated one) and `llmrelay.status` (ok,
truncated, error, aborted); the call span also gets the caller's scalar tags as
`llmrelay.tag.<key>`. Errors set status ERROR and `error.type` (the exception
class name). A caller's early `close()` ends every open span with
`llmrelay.status="aborted"` and status UNSET (a choice, not a failure;
`aborted_is_error=True` makes it ERROR with `error.type="aborted"`). Nothing is
recorded per chunk. At most `max_open_calls` calls are tracked at once (a
stream never closed nor collected); the oldest beyond that is ended with
`llmrelay.status="abandoned"`.

Content (`gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions`, `gen_ai.tool.definitions`, tool arguments and
results) only with `capture_content=True`, on the inference and tool spans;
inline image data is never copied. API keys and headers are never read; known
keys are masked in error texts.

Convention versions: by default the names of semantic conventions v1.36 where
they differ from the latest: `gen_ai.system` (e.g. "xai"). With
`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` (or
`latest_experimental=True`): `gen_ai.provider.name` (e.g. "x_ai") instead.
Attributes added after v1.36 that replace nothing (cache and reasoning usage,
time to first chunk, reasoning level, the content attributes) are emitted in
both modes.

Metrics, one data point per model request (the inference span's attributes:
operation, provider, request and response model, server, `error.type`):
`gen_ai.client.operation.duration` (s), `gen_ai.client.token.usage` (by
`gen_ai.token.type`: input, output; estimated usage is not recorded),
`gen_ai.client.operation.time_to_first_chunk` (s),
`gen_ai.client.operation.time_per_output_chunk` (s; the request's mean time
between chunks after the first, one value per request: recording every chunk
would put work on the per-chunk path) and `llmrelay.client.cost` (USD, when a
price is known).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .genai import (
    CALL_USAGE, OPT_IN_ENV, USAGE, cost_of, error_type, first_model, messages_json, output_json, request_attrs,
    response_attrs, tool_definitions, wire_streams,
)
from .hooks import CallContext, Hooks
from .recording import _scrub

_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]
_TOKEN_BUCKETS = [4.0**i for i in range(14)]
_TTFC_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
_TPOC_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
_COST_BUCKETS = [1e-6 * 4**i for i in range(14)]
#: Request attributes the metrics keep (low cardinality).
_METRIC_KEYS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model",
                "server.address", "server.port")


@dataclass(slots=True)
class _Call:
    span: Any
    context: Any
    t0: float
    turn: Any = None
    t_turn: float = 0.0
    turn_attrs: dict[str, Any] = field(default_factory=dict)  # the current turn's metric attributes
    ttft: float | None = None
    secrets: set = field(default_factory=set)
    retries: int = 0
    fallbacks: int = 0
    usage: dict[str, int] = field(default_factory=dict)  # summed over every request
    cost: float | None = None
    first_model: str | None = None
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
                                            explicit_bucket_boundaries_advisory=_TTFC_BUCKETS)
        self._tpoc = meter.create_histogram("gen_ai.client.operation.time_per_output_chunk", "s",
                                            "Mean time per output chunk after the first, one value per request",
                                            explicit_bucket_boundaries_advisory=_TPOC_BUCKETS)
        self._cost = meter.create_histogram("llmrelay.client.cost", "USD", "Cost of a model request",
                                            explicit_bucket_boundaries_advisory=_COST_BUCKETS)
        if latest_experimental is None:
            latest_experimental = "gen_ai_latest_experimental" in {
                v.strip() for v in os.environ.get(OPT_IN_ENV, "").split(",")}
        self.latest_experimental = latest_experimental
        self.capture_content = capture_content
        self.aborted_is_error = aborted_is_error
        self.max_open_calls = max_open_calls
        self._calls: collections.OrderedDict[str, _Call] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _end(self, span: Any, status: str, error: BaseException | None, secrets: Any) -> None:
        """Status for an outcome, then end the span."""
        if error is not None or status == "error":
            span.set_attribute("error.type", error_type(error))
            span.set_status(self._Status(self._Code.ERROR, _scrub(str(error), secrets)[:500] if error else status))
            if error is not None:
                span.add_event("exception", {"exception.type": error_type(error),
                                             "exception.message": _scrub(str(error), secrets)[:2000]})
        elif status in ("aborted", "abandoned") and self.aborted_is_error:
            span.set_attribute("error.type", "aborted")
            span.set_status(self._Status(self._Code.ERROR, status))
        span.end()

    # -- the hooks ------------------------------------------------------------
    def _state(self, ctx: CallContext) -> _Call | None:
        """The open call, or None once it has ended (a late hook then records nothing)."""
        return self._calls.get(ctx.correlation_id)

    @staticmethod
    def _common(ctx: CallContext, span_attrs: dict[str, Any]) -> dict[str, Any]:
        out = {"llmrelay.correlation_id": ctx.correlation_id, **span_attrs}
        if ctx.conversation_id is not None:  # only the caller's: never a generated id
            out["gen_ai.conversation.id"] = ctx.conversation_id
        return out

    def on_call_start(self, ctx: CallContext) -> None:
        model = first_model(ctx.requested)
        attrs = self._common(ctx, {"llmrelay.stream": ctx.stream, "llmrelay.request.model": model})
        for k, v in ctx.tags.items():
            if isinstance(v, (str, bool, int, float)):
                attrs[f"llmrelay.tag.{k}"] = v
        span = self._tracer.start_span(f"llmrelay.call {model}".strip(), kind=self._kind.INTERNAL, attributes=attrs)
        state = _Call(span, self._trace.set_span_in_context(span), time.perf_counter())
        with self._lock:
            self._calls[ctx.correlation_id] = state
            while len(self._calls) > self.max_open_calls:  # bounded: a stream never closed nor collected
                _, old = self._calls.popitem(last=False)
                for s in (old.turn, old.span):
                    if s is not None:
                        s.set_attribute("llmrelay.status", "abandoned")
                        self._end(s, "abandoned", None, ())

    def on_turn_start(self, ctx: CallContext, call: Any, request: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        if call.api_key:
            state.secrets.add(call.api_key)
        attrs = request_attrs(call, request, self.latest_experimental)
        if call.tools:
            state.tools.update({t.name: t.description for t in call.tools if getattr(t, "name", None)})
        if state.first_model is None:  # the first request names the call
            state.first_model = call.model
            state.span.update_name(f"llmrelay.call {call.model}")
            state.span.set_attribute("llmrelay.request.model", call.model)
        state.turn_attrs = {k: attrs[k] for k in _METRIC_KEYS if k in attrs}
        turn_attrs = self._common(ctx, {**attrs, "gen_ai.request.stream": wire_streams(request), "llmrelay.turn": ctx.turns})
        state.t_turn = time.perf_counter()
        state.turn = self._tracer.start_span(f"chat {call.model}", context=state.context, kind=self._kind.CLIENT,
                                             attributes=turn_attrs)
        if self.capture_content:
            messages, system = messages_json(call.messages)
            state.turn.set_attribute("gen_ai.input.messages", _scrub(messages, state.secrets))
            if system is not None:
                state.turn.set_attribute("gen_ai.system_instructions", _scrub(system, state.secrets))
            if call.tools:
                state.turn.set_attribute("gen_ai.tool.definitions", tool_definitions(call.tools))

    def on_first_token(self, ctx: CallContext, call: Any, ttft: float) -> None:
        if (state := self._state(ctx)) is not None and state.ttft is None:
            state.ttft = time.perf_counter() - state.t0
            state.span.set_attribute("llmrelay.call.time_to_first_chunk", state.ttft)

    def on_turn_end(self, ctx: CallContext, call: Any, response: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        span, state.turn = state.turn, None
        if span is None:
            return
        elapsed = time.perf_counter() - state.t_turn
        attrs = response_attrs(response)
        span.set_attributes(attrs)
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
            span.set_attribute("gen_ai.output.messages", _scrub(output_json(response), state.secrets))
        self._end(span, response.status, error, state.secrets)
        self._account(state, response)
        self._record(state.turn_attrs, response, elapsed, attrs.get("llmrelay.cost.usd"))

    def _account(self, state: _Call, response: Any) -> None:
        """The call's totals over every request (its span's llmrelay.call.usage.*, llmrelay.call.cost.usd)."""
        for name, _ in USAGE:
            v = getattr(response.usage, name)
            if v is not None:
                state.usage[name] = state.usage.get(name, 0) + v
        cost = cost_of(response)
        if cost is not None:
            state.cost = (state.cost or 0.0) + cost.total

    def _record(self, base: dict[str, Any], response: Any, elapsed: float, cost: float | None) -> None:
        """The request's metrics: one data point each."""
        attrs = dict(base)
        if response.model:
            attrs["gen_ai.response.model"] = response.model
        if response.status == "error":
            attrs["error.type"] = error_type(response.error)
        self._duration.record(elapsed, attrs)
        t = response.timings
        if t.time_to_first_token is not None:
            self._ttft.record(t.time_to_first_token, attrs)
        if t.time_per_output_chunk is not None:
            self._tpoc.record(t.time_per_output_chunk, attrs)
        if not response.usage.estimated:
            for kind, value in (("input", response.usage.input_tokens), ("output", response.usage.output_tokens)):
                if value is not None:
                    self._tokens.record(value, {**attrs, "gen_ai.token.type": kind})
        if cost is not None:
            self._cost.record(cost, attrs)

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
            "error.type": error_type(event.error), "llmrelay.model": f"{event.provider or ''}:{event.model or ''}"})

    def on_fallback(self, ctx: CallContext, event: Any) -> None:
        if (state := self._state(ctx)) is None:
            return
        state.fallbacks += 1
        state.span.add_event("llmrelay.fallback", {
            "llmrelay.fallback.from": event.from_model, "llmrelay.fallback.to": event.to_model,
            "llmrelay.fallback.mode": event.mode, "error.type": error_type(event.error)})

    def on_call_end(self, ctx: CallContext, response: Any, error: BaseException | None) -> None:
        with self._lock:
            state = self._calls.pop(ctx.correlation_id, None)
        if state is None:
            return
        span = state.span
        if state.turn is not None:  # an aborted async turn can end after its call: end it now
            state.turn.set_attributes(response_attrs(response) if response is not None else {})
            state.turn.set_attribute("llmrelay.status", "aborted")
            self._end(state.turn, "aborted", None, state.secrets)
            if response is not None:
                self._account(state, response)
            state.turn = None
        status = "error" if error is not None else (response.status if response is not None else "ok")
        if error is None and response is not None and status == "error":
            error = response.error
        attrs: dict[str, Any] = {"llmrelay.status": status, "llmrelay.retry.count": state.retries,
                                 "llmrelay.fallback.count": state.fallbacks, "llmrelay.turns": ctx.turns}
        if response is not None:
            if response.model:
                attrs["llmrelay.response.model"] = response.model
            if response.provider:
                attrs["llmrelay.provider"] = response.provider
            if response.timings.time_to_first_text is not None:
                attrs["llmrelay.call.time_to_first_text"] = response.timings.time_to_first_text
        attrs.update({attr: state.usage[name] for name, attr in CALL_USAGE if name in state.usage})
        if state.cost is not None:
            attrs["llmrelay.call.cost.usd"] = state.cost
        span.set_attributes(attrs)
        self._end(span, status, error, state.secrets)


from .recording import HookRecord, RecordingHooks  # noqa: E402  (importable from here too)

__all__ = ["OpenTelemetryHooks", "RecordingHooks", "HookRecord", "OPT_IN_ENV"]
