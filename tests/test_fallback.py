"""Fallback across models (before and after content), cascade aliases, and what the caller sees.

Every scenario checks the request count and bodies the server received, the
events the caller saw (never repeated text without a `Reset`, nothing lost)
and what the final response says (`attempts`, `resumed`, `provider`, `model`).
"""

from __future__ import annotations

import pytest

from helpers import run as _run

import llmrelay
from llmrelay import (
    AllModelsFailedError,
    APIConnectionError,
    FallbackEvent,
    InternalServerError,
    MissingAPIKeyError,
    OverloadedError,
    ProviderStreamError,
    Reset,
    Retry,
    RetryEvent,
    Router,
    ServiceUnavailableError,
    StreamInterruptedError,
    StreamResetError,
    TextDelta,
)
from llmrelay.reliability.fallback import DEFAULT_RESUME_PROMPT
from llmrelay.engine.prepare import protocol_module
from llmrelay.testing import Reply, client_for, faults, read_recording

OPENAI = "openai:gpt-4o"
ANTHROPIC = "anthropic:claude-sonnet-4-5"
GEMINI = "gemini:gemini-2.0-flash"
OLLAMA = "ollama:gemma3:1b"

O_REC = "openai_chat/text_usage_chunk.sse"
A_REC = "anthropic/text_basic.sse"
G_REC = "gemini/text_sse.sse"
L_REC = "ollama/chat_text_done_stop.ndjson"
PROTOCOL = {O_REC: "openai_chat", A_REC: "anthropic", G_REC: "gemini", L_REC: "ollama"}


def decoded_text(rec: str, events: int | None = None) -> str:
    """The answer text of a recording (or of its first `events` events), decoded offline."""
    dec = protocol_module(PROTOCOL[rec]).Decoder()
    pieces = faults.events(rec)
    out = []
    for piece in pieces[: events if events is not None else len(pieces)]:
        out.extend(dec.feed(piece))
    if events is None:
        out.extend(dec.end())
    return "".join(e.text for e in out if type(e) is TextDelta and e.choice == 0)


O_TEXT = decoded_text(O_REC)
A_TEXT = decoded_text(A_REC)
G_TEXT = decoded_text(G_REC)
L_TEXT = decoded_text(L_REC)
O_SHOWN = decoded_text(O_REC, 4)  # "I'm unable to"
assert O_SHOWN == "I'm unable to" and A_TEXT == "- Captain\n- Scoop"


class Outcome:
    def __init__(self, events, error, response):
        self.events = events
        self.error = error
        self.response = response

    @property
    def seen(self) -> str:
        """The text the caller was shown (after the last Reset, if any)."""
        text = ""
        for e in self.events:
            if type(e) is Reset:
                text = ""
            elif type(e) is TextDelta and e.choice == 0:
                text += e.text
        return text

    def of(self, kind):
        return [e for e in self.events if type(e) is kind]




def check_no_duplication(out: Outcome) -> None:
    """The property every scenario keeps: what the caller saw is the answer, exactly."""
    if out.error is None and out.events:
        assert out.seen == out.response.text
    if not out.of(Reset):
        # without a Reset, no text was ever shown twice: the full stream of text is the answer
        full = "".join(e.text for e in out.of(TextDelta) if e.choice == 0)
        if out.error is None and out.events:
            assert full == out.response.text


