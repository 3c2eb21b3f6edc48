"""Middleware: one interface for stream/astream/complete/acomplete; the built-in Timeout and Logging.

Plans are driven by hand where no server is needed; the rest goes through
the real HTTP path of the replay server.
"""

from __future__ import annotations

import logging
import time

import pytest

from helpers import drain, drive

import llmrelay
from llmrelay import (
    APITimeoutError,
    InternalServerError,
    Middleware,
    ProviderEvent,
    Retry,
    RetryEvent,
    TextDelta,
    Timeouts,
    UsageEvent,
)
from llmrelay.reliability.middleware import run_turn, with_middleware
from llmrelay.reliability.builtins import Logging, Timeout
from llmrelay.engine.plan import Emit, Send, Sleep, single
from llmrelay.response import Response
from llmrelay.testing import client_for, faults

MODEL = "openai:gpt-4o"
REC = "openai_chat/text_usage_chunk.sse"
TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
    "I recommend checking a reliable weather website or a weather app."
)
SECRET = "sk-test-SECRET-0123456789"


@pytest.fixture(params=["stream", "astream", "complete", "acomplete"])
def way(request):
    return request.param


async def call_with(client, way, model=MODEL, messages="hi", **kw):
    """(events seen or None for complete, response); raises what the call raises."""
    if way == "complete":
        return None, client.complete(model, messages, **kw)
    if way == "acomplete":
        return None, await client.acomplete(model, messages, **kw)
    if way == "stream":
        s = client.stream(model, messages, **kw)
        return list(s), s.response
    s = client.astream(model, messages, **kw)
    return [e async for e in s], s.response


def texts(events) -> str:
    return "".join(e.text for e in events if type(e) is TextDelta and e.choice == 0)


@pytest.fixture
def call():
    return llmrelay.Client(api_keys={"openai": SECRET}).prepare(MODEL, "hi")[0]


# -- the user-written middleware of the docstring ------------------------------------------


class Stopwatch(Middleware):
    """The example of `llmrelay.middleware`'s docstring, verbatim but for print -> a list."""

    def __init__(self):
        self.lines: list[tuple] = []

    def turn(self, call, send):
        started = time.monotonic()
        seen = []
        response = yield from send(call, on_event=lambda e: seen.append(e.type) or e)
        self.lines.append((call.model, time.monotonic() - started, len(seen), seen))
        return response


async def test_docstring_middleware_works_everywhere(server, way):
    server.enqueue(faults.ok(REC))
    watch = Stopwatch()
    c = client_for(server, retry=0, middleware=[watch])
    events, response = await call_with(c, way)
    c.close()
    assert response.text == TEXT
    ((model, elapsed, count, types),) = watch.lines
    assert model == "gpt-4o"
    assert elapsed >= 0
    assert count > 10 and "text" in types and "finish" in types
    if events is not None:
        assert [e.type for e in events] == types  # it saw exactly what the caller saw
        assert texts(events) == TEXT


async def test_per_call_middleware(server, way):
    server.enqueue(faults.ok(REC))
    watch = Stopwatch()
    c = client_for(server, retry=0)
    _, response = await call_with(c, way, middleware=[watch])
    c.close()
    assert response.text == TEXT
    assert len(watch.lines) == 1


# -- on_event -----------------------------------------------------------------------------------


class Recorder(Middleware):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_event(self, event, call):
        self.log.append((self.name, event.type))
        return event


class Upper(Middleware):
    def on_event(self, event, call):
        if type(event) is TextDelta:
            return TextDelta(event.text.upper(), event.choice)
        return event


class DropUsage(Middleware):
    def on_event(self, event, call):
        return None if type(event) is UsageEvent else event


async def test_on_event_sees_every_event_in_order(server, mode):
    log: list = []
    server.enqueue(faults.ok(REC))
    c = client_for(server, retry=0, middleware=[Recorder("r", log)])
    events, err, _ = await run(c, mode)
    c.close()
    assert err is None
    assert [t for _, t in log] == [e.type for e in events]


async def test_on_event_transforms_and_drops(server, mode):
    server.enqueue(faults.ok(REC))
    c = client_for(server, retry=0, middleware=[Upper(), DropUsage()])
    events, err, s = await run(c, mode)
    c.close()
    assert err is None
    assert texts(events) == TEXT.upper()
    assert not any(type(e) is UsageEvent for e in events)
    assert s.response.usage.output_tokens  # the response still has the usage


