"""Anthropic Messages: every recorded stream through the real HTTP path, request encoding, errors.

Expected values below were read by hand from the recordings under
`llmrelay/testing/recordings/anthropic/` (see the README there for each quirk).
"""

from __future__ import annotations

import copy
import json

import pytest

import llmrelay
from llmrelay import events as ev
from llmrelay.messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from llmrelay.protocols import anthropic
from llmrelay.testing import Reply, read_recording, request_for, wire_recordings

from helpers import complete_once as run

MODEL = "anthropic:claude-sonnet-4-5"
HI = [{"role": "user", "content": "hi"}]


def decode(name: str, piece: int | None = None) -> tuple[list, anthropic.Decoder]:
    data = read_recording(name)
    d = anthropic.Decoder()
    events: list = []
    if piece is None:
        events += d.feed(data)
    else:
        for i in range(0, len(data), piece):
            events += d.feed(data[i : i + piece])
    return events + d.end(), d


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


SIG_THINKING = ("EvoCCkYICxgCKkCY593D", "kCiI1P7LGAE=", 512)
SIG_TOOL = ("EoQDCm0IDhgCKkCDzGs2", "ANWRjSBwUxgB", 524)
REDACTED = [("EqkECkYIBxgCKkA8AZ4n", "vnBd4ewJ/hgB", 744), ("EtgBCkYIBxgCKkDQfGkw", "yRYdZ1J0GAE=", 296)]

THINKING_TEXT = (
    "The user wants two names for a pet pelican, and wants me to be brief. I'll give two simple, fitting names."
    "\n\nSome options:\n- Pete\n- Percy\n- Captain\n- Scoop\n- Bill\n- Gully\n\nI'll pick two good ones and keep it very short."
)
TOOL_THINKING = (
    "The user wants me to:\n1. Use the fixed_version tool\n2. Tell them the version\n3. Make a short joke about it"
    "\n\nLet me first call the fixed_version tool to see what version it returns."
)
REDACTED_TEXT = (
    "I notice that you've sent what appears to be some kind of test string or command. I don't have any special "
    '"magic string" triggers or backdoor commands that would expose internal systems or change my behavior.\n\n'
    "I'm Claude, an AI assistant created by Anthropic to be helpful, harmless, and honest. How can I assist you "
    "today with a legitimate task or question?"
)
CUT_TEXT = (
    "I'll create a comprehensive tax guide for someone with multiple W2s and save it in a file called taxes.txt. "
    "Let me do that for you now."
)
CUT_ARGS = (
    '{"filename": "taxes.txt", "lines_of_text": [\n"# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s",'
    '\n"",\n"## INTRODUCTION",\n"",\n"Filing taxes'
)