@pytest.fixture
def make_client(server):
    made = []

    def make(**kw):
        kw.setdefault("retry", 0)
        c = client_for(server, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def bodies(server):
    return [r.json for r in server.requests]


# -- before content: the next model answers fresh ---------------------------------------------


async def test_fallback_before_content_is_fresh(server, make_client, mode, how):
    server.enqueue(faults.status(503), faults.ok(A_REC))
    out = await run(make_client(), mode, [OPENAI, ANTHROPIC], how=how)
    assert out.error is None
    r = out.response
    assert r.text == A_TEXT
    assert (r.provider, r.model, r.requested_model) == ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5")
    assert r.resumed is False
    assert [(a.model, type(a.error).__name__ if a.error else None) for a in r.attempts] == [
        (OPENAI, "ServiceUnavailableError"), (ANTHROPIC, None)]
    assert r.attempts[-1].response is r and r.attempts[-1].ok
    assert len(server.requests) == 2
    second = bodies(server)[1]
    assert second["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    if how == "stream":
        (fb,) = out.of(FallbackEvent)
        assert (fb.from_model, fb.to_model, fb.mode, fb.note) == (OPENAI, ANTHROPIC, "fresh", None)
        assert isinstance(fb.error, ServiceUnavailableError)
        assert not out.of(Reset)
        check_no_duplication(out)


@pytest.mark.parametrize("fault", ["400", "401", "reset", "cut0", "inband", "malformed"])
async def test_every_kind_of_failure_before_content_falls_back(server, make_client, mode, fault):
    first = {
        "400": faults.status(400),
        "401": faults.status(401),
        "reset": faults.reset(),
        "cut0": faults.cut(O_REC, after=1),
        "inband": faults.error_event("openai_chat", O_REC, after=1),
        "malformed": faults.malformed(O_REC, after=0),
    }[fault]
    server.enqueue(first, faults.ok(L_REC))
    out = await run(make_client(), mode, [OPENAI, OLLAMA])
    assert out.error is None
    assert out.response.text == L_TEXT
    assert out.of(FallbackEvent)[0].mode == "fresh"
    assert len(server.requests) == 2
    check_no_duplication(out)


async def test_each_model_is_retried_before_the_next(server, make_client, mode):
    overloaded = faults.status(529, protocol="anthropic")
    server.enqueue(faults.status(503), faults.status(503), overloaded, overloaded, faults.ok(L_REC))
    out = await run(make_client(retry=Retry(1, initial_delay=0.001)), mode, [OPENAI, ANTHROPIC, OLLAMA])
    assert out.error is None
    assert len(server.requests) == 5  # each model: 1 + 1 retry; then ollama answers
    retries = out.of(RetryEvent)
    assert [(e.provider, e.attempt) for e in retries] == [("openai", 1), ("anthropic", 1)]
    assert [e.to_model for e in out.of(FallbackEvent)] == [ANTHROPIC, OLLAMA]


async def test_missing_api_key_on_the_first_model(server, mode, how):
    c = client_for(server, retry=0, api_keys={"anthropic": ""}, env={})
    server.enqueue(faults.ok(O_REC))
    out = await run(c, mode, [ANTHROPIC, OPENAI], how=how)
    c.close()
    assert out.error is None
    assert out.response.text == O_TEXT
    assert len(server.requests) == 1  # nothing was sent to anthropic
    first, second = out.response.attempts
    assert first.model == ANTHROPIC and isinstance(first.error, MissingAPIKeyError) and first.response is None
    assert second.model == OPENAI and second.ok
    assert out.response.provider == "openai"


async def test_missing_api_key_on_the_first_model_emits_a_fallback_event(server, mode):
    c = client_for(server, retry=0, api_keys={"anthropic": ""}, env={})
    server.enqueue(faults.ok(O_REC))
    out = await run(c, mode, [ANTHROPIC, OPENAI])
    c.close()
    assert out.error is None
    fb = out.of(FallbackEvent)
    assert [(e.from_model, e.to_model, e.mode) for e in fb] == [(ANTHROPIC, OPENAI, "fresh")]
    assert isinstance(fb[0].error, MissingAPIKeyError)


async def test_missing_api_key_in_the_middle_of_the_list(server, mode):
    c = client_for(server, retry=0, api_keys={"gemini": ""}, env={})
    server.enqueue(faults.status(500), faults.ok(A_REC))
    out = await run(c, mode, [OPENAI, GEMINI, ANTHROPIC])
    c.close()
    assert out.error is None
    assert out.response.text == A_TEXT
    assert len(server.requests) == 2
    assert [(a.model, type(a.error).__name__ if a.error else None) for a in out.response.attempts] == [
        (OPENAI, "InternalServerError"), (GEMINI, "MissingAPIKeyError"), (ANTHROPIC, None)]
    assert [(e.from_model, e.to_model) for e in out.of(FallbackEvent)] == [(OPENAI, GEMINI), (GEMINI, ANTHROPIC)]


def test_no_model_has_a_key(server):
    c = client_for(server, api_keys={"anthropic": "", "openai": ""}, env={})
    with pytest.raises(AllModelsFailedError) as info:
        c.stream([ANTHROPIC, OPENAI], "hi")
    assert [type(e) for e in info.value.exceptions] == [MissingAPIKeyError, MissingAPIKeyError]
    assert [a.model for a in info.value.attempts] == [ANTHROPIC, OPENAI]
    assert server.requests == []


# -- after content: prefill, user_turn, restart ---------------------------------------------------


def anthropic_user(text):
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def anthropic_assistant(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


async def test_prefill_continues_on_anthropic(server, make_client, mode, how):
    server.enqueue(faults.cut(O_REC, after=4), faults.ok(A_REC))
    out = await run(make_client(), mode, [OPENAI, ANTHROPIC], how=how)
    assert out.error is None
    r = out.response
    assert r.text == O_SHOWN + A_TEXT
    assert r.resumed is True
    assert (r.provider, r.requested_model) == ("anthropic", "claude-sonnet-4-5")
    first, second = r.attempts
    assert first.model == OPENAI and type(first.error) is StreamInterruptedError
    assert first.response.text == O_SHOWN
    assert second.model == ANTHROPIC and second.ok
    assert len(server.requests) == 2
    body = bodies(server)[1]
    assert body == {
        "model": "claude-sonnet-4-5",
        "messages": [anthropic_user("hi"), anthropic_assistant("I'm unable to")],
        "max_tokens": 4096,
        "stream": True,
    }
    # the transcript carries the stitched answer once
    assert r.messages[-1].text == O_SHOWN + A_TEXT
    if how == "stream":
        (fb,) = out.of(FallbackEvent)
        assert (fb.from_model, fb.to_model, fb.mode, fb.note) == (OPENAI, ANTHROPIC, "prefill", None)
        assert not out.of(Reset)
        assert out.seen == r.text
        check_no_duplication(out)


async def test_prefill_trims_trailing_whitespace_and_the_continuations_leading_whitespace(server, make_client, mode):
    # ollama shows "Okay, here we go!\n\n" (7 events), then is cut
    shown = decoded_text(L_REC, 7)
    assert shown == "Okay, here we go!\n\n"
    cont = read_recording(A_REC).replace(b'"text":"-"', b'"text":"\\n\\n-"', 1)
    server.enqueue(faults.cut(L_REC, after=7), faults.ok(cont, headers={"content-type": "text/event-stream"}))
    out = await run(make_client(), mode, [OLLAMA, ANTHROPIC])
    assert out.error is None
    assert bodies(server)[1]["messages"][-1] == anthropic_assistant("Okay, here we go!")
    assert out.response.text == "Okay, here we go!\n\n- Captain\n- Scoop"
    assert out.seen == out.response.text
    check_no_duplication(out)


async def test_prefill_on_ollama(server, make_client, mode):
    server.enqueue(faults.cut(G_REC, after=1), faults.ok(L_REC))
    out = await run(make_client(), mode, [GEMINI, OLLAMA])
    assert out.error is None
    assert bodies(server)[1]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The"}]
    assert out.response.text == "The" + L_TEXT
    assert out.of(FallbackEvent)[0].mode == "prefill"
    check_no_duplication(out)


async def test_user_turn_on_openai(server, make_client, mode, how):
    server.enqueue(faults.cut(A_REC, after=5), faults.ok(O_REC))
    out = await run(make_client(), mode, [ANTHROPIC, OPENAI], fallback_mode="user_turn", how=how)
    assert out.error is None
    body = bodies(server)[1]
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "- Captain"},
            {"role": "user", "content": DEFAULT_RESUME_PROMPT},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = out.response
    assert r.text == "- Captain" + O_TEXT
    assert r.resumed is True
    if how == "stream":
        fb = out.of(FallbackEvent)[0]
        assert (fb.mode, fb.note) == ("user_turn", None)
        check_no_duplication(out)


async def test_custom_resume_prompt(server, mode):
    c = client_for(server, retry=0, resume_prompt="Go on.")
    server.enqueue(faults.cut(A_REC, after=5), faults.ok(O_REC), faults.cut(A_REC, after=5), faults.ok(O_REC))
    await run(c, mode, [ANTHROPIC, OPENAI], fallback_mode="user_turn")
    await run(c, mode, [ANTHROPIC, OPENAI], fallback_mode="user_turn", resume_prompt="Continue.")
    c.close()
    assert bodies(server)[1]["messages"][-1] == {"role": "user", "content": "Go on."}
    assert bodies(server)[3]["messages"][-1] == {"role": "user", "content": "Continue."}


@pytest.mark.parametrize("target", [OPENAI, GEMINI])
async def test_prefill_to_a_provider_without_prefill_becomes_user_turn(server, make_client, mode, target):
    rec = O_REC if target == OPENAI else G_REC
    server.enqueue(faults.cut(A_REC, after=5), faults.ok(rec))
    out = await run(make_client(), mode, [ANTHROPIC, target])
    assert out.error is None
    (fb,) = out.of(FallbackEvent)
    assert fb.mode == "user_turn"
    assert fb.note and target.split(":")[0] in fb.note and "prefill" in fb.note
    body = bodies(server)[1]
    if target == OPENAI:
        assert body["messages"][1:] == [{"role": "assistant", "content": "- Captain"},
                                        {"role": "user", "content": DEFAULT_RESUME_PROMPT}]
    else:
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "- Captain"}]},
            {"role": "user", "parts": [{"text": DEFAULT_RESUME_PROMPT}]},
        ]
    assert out.response.resumed is True
    check_no_duplication(out)


