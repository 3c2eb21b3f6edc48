"""Retries through the real HTTP path: only before content, exact request counts, backoff rules.

Every test counts the requests the server received: the policy's number,
never one more (no hidden retries underneath).
"""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest

from helpers import drive, run as _run, texts

import llmrelay
from llmrelay import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    InternalServerError,
    MalformedChunkError,
    ProviderStreamError,
    RateLimitError,
    Retry,
    RetryEvent,
    ServiceUnavailableError,
    StreamInterruptedError,
    TextDelta,
)
from llmrelay.errors import status_error
from llmrelay.reliability.middleware import run_turn
from llmrelay.reliability.builtins import Timeout
from llmrelay.engine.plan import Emit, Send, Sleep
from llmrelay.response import Response
from llmrelay.reliability.retry import RETRY_STATUSES, as_retry, is_retryable
from llmrelay.testing import client_for, faults

MODEL = "openai:gpt-4o"
REC = "openai_chat/text_usage_chunk.sse"
TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
    "I recommend checking a reliable weather website or a weather app."
)
FAST = dict(initial_delay=0.001, max_delay=0.002)


def retries(events) -> list[RetryEvent]:
    return [e for e in events if type(e) is RetryEvent]


class GenericRetry(Retry):
    """A subclass of `Retry`: the client runs it through the generic middleware chain (generators
    and closures), where a plain `Retry` runs as one `RetryPlan` object. Every test that takes
    `make_client` runs both ways, so the two must behave alike."""


def generic(policy: Retry) -> GenericRetry:
    twin = GenericRetry.__new__(GenericRetry)
    twin.__dict__.update(policy.__dict__)
    return twin


