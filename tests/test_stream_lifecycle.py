"""Stream lifecycle through the real HTTP path (replay server on 127.0.0.1), sync and async.

- Early close (`close()`, leaving `with`, `aclose()`, leaving `async with`, task
  cancellation) releases the connection itself: the server sends part of the
  stream, then holds the rest back for a minute, and sees the connection closed
  during that hold, with the garbage collector off and the client still open, so
  nothing but the close could have ended it. (No duration is asserted: the 20 s
  wait for the hang-up is a hang guard.)
- An aborted stream keeps one final record: status "aborted", the text so far,
  usage marked estimated (never 0 / None for output).
- `.collect()`, `.text_stream`, iterating twice, `.response` and timings.
- A recording cut in the middle -> StreamInterruptedError with the partial text;
  `finish_length.sse` -> status "truncated" with the provider's usage.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time

import pytest

import llmrelay
from llmrelay import StreamInterruptedError, TextDelta
from llmrelay.testing import Reply, read_recording

from helpers import wait_for

MODEL = "openai:gpt-4o"
LONG = "openai_chat/json_object_long.sse"  # ~47 KB of small text deltas
SHORT = "openai_chat/text_usage_chunk.sse"  # 33 events, usage 14 / 30
SHORT_TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
    "I recommend checking a reliable weather website or a weather app."
)
#: `held()` sends this many events of LONG, then holds the rest back for HOLD seconds (waking at once
#: when the client hangs up): more events than any test here reads before it closes.
SENT_FIRST = 30
HOLD = 60.0


# -- helpers -------------------------------------------------------------------


def sse_payloads(body: bytes) -> list[dict]:
    """Every `data:` JSON payload that arrived whole in an SSE body (independent of llmrelay's
    parser). A last event whose JSON is complete but whose blank line was cut off counts as
    received; a half JSON object does not."""
    out = []
    blocks = body.replace(b"\r\n", b"\n").split(b"\n\n")
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if not data or data == b"[DONE]":
                    continue
                if last and not block.endswith(b"\n"):
                    continue  # the line itself may be cut short
                try:
                    out.append(json.loads(data))
                except ValueError:
                    if not last:
                        raise
    return out


def chat_text(payloads: list[dict]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for p in payloads
        for c in p.get("choices") or []
        if c.get("index", 0) == 0
    )


LONG_TEXT = chat_text(sse_payloads(read_recording(LONG)))


def held(**kw) -> Reply:
    """The long recording, one SSE event per write, 10 ms apart; after SENT_FIRST events the server
    goes silent for HOLD seconds: it cannot finish while a test runs, only the client can end it."""
    kw.setdefault("chunking", "events")
    kw.setdefault("delay", 0.01)
    kw.setdefault("stall_after", SENT_FIRST)
    kw.setdefault("stall", HOLD)
    return Reply.recording(LONG, **kw)


@pytest.fixture
def no_gc():
    """The connection must be released by close/cancel itself, never by a GC pass."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def assert_released(server) -> None:
    """The server saw the connection closed while it was still holding the stream back (20 s: a
    hang guard; with GC off and the client open, only the stream's own close can end the hold)."""
    req = server.wait_disconnect(timeout=20)
    assert req is not None, "the server never saw the connection close: the close did not release it"
    assert not req.completed


async def async_assert_released(server) -> None:
    await asyncio.to_thread(assert_released, server)


def assert_aborted(response: llmrelay.Response, consumed_text: str) -> None:
    assert response.status == "aborted"
    assert response.error is None
    # everything handed to the caller is kept; it is a prefix of the real answer, not all of it
    assert response.text.startswith(consumed_text)
    assert LONG_TEXT.startswith(response.text)
    assert len(response.text) < len(LONG_TEXT)
    u = response.usage
    assert u.estimated is True
    if response.text:
        assert u.output_tokens is not None and u.output_tokens > 0
    assert u.input_tokens is not None and u.input_tokens > 0


