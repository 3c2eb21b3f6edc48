"""Typed errors and timeouts through the real HTTP path, sync and async.

HTTP status errors map to the typed hierarchy with the provider's message,
`.status_code`, `.body` and `retry_after`; timeouts are `APITimeoutError` with
`.kind` and the partial response; cuts, malformed chunks and garbage become
`StreamInterruptedError` / `MalformedChunkError`; never an httpx exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time

import httpx
import pytest

import llmrelay
from llmrelay import (
    UnexpectedResponseError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContextWindowExceededError,
    InternalServerError,
    MalformedChunkError,
    MissingAPIKeyError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderStreamError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    StreamInterruptedError,
    Timeouts,
    UnprocessableEntityError,
)
from llmrelay.testing import Reply, read_recording

from helpers import drain, texts
from hostile import HostileServer

MODEL = "openai:gpt-4o"
SHORT = "openai_chat/text_usage_chunk.sse"
BODY = read_recording(SHORT)
EVENTS = [e + b"\n\n" for e in BODY.split(b"\n\n") if e.strip()]
SHORT_TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
    "I recommend checking a reliable weather website or a weather app."
)
SSE = {"content-type": "text/event-stream"}


def open_stream(client, mode, model=MODEL, messages="hi", **kw):
    return client.stream(model, messages, **kw) if mode == "sync" else client.astream(model, messages, **kw)


async def consume(s, mode) -> list:
    """Iterate the whole stream, returning the events (raises what the stream raises)."""
    if mode == "sync":
        return list(s)
    return [e async for e in s]


async def run(client, mode, model=MODEL, messages="hi", **kw):
    """Stream to the end; return (events, raised error or None, stream)."""
    s = open_stream(client, mode, model, messages, **kw)
    got, exc = await drain(s, mode)
    return got, exc, s


def assert_ours(exc: BaseException) -> None:
    """An llmrelay error, never a raw httpx (or other library) exception."""
    assert isinstance(exc, llmrelay.LLMRelayError), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert not isinstance(exc, httpx.HTTPError)
    assert type(exc).__module__.startswith("llmrelay")


# -- HTTP status errors ----------------------------------------------------------

OPENAI_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "130021 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


def _err(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


STATUS_CASES = [
    (400, _err("Invalid value for 'temperature': must be between 0 and 2."), BadRequestError),
    (400, OPENAI_CONTEXT, ContextWindowExceededError),
    (401, _err("Incorrect API key provided: sk-abc. You can find your API key at ...", code="invalid_api_key"), AuthenticationError),
    (403, _err("Project does not have access to model gpt-4o", code="model_not_found"), PermissionDeniedError),
    (404, _err("The model `gpt-9` does not exist or you do not have access to it.", code="model_not_found"), NotFoundError),
    (409, _err("Another request with this idempotency key is in progress."), ConflictError),
    (413, _err("Request body too large: 41943040 bytes, limit 20971520."), RequestTooLargeError),
    (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "value_error.missing"}]}, UnprocessableEntityError),
    (429, _err("Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000.", "tokens", "rate_limit_exceeded"), RateLimitError),
    (500, _err("The server had an error while processing your request. Sorry about that!", "server_error"), InternalServerError),
    (503, _err("The engine is currently overloaded, please try again later.", "server_error"), ServiceUnavailableError),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, OverloadedError),
]


def _expected_message(body: dict) -> str:
    err = body.get("error")
    if isinstance(err, dict):
        return err["message"]
    return body["detail"][0]["msg"]


@pytest.mark.parametrize("status,body,cls", STATUS_CASES, ids=[f"{s}-{c.__name__}" for s, _, c in STATUS_CASES])
async def test_status_errors_are_typed(server, client, mode, status, body, cls):
    # `default`: should a retry layer re-send the request, it gets the same answer
    server.default = Reply.json(body, status=status, headers={"x-request-id": "req_123"})
    s = open_stream(client, mode)
    assert server.requests == []  # nothing is sent before iteration starts
    with pytest.raises(APIStatusError) as info:
        await consume(s, mode)
    e = info.value
    assert type(e) is cls
    assert_ours(e)
    assert e.status_code == status
    assert e.body == body
    assert _expected_message(body) in str(e)
    assert _expected_message(body) in e.message
    assert e.provider == "openai"
    assert e.model == "gpt-4o"
    assert e.request_id == "req_123"
    assert len(server.requests) >= 1
    assert s.response.status == "error"


async def test_status_error_from_complete(server, client, mode):
    server.enqueue(Reply.json(_err("bad key"), status=401))
    with pytest.raises(AuthenticationError) as info:
        if mode == "sync":
            client.complete(MODEL, "hi")
        else:
            await client.acomplete(MODEL, "hi")
    assert info.value.status_code == 401
    assert "bad key" in str(info.value)


async def test_context_window_error_is_a_bad_request(server, client, mode):
    server.enqueue(Reply.json(OPENAI_CONTEXT, status=400))
    _, e, _ = await run(client, mode)
    assert isinstance(e, ContextWindowExceededError)
    assert isinstance(e, BadRequestError)
    assert "maximum context length" in str(e)


async def test_error_body_that_is_not_json(server, client, mode):
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    server.enqueue(Reply(html, status=502, headers={"content-type": "text/html"}))
    _, e, _ = await run(client, mode)
    assert isinstance(e, InternalServerError)
    assert_ours(e)
    assert e.status_code == 502
    assert "502 Bad Gateway" in str(e)


async def test_error_with_empty_body(server, client, mode):
    server.enqueue(Reply(b"", status=500))
    _, e, _ = await run(client, mode)
    assert type(e) is InternalServerError
    assert e.status_code == 500


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({}, None),
    ],
    ids=["seconds", "fractional", "ms", "ms-wins", "absent"],
)
async def test_rate_limit_retry_after(server, client, mode, headers, expected):
    server.enqueue(Reply.json(_err("Rate limit reached", "requests", "rate_limit_exceeded"), status=429, headers=headers))
    _, e, _ = await run(client, mode)
    assert type(e) is RateLimitError
    assert e.retry_after == expected


async def test_rate_limit_retry_after_http_date(server, client, mode):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.enqueue(Reply.json(_err("Rate limit reached"), status=429, headers={"retry-after": when}))
    _, e, _ = await run(client, mode)
    assert type(e) is RateLimitError
    assert e.retry_after is not None
    assert 20 <= e.retry_after <= 31


async def test_retry_after_on_503(server, client, mode):
    server.enqueue(Reply.json(_err("try later", "server_error"), status=503, headers={"retry-after": "7"}))
    _, e, _ = await run(client, mode)
    assert type(e) is ServiceUnavailableError
    assert e.retry_after == 7.0


async def test_unmapped_status_is_still_typed(server, client, mode):
    server.enqueue(Reply.json(_err("I'm a teapot"), status=418))
    _, e, _ = await run(client, mode)
    assert isinstance(e, APIStatusError)
    assert_ours(e)
    assert e.status_code == 418
    assert "I'm a teapot" in str(e)


# -- timeouts ----------------------------------------------------------------------


def _first_events_size(n: int) -> int:
    return sum(len(e) for e in EVENTS[:n])


#: How long the server holds back in the timeout tests: ~70-100x every timeout they set (0.2-0.3 s),
#: so only the client's timeout can end the call early, even on a loaded machine. The server
#: wakes at once when the client hangs up, so a working timeout never waits for it. No test
#: here asserts a duration (speed is for benchmarks): each asserts the typed error and that it
#: came before the server got to send what it held back.
HOLD = 20.0


async def hung_up(server):
    """The one request, once the server saw the client close it (off the event loop: an async
    client's socket closes on the loop's next turn). 10 s is a hang guard, not a speed bound."""
    (req,) = server.requests
    assert await asyncio.to_thread(server.wait_disconnect, 10) is req, "the timed-out call never released its connection"
    return req


async def cut_short(server, sent: int) -> None:
    """The one request was abandoned by the client: the server had written `sent` body bytes and
    never finished, and it saw the connection close (the timeout released it)."""
    req = await hung_up(server)
    assert not req.completed
    assert req.written == sent


async def test_first_byte_timeout(server, client, mode):
    server.enqueue(Reply.recording(SHORT, first_byte_delay=HOLD))
    events, e, s = await run(client, mode, timeout=Timeouts(first_byte=0.2))
    assert type(e) is APITimeoutError
    assert_ours(e)
    assert e.kind == "first_byte"
    assert events == []
    await cut_short(server, 0)  # it fired before the server's first byte
    assert e.provider == "openai"
    assert s.response.status == "error"
    if mode == "async":  # the aiohttp transport times the wait out by cancelling the task: nothing of that is left
        assert asyncio.current_task().cancelling() == 0


async def test_cancelling_the_task_while_waiting_for_headers_is_a_cancellation_not_a_timeout(server, client):
    """The caller's own cancel during the wait for headers propagates as CancelledError, and the
    first_byte deadline (which cancels the task itself) does not turn it into a timeout later."""
    server.enqueue(Reply.recording(SHORT, first_byte_delay=HOLD))

    async def consume():
        return await run(client, "async", timeout=Timeouts(first_byte=0.3))

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await hung_up(server)
    await asyncio.sleep(0.5)  # past the first_byte deadline: the watch holds nothing of that task any more


@pytest.fixture
def unaccepting():
    """A base URL whose listener never accepts and has a full accept queue: a connect to it waits
    (the kernel drops its SYNs) until the client gives up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    filler = socket.create_connection(srv.getsockname(), timeout=5)  # takes the queue's one place
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    filler.close()
    srv.close()