@pytest.fixture(params=["plan", "chain"])
def make_client(server, request):
    made = []

    def make(**kw):
        kw.setdefault("retry", Retry(2, **FAST))
        if request.param == "chain" and type(kw["retry"]) is Retry:
            kw["retry"] = generic(kw["retry"])
        c = client_for(server, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_a_plain_retry_is_one_plan_object_and_a_subclass_goes_through_the_chain(server):
    """What makes the two runs of every `make_client` test differ (and so worth comparing)."""
    from llmrelay.reliability.retry import RetryPlan

    plain, sub = client_for(server, retry=Retry(2)), client_for(server, retry=GenericRetry(2))
    try:
        assert type(plain.stream(MODEL, "hi")._run._plan) is RetryPlan
        assert type(sub.stream(MODEL, "hi")._run._plan) is not RetryPlan
        assert type(plain.stream(MODEL, "hi", tools=[_lookup])._run._plan) is not RetryPlan  # a tool loop: the chain
    finally:
        plain.close()
        sub.close()


def _lookup(city: str) -> str:
    """Look a city up."""
    return city


# -- status codes ------------------------------------------------------------------------


async def test_500_500_200_is_three_requests_and_a_clean_stream(server, make_client, mode, how):
    server.enqueue(faults.status(500), faults.status(500), faults.ok(REC))
    events, err, r = await run(make_client(), mode, how=how)
    assert err is None
    assert len(server.requests) == 3
    assert r.text == TEXT
    assert r.status == "ok"
    if how == "stream":
        assert texts(events) == TEXT  # nothing repeated, nothing lost
        assert [e.attempt for e in retries(events)] == [1, 2]
        assert all(isinstance(e.error, InternalServerError) for e in retries(events))
        # the retry events come before any content
        first_text = next(i for i, e in enumerate(events) if type(e) is TextDelta)
        assert all(events.index(e) < first_text for e in retries(events))
    # the three requests are identical
    assert server.requests[0].body == server.requests[1].body == server.requests[2].body


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_never_retried(server, make_client, mode, status):
    server.enqueue(faults.status(status), faults.ok(REC))
    events, err, _ = await run(make_client(retry=Retry(3, **FAST)), mode)
    assert isinstance(err, llmrelay.APIStatusError)
    assert err.status_code == status
    assert len(server.requests) == 1
    assert retries(events) == []


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
async def test_transient_statuses_are_retried(server, make_client, mode, status):
    assert RETRY_STATUSES == {408, 409, 429, 500, 502, 503, 504, 529}
    server.enqueue(faults.status(status), faults.ok(REC))
    events, err, r = await run(make_client(retry=Retry(1, **FAST)), mode)
    assert err is None
    assert len(server.requests) == 2
    assert r.text == TEXT == texts(events)
    (event,) = retries(events)
    assert event.error.status_code == status
    assert (event.provider, event.model) == ("openai", "gpt-4o")


async def test_retries_exhausted_raise_the_last_typed_error(server, make_client, mode, how):
    server.enqueue(*(faults.status(503, f"down {i}") for i in range(3)), faults.ok(REC))
    events, err, _ = await run(make_client(retry=Retry(2, **FAST)), mode, how=how)
    assert type(err) is ServiceUnavailableError
    assert "down 2" in str(err)
    assert len(server.requests) == 3
    if how == "stream":
        assert len(retries(events)) == 2


async def test_default_client_retries_twice_no_more(server, mode):
    """`Client()` retries 2 times by default: a dead service gets exactly 3 requests."""
    server.default = faults.status(503)
    c = client_for(server)  # the default policy (delays are small: initial 0.5 s is jittered from 0)
    c.retry.initial_delay, c.retry.max_delay = 0.001, 0.002
    try:
        _, err, _ = await run(c, mode)
    finally:
        c.close()
    assert type(err) is ServiceUnavailableError
    assert len(server.requests) == 3


async def test_retry_zero_is_one_request(server, make_client, mode, how):
    server.enqueue(faults.status(500), faults.ok(REC))
    _, err, _ = await run(make_client(retry=0), mode, how=how)
    assert type(err) is InternalServerError
    assert len(server.requests) == 1


async def test_per_call_retry_overrides_the_client(server, make_client, mode):
    server.enqueue(faults.status(500), faults.status(500), faults.ok(REC))
    c = make_client(retry=0)
    _, err, r = await run(c, mode, retry=Retry(2, **FAST))
    assert err is None and r.text == TEXT
    assert len(server.requests) == 3
    server.enqueue(faults.status(500), faults.ok(REC))
    _, err, _ = await run(make_client(retry=Retry(5, **FAST)), mode, retry=0)
    assert type(err) is InternalServerError
    assert len(server.requests) == 4


# -- Retry-After ---------------------------------------------------------------------------


async def test_retry_after_seconds_is_a_minimum(server, make_client, mode):
    """Retry-After raises the policy's ~1 ms backoff to 0.15 s: the recorded delay says so, and the
    server got the retry no sooner than that after the first request. That gap is a lower bound
    (the wait really happened), not a speed assertion: load can only lengthen it."""
    server.enqueue(faults.status(429, retry_after=0.15), faults.ok(REC))
    events, err, r = await run(make_client(retry=Retry(1, **FAST)), mode)
    assert err is None and r.text == TEXT
    (event,) = retries(events)
    assert event.error.retry_after == pytest.approx(0.15)
    assert event.delay >= 0.15 > FAST["max_delay"]
    gap = server.requests[1].received_at - server.requests[0].received_at
    assert gap >= 0.14  # 0.15 less the event loop's timer slack


async def test_retry_after_ms_is_honoured(server, make_client, mode):
    server.enqueue(faults.status(503, retry_after_ms=120), faults.ok(REC))
    events, err, _ = await run(make_client(retry=Retry(1, **FAST)), mode)
    assert err is None
    assert retries(events)[0].delay >= 0.12


async def test_retry_after_http_date_through_the_server(server, make_client, mode):
    """An HTTP date in the past means "now": the retry goes at the policy's own delay."""
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    server.enqueue(faults.status(429, retry_after=past), faults.ok(REC))
    events, err, _ = await run(make_client(retry=Retry(1, **FAST)), mode)
    assert err is None
    (event,) = retries(events)
    assert event.error.retry_after == 0.0
    assert 0 <= event.delay <= 0.002


@pytest.fixture
def call():
    c = llmrelay.Client(api_keys={"openai": "k"})
    return c.prepare(MODEL, "hi")[0]


def test_retry_after_http_date_is_a_minimum(call):
    when = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30), usegmt=True)
    error = status_error(429, b'{"error": {"message": "slow down"}}', {"retry-after": when}, provider="openai")
    assert 28 <= error.retry_after <= 30
    policy = Retry(1, initial_delay=0.001, max_delay=0.002, max_retry_after=60)
    response, actions, _ = drive(run_turn(call, [policy]), [error, Response()])
    kinds = [type(a) for a in actions]
    assert kinds == [Send, Emit, Sleep, Send]
    assert actions[2].seconds >= error.retry_after
    assert actions[1].event.delay == actions[2].seconds
    assert isinstance(response, Response)