def texts(events) -> str:
    return "".join(e.text for e in events if type(e) is TextDelta and e.choice == 0)


def take_sync(stream, min_text: int = 1, max_events: int = 200) -> list:
    """Consume events until some text arrived (so an abort has something to keep)."""
    got = []
    for e in stream:
        got.append(e)
        if len(texts(got)) >= min_text and len(got) >= 3 or len(got) >= max_events:
            break
    return got


async def take_async(stream, min_text: int = 1, max_events: int = 200) -> list:
    got = []
    while True:
        got.append(await stream.__anext__())
        if len(texts(got)) >= min_text and len(got) >= 3 or len(got) >= max_events:
            return got


# -- early close: sync ---------------------------------------------------------


def test_close_mid_stream_releases_connection(server, client, no_gc):
    server.enqueue(held())
    s = client.stream(MODEL, "hi")
    got = take_sync(s)
    s.close()
    assert_released(server)
    assert_aborted(s.response, texts(got))


def test_close_after_break_in_for_loop(server, client, no_gc):
    server.enqueue(held())
    s = client.stream(MODEL, "hi")
    got = []
    for e in s:
        got.append(e)
        if len(got) == 5:
            break
    s.close()
    assert_released(server)
    assert_aborted(s.response, texts(got))


def test_leaving_with_block_releases_connection(server, client, no_gc):
    server.enqueue(held())
    with client.stream(MODEL, "hi") as s:
        got = take_sync(s)
    assert_released(server)
    assert_aborted(s.response, texts(got))


def test_leaving_with_block_on_exception_releases_connection(server, client, no_gc):
    server.enqueue(held())
    with pytest.raises(KeyError):
        with client.stream(MODEL, "hi") as s:
            take_sync(s)
            raise KeyError("caller bug")
    assert_released(server)
    assert s.response.status == "aborted"


def test_leaving_with_block_before_iterating(server, client, no_gc):
    server.enqueue(held())
    with client.stream(MODEL, "hi") as s:
        pass
    # `with` entry may send the request (then it must be released at once) or defer it
    if server.requests:
        assert_released(server)
    assert s.response.status == "aborted"
    assert list(s) == []
    assert len(server.requests) <= 1


def test_close_text_stream_mid_way(server, client, no_gc):
    server.enqueue(held())
    s = client.stream(MODEL, "hi")
    pieces = []
    for piece in s.text_stream:
        pieces.append(piece)
        if len(pieces) == 4:
            break
    s.close()
    assert_released(server)
    assert_aborted(s.response, "".join(pieces))


def test_close_is_idempotent_and_final(server, client, no_gc):
    server.enqueue(held())
    s = client.stream(MODEL, "hi")
    take_sync(s)
    s.close()
    first = s.response
    s.close()
    assert s.response is first
    assert list(s) == []  # nothing more after a close
    assert s.response.status == "aborted"


def test_close_before_start_sends_nothing(server, client):
    s = client.stream(MODEL, "hi")
    s.close()
    assert server.requests == []


# -- early close: async --------------------------------------------------------


async def test_aclose_mid_stream_releases_connection(server, client, no_gc):
    server.enqueue(held())
    s = client.astream(MODEL, "hi")
    got = await take_async(s)
    await s.aclose()
    await async_assert_released(server)
    assert_aborted(s.response, texts(got))


async def test_aclose_after_break_in_async_for(server, client, no_gc):
    server.enqueue(held())
    s = client.astream(MODEL, "hi")
    got = []
    async for e in s:
        got.append(e)
        if len(got) == 5:
            break
    await s.aclose()
    await async_assert_released(server)
    assert_aborted(s.response, texts(got))


async def test_leaving_async_with_block_releases_connection(server, client, no_gc):
    server.enqueue(held())
    async with client.astream(MODEL, "hi") as s:
        got = await take_async(s)
    await async_assert_released(server)
    assert_aborted(s.response, texts(got))