def test_on_event_by_hand(call):
    events = [TextDelta("a"), UsageEvent(llmrelay.Usage(1, 2)), TextDelta("b")]
    response, _, seen = drive(run_turn(call, [Upper(), DropUsage()]), [(events, Response())])
    assert [(type(e).__name__, getattr(e, "text", None)) for e in seen] == [("TextDelta", "A"), ("TextDelta", "B")]


def test_chain_runs_outermost_first(call):
    order: list = []

    class Named(Middleware):
        def __init__(self, name):
            self.name = name

        def turn(self, call, send):
            order.append(f"{self.name} in")
            response = yield from send(call)
            order.append(f"{self.name} out")
            return response

    ok = Response()
    response, _, _ = drive(run_turn(call, [Named("a"), Named("b"), Named("c")]), [([], ok)])
    assert response is ok
    assert order == ["a in", "b in", "c in", "c out", "b out", "a out"]


def test_events_pass_inner_middleware_first(call):
    """`Client(middleware=[a, b])` is a(b(model)): an event leaves the model, passes b, then a,
    then reaches the caller (as a response does)."""
    log: list = []
    _, _, seen = drive(run_turn(call, [Recorder("a", log), Recorder("b", log)]), [([TextDelta("x")], Response())])
    assert log == [("b", "text"), ("a", "text")]


def test_inner_transform_is_seen_by_the_outer_middleware(call):
    seen_by_outer: list = []

    class Spy(Middleware):
        def on_event(self, event, call):
            seen_by_outer.append(getattr(event, "text", None))
            return event

    drive(run_turn(call, [Spy(), Upper()]), [([TextDelta("x")], Response())])
    assert seen_by_outer == ["X"]


def test_middleware_can_change_the_call_emit_and_sleep(call):
    class Tweak(Middleware):
        def turn(self, call, send):
            yield Emit(ProviderEvent("note", "before"))
            yield Sleep(0.25)
            call.params.temperature = 0.5
            return (yield from send(call))

    _, actions, seen = drive(run_turn(call, [Tweak()]), [([], Response())])
    assert [type(a).__name__ for a in actions] == ["Emit", "Sleep", "Send"]
    assert actions[1].seconds == 0.25
    assert actions[2].call.params.temperature == 0.5
    assert seen[0].kind == "note"


def test_middleware_can_answer_after_an_error(call):
    class Cached(Middleware):
        def turn(self, call, send):
            try:
                return (yield from send(call))
            except InternalServerError:
                return Response(provider="cache")

    err = InternalServerError("boom", status_code=500)
    response, _, _ = drive(run_turn(call, [Cached()]), [err])
    assert response.provider == "cache"


def test_with_middleware_routes_each_send_of_a_plan(call):
    log: list = []
    plan = with_middleware(single(call), [Recorder("r", log)])
    response, actions, seen = drive(plan, [([TextDelta("hi")], Response())])
    assert [type(a) for a in actions] == [Send]
    assert log == [("r", "text")]
    assert response.messages  # the base plan finished normally


def test_the_single_request_plan_is_driven_like_a_generator(call):
    """The one-request plan (an object, not a generator function: one per stream in flight) answers
    next/send/throw/close as the generator `response = yield Send(call); return response` would."""
    plan = single(call)
    assert iter(plan) is plan
    with pytest.raises(TypeError):
        plan.send("too early")
    action = next(plan)
    assert type(action) is Send and action.call is call and action.observers == ()
    response = Response()
    with pytest.raises(StopIteration) as stop:
        plan.send(response)
    assert stop.value.value is response and response.messages == call.messages + [response.to_message()]
    with pytest.raises(StopIteration):
        plan.send(None)  # finished
    failed = single(call)
    next(failed)
    error = InternalServerError("boom", status_code=500)
    with pytest.raises(InternalServerError) as raised:
        failed.throw(error)
    assert raised.value is error
    with pytest.raises(StopIteration):
        next(failed)  # an error ends it
    closed = single(call)
    next(closed)
    closed.close()
    with pytest.raises(StopIteration):
        next(closed)


def test_with_no_middleware_the_plan_is_unchanged(call):
    plan = with_middleware(single(call), [])
    response, actions, _ = drive(plan, [([], Response())])
    assert [type(a) for a in actions] == [Send] and actions[0].observers == ()


async def test_middleware_that_sends_twice_makes_two_requests(server, mode):
    class Twice(Middleware):
        def turn(self, call, send):
            yield from send(call)
            return (yield from send(call))

    server.enqueue(faults.ok(REC), faults.ok(REC))
    c = client_for(server, retry=0, middleware=[Twice()])
    events, err, s = await run(c, mode)
    c.close()
    assert err is None
    assert len(server.requests) == 2
    assert texts(events) == TEXT * 2  # what a middleware sends, the caller sees: its own choice