async def test_restart_emits_reset_before_the_new_text(server, make_client, mode, how):
    server.enqueue(faults.cut(O_REC, after=4), faults.ok(A_REC))
    out = await run(make_client(), mode, [OPENAI, ANTHROPIC], fallback_mode="restart", how=how)
    assert out.error is None
    r = out.response
    assert r.text == A_TEXT
    assert r.resumed is False
    assert bodies(server)[1]["messages"] == [anthropic_user("hi")]  # the original request, nothing more
    if how == "stream":
        types = [type(e) for e in out.events]
        fb_at, reset_at = types.index(FallbackEvent), types.index(Reset)
        assert fb_at < reset_at < types.index(TextDelta, reset_at)
        assert out.events[fb_at].mode == "restart"
        assert out.events[reset_at].discarded_text == O_SHOWN
        before = "".join(e.text for e in out.events[:reset_at] if type(e) is TextDelta)
        assert before == O_SHOWN
        assert out.seen == r.text
        check_no_duplication(out)


async def test_restart_text_stream_raises_instead_of_repeating(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4), faults.ok(A_REC))
    c = make_client()
    got: list[str] = []
    with pytest.raises(StreamResetError) as info:
        if mode == "sync":
            with c.stream([OPENAI, ANTHROPIC], "hi", fallback_mode="restart") as s:
                for t in s.text_stream:
                    got.append(t)
        else:
            async with c.astream([OPENAI, ANTHROPIC], "hi", fallback_mode="restart") as s:
                async for t in s.text_stream:
                    got.append(t)
    assert "".join(got) == O_SHOWN  # shown once, never followed by the restarted text
    assert info.value.discarded_text == O_SHOWN