async def test_leaving_async_with_block_on_exception(server, client, no_gc):
    server.enqueue(held())
    with pytest.raises(KeyError):
        async with client.astream(MODEL, "hi") as s:
            await take_async(s)
            raise KeyError("caller bug")
    await async_assert_released(server)
    assert s.response.status == "aborted"


async def test_leaving_async_with_block_before_iterating(server, client, no_gc):
    server.enqueue(held())
    async with client.astream(MODEL, "hi") as s:
        pass
    if server.requests:
        await async_assert_released(server)
    assert s.response.status == "aborted"
    assert [e async for e in s] == []
    assert len(server.requests) <= 1


async def test_aclose_text_stream_mid_way(server, client, no_gc):
    server.enqueue(held())
    s = client.astream(MODEL, "hi")
    pieces = []
    async for piece in s.text_stream:
        pieces.append(piece)
        if len(pieces) == 4:
            break
    await s.aclose()
    await async_assert_released(server)
    assert_aborted(s.response, "".join(pieces))


async def test_aclose_before_start_sends_nothing(server, client):
    s = client.astream(MODEL, "hi")
    await s.aclose()
    assert server.requests == []


async def _cancel_iterating_task(server, client, body_kind: str):
    server.enqueue(held())
    s = client.astream(MODEL, "hi")
    got: list = []
    have_text = asyncio.Event()

    async def consume():
        if body_kind == "events":
            async for e in s:
                got.append(e)
                if texts(got) and len(got) >= 3:
                    have_text.set()
        elif body_kind == "text_stream":
            async for piece in s.text_stream:
                got.append(TextDelta(piece))
                if len(got) >= 3:
                    have_text.set()
        else:  # async with
            async with s:
                async for e in s:
                    got.append(e)
                    if texts(got) and len(got) >= 3:
                        have_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(have_text.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await async_assert_released(server)
    return s, got


@pytest.mark.parametrize("body_kind", ["events", "text_stream", "async_with"])
async def test_task_cancellation_releases_connection(server, client, no_gc, body_kind):
    await _cancel_iterating_task(server, client, body_kind)


@pytest.mark.parametrize("body_kind", ["events", "text_stream", "async_with"])
async def test_task_cancellation_is_an_abort(server, client, no_gc, body_kind):
    """Cancelling the consuming task is the caller stopping, like aclose(): status "aborted",
    the text so far, estimated usage (never an "error" record carrying CancelledError)."""
    s, got = await _cancel_iterating_task(server, client, body_kind)
    assert_aborted(s.response, texts(got))


async def test_cancellation_while_waiting_for_first_byte(server, client, no_gc):
    server.enqueue(held(first_byte_delay=HOLD))
    s = client.astream(MODEL, "hi")
    task = asyncio.create_task(s.collect())
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.requests
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await async_assert_released(server)
    assert s.response.status == "aborted"
    assert s.response.text == ""


# -- collect / text_stream / idempotence ---------------------------------------


async def all_events(s, mode):
    if mode == "sync":
        return list(s)
    return [e async for e in s]


async def collect(s, mode):
    return s.collect() if mode == "sync" else await s.collect()


async def next_event(s, mode):
    return next(s) if mode == "sync" else await s.__anext__()


def open_stream(client, mode, model=MODEL, messages="hi", **kw):
    return client.stream(model, messages, **kw) if mode == "sync" else client.astream(model, messages, **kw)


async def test_collect_on_half_consumed_stream_returns_full_response(server, client, mode):
    server.enqueue(Reply.recording(SHORT, chunking="events"))
    s = open_stream(client, mode)
    head = [await next_event(s, mode) for _ in range(6)]
    assert texts(head)  # some text already handed out
    r = await collect(s, mode)
    assert r.text == SHORT_TEXT
    assert r.status == "ok"
    assert r.finish_reason == "stop"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.estimated) == (14, 30, False)
    assert s.response is r
    assert len(server.requests) == 1