#: file -> expected assembled response. usage = (input, output, cached, cache_write, reasoning)
CASES: dict[str, dict] = {
    "anthropic/text_basic.sse": dict(
        id="msg_017A4s3HAsrqf5d2WvBmrpLr", model="claude-sonnet-4-5-20250929",
        parts=[("text", "- Captain\n- Scoop")], usage=(17, 10, 0, 0, None), finish=("stop", "end_turn"),
    ),
    "anthropic/text_claude3_opus.sse": dict(
        id="msg_01Ju7oPaDmjgrhWq8gNP4AUj", model="claude-3-opus-20240229",
        parts=[("text", "1\n2\n3\n4\n5")], usage=(15, 13, 0, 0, None), finish=("stop", "end_turn"),
    ),
    "anthropic/parallel_tool_use_empty_input.sse": dict(
        id="msg_01V2noLbAb2NgKnjaNw6Cn3w", model="claude-haiku-4-5-20251001",
        parts=[
            ("tool", "toolu_01LtHJmixrs9NcWQkK8hu8hj", "pelican_name_generator", {}, ""),
            ("tool", "toolu_01N8a4jWyf116qKTMqKKmjyt", "pelican_name_generator", {}, ""),
        ],
        usage=(542, 62, 0, 0, None), finish=("tool_calls", "tool_use"),
    ),
    "anthropic/stop_sequence.sse": dict(
        id="msg_01KozUDYHvRtgs3NLgG7jzN9", model="claude-haiku-4-5-20251001",
        parts=[("text", '\ndef pelican():\n    return "A large waterbird with a long bill and a throat pouch for catching fish."\n')],
        usage=(16, 28, 0, 0, None), finish=("stop", "stop_sequence"),
    ),
    "anthropic/thinking_signature.sse": dict(
        id="msg_01RTjjePNDCQNgHXg3KeDPfv", model="claude-sonnet-4-5-20250929",
        parts=[("reasoning", THINKING_TEXT, SIG_THINKING, None), ("text", "- Captain\n- Scoop")],
        usage=(46, 84, 0, 0, None), finish=("stop", "end_turn"),
    ),
    "anthropic/thinking_then_tool_use.sse": dict(
        id="msg_01JdU4xqNHXL9QCFWkwCDKGr", model="claude-haiku-4-5-20251001",
        parts=[
            ("reasoning", TOOL_THINKING, SIG_TOOL, None),
            ("tool", "toolu_01825dXWLSoJwCst1qTsiWdb", "fixed_version", {}, ""),
        ],
        usage=(598, 92, 0, 0, 53), finish=("tool_calls", "tool_use"),
    ),
    "anthropic/redacted_thinking.sse": dict(
        id="msg_018XZkwvj9asBiffg3fXt88s", model="claude-sonnet-4-5-20250929",
        parts=[("reasoning", "", None, REDACTED[0]), ("reasoning", "", None, REDACTED[1]), ("text", REDACTED_TEXT)],
        usage=(92, 189, 0, 0, None), finish=("stop", "end_turn"),
    ),
    "anthropic/tool_use_max_tokens_incomplete_json.sse": dict(
        id="msg_01UdjYBBipA9omjYhicnevgq", model="claude-3-7-sonnet-20250219",
        parts=[("text", CUT_TEXT), ("tool", "toolu_01EKqbqmZrGRXy18eN7m9kvY", "make_file", None, CUT_ARGS)],
        usage=(450, 124, 0, 0, None), finish=("length", "max_tokens"), status="truncated",
    ),
    "anthropic/web_search_citations.sse": dict(
        id="msg_01TRpkkgb2QsnyjsGSVdRtGr", model="claude-opus-4-1-20250805",
        parts=[("text-long", "Based on the search results, here's the current weather in San Francisco:\n\nToday",
                " Level 1 storm system bringing periods of rain this weekend.", 650)],
        usage=(10423, 341, 0, 0, None), finish=("stop", "end_turn"),
    ),
}


def test_every_anthropic_recording_has_a_case():
    assert sorted(n for n in wire_recordings() if n.startswith("anthropic/")) == sorted(CASES)


def check_sig(value: str | None, expected) -> None:
    if expected is None:
        assert value is None
        return
    head, tail, length = expected
    assert value is not None and value.startswith(head) and value.endswith(tail) and len(value) == length


def check_response(r: llmrelay.Response, exp: dict) -> None:
    assert r.id == exp["id"]
    assert r.model == exp["model"]
    assert len(r.parts) == len(exp["parts"]), r.parts
    texts, reasoning, calls = [], [], []
    for part, want in zip(r.parts, exp["parts"]):
        if want[0] == "text":
            assert isinstance(part, TextPart) and part.text == want[1] and part.signature is None
            texts.append(want[1])
        elif want[0] == "text-long":
            _, head, tail, length = want
            assert isinstance(part, TextPart)
            assert part.text.startswith(head) and part.text.endswith(tail) and len(part.text) == length
            texts.append(part.text)
        elif want[0] == "reasoning":
            _, text, sig, redacted = want
            assert isinstance(part, ReasoningPart) and part.text == text
            check_sig(part.signature, sig)
            check_sig(part.redacted, redacted)
            reasoning.append(text)
        else:
            _, id, name, args, raw = want
            assert isinstance(part, ToolCall)
            assert (part.id, part.name, part.arguments, part.raw_arguments) == (id, name, args, raw)
            if args is None:
                assert part.error and "max_tokens" in part.error
            else:
                assert part.error is None
            calls.append(part)
    assert r.text == "".join(texts)
    assert r.reasoning == "".join(reasoning)
    assert r.tool_calls == calls
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens, u.reasoning_tokens) == exp["usage"]
    assert u.estimated is False
    assert (r.finish_reason, r.raw_finish_reason) == exp["finish"]
    assert r.status == exp.get("status", "ok")
    assert r.error is None
    assert r.provider == "anthropic"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", sorted(CASES))
async def test_recording_end_to_end(server, client, name, mode):
    server.enqueue(Reply.recording(name))
    r = await run(client, mode, MODEL, HI)
    check_response(r, CASES[name])
    assert server.requests[0].path == "/v1/messages"


@pytest.mark.parametrize("name", sorted(CASES))
def test_recording_event_by_event_and_byte_by_byte(server, client, name):
    """Every split of the body gives the same events (one-byte pieces vs whole)."""
    whole, d1 = decode(name)
    tiny, d2 = decode(name, 1)
    assert whole == tiny and d1.complete and d2.complete and not d2.cut
    server.enqueue(Reply.recording(name, chunking="events"))
    with client.stream(MODEL, HI) as s:
        streamed = list(s)
    assert streamed == whole


