"""OpenTelemetry per the current GenAI conventions (issue 13, item 8): one CLIENT inference span per
HTTP request carrying usage, the call an INTERNAL span that does not repeat it, the caller's
conversation id only, per-request metrics (duration, tokens, time to first chunk, time per output
chunk, cost), reasoning settings. With the SDK's in-memory exporter, and with the OTLP/HTTP exporter
sending protobuf to a receiver run by the test."""

from __future__ import annotations

import http.server
import threading

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

import llmrelay  # noqa: E402
from llmrelay.observability.tracing import OpenTelemetryHooks  # noqa: E402
from llmrelay.testing import Reply, client_for  # noqa: E402

TEXT = "openai_chat/text_usage_chunk.sse"


def setup(server, **kw):
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    hooks = OpenTelemetryHooks(tracer_provider=tp, meter_provider=MeterProvider(metric_readers=[reader]),
                               latest_experimental=True)
    return client_for(server, hooks=[hooks], **kw), exporter, reader


def metric_points(reader) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = list(m.data.data_points)
    return out


def usage_sum(spans, attr: str) -> int:
    return sum(s.attributes.get(attr, 0) for s in spans)


def tool(mode: str = "sync"):
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    return llmrelay.tool(multiply)


def test_summing_usage_over_spans_counts_each_request_once(server):
    """A retry (a failed request) then a tool loop of two requests: gen_ai.usage summed over every span
    is what the requests used, whatever the backend sums."""
    client, exporter, reader = setup(server, retry=llmrelay.Retry(1, initial_delay=0.01))
    server.enqueue(Reply.json({}, status=500), Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    r = client.complete("openai:gpt-4o-mini", "What is 1231 * 2331?", tools=[tool()])
    spans = exporter.get_finished_spans()
    inference = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [s.name for s in inference] == ["chat gpt-4o-mini"] * 3  # one per HTTP request
    assert all(s.attributes["gen_ai.operation.name"] == "chat" for s in inference)
    (call,) = [s for s in spans if s.parent is None]
    assert call.kind is SpanKind.INTERNAL and "gen_ai.operation.name" not in call.attributes
    # the failed request's usage is llmrelay's estimate (marked so); the two answered requests are the call's usage
    (failed,) = [s for s in inference if s.attributes.get("error.type")]
    assert failed.attributes["llmrelay.usage.estimated"] is True
    measured = [s for s in spans if not s.attributes.get("llmrelay.usage.estimated")]
    assert usage_sum(measured, "gen_ai.usage.input_tokens") == r.usage.input_tokens
    assert usage_sum(measured, "gen_ai.usage.output_tokens") == r.usage.output_tokens
    assert usage_sum(spans, "gen_ai.usage.output_tokens") == r.usage.output_tokens + failed.attributes.get(
        "gen_ai.usage.output_tokens", 0)
    assert call.attributes["llmrelay.call.usage.input_tokens"] == usage_sum(spans, "gen_ai.usage.input_tokens")
    # metrics: one data point per request, each request's own values
    points = metric_points(reader)
    durations = points["gen_ai.client.operation.duration"]
    assert sum(p.count for p in durations) == 3
    assert {p.attributes.get("error.type") for p in durations} == {None, "InternalServerError"}
    tokens = points["gen_ai.client.token.usage"]
    assert sum(p.count for p in tokens if p.attributes["gen_ai.token.type"] == "output") == 2
    assert sum(p.sum for p in tokens if p.attributes["gen_ai.token.type"] == "output") == r.usage.output_tokens
    assert sum(p.count for p in points["gen_ai.client.operation.time_to_first_chunk"]) == 2
    client.close()


def test_conversation_id_only_from_the_caller(server):
    client, exporter, _ = setup(server, retry=0)
    server.enqueue(Reply.recording(TEXT), Reply.recording(TEXT))
    client.complete("openai:gpt-4o", "hi")
    assert all("gen_ai.conversation.id" not in s.attributes for s in exporter.get_finished_spans())
    exporter.clear()
    client.complete("openai:gpt-4o", "hi", conversation_id="thread-7")
    assert {s.attributes["gen_ai.conversation.id"] for s in exporter.get_finished_spans()} == {"thread-7"}
    client.close()


@pytest.mark.parametrize("model, kw, attrs", [
    ("openai:o4-mini", {"reasoning_effort": "high"}, {"gen_ai.request.reasoning.level": "high"}),
    ("anthropic:claude-sonnet-4-5", {"thinking_budget": 2048, "max_tokens": 8192},
     {"llmrelay.request.thinking_budget": 2048, "gen_ai.request.max_tokens": 8192}),
])
def test_reasoning_settings(server, model, kw, attrs):
    client, exporter, _ = setup(server, retry=0)
    server.enqueue(Reply.recording(TEXT if model.startswith("openai") else "anthropic/text_basic.sse"))
    client.complete(model, "hi", **kw)
    (turn,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    for k, v in attrs.items():
        assert turn.attributes[k] == v
    client.close()


def test_cost_and_time_per_output_chunk_per_request(server):
    client, exporter, reader = setup(server, retry=0, prices={"openai:gpt-4o*": {"input": 2.5, "output": 10.0}})
    server.enqueue(Reply.recording(TEXT, chunking="events", delay=0.002))
    r = client.complete("openai:gpt-4o", "hi")
    (turn,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    expected = (14 * 2.5 + 30 * 10.0) / 1e6
    assert r.cost.total == pytest.approx(expected)
    assert turn.attributes["llmrelay.cost.usd"] == pytest.approx(expected)
    assert "llmrelay.cost.estimated" not in turn.attributes
    points = metric_points(reader)
    (cost,) = points["llmrelay.client.cost"]
    assert cost.sum == pytest.approx(expected) and cost.count == 1
    (per_chunk,) = points["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.count == 1 and per_chunk.sum == pytest.approx(r.timings.time_per_output_chunk)
    # seconds, like total (not a speed bound: a starved client may read the paced chunks in one go)
    assert 0 < r.timings.time_per_output_chunk <= r.timings.total
    client.close()


# -- OTLP/HTTP against a receiver in the test --------------------------------------------------------
class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).received.append((self.path, self.headers.get("content-type"), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    _Receiver.received = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Receiver.received
    httpd.shutdown()
    httpd.server_close()


def _attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


def test_otlp_http_export(server, receiver):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    url, received = receiver
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url + "/v1/metrics"), export_interval_millis=60_000)
    mp = MeterProvider(metric_readers=[reader])
    hooks = OpenTelemetryHooks(tracer_provider=tp, meter_provider=mp, latest_experimental=True)
    client = client_for(server, hooks=[hooks], retry=0)
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    r = client.complete("openai:gpt-4o-mini", "What is 1231 * 2331?", tools=[tool()], conversation_id="thread-9")
    client.close()
    assert tp.force_flush(10_000) and mp.force_flush(10_000)

    spans = []
    for path, ctype, body in received:
        if path == "/v1/traces":
            assert ctype == "application/x-protobuf"
            req = ExportTraceServiceRequest.FromString(body)
            spans += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    by_kind = {}
    for s in spans:
        by_kind.setdefault(s.kind, []).append(s)
    assert [s.name for s in by_kind[Span.SPAN_KIND_CLIENT]] == ["chat gpt-4o-mini"] * 2
    names = sorted(s.name for s in by_kind[Span.SPAN_KIND_INTERNAL])
    assert names == ["execute_tool multiply", "llmrelay.call gpt-4o-mini"]
    total = 0
    for s in spans:
        a = _attrs(s.attributes)
        total += a.get("gen_ai.usage.output_tokens", 0)
        assert a["gen_ai.conversation.id"] == "thread-9"
        if s.kind == Span.SPAN_KIND_CLIENT:
            assert a["gen_ai.request.stream"] is True and a["gen_ai.provider.name"] == "openai"
    assert total == r.usage.output_tokens

    metrics = {}
    for path, _, body in received:
        if path == "/v1/metrics":
            req = ExportMetricsServiceRequest.FromString(body)
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        metrics[m.name] = m
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
            "gen_ai.client.operation.time_to_first_chunk", "gen_ai.client.operation.time_per_output_chunk"} <= set(metrics)
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"].histogram.data_points) == 2
    mp.shutdown()
    tp.shutdown()
