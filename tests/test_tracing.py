"""Tracing hooks: OpenTelemetry spans/metrics (GenAI conventions) with the SDK's in-memory exporter, and RecordingHooks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import llmrelay  # noqa: E402
from llmrelay.testing import Reply, client_for, read_recording  # noqa: E402
from llmrelay.observability.tracing import OPT_IN_ENV, OpenTelemetryHooks, RecordingHooks  # noqa: E402

SECRET = "sk-fake-SECRET-4f1c2a9e"
HI = [{"role": "user", "content": "Hi"}]
TEXT = "openai_chat/text_usage_chunk.sse"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


@pytest.fixture
def reader():
    return InMemoryMetricReader()


def make(server, provider, reader=None, **kw):
    latest = kw.pop("latest_experimental", True)
    hooks = OpenTelemetryHooks(tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader]) if reader else None,
                               latest_experimental=latest, **kw)
    client = client_for(server, hooks=[hooks], retry=0, api_keys={"openai": SECRET, "anthropic": SECRET, "groq": SECRET})
    return client, hooks


def spans(exporter):
    return list(exporter.get_finished_spans())


def call_span(exporter):
    """The logical call's span: the one without a parent among ours (no ambient span in these tests)."""
    roots = [s for s in spans(exporter) if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    return roots[0]


def turns(exporter):
    """The inference spans (one per HTTP request)."""
    return [s for s in spans(exporter) if s.parent is not None and s.attributes.get("gen_ai.operation.name") == "chat"]


def assert_no_secret(exporter):
    for s in spans(exporter):
        blobs = [s.name, str(s.status.description)]
        blobs += [repr(v) for v in s.attributes.values()]
        blobs += [repr(v) for e in s.events for v in e.attributes.values()]
        assert not any(SECRET in b for b in blobs), s.name
        assert not any("authorization" in k.lower() or "api-key" in k.lower() for k in s.attributes)


def assert_one_correlation(exporter, expected, conversation=None):
    """One correlation id on every span; gen_ai.conversation.id only when the caller gave one."""
    for s in spans(exporter):
        assert s.attributes["llmrelay.correlation_id"] == expected, s.name
        assert s.attributes.get("gen_ai.conversation.id") == conversation, s.name
    trace_ids = {s.context.trace_id for s in spans(exporter)}
    assert len(trace_ids) == 1


# ---------------------------------------------------------------------------
# a plain stream
# ---------------------------------------------------------------------------


def test_plain_stream_span_names_kind_and_attributes(server, provider, exporter, reader):
    server.enqueue(Reply.recording(TEXT))
    client, _ = make(server, provider, reader)
    with client.stream("openai:gpt-4o", HI, temperature=0.5, max_tokens=100, top_p=0.9, stop=["END"]) as s:
        response = s.collect()
    assert response.status == "ok"
    assert len(spans(exporter)) == 2
    root = call_span(exporter)
    (turn,) = turns(exporter)
    assert turn.parent.span_id == root.context.span_id
    # the call: INTERNAL, no gen_ai operation, no gen_ai.usage (a backend summing usage counts the request once)
    assert (root.name, root.kind) == ("llmrelay.call gpt-4o", SpanKind.INTERNAL)
    assert not any(k.startswith(("gen_ai.usage", "gen_ai.operation", "gen_ai.request", "gen_ai.response")) for k in root.attributes)
    assert root.attributes["llmrelay.call.usage.input_tokens"] == 14
    assert root.attributes["llmrelay.call.usage.output_tokens"] == 30
    assert root.attributes["llmrelay.request.model"] == "gpt-4o"
    assert root.attributes["llmrelay.response.model"] == "gpt-4o-2024-08-06"
    assert root.attributes["llmrelay.stream"] is True and root.attributes["llmrelay.status"] == "ok"
    assert root.attributes["llmrelay.call.time_to_first_chunk"] >= 0
    assert root.attributes["llmrelay.call.time_to_first_text"] == response.timings.time_to_first_text
    for s in (turn,):
        a = s.attributes
        assert s.name == "chat gpt-4o"
        assert s.kind is SpanKind.CLIENT
        assert s.status.status_code is StatusCode.UNSET
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert "gen_ai.system" not in a
        assert a["gen_ai.request.model"] == "gpt-4o"
        assert a["gen_ai.request.stream"] is True
        assert a["gen_ai.request.temperature"] == 0.5
        assert a["gen_ai.request.max_tokens"] == 100
        assert a["gen_ai.request.top_p"] == 0.9
        assert a["gen_ai.request.stop_sequences"] == ("END",)
        assert a["server.address"] == "127.0.0.1"
        assert a["server.port"] == server.port
        assert a["gen_ai.response.id"] == "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL"
        assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert a["gen_ai.usage.input_tokens"] == 14
        assert a["gen_ai.usage.output_tokens"] == 30
        assert a["gen_ai.usage.reasoning.output_tokens"] == 0
        assert a["gen_ai.response.time_to_first_chunk"] >= 0
        assert a["llmrelay.status"] == "ok"
        assert "error.type" not in a
        # content is off by default
        assert not any(k in a for k in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"))
    assert turn.attributes["gen_ai.response.time_to_first_chunk"] == response.timings.time_to_first_token
    assert turn.attributes["llmrelay.response.time_to_first_text"] == response.timings.time_to_first_text
    assert turn.attributes["llmrelay.response.time_per_output_chunk"] == response.timings.time_per_output_chunk > 0
    assert turn.attributes["llmrelay.turn"] == 1
    assert root.events == ()  and turn.events == ()  # nothing per chunk
    assert_one_correlation(exporter, response.correlation_id)
    assert_no_secret(exporter)


def test_complete_is_not_streaming_and_metrics(server, provider, exporter, reader):
    server.enqueue(Reply.recording(TEXT))
    client, _ = make(server, provider, reader)
    response = client.complete("openai:gpt-4o", HI)
    # complete() is not the caller streaming, but the wire request streamed: that is what gen_ai.request.stream says
    assert call_span(exporter).attributes["llmrelay.stream"] is False
    (turn,) = turns(exporter)
    assert turn.attributes["gen_ai.request.stream"] is True
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    expected = {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                "gen_ai.client.operation.time_to_first_chunk", "gen_ai.client.operation.time_per_output_chunk"}
    if response.cost.total is not None:
        expected.add("llmrelay.client.cost")
        (cost,) = metrics["llmrelay.client.cost"].data.data_points
        assert cost.sum == pytest.approx(response.cost.total) == turn.attributes["llmrelay.cost.usd"]
        assert call_span(exporter).attributes["llmrelay.call.cost.usd"] == pytest.approx(response.cost.total)
    assert set(metrics) == expected
    (per_chunk,) = metrics["gen_ai.client.operation.time_per_output_chunk"].data.data_points
    assert per_chunk.count == 1 and per_chunk.sum == pytest.approx(response.timings.time_per_output_chunk)
    (duration,) = metrics["gen_ai.client.operation.duration"].data.data_points
    assert duration.count == 1 and metrics["gen_ai.client.operation.duration"].unit == "s"
    assert duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["gen_ai.provider.name"] == "openai"
    assert duration.attributes["gen_ai.request.model"] == "gpt-4o"
    assert duration.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in metrics["gen_ai.client.token.usage"].data.data_points}
    assert tokens == {"input": 14, "output": 30}
    assert metrics["gen_ai.client.operation.time_to_first_chunk"].data.data_points[0].count == 1


def test_semconv_default_is_gen_ai_system_and_env_opts_in(server, provider, exporter, monkeypatch):
    monkeypatch.delenv(OPT_IN_ENV, raising=False)
    server.enqueue(Reply.recording(TEXT), Reply.recording(TEXT))
    client, hooks = make(server, provider, latest_experimental=None)
    assert hooks.latest_experimental is False
    client.complete("openai:gpt-4o", HI)
    a = turns(exporter)[0].attributes
    assert a["gen_ai.system"] == "openai" and "gen_ai.provider.name" not in a
    exporter.clear()
    monkeypatch.setenv(OPT_IN_ENV, "http, gen_ai_latest_experimental")
    client, hooks = make(server, provider, latest_experimental=None)
    assert hooks.latest_experimental is True
    client.complete("openai:gpt-4o", HI)
    a = turns(exporter)[0].attributes
    assert a["gen_ai.provider.name"] == "openai" and "gen_ai.system" not in a


def test_anthropic_usage_with_cache_fields(server, provider, exporter):
    body = read_recording("anthropic/text_basic.sse")
    body = body.replace(b'"cache_read_input_tokens":0', b'"cache_read_input_tokens":40')
    body = body.replace(b'"cache_creation_input_tokens":0', b'"cache_creation_input_tokens":3')
    server.enqueue(Reply(body, headers={"content-type": "text/event-stream"}))
    client, _ = make(server, provider)
    response = client.complete("anthropic:claude-sonnet-4-5", HI, max_tokens=8192)
    assert response.usage.cached_input_tokens == 40
    root = call_span(exporter)
    assert root.name == "llmrelay.call claude-sonnet-4-5"
    assert root.attributes["llmrelay.call.usage.cached_input_tokens"] == 40
    assert root.attributes["llmrelay.call.usage.input_tokens"] == 17 + 40 + 3
    for s in turns(exporter):
        a = s.attributes
        assert s.name == "chat claude-sonnet-4-5"
        assert a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
        assert a["gen_ai.response.id"] == "msg_017A4s3HAsrqf5d2WvBmrpLr"
        assert a["gen_ai.usage.input_tokens"] == 17 + 40 + 3  # all prompt tokens, cached included
        assert a["gen_ai.usage.output_tokens"] == 10
        assert a["gen_ai.usage.cache_read.input_tokens"] == 40
        assert a["gen_ai.usage.cache_creation.input_tokens"] == 3
        assert a["server.port"] == server.port
    assert_no_secret(exporter)


# ---------------------------------------------------------------------------
# tool loop, retries, fallback
# ---------------------------------------------------------------------------


def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def test_tool_loop_spans(server, provider, exporter):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    client, _ = make(server, provider)
    response = client.complete("openai:gpt-4o-mini", [{"role": "user", "content": "What is 1231 * 2331?"}],
                               tools=[llmrelay.tool(multiply)])
    assert len(response.turns) == 2
    root = call_span(exporter)
    chat = sorted(turns(exporter), key=lambda s: s.attributes["llmrelay.turn"])
    (tool,) = [s for s in spans(exporter) if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert [s.attributes["llmrelay.turn"] for s in chat] == [1, 2]
    assert chat[0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert tool.name == "execute_tool multiply"
    assert tool.kind is SpanKind.INTERNAL
    assert tool.parent.span_id == root.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "multiply"
    assert tool.attributes["gen_ai.tool.type"] == "function"
    assert tool.attributes["gen_ai.tool.call.id"] == response.turns[0].tool_calls[0].id
    assert tool.attributes["gen_ai.tool.description"] == "Multiply two numbers."
    assert "gen_ai.tool.call.arguments" not in tool.attributes and "gen_ai.tool.call.result" not in tool.attributes
    assert chat[0].end_time <= tool.start_time <= tool.end_time <= chat[1].start_time
    assert root.start_time <= chat[0].start_time and chat[1].end_time <= root.end_time
    # usage once per request (the inference spans); the call span's totals are not gen_ai.usage
    assert "gen_ai.usage.input_tokens" not in root.attributes
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in chat) == response.usage.input_tokens
    assert root.attributes["llmrelay.call.usage.input_tokens"] == response.usage.input_tokens
    assert root.attributes["llmrelay.call.usage.output_tokens"] == response.usage.output_tokens
    assert root.attributes["llmrelay.turns"] == 2
    assert_one_correlation(exporter, response.correlation_id)
    assert_no_secret(exporter)


def test_tool_loop_content_captured_when_asked(server, provider, exporter):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    client, _ = make(server, provider, capture_content=True)
    response = client.complete("openai:gpt-4o-mini", [{"role": "system", "content": "Be exact."},
                                                      {"role": "user", "content": "What is 1231 * 2331?"}],
                               tools=[llmrelay.tool(multiply)])
    root = call_span(exporter)
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system", "gen_ai.tool")) for k in root.attributes)
    chat = sorted(turns(exporter), key=lambda s: s.attributes["llmrelay.turn"])
    first = chat[0].attributes
    assert json.loads(first["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be exact."}]
    assert json.loads(first["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 1231 * 2331?"}]}]
    out = json.loads(chat[1].attributes["gen_ai.output.messages"])
    assert out[0]["role"] == "assistant" and out[0]["parts"][0]["content"] == response.text
    (definition,) = json.loads(first["gen_ai.tool.definitions"])
    assert definition["name"] == "multiply" and definition["type"] == "function"
    second_input = json.loads(chat[1].attributes["gen_ai.input.messages"])
    assert [m["role"] for m in second_input] == ["user", "assistant", "tool"]
    assert second_input[1]["parts"][0]["type"] == "tool_call"
    assert second_input[2]["parts"][0] == {"type": "tool_call_response", "id": response.turns[0].tool_calls[0].id,
                                           "response": "2869461"}
    (tool,) = [s for s in spans(exporter) if s.name == "execute_tool multiply"]
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"a": 1231, "b": 2331}
    assert tool.attributes["gen_ai.tool.call.result"] == "2869461"
    assert_no_secret(exporter)