def test_event_order_thinking_then_tool_use():
    events, d = decode("anthropic/thinking_then_tool_use.sse")
    assert kinds(events) == [
        "StreamStart", "UsageEvent",
        "ReasoningDelta", "ReasoningDelta",  # the empty thinking_delta is dropped
        "ReasoningDelta",  # signature_delta
        "ToolCallStart", "ToolCallEnd",  # partial_json "" adds no delta
        "UsageEvent", "Finish",
    ]
    assert events[0] == ev.StreamStart("msg_01JdU4xqNHXL9QCFWkwCDKGr", "claude-haiku-4-5-20251001")
    sig = events[4]
    assert sig.text == "" and sig.signature.startswith(SIG_TOOL[0]) and sig.redacted is None
    assert events[5] == ev.ToolCallStart(0, "toolu_01825dXWLSoJwCst1qTsiWdb", "fixed_version")
    assert events[6] == ev.ToolCallEnd(0, "toolu_01825dXWLSoJwCst1qTsiWdb", "fixed_version", {}, "", None)
    assert events[-1] == ev.Finish("tool_calls", "tool_use")
    assert d.complete


def test_event_order_cut_tool_call_never_executable():
    """tool_use cut by max_tokens: no content_block_stop; the call ends with an error before Finish."""
    events, d = decode("anthropic/tool_use_max_tokens_incomplete_json.sse")
    names = kinds(events)
    assert names == (
        ["StreamStart", "UsageEvent"] + ["TextDelta"] * 5
        + ["ToolCallStart"] + ["ToolCallDelta"] * 3 + ["ToolCallEnd", "UsageEvent", "Finish"]
    )
    end = next(e for e in events if isinstance(e, ev.ToolCallEnd))
    assert end.arguments is None and end.raw_arguments == CUT_ARGS and "max_tokens" in end.error
    assert names.index("ToolCallEnd") < names.index("Finish") == len(names) - 1
    assert "".join(e.arguments for e in events if isinstance(e, ev.ToolCallDelta)) == CUT_ARGS
    # the file ends without its final blank line: the message_stop is flushed at EOF on purpose
    assert d.complete and not d.cut


def test_web_search_server_tool_is_a_provider_event_not_a_tool_call(server, client):
    server.enqueue(Reply.recording("anthropic/web_search_citations.sse"))
    r = client.complete(MODEL, HI)
    assert r.tool_calls == []
    assert [e.kind for e in r.provider_events] == ["server_tool_use", "web_search_tool_result"] + ["citation"] * 5
    server_tool = r.provider_events[0].data
    assert server_tool == {"id": "srvtoolu_01SPfvT38PDPAFnkcrMNGUrM", "name": "web_search", "input": {"query": "San Francisco weather today"}}
    result = r.provider_events[1].data
    assert result["tool_use_id"] == "srvtoolu_01SPfvT38PDPAFnkcrMNGUrM" and len(result["content"]) == 10
    assert r.provider_events[2].data["url"] == "https://www.wunderground.com/hourly/us/ca/san-francisco"
    # usage: message_delta reports more input than message_start (2039 -> 10423), last value wins
    assert r.usage.raw["server_tool_use"] == {"web_search_requests": 1}


def test_usage_is_merged_not_summed_and_cache_is_added_to_input():
    """Synthetic: cache reads/writes are reported apart by Anthropic and added back to input."""
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c","usage":'
        b'{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":50,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    d = anthropic.Decoder()
    events = d.feed(body) + d.end()
    usages = [e.usage for e in events if isinstance(e, ev.UsageEvent)]
    last = usages[-1]
    assert (last.input_tokens, last.output_tokens, last.cached_input_tokens, last.cache_write_tokens) == (160, 7, 100, 50)
    assert d.complete


# -- request encoding ---------------------------------------------------------
def _from_recorded(req: dict) -> tuple[list, dict, dict]:
    """Our call for a recorded request, and the body we should send for it."""
    messages = [{"role": m["role"], "content": m["content"]} for m in req["messages"]]
    kw: dict = {"max_tokens": req["max_tokens"]}
    if "temperature" in req:
        kw["temperature"] = req["temperature"]
    if "stop_sequences" in req:
        kw["stop"] = req["stop_sequences"]
    if "thinking" in req:
        kw["thinking_budget"] = req["thinking"]["budget_tokens"]
    if "tools" in req:
        kw["extra_body"] = {"tools": req["tools"]}
    expected = copy.deepcopy(req)
    for m in expected["messages"]:
        if isinstance(m["content"], str):  # we always send content blocks
            m["content"] = [{"type": "text", "text": m["content"]}]
    if "thinking" in expected:
        expected["thinking"].pop("display", None)  # a newer field we do not produce
    return messages, kw, expected