async def test_text_stream_never_raises_for_prefill(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4), faults.ok(A_REC))
    c = make_client()
    if mode == "sync":
        got = list(c.stream([OPENAI, ANTHROPIC], "hi").text_stream)
    else:
        got = [t async for t in c.astream([OPENAI, ANTHROPIC], "hi").text_stream]
    assert "".join(got) == O_SHOWN + A_TEXT


async def test_router_object_and_its_mode(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4), faults.ok(A_REC))
    router = Router([OPENAI, ANTHROPIC], mode="user_turn", resume_prompt="more")
    out = await run(make_client(), mode, router)
    assert out.error is None
    assert bodies(server)[1]["messages"][-1] == anthropic_user("more")
    assert out.of(FallbackEvent)[0].mode == "user_turn"


def test_router_validates():
    with pytest.raises(ValueError):
        Router([])
    with pytest.raises(ValueError):
        Router("openai:gpt-4o")
    with pytest.raises(ValueError):
        Router([OPENAI], mode="sometimes")


# -- usage, attempts and total failure -----------------------------------------------------------


async def test_usage_a_failed_attempt_reported_is_kept(server, make_client, mode, how):
    """Anthropic reports input tokens in message_start: the cut attempt keeps them, not estimated."""
    server.enqueue(faults.cut(A_REC, after=5), faults.ok(L_REC))
    out = await run(make_client(), mode, [ANTHROPIC, OLLAMA], how=how)
    assert out.error is None
    failed, ok = out.response.attempts
    assert failed.usage.input_tokens == 17
    assert failed.usage.output_tokens == 1
    assert failed.response.text == "- Captain"
    assert ok.usage is out.response.usage
    assert out.response.usage.input_tokens  # ollama's own, reported at done
    assert out.response.usage.estimated is False