async def test_first_byte_counts_once_connected(unaccepting, mode):
    """A connect that waits is bounded by `connect`, not by a shorter `first_byte`: the first byte
    cannot come before the connection, so its wait begins there (as a socket read timeout's would)."""
    c = llmrelay.Client(api_keys={"openai": "sk-test"}, retry=0)
    try:
        events, e, _ = await run(c, mode, base_url=unaccepting, timeout=Timeouts(connect=0.8, first_byte=0.05))
    finally:
        if mode == "async":
            await c.aclose()
        c.close()
    assert type(e) is APITimeoutError, repr(e)
    assert e.kind == "connect", e
    assert events == []


async def test_first_byte_counts_once_connected_with_the_callers_aiohttp_session(unaccepting):
    """The same with an aiohttp session of the caller's (`async_http_client=`)."""
    import aiohttp

    given = aiohttp.ClientSession()
    c = llmrelay.Client(api_keys={"openai": "sk-test"}, retry=0, async_backend="aiohttp", async_http_client=given)
    try:
        events, e, _ = await run(c, "async", base_url=unaccepting, timeout=Timeouts(connect=0.8, first_byte=0.05))
    finally:
        await c.aclose()
        await given.close()
    assert type(e) is APITimeoutError, repr(e)
    assert e.kind == "connect", e
    assert events == []