@pytest.mark.parametrize("name", sorted(n for n in CASES if request_for(n) is not None))
def test_request_matches_recording(server, client, name):
    req = request_for(name)
    messages, kw, expected = _from_recorded(req)
    server.enqueue(Reply.recording(name))
    client.complete("anthropic:" + req["model"], messages, **kw)
    got = server.requests[0]
    assert got.json == expected
    assert got.path == "/v1/messages"
    assert got.headers["x-api-key"] == "test-key"
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["content-type"] == "application/json"
    assert "authorization" not in got.headers


def test_request_representative_conversation(server, client):
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]},
        Message("assistant", [
            ReasoningPart("Let me look.", signature="sig-1"),
            ReasoningPart(redacted="opaque-data"),
            ReasoningPart("unsigned reasoning from another provider"),
            TextPart("A cat. Checking the weather."),
            ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
            ToolCall("toolu_2", "get_time", {}),
        ]),
        Message.tool("toolu_1", "18C"),
        Message.tool("toolu_2", "noon"),
        Message.user("Thanks. And this one?", ImagePart(url="https://example.com/cat.jpg")),
        Message.system("Answer in English."),
        Message.user("Also this.", ImagePart(data="R0lGODlh", media_type="image/gif")),
    ]
    client.complete(MODEL, messages, temperature=0.5, top_p=0.9, max_tokens=1000, stop="END", thinking_budget=2048)
    assert server.requests[0].json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "stream": True,
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me look.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque-data"},
                {"type": "text", "text": "A cat. Checking the weather."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
                {"type": "text", "text": "Thanks. And this one?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "Also this."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlh"}},
            ]},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }


def test_request_openai_style_dicts(server, client):
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    client.complete(MODEL, [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": None, "reasoning_content": "no signature: dropped",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ])
    assert server.requests[0].json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": anthropic.DEFAULT_MAX_TOKENS,
        "stream": True,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "42"}]},
        ],
    }


@pytest.mark.parametrize(
    "kw, max_tokens, thinking",
    [
        ({}, 4096, None),
        ({"max_tokens": 50}, 50, None),
        ({"thinking_budget": 2000}, 6096, {"type": "enabled", "budget_tokens": 2000}),
        ({"thinking_budget": 2000, "max_tokens": 3000}, 3000, {"type": "enabled", "budget_tokens": 2000}),
        ({"reasoning_effort": "minimal"}, 4096 + 1024, {"type": "enabled", "budget_tokens": 1024}),
        ({"reasoning_effort": "low"}, 4096 + 2048, {"type": "enabled", "budget_tokens": 2048}),
        ({"reasoning_effort": "medium"}, 4096 + 8192, {"type": "enabled", "budget_tokens": 8192}),
        ({"reasoning_effort": "high"}, 4096 + 16384, {"type": "enabled", "budget_tokens": 16384}),
        ({"reasoning_effort": "xhigh"}, 4096 + 24576, {"type": "enabled", "budget_tokens": 24576}),
        ({"reasoning_effort": "none"}, 4096, None),
        ({"reasoning_effort": "high", "thinking_budget": 1500}, 5596, {"type": "enabled", "budget_tokens": 1500}),
    ],
)
def test_max_tokens_default_and_reasoning_effort(client, kw, max_tokens, thinking):
    _, request, _, _ = client.prepare(MODEL, HI, **kw)
    assert request.json["max_tokens"] == max_tokens
    assert request.json.get("thinking") == thinking
    assert request.url.endswith("/v1/messages")


@pytest.mark.parametrize("param, value", [("seed", 1), ("n", 2)])
def test_unsupported_params(server, client, param, value):
    with pytest.raises(llmrelay.UnsupportedParameterError) as info:
        client.complete(MODEL, HI, **{param: value})
    assert info.value.parameter == param
    assert server.requests == []


def test_default_base_url_has_no_v1():
    c = llmrelay.Client(api_keys={"anthropic": "k"})
    _, request, _, _ = c.prepare(MODEL, HI)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "k" and request.headers["anthropic-version"] == "2023-06-01"


