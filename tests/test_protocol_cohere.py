"""Cohere v2 (SSE) and legacy v1 (NDJSON): every recording through the real HTTP path, encoding, errors.

Expected values were read by hand from `llmrelay/testing/recordings/cohere/` and
`tests/payloads/cohere/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmrelay
from llmrelay import events as ev
from llmrelay.messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from llmrelay.protocols import cohere, cohere_v1
from llmrelay.testing import Reply, read_recording, request_for, wire_recordings

from helpers import complete_once as run

HI = [{"role": "user", "content": "hi"}]
PAYLOADS = Path(__file__).parent / "payloads" / "cohere"


def thinking_sse() -> bytes:
    """`v2_reasoning_thinking.chunks.jsonl` is payload-only (not wire data): we wrap each payload
    in SSE framing ourselves, named like Cohere names its events, and end with a bare `data: [DONE]`."""
    out = []
    for line in (PAYLOADS / "v2_reasoning_thinking.chunks.jsonl").read_bytes().splitlines():
        if line.strip():
            out.append(b"event: " + json.loads(line)["type"].encode() + b"\ndata: " + line + b"\n\n")
    return b"".join(out) + b"data: [DONE]\n\n"


def body_for(name: str) -> Reply:
    if name == "payloads/cohere/v2_reasoning_thinking":
        return Reply(thinking_sse(), headers={"content-type": "text/event-stream"})
    return Reply.recording(name)


def decode(module, data: bytes, piece: int | None = None):
    d = module.Decoder()
    events: list = []
    step = piece or len(data)
    for i in range(0, len(data), step):
        events += d.feed(data[i : i + step])
    return events + d.end(), d


V2_TEXT = (
    "Hi there! You're Pickle Rick? That's a fun nickname! Do you have a special recipe for pickling or a favorite "
    "way to be enjoyed? I'm a big fan of the show Rick and Morty too, by the way. Can I help you with anything else? "
    "Maybe some Rick and Morty fan theories or episode recommendations?"
)
PLAN = "I will use the Person tool to create a person with the name Erick and age 27, and then relay this information to the user."
V1_TEXT = "Oh, hello there, Pickle Rick! It's an interesting choice of form you've taken. How can I help you today?"
THINKING = (
    "The user is asking for the sum of 2 and 2. Since this is a straightforward arithmetic problem, I don't need "
    "to use any tools. I can calculate the answer directly."
)

#: name -> (model, expected). usage = (input, output, cached); raw billed_units kept beside tokens
CASES: dict[str, tuple[str, dict]] = {
    "cohere/v2_text.sse": ("cohere:command-r", dict(
        id="3ec845ed-ebb1-4223-9648-4e5632d5c6b5", parts=[("text", V2_TEXT)],
        usage=(70, 69, None), billed={"input_tokens": 4, "output_tokens": 69}, finish=("stop", "COMPLETE"),
    )),
    "cohere/v2_tool_call.sse": ("cohere:command-r", dict(
        id="35c028fc-0223-47b6-8fae-ebd3255e9a63",
        parts=[("reasoning", PLAN), ("tool", "Person_2fnrphbsnr66", "Person", {"name": "Erick", "age": 27},
                                      '{\n    "name": "Erick",\n    "age": 27\n}')],
        usage=(906, 77, None), billed={"input_tokens": 23, "output_tokens": 41}, finish=("tool_calls", "TOOL_CALL"),
    )),
    "cohere/v1_text_ndjson.ndjson": ("cohere-v1:command-r", dict(
        id="1f61497a-9c53-47b1-96f4-e4fd5c9a0947", parts=[("text", V1_TEXT)],
        usage=(70, 26, None), billed={"input_tokens": 4, "output_tokens": 26}, finish=("stop", "COMPLETE"),
    )),
    "cohere/v1_tool_calls_ndjson.ndjson": ("cohere-v1:command-r", dict(
        id="41ea28fc-1dca-4962-9f06-9acd9e74c966",
        parts=[("reasoning", PLAN), ("tool", None, "Person", {"name": "Erick", "age": 27},
                                      '{\n            "name": "Erick",\n            "age": 27\n        }')],
        usage=(903, 77, None), billed={"input_tokens": 21, "output_tokens": 41},
        # v1 says COMPLETE for a turn that ends in tool calls: normalized to tool_calls
        finish=("tool_calls", "COMPLETE"),
    )),
    "payloads/cohere/v2_reasoning_thinking": ("cohere:command-a-reasoning-08-2025", dict(
        id="c9117d7f-a7e4-499f-b643-a2a1e139687b",
        parts=[("reasoning", THINKING), ("text", "The answer to 2 + 2 is 4.")],
        usage=(1394, 54, 1360), billed={"input_tokens": 8, "output_tokens": 50}, finish=("stop", "COMPLETE"),
    )),
}


def test_every_cohere_recording_has_a_case():
    assert sorted(n for n in wire_recordings() if n.startswith("cohere/")) == sorted(n for n in CASES if n.startswith("cohere/"))


def check_response(r: llmrelay.Response, model: str, exp: dict) -> None:
    assert r.id == exp["id"]
    assert r.model == model.split(":", 1)[1]  # Cohere does not report the model: the requested one
    assert len(r.parts) == len(exp["parts"]), r.parts
    texts, reasoning, calls = [], [], []
    for part, want in zip(r.parts, exp["parts"]):
        if want[0] == "text":
            assert isinstance(part, TextPart) and part.text == want[1]
            texts.append(want[1])
        elif want[0] == "reasoning":
            assert part == ReasoningPart(want[1])
            reasoning.append(want[1])
        else:
            _, id, name, args, raw = want
            assert part == ToolCall(id, name, args, raw)
            calls.append(part)
    assert r.text == "".join(texts)
    assert r.reasoning == "".join(reasoning)
    assert r.tool_calls == calls
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens) == exp["usage"]
    assert (u.cache_write_tokens, u.reasoning_tokens, u.estimated) == (None, None, False)
    assert u.raw["billed_units"] == exp["billed"]
    assert u.raw["tokens"] == {"input_tokens": exp["usage"][0], "output_tokens": exp["usage"][1]}
    assert (r.finish_reason, r.raw_finish_reason) == exp["finish"]
    assert r.status == "ok" and r.error is None


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", sorted(CASES))
async def test_recording_end_to_end(server, client, name, mode):
    model, exp = CASES[name]
    server.enqueue(body_for(name))
    r = await run(client, mode, model, HI)
    check_response(r, model, exp)
    assert r.provider == model.split(":")[0]
    assert server.requests[0].path == ("/v1/chat" if model.startswith("cohere-v1") else "/v2/chat")
    assert server.requests[0].headers["authorization"] == "Bearer test-key"


@pytest.mark.parametrize("name", sorted(CASES))
def test_any_split_gives_the_same_events(name):
    module = cohere_v1 if "v1_" in name else cohere
    data = thinking_sse() if name.startswith("payloads/") else read_recording(name)
    whole, d1 = decode(module, data)
    tiny, d2 = decode(module, data, 1)
    assert whole == tiny and d1.complete and d2.complete and not d2.cut


def _kinds(events):
    return [type(e).__name__ for e in events]


def test_event_order_v2_tool_call():
    events, d = decode(cohere, read_recording("cohere/v2_tool_call.sse"))
    names = _kinds(events)
    assert names == (
        ["StreamStart"] + ["ReasoningDelta"] * 28 + ["ToolCallStart"] + ["ToolCallDelta"] * 16
        + ["ToolCallEnd", "UsageEvent", "Finish"]
    )
    assert events[0] == ev.StreamStart("35c028fc-0223-47b6-8fae-ebd3255e9a63", None)
    assert events[29] == ev.ToolCallStart(0, "Person_2fnrphbsnr66", "Person")
    assert "".join(e.arguments for e in events if isinstance(e, ev.ToolCallDelta)) == '{\n    "name": "Erick",\n    "age": 27\n}'
    assert events[-1] == ev.Finish("tool_calls", "TOOL_CALL")
    assert d.complete  # set by message-end; the bare `data: [DONE]` adds nothing


def test_event_order_v2_text_done_without_event_line():
    events, d = decode(cohere, read_recording("cohere/v2_text.sse"))
    assert _kinds(events) == ["StreamStart"] + ["TextDelta"] * (len(events) - 3) + ["UsageEvent", "Finish"]
    assert d.complete and not d.cut


def test_event_order_v1_tool_calls():
    events, d = decode(cohere_v1, read_recording("cohere/v1_tool_calls_ndjson.ndjson"))
    names = _kinds(events)
    # tool-calls-generation closes the call and does not repeat the plan; stream-end repeats nothing
    assert names == (
        ["StreamStart"] + ["ReasoningDelta"] * 28 + ["ToolCallStart"] + ["ToolCallDelta"] * 16
        + ["ToolCallEnd", "UsageEvent", "Finish"]
    )
    assert d.complete


def test_v1_stream_end_text_is_not_appended_twice():
    events, _ = decode(cohere_v1, read_recording("cohere/v1_text_ndjson.ndjson"))
    assert "".join(e.text for e in events if isinstance(e, ev.TextDelta)) == V1_TEXT


def test_v1_whole_tool_calls_without_chunks():
    """Synthetic: an older v1 stream with only `tool-calls-generation` (no streamed chunks)."""
    body = (
        b'{"is_finished":false,"event_type":"stream-start","generation_id":"g"}\n'
        b'{"is_finished":false,"event_type":"tool-calls-generation","text":"","tool_calls":[{"name":"f","parameters":{"a":1}}]}\n'
        b'{"is_finished":true,"event_type":"stream-end","finish_reason":"COMPLETE","response":{"meta":{"billed_units":{"input_tokens":3,"output_tokens":4}}}}'
    )
    events, d = decode(cohere_v1, body)
    end = next(e for e in events if isinstance(e, ev.ToolCallEnd))
    assert (end.name, end.arguments, end.id) == ("f", {"a": 1}, None)
    usage = next(e for e in events if isinstance(e, ev.UsageEvent)).usage
    assert (usage.input_tokens, usage.output_tokens) == (3, 4)  # billed_units only when tokens is absent
    assert events[-1] == ev.Finish("tool_calls", "COMPLETE") and d.complete


@pytest.mark.parametrize(
    "raw, reason",
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"), ("ERROR", "error")],
)
def test_v2_finish_mapping(raw, reason):
    d = cohere.Decoder()
    out = d.feed(b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"%s"}}\n\n' % raw.encode())
    assert out == [ev.Finish(reason, raw)] and d.complete


def test_v2_tool_call_without_end_is_never_executable():
    """Synthetic: a message-end (MAX_TOKENS) while a tool call is still open."""
    body = (
        b'event: tool-call-start\ndata: {"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":'
        b'{"id":"c1","type":"function","function":{"name":"f","arguments":""}}}}}\n\n'
        b'event: tool-call-delta\ndata: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\\"a\\": "}}}}}\n\n'
        b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"MAX_TOKENS"}}\n\n'
    )
    events, _ = decode(cohere, body)
    end = next(e for e in events if isinstance(e, ev.ToolCallEnd))
    assert end.arguments is None and end.raw_arguments == '{"a": ' and "MAX_TOKENS" in end.error
    assert events[-1] == ev.Finish("length", "MAX_TOKENS")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_synthetic_v2_error_finish_raises_with_partial(server, client, mode):
    """Synthetic: message-end with finish_reason ERROR and an error message."""
    body = (
        b'event: message-start\ndata: {"id":"x1","type":"message-start","delta":{"message":{"role":"assistant"}}}\n\n'
        b'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Par"}}}}\n\n'
        b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"ERROR","error":"internal failure"}}\n\n'
    )
    server.enqueue(Reply(body, headers={"content-type": "text/event-stream"}))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        await run(client, mode, "cohere:command-r", HI)
    assert "internal failure" in str(info.value) and info.value.code == "ERROR"
    assert info.value.partial.text == "Par" and info.value.partial.finish_reason == "error"


# -- request encoding ---------------------------------------------------------
def test_v2_request_matches_recording_text(server, client):
    server.enqueue(Reply.recording("cohere/v2_text.sse"))
    client.complete("cohere:command-r", [{"role": "user", "content": "I'm Pickle Rick"}])
    assert server.requests[0].json == request_for("cohere/v2_text.sse")
    assert server.requests[0].headers["content-type"] == "application/json"


def test_v2_request_matches_recording_tool_call(server, client):
    req = request_for("cohere/v2_tool_call.sse")
    server.enqueue(Reply.recording("cohere/v2_tool_call.sse"))
    client.complete("cohere:command-r", req["messages"], temperature=req["temperature"], extra_body={"tools": req["tools"]})
    assert server.requests[0].json == req


def test_v1_request_matches_recording_text(server, client):
    server.enqueue(Reply.recording("cohere/v1_text_ndjson.ndjson"))
    client.complete("cohere-v1:command-r", [{"role": "user", "content": "I'm Pickle Rick"}])
    # the recording sent no model (the server default); we always send it
    assert server.requests[0].json == {**request_for("cohere/v1_text_ndjson.ndjson"), "model": "command-r"}
    assert server.requests[0].path == "/v1/chat"


def test_v1_request_matches_recording_tool_calls(server, client):
    req = request_for("cohere/v1_tool_calls_ndjson.ndjson")
    server.enqueue(Reply.recording("cohere/v1_tool_calls_ndjson.ndjson"))
    client.complete("cohere-v1:command-r", req["message"], temperature=req["temperature"], extra_body={"tools": req["tools"]})
    assert server.requests[0].json == req


def test_v2_request_representative_conversation(server, client):
    server.enqueue(Reply.recording("cohere/v2_text.sse"))
    messages = [
        {"role": "system", "content": "You are terse."},
        Message.user("What is this?", ImagePart(data="iVBORw0KGgo=", media_type="image/png")),
        Message("assistant", [
            ReasoningPart("I will look up the weather."),
            ToolCall("call_1", "get_weather", {"city": "Paris"}),
            ToolCall("call_2", "get_time", {}),
        ]),
        Message.tool("call_1", "18C"),
        Message.tool("call_2", "noon"),
        Message.assistant("It is 18C at noon."),
        {"role": "user", "content": "Thanks"},
    ]
    client.complete("cohere:command-a", messages, temperature=0.3, max_tokens=200, top_p=0.8, stop=["END"], seed=7, thinking_budget=1000)
    assert server.requests[0].json == {
        "model": "command-a",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "tool_plan": "I will look up the weather.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "assistant", "content": "It is 18C at noon."},
            {"role": "user", "content": "Thanks"},
        ],
        "temperature": 0.3,
        "max_tokens": 200,
        "p": 0.8,
        "stop_sequences": ["END"],
        "seed": 7,
        "thinking": {"type": "enabled", "token_budget": 1000},
    }


def test_v2_round_trip_tool_plan(server, client):
    server.enqueue(Reply.recording("cohere/v2_tool_call.sse"))
    first = client.complete("cohere:command-r", [{"role": "user", "content": "Erick, 27 years old"}])
    server.enqueue(Reply.recording("cohere/v2_text.sse"))
    client.complete("cohere:command-r", [
        {"role": "user", "content": "Erick, 27 years old"}, first.to_message(), Message.tool("Person_2fnrphbsnr66", "saved"),
    ])
    sent = server.requests[1].json["messages"]
    arguments = first.tool_calls[0].arguments_json  # a JSON string (ToolCall decides its exact spelling)
    assert json.loads(arguments) == {"name": "Erick", "age": 27}
    assert sent[1] == {"role": "assistant", "tool_plan": PLAN, "tool_calls": [
        {"id": "Person_2fnrphbsnr66", "type": "function", "function": {"name": "Person", "arguments": arguments}},
    ]}
    assert sent[2] == {"role": "tool", "tool_call_id": "Person_2fnrphbsnr66", "content": "saved"}


def test_v1_request_representative_conversation(server, client):
    server.enqueue(Reply.recording("cohere/v1_text_ndjson.ndjson"))
    client.complete("cohere-v1:command-r", [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "I'm Pickle Rick"},
    ], temperature=0.2, max_tokens=64, top_p=0.5, stop="END", seed=3)
    assert server.requests[0].json == {
        "model": "command-r",
        "message": "I'm Pickle Rick",
        "chat_history": [{"role": "USER", "message": "Hi"}, {"role": "CHATBOT", "message": "Hello!"}],
        "preamble": "You are terse.",
        "stream": True,
        "temperature": 0.2,
        "max_tokens": 64,
        "p": 0.5,
        "stop_sequences": ["END"],
        "seed": 3,
    }


def test_v1_encoder_limits(client):
    with pytest.raises(llmrelay.UnsupportedParameterError):
        client.prepare("cohere-v1:command-r", [*HI, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c", "content": "x"}])
    with pytest.raises(llmrelay.InvalidRequestError):
        client.prepare("cohere-v1:command-r", [*HI, {"role": "assistant", "content": "prefill"}])


@pytest.mark.parametrize(
    "model, param, value",
    [
        ("cohere:command-r", "reasoning_effort", "high"),
        ("cohere:command-r", "n", 2),
        ("cohere-v1:command-r", "thinking_budget", 100),
        ("cohere-v1:command-r", "reasoning_effort", "low"),
        ("cohere-v1:command-r", "n", 2),
    ],
)
def test_unsupported_params(server, client, model, param, value):
    with pytest.raises(llmrelay.UnsupportedParameterError) as info:
        client.complete(model, HI, **{param: value})
    assert info.value.parameter == param
    assert server.requests == []


def test_default_base_urls():
    c = llmrelay.Client(api_keys={"cohere": "k", "cohere-v1": "k"})
    _, v2, _, _ = c.prepare("cohere:command-r", HI)
    _, v1, _, _ = c.prepare("cohere-v1:command-r", HI)
    assert v2.url == "https://api.cohere.com/v2/chat" and v2.headers["authorization"] == "Bearer k"
    assert v1.url == "https://api.cohere.com/v1/chat" and v1.headers["authorization"] == "Bearer k"


# -- tool definitions (the `tools=` option) ----------------------------------------
def test_v2_tools_encode_like_the_recording(client):
    pytest.importorskip("llmrelay.tools")
    req = request_for("cohere/v2_tool_call.sse")
    _, request, _, _ = client.prepare("cohere:command-r", req["messages"], temperature=req["temperature"], tools=req["tools"])
    assert request.json == req


@pytest.mark.parametrize(
    "choice, tool_names, sent",
    [("auto", ["a", "b"], None), ("required", ["a", "b"], "REQUIRED"), ("none", ["a", "b"], "NONE"), ("b", ["b"], "REQUIRED")],
)
def test_v2_tool_choice(client, choice, tool_names, sent):
    pytest.importorskip("llmrelay.tools")
    tools = [{"name": n, "parameters": {"type": "object", "properties": {}}} for n in ("a", "b")]
    _, request, _, _ = client.prepare("cohere:command-r", HI, tools=tools, tool_choice=choice)
    assert [t["function"]["name"] for t in request.json["tools"]] == tool_names
    assert request.json.get("tool_choice") == sent


def test_v1_tools_are_unsupported(client):
    pytest.importorskip("llmrelay.tools")
    with pytest.raises(llmrelay.UnsupportedParameterError):
        client.prepare("cohere-v1:command-r", HI, tools=[{"name": "a"}])