def test_retry_after_above_the_ceiling_gives_up_at_once(call):
    error = status_error(429, b"{}", {"retry-after": "120"}, provider="openai")
    with pytest.raises(RateLimitError) as info:
        drive(run_turn(call, [Retry(5, max_retry_after=60)]), [error])
    assert info.value is error


@pytest.mark.timeout(30)  # the hang guard: a client that slept out the hour before giving up fails here
async def test_retry_after_ceiling_through_the_server(server, make_client, mode):
    """Retry-After above `max_retry_after` gives up at once: the error, one request, no retry
    event, and no sleep (the hour asked for would trip the test's timeout)."""
    server.enqueue(faults.status(429, retry_after=3600), faults.ok(REC))
    events, err, _ = await run(make_client(retry=Retry(3, max_retry_after=1, **FAST)), mode)
    assert type(err) is RateLimitError
    assert err.retry_after == 3600
    assert len(server.requests) == 1
    assert retries(events) == []


# -- faults inside the stream ---------------------------------------------------------------


async def test_cut_after_content_is_not_retried(server, make_client, mode, how):
    server.enqueue(faults.cut(REC, after=4), faults.ok(REC))
    events, err, _ = await run(make_client(), mode, how=how)
    assert type(err) is StreamInterruptedError
    assert err.partial.text == "I'm unable to"
    assert len(server.requests) == 1
    if how == "stream":
        assert texts(events) == "I'm unable to"
        assert retries(events) == []


async def test_cut_before_content_is_retried(server, make_client, mode):
    server.enqueue(faults.cut(REC, after=1), faults.ok(REC))  # only the role chunk came
    events, err, r = await run(make_client(), mode)
    assert err is None
    assert len(server.requests) == 2
    assert texts(events) == r.text == TEXT
    assert type(retries(events)[0].error) is StreamInterruptedError


async def test_reset_before_headers_is_retried(server, make_client, mode, how):
    server.enqueue(faults.reset(), faults.reset(), faults.ok(REC))
    events, err, r = await run(make_client(), mode, how=how)
    assert err is None and r.text == TEXT
    assert len(server.requests) == 3
    if how == "stream":
        assert all(isinstance(e.error, APIConnectionError) for e in retries(events))


async def test_in_band_error_before_content_is_retried(server, make_client, mode):
    server.enqueue(faults.error_event("openai_chat", REC, after=1), faults.ok(REC))
    events, err, r = await run(make_client(), mode)
    assert err is None
    assert len(server.requests) == 2
    assert texts(events) == r.text == TEXT
    assert type(retries(events)[0].error) is ProviderStreamError


async def test_in_band_error_after_content_is_not_retried(server, make_client, mode):
    server.enqueue(faults.error_event("openai_chat", REC, after=3), faults.ok(REC))
    events, err, _ = await run(make_client(), mode)
    assert type(err) is ProviderStreamError
    assert err.partial.text == texts(events) == "I'm unable"
    assert len(server.requests) == 1


async def test_malformed_chunk_before_content_is_retried(server, make_client, mode):
    server.enqueue(faults.malformed(REC, after=0), faults.ok(REC))
    events, err, r = await run(make_client(), mode)
    assert err is None
    assert len(server.requests) == 2
    assert texts(events) == r.text == TEXT
    assert type(retries(events)[0].error) is MalformedChunkError