# -- round trips: signatures and redacted data go back unchanged ----------------
def test_round_trip_thinking_signature_and_tool_use(server, client):
    server.enqueue(Reply.recording("anthropic/thinking_then_tool_use.sse"))
    first = client.complete(MODEL, HI, thinking_budget=1024)
    call = first.tool_calls[0]
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    client.complete(MODEL, [*HI, first.to_message(), Message.tool(call.id, "1.2.3")], thinking_budget=1024)
    sent = server.requests[1].json["messages"]
    signature = first.parts[0].signature
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": TOOL_THINKING, "signature": signature},
        {"type": "tool_use", "id": "toolu_01825dXWLSoJwCst1qTsiWdb", "name": "fixed_version", "input": {}},
    ]}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01825dXWLSoJwCst1qTsiWdb", "content": "1.2.3"},
    ]}


def test_round_trip_redacted_thinking(server, client):
    server.enqueue(Reply.recording("anthropic/redacted_thinking.sse"))
    first = client.complete(MODEL, HI)
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    client.complete(MODEL, [*HI, first.to_message(), {"role": "user", "content": "ok"}])
    assistant = server.requests[1].json["messages"][1]
    assert [b["type"] for b in assistant["content"]] == ["redacted_thinking", "redacted_thinking", "text"]
    assert [b.get("data") for b in assistant["content"][:2]] == [p.redacted for p in first.parts[:2]]
    assert assistant["content"][2]["text"] == REDACTED_TEXT


# -- in-band errors (synthetic: no real recording has one) ------------------------
SYNTHETIC_OVERLOADED = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_synthetic","model":"claude-sonnet-4-5",'
    b'"usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, "}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"wor"}}\n\n'
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_synthetic_overloaded_error_mid_stream(server, client, mode):
    server.enqueue(Reply(SYNTHETIC_OVERLOADED, headers={"content-type": "text/event-stream"}))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        await run(client, mode, MODEL, HI)
    err = info.value
    assert err.code == "overloaded_error" and err.status_code == 529
    assert "Overloaded" in str(err)
    assert err.partial is not None and err.partial.text == "Hello, wor"
    assert err.partial.status == "error" and err.partial.id == "msg_synthetic"
    assert err.partial.usage.input_tokens == 12


@pytest.mark.parametrize(
    "kind, status", [("rate_limit_error", 429), ("api_error", 500), ("overloaded_error", 529), ("something_new", None)]
)
def test_error_event_status_mapping(kind, status):
    d = anthropic.Decoder()
    payload = json.dumps({"type": "error", "error": {"type": kind, "message": "boom"}}).encode()
    (e,) = d.feed(b"event: error\ndata: " + payload + b"\n\n")
    assert isinstance(e, ev.StreamError)
    assert (e.message, e.code, e.status, e.kind) == ("boom", kind, status, "provider")


@pytest.mark.parametrize(
    "raw, reason",
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "stop")],
)
def test_stop_reason_mapping(raw, reason):
    d = anthropic.Decoder()
    out = d.feed(('event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"%s"}}\n\n' % raw).encode())
    assert out == [ev.Finish(reason, raw)]


def test_cut_stream_is_interrupted_with_partial(server, client):
    """The connection closes before message_stop: partial text kept, StreamInterruptedError."""
    body = read_recording("anthropic/text_basic.sse")
    body = body[: body.index(b"event: content_block_stop")]
    server.enqueue(Reply(body, headers={"content-type": "text/event-stream"}))
    with pytest.raises(llmrelay.StreamInterruptedError) as info:
        client.complete(MODEL, HI)
    assert info.value.partial.text == "- Captain\n- Scoop"


# -- tool definitions (the `tools=` option) ----------------------------------------
@pytest.mark.parametrize("name", ["anthropic/parallel_tool_use_empty_input.sse", "anthropic/thinking_then_tool_use.sse"])
def test_tools_encode_like_the_recording(client, name):
    pytest.importorskip("llmrelay.tools")
    req = request_for(name)
    messages, kw, expected = _from_recorded(req)
    kw.pop("extra_body")
    _, request, _, _ = client.prepare("anthropic:" + req["model"], messages, tools=req["tools"], **kw)
    assert request.json == expected


@pytest.mark.parametrize(
    "choice, sent",
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
     ("get_time", {"type": "tool", "name": "get_time"})],
)
def test_tool_choice(client, choice, sent):
    pytest.importorskip("llmrelay.tools")
    tools = [{"name": "get_time", "description": "Now.", "parameters": {"type": "object", "properties": {}}}]
    _, request, _, _ = client.prepare(MODEL, HI, tools=tools, tool_choice=choice)
    assert request.json["tools"] == [{"name": "get_time", "description": "Now.", "input_schema": {"type": "object", "properties": {}}}]
    assert request.json["tool_choice"] == sent