def test_a_failing_tool_with_tool_errors_raise(server, provider, exporter):
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        raise RuntimeError("no multiplying today")

    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"))
    client, _ = make(server, provider)
    with pytest.raises(llmrelay.ToolExecutionError):
        client.complete("openai:gpt-4o-mini", [{"role": "user", "content": "What is 1231 * 2331?"}],
                        tools=[llmrelay.tool(multiply)], tool_errors="raise")
    (tool,) = [s for s in spans(exporter) if s.name == "execute_tool multiply"]
    assert tool.status.status_code is StatusCode.ERROR and tool.attributes["error.type"] == "tool_error"
    root = call_span(exporter)
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "ToolExecutionError"
    assert root.attributes["llmrelay.status"] == "error"
    (turn,) = turns(exporter)
    assert turn.status.status_code is StatusCode.UNSET


def test_retries_are_child_spans_of_one_call_span(server, provider, exporter):
    server.enqueue(Reply.json({}, status=500), Reply.recording(TEXT))
    client, _ = make(server, provider)
    response = client.complete("openai:gpt-4o", HI, retry=llmrelay.Retry(2, initial_delay=0.01))
    assert response.status == "ok"
    root = call_span(exporter)
    failed, ok = sorted(turns(exporter), key=lambda s: s.attributes["llmrelay.turn"])
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "InternalServerError"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["llmrelay.status"] == "error"
    assert ok.status.status_code is StatusCode.UNSET and ok.attributes["llmrelay.status"] == "ok"
    assert root.status.status_code is StatusCode.UNSET
    assert "error.type" not in root.attributes
    assert root.attributes["llmrelay.retry.count"] == 1
    (event,) = [e for e in root.events if e.name == "llmrelay.retry"]
    assert event.attributes["error.type"] == "InternalServerError"
    assert event.attributes["llmrelay.retry.attempt"] == 1
    assert root.start_time <= failed.start_time < failed.end_time <= ok.start_time <= ok.end_time <= root.end_time
    assert_one_correlation(exporter, response.correlation_id)
    assert_no_secret(exporter)


