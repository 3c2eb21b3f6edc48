"""The fault matrix: every fault × OpenAI Chat, Anthropic, Gemini, Ollama, Bedrock Converse × sync/async × stream/complete.

Each fault hits the first request, in two set-ups:

- "retry": one model, `Retry(1)`. A fault before content is retried once and
  the answer arrives whole (exactly 2 requests, the same body twice); a fault
  after content, or a 400, ends in its typed error carrying the partial
  response (exactly 1 request).
- "fallback": `[P, Q]`, no retry. Before content (or a 400) Q answers fresh;
  after content Q continues the text (prefill where Q accepts it, else a user
  turn with a note) with an exact request body.

In every case: the text the caller saw is the answer (or the partial), never
repeated, nothing lost; usage the provider had reported survives in the
partial response or the failed attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from helpers import run as _run, texts as shown_text

from llmrelay import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    FallbackEvent,
    MalformedChunkError,
    OverloadedError,
    ProviderStreamError,
    RateLimitError,
    Reset,
    Retry,
    RetryEvent,
    ServiceUnavailableError,
    StreamInterruptedError,
    StreamResetError,
    TextDelta,
    Usage,
    UsageEvent,
)
from llmrelay.reliability.fallback import DEFAULT_RESUME_PROMPT
from llmrelay.reliability.builtins import Timeout
from llmrelay.engine.prepare import protocol_module
from llmrelay.testing import client_for, faults

TIMEOUT = 0.1  # first_token and idle, for the stall faults


@dataclass(frozen=True)
class P:
    name: str
    model: str
    label: str
    rec: str
    protocol: str
    before: int  # events sent before the fault, none of them content
    after: int  # events sent before the fault, some of them content
    prefill: bool


PROVIDERS = {
    p.name: p
    for p in (
        P("openai", "openai:gpt-4o", "openai:gpt-4o", "openai_chat/text_usage_chunk.sse", "openai_chat", 1, 4, False),
        P("anthropic", "anthropic:claude-sonnet-4-5", "anthropic:claude-sonnet-4-5", "anthropic/text_basic.sse",
          "anthropic", 3, 5, True),
        P("gemini", "gemini:gemini-2.0-flash", "gemini:gemini-2.0-flash", "gemini/text_sse.sse", "gemini", 0, 1, False),
        P("ollama", "ollama:gemma3:1b", "ollama:gemma3:1b", "ollama/chat_text_done_stop.ndjson", "ollama", 0, 3, True),
        P("bedrock", "bedrock:us.amazon.nova-micro-v1:0", "bedrock:us.amazon.nova-micro-v1:0",
          "bedrock/converse_stream_text_nova.eventstream", "bedrock", 1, 4, False),
    )
}
NEXT = {"openai": "anthropic", "anthropic": "gemini", "gemini": "ollama", "ollama": "bedrock", "bedrock": "openai"}


def decode(p: P, events: int | None = None) -> tuple[str, Usage]:
    """Text and usage of a recording (or of its first `events` events), decoded offline."""
    dec = protocol_module(p.protocol).Decoder()
    pieces = faults.events(p.rec)
    out: list = []
    for piece in pieces[: len(pieces) if events is None else events]:
        out.extend(dec.feed(piece))
    if events is None:
        out.extend(dec.end())
    usage = Usage()
    for e in out:
        if type(e) is UsageEvent:
            usage.merge(e.usage)
    return "".join(e.text for e in out if type(e) is TextDelta and e.choice == 0), usage


FULL = {name: decode(p)[0] for name, p in PROVIDERS.items()}


@dataclass(frozen=True)
class Fault:
    name: str
    #: "before": before content, retryable; "fatal": never retried; "after": content shown; "ok": no failure.
    kind: str
    error: type | None
    timeout_kind: str | None = None

    def reply(self, p: P):
        n = p.after if self.kind == "after" else p.before
        return {
            "429": lambda: faults.status(429, retry_after=0.01, protocol=p.protocol),
            "503": lambda: faults.status(503, protocol=p.protocol),
            "529": lambda: faults.status(529, protocol=p.protocol),
            "400": lambda: faults.status(400, protocol=p.protocol),
            "reset": faults.reset,
            "cut": lambda: faults.cut(p.rec, after=n),
            "error_event": lambda: faults.error_event(p.protocol, p.rec, after=n),
            "malformed": lambda: faults.malformed(p.rec, after=n),
            "first_token": lambda: faults.stall(p.rec, after=n, seconds=3, keepalive=0.02),
            "idle": lambda: faults.stall(p.rec, after=n, seconds=3),
            "drip": lambda: faults.drip(p.rec, delay=0.002),
        }[self.name]()

    def timeout(self) -> Timeout:
        """The per-turn timeout that trips this fault (stalls), harmless for the others."""
        return Timeout(first_token=TIMEOUT) if self.name == "first_token" else Timeout(idle=TIMEOUT)

    def events_sent(self, p: P) -> int:
        if self.name in ("429", "503", "529", "400", "reset"):
            return 0
        return p.after if self.kind == "after" else p.before


FAULTS = [
    Fault("429", "before", RateLimitError),
    Fault("503", "before", ServiceUnavailableError),
    Fault("529", "before", OverloadedError),
    Fault("400", "fatal", BadRequestError),
    Fault("reset", "before", APIConnectionError),
    Fault("cut", "before", StreamInterruptedError),
    Fault("cut", "after", StreamInterruptedError),
    Fault("error_event", "before", ProviderStreamError),
    Fault("error_event", "after", ProviderStreamError),
    Fault("malformed", "before", MalformedChunkError),
    Fault("malformed", "after", MalformedChunkError),
    Fault("first_token", "before", APITimeoutError, "first_token"),
    Fault("idle", "before", APITimeoutError, "idle"),
    Fault("idle", "after", APITimeoutError, "idle"),
    Fault("drip", "ok", None),
]


def _fault_id(f: Fault) -> str:
    return f.name if f.kind in ("ok", "fatal") or f.name in ("429", "503", "529", "reset", "first_token") else f"{f.name}_{f.kind}"


@pytest.fixture(params=FAULTS, ids=_fault_id)
def fault(request):
    return request.param


@pytest.fixture(params=list(PROVIDERS))
def provider(request):
    return PROVIDERS[request.param]


def check_error(fault: Fault, error: BaseException) -> None:
    assert type(error) is fault.error, f"{type(error).__name__}: {error}"
    if fault.timeout_kind:
        assert error.kind == fault.timeout_kind


def messages(protocol: str, turns: list[tuple[str, str]]) -> tuple[str, list]:
    """The exact messages field a protocol encodes for these (role, text) turns."""
    if protocol == "anthropic":
        return "messages", [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in turns]
    if protocol == "gemini":
        return "contents", [{"role": "model" if r == "assistant" else r, "parts": [{"text": t}]} for r, t in turns]
    if protocol == "bedrock":
        return "messages", [{"role": r, "content": [{"text": t}]} for r, t in turns]
    return "messages", [{"role": r, "content": t} for r, t in turns]


async def test_retry(server, fault, provider, mode, how):
    p = provider
    server.enqueue(fault.reply(p), faults.ok(p.rec))
    c = client_for(server, retry=Retry(1, initial_delay=0.001, max_delay=0.002))
    events, err, r = await run(c, mode, how, p.model, middleware=[fault.timeout()])
    c.close()
    sent = fault.events_sent(p)
    partial_text, reported = decode(p, sent)

    if fault.kind in ("before", "ok"):
        assert err is None, f"{type(err).__name__}: {err}"
        assert r.text == FULL[p.name]
        assert r.status == "ok"
        expected_requests = 1 if fault.kind == "ok" else 2
        assert len(server.requests) == expected_requests
        if expected_requests == 2:
            assert server.requests[0].body == server.requests[1].body
        if how == "stream":
            assert shown_text(events) == r.text  # nothing shown twice, nothing lost
            retries = [e for e in events if type(e) is RetryEvent]
            assert len(retries) == expected_requests - 1
            if retries:
                check_error(fault, retries[0].error)
                # usage the failed attempt had reported stays on its error
                failed = retries[0].error.partial
                if reported.input_tokens is not None:
                    assert failed.usage.input_tokens == reported.input_tokens
        return

    # "after" and "fatal": the typed error, with the partial response, after exactly one request
    assert err is not None
    check_error(fault, err)
    assert len(server.requests) == 1
    assert err.partial is not None
    assert err.partial.text == partial_text
    assert (partial_text != "") == (fault.kind == "after")
    assert err.partial.status == "error"
    if reported.input_tokens is not None:
        assert err.partial.usage.input_tokens == reported.input_tokens
    assert err.partial.usage.output_tokens is not None  # reported, or estimated and marked so
    if how == "stream":
        assert shown_text(events) == partial_text
        assert not any(type(e) is RetryEvent for e in events)


async def test_fallback(server, fault, provider, mode, how):
    p, q = provider, PROVIDERS[NEXT[provider.name]]
    server.enqueue(fault.reply(p), faults.ok(q.rec))
    c = client_for(server, retry=0)
    events, err, r = await run(c, mode, how, [p.model, q.model], middleware=[fault.timeout()])
    c.close()
    assert err is None, f"{type(err).__name__}: {err}"
    sent = fault.events_sent(p)
    partial_text, reported = decode(p, sent)

    if fault.kind == "ok":
        assert len(server.requests) == 1
        assert r.text == FULL[p.name]
        assert r.attempts == [r.attempts[0]] and r.attempts[0].model == p.label
        assert not any(type(e) is FallbackEvent for e in events)
        return

    assert len(server.requests) == 2
    first, second = r.attempts
    assert first.model == p.label and second.model == q.label
    check_error(fault, first.error)
    assert second.ok and second.response is r
    assert r.provider == q.name
    if reported.input_tokens is not None:  # what the failed attempt had reported is kept
        assert first.usage.input_tokens == reported.input_tokens

    key, fresh = messages(q.protocol, [("user", "hi")])
    body = server.requests[1].json
    if fault.kind in ("before", "fatal"):
        assert body[key] == fresh
        assert r.text == FULL[q.name]
        assert r.resumed is False
        expected_mode, note = "fresh", False
    else:
        assert first.response.text == partial_text != ""
        if q.prefill:
            _, expected = messages(q.protocol, [("user", "hi"), ("assistant", partial_text.rstrip())])
            expected_mode, note = "prefill", False
        else:
            _, expected = messages(q.protocol, [("user", "hi"), ("assistant", partial_text), ("user", DEFAULT_RESUME_PROMPT)])
            expected_mode, note = "user_turn", True
        assert body[key] == expected
        cont = FULL[q.name].lstrip() if partial_text[-1:].isspace() else FULL[q.name]
        assert r.text == partial_text + cont
        assert r.resumed is True

    if how == "stream":
        (fb,) = [e for e in events if type(e) is FallbackEvent]
        assert (fb.from_model, fb.to_model, fb.mode) == (p.label, q.label, expected_mode)
        assert (fb.note is not None) == note
        assert fb.error is first.error
        assert not any(type(e) is Reset for e in events)
        assert shown_text(events) == r.text  # the caller saw the answer once, in order
        before_fb = shown_text(events[: events.index(fb)])
        assert before_fb == partial_text


async def test_close_after_the_final_event_is_a_complete_answer(server, provider, mode, how):
    """The provider sent its final event, then the connection dropped before the chunked terminator
    (a proxy closing early): nothing is missing, so no error, no retry, no fallback resuming a
    complete answer."""
    p, q = provider, PROVIDERS[NEXT[provider.name]]
    server.enqueue(faults.cut(p.rec, after=len(faults.events(p.rec))), faults.ok(q.rec))
    c = client_for(server, retry=Retry(1, initial_delay=0.001))
    events, err, r = await run(c, mode, how, [p.model, q.model])
    c.close()
    assert err is None, f"{type(err).__name__}: {err}"
    assert r.text == FULL[p.name]
    assert r.status == "ok"
    assert len(server.requests) == 1
    assert not any(type(e) in (FallbackEvent, RetryEvent) for e in events)


# -- the fault helpers themselves -------------------------------------------------------------


@pytest.mark.parametrize("protocol", faults.PROTOCOLS)
def test_error_chunk_is_an_in_band_error_of_that_protocol(protocol):
    from llmrelay.events import Finish, StreamError

    out = protocol_module(protocol).Decoder().feed(faults.error_chunk(protocol, "Overloaded now", status=529))
    if protocol == "cohere_v1":  # v1 has no error event: its stream ends with finish reason ERROR
        assert [e.reason for e in out if type(e) is Finish] == ["error"]
        return
    (err,) = [e for e in out if type(e) is StreamError]
    assert err.message == "Overloaded now"
    assert err.kind == "provider"
    if protocol == "anthropic":
        assert (err.code, err.status) == ("overloaded_error", 529)
    if protocol in ("openai_chat", "gemini"):
        assert err.status == 529


@pytest.mark.parametrize("protocol,style", [("openai_chat", "event"), ("openai_responses", "error"), ("groq", None)])
def test_error_chunk_styles(protocol, style):
    from llmrelay.events import StreamError

    proto = "openai_chat" if protocol == "groq" else protocol
    chunk = faults.error_chunk(protocol, "boom", status=500, style=style)
    if style:
        assert chunk.startswith(b"event: error\n")
    out = protocol_module(proto).Decoder().feed(chunk)
    assert [e.message for e in out if type(e) is StreamError] == ["boom"]


@pytest.mark.parametrize("protocol", faults.PROTOCOLS)
@pytest.mark.parametrize("code", [400, 429, 500, 503, 529])
def test_status_bodies_carry_the_message_in_each_providers_format(protocol, code):
    from llmrelay.errors import error_message_from_body, status_error

    reply = faults.status(code, "it broke", protocol=protocol)
    assert reply.status == code
    assert error_message_from_body(reply.body)[0] == "it broke"
    err = status_error(code, reply.body, reply.headers, provider="p")
    assert err.status_code == code and "it broke" in str(err)


def test_retry_after_header_forms():
    import datetime as dt

    from llmrelay.errors import parse_retry_after

    assert faults.status(429, retry_after=2).headers["retry-after"] == "2"
    assert faults.status(429, retry_after=0.05).headers["retry-after"] == "0.05"
    assert faults.status(429, retry_after="soon").headers["retry-after"] == "soon"
    assert faults.status(429, retry_after_ms=250).headers["retry-after-ms"] == "250.0"
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=100)
    header = faults.status(429, retry_after=when).headers["retry-after"]
    assert header.endswith("GMT")
    assert 98 <= parse_retry_after({"retry-after": header}) <= 100


def test_fault_replies_keep_the_recording_and_its_content_type():
    rec = "ollama/chat_text_done_stop.ndjson"
    events = faults.events(rec)
    assert len(events) == 22 and all(e.endswith(b"\n") for e in events)
    cut = faults.cut(rec, after=3)
    assert (cut.cut_after, cut.chunking, cut.headers["content-type"]) == (3, "events", "application/x-ndjson")
    stall = faults.stall(rec, after=2, seconds=1.5, keepalive=0.1)
    assert (stall.stall_after, stall.stall, stall.keepalive, stall.keepalive_bytes) == (2, 1.5, 0.1, b"\n")
    assert faults.stall("anthropic/text_basic.sse", after=0, seconds=1, keepalive=0.1).keepalive_bytes.startswith(b":")
    bad = faults.malformed(rec, after=1)
    assert bad.body.splitlines()[1] == b"{not json"
    assert faults.malformed("anthropic/text_basic.sse", after=0).body.startswith(b"data: {not json\n\n")
    err = faults.error_event("ollama", rec, after=2)
    assert err.body == b"".join(events[:2]) + b'{"error": "Overloaded"}\n'
    assert faults.error_event("anthropic").headers["content-type"] == "text/event-stream"
    assert faults.reset().reset is True
    assert faults.drip(rec, delay=0.01).delay == 0.01
    assert faults.ok(faults.cut(rec, after=1), cut_after=None).cut_after is None  # a Reply is a source too
    with pytest.raises(ValueError):
        faults.error_event("nonesuch")
    with pytest.raises(TypeError):
        faults.cut(42, after=1)


def test_faults_docstring_example_runs_as_documented(capsys):
    import textwrap

    doc = faults.__doc__
    start = doc.index("    import llmrelay")
    end = doc.index("\nThe faults:")
    exec(compile(textwrap.dedent(doc[start:end]), "faults-example", "exec"), {})
    out = capsys.readouterr().out
    # every request is an attempt: the 429, its retry (cut after content), the fallback that answered
    assert out == ("I'm unable to- Captain\n- Scoop True "
                   "['openai:gpt-4o', 'openai:gpt-4o', 'anthropic:claude-sonnet-4-5']\n3\n")


# -- the other modes after content, over every pair ------------------------------------------------


async def test_restart_after_content(server, provider, mode):
    p, q = provider, PROVIDERS[NEXT[provider.name]]
    shown, _ = decode(p, p.after)
    server.enqueue(faults.cut(p.rec, after=p.after), faults.ok(q.rec))
    c = client_for(server, retry=0)
    events, err, r = await run(c, mode, "stream", [p.model, q.model], fallback_mode="restart")
    assert err is None
    key, fresh = messages(q.protocol, [("user", "hi")])
    assert server.requests[1].json[key] == fresh
    assert r.text == FULL[q.name] and r.resumed is False
    reset_at = next(i for i, e in enumerate(events) if type(e) is Reset)
    assert events[reset_at].discarded_text == shown == shown_text(events[:reset_at])
    assert shown_text(events[reset_at:]) == r.text
    # text_stream refuses to repeat: it raises at the Reset, after showing the first attempt once
    server.enqueue(faults.cut(p.rec, after=p.after), faults.ok(q.rec))
    got: list[str] = []
    with pytest.raises(StreamResetError):
        if mode == "sync":
            for t in c.stream([p.model, q.model], "hi", fallback_mode="restart").text_stream:
                got.append(t)
        else:
            async for t in c.astream([p.model, q.model], "hi", fallback_mode="restart").text_stream:
                got.append(t)
    c.close()
    assert "".join(got) == shown


async def test_user_turn_after_content(server, provider, mode, how):
    p, q = provider, PROVIDERS[NEXT[provider.name]]
    shown, _ = decode(p, p.after)
    server.enqueue(faults.error_event(p.protocol, p.rec, after=p.after), faults.ok(q.rec))
    c = client_for(server, retry=0)
    events, err, r = await run(c, mode, how, [p.model, q.model], fallback_mode="user_turn", resume_prompt="Go on.")
    c.close()
    assert err is None
    key, expected = messages(q.protocol, [("user", "hi"), ("assistant", shown), ("user", "Go on.")])
    assert server.requests[1].json[key] == expected
    assert r.text == shown + FULL[q.name] and r.resumed is True
    if how == "stream":
        (fb,) = [e for e in events if type(e) is FallbackEvent]
        assert (fb.mode, fb.note) == ("user_turn", None)
        assert shown_text(events) == r.text


async def run(client, mode, how, model, **kw):
    """(events, error, response-or-partial). `complete` shows no events."""
    return await _run(client, mode, model, "hi", how, **kw)