async def test_malformed_chunk_after_content_is_not_retried(server, make_client, mode):
    server.enqueue(faults.malformed(REC, after=3), faults.ok(REC))
    events, err, _ = await run(make_client(), mode)
    assert type(err) is MalformedChunkError
    assert err.partial.text == texts(events) == "I'm unable"
    assert len(server.requests) == 1


#: How long a stall fault lasts here: ~130x the 0.15 s timeouts, so only the timeout ends it early,
#: even on a loaded machine (the server wakes at once when the client hangs up).
HOLD = 20.0


async def test_first_token_timeout_before_content_is_retried(server, make_client, mode):
    """The first attempt stalls (keep-alives, no token) far longer than first_token: the timeout
    ends it, and the retry (a second request) gets the answer."""
    server.enqueue(faults.stall(REC, after=1, seconds=HOLD, keepalive=0.02), faults.ok(REC))
    events, err, r = await run(make_client(), mode, middleware=[Timeout(first_token=0.15)])
    assert err is None and r.text == TEXT
    assert len(server.requests) == 2
    assert not server.requests[0].completed  # the first attempt was abandoned mid-stall
    error = retries(events)[0].error
    assert type(error) is APITimeoutError and error.kind == "first_token"


async def test_idle_timeout_after_content_is_not_retried(server, make_client, mode):
    server.enqueue(faults.stall(REC, after=4, seconds=HOLD), faults.ok(REC))
    events, err, _ = await run(make_client(), mode, middleware=[Timeout(idle=0.15)])
    assert type(err) is APITimeoutError and err.kind == "idle"
    assert err.partial.text == texts(events) == "I'm unable to"
    assert len(server.requests) == 1


async def test_retry_never_repeats_text_even_with_reasoning_first(server, make_client, mode):
    """Reasoning counts as content: a cut after reasoning only is not retried either."""
    rec = "groq/error_event_tool_use_failed.sse"
    n = len(faults.events(rec))
    server.enqueue(faults.cut(rec, after=3), faults.ok(rec))
    events, err, _ = await run(make_client(), mode, model="groq:openai/gpt-oss-120b")
    assert n > 3
    assert type(err) is StreamInterruptedError
    assert err.partial.reasoning
    assert len(server.requests) == 1


# -- the policy itself, by hand -------------------------------------------------------------


def test_retry_plan_emits_then_sleeps_then_sends_again(call):
    err = status_error(503, b"{}", {}, provider="openai", model="gpt-4o")
    ok = Response(provider="openai")
    policy = Retry(3, initial_delay=0.5, max_delay=4, jitter=False)
    response, actions, _ = drive(run_turn(call, [policy]), [err, err, err, ok])
    assert response is ok
    assert [type(a).__name__ for a in actions] == ["Send", "Emit", "Sleep"] * 3 + ["Send"]
    assert [a.seconds for a in actions if type(a) is Sleep] == [0.5, 1.0, 2.0]
    assert [a.event.attempt for a in actions if type(a) is Emit] == [1, 2, 3]


def test_retry_plan_sends_exactly_one_plus_max_retries(call):
    err = status_error(500, b"{}", {}, provider="openai")
    with pytest.raises(InternalServerError):
        drive(run_turn(call, [Retry(4, jitter=False, initial_delay=0)]), [err] * 10)
    # counted by a fresh run: exactly 5 sends
    outcomes = [err] * 10
    with pytest.raises(InternalServerError):
        drive(run_turn(call, [Retry(4, jitter=False, initial_delay=0)]), outcomes)
    assert len(outcomes) == 5


def test_jitter_stays_within_bounds_and_is_reproducible_with_a_seed():
    err = status_error(500, b"{}", {})
    a = Retry(8, initial_delay=0.1, max_delay=1.0, multiplier=2.0, seed=1234)
    b = Retry(8, initial_delay=0.1, max_delay=1.0, multiplier=2.0, seed=1234)
    da = [a.delay(i, err) for i in range(8)]
    db = [b.delay(i, err) for i in range(8)]
    assert da == db
    for i, d in enumerate(da):
        assert 0 <= d <= min(1.0, 0.1 * 2**i)
    # full jitter: over many draws the delays spread over the whole window
    c = Retry(1, initial_delay=1.0, max_delay=1.0, seed=7)
    draws = [c.delay(0, err) for _ in range(500)]
    assert min(draws) < 0.1 and max(draws) > 0.9
    assert Retry(1, initial_delay=0.3, jitter=False).delay(0, err) == 0.3