def test_fallback_first_model_fails(server, provider, exporter):
    server.enqueue(Reply.json({"error": {"message": "down"}}, status=503), Reply.recording(TEXT))
    client, _ = make(server, provider)
    response = client.complete(["openai:gpt-4o", "groq:llama-3.3-70b"], HI)
    assert response.provider == "groq"
    root = call_span(exporter)
    first, second = sorted(turns(exporter), key=lambda s: s.attributes["llmrelay.turn"])
    assert root.name == "llmrelay.call gpt-4o"
    assert root.attributes["llmrelay.request.model"] == "gpt-4o"
    assert root.attributes["llmrelay.response.model"] == "gpt-4o-2024-08-06"
    assert root.attributes["llmrelay.provider"] == "groq"
    assert root.attributes["llmrelay.fallback.count"] == 1
    assert root.status.status_code is StatusCode.UNSET
    (event,) = [e for e in root.events if e.name == "llmrelay.fallback"]
    assert event.attributes["llmrelay.fallback.from"] == "openai:gpt-4o"
    assert event.attributes["llmrelay.fallback.to"] == "groq:llama-3.3-70b"
    assert event.attributes["error.type"] == "ServiceUnavailableError"
    assert (first.name, first.attributes["gen_ai.provider.name"]) == ("chat gpt-4o", "openai")
    assert first.status.status_code is StatusCode.ERROR
    assert (second.name, second.attributes["gen_ai.provider.name"]) == ("chat llama-3.3-70b", "groq")
    assert second.status.status_code is StatusCode.UNSET
    assert_one_correlation(exporter, response.correlation_id)
    assert_no_secret(exporter)