async def test_idle_timeout_carries_partial(server, client, mode):
    # three events (role, "I'm", " unable"), then the server holds the rest back for HOLD s
    head = _first_events_size(3)
    server.enqueue(Reply(BODY, headers=SSE, chunking=[head, len(BODY)], delay=HOLD))
    events, e, _ = await run(client, mode, timeout=Timeouts(idle=0.2))
    assert type(e) is APITimeoutError
    assert e.kind == "idle"
    await cut_short(server, head)  # it fired during the silence, before the rest came
    assert e.partial is not None
    assert e.partial.text == "I'm unable"
    assert texts(events) == "I'm unable"
    assert e.partial.status == "error"
    assert e.partial.usage.estimated is True
    assert e.partial.usage.output_tokens and e.partial.usage.output_tokens > 0


async def test_idle_timeout_does_not_fire_on_a_steady_stream(server, client, mode):
    server.enqueue(Reply.recording(SHORT, chunking="events", delay=0.02))
    events, e, s = await run(client, mode, timeout=Timeouts(idle=0.5))
    assert e is None
    assert s.response.text == SHORT_TEXT


async def test_total_timeout_on_slow_drip(server, client, mode):
    """Every gap is short (0.25 s, well under idle) but the whole call exceeds total=0.3 s: the
    drip would take ~8 s, and the timeout ends it with the server only part way through."""
    server.enqueue(Reply.recording(SHORT, chunking="events", delay=0.25))
    events, e, _ = await run(client, mode, timeout=Timeouts(total=0.3))
    assert isinstance(e, APITimeoutError), f"no total timeout: got {e!r}"
    assert e.kind == "total"
    req = await hung_up(server)
    assert not req.completed
    assert 0 < req.written < len(BODY)  # the client hung up mid-drip
    assert e.partial is not None
    assert SHORT_TEXT.startswith(e.partial.text) and len(e.partial.text) < len(SHORT_TEXT)
    assert e.partial.text.startswith(texts(events))
    assert e.partial.usage.estimated is True


