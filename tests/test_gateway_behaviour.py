"""The gateway as a proxy, over real sockets: errors and their shapes, keys, limits, disconnects,
mid-stream failover, in-stream error frames, keep-alives, logs, metrics, config."""

from __future__ import annotations

import json
import socket

import pytest

from gateway_helpers import GatewayThread, config_for, rows

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from llmrelay.gateway.config import ConfigError, hash_key, parse  # noqa: E402
from llmrelay.testing import ReplayServer, Reply, faults  # noqa: E402

MSG = [{"role": "user", "content": "hi"}]
KEYS = f"""
keys:
  - name: team-a
    key: sk-team-a
  - name: narrow
    key_hash: {hash_key("sk-narrow")}
    models: [claude]
  - name: old
    key: sk-old
    expires: 2001-01-01
  - name: one-at-a-time
    key: sk-one
    rpm: 1
"""


def rec(name: str, **kw) -> Reply:
    return Reply.recording(name, chunking="events", **kw)


def oa(url: str, key: str = "sk-team-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    db = tmp_path_factory.mktemp("gw") / "log.db"
    extra = f"""
  fb:
    model: openai:gpt-4o
    base_url: URL/v1
    api_key: sk-up
    retries: 0
    fallbacks: [claude]
    fallback_mode: prefill
  fb_same:
    model: openai:gpt-4o
    base_url: URL/v1
    api_key: sk-up
    retries: 0
    fallbacks: [gpt]
logging: {db}
server:
  keepalive: 0.05
  keepalive_grace: 0.2
  max_body_bytes: 4096
"""
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, extra.replace("URL", up.url), KEYS)) as gw:
            yield up, gw, db



# -- the gateway's own answers ----------------------------------------------------------------
def test_keys(keyed):
    up, gw, _ = keyed
    with pytest.raises(openai.AuthenticationError) as e:
        oa(gw.url, "sk-wrong").chat.completions.create(model="gpt", messages=MSG)
    assert e.value.status_code == 401 and e.value.body["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="sk-old", max_retries=0).messages.create(
            model="claude", max_tokens=10, messages=MSG)
    with pytest.raises(openai.PermissionDeniedError):
        oa(gw.url, "sk-narrow").chat.completions.create(model="gpt", messages=MSG)
    assert [m.id for m in oa(gw.url, "sk-narrow").models.list()] == ["claude"]
    assert len(up.requests) == 0 or all(r.path for r in up.requests)  # nothing of the above went upstream