def test_all_models_failed_sets_error_on_the_call_span(server, provider, exporter):
    server.enqueue(Reply.json({}, status=503), Reply.json({}, status=503))
    client, _ = make(server, provider)
    with pytest.raises(llmrelay.AllModelsFailedError):
        client.complete(["openai:gpt-4o", "groq:llama-3.3-70b"], HI)
    root = call_span(exporter)
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "AllModelsFailedError"
    assert all(s.status.status_code is StatusCode.ERROR for s in turns(exporter))
    assert_no_secret(exporter)


# ---------------------------------------------------------------------------
# errors and aborts
# ---------------------------------------------------------------------------


def test_in_band_error(server, provider, exporter):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    client, _ = make(server, provider)
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        client.complete("groq:openai/gpt-oss-120b", HI)
    for s in (call_span(exporter), *turns(exporter)):
        assert s.status.status_code is StatusCode.ERROR
        assert "tool call validation failed" in s.status.description.lower()
        assert s.attributes["error.type"] == "ProviderStreamError"
        assert s.attributes["llmrelay.status"] == "error"
        assert any(e.name == "exception" for e in s.events)
    (turn,) = turns(exporter)
    assert turn.attributes["gen_ai.provider.name"] == "groq"
    assert turn.attributes["llmrelay.error.code"] == "tool_use_failed"
    assert turn.attributes["gen_ai.usage.output_tokens"] > 0  # estimated from the partial answer
    assert turn.attributes["llmrelay.usage.estimated"] is True
    assert_one_correlation(exporter, info.value.partial.correlation_id)
    assert_no_secret(exporter)