async def test_total_timeout_bounds_a_stall(server, client, mode):
    head = _first_events_size(3)
    server.enqueue(Reply(BODY, headers=SSE, chunking=[head, len(BODY)], delay=HOLD))
    _, e, _ = await run(client, mode, timeout=Timeouts(total=0.3))
    assert type(e) is APITimeoutError
    assert e.kind == "total"
    await cut_short(server, head)
    assert e.partial.text == "I'm unable"


async def test_total_timeout_before_headers(server, client, mode):
    server.enqueue(Reply.recording(SHORT, first_byte_delay=HOLD))
    _, e, _ = await run(client, mode, timeout=Timeouts(total=0.3))
    assert type(e) is APITimeoutError
    assert e.kind == "total"
    await cut_short(server, 0)


def _closed_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


async def test_connect_error_to_closed_port(mode):
    port = _closed_port()
    c = llmrelay.Client(base_urls={"openai": f"http://127.0.0.1:{port}/v1"}, api_keys={"openai": "k"})
    try:
        _, e, s = await run(c, mode)
    finally:
        await c.aclose()
    assert isinstance(e, APIConnectionError)
    assert not isinstance(e, (APITimeoutError, StreamInterruptedError))
    assert_ours(e)
    assert e.provider == "openai" and e.model == "gpt-4o"
    assert "could not reach openai" in str(e)  # the transport's own message names the provider too
    assert s.response.status == "error"


# -- cuts, malformed chunks, garbage ---------------------------------------------------


def cut_after(payload: bytes, *, half_chunk: bool = False):
    """A HostileServer behaviour: 200, some SSE bytes, then the connection dropped without ending the
    chunked body (a real mid-stream TCP cut); `half_chunk` announces more bytes than are sent."""
    def behaviour(request):
        yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        if half_chunk:
            yield b"%x\r\n%s" % (len(payload) + 500, payload)
        else:
            yield b"%x\r\n%s\r\n" % (len(payload), payload)
    return behaviour


@pytest.mark.parametrize("half_chunk", [False, True], ids=["between_chunks", "inside_chunk"])
async def test_connection_cut_mid_stream(mode, half_chunk):
    payload = b"".join(EVENTS[:6])  # role, I'm, unable, to, provide, real
    with HostileServer(cut_after(payload, half_chunk=half_chunk)) as cut:
        c = llmrelay.Client(base_urls={"openai": cut.url + "/v1"}, api_keys={"openai": "k"})
        try:
            events, e, s = await run(c, mode)
        finally:
            await c.aclose()
    assert type(e) is StreamInterruptedError
    assert_ours(e)
    assert e.partial is not None
    assert e.partial.text == "I'm unable to provide real"
    assert texts(events) == "I'm unable to provide real"
    assert e.partial.usage.estimated is True
    assert e.partial.usage.output_tokens and e.partial.usage.output_tokens > 0
    assert s.response.status == "error"