def test_rate_limit_per_key(keyed):
    up, gw, _ = keyed
    up.enqueue(rec("openai_chat/text_usage_chunk.sse"))
    oa(gw.url, "sk-one").chat.completions.create(model="gpt", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        oa(gw.url, "sk-one").chat.completions.create(model="gpt", messages=MSG)
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_unknown_model_bad_json_oversized(keyed):
    up, gw, _ = keyed
    with pytest.raises(openai.NotFoundError) as e:
        oa(gw.url).chat.completions.create(model="nope", messages=MSG)
    assert e.value.body["code"] == "model_not_found"
    r = httpx.post(gw.url + "/v1/chat/completions", content=b"{not json", headers={"authorization": "Bearer sk-team-a"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(gw.url + "/v1/messages", content=b"x" * 5000, headers={"x-api-key": "sk-team-a"})
    assert r.status_code == 413 and r.json()["type"] == "error"
    r = httpx.post(gw.url + "/v1/messages", json={"model": "claude"}, headers={"x-api-key": "sk-team-a"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_any_body_json_loads_reads_is_read_and_a_broken_one_says_where(keyed):
    up, gw, _ = keyed
    body = json.dumps({"model": "gpt", "messages": MSG}, indent=2) + "\n"
    headers = {"authorization": "Bearer sk-team-a", "content-type": "application/json"}
    for raw in (body.encode(), b"\xef\xbb\xbf" + body.encode(), body.encode("utf-16")):  # padded, a BOM, UTF-16
        up.enqueue(rec("openai_chat/text_usage_chunk.sse"))
        r = httpx.post(gw.url + "/v1/chat/completions", content=raw, headers=headers)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], raw[:8]
    broken = b'{"model": "gpt", "messages": [}'
    with pytest.raises(ValueError) as stdlib:
        json.loads(broken)
    r = httpx.post(gw.url + "/v1/chat/completions", content=broken, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["message"] == f"the body is not valid JSON: {stdlib.value}"


def test_upstream_rejection_keeps_status_shape_and_retry_after(keyed):
    up, gw, _ = keyed
    up.enqueue(faults.status(429, "slow down", retry_after=7, protocol="anthropic"))
    with pytest.raises(openai.RateLimitError) as e:
        oa(gw.url).chat.completions.create(model="claude", messages=MSG, stream=True)
    assert e.value.response.headers["retry-after"] == "7"
    assert "slow down" in e.value.body["message"]
    up.enqueue(faults.status(400, "bad thing", protocol="openai_chat"))
    with pytest.raises(anthropic.BadRequestError) as e2:
        anthropic.Anthropic(base_url=gw.url, api_key="sk-team-a", max_retries=0).messages.create(
            model="gpt", max_tokens=10, messages=MSG)
    assert e2.value.body["error"]["type"] == "invalid_request_error"


# -- in-stream errors and failover ------------------------------------------------------------
def test_cut_without_fallback_ends_with_an_error_frame(keyed):
    up, gw, _ = keyed
    up.enqueue(faults.cut("openai_chat/text_usage_chunk.sse", after=6))
    parts = []
    with pytest.raises(openai.APIError) as e:
        for chunk in oa(gw.url).chat.completions.create(model="gpt", messages=MSG, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    assert parts and "mid-stream" in str(e.value.message)
    up.enqueue(faults.error_event("anthropic", "anthropic/text_basic.sse", after=4))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-team-a", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e2:
        with client.messages.stream(model="claude", max_tokens=100, messages=MSG) as s:
            for _ in s:
                pass
    assert e2.value.body["error"]["type"] in ("overloaded_error", "api_error")


def test_a_cut_in_the_middle_of_an_event_still_ends_with_an_error_frame(keyed):
    # The upstream's bytes arrive in pieces that split events; the connection is cut after a piece
    # that ends mid-event. Only whole events may have been relayed, or the error frame lands inside
    # the half-sent one and the client sees a stream that just stops.
    up, gw, _ = keyed
    name, size = "openai_chat/text_usage_chunk.sse", 50
    body = Reply.recording(name).body
    after = next(k for k in range(30, len(body) // size) if b"\n\n" not in body[(k - 1) * size:k * size])
    whole = body[:after * size].rsplit(b"\n\n", 1)[0]
    shown = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                    for e in whole.split(b"\n\n") if e.startswith(b"data: {") and json.loads(e[6:])["choices"])
    up.enqueue(faults.cut(name, after=after, chunking=size, delay=0.005))
    parts = []
    with pytest.raises(openai.APIError) as e:
        for chunk in oa(gw.url).chat.completions.create(model="gpt", messages=MSG, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    assert "mid-stream" in str(e.value.message)
    assert "".join(parts) == shown and shown


def test_mid_stream_failover_is_one_stream_without_repeats(keyed):
    up, gw, _ = keyed
    events = faults.events("openai_chat/text_usage_chunk.sse")
    up.enqueue(faults.cut("openai_chat/text_usage_chunk.sse", after=8), rec("anthropic/text_basic.sse"))
    shown = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:8]
                    if e.startswith(b"data: {"))
    parts, finish = [], None
    for chunk in oa(gw.url).chat.completions.create(model="fb", messages=MSG, stream=True):
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts) == shown + "- Captain\n- Scoop"  # the cut model's text once, then the continuation
    assert finish == "stop"
    prefill = up.requests[-1].json["messages"]
    assert prefill[-1]["role"] == "assistant" and prefill[-1]["content"][0]["text"] == shown.rstrip()


def test_non_streaming_failover_continues_without_repeats(keyed):
    up, gw, _ = keyed
    events = faults.events("openai_chat/text_usage_chunk.sse")
    shown = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:8]
                    if e.startswith(b"data: {"))
    up.enqueue(faults.cut("openai_chat/text_usage_chunk.sse", after=8), rec("anthropic/text_basic.sse"))
    r = oa(gw.url).chat.completions.create(model="fb", messages=MSG)
    assert r.choices[0].message.content == shown + "- Captain\n- Scoop"
    # the same protocol on both sides: the continuation carries the partial answer, not the client's body again
    up.enqueue(faults.cut("openai_chat/text_usage_chunk.sse", after=8), rec("openai_chat/text_usage_chunk.sse"))
    oa(gw.url).chat.completions.create(model="fb_same", messages=MSG)
    sent = up.requests[-1].json["messages"]
    assert len(sent) > 1 and any(m["role"] == "assistant" and shown.rstrip() in str(m["content"]) for m in sent)


def test_anthropic_client_failover_continues_the_open_block(keyed):
    up, gw, _ = keyed
    up.enqueue(faults.cut("openai_chat/text_usage_chunk.sse", after=8), rec("anthropic/text_basic.sse"))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-team-a", max_retries=0)
    with client.messages.stream(model="fb", max_tokens=100, messages=MSG) as s:
        text = s.get_final_text()
        msg = s.get_final_message()
    assert text.endswith("- Captain\n- Scoop") and len(msg.content) == 1 and msg.stop_reason == "end_turn"


# -- disconnects, keep-alives, logs -----------------------------------------------------------
#: The upstream in the disconnect tests sends a little, then stalls this long (waking at once when the
#: gateway hangs up): it cannot finish while the test runs, so its request ending early is the gateway's
#: doing. The waits for that (30 s) are hang guards, not speed bounds.
UPSTREAM_HOLD = 60


def test_client_disconnect_closes_upstream_and_logs_aborted(keyed):
    up, gw, db = keyed
    up.enqueue(faults.stall("anthropic/text_basic.sse", after=2, seconds=UPSTREAM_HOLD))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        body = json.dumps({"model": "claude", "max_tokens": 50, "messages": MSG, "stream": True}).encode()
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: sk-team-a\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        first = sock.recv(65536)
        assert b"200 OK" in first
    gone = up.wait_disconnect(30)
    assert gone is not None and not gone.completed, "the gateway did not close the upstream when the client left"
    last = [r for r in rows(gw, db) if r["status"] == "aborted"]  # rows() waits for the call to end
    assert last and json.loads(last[-1]["tags"])["gateway_key"] == "team-a"


def test_keepalive_comments_before_the_first_byte(keyed):
    up, gw, _ = keyed
    up.enqueue(rec("anthropic/text_basic.sse", first_byte_delay=0.6))
    lines = []
    with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-team-a"},
                      json={"model": "claude", "messages": MSG, "stream": True}, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                lines.append(line)
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]"


def test_logs_metrics_overhead_header(keyed):
    up, gw, db = keyed
    up.enqueue(rec("openai_chat/text_usage_chunk.sse"))
    raw = oa(gw.url).chat.completions.with_raw_response.create(model="gpt", messages=MSG)
    assert float(raw.headers["x-llmrelay-overhead-ms"]) >= 0
    row = rows(gw, db)[-1]
    tags = json.loads(row["tags"])
    assert row["status"] == "ok" and tags["gateway_model"] == "gpt" and tags["gateway_overhead_ms"] >= 0
    assert row["output_tokens"] == 30
    text = httpx.get(gw.url + "/metrics").text
    assert 'llmrelay_gateway_requests_total{endpoint="chat",model="gpt",status="ok"}' in text
    assert "llmrelay_gateway_overhead_ms_bucket" in text and 'kind="output"' in text
    import time

    deadline = time.monotonic() + 20  # priced on the metrics' own thread, off the event loop
    while 'llmrelay_gateway_cost_usd_total{model="gpt"}' not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = httpx.get(gw.url + "/metrics").text
    assert 'llmrelay_gateway_cost_usd_total{model="gpt"}' in text
    assert httpx.get(gw.url + "/health/live").status_code == 200
    assert httpx.get(gw.url + "/health/ready").json()["status"] == "ready"


# -- config -----------------------------------------------------------------------------------
def test_config_errors_name_the_line():
    with pytest.raises(ConfigError) as e:
        parse("models:\n  a:\n    model: openai:gpt-4o\n    fallback_mode: sideways\n")
    assert "line 4" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse("models:\n  a:\n    model: nosuch:thing\n")
    assert "line 3" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse("models:\n  a:\n    model: openai:gpt-4o\n    api_key: ${NOT_SET_ANYWHERE}\n", env={})
    assert "NOT_SET_ANYWHERE" in str(e.value) and "line 4" in str(e.value)
    c = parse("models:\n  a:\n    model: openai:gpt-4o\n    api_key: os.environ/K\nkeys:\n  - key: ${G}\n",
              env={"K": "sk-1", "G": "gw"})
    assert c.routes["a"].targets[0].api_key == "sk-1" and hash_key("gw") in c.keys


def test_serve_check(tmp_path):
    from llmrelay.cli.main import main

    good = tmp_path / "g.yaml"
    good.write_text("models:\n  a:\n    model: openai:gpt-4o\n    api_key: x\n")
    assert main(["serve", "--config", str(good), "--check"]) == 0
    bad = tmp_path / "b.yaml"
    bad.write_text("models:\n  a:\n    modle: openai:gpt-4o\n")
    assert main(["serve", "--config", str(bad), "--check"]) == 2


def test_reload_keeps_streams_in_flight(tmp_path):
    with ReplayServer() as up:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(config_for(up.url))
        with GatewayThread(path=str(cfg)) as gw:
            up.enqueue(faults.drip("anthropic/text_basic.sse", delay=0.1))
            client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
            with client.messages.stream(model="claude", max_tokens=50, messages=MSG) as s:
                events = iter(s)
                next(events)  # the stream is in flight
                cfg.write_text(config_for(up.url, "  extra:\n    model: openai:gpt-4o\n    base_url: " + up.url
                                          + "/v1\n    api_key: x\n"))
                assert gw.app.reload()
                for _ in events:
                    pass
                assert s.get_final_text() == "- Captain\n- Scoop"  # finished on the old generation
            assert "extra" in [m.id for m in oa(gw.url).models.list()]
            cfg.write_text("models: [broken")
            assert not gw.app.reload()  # a bad file is refused; the running config stays
            assert "extra" in [m.id for m in oa(gw.url).models.list()]



def test_otel_server_span_around_the_upstream_spans():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, "server: {otel: true}"), tracer_provider=provider) as gw:
            up.enqueue(rec("anthropic/text_basic.sse"))
            oa(gw.url).chat.completions.create(model="claude", messages=MSG)
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind.name == "SERVER"]
    assert len(server) == 1 and server[0].attributes["llmrelay.gateway.model"] == "claude"
    inner = [s for s in spans if s.kind.name != "SERVER"]
    assert inner and all(s.context.trace_id == server[0].context.trace_id for s in inner)


