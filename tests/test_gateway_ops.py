"""The gateway for operators, over real sockets: request ids and conversations into the logs and back in the
response, validated; `--workers N` (metrics of the whole server, SIGHUP reload in every worker) in
test_gateway_workers.py."""

from __future__ import annotations

import json
import socket

import pytest

from gateway_helpers import GatewayThread, config_for, rows

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from llmrelay.testing import ReplayServer, Reply, faults  # noqa: E402

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": "Bearer sk-a"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    db = tmp_path_factory.mktemp("ids") / "log.db"
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, f"logging: {db}", "keys:\n  - {name: a, key: sk-a}\n")) as gw:
            yield up, gw, db



def test_request_and_conversation_ids_reach_the_log_row_and_come_back(logged):
    up, gw, db = logged
    up.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse", chunking="events"))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-a", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=MSG, stream=True, user="alice@example.com",
        extra_headers={"x-request-id": "req-42.a", "x-llmrelay-conversation-id": "thread-7"})
    assert raw.headers["x-request-id"] == "req-42.a"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    row = rows(gw, db)[-1]
    assert (row["correlation_id"], row["conversation_id"]) == ("req-42.a", "thread-7")
    assert json.loads(row["tags"])["gateway_user"] == "alice@example.com"
    assert up.requests[-1].json["user"] == "alice@example.com"  # the fast path still forwards it


def test_an_id_is_generated_when_absent_and_the_anthropic_sdk_sees_it(logged):
    up, gw, db = logged
    up.enqueue(Reply.recording("anthropic/text_basic.sse", chunking="events"))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-a", max_retries=0)
    msg = client.messages.create(model="claude", max_tokens=50, messages=MSG, metadata={"user_id": "u-123"})
    rid = msg._request_id
    assert rid and len(rid) == 32 and int(rid, 16) >= 0
    row = rows(gw, db)[-1]
    assert row["correlation_id"] == rid and row["conversation_id"] is None
    assert json.loads(row["tags"])["gateway_user"] == "u-123"
    up.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse", chunking="events"))
    r = httpx.post(gw.url + "/v1/chat/completions", headers={**AUTH, "x-correlation-id": "corr-1"},
                   json={"model": "gpt", "messages": MSG})
    assert r.status_code == 200 and r.headers["x-request-id"] == "corr-1"
    assert rows(gw, db)[-1]["correlation_id"] == "corr-1"


@pytest.mark.parametrize("headers, named", [
    ({"x-request-id": "has space"}, "x-request-id"),
    ({"x-request-id": "r" * 129}, "x-request-id"),
    ({"x-correlation-id": "tab\there"}, "x-correlation-id"),
    ({"x-llmrelay-conversation-id": "c" * 200}, "x-llmrelay-conversation-id"),
])
def test_bad_ids_are_a_400_in_the_protocols_shape(logged, headers, named):
    up, gw, _ = logged
    seen = len(up.requests)
    r = httpx.post(gw.url + "/v1/chat/completions", headers={**AUTH, **headers}, json={"model": "gpt", "messages": MSG})
    assert r.status_code == 400 and named in r.json()["error"]["message"]
    r = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": "sk-a", **headers},
                   json={"model": "claude", "max_tokens": 5, "messages": MSG})
    assert r.status_code == 400 and r.json()["type"] == "error" and named in r.json()["error"]["message"]
    assert len(up.requests) == seen  # nothing went upstream


def test_bad_user_fields_and_non_ascii_ids_are_a_400(logged):
    up, gw, _ = logged
    r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt", "messages": MSG, "user": 42})
    assert r.status_code == 400 and "user must be a string" in r.json()["error"]["message"]
    r = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": "sk-a"},
                   json={"model": "claude", "max_tokens": 5, "messages": MSG, "metadata": {"user_id": "x" * 300}})
    assert r.status_code == 400 and "metadata.user_id" in r.json()["error"]["message"]
    body = json.dumps({"model": "gpt", "messages": MSG}).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:  # a byte no client library would send
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-a\r\n"
                     b"x-request-id: caf\xe9\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 400") and b"x-request-id" in answer.split(b"\r\n\r\n", 1)[1]