async def test_gemini_usage_kept_on_a_cut(server, make_client, mode):
    server.enqueue(faults.cut(G_REC, after=1), faults.ok(A_REC))
    out = await run(make_client(), mode, [GEMINI, ANTHROPIC])
    failed = out.response.attempts[0]
    assert failed.usage.input_tokens == 15  # reported in the first chunk
    assert failed.usage.estimated is True  # the output count was estimated


async def test_all_models_fail_before_content(server, make_client, mode, how):
    server.enqueue(faults.status(503), faults.status(529, protocol="anthropic"), faults.reset())
    out = await run(make_client(), mode, [OPENAI, ANTHROPIC, GEMINI], how=how)
    err = out.error
    assert isinstance(err, AllModelsFailedError)
    assert isinstance(err, ExceptionGroup) and isinstance(err, llmrelay.LLMRelayError)
    assert [type(e) for e in err.exceptions] == [ServiceUnavailableError, OverloadedError, APIConnectionError]
    assert [a.model for a in err.attempts] == [OPENAI, ANTHROPIC, GEMINI]
    assert all(a.error is e for a, e in zip(err.attempts, err.exceptions))
    assert len(server.requests) == 3
    # except* can pick one kind out of the group
    caught = []
    try:
        raise err
    except* OverloadedError as group:
        caught.extend(group.exceptions)
    except* Exception:
        pass
    assert [type(e) for e in caught] == [OverloadedError]


async def test_all_models_fail_after_content_keeps_every_partial(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4), faults.error_event("anthropic", A_REC, after=5))
    out = await run(make_client(), mode, [OPENAI, ANTHROPIC])
    err = out.error
    assert isinstance(err, AllModelsFailedError)
    assert [type(e) for e in err.exceptions] == [StreamInterruptedError, ProviderStreamError]
    first, second = err.attempts
    assert first.response.text == O_SHOWN
    assert second.response.text == "- Captain"
    assert second.usage.input_tokens == 17
    # prefill: anthropic was asked to continue "I'm unable to"
    assert bodies(server)[1]["messages"][-1] == anthropic_assistant(O_SHOWN)
    assert out.seen == O_SHOWN + "- Captain"  # shown once each


async def test_two_failures_after_content_chain_the_prefill(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4), faults.cut(L_REC, after=3), faults.ok(A_REC))
    out = await run(make_client(), mode, [OPENAI, OLLAMA, ANTHROPIC])
    assert out.error is None
    shown = O_SHOWN + decoded_text(L_REC, 3)
    assert bodies(server)[1]["messages"][-1] == {"role": "assistant", "content": O_SHOWN}
    assert bodies(server)[2]["messages"][-1] == anthropic_assistant(shown)
    assert out.response.text == shown + A_TEXT
    assert [e.mode for e in out.of(FallbackEvent)] == ["prefill", "prefill"]
    check_no_duplication(out)


