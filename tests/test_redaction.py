"""Secrets echoed by a provider never leak (issue 12, item 5).

A hostile server echoes everything it receives (request line, every header, the body) into a
401 error body and into an in-band error event. The client knows an API key, a custom auth
header, a URL password and a `?key=` parameter. Every byte of what the caller and the
operators can see is scanned for each secret: the exceptions (str, repr, args, body, the
partial response), the SQLite log and its request/response files, the in-memory OpenTelemetry
spans (attributes, events, status) and the log records of the `Logging` middleware.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

import llmrelay
from llmrelay.logs import LogHook
from llmrelay.reliability.builtins import Logging

from hostile import HostileServer

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from llmrelay.observability.tracing import OpenTelemetryHooks  # noqa: E402

KEY = "sk-echoTESTkey-7c1d9e2f4a6b8c0d"
CUSTOM = "custom-auth-TEST-93b1e5d7f9a2"
PASSWORD = "urlPW-TEST-41a7c9e3"
QUERY_KEY = "qkey-TEST-5e8a2c4b6d"
SECRETS = [KEY, CUSTOM, PASSWORD, QUERY_KEY, base64.b64encode(f"alice:{PASSWORD}".encode()).decode()]


def echo(in_band: bool):
    def behaviour(request):
        seen = request["line"] + " " + json.dumps(request["headers"]) + " " + request["body"].decode()
        err = {"error": {"message": f"Incorrect API key provided: {seen}", "type": "invalid_request_error",
                         "code": "invalid_api_key"}}
        if in_band:
            body = b"data: " + json.dumps(err).encode() + b"\n\n"
            yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + body
        else:
            body = json.dumps(err).encode()
            # connection: close, as the server closes after one answer: a client that reused the socket would
            # race its close (a reset while sending the next request, which then never reaches the server)
            yield (b"HTTP/1.1 401 X\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                   % (len(body), body))
    return behaviour


def every_byte(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


@pytest.mark.parametrize("in_band", [False, True], ids=["status-401", "in-band"])
@pytest.mark.parametrize("mode", ["sync", "httpx", "aiohttp"])
def test_no_echoed_secret_anywhere(tmp_path, caplog, in_band, mode):
    import asyncio

    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    store = tmp_path / "store"
    log = LogHook(store / "logs.db", files_dir=store / "files")
    errors: list[BaseException] = []
    with HostileServer(echo(in_band)) as srv:
        client = llmrelay.Client(
            api_keys={"openai": KEY}, retry=0, hooks=[OpenTelemetryHooks(tracer_provider=tracer), log],
            middleware=[Logging(log_content=True)], async_backend="aiohttp" if mode == "aiohttp" else "httpx")
        calls = [  # the key and a custom auth header; a password in the URL; a ?key= parameter
            dict(base_url=srv.url + "/v1", extra_headers={"x-custom-auth": CUSTOM}),
            dict(base_url=f"http://alice:{PASSWORD}@127.0.0.1:{srv.port}/v1"),
            dict(base_url=f"{srv.url}/v1?key={QUERY_KEY}&x=1"),
        ]
        caplog.set_level(logging.DEBUG)
        for kw in calls:
            with pytest.raises(llmrelay.LLMRelayError) as info:  # aiohttp refuses a URL password + auth header
                if mode == "sync":
                    client.complete("openai:gpt-4o", "hi", **kw)
                else:
                    asyncio.run(client.acomplete("openai:gpt-4o", "hi", **kw))
            errors.append(info.value)
        client.close()
        sent = b" ".join(json.dumps(r["headers"]).encode() + r["line"].encode() for r in srv.requests)
    assert log.flush(10)
    log.close()
    # the server did receive every secret: the scan below would see a leak
    assert all(s.encode() in sent for s in (KEY, CUSTOM, QUERY_KEY))
    assert mode == "aiohttp" or SECRETS[4].encode() in sent  # aiohttp refuses to send a URL password with a key
    blobs = []
    for e in errors:
        blobs += [str(e), repr(e), repr(e.args), json.dumps(getattr(e, "body", None), default=str),
                  repr(getattr(e, "partial", None))]
        assert "[REDACTED]" in str(e) or type(e) is llmrelay.InvalidRequestError, str(e)
    for s in exporter.get_finished_spans():
        blobs += [s.name, str(s.status.description), repr(dict(s.attributes))]
        blobs += [repr(ev.name) + repr(dict(ev.attributes)) for ev in s.events]
    blobs += [r.getMessage() + repr(getattr(r, "llmrelay", "")) for r in caplog.records]
    text = "\n".join(blobs).encode() + every_byte(store)
    for secret in SECRETS:
        assert secret.encode() not in text, f"{secret!r} leaked"