def broken_chunk_header(payload: bytes):
    """200, a chunked body with some events, then a chunk-size line that is not hex: the HTTP
    library's parser fails mid-body, and the server keeps the connection open."""
    def behaviour(request):
        yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        yield b"%x\r\n%s\r\n" % (len(payload), payload)
        time.sleep(0.05)
        yield b"zz\r\nxx\r\n"
        time.sleep(5)
    return behaviour


@pytest.mark.parametrize("backend", ["sync", "httpx", "aiohttp"])
@pytest.mark.parametrize("slow", [False, True], ids=["waiting", "slow-consumer"])
def test_a_broken_chunk_header_mid_stream_is_ours_and_never_hangs(backend, slow):
    """Whether the parser fails while the client waits for the next read or while its consumer is
    busy: a typed error of ours with the partial answer, within the idle timeout (aiohttp's parser
    drops the connection without failing the read: "Connection closed.", or no end at all)."""
    payload = b"".join(EVENTS[:6])  # role, I'm, unable, to, provide, real
    with HostileServer(broken_chunk_header(payload)) as srv:
        c = llmrelay.Client(base_urls={"openai": srv.url + "/v1"}, api_keys={"openai": "k"}, retry=0,
                            async_backend="aiohttp" if backend == "aiohttp" else "httpx",
                            timeout=llmrelay.Timeouts(idle=1.0))

        async def consume_slowly():
            events, error = [], None
            s = c.astream(MODEL, "hi")
            try:
                async for e in s:
                    events.append(e)
                    if slow:
                        await asyncio.sleep(0.2)
            except Exception as exc:  # noqa: BLE001
                error = exc
            await c.aclose()
            return events, error

        t0 = time.perf_counter()
        if backend == "sync":
            events, e, _ = asyncio.run(run(c, "sync", MODEL))
            c.close()
        else:
            events, e = asyncio.run(consume_slowly())
        elapsed = time.perf_counter() - t0
    assert isinstance(e, APIConnectionError), repr(e)  # interrupted, or idle: the read never ended
    assert_ours(e)
    assert e.partial is not None and e.partial.text == texts(events) == "I'm unable to provide real"
    assert elapsed < 4.5


async def test_reply_body_cut_mid_event(server, client, mode):
    n = _first_events_size(4) + 50
    server.enqueue(Reply(BODY[:n], headers=SSE))
    events, e, _ = await run(client, mode)
    assert type(e) is StreamInterruptedError
    assert e.partial.text == "I'm unable to"
    assert e.partial.usage.estimated is True


async def test_malformed_chunk_mid_stream(server, client, mode):
    bad = b"".join(EVENTS[:4]) + b"data: {not json\n\n" + b"".join(EVENTS[4:])
    server.enqueue(Reply(bad, headers=SSE, chunking="events"))
    events, e, s = await run(client, mode)
    assert type(e) is MalformedChunkError
    assert isinstance(e, ProviderStreamError)
    assert_ours(e)
    assert "{not json" in str(e)
    assert e.partial.text == "I'm unable to"
    assert texts(events) == "I'm unable to"
    assert e.partial.usage.estimated is True
    assert s.response.status == "error"


async def test_malformed_chunk_in_same_network_read_as_good_events(server, client, mode):
    """Events before the bad one, delivered in the same read, still reach the caller."""
    bad = b"".join(EVENTS[:4]) + b"data: {not json\n\n" + b"".join(EVENTS[4:])
    server.enqueue(Reply(bad, headers=SSE, chunking="whole"))
    events, e, _ = await run(client, mode)
    assert type(e) is MalformedChunkError
    assert e.partial.text == "I'm unable to"
    assert texts(events) == "I'm unable to"