async def test_failure_before_content_after_an_earlier_model_showed_some(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4), faults.status(529, protocol="anthropic"), faults.ok(L_REC))
    out = await run(make_client(), mode, [OPENAI, ANTHROPIC, OLLAMA])
    assert out.error is None
    assert bodies(server)[2]["messages"][-1] == {"role": "assistant", "content": O_SHOWN}
    assert out.response.text == O_SHOWN + L_TEXT
    assert out.response.resumed is True
    check_no_duplication(out)


# -- cascade aliases: before first content only ---------------------------------------------------


async def test_cascade_alias_fails_over_before_content(server, mode, how):
    c = client_for(server, retry=0, aliases={"smart": [OPENAI, ANTHROPIC]})
    server.enqueue(faults.status(500), faults.ok(A_REC))
    out = await run(c, mode, "smart", how=how)
    c.close()
    assert out.error is None
    assert out.response.text == A_TEXT
    assert [a.model for a in out.response.attempts] == [OPENAI, ANTHROPIC]
    if how == "stream":
        assert out.of(FallbackEvent)[0].mode == "fresh"


async def test_cascade_alias_reraises_after_content(server, mode, how):
    c = client_for(server, retry=Retry(2, initial_delay=0.001), aliases={"smart": [OPENAI, ANTHROPIC]})
    server.enqueue(faults.cut(O_REC, after=4), faults.ok(A_REC))
    out = await run(c, mode, "smart", how=how, fallback_mode="prefill")  # a cascade ignores the mode
    c.close()
    assert type(out.error) is StreamInterruptedError  # the error itself, not a group
    assert out.error.partial.text == O_SHOWN
    assert len(server.requests) == 1
    if how == "stream":
        assert out.seen == O_SHOWN


async def test_cascade_all_fail_before_content(server, mode):
    c = client_for(server, retry=0, aliases={"smart": [OPENAI, ANTHROPIC]})
    server.enqueue(faults.status(500), faults.status(529, protocol="anthropic"))
    out = await run(c, mode, "smart")
    c.close()
    assert isinstance(out.error, AllModelsFailedError)
    assert [type(e) for e in out.error.exceptions] == [InternalServerError, OverloadedError]


async def test_router_mode_none(server, make_client, mode):
    server.enqueue(faults.cut(O_REC, after=4))
    out = await run(make_client(), mode, Router([OPENAI, ANTHROPIC], mode="none"))
    assert type(out.error) is StreamInterruptedError
    assert len(server.requests) == 1


# -- the property: what the caller saw is the answer ----------------------------------------------