async def test_client_middleware_is_outside_retry(server, mode):
    """The client's Retry is innermost: a middleware sees one turn, with the retry events of it."""
    watch = Stopwatch()
    server.enqueue(faults.status(500), faults.ok(REC))
    c = client_for(server, retry=Retry(1, initial_delay=0.001), middleware=[watch])
    events, err, _ = await run(c, mode)
    c.close()
    assert err is None
    assert len(server.requests) == 2
    assert len(watch.lines) == 1
    assert [type(e) for e in events].count(RetryEvent) == 1


# -- Timeout ------------------------------------------------------------------------------------


def test_timeout_sets_only_the_given_fields(call):
    call.timeouts = Timeouts(connect=3, idle=40, total=100)
    _, actions, _ = drive(run_turn(call, [Timeout(first_token=5, idle=7)]), [([], Response())])
    t = actions[0].call.timeouts
    assert (t.first_token, t.idle, t.connect, t.total) == (5, 7, 3, 100)
    assert call.timeouts.idle == 40  # the caller's call is not mutated


def test_timeout_none_disables_and_defaults_apply(call):
    call.timeouts = None
    _, actions, _ = drive(run_turn(call, [Timeout(idle=None, total=9)]), [([], Response())])
    t = actions[0].call.timeouts
    assert t.idle is None and t.total == 9 and t.connect == Timeouts().connect


@pytest.mark.parametrize("bad", [0, -1, "3", True])
def test_timeout_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        Timeout(idle=bad)


#: How long the server stalls in the Timeout tests: ~130x the 0.15 s timeouts they set, so only the
#: timeout can end the call early, even on a loaded machine (the server wakes at once when the
#: client hangs up). The tests assert the typed error and that it came while the server was still
#: stalling (the request never completed), never a duration.
HOLD = 20.0


def stalled_mid_way(server) -> bool:
    (req,) = server.requests
    return not req.completed


async def test_timeout_first_token_fires_on_a_stream_of_keepalives(server, mode):
    server.enqueue(faults.stall(REC, after=1, seconds=HOLD, keepalive=0.02))
    c = client_for(server, retry=0, middleware=[Timeout(first_token=0.15)])
    events, err, _ = await run(c, mode)
    c.close()
    assert type(err) is APITimeoutError and err.kind == "first_token"
    assert stalled_mid_way(server)  # the keep-alives did not keep it waiting for the end
    assert texts(events) == ""


async def test_timeout_idle_fires_after_content_with_the_partial(server, mode):
    server.enqueue(faults.stall(REC, after=4, seconds=HOLD))
    c = client_for(server, retry=0, middleware=[Timeout(idle=0.15)])
    events, err, _ = await run(c, mode)
    c.close()
    assert type(err) is APITimeoutError and err.kind == "idle"
    assert stalled_mid_way(server)
    assert err.partial.text == texts(events) == "I'm unable to"


async def test_timeout_middleware_beats_the_per_call_timeout(server, mode):
    server.enqueue(faults.stall(REC, after=4, seconds=HOLD))
    c = client_for(server, retry=0, middleware=[Timeout(idle=0.15)])
    _, err, _ = await run(c, mode, timeout=Timeouts(idle=30))
    c.close()
    assert type(err) is APITimeoutError and err.kind == "idle"


async def test_timeout_first_token_on_a_silent_stream(server, mode):
    """Headers, then silence: `first_token` must fire during the silence, not wait for `idle`
    (60 s by default, longer than the server's stall: without first_token the call would
    outlast the stall and succeed)."""
    server.enqueue(faults.stall(REC, after=0, seconds=HOLD))
    c = client_for(server, retry=0, middleware=[Timeout(first_token=0.15)])
    events, err, _ = await run(c, mode)
    c.close()
    assert type(err) is APITimeoutError and err.kind == "first_token", f"first_token=0.15 did not fire: {err!r}"
    assert stalled_mid_way(server) and texts(events) == ""


# -- Logging ------------------------------------------------------------------------------------


def _records(caplog):
    return [r for r in caplog.records if r.name == "llmrelay.test"]


@pytest.fixture
def logger(caplog):
    caplog.set_level(logging.DEBUG, logger="llmrelay.test")
    return logging.getLogger("llmrelay.test")