def test_aborted_stream_ends_its_spans(server, provider, exporter, reader):
    server.enqueue(Reply.recording(TEXT, chunking="events"))
    client, _ = make(server, provider, reader)
    s = client.stream("openai:gpt-4o", HI)
    it = iter(s)
    while not isinstance(next(it), llmrelay.TextDelta):
        pass
    assert spans(exporter) == []  # still open
    s.close()
    assert len(spans(exporter)) == 2
    for span in spans(exporter):
        assert span.end_time is not None
        assert span.attributes["llmrelay.status"] == "aborted"
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
    assert_one_correlation(exporter, s.correlation_id)
    # estimated usage is not a metric
    metrics = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "gen_ai.client.token.usage" not in metrics and "gen_ai.client.operation.duration" in metrics


def test_aborted_is_error_option(server, provider, exporter):
    server.enqueue(Reply.recording(TEXT, chunking="events"))
    client, _ = make(server, provider, aborted_is_error=True)
    with client.stream("openai:gpt-4o", HI) as s:
        next(iter(s))
    for span in spans(exporter):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "aborted"


def test_close_before_iteration_makes_no_span(server, provider, exporter):
    client, _ = make(server, provider)
    client.stream("openai:gpt-4o", HI).close()
    assert spans(exporter) == []


def test_ambient_span_is_the_parent_and_tags(server, provider, exporter):
    server.enqueue(Reply.recording(TEXT))
    client, _ = make(server, provider)
    with provider.get_tracer("app").start_as_current_span("handler") as outer:
        response = client.complete("openai:gpt-4o", HI, conversation_id="conv-7", correlation_id="req-1",
                                   tags={"conversation_id": "not-this", "user": "alice", "obj": object()})
    root = next(s for s in spans(exporter) if s.name == "llmrelay.call gpt-4o")
    assert root.parent.span_id == outer.get_span_context().span_id
    ours = [s for s in spans(exporter) if s.name != "handler"]
    assert {s.attributes["gen_ai.conversation.id"] for s in ours} == {"conv-7"}  # the caller's, on every span
    assert {s.attributes["llmrelay.correlation_id"] for s in ours} == {"req-1"} and response.correlation_id == "req-1"
    assert root.attributes["llmrelay.tag.user"] == "alice"
    assert "llmrelay.tag.obj" not in root.attributes


async def test_async_stream_spans(server, provider, exporter):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    client, _ = make(server, provider)
    try:
        response = await client.acomplete("openai:gpt-4o-mini", [{"role": "user", "content": "What is 1231 * 2331?"}],
                                          tools=[llmrelay.tool(multiply)])
    finally:
        await client.aclose()
    names = sorted(s.name for s in spans(exporter))
    assert names == ["chat gpt-4o-mini"] * 2 + ["execute_tool multiply", "llmrelay.call gpt-4o-mini"]
    assert call_span(exporter).attributes["llmrelay.call.usage.output_tokens"] == response.usage.output_tokens
    assert_one_correlation(exporter, response.correlation_id)
    assert_no_secret(exporter)