SCENARIOS = {
    "fresh": ([faults.status(503), faults.ok(A_REC)], [OPENAI, ANTHROPIC], "prefill"),
    "prefill": ([faults.cut(O_REC, after=4), faults.ok(A_REC)], [OPENAI, ANTHROPIC], "prefill"),
    "prefill_ws": ([faults.cut(L_REC, after=7), faults.ok(A_REC)], [OLLAMA, ANTHROPIC], "prefill"),
    "prefill_as_user_turn": ([faults.cut(A_REC, after=5), faults.ok(G_REC)], [ANTHROPIC, GEMINI], "prefill"),
    "user_turn": ([faults.malformed(G_REC, after=1), faults.ok(L_REC)], [GEMINI, OLLAMA], "user_turn"),
    "restart": ([faults.error_event("ollama", L_REC, after=5), faults.ok(O_REC)], [OLLAMA, OPENAI], "restart"),
    "restart_twice": ([faults.cut(O_REC, after=6), faults.cut(A_REC, after=4), faults.ok(G_REC)],
                      [OPENAI, ANTHROPIC, GEMINI], "restart"),
    "chain": ([faults.cut(O_REC, after=9), faults.stall(L_REC, after=4, seconds=1), faults.ok(A_REC)],
              [OPENAI, OLLAMA, ANTHROPIC], "prefill"),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_seen_text_is_the_answer(server, make_client, mode, name):
    from llmrelay.reliability.builtins import Timeout

    replies, models, fb_mode = SCENARIOS[name]
    server.enqueue(*replies)
    out = await run(make_client(), mode, models, fallback_mode=fb_mode, middleware=[Timeout(idle=0.1)])
    assert out.error is None, out.error
    assert len(server.requests) == len(replies)
    r = out.response
    assert out.seen == r.text
    resets = out.of(Reset)
    if not resets:
        assert "".join(e.text for e in out.of(TextDelta)) == r.text
    else:
        # each Reset discards exactly what was shown since the previous one
        shown, i = "", 0
        for e in out.events:
            if type(e) is TextDelta:
                shown += e.text
            elif type(e) is Reset:
                assert e.discarded_text == shown
                shown, i = "", i + 1
    assert len(r.attempts) == len(replies)
    assert r.attempts[-1].ok and all(not a.ok for a in r.attempts[:-1])
    assert r.resumed == (bool(r.attempts[0].response and r.attempts[0].response.text) and fb_mode != "restart")
    assert [e.to_model for e in out.of(FallbackEvent)] == [a.model for a in r.attempts[1:]]


async def test_trimmed_whitespace_is_not_counted_twice_when_the_continuation_fails_too(server, make_client, mode):
    """ollama shows "Okay, here we go!\\n\\n"; anthropic's continuation starts with "\\n\\n" (not shown: the
    caller already has that whitespace) and is cut; openai is told exactly what the caller saw."""
    cont = read_recording(A_REC).replace(b'"text":"-"', b'"text":"\\n\\n-"', 1)
    server.enqueue(
        faults.cut(L_REC, after=7),
        faults.cut(cont, after=5, headers={"content-type": "text/event-stream"}),
        faults.ok(O_REC),
    )
    out = await run(make_client(), mode, [OLLAMA, ANTHROPIC, OPENAI])
    assert out.error is None
    seen_before_openai = "Okay, here we go!\n\n- Captain"
    assert bodies(server)[2]["messages"][1] == {"role": "assistant", "content": seen_before_openai}
    assert out.seen == out.response.text == seen_before_openai + O_TEXT
    check_no_duplication(out)


async def test_logging_records_each_model_tried(server, make_client, mode, caplog):
    import logging

    from llmrelay.reliability.builtins import Logging

    caplog.set_level(logging.INFO, logger="llmrelay.fallback-test")
    server.enqueue(faults.status(503), faults.ok(A_REC))
    c = make_client(middleware=[Logging("llmrelay.fallback-test")])
    out = await run(c, mode, [OPENAI, ANTHROPIC])
    assert out.error is None
    records = [r.llmrelay for r in caplog.records if r.name == "llmrelay.fallback-test"]
    assert [(r["event"], r["provider"], r.get("status")) for r in records] == [
        ("turn_start", "openai", None), ("turn_end", "openai", "error"),
        ("turn_start", "anthropic", None), ("turn_end", "anthropic", "ok"),
    ]


async def test_retries_of_a_failed_model_stay_in_the_attempts(server):
    """[429, cut after content, ok]: the 429 retried on the first model, whose retry is cut; the
    second model answers. Every request is on response.attempts, in order."""
    from llmrelay.testing import client_for

    client = client_for(server, retry=llmrelay.Retry(2, initial_delay=0.01))
    body = read_recording("openai_chat/text_usage_chunk.sse")
    server.enqueue(faults.status(429), Reply(body[: body.index(b"data:", 1500)]), Reply.recording("anthropic/text_basic.sse"))
    r = client.complete(["openai:gpt-4o", "anthropic:claude-x"], "hi")
    assert [type(a.error).__name__ if a.error else "ok" for a in r.attempts] == [
        "RateLimitError", "StreamInterruptedError", "ok"]
    assert len(server.requests) == 3


async def run(client, mode, model, messages="hi", how="stream", **kw) -> Outcome:
    events, error, response = await _run(client, mode, model, messages, how, **kw)
    return Outcome(events, error, None if how == "complete" and error is not None else response)