def _hang_up_after_headers(port: int, path: bytes, body: dict, key: bytes = b"sk-team-a", up=None) -> None:
    import time

    seen = len(up.requests) if up is not None else 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        data = json.dumps(body).encode()
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + key +
                     b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data))
        if body.get("stream"):
            assert b"200 OK" in sock.recv(65536)
        elif up is not None:  # hang up once the upstream request is under way
            deadline = time.monotonic() + 30
            while len(up.requests) == seen and time.monotonic() < deadline:
                time.sleep(0.01)


def test_non_streaming_disconnect_closes_upstream(keyed):
    up, gw, db = keyed
    up.enqueue(faults.stall("openai_chat/text_usage_chunk.sse", after=2, seconds=UPSTREAM_HOLD))
    import time

    _hang_up_after_headers(gw.port, b"/v1/chat/completions", {"model": "gpt", "messages": MSG}, up=up)
    mine = up.requests[-1]
    deadline = time.monotonic() + 30  # a hang guard
    while mine.disconnected_at is None and time.monotonic() < deadline:
        up.wait_disconnect(0.1)
    assert mine.disconnected_at is not None and not mine.completed


def test_drain_reads_the_upstream_to_the_end(tmp_path):
    import time

    db = tmp_path / "d.db"
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, f"logging: {db}\nserver: {{on_client_disconnect: drain}}")) as gw:
            up.enqueue(faults.drip("anthropic/text_basic.sse", delay=0.05))
            _hang_up_after_headers(gw.port, b"/v1/messages",
                                   {"model": "claude", "max_tokens": 50, "messages": MSG, "stream": True})
            deadline = time.monotonic() + 30
            while not (up.requests and up.requests[-1].completed) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert up.requests[-1].completed and up.requests[-1].disconnected_at is None
            # the row is queued as the call ends, just after the upstream: wait for the call, not a guess
            assert [(r["status"], r["output_tokens"]) for r in rows(gw, db)] == [("ok", 10)]


def test_cors_off_by_default_and_allowed_origins_when_configured():
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url)) as gw:
            r = httpx.get(gw.url + "/v1/models", headers={"origin": "https://app.example"})
            assert "access-control-allow-origin" not in r.headers
        with GatewayThread(config_for(up.url, "server: {cors: [https://app.example]}")) as gw:
            r = httpx.options(gw.url + "/v1/chat/completions", headers={"origin": "https://app.example"})
            assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://app.example"
            r = httpx.get(gw.url + "/v1/models", headers={"origin": "https://evil.example"})
            assert "access-control-allow-origin" not in r.headers
