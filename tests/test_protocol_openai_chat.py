"""OpenAI Chat Completions and the compatible services, end to end.

Every bundled recording of the chat family (openai_chat/, deepseek/, groq/,
mistral/, openrouter/, together/) is replayed through the real HTTP replay
server and `client.complete(...)`, and the assembled `Response` is compared
with values read off the recording by hand (hard-coded below).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import llmrelay
from llmrelay import (
    Finish,
    ImagePart,
    Message,
    ProviderStreamError,
    ReasoningPart,
    StreamStart,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageEvent,
)
from llmrelay.testing import Reply, provider_for, read_recording, request_for, wire_recordings

CHAT_FOLDERS = ("openai_chat", "deepseek", "groq", "mistral", "openrouter", "together")
PAYLOADS = Path(__file__).parent / "payloads"
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Long:
    """A long text: exact length, prefix and suffix."""

    length: int
    prefix: str
    suffix: str

    def check(self, actual: str, what: str) -> None:
        assert len(actual) == self.length, f"{what}: length {len(actual)} != {self.length}"
        assert actual.startswith(self.prefix), f"{what}: starts {actual[:80]!r}"
        assert actual.endswith(self.suffix), f"{what}: ends {actual[-80:]!r}"


def check_text(actual: str, expected: str | Long, what: str) -> None:
    if isinstance(expected, Long):
        expected.check(actual, what)
    else:
        assert actual == expected, what


def usage(i, o, cached=None, reasoning=None, cost=None):
    return {"input_tokens": i, "output_tokens": o, "cached_input_tokens": cached,
            "cache_write_tokens": None, "reasoning_tokens": reasoning, "provider_cost": cost}


def tc(id, name, raw):
    return (id, name, json.loads(raw), raw)


# Values read off each recording (see the README quirk numbers in comments).
EXPECTED: dict[str, dict] = {
    "openai_chat/finish_length.sse": dict(
        id="chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh", model="gpt-4o-2024-08-06", status="truncated",
        text='{"', finish=("length", "length"), parts=[TextPart], usage=usage(79, 1, reasoning=0)),
    "openai_chat/json_object_long.sse": dict(
        id="chatcmpl-ABfwCjPMi0ubw56UyMIIeNfJzyogq", model="gpt-4o-2024-08-06",
        text=Long(608, '\n  {\n    "location": "San Francisco, CA",\n    "weather": {\n      "temperature": "18°C",',
                  '"low": "14°C",\n        "condition": "Cloudy"\n      }\n    ]\n  }\n'),
        finish=("stop", "stop"), parts=[TextPart], usage=usage(19, 177, reasoning=0)),
    "openai_chat/logprobs_content.sse": dict(
        id="chatcmpl-ABfw5EzoqmfXjnnsXY7Yd8OC6tb3c", model="gpt-4o-2024-08-06",
        text="Foo!", finish=("stop", "stop"), parts=[TextPart], usage=usage(9, 2, reasoning=0)),
    "openai_chat/n3_multiple_choices.sse": dict(  # quirk 10
        id="chatcmpl-ABfw2KKFuVXmEJgVwYfBvejMAdWtq", model="gpt-4o-2024-08-06",
        choices=[
            '{"city":"San Francisco","temperature":65,"units":"f"}',
            '{"city":"San Francisco","temperature":61,"units":"f"}',
            '{"city":"San Francisco","temperature":59,"units":"f"}',
        ],
        text='{"city":"San Francisco","temperature":65,"units":"f"}',
        finish=("stop", "stop"), parts=[TextPart], usage=usage(79, 42, reasoning=0)),
    "openai_chat/parallel_tool_calls.sse": dict(  # quirk 9
        id="chatcmpl-ABfwAwrNePHUgBBezonVC6MX3zd63", model="gpt-4o-2024-08-06", text="",
        tools=[tc("call_JMW1whyEaYG438VE1OIflxA2", "GetWeatherArgs", '{"city": "Edinburgh", "country": "GB", "units": "c"}'),
               tc("call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price", '{"ticker": "AAPL", "exchange": "NASDAQ"}')],
        finish=("tool_calls", "tool_calls"), parts=[ToolCall, ToolCall], usage=usage(149, 60, reasoning=0)),
    "openai_chat/refusal.sse": dict(  # quirk 11
        id="chatcmpl-ABfw4IfQfCCrcuybFm41wJyxjbkz7", model="gpt-4o-2024-08-06", text="",
        refusal="I'm sorry, I can't assist with that request.",
        finish=("stop", "stop"), parts=[], usage=usage(79, 11, reasoning=0)),
    "openai_chat/refusal_with_logprobs.sse": dict(
        id="chatcmpl-ABfw5GEVqPbLY576l46FZDQoNJ2KC", model="gpt-4o-2024-08-06", text="",
        refusal="I'm very sorry, but I can't assist with that.",
        finish=("stop", "stop"), parts=[], usage=usage(79, 12, reasoning=0)),
    "openai_chat/text_after_tool_result.sse": dict(
        id="chatcmpl-BWlJCN7VZTtSHROczp0AbrjFGhRMA", model="gpt-4o-mini-2024-07-18",
        text="The result of \\( 1231 \\times 2331 \\) is \\( 2,869,461 \\).",
        finish=("stop", "stop"), parts=[TextPart], usage=usage(87, 26, cached=0, reasoning=0)),
    "openai_chat/text_usage_chunk.sse": dict(  # quirk 7: usage chunk with choices: []
        id="chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL", model="gpt-4o-2024-08-06",
        text="I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
             "I recommend checking a reliable weather website or a weather app.",
        finish=("stop", "stop"), parts=[TextPart], usage=usage(14, 30, reasoning=0)),
    "openai_chat/text_usage_obfuscation_gpt35.sse": dict(  # quirk 8
        id="chatcmpl-C6bjxzOr3Oz1rTiafksd6himIit3q", model="gpt-3.5-turbo-0125", text="1, 2, 3, 4, 5",
        finish=("stop", "stop"), parts=[TextPart], usage=usage(14, 13, cached=0, reasoning=0)),
    "openai_chat/tool_call_nonstrict.sse": dict(
        id="chatcmpl-ABfwERreu9s99xXsVuOWtIB2UOx62", model="gpt-4o-2024-08-06", text="",
        tools=[tc("call_4XzlGBLtUe9dy3GVNV4jhq7h", "get_weather", '{"city":"New York City"}')],
        finish=("tool_calls", "tool_calls"), parts=[ToolCall], usage=usage(44, 16, reasoning=0)),
    "openai_chat/tool_call_single.sse": dict(
        id="chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr", model="gpt-4o-2024-08-06", text="",
        tools=[tc("call_c91SqDXlYFuETYv8mUHzz6pp", "GetWeatherArgs", '{"city":"Edinburgh","country":"UK","units":"c"}')],
        finish=("tool_calls", "tool_calls"), parts=[ToolCall], usage=usage(76, 24, reasoning=0)),
    "openai_chat/tool_call_then_usage.sse": dict(
        id="chatcmpl-BWlJBDk2xe66hjff60joVYpXi1hh4", model="gpt-4o-mini-2024-07-18", text="",
        tools=[tc("call_1EYWDzueHEp8OsB8jJSEp7WB", "multiply", '{"a":1231,"b":2331}')],
        finish=("tool_calls", "tool_calls"), parts=[ToolCall], usage=usage(54, 20, cached=0, reasoning=0)),
    "deepseek/reasoning_content_stream.sse": dict(  # quirk 13
        id="33be18fc-3842-486c-8c29-dd8e578f7f20", model="deepseek-reasoner",
        text="Hello there! 😊 How can I help you today?",
        reasoning=Long(882, 'Hmm, the user just said "Hello". It\'s a simple greeting but I wonder',
                       "If they're just being polite, they might not reply further - and that's okay too."),
        finish=("stop", "stop"), parts=[ReasoningPart, TextPart], usage=usage(6, 212, cached=0, reasoning=198)),
    "groq/tool_calls_x_groq_usage.sse": dict(  # quirk 14
        id="chatcmpl-e35442a8-12c0-4fb4-8be4-0e51727ce7b7", model="openai/gpt-oss-120b", text="",
        reasoning='We need to call the function with correct parameter "name". Provide a name, e.g., "example".',
        tools=[tc("fc_bfb39741-3748-4def-9886-a93fc9c64a90", "get_something_by_name", '{"name":"example"}')],
        finish=("tool_calls", "tool_calls"), parts=[ReasoningPart, ToolCall], usage=usage(304, 49, reasoning=23)),
    "mistral/magistral_thinking_content_parts.sse": dict(  # quirk 16
        id="9f9d90210f194076abeee223863eaaf0", model="magistral-medium-latest",
        text=Long(607, "To cross the street safely, follow these steps:\n\n1. Look both ways to check for oncoming traffic.",
                  "\n```\n\nBy following these steps, you can ensure a safe crossing."),
        reasoning=Long(421, "Okay, the user is asking how to cross the street. I know that crossing the street",
                       "Let me compile this information into a clear and concise response."),
        finish=("stop", "stop"), parts=[ReasoningPart, TextPart], usage=usage(10, 232)),
    "openrouter/streaming_reasoning.sse": dict(
        id="gen-1765226419-AGrwjunAftQIAgweibL8", model="anthropic/claude-sonnet-4.5", text="2 + 2 = 4",
        reasoning="This is a simple arithmetic question. 2+2 equals 4.",
        finish=("stop", "stop"), parts=[ReasoningPart, TextPart], usage=usage(43, 36, cached=0, reasoning=13, cost=0.000669)),
    "openrouter/text_basic.sse": dict(
        id="gen-1754667632-NNYO7FUAFP6cwNW8jL7x", model="meta-llama/llama-3.2-3b-instruct:free", text="test response",
        finish=("stop", "stop"), parts=[TextPart], usage=usage(586, 3, cached=0, reasoning=0, cost=0.0)),
    "openrouter/tool_args_empty_then_full_name_repeated.sse": dict(  # quirk 18: name taken once, no finish_reason
        id="gen-1753242299-QZRAt5HJHd1ptY8sdS0s", model="moonshotai/kimi-k2", text="",
        tools=[tc("0", "llm_version", "{}")],
        finish=(None, None), parts=[ToolCall], usage=usage(57, 17, cached=0, reasoning=0, cost=7.159e-05)),
    "openrouter/tool_args_full_first_no_finish.sse": dict(
        id="gen-1753242299-QZRAt5HJHd1ptY8sdS0s", model="moonshotai/kimi-k2", text="",
        tools=[tc("0", "llm_version", "{}")],
        finish=(None, None), parts=[ToolCall], usage=usage(57, 17, cached=0, reasoning=0, cost=7.159e-05)),
    "together/deepseek_r1_think_tags.sse": dict(  # quirk 19: <think> reasoning separated from the text
        id="oV1nHvx-28Eivz-9c4b16f37c27e605", model="deepseek-ai/DeepSeek-R1",
        text=Long(2557, "\nCrossing the street safely requires attention and following key steps.",
                  "\n\nPractice these steps every time—it could save your life! 🌟"),
        reasoning=Long(1430, '\nOkay, the user asked "How do I cross the street?" Hmm, seems basic',
                       "Safety first, but don't sound like a paranoid robot.\n"),
        finish=("stop", "stop"), parts=[ReasoningPart, TextPart], usage=usage(10, 955, cached=0)),
}

# In-band errors: checked by their own tests below.
ERRORS = ("groq/error_event_tool_use_failed.sse", "openrouter/error_in_chunk_after_finish.sse")


def chat_recordings() -> list[str]:
    return [n for n in wire_recordings() if n.split("/")[0] in CHAT_FOLDERS]


def test_every_chat_recording_has_expectations():
    assert sorted(chat_recordings()) == sorted([*EXPECTED, *ERRORS])


def replay(server, client, name, messages=HI, chunking="random", **params):
    server.enqueue(Reply.recording(name, chunking=chunking))
    return client.complete(f"{provider_for(name)}:model", messages, **params)


def check_response(r, exp):
    assert r.id == exp["id"]
    assert r.model == exp["model"]
    assert r.requested_model == "model"
    assert r.status == exp.get("status", "ok")
    assert r.error is None
    check_text(r.text, exp["text"], "text")
    check_text(r.reasoning, exp.get("reasoning", ""), "reasoning")
    assert r.refusal == exp.get("refusal")
    assert (r.finish_reason, r.raw_finish_reason) == exp["finish"]
    assert [type(p) for p in r.parts] == exp["parts"]
    got_tools = [(t.id, t.name, t.arguments, t.raw_arguments) for t in r.tool_calls]
    assert got_tools == exp.get("tools", [])
    assert all(t.error is None for t in r.tool_calls)
    u = r.usage
    got_usage = {k: getattr(u, k) for k in exp["usage"]}
    assert got_usage == exp["usage"]
    assert u.estimated is False
    assert u.total_tokens == exp["usage"]["input_tokens"] + exp["usage"]["output_tokens"]
    assert isinstance(u.raw, dict)
    if "choices" in exp:
        assert [c.index for c in r.choices] == list(range(len(exp["choices"])))
        assert [c.text for c in r.choices] == exp["choices"]
        assert all((c.finish_reason, c.raw_finish_reason) == exp["finish"] for c in r.choices)
    else:
        assert len(r.choices) == 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_assembles_exactly(server, client, name):
    check_response(replay(server, client, name), EXPECTED[name])


@pytest.mark.parametrize("chunking", ["whole", "events", 1, 7])
@pytest.mark.parametrize(
    "name",
    ["openai_chat/n3_multiple_choices.sse", "openai_chat/parallel_tool_calls.sse", "deepseek/reasoning_content_stream.sse",
     "mistral/magistral_thinking_content_parts.sse", "openrouter/tool_args_empty_then_full_name_repeated.sse",
     "groq/tool_calls_x_groq_usage.sse", "openrouter/streaming_reasoning.sse"],
)
def test_recording_same_result_whatever_the_network_chunking(server, client, name, chunking):
    check_response(replay(server, client, name, chunking=chunking), EXPECTED[name])


def test_together_think_tags_with_small_reads(server, client):
    """The `<think>` / `</think>` tags split across 3-byte reads still separate reasoning from text."""
    r = replay(server, client, "together/deepseek_r1_think_tags.sse", chunking=3)
    check_response(r, EXPECTED["together/deepseek_r1_think_tags.sse"])
    assert "<think>" not in r.text and "</think>" not in r.text
    assert "<think>" not in r.reasoning and "</think>" not in r.reasoning


async def test_recording_async_path_matches(server, client):
    for name in ("openai_chat/n3_multiple_choices.sse", "together/deepseek_r1_think_tags.sse"):
        server.enqueue(Reply.recording(name))
        r = await client.acomplete(f"{provider_for(name)}:model", HI)
        check_response(r, EXPECTED[name])


def test_groq_usage_counted_once_and_raw_kept(server, client):
    r = replay(server, client, "groq/tool_calls_x_groq_usage.sse")
    assert r.usage.raw["queue_time"] == 0.00491786
    assert r.usage.raw["prompt_tokens"] == 304
    assert r.usage.total_tokens == 353


def test_deepseek_cache_fields_in_raw_usage(server, client):
    r = replay(server, client, "deepseek/reasoning_content_stream.sse")
    assert r.usage.raw["prompt_cache_hit_tokens"] == 0
    assert r.usage.raw["prompt_cache_miss_tokens"] == 6


def test_n3_stream_events_carry_their_choice(server, client):
    server.enqueue(Reply.recording("openai_chat/n3_multiple_choices.sse"))
    with client.stream("openai:model", HI, n=3) as s:
        events = list(s)
    finishes = [e for e in events if isinstance(e, Finish)]
    assert sorted(e.choice for e in finishes) == [0, 1, 2]
    texts = {c: "".join(e.text for e in events if isinstance(e, llmrelay.TextDelta) and e.choice == c) for c in range(3)}
    assert texts == {i: EXPECTED["openai_chat/n3_multiple_choices.sse"]["choices"][i] for i in range(3)}
    assert server.requests[0].json["n"] == 3


def test_n3_text_stream_is_choice_zero_only(server, client):
    server.enqueue(Reply.recording("openai_chat/n3_multiple_choices.sse"))
    with client.stream("openai:model", HI) as s:
        assert "".join(s.text_stream) == '{"city":"San Francisco","temperature":65,"units":"f"}'


# ---------------------------------------------------------------------------
# Event sequence
# ---------------------------------------------------------------------------


def test_tool_call_single_event_sequence(server, client):
    server.enqueue(Reply.recording("openai_chat/tool_call_single.sse"))
    with client.stream("openai:model", HI) as s:
        events = list(s)
    pieces = ['{"', "city", '":"', "Ed", "inburgh", '","', "country", '":"', "UK", '","', "units", '":"', "c", '"}']
    raw = '{"city":"Edinburgh","country":"UK","units":"c"}'
    expected = [
        StreamStart("chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr", "gpt-4o-2024-08-06"),
        ToolCallStart(0, "call_c91SqDXlYFuETYv8mUHzz6pp", "GetWeatherArgs"),
        *[ToolCallDelta(0, p) for p in pieces],
        ToolCallEnd(0, "call_c91SqDXlYFuETYv8mUHzz6pp", "GetWeatherArgs", {"city": "Edinburgh", "country": "UK", "units": "c"}, raw),
        Finish("tool_calls", "tool_calls"),
    ]
    assert events[:-1] == expected
    last = events[-1]
    assert isinstance(last, UsageEvent)
    assert (last.usage.input_tokens, last.usage.output_tokens, last.usage.reasoning_tokens) == (76, 24, 0)


def test_text_event_sequence_and_text_stream(server, client):
    server.enqueue(Reply.recording("openai_chat/text_usage_obfuscation_gpt35.sse"))
    with client.stream("openai:model", HI) as s:
        events = list(s)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "StreamStart"
    assert kinds[-2:] == ["Finish", "UsageEvent"]
    assert set(kinds[1:-2]) == {"TextDelta"}
    assert "".join(e.text for e in events[1:-2]) == "1, 2, 3, 4, 5"
    server.enqueue(Reply.recording("openai_chat/text_usage_obfuscation_gpt35.sse"))
    assert "".join(client.stream("openai:model", HI).text_stream) == "1, 2, 3, 4, 5"


def test_refusal_is_not_text(server, client):
    server.enqueue(Reply.recording("openai_chat/refusal.sse"))
    with client.stream("openai:model", HI) as s:
        events = list(s)
    assert not any(isinstance(e, llmrelay.TextDelta) for e in events)
    refusal = "".join(e.text for e in events if isinstance(e, llmrelay.RefusalDelta))
    assert refusal == "I'm sorry, I can't assist with that request."


# ---------------------------------------------------------------------------
# In-band errors (quirks 15 and 17)
# ---------------------------------------------------------------------------


def test_groq_error_event_raises_provider_stream_error_with_partial(server, client):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    with pytest.raises(ProviderStreamError) as info:
        client.complete("groq:model", HI)
    e = info.value
    assert type(e) is ProviderStreamError  # not a MalformedChunkError
    assert e.code == "tool_use_failed"
    assert e.status_code == 400
    assert e.provider == "groq" and e.model == "model"
    assert "Tool call validation failed" in str(e)
    assert e.body["failed_generation"] == '{"name": "get_something_by_name", "arguments": {\n  "invalid_param": "value"\n}}'
    p = e.partial
    assert p is not None and p.status == "error" and p.error is e
    assert p.id == "chatcmpl-4f39f3af-3267-4ac1-a0cf-6aa7451877dc"
    assert p.model == "openai/gpt-oss-120b"
    Long(412, "We need to call the tool with invalid parameters first, then second call with valid args.",
         'Then second call with name: "test". Let\'s do that.').check(p.reasoning, "partial reasoning")
    assert p.text == "" and p.tool_calls == [] and p.finish_reason is None
    assert e.partial_text == ""
    # the provider never reported usage: estimated, and marked so
    assert p.usage.estimated is True
    assert p.usage.output_tokens == (412 + 3) // 4


def test_groq_error_event_stream_iteration_yields_reasoning_first(server, client):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    seen = []
    with pytest.raises(ProviderStreamError):
        with client.stream("groq:model", HI) as s:
            for e in s:
                seen.append(e)
    assert "".join(e.text for e in seen if isinstance(e, llmrelay.ReasoningDelta)).startswith("We need to call the tool")


def test_openrouter_error_after_finish_keeps_usage_and_cost(server, client):
    server.enqueue(Reply.recording("openrouter/error_in_chunk_after_finish.sse"))
    with pytest.raises(ProviderStreamError) as info:
        client.complete("openrouter:model", HI)
    e = info.value
    assert e.code == 400 and e.status_code == 400
    assert "Token limit reached" in str(e)
    p = e.partial
    assert p.status == "error"
    assert p.id == "gen-1762179802-UN8pkJI4AGZvryk0kFnb" and p.model == "minimax/minimax-m2:free"
    assert p.reasoning == "We need to respond to a greeting. The user"
    assert p.text == ""
    assert (p.finish_reason, p.raw_finish_reason) == ("length", "length")
    u = p.usage
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cached_input_tokens) == (43, 10, 11, 0)
    assert u.provider_cost == 0.0
    assert u.estimated is False
    assert e.usage is u or e.usage == u


async def test_in_band_error_async(server, client):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    with pytest.raises(ProviderStreamError) as info:
        await client.acomplete("groq:model", HI)
    assert info.value.code == "tool_use_failed"
    assert info.value.partial.reasoning.startswith("We need to call the tool")


# ---------------------------------------------------------------------------
# Payload-only cases: wrapped in SSE framing here (synthetic framing, real payloads)
# ---------------------------------------------------------------------------


def synthetic_sse(path: Path) -> bytes:
    """SYNTHETIC FRAMING: each JSON payload line becomes `data: …\\n\\n`, then `data: [DONE]`."""
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def test_payload_mistral_tool_call_without_index(server, client):
    server.enqueue(Reply(synthetic_sse(PAYLOADS / "mistral/tool_call_no_index.chunks.jsonl")))
    r = client.complete("mistral:model", HI)
    assert r.status == "ok"
    assert r.id == "b3999b8c93e04e11bcbff7bcab829667" and r.model == "mistral-small-latest"
    assert [(t.id, t.name, t.arguments, t.raw_arguments, t.error) for t in r.tool_calls] == [
        ("gSIMJiOkT", "weather", {"location": "San Francisco"}, '{"location": "San Francisco"}', None)
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_calls")
    assert (r.usage.input_tokens, r.usage.output_tokens) == (124, 22)
    assert r.text == ""


def test_payload_mistral_tool_call_event_order(server, client):
    """Quirk 12: the delta (tool call) is processed before the finish in the same chunk."""
    server.enqueue(Reply(synthetic_sse(PAYLOADS / "mistral/tool_call_no_index.chunks.jsonl")))
    with client.stream("mistral:model", HI) as s:
        kinds = [type(e).__name__ for e in s]
    assert kinds == ["StreamStart", "ToolCallStart", "ToolCallDelta", "ToolCallEnd", "Finish", "UsageEvent"]


def test_payload_deepseek_reasoner_tool_call(server, client):
    server.enqueue(Reply(synthetic_sse(PAYLOADS / "deepseek/reasoner_tool_call.chunks.jsonl")))
    r = client.complete("deepseek:model", HI)
    assert r.status == "ok"
    assert r.id == "cca85624-4056-401f-b220-d77601d1f70d" and r.model == "deepseek-reasoner"
    assert r.reasoning == (
        "The user is asking for the weather in San Francisco. I need to use the weather tool to get this "
        'information. Let me invoke the weather tool with the location parameter set to "San Francisco".'
    )
    assert r.text == ""
    assert [type(p) for p in r.parts] == [ReasoningPart, ToolCall]
    assert [(t.id, t.name, t.arguments, t.raw_arguments) for t in r.tool_calls] == [
        ("call_00_ioIn7yN9p1ZOMNpDLwd4MgAF", "weather", {"location": "San Francisco"}, '{"location": "San Francisco"}')
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_calls")
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens) == (339, 83, 320, 39)


# ---------------------------------------------------------------------------
# Synthetic edge cases of the decoder (labelled synthetic)
# ---------------------------------------------------------------------------


def sse_of(*payloads) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"


def chunk(delta=None, finish=None, index=0, **extra):
    return {"id": "x", "model": "m", "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}], **extra}


def test_synthetic_truncated_tool_arguments_on_length(server, client):
    """SYNTHETIC: a tool call cut by max_tokens keeps its raw arguments and reports an error."""
    body = sse_of(
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": "b'}}]}),
        chunk(finish="length"),
    )
    server.enqueue(Reply(body))
    r = client.complete("openai:model", HI)
    assert r.status == "truncated" and r.finish_reason == "length"
    [call] = r.tool_calls
    assert call.arguments is None and call.raw_arguments == '{"a": "b' and call.error


def test_synthetic_stream_cut_before_finish_raises_interrupted(server, client):
    """SYNTHETIC: no finish_reason and no [DONE]: the stream was cut."""
    body = b"".join(b"data: " + json.dumps(chunk({"content": t})).encode() + b"\n\n" for t in ("Hel", "lo"))
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.StreamInterruptedError) as info:
        client.complete("openai:model", HI)
    assert info.value.partial.text == "Hello"
    assert info.value.partial.status == "error"


def test_synthetic_malformed_chunk_raises_malformed_error(server, client):
    """SYNTHETIC: a chunk that is not JSON."""
    body = b"data: " + json.dumps(chunk({"content": "ok"})).encode() + b"\n\ndata: {not json\n\ndata: [DONE]\n\n"
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.MalformedChunkError) as info:
        client.complete("openai:model", HI)
    assert info.value.partial.text == "ok"


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2, 3],
        "a string",
        {"choices": "not a list"},
        {"choices": [{"index": 0, "delta": "not a dict"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": "nope"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "nope"}]}}]},
        {"choices": [None]},
        {"usage": "lots"},
        {"usage": {"prompt_tokens": "ten", "completion_tokens": None}},
    ],
    ids=lambda b: json.dumps(b)[:40],
)
def test_synthetic_wrong_shape_chunk_is_malformed_not_a_crash(server, client, bad):
    """SYNTHETIC: valid JSON of the wrong shape is a MalformedChunkError, never a TypeError/AttributeError."""
    body = sse_of(chunk({"content": "ok"}), bad, chunk(finish="stop"))
    server.enqueue(Reply(body))
    try:
        r = client.complete("openai:model", HI)
    except llmrelay.APIError as exc:
        assert isinstance(exc, llmrelay.MalformedChunkError)
        assert exc.partial.text == "ok"
    else:  # tolerated (ignored) is fine too, as long as nothing crashed
        assert r.text == "ok"


def test_synthetic_think_tag_only_at_start(server, client):
    """SYNTHETIC: a `<think>` that is not at the very start is plain text."""
    body = sse_of(chunk({"content": "Use "}), chunk({"content": "<think>x</think>"}), chunk(finish="stop"))
    server.enqueue(Reply(body))
    r = client.complete("together:model", HI)
    assert r.text == "Use <think>x</think>" and r.reasoning == ""


def test_synthetic_think_tags_split_everywhere(server, client):
    """SYNTHETIC: tags split across deltas, leading whitespace before <think>."""
    pieces = ["  <th", "ink>", "plan", "</th", "in", "k>", "answer"]
    body = sse_of(*[chunk({"content": p}) for p in pieces], chunk(finish="stop"))
    server.enqueue(Reply(body))
    r = client.complete("together:model", HI)
    assert r.reasoning == "plan" and r.text == "answer"
    assert [type(p) for p in r.parts] == [ReasoningPart, TextPart]


def test_synthetic_unclosed_think_is_all_reasoning(server, client):
    """SYNTHETIC: a stream cut by max_tokens inside <think> keeps everything as reasoning."""
    body = sse_of(chunk({"content": "<think>still thinking </thi"}), chunk(finish="length"))
    server.enqueue(Reply(body))
    r = client.complete("together:model", HI)
    assert r.reasoning == "still thinking </thi" and r.text == ""


# ---------------------------------------------------------------------------
# Request encoding
# ---------------------------------------------------------------------------

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]},
    {"role": "assistant", "content": "A cat and a dot."},
    {"role": "user", "content": "Multiply 3 by 4."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a":3,"b":4}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "12"},
]

ENCODED_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]},
    {"role": "assistant", "content": "A cat and a dot."},
    {"role": "user", "content": "Multiply 3 by 4."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a":3,"b":4}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "12"},
]

REPLY = "openai_chat/text_usage_chunk.sse"


def sent(server, client, model, messages, **params):
    server.enqueue(Reply.recording(REPLY))
    client.complete(model, messages, **params)
    return server.requests[-1]


def test_request_full_conversation_exact_body(server, client):
    req = sent(
        server, client, "openai:gpt-4o", CONVERSATION,
        temperature=0.2, max_tokens=100, top_p=0.9, stop="END", seed=7, reasoning_effort="low",
        extra_body={"user": "u-1", "temperature": 0.5, "logit_bias": {"50256": -100}},
    )
    assert req.method == "POST"
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "text/event-stream"
    assert req.json == {
        "model": "gpt-4o",
        "messages": ENCODED_MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,  # extra_body wins over the typed parameter
        "top_p": 0.9,
        "max_completion_tokens": 100,
        "stop": ["END"],
        "seed": 7,
        "reasoning_effort": "low",
        "user": "u-1",
        "logit_bias": {"50256": -100},
    }
    # compact JSON, UTF-8, no ASCII escaping
    assert b'"stream":true' in req.body


def test_request_message_objects_encode_like_dicts(server, client):
    messages = [
        Message.system("You are terse."),
        Message.user("What is in these images?", ImagePart(url="https://example.com/cat.jpg", detail="low"),
                     ImagePart(data=PNG_B64, media_type="image/png")),
        Message.assistant("A cat and a dot."),
        Message.user("Multiply 3 by 4."),
        Message.assistant(tool_calls=[ToolCall("call_1", "multiply", {"a": 3, "b": 4}, '{"a":3,"b":4}')]),
        Message.tool("call_1", "12"),
    ]
    req = sent(server, client, "openai:gpt-4o", messages)
    assert req.json["messages"] == ENCODED_MESSAGES


def test_request_image_from_bytes_is_a_data_url(server, client):
    import base64

    raw = base64.b64decode(PNG_B64)
    req = sent(server, client, "openai:gpt-4o", [Message.user("see", ImagePart.from_bytes(raw, "image/png"))])
    assert req.json["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}


def test_request_unicode_sent_as_utf8(server, client):
    req = sent(server, client, "openai:gpt-4o", [{"role": "user", "content": "héllo 😊"}])
    assert "héllo 😊".encode() in req.body
    assert req.json["messages"] == [{"role": "user", "content": "héllo 😊"}]


@pytest.mark.parametrize(
    "provider,field",
    [("openai", "max_completion_tokens"), ("groq", "max_tokens"), ("deepseek", "max_tokens"), ("mistral", "max_tokens"),
     ("openrouter", "max_tokens"), ("together", "max_tokens")],
)
def test_request_max_tokens_field_per_provider(server, client, provider, field):
    req = sent(server, client, f"{provider}:m", HI, max_tokens=64)
    assert req.json[field] == 64
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert not other & set(req.json)


@pytest.mark.parametrize("provider", ["openai", "groq", "deepseek", "openrouter", "together", "xai", "fireworks", "cerebras"])
def test_request_stream_options_sent(server, client, provider):
    req = sent(server, client, f"{provider}:m", HI)
    assert req.json["stream"] is True
    assert req.json["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("provider", ["perplexity", "mistral"])
def test_request_stream_options_absent(server, client, provider):
    """Perplexity and Mistral reject `stream_options` (Mistral: 422 extra_forbidden) and send usage anyway."""
    req = sent(server, client, f"{provider}:m", HI)
    assert req.json["stream"] is True
    assert "stream_options" not in req.json


@pytest.mark.parametrize(
    "provider,path",
    [("openai", "/v1/chat/completions"), ("groq", "/v1/chat/completions"), ("deepseek", "/v1/chat/completions"),
     ("openrouter", "/v1/chat/completions")],
)
def test_request_path_and_model(server, client, provider, path):
    req = sent(server, client, f"{provider}:vendor/model-x:free", HI)
    assert req.path == path
    assert req.json["model"] == "vendor/model-x:free"


def test_request_extra_headers_and_no_auth_for_keyless_local_server(server):
    c = llmrelay.Client(base_urls={"lmstudio": server.url + "/v1"}, env={})
    try:
        server.enqueue(Reply.recording(REPLY))
        c.complete("lmstudio:local-model", HI, extra_headers={"X-Trace": "t1"})
    finally:
        c.close()
    req = server.requests[-1]
    assert "authorization" not in req.headers
    assert req.headers["x-trace"] == "t1"


def test_request_name_on_user_message(server, client):
    req = sent(server, client, "openai:m", [{"role": "user", "content": "hi", "name": "alice"}])
    assert req.json["messages"] == [{"role": "user", "content": "hi", "name": "alice"}]


def test_request_developer_role_becomes_system(server, client):
    req = sent(server, client, "openai:m", [{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}])
    assert req.json["messages"][0] == {"role": "system", "content": "rules"}


def test_request_assistant_response_round_trips(server, client):
    """A streamed tool-call response, appended as the assistant turn, goes back byte for byte."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"))
    first = client.complete("openai:gpt-4o-mini", [{"role": "user", "content": "What is 1231 * 2331?"}])
    convo = [{"role": "user", "content": "What is 1231 * 2331?"}, first.to_message(),
             {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "2869461"}]
    req = sent(server, client, "openai:gpt-4o-mini", convo)
    assert req.json["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1EYWDzueHEp8OsB8jJSEp7WB", "type": "function",
             "function": {"name": "multiply", "arguments": '{"a":1231,"b":2331}'}}]},
        {"role": "tool", "tool_call_id": "call_1EYWDzueHEp8OsB8jJSEp7WB", "content": "2869461"},
    ]