def test_retry_after_floor_applies_over_jitter():
    err = status_error(429, b"{}", {"retry-after": "2"})
    policy = Retry(1, initial_delay=0.01, max_delay=0.01, seed=1)
    assert policy.delay(0, err) == 2.0


def test_is_retryable_rules():
    for code in (408, 409, 429, 500, 502, 503, 504, 529):
        assert is_retryable(status_error(code, b"", {}))
    for code in (400, 401, 403, 404, 413, 422):
        assert not is_retryable(status_error(code, b"", {}))
    assert is_retryable(APIConnectionError("x"))
    assert is_retryable(APITimeoutError("x", kind="idle"))
    assert is_retryable(ProviderStreamError("x"))
    assert not is_retryable(ValueError("x"))
    assert not is_retryable(BadRequestError("x", status_code=400))


def test_as_retry_values():
    assert as_retry(None) is None and as_retry(0) is None and as_retry(False) is None
    assert as_retry(3).max_retries == 3
    r = Retry(1)
    assert as_retry(r) is r
    assert as_retry(Retry(0)) is None
    with pytest.raises(llmrelay.InvalidRequestError, match="retry"):
        as_retry("3")
    with pytest.raises(llmrelay.InvalidRequestError, match="max_retries"):
        Retry(-1)


def test_a_non_api_error_is_not_retried(call):
    outcomes = [RuntimeError("bug"), Response()]
    with pytest.raises(RuntimeError):
        drive(run_turn(call, [Retry(3)]), outcomes)
    assert len(outcomes) == 1


@pytest.mark.parametrize(
    "model,protocol,style,rec",
    [
        ("openai:gpt-4o", "openai_chat", None, REC),
        ("groq:llama-3.3-70b", "openai_chat", "event", REC),
        ("openai-responses:gpt-5", "openai_responses", None, "openai_responses/text_basic.sse"),
        ("openai-responses:gpt-5", "openai_responses", "error", "openai_responses/text_basic.sse"),
        ("anthropic:claude-sonnet-4-5", "anthropic", None, "anthropic/text_basic.sse"),
        ("gemini:gemini-2.0-flash", "gemini", None, "gemini/text_sse.sse"),
        ("ollama:gemma3:1b", "ollama", None, "ollama/chat_text_done_stop.ndjson"),
        ("cohere:command-r", "cohere", None, "cohere/v2_text.sse"),
    ],
    ids=["openai", "groq-event", "responses-failed", "responses-error", "anthropic", "gemini", "ollama", "cohere"],
)
async def test_in_band_error_of_every_protocol_is_retried_before_content(server, make_client, mode, model, protocol,
                                                                        style, rec):
    server.enqueue(faults.error_event(protocol, style=style, message="busy, try again"), faults.ok(rec))
    events, err, r = await run(make_client(), mode, model=model)
    assert err is None, err
    assert len(server.requests) == 2
    (event,) = retries(events)
    assert isinstance(event.error, ProviderStreamError) and "busy, try again" in str(event.error)
    assert r.text and texts(events) == r.text


async def test_failed_retries_stay_on_the_response(server, make_client, mode, how):
    """Each failed request is on `response.attempts` (with what it reported), then the one that answered."""
    server.enqueue(faults.status(500), faults.status(503), faults.ok(REC))
    _, err, r = await run(make_client(), mode, how=how)
    assert err is None
    assert [type(a.error).__name__ if a.error else "ok" for a in r.attempts] == [
        "InternalServerError", "ServiceUnavailableError", "ok"]
    assert r.attempts[-1].response is r and all(a.model == r.attempts[0].model for a in r.attempts)


async def run(client, mode, model=MODEL, messages="hi", how="stream", **kw):
    return await _run(client, mode, model, messages, how, **kw)
