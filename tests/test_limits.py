"""Never balloons (issue 12, items 2, 3, 7, 8): hostile responses against real local servers.

- An endless line, a gzip bomb (stream and error body), a huge error page: each stops at the
  client's `Limits` with a typed error that keeps what arrived; memory is measured with
  tracemalloc and stays bounded (the old code buffered without bound, or died in MemoryError).
- Line buffering is linear: a 24 MB line in 1 KB pieces is one frame (the timing is in `make bench`).
- A 200 that is not a stream (HTML, a JSON completion, empty) raises `UnexpectedResponseError`
  naming the content type and showing the first bytes, retried and falling back like a 5xx.
- Permanent errors (quota, billing) are not retried, in-band or by status.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import pytest

import llmrelay
from llmrelay import Limits, ResponseTooLargeError, UnexpectedResponseError
from llmrelay.testing import Reply, faults
from llmrelay.wire import NDJSONParser, SSEParser

from helpers import run, texts
from hostile import HostileServer, gzip_bomb, head

MB = 1 << 20
DONE = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
HELLO = b"".join(b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % w for w in (b"Hel", b"lo"))
MODES = ["sync", "httpx", "aiohttp"]


def client(url: str, mode: str, **kw) -> llmrelay.Client:
    kw.setdefault("retry", 0)
    return llmrelay.Client(base_urls={"openai": url + "/v1"}, api_keys={"openai": "k"},
                           async_backend="aiohttp" if mode == "aiohttp" else "httpx", **kw)


def measured(c: llmrelay.Client, mode: str, **kw):
    """Run one streamed call; (events, error, tracemalloc peak in bytes)."""
    tracemalloc.start()
    try:
        events, err, _ = asyncio.run(run(c, "sync" if mode == "sync" else "async", "openai:gpt-4o", **kw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        c.close()
    return events, err, peak


def endless(piece: bytes, prefix: bytes = b"", **headers: str):
    def behaviour(request):
        yield head(**headers) + prefix
        while True:
            yield piece
    return behaviour


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_line_stops_at_max_line(mode):
    with HostileServer(endless(b"x" * 65536, HELLO + b"data: ")) as srv:
        events, err, peak = measured(client(srv.url, mode, limits=Limits(max_line=2 * MB)), mode)
        assert srv.hung_up.wait(10)
    assert type(err) is ResponseTooLargeError and err.limit == "max_line" and err.size == 2 * MB
    assert err.partial.text == texts(events) == "Hello"  # what came before is kept
    assert err.provider == "openai"
    assert peak < 16 * MB, peak


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_multiline_event_stops_at_max_line(mode):
    with HostileServer(endless(b"data: yyyy\n" * 4096, HELLO)) as srv:
        events, err, peak = measured(client(srv.url, mode, limits=Limits(max_line=MB)), mode)
    assert type(err) is ResponseTooLargeError and err.limit == "max_line"
    assert "event" in str(err) and err.partial.text == "Hello"
    assert peak < 12 * MB, peak


@pytest.mark.parametrize("mode", MODES)
def test_a_gzip_bomb_stops_at_max_line(mode):
    """~1 GB of zeros, a few hundred KB on the wire: stops at the longest line (16 MB by default)."""
    def bomb(request):
        yield head(content_encoding="gzip")
        yield from gzip_bomb(1024 * MB, prefix=HELLO)
    with HostileServer(bomb) as srv:
        events, err, peak = measured(client(srv.url, mode), mode)
    assert type(err) is ResponseTooLargeError and err.limit == "max_line"
    assert err.partial.text == "Hello"
    assert peak < 48 * MB, peak  # the 16 MB line buffered, never the gigabyte


@pytest.mark.parametrize("mode", MODES)
def test_a_gzip_bomb_of_valid_lines_stops_at_max_body(mode):
    def bomb(request):
        yield head(content_encoding="gzip")
        yield from gzip_bomb(1024 * MB, piece=b": keep-alive\n\n" * 65536, prefix=HELLO)
    with HostileServer(bomb) as srv:
        events, err, peak = measured(client(srv.url, mode, limits=Limits(max_body=8 * MB)), mode)
    assert type(err) is ResponseTooLargeError and err.limit == "max_body"
    assert err.partial.text == "Hello"
    assert peak < 16 * MB, peak


@pytest.mark.parametrize("mode", MODES)
def test_the_read_that_crosses_max_body_is_not_handed_over(mode):
    """One event, a pause, then the rest of the answer and its end in one piece that crosses the
    limit: every transport stops at the limit, the text before it kept, nothing of the piece shown."""
    def behaviour(request):
        yield head() + HELLO[:HELLO.index(b"\n\n") + 2]
        time.sleep(0.2)
        yield HELLO[HELLO.index(b"\n\n") + 2:] + b": " + b"p" * 3000 + b"\n\n" + DONE
        time.sleep(0.3)
    with HostileServer(behaviour) as srv:
        events, err, _ = measured(client(srv.url, mode, limits=Limits(max_body=1000)), mode)
    assert type(err) is ResponseTooLargeError and err.limit == "max_body"
    assert err.partial.text == texts(events) == "Hel"
    assert not [e for e in events if type(e).__name__ == "Finish"]


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_body_of_valid_events_stops_at_max_body(mode):
    """Not compressed: valid, short events forever (no line limit applies) stop at `max_body`."""
    with HostileServer(endless(b": keep-alive\n\n" * 4096, HELLO)) as srv:
        events, err, peak = measured(client(srv.url, mode, limits=Limits(max_body=4 * MB)), mode)
        assert srv.hung_up.wait(10)
    assert type(err) is ResponseTooLargeError and err.limit == "max_body" and err.size == 4 * MB
    assert err.partial.text == texts(events) == "Hello"
    assert peak < 12 * MB, peak


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("compressed", [True, False], ids=["gzip-bomb", "plain"])
def test_an_error_body_is_read_only_up_to_max_error_body(mode, compressed):
    prefix = b'{"error": {"message": "overloaded ' + b"z" * 100

    def huge_500(request):
        if compressed:
            yield head(500, "application/json", content_encoding="gzip")
            yield from gzip_bomb(1024 * MB, piece=b"z" * MB, prefix=prefix)
        else:
            yield head(500, "application/json") + prefix
            while True:
                yield b"z" * 65536
    with HostileServer(huge_500) as srv:
        events, err, peak = measured(client(srv.url, mode), mode)
        assert srv.hung_up.wait(10)  # the rest was never read: the connection was dropped
    assert type(err) is llmrelay.InternalServerError and err.status_code == 500
    assert "error body cut at 65536 bytes" in str(err) and "overloaded zzz" in str(err)
    assert peak < 8 * MB, peak


@pytest.mark.parametrize("parser", [SSEParser, NDJSONParser])
def test_a_long_line_in_small_pieces_is_one_frame(parser):
    line = b'{"t": "' + b"a" * (24 * MB) + b'"}'
    p = parser(max_line=64 * MB)
    data = (b"data: " + line + b"\n\n") if parser is SSEParser else line + b"\n"
    frames = []
    for i in range(0, len(data), 1024):
        frames += p.feed(data[i:i + 1024])
    frames += p.close()
    assert len(frames) == 1
    payload = frames[0][1] if parser is SSEParser else frames[0]
    assert payload == line


def test_parsers_raise_past_max_line():
    for p in (SSEParser(max_line=1000), NDJSONParser(max_line=1000)):
        p.feed(b"data: " + b"a" * 900)
        with pytest.raises(ResponseTooLargeError):
            p.feed(b"a" * 200)


# -- a 200 that is not a stream ------------------------------------------------------------

NOT_STREAMS = {
    "html": (b"<!DOCTYPE html><html><body>Just a moment...</body></html>\n", "text/html"),
    "json-completion": (json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}).encode(),
        "application/json"),
    "empty": (b"", "text/event-stream"),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", NOT_STREAMS)
async def test_a_200_that_is_not_a_stream(server, client, mode, kind):
    body, ctype = NOT_STREAMS[kind]
    server.enqueue(Reply(body, headers={"content-type": ctype}))
    events, err, _ = await run(client, mode, "openai:gpt-4o")
    assert type(err) is UnexpectedResponseError
    assert err.status_code == 200 and err.content_type == ctype and ctype in str(err)
    assert (body[:20].decode() in str(err)) if body else ("empty" in str(err))
    assert err.partial is not None and err.partial.text == ""


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_200_that_is_not_a_stream_is_retried_and_falls_back(server, mode):
    html, ctype = NOT_STREAMS["html"]
    server.enqueue(Reply(html, headers={"content-type": ctype}), Reply.recording("openai_chat/text_usage_chunk.sse"))
    c = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, api_keys={"openai": "k"},
                        retry=llmrelay.Retry(1, initial_delay=0))
    events, err, r = await run(c, mode, "openai:gpt-4o")
    assert err is None and r.status == "ok" and len(server.requests) == 2
    server.enqueue(Reply(html, headers={"content-type": ctype}), Reply.recording("openai_chat/text_usage_chunk.sse"))
    c = llmrelay.Client(base_urls={"openai": server.url + "/v1", "groq": server.url + "/v1"},
                        api_keys={"openai": "k", "groq": "k"}, retry=0)
    events, err, r = await run(c, mode, ["openai:gpt-4o", "groq:llama"])
    assert err is None and r.provider == "groq"
    assert type(r.attempts[0].error) is UnexpectedResponseError


# -- permanent errors ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_insufficient_quota_is_never_retried(server, mode):
    c = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, api_keys={"openai": "k"},
                        retry=llmrelay.Retry(2, initial_delay=0))
    quota = "You exceeded your current quota, please check your plan and billing details."
    server.enqueue(Reply(faults.error_chunk("openai_chat", quota, status=429, code="insufficient_quota")),
                   Reply.recording("openai_chat/text_usage_chunk.sse"))
    events, err, _ = await run(c, mode, "openai:gpt-4o")
    assert type(err) is llmrelay.ProviderStreamError and err.code == "insufficient_quota"
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_429_for_insufficient_quota_is_never_retried(server, mode):
    c = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, api_keys={"openai": "k"},
                        retry=llmrelay.Retry(2, initial_delay=0))
    quota = "You exceeded your current quota, please check your plan and billing details."
    server.enqueue(Reply.json({"error": {"message": quota, "type": "insufficient_quota", "code": "insufficient_quota"}},
                              status=429), Reply.recording("openai_chat/text_usage_chunk.sse"))
    events, err, _ = await run(c, mode, "openai:gpt-4o")
    assert type(err) is llmrelay.RateLimitError and len(server.requests) == 1
    assert llmrelay.errors.is_permanent(err)