# -- against the recorded requests -------------------------------------------


def without_nulls(value):
    """`null` and an absent key mean the same in the Chat API (`content: null` beside tool_calls)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def test_recorded_request_text_usage_obfuscation_whole_body(server, client):
    recorded = request_for("openai_chat/text_usage_obfuscation_gpt35.sse")
    req = sent(server, client, "openai:gpt-3.5-turbo", recorded["messages"], max_tokens=50, temperature=0)
    assert req.json == recorded


def test_recorded_request_tool_call_then_usage_whole_body(server, client):
    recorded = request_for("openai_chat/tool_call_then_usage.sse")
    req = sent(server, client, "openai:gpt-4o-mini", [{"role": "user", "content": "What is 1231 * 2331?"}],
               extra_body={"tools": recorded["tools"]})
    assert req.json == recorded


def test_recorded_request_text_after_tool_result(server, client):
    recorded = request_for("openai_chat/text_after_tool_result.sse")
    convo = [
        {"role": "user", "content": "What is 1231 * 2331?"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "tool_calls": [{"type": "function", "id": "call_1EYWDzueHEp8OsB8jJSEp7WB",
                                              "function": {"name": "multiply", "arguments": '{"a": 1231, "b": 2331}'}}]},
        {"role": "tool", "tool_call_id": "call_1EYWDzueHEp8OsB8jJSEp7WB", "content": "2869461"},
    ]
    req = sent(server, client, "openai:gpt-4o-mini", convo, extra_body={"tools": recorded["tools"]})
    assert without_nulls(req.json["messages"]) == recorded["messages"]
    assert without_nulls(req.json) == recorded


def test_recorded_request_deepseek_whole_body(server, client):
    recorded = request_for("deepseek/reasoning_content_stream.sse")
    req = sent(server, client, "deepseek:deepseek-reasoner", [{"role": "user", "content": "Hello"}])
    assert req.json == recorded


def test_recorded_request_groq_second_turn_messages(server, client):
    recorded = request_for("groq/tool_calls_x_groq_usage.sse")
    req = sent(server, client, "groq:openai/gpt-oss-120b", recorded["messages"], n=1,
               extra_body={"tools": recorded["tools"], "tool_choice": "auto"})
    assert req.json["messages"] == recorded["messages"]
    assert {k: v for k, v in req.json.items() if k != "stream_options"} == recorded


def test_recorded_request_groq_first_turn(server, client):
    recorded = request_for("groq/error_event_tool_use_failed.sse")
    req = sent(server, client, "groq:openai/gpt-oss-120b", recorded["messages"], n=1,
               extra_body={"tools": recorded["tools"], "tool_choice": "auto"})
    assert {k: v for k, v in req.json.items() if k != "stream_options"} == recorded


def test_recorded_request_mistral_whole_body(server, client):
    recorded = request_for("mistral/magistral_thinking_content_parts.sse")
    req = sent(server, client, "mistral:magistral-medium-latest", [{"role": "user", "content": "How do I cross the street?"}])
    assert req.json == recorded


@pytest.mark.parametrize("name", ["openrouter/error_in_chunk_after_finish.sse", "openrouter/streaming_reasoning.sse",
                                  "openrouter/text_basic.sse"])
def test_recorded_request_openrouter(server, client, name):
    recorded = request_for(name)
    params = {}
    if "max_completion_tokens" in recorded:
        params["extra_body"] = {"max_completion_tokens": recorded["max_completion_tokens"]}
    if "reasoning" in recorded:
        params["extra_body"] = {"reasoning": recorded["reasoning"]}
    if "temperature" in recorded:
        params["temperature"] = recorded["temperature"]
    req = sent(server, client, f"openrouter:{recorded['model']}", recorded["messages"], **params)
    assert req.json == recorded


def test_recorded_request_together_messages(server, client):
    recorded = request_for("together/deepseek_r1_think_tags.sse")
    req = sent(server, client, "together:deepseek-ai/DeepSeek-R1", recorded["messages"])
    # the recorded client sent `name: null` and `tool_calls: null`; we leave them out
    assert req.json["messages"] == without_nulls(recorded["messages"])
    assert req.json["model"] == recorded["model"]


# ---------------------------------------------------------------------------
# Parameters this protocol rejects
# ---------------------------------------------------------------------------


def test_thinking_budget_unsupported_on_chat(client):
    with pytest.raises(llmrelay.UnsupportedParameterError) as info:
        client.prepare("openai:gpt-4o", HI, thinking_budget=1000)
    assert info.value.parameter == "thinking_budget" and info.value.provider == "openai"


def test_recordings_sanity():
    # the recordings really contain the quirks the tests above rely on
    assert read_recording("openrouter/error_in_chunk_after_finish.sse").count(b": OPENROUTER PROCESSING") == 17
    assert b"event: error" in read_recording("groq/error_event_tool_use_failed.sse")
    assert b"[DONE]" not in read_recording("groq/error_event_tool_use_failed.sse")