async def test_text_stream_yields_only_text(server, client, mode):
    server.enqueue(Reply.recording(SHORT))
    s = open_stream(client, mode)
    ts = s.text_stream
    pieces = list(ts) if mode == "sync" else [p async for p in ts]
    assert pieces and all(type(p) is str for p in pieces)
    assert "".join(pieces) == SHORT_TEXT
    assert s.response.status == "ok"
    assert s.response.usage.output_tokens == 30


@pytest.mark.parametrize(
    "recording",
    ["openai_chat/tool_call_single.sse", "openai_chat/refusal.sse", "deepseek/reasoning_content_stream.sse"],
)
async def test_text_stream_excludes_non_text(server, client, mode, recording):
    """Tool-call arguments, refusals and reasoning never leak into the text stream."""
    provider = recording.split("/")[0].replace("openai_chat", "openai")
    server.enqueue(Reply.recording(recording))
    s = open_stream(client, mode, f"{provider}:m")
    ts = s.text_stream
    pieces = list(ts) if mode == "sync" else [p async for p in ts]
    r = s.response
    assert "".join(pieces) == r.text
    assert all(type(p) is str for p in pieces)
    if recording.endswith("tool_call_single.sse"):
        assert pieces == [] and r.tool_calls
    elif recording.endswith("refusal.sse"):
        assert pieces == [] and r.refusal
    else:
        assert r.reasoning and r.reasoning not in "".join(pieces)