@pytest.mark.parametrize(
    "garbage",
    [b"data: <html><body>Bad Gateway</body></html>\n\n", b"data: {\"choices\": [\n\n", b"data: null-ish\n\n"],
    ids=["html", "half-json", "bare-word"],
)
async def test_garbage_before_any_valid_event(server, client, mode, garbage):
    server.enqueue(Reply(garbage + BODY, headers=SSE, chunking="events"))
    events, e, _ = await run(client, mode)
    assert type(e) is MalformedChunkError
    assert_ours(e)
    assert e.partial is not None
    assert e.partial.text == ""
    assert texts(events) == ""


async def test_html_page_instead_of_a_stream(server, client, mode):
    """A proxy answering 200 with an HTML page: a typed error, not a silent empty answer."""
    html = b"<!DOCTYPE html>\n<html><head><title>Just a moment...</title></head>\n<body>checking your browser</body></html>\n"
    server.enqueue(Reply(html, headers={"content-type": "text/html"}))
    events, e, s = await run(client, mode)
    assert isinstance(e, APIError)
    assert_ours(e)
    assert s.response.status == "error"
    assert s.response.text == ""


async def test_empty_200_body(server, client, mode):
    server.enqueue(Reply(b"", headers=SSE))
    events, e, _ = await run(client, mode)
    assert type(e) is UnexpectedResponseError  # not "interrupted": nothing of a stream ever came
    assert "text/event-stream" in str(e) and "empty" in str(e)
    assert e.partial.text == ""


async def test_in_band_error_event(server, client, mode):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    events, e, s = await run(client, mode, model="groq:openai/gpt-oss-120b")
    assert type(e) is ProviderStreamError
    assert_ours(e)
    assert e.code == "tool_use_failed"
    assert e.status_code == 400
    assert "Tool call validation failed" in str(e)
    assert e.partial.reasoning  # the reasoning before the error is kept
    assert s.response.status == "error"


async def test_in_band_error_after_finish_keeps_real_usage(server, client, mode):
    """OpenRouter: finish_reason "length" twice, then an `error` chunk that also carries usage."""
    server.enqueue(Reply.recording("openrouter/error_in_chunk_after_finish.sse"))
    events, e, s = await run(client, mode, model="openrouter:anthropic/claude-3.7-sonnet")
    assert type(e) is ProviderStreamError
    assert "Token limit reached" in str(e)
    assert e.code == 400 or e.status_code == 400
    u = e.partial.usage
    assert (u.input_tokens, u.output_tokens, u.estimated) == (43, 10, False)
    assert e.partial.raw_finish_reason == "length"
    assert s.response.status == "error"


# -- missing key ------------------------------------------------------------------------


async def test_missing_api_key_at_call_time(server, mode):
    c = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, env={})
    with pytest.raises(MissingAPIKeyError) as info:
        open_stream(c, mode)  # raised by stream()/astream() itself, before any iteration
    assert "OPENAI_API_KEY" in str(info.value)
    assert info.value.provider == "openai"
    assert server.requests == []


async def test_missing_api_key_for_complete(server, mode):
    c = llmrelay.Client(base_urls={"groq": server.url + "/v1"}, env={})
    with pytest.raises(MissingAPIKeyError) as info:
        if mode == "sync":
            c.complete("groq:llama-3.3-70b", "hi")
        else:
            await c.acomplete("groq:llama-3.3-70b", "hi")
    assert "GROQ_API_KEY" in str(info.value)
    assert server.requests == []


async def test_api_key_from_env_mapping(server, mode):
    server.enqueue(Reply.recording(SHORT))
    c = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, env={"OPENAI_API_KEY": "sk-env"})
    try:
        _, e, s = await run(c, mode)
    finally:
        await c.aclose()
    assert e is None
    assert s.response.text == SHORT_TEXT
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"


# -- never an httpx exception, whatever the failure ---------------------------------------------


async def test_no_httpx_exception_escapes_on_early_failures(server, client, mode):
    for reply in (
        Reply.json(_err("x"), status=500),
        Reply(b"data: {bad\n\n", headers=SSE),
        Reply(BODY[:100], headers=SSE),
    ):
        server.enqueue(reply)
        _, e, _ = await run(client, mode)
        assert e is not None
        assert_ours(e)