async def test_async_abort(server, provider, exporter):
    server.enqueue(Reply.recording(TEXT, chunking="events"))
    client, _ = make(server, provider)
    try:
        async with client.astream("openai:gpt-4o", HI) as s:
            async for e in s:
                if isinstance(e, llmrelay.TextDelta):
                    break
    finally:
        await client.aclose()
    assert len(spans(exporter)) == 2
    assert {span.attributes["llmrelay.status"] for span in spans(exporter)} == {"aborted"}


def test_open_calls_are_bounded(server, provider, exporter):
    client, hooks = make(server, provider, max_open_calls=2)
    from llmrelay.observability.hooks import CallContext

    contexts = [CallContext(requested="openai:gpt-4o") for _ in range(5)]
    for ctx in contexts:
        hooks.on_call_start(ctx)
    assert len(hooks._calls) == 2
    abandoned = spans(exporter)
    assert len(abandoned) == 3 and {s.attributes["llmrelay.status"] for s in abandoned} == {"abandoned"}


def test_a_secret_in_an_error_message_is_masked(server, provider, exporter):
    server.enqueue(Reply.json({"error": {"message": f"Incorrect API key provided: {SECRET}"}}, status=401))
    client, _ = make(server, provider)
    with pytest.raises(llmrelay.AuthenticationError):
        client.complete("openai:gpt-4o", HI)
    # masked where the error is made (the client knows the key), so every consumer sees it masked
    assert any("[REDACTED]" in s.status.description or "***" in s.status.description for s in spans(exporter))
    assert_no_secret(exporter)


def test_import_llmrelay_does_not_import_opentelemetry():
    code = "import sys, llmrelay, llmrelay.observability.tracing; assert not any(m.startswith('opentelemetry') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# RecordingHooks
# ---------------------------------------------------------------------------


def test_recording_hooks_sequence_and_no_secrets(server):
    rec = RecordingHooks()
    server.enqueue(Reply.json({}, status=500), Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    client = client_for(server, hooks=[rec], api_keys={"openai": SECRET}, retry=llmrelay.Retry(2, initial_delay=0.01))
    response = client.complete("openai:gpt-4o-mini", [{"role": "user", "content": "What is 1231 * 2331?"}],
                               tools=[llmrelay.tool(multiply)])
    assert rec.kinds(response.correlation_id) == [
        "call_start", "turn_start", "turn_end", "retry", "turn_start", "first_token", "turn_end", "tool_result",
        "turn_start", "first_token", "turn_end", "call_end"]
    assert {e.correlation_id for e in rec} == {response.correlation_id}
    start = rec.of(response.correlation_id)[1]
    assert start.details["url"] == server.url + "/v1/chat/completions"
    assert rec.events[-1].details["status"] == "ok"
    assert rec.events[2].details["error_type"] == "InternalServerError"
    assert SECRET not in repr(list(rec))
    assert "authorization" not in repr(list(rec)).lower()


def test_recording_hooks_are_bounded(server):
    rec = RecordingHooks(max_events=5)
    server.enqueue(*[Reply.recording(TEXT) for _ in range(3)])
    client = client_for(server, hooks=[rec], retry=0)
    ids = [client.complete("openai:gpt-4o", HI).correlation_id for _ in range(3)]
    assert len(rec) == 5 and rec.events.maxlen == 5
    assert rec.kinds() == ["call_start", "turn_start", "first_token", "turn_end", "call_end"]
    assert {e.correlation_id for e in rec} == {ids[-1]}
    assert len(rec._secrets) <= 5
    rec.clear()
    assert len(rec) == 0
    with pytest.raises(ValueError):
        RecordingHooks(max_events=0)


def test_per_call_hooks(server):
    rec = RecordingHooks()
    server.enqueue(Reply.recording(TEXT))
    client = client_for(server, retry=0)
    response = client.complete("openai:gpt-4o", HI, hooks=[rec], tags={"user": "bob"})
    assert rec.of(response.correlation_id)[0].details["tags"] == {"user": "bob"}