async def test_text_stream_skips_other_choices(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/n3_multiple_choices.sse"))
    s = open_stream(client, mode)
    ts = s.text_stream
    pieces = list(ts) if mode == "sync" else [p async for p in ts]
    r = s.response
    assert len(r.choices) == 3
    assert "".join(pieces) == r.choices[0].text


async def test_iterating_twice_and_collect_after_exhaustion(server, client, mode):
    server.enqueue(Reply.recording(SHORT))
    s = open_stream(client, mode)
    first = await all_events(s, mode)
    assert texts(first) == SHORT_TEXT
    r1 = s.response
    assert await all_events(s, mode) == []  # exhausted: no replay, no new request
    r2 = await collect(s, mode)
    r3 = await collect(s, mode)
    assert r1 is r2 is r3 is s.response
    assert r2.text == SHORT_TEXT and r2.status == "ok"
    assert len(server.requests) == 1


async def test_response_after_completion(server, client, mode):
    server.enqueue(Reply.recording(SHORT, chunking="events", delay=0.002))
    s = open_stream(client, mode)
    await all_events(s, mode)
    r = s.response
    assert r.status == "ok"
    assert r.error is None
    assert r.text == SHORT_TEXT
    assert r.provider == "openai"
    assert r.model == "gpt-4o-2024-08-06"
    assert r.requested_model == "gpt-4o"
    t = r.timings
    assert t.time_to_first_token is not None and t.total is not None
    assert 0 < t.time_to_first_token <= t.total


async def consume_slowly(s, mode) -> tuple[float, float]:
    """Iterate to the end, sleeping 50 ms after every event (the caller's own work): (the whole
    iteration, the part of it the caller spent sleeping), on llmrelay's clock (perf_counter)."""
    slept = 0.0
    start = time.perf_counter()
    if mode == "sync":
        for _ in s:
            t = time.perf_counter()
            time.sleep(0.05)
            slept += time.perf_counter() - t
    else:
        async for _ in s:
            t = time.perf_counter()
            await asyncio.sleep(0.05)
            slept += time.perf_counter() - t
    return time.perf_counter() - start, slept


#: Float rounding between the two sides (they measure nested intervals of one clock).
CLOCK_SLACK = 1e-6


async def test_total_excludes_consumer_time(server, client, mode):
    """`total` leaves out the caller's time between events: it fits in the part of the iteration
    the caller did not spend sleeping. (Counting the caller's sleeps, it would exceed it by about
    them all, 33 x 50 ms.) Both sides are the same clock's nested intervals, so load cannot
    tip the comparison."""
    server.enqueue(Reply.recording(SHORT, chunking="events"))
    s = open_stream(client, mode)
    whole, slept = await consume_slowly(s, mode)
    r = s.response
    assert r.status == "ok"
    assert slept >= 1.0  # 33 events
    assert r.timings.total is not None
    assert 0 < r.timings.total <= whole - slept + CLOCK_SLACK


async def test_ttft_excludes_consumer_time(server, client, mode):
    """TTFT and total are on the same clock: a slow consumer cannot push TTFT above total.

    The first event (`StreamStart`, from a chunk with `content: ""`) reaches the
    caller before any text; the caller's sleep must not count as waiting for the
    first token.
    """
    server.enqueue(Reply.recording(SHORT, chunking="events"))
    s = open_stream(client, mode)
    whole, slept = await consume_slowly(s, mode)
    t = s.response.timings
    assert t.time_to_first_token is not None and t.total is not None
    assert 0 < t.time_to_first_token <= t.total <= whole - slept + CLOCK_SLACK


# -- truncated / cut streams -----------------------------------------------------


def _cut_points(body: bytes) -> dict[str, int]:
    """Byte offsets to cut the recording at, each with a different shape of cut."""
    starts = [i for i in range(len(body)) if body.startswith(b"data: {", i)]
    tenth = starts[10]
    return {
        "mid_json": tenth + 40,
        "mid_data_prefix": tenth + 3,
        "between_newlines": starts[11] - 1,
        "at_event_boundary": starts[12],
        "before_usage_chunk": body.rindex(b"data: {"),
    }


@pytest.mark.parametrize("where", ["mid_json", "mid_data_prefix", "between_newlines", "at_event_boundary"])
async def test_truncated_recording_raises_with_partial(server, client, mode, where):
    body = read_recording(SHORT)
    n = _cut_points(body)[where]
    expected = chat_text(sse_payloads(body[:n]))
    assert 0 < len(expected) < len(SHORT_TEXT)
    server.enqueue(Reply(body[:n], headers={"content-type": "text/event-stream"}))
    s = open_stream(client, mode)
    with pytest.raises(StreamInterruptedError) as info:
        await all_events(s, mode)
    err = info.value
    assert err.partial is not None
    assert err.partial.text == expected
    assert err.partial.status == "error"
    assert err.partial.usage.estimated is True
    assert err.partial.usage.output_tokens and err.partial.usage.output_tokens > 0
    assert err.provider == "openai"
    assert s.response.status == "error"
    assert s.response.text == expected


async def test_truncated_before_usage_chunk_keeps_finish(server, client, mode):
    """Cut after finish_reason but before the usage chunk and [DONE]: the text is complete,
    the stream still did not end properly; usage is estimated, never 0."""
    body = read_recording(SHORT)
    n = _cut_points(body)["before_usage_chunk"] + 20
    server.enqueue(Reply(body[:n], headers={"content-type": "text/event-stream"}))
    s = open_stream(client, mode)
    try:
        await all_events(s, mode)
    except StreamInterruptedError as err:
        partial = err.partial
    else:  # finish_reason arrived: accepting the stream as complete is also defensible
        partial = s.response
    assert partial.text == SHORT_TEXT
    assert partial.usage.estimated is True
    assert partial.usage.output_tokens and partial.usage.output_tokens > 0


async def test_truncated_tool_call_keeps_incomplete_call(server, client, mode):
    body = read_recording("openai_chat/tool_call_single.sse")
    payloads = sse_payloads(body)
    # cut in the middle of the 6th event: some argument fragments have arrived
    starts = [i for i in range(len(body)) if body.startswith(b"data: {", i)]
    n = starts[5] + 30
    args = "".join(
        tc["function"].get("arguments") or ""
        for p in sse_payloads(body[:n])
        for c in p["choices"]
        for tc in (c["delta"].get("tool_calls") or [])
    )
    assert args and len(payloads) > 6
    server.enqueue(Reply(body[:n], headers={"content-type": "text/event-stream"}))
    s = open_stream(client, mode)
    with pytest.raises(StreamInterruptedError) as info:
        await all_events(s, mode)
    (call,) = info.value.partial.tool_calls
    assert call.raw_arguments == args
    assert call.arguments is None and call.error
    assert info.value.partial.usage.estimated is True


async def test_finish_length_is_truncated_with_real_usage(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/finish_length.sse"))
    s = open_stream(client, mode)
    events = await all_events(s, mode)
    r = s.response
    assert r.status == "truncated"
    assert r.finish_reason == "length"
    assert r.raw_finish_reason == "length"
    assert r.text == '{"'
    assert texts(events) == '{"'
    assert (r.usage.input_tokens, r.usage.output_tokens) == (79, 1)
    assert r.usage.estimated is False
    assert r.error is None


# -- after an abort the client stays usable; closing a finished stream changes nothing ----------


async def test_client_reusable_after_abort(server, client, mode, no_gc):
    server.enqueue(held(), Reply.recording(SHORT))
    s = open_stream(client, mode)
    for _ in range(4):
        await next_event(s, mode)
    if mode == "sync":
        s.close()
    else:
        await s.aclose()
    assert s.response.status == "aborted"
    s2 = open_stream(client, mode)
    r = await collect(s2, mode)
    assert r.status == "ok" and r.text == SHORT_TEXT
    assert len(server.requests) == 2
    assert server.requests[0].disconnected_at is not None
    # the server marks a reply complete after its last write, which the client may have read already
    wait_for(lambda: server.requests[1].completed, "the server to finish the second reply")


async def test_close_after_completion_keeps_ok(server, client, mode):
    server.enqueue(Reply.recording(SHORT))
    s = open_stream(client, mode)
    r = await collect(s, mode)
    if mode == "sync":
        s.close()
    else:
        await s.aclose()
    assert s.response is r
    assert r.status == "ok"
    assert r.usage.estimated is False


async def test_next_after_exhaustion_stops(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/finish_length.sse"))
    s = open_stream(client, mode)
    await all_events(s, mode)
    if mode == "sync":
        with pytest.raises(StopIteration):
            next(s)
    else:
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()
    assert len(server.requests) == 1


async def test_on_length_raise(server, client, mode):
    """Opt-in: a truncated answer raises LengthFinishReasonError carrying the response (usage kept);
    a tool call cut by the limit raises IncompleteToolCallError. By default both just return."""
    from llmrelay import IncompleteToolCallError, LengthFinishReasonError

    server.enqueue(Reply.recording("openai_chat/finish_length.sse"))
    r = client.complete("openai:gpt-4o", "hi") if mode == "sync" else await client.acomplete("openai:gpt-4o", "hi")
    assert r.status == "truncated"
    for name, model, cls in (("openai_chat/finish_length.sse", "openai:gpt-4o", LengthFinishReasonError),
                             ("anthropic/tool_use_max_tokens_incomplete_json.sse", "anthropic:claude-x", IncompleteToolCallError)):
        server.enqueue(Reply.recording(name))
        with pytest.raises(cls) as info:
            if mode == "sync":
                client.complete(model, "hi", on_length="raise")
            else:
                await client.acomplete(model, "hi", on_length="raise")
        assert info.value.response.status == "truncated" and info.value.response.usage.output_tokens


def test_closing_a_stream_twice_is_harmless(client):
    stream = client.stream("anthropic:claude-sonnet-4-5", "hi")
    stream.close()
    stream.close()  # was an AttributeError: the first close left a plain iterator behind
    assert list(stream) == [] and stream.response.status == "aborted"