def test_the_same_id_twice_in_flight_gets_two_log_calls(logged):
    up, gw, db = logged
    up.enqueue(faults.drip("anthropic/text_basic.sse", delay=0.05), faults.drip("anthropic/text_basic.sse", delay=0.05))
    before = len(rows(gw, db))
    body = {"model": "claude", "max_tokens": 50, "messages": MSG, "stream": True}
    hdrs = {"x-api-key": "sk-a", "x-request-id": "dup"}
    with httpx.stream("POST", gw.url + "/v1/messages", headers=hdrs, json=body, timeout=20) as first:
        lines = first.iter_lines()
        next(lines)  # the first call is in flight
        with httpx.stream("POST", gw.url + "/v1/messages", headers=hdrs, json=body, timeout=20) as second:
            assert second.headers["x-request-id"] == "dup-2"
            second.read()
        assert first.headers["x-request-id"] == first.headers["request-id"] == "dup"
        for _ in lines:  # the rest of the first stream
            pass
    new = rows(gw, db)[before:]
    assert sorted(r["correlation_id"] for r in new) == ["dup", "dup-2"]
    assert all(r["status"] == "ok" and r["output_tokens"] == 10 for r in new)
    up.enqueue(Reply.recording("anthropic/text_basic.sse", chunking="events"))
    r = httpx.post(gw.url + "/v1/messages", headers=hdrs, json={**body, "stream": False})
    assert r.headers["x-request-id"] == "dup"  # free again once the first ended


def test_the_server_span_joins_the_clients_trace_and_carries_the_ids():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, "server: {otel: true}"), tracer_provider=provider) as gw:
            up.enqueue(Reply.recording("anthropic/text_basic.sse", chunking="events"))
            r = httpx.post(gw.url + "/v1/messages", json={"model": "claude", "max_tokens": 50, "messages": MSG},
                           headers={"traceparent": f"00-{trace_id}-{parent}-01", "x-request-id": "req-otel",
                                    "x-llmrelay-conversation-id": "conv-otel"})
            assert r.status_code == 200
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind.name == "SERVER")
    assert format(server.context.trace_id, "032x") == trace_id and format(server.parent.span_id, "016x") == parent
    assert server.attributes["llmrelay.correlation_id"] == "req-otel"
    assert server.attributes["gen_ai.conversation.id"] == "conv-otel"
    inner = [s for s in spans if s.kind.name != "SERVER"]
    assert inner and all(s.context.trace_id == server.context.trace_id for s in inner)
    assert all(s.attributes["llmrelay.correlation_id"] == "req-otel" for s in inner)


def test_log_rows_are_counted_in_metrics_and_readiness(logged):
    up, gw, db = logged
    up.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse", chunking="events"))
    httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt", "messages": MSG})
    n = len(rows(gw, db))  # rows() waits until the writer wrote every row
    text = httpx.get(gw.url + "/metrics").text
    assert f'llmrelay_gateway_log_rows_total{{outcome="written"}} {n}' in text
    assert 'llmrelay_gateway_log_rows_total{outcome="failed"} 0' in text
    ready = httpx.get(gw.url + "/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "logs": {"written": n, "lost": 0}}


@pytest.mark.parametrize("mode, status", [("closed", 503), ("local", 200)])
def test_readiness_says_when_the_limits_store_does_not_answer(mode, status):
    pytest.importorskip("redis")
    from gateway_helpers import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with ReplayServer() as up:
        extra = f"limits:\n  store: {dead}\n  on_store_error: {mode}\n  timeout: 0.2\n"
        with GatewayThread(config_for(up.url, extra)) as gw:
            r = httpx.get(gw.url + "/health/ready")
            assert r.status_code == status and r.json()["limits_store"] == "unreachable"
            assert r.json()["status"] == ("limits store unreachable" if mode == "closed" else "ready")
            assert httpx.get(gw.url + "/health/live").status_code == 200  # alive all the same


def test_readiness_with_a_limits_store_that_answers():
    import os

    url = os.environ.get("LLMRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: this test must run, but Redis is not usable at {url}: {exc}")
        pytest.skip(f"Redis is not usable at {url}: {exc}")
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, f"limits:\n  store: {url}\n  on_store_error: closed\n")) as gw:
            r = httpx.get(gw.url + "/health/ready")
            assert r.status_code == 200 and r.json() == {"status": "ready", "limits_store": "ok"}


def test_an_embedded_gateway_leaves_the_garbage_collector_alone():
    """Freezing the heap and raising the collector's threshold is process-wide: `llmrelay serve` asks for it
    (tune_gc=True), a GatewayApp mounted in someone else's process (here, the test's) must not."""
    import gc

    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    with ReplayServer() as up:
        up.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse", chunking="events"))
        with GatewayThread(config_for(up.url)) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            assert client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}]).choices
            gw.settle()
            assert gw.app.ready and not gw.app.tune_gc
    assert gc.get_freeze_count() == frozen and gc.get_threshold() == threshold