async def test_logging_one_record_at_start_one_at_end(server, logger, caplog, way):
    server.enqueue(faults.ok(REC))
    c = client_for(server, retry=0, api_keys={"openai": SECRET}, middleware=[Logging(logger)])
    await call_with(c, way, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "my secret question"}])
    c.close()
    start, end = _records(caplog)
    assert start.levelno == end.levelno == logging.INFO
    assert start.llmrelay == {"event": "turn_start", "turn": start.llmrelay["turn"], "provider": "openai",
                              "model": "gpt-4o", "messages": 2}
    assert "content=<masked>" in start.getMessage()
    info = end.llmrelay
    assert info["event"] == "turn_end" and info["turn"] == start.llmrelay["turn"]
    assert info["status"] == "ok"
    assert info["provider"] == "openai"
    assert info["input_tokens"] and info["output_tokens"]
    assert info["ttft"] is not None and info["duration"] >= info["ttft"]
    assert info["finish_reason"] == "stop"
    assert "error" not in info
    for r in (start, end):
        text = r.getMessage() + repr(r.llmrelay)
        assert "secret question" not in text and "be brief" not in text and "unable" not in text
        assert SECRET not in text


async def test_logging_content_only_when_asked_and_never_the_key(server, logger, caplog, mode):
    server.enqueue(faults.ok(REC))
    c = client_for(server, retry=0, api_keys={"openai": SECRET}, middleware=[Logging(logger, log_content=True)])
    await run(c, mode, messages=f"my key is {SECRET}, keep it")
    c.close()
    start, end = _records(caplog)
    assert start.llmrelay["content"] == [{"role": "user", "text": "my key is ***, keep it"}]
    assert end.llmrelay["text"] == TEXT
    assert "keep it" in start.getMessage()
    for r in caplog.records:
        assert SECRET not in r.getMessage() and SECRET not in repr(getattr(r, "llmrelay", ""))


async def test_logging_failed_turn(server, logger, caplog, mode):
    server.enqueue(faults.status(500))
    c = client_for(server, retry=0, middleware=[Logging(logger)])
    _, err, _ = await run(c, mode)
    c.close()
    assert type(err) is InternalServerError
    start, end = _records(caplog)
    assert end.levelno == logging.WARNING
    assert end.llmrelay["status"] == "error"
    assert end.llmrelay["error"] == "InternalServerError"
    assert end.llmrelay["status_code"] == 500


async def test_logging_error_after_content_keeps_usage_and_ttft(server, logger, caplog, mode):
    server.enqueue(faults.cut(REC, after=4))
    c = client_for(server, retry=0, middleware=[Logging(logger)])
    _, err, _ = await run(c, mode)
    c.close()
    end = _records(caplog)[-1]
    assert end.llmrelay["error"] == "StreamInterruptedError"
    assert end.llmrelay["ttft"] is not None
    assert end.llmrelay["output_tokens"] and end.llmrelay["usage_estimated"] is True


async def test_logging_aborted_turn(server, logger, caplog, mode):
    server.enqueue(faults.drip(REC, delay=0.01))
    c = client_for(server, retry=0, middleware=[Logging(logger)])
    if mode == "sync":
        with c.stream(MODEL, "hi") as s:
            for e in s:
                if type(e) is TextDelta:
                    break
    else:
        async with c.astream(MODEL, "hi") as s:
            async for e in s:
                if type(e) is TextDelta:
                    break
    c.close()
    start, end = _records(caplog)
    assert end.levelno == logging.INFO
    assert end.llmrelay["status"] == "aborted"
    assert end.llmrelay["ttft"] is not None
    assert "error" not in end.llmrelay


async def test_logging_is_per_turn_not_per_chunk_and_sees_retries_as_one_turn(server, logger, caplog, mode):
    server.enqueue(faults.status(503), faults.drip(REC, delay=0.001))
    c = client_for(server, retry=Retry(1, initial_delay=0.001), middleware=[Logging(logger)])
    _, err, _ = await run(c, mode)
    c.close()
    assert err is None
    assert [r.llmrelay["event"] for r in _records(caplog)] == ["turn_start", "turn_end"]


async def test_logging_default_logger_and_disabled_level(server, caplog, mode):
    caplog.set_level(logging.ERROR, logger="llmrelay")
    server.enqueue(faults.ok(REC))
    c = client_for(server, retry=0, middleware=[Logging()])
    _, err, _ = await run(c, mode)
    c.close()
    assert err is None
    assert [r for r in caplog.records if r.name == "llmrelay"] == []
    assert Logging().logger.name == "llmrelay"
    assert Logging("my.app").logger.name == "my.app"


async def run(client, mode, model=MODEL, messages="hi", **kw):
    """Stream to the end: (events, error or None, stream)."""
    s = client.stream(model, messages, **kw) if mode == "sync" else client.astream(model, messages, **kw)
    got, error = await drain(s, mode)
    return got, error, s
