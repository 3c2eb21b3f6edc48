"""OpenAI Responses protocol: every bundled recording through the real replay server, request bodies, synthetic cases.

Recorded streams are real captures (see `llmrelay/testing/recordings/README.md`);
every test whose stream is built here says "synthetic" in its name or docstring.
"""

from __future__ import annotations

import json

import pytest

import llmrelay
from llmrelay import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from llmrelay import events as ev
from llmrelay.protocols import openai_responses as proto
from llmrelay.testing import Reply, read_recording, request_for, wire_recordings

MODEL = "openai-responses:gpt-4.1"
REC = "openai_responses/"
RECORDINGS = [n for n in wire_recordings() if n.startswith(REC)]


def _payloads(name: str) -> list[dict]:
    """The recording's JSON payloads (read independently of the decoder under test)."""
    out = []
    for line in read_recording(REC + name).decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def _done_reasoning(name: str) -> list[tuple[str, str]]:
    """(id, final encrypted_content) of each reasoning item, from `response.output_item.done`."""
    return [
        (p["item"]["id"], p["item"]["encrypted_content"])
        for p in _payloads(name)
        if p["type"] == "response.output_item.done" and p["item"]["type"] == "reasoning" and p["item"].get("encrypted_content")
    ]


# -- what each recording must assemble to -------------------------------------------------
# text / reasoning: exact str, or (prefix, suffix, length) for long ones.
# usage: (input, output, cached, reasoning, provider_cost)
EXPECTED: dict[str, dict] = {
    "text_basic.sse": dict(
        id="resp_00592e63e61b66660169fab1b9f8e481a2b321356198d7ac1b", model="gpt-5.5-2026-04-23",
        text="pong", reasoning="", parts=["text"], tools=[], usage=(11, 5, 0, 0, None), finish="stop", providers=[],
    ),
    "function_call.sse": dict(
        id="resp_00d64fa806f333310169fab1be69d081a08f8285661855594c", model="gpt-5.5-2026-04-23",
        text="", reasoning="", parts=["tool"],
        tools=[("call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply", {"a": 1231, "b": 2331}, '{"a":1231,"b":2331}')],
        usage=(58, 23, 0, 0, None), finish="tool_calls", providers=[],
    ),
    "text_after_function_output.sse": dict(
        id="resp_0dacb603de1c9e6b0169fab1c2314081a3b1df3cc5c09e0c60", model="gpt-5.5-2026-04-23",
        text="1231 × 2331 = **2,869,461**", reasoning="", parts=["text"], tools=[],
        usage=(94, 18, 0, 0, None), finish="stop", providers=[],
    ),
    "reasoning_then_function_call.sse": dict(
        id="resp_0050471a34b36ae60068c97b94a480819587a9d70cf2979b33", model="gpt-5-2025-08-07",
        text="", reasoning="", parts=["reasoning", "tool"],
        tools=[("call_CWXgs68YprAjp6t0371hiPOI", "final_result", {"result": 6666}, '{"result":6666}')],
        usage=(53, 469, 0, 448, None), finish="tool_calls", providers=[],
    ),
    "reasoning_summary_text.sse": dict(
        id="resp_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff", model="o3-mini-2025-01-31",
        text=(
            "I'm not a road safety professional, but here are some generally accept",
            " familiarize yourself with the rules specific to your area. Stay safe!",
            1251,
        ),
        # four summary parts (460 + 517 + 540 + 505 chars) joined by blank lines
        reasoning=("**Providing street crossing instructions**\n\nThe us", "It will be clear and easy to understand!", 2028),
        parts=["reasoning", "text"], tools=[], usage=(13, 1680, 0, 1408, None), finish="stop", providers=[],
    ),
    "background_queued.sse": dict(
        id="resp_0da443d9ee8333600069950a0635d88196b2d9243b08e8cc01", model="gpt-4o-2024-08-06",
        text="2 + 2 equals 4.", reasoning="", parts=["text"], tools=[], usage=(15, 9, 0, 0, None), finish="stop", providers=[],
    ),
    "resume_starting_after.sse": dict(
        id="resp_0850765c843cca5300699cc47d93c0819089a181f5feeff8eb", model="gpt-4o-2024-08-06",
        text="2 + 2 equals 4.", reasoning="", parts=["text"], tools=[], usage=(15, 9, 0, 0, None), finish="stop", providers=[],
    ),
    "web_search_builtin_tool.sse": dict(
        id="resp_00a60507bf41223d0068c9d2fbf93481a0ba2a7796ae2cab4c", model="gpt-5-2025-08-07",
        text=(
            "San Francisco weather today (Tuesday, September 16, 2025): Mostly sunny and pleasant. "
            "Current conditions around 71°F; expected high near 73°F and low around 58°F. "
            "A light jacket is useful for the cooler evening. "
        ),
        reasoning="", parts=["reasoning", "reasoning", "text"], tools=[],
        usage=(9463, 582, 8320, 512, None), finish="stop",
        providers=["web_search_call.in_progress", "web_search_call.searching", "web_search_call.completed", "web_search_call"],
    ),
    "openrouter_reasoning_text_done.sse": dict(
        id="gen-1764265411-Fu1iEX7h5MRWiL79lb94", model="openai/gpt-oss-20b",
        text="4", reasoning='The user asks: "What is 2+2?" They expect a straightforward answer: 4. Just answer 4.',
        parts=["reasoning", "text"], tools=[], usage=(78, 37, 0, 22, 1.13e-05), finish="stop", providers=[],
    ),
    "deepseek_function_tool.sse": dict(
        id="1235b7ba-fdc9-4a1c-bfe4-6137c207baf3", model="deepseek-v4-flash",
        text="", reasoning="The user asks about temperature in Tokyo. I'll call the tool.", parts=["reasoning", "tool"],
        tools=[("call_00_xjY8Z2BvSlzgEmmw0DtH0464", "get_temperature", {"city": "Tokyo"}, '{"city": "Tokyo"}')],
        usage=(366, 59, 256, 14, None), finish="tool_calls", providers=[],
    ),
}

_KIND = {TextPart: "text", ReasoningPart: "reasoning", ToolCall: "tool"}


def _match(actual: str, expected) -> None:
    if isinstance(expected, str):
        assert actual == expected
    else:
        prefix, suffix, length = expected
        assert actual.startswith(prefix)
        assert actual.endswith(suffix)
        assert len(actual) == length


def check(name: str, r: llmrelay.Response) -> None:
    exp = EXPECTED[name]
    assert r.status == "ok" and r.error is None
    assert r.id == exp["id"]
    assert r.model == exp["model"]
    _match(r.text, exp["text"])
    _match(r.reasoning, exp["reasoning"])
    assert [_KIND[type(p)] for p in r.parts] == exp["parts"]
    assert [(c.id, c.name, c.arguments, c.raw_arguments, c.error) for c in r.tool_calls] == [t + (None,) for t in exp["tools"]]
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens, u.provider_cost) == exp["usage"]
    assert u.total_tokens == exp["usage"][0] + exp["usage"][1]
    assert not u.estimated and u.raw is not None
    assert r.finish_reason == exp["finish"]
    assert r.raw_finish_reason == "completed"
    assert r.refusal is None
    assert [e.kind for e in r.provider_events] == exp["providers"]
    # reasoning signatures: exactly the final encrypted_content of each reasoning item, with its id
    signed = [json.loads(p.signature) for p in r.parts if isinstance(p, ReasoningPart) and p.signature]
    assert [(s["id"], s["encrypted_content"]) for s in signed] == _done_reasoning(name)


def test_every_recording_has_expectations():
    assert sorted(n[len(REC):] for n in RECORDINGS) == sorted(EXPECTED)


@pytest.mark.parametrize("chunking", ["random", "events"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_sync(server, client, name, chunking):
    server.enqueue(Reply.recording(REC + name, chunking=chunking))
    check(name, client.complete(MODEL, "hi"))
    req = server.requests[0]
    assert (req.method, req.path) == ("POST", "/v1/responses")
    assert req.headers["authorization"] == "Bearer test-key"


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recording_async(server, client, name):
    server.enqueue(Reply.recording(REC + name, max_piece=17, seed=7))
    s = client.astream(MODEL, "hi")
    check(name, await s.collect())


def test_summary_parts_stay_apart(server, client):
    server.enqueue(Reply.recording(REC + "reasoning_summary_text.sse"))
    r = client.complete(MODEL, "hi")
    summaries = [p["text"] for p in _payloads("reasoning_summary_text.sse") if p["type"] == "response.reasoning_summary_text.done"]
    assert len(summaries) == 4
    assert r.reasoning == "\n\n".join(summaries)
    assert r.text == next(p["text"] for p in _payloads("reasoning_summary_text.sse") if p["type"] == "response.output_text.done")
    # one reasoning part per reasoning item, closed by its signature
    (part,) = [p for p in r.parts if isinstance(p, ReasoningPart)]
    assert json.loads(part.signature)["id"] == "rs_68c42d1d0878819d8266007cd3d1402c08fbf9b1584184ff"


def test_web_search_is_not_a_tool_call(server, client):
    server.enqueue(Reply.recording(REC + "web_search_builtin_tool.sse"))
    events = list(client.stream(MODEL, "weather?"))
    assert not [e for e in events if isinstance(e, (ev.ToolCallStart, ev.ToolCallDelta, ev.ToolCallEnd))]
    provider = [e for e in events if isinstance(e, ev.ProviderEvent)]
    assert [e.kind for e in provider] == [
        "web_search_call.in_progress", "web_search_call.searching", "web_search_call.completed", "web_search_call",
    ]
    assert provider[0].data["item_id"] == "ws_00a60507bf41223d0068c9d30021d081a0962d80d50c12e317"
    assert provider[-1].data["action"] == {
        "type": "search", "query": "weather: San Francisco, CA", "sources": [{"type": "api", "name": "oai-weather"}],
    }
    # built-in tool events interleave between the reasoning items, before the answer text
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ProviderEvent") < kinds.index("TextDelta")
    assert events[-1] == ev.Finish("stop", "completed")


def test_event_order_text_basic(server, client):
    server.enqueue(Reply.recording(REC + "text_basic.sse", chunking=3))
    events = list(client.stream(MODEL, "ping"))
    assert [type(e) for e in events] == [ev.StreamStart, ev.TextDelta, ev.UsageEvent, ev.Finish]
    assert events[0] == ev.StreamStart("resp_00592e63e61b66660169fab1b9f8e481a2b321356198d7ac1b", "gpt-5.5-2026-04-23")
    assert events[1] == ev.TextDelta("pong")
    assert events[2].usage.input_tokens == 11 and events[2].usage.output_tokens == 5
    assert events[3] == ev.Finish("stop", "completed")


def test_event_order_function_call(server, client):
    server.enqueue(Reply.recording(REC + "function_call.sse"))
    events = list(client.stream(MODEL, "multiply"))
    assert type(events[0]) is ev.StreamStart
    assert events[1] == ev.ToolCallStart(0, "call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply")
    deltas = [e for e in events if type(e) is ev.ToolCallDelta]
    assert len(deltas) == 11 and "".join(d.arguments for d in deltas) == '{"a":1231,"b":2331}'
    end = [e for e in events if type(e) is ev.ToolCallEnd]
    assert end == [ev.ToolCallEnd(0, "call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply", {"a": 1231, "b": 2331}, '{"a":1231,"b":2331}')]
    assert [type(e) for e in events[-2:]] == [ev.UsageEvent, ev.Finish]
    assert events[-1].reason == "tool_calls"


def test_resumed_stream_starts_without_created(server, client):
    server.enqueue(Reply.recording(REC + "resume_starting_after.sse"))
    events = list(client.stream(MODEL, "hi"))
    starts = [e for e in events if type(e) is ev.StreamStart]
    assert starts == [ev.StreamStart("resp_0850765c843cca5300699cc47d93c0819089a181f5feeff8eb", "gpt-4o-2024-08-06")]


# -- request bodies ---------------------------------------------------------------------------
def _messages_from_recorded(req: dict) -> list:
    msgs: list = []
    if req.get("instructions"):
        msgs.append({"role": "system", "content": req["instructions"]})
    for item in req["input"]:
        if item.get("type") == "function_call":
            fn = {"name": item["name"], "arguments": item["arguments"]}
            msgs.append({"role": "assistant", "content": None, "tool_calls": [{"id": item["call_id"], "type": "function", "function": fn}]})
        elif item.get("type") == "function_call_output":
            msgs.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        else:
            msgs.append({"role": item["role"], "content": item["content"]})
    return msgs


WITH_REQUEST = [n for n in sorted(EXPECTED) if request_for(REC + n) is not None]


def test_most_recordings_have_requests():
    assert "resume_starting_after.sse" not in WITH_REQUEST and len(WITH_REQUEST) == len(EXPECTED) - 1


@pytest.mark.parametrize("name", WITH_REQUEST)
def test_request_body_matches_recording(server, client, name):
    recorded = request_for(REC + name)
    effort = (recorded.get("reasoning") or {}).get("effort")
    params = {"reasoning_effort": effort} if effort else {}
    server.enqueue(Reply.recording(REC + name))
    check(name, client.complete("openai-responses:" + recorded["model"], _messages_from_recorded(recorded), **params))
    sent = server.requests[0].json
    assert sent["model"] == recorded["model"]
    assert sent["input"] == recorded["input"]
    assert sent.get("instructions") == recorded.get("instructions")
    assert sent["stream"] is True and recorded["stream"] is True
    if effort:
        assert sent["reasoning"] == {"effort": effort, "summary": "auto"}
        assert set(sent["include"]) <= set(recorded["include"])
    else:
        assert "reasoning" not in sent and "include" not in sent
    # tools are not in scope yet: nothing else is sent
    assert set(sent) <= {"model", "instructions", "input", "stream", "reasoning", "include"}


PNG = b"\x89PNG\r\n\x1a\n"


def test_request_body_exact_conversation(server, client):
    server.enqueue(Reply.recording(REC + "text_basic.sse"))
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "developer", "content": "Answer in English."},
        Message.user("What is in these?", ImagePart(url="https://example.com/cat.png", detail="low"), ImagePart.from_bytes(PNG, "image/png")),
        Message("assistant", [TextPart("Two cats. Let me count."), ToolCall("call_1", "count", {"what": "cats"})]),
        Message.tool("call_1", "2"),
        Message.assistant(tool_calls=[ToolCall("call_2", "noop", {}), ToolCall("call_3", "bad", None, raw_arguments='{"x":')]),
        Message.tool("call_2", ""),
        Message.tool("call_3", "error"),
    ]
    client.complete(MODEL, messages, temperature=0.2, top_p=0.9, max_tokens=128, reasoning_effort="low")
    assert server.requests[0].json == {
        "model": "gpt-4.1",
        "instructions": "You are terse.\n\nAnswer in English.",
        "input": [
            {"role": "user", "content": "Hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello! How can I help?"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in these?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                ],
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Two cats. Let me count."}]},
            {"type": "function_call", "call_id": "call_1", "name": "count", "arguments": '{"what": "cats"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "2"},
            {"type": "function_call", "call_id": "call_2", "name": "noop", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_3", "name": "bad", "arguments": '{"x":'},
            {"type": "function_call_output", "call_id": "call_2", "output": ""},
            {"type": "function_call_output", "call_id": "call_3", "output": "error"},
        ],
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 128,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
    }


def test_request_body_minimal_and_extra_body(server, client):
    server.enqueue(Reply.recording(REC + "text_basic.sse"))
    client.complete(MODEL, "Hi", extra_body={"store": False, "include": ["reasoning.encrypted_content"]}, extra_headers={"x-trace": "1"})
    req = server.requests[0]
    assert req.json == {
        "model": "gpt-4.1", "input": [{"role": "user", "content": "Hi"}], "stream": True,
        "store": False, "include": ["reasoning.encrypted_content"],
    }
    assert req.headers["x-trace"] == "1" and req.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("param,value", [("stop", ["\n"]), ("seed", 1), ("n", 2), ("thinking_budget", 1024)])
def test_unsupported_params(client, param, value):
    with pytest.raises(llmrelay.UnsupportedParameterError) as info:
        client.stream(MODEL, "hi", **{param: value})
    assert info.value.parameter == param


def test_reasoning_round_trip(server, client):
    """The decoded reasoning item (id + final encrypted_content) goes back as a `reasoning` input item."""
    server.enqueue(Reply.recording(REC + "reasoning_then_function_call.sse"), Reply.recording(REC + "text_basic.sse"))
    first = client.complete(MODEL, "Calculate 100 * 200 / 3", reasoning_effort="low")
    client.complete(MODEL, ["Calculate 100 * 200 / 3", first.to_message(), Message.tool("call_CWXgs68YprAjp6t0371hiPOI", "ok")])
    ((rs_id, encrypted),) = _done_reasoning("reasoning_then_function_call.sse")
    assert len(encrypted) == 3896
    assert server.requests[1].json["input"] == [
        {"role": "user", "content": "Calculate 100 * 200 / 3"},
        {"type": "reasoning", "id": rs_id, "summary": [], "encrypted_content": encrypted},
        {"type": "function_call", "call_id": "call_CWXgs68YprAjp6t0371hiPOI", "name": "final_result", "arguments": '{"result":6666}'},
        {"type": "function_call_output", "call_id": "call_CWXgs68YprAjp6t0371hiPOI", "output": "ok"},
    ]


def test_reasoning_round_trip_with_summary(server, client):
    server.enqueue(Reply.recording(REC + "reasoning_summary_text.sse"), Reply.recording(REC + "text_basic.sse"))
    first = client.complete(MODEL, "How do I cross the street?")
    client.complete(MODEL, ["How do I cross the street?", first, "Thanks"])
    ((rs_id, encrypted),) = _done_reasoning("reasoning_summary_text.sse")
    assert server.requests[1].json["input"] == [
        {"role": "user", "content": "How do I cross the street?"},
        {"type": "reasoning", "id": rs_id, "summary": [{"type": "summary_text", "text": first.reasoning}], "encrypted_content": encrypted},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": first.text}]},
        {"role": "user", "content": "Thanks"},
    ]


def test_unsigned_or_foreign_reasoning_is_not_sent():
    assert proto.reasoning_item(ReasoningPart("thinking", None)) is None
    assert proto.reasoning_item(ReasoningPart("thinking", "EqQBCkYIBxgC")) is None  # an Anthropic signature
    assert proto.reasoning_item(ReasoningPart("", '{"id":"rs_1"}')) is None  # no encrypted content
    items, instructions = proto.encode_input([Message("assistant", [ReasoningPart("raw thoughts"), TextPart("4")])])
    assert instructions is None
    assert items == [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]}]


# -- synthetic streams -----------------------------------------------------------------------
RESP = {"id": "resp_syn", "object": "response", "model": "gpt-4.1-2025-04-14", "status": "in_progress", "output": [], "usage": None}
USAGE = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 27}
MSG = {"type": "response.output_item.added", "output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "status": "in_progress"}}


def _delta(text: str) -> dict:
    return {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text}


def sse(*events: dict, named: bool = True, done: bool = False) -> bytes:
    out = []
    for i, e in enumerate(events):
        e = {**e, "sequence_number": i}
        out.append((f"event: {e['type']}\n" if named else "") + "data: " + json.dumps(e) + "\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def _end(kind: str, **fields) -> dict:
    return {"type": kind, "response": {**RESP, "status": kind.split(".")[1], **fields}}


def test_synthetic_incomplete_max_output_tokens(server, client):
    body = sse(
        {"type": "response.created", "response": RESP}, MSG, _delta("Once upon"), _delta(" a time"),
        _end("response.incomplete", usage=USAGE, incomplete_details={"reason": "max_output_tokens"}),
    )
    server.enqueue(Reply(body))
    r = client.complete(MODEL, "story", max_tokens=7)
    assert r.status == "truncated"
    assert (r.finish_reason, r.raw_finish_reason) == ("length", "max_output_tokens")
    assert r.text == "Once upon a time"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cached_input_tokens) == (20, 7, 4)
    assert server.requests[0].json["max_output_tokens"] == 7


def test_synthetic_incomplete_mid_function_call(server, client):
    """Synthetic: cut by max_output_tokens inside the arguments: the call is reported, never executable."""
    fc = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "", "status": "in_progress"}
    body = sse(
        {"type": "response.created", "response": RESP},
        {"type": "response.output_item.added", "output_index": 0, "item": fc},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": '{"a": '},
        _end("response.incomplete", usage=USAGE, incomplete_details={"reason": "max_output_tokens"}),
    )
    server.enqueue(Reply(body))
    r = client.complete(MODEL, "go")
    assert r.status == "truncated" and r.finish_reason == "length"
    (call,) = r.tool_calls
    assert (call.id, call.name, call.arguments, call.raw_arguments) == ("call_1", "f", None, '{"a": ')
    assert call.error and "JSON" in call.error


def test_synthetic_incomplete_content_filter(server, client):
    body = sse({"type": "response.created", "response": RESP}, MSG, _delta("Sure"),
               _end("response.incomplete", usage=USAGE, incomplete_details={"reason": "content_filter"}))
    server.enqueue(Reply(body))
    r = client.complete(MODEL, "x")
    assert (r.status, r.finish_reason, r.raw_finish_reason, r.text) == ("ok", "content_filter", "content_filter", "Sure")


def test_synthetic_failed_keeps_partial(server, client):
    body = sse(
        {"type": "response.created", "response": RESP}, MSG, _delta("Partial "), _delta("answer"),
        _end("response.failed", usage=USAGE, error={"code": "server_error", "message": "The model crashed."}),
    )
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        client.complete(MODEL, "x")
    err = info.value
    assert err.code == "server_error" and "The model crashed." in str(err)
    assert err.partial.text == "Partial answer"
    assert err.partial.status == "error"
    assert (err.partial.usage.input_tokens, err.partial.usage.output_tokens) == (20, 7)
    assert not err.partial.usage.estimated


def test_synthetic_error_event(server, client):
    body = sse(
        {"type": "response.created", "response": RESP}, MSG, _delta("Hel"),
        {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down.", "param": None},
    )
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        list(client.stream(MODEL, "x"))
    assert info.value.code == "rate_limit_exceeded" and "Slow down." in str(info.value)
    assert info.value.partial.text == "Hel"


async def test_synthetic_error_event_async(server, client):
    body = sse({"type": "response.created", "response": RESP}, MSG, _delta("Hel"),
               {"type": "error", "error": {"type": "server_error", "code": None, "message": "Boom"}}, named=False)
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        await client.astream(MODEL, "x").collect()
    assert info.value.code == "server_error" and info.value.partial.text == "Hel"


def test_synthetic_data_only_unknown_events_and_done(server, client):
    """Synthetic: `data:` only, unknown event types, annotations, refusal, [DONE] after completion."""
    body = sse(
        {"type": "response.created", "response": RESP},
        {"type": "response.some_future_event", "whatever": [1, 2]},
        {"type": "totally.unknown"},
        MSG, _delta("See "), _delta("docs."),
        {"type": "response.output_text.annotation.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
         "annotation_index": 0, "annotation": {"type": "url_citation", "url": "https://example.com", "title": "Ex"}},
        {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 1, "delta": "I can't"},
        {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 1, "delta": " do that."},
        {"type": "response.refusal.done", "item_id": "msg_1", "output_index": 0, "content_index": 1, "refusal": "I can't do that."},
        {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "See docs."},
        _end("response.completed", usage=USAGE),
        named=False, done=True,
    )
    server.enqueue(Reply(body, chunking=5))
    r = client.complete(MODEL, "x")
    assert (r.status, r.text, r.refusal, r.finish_reason) == ("ok", "See docs.", "I can't do that.", "stop")
    assert [(e.kind, e.data["url"]) for e in r.provider_events] == [("annotation", "https://example.com")]


def test_synthetic_done_events_without_deltas(server, client):
    """Synthetic: text, reasoning and arguments that only arrive in `.done` / `output_item.done` events."""
    fc = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "", "status": "in_progress"}
    fc2 = {"id": "fc_2", "type": "function_call", "call_id": "call_2", "name": "g", "arguments": '{"y": 2}', "status": "completed"}
    body = sse(
        {"type": "response.in_progress", "response": RESP},
        {"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
        {"type": "response.reasoning_summary_text.done", "item_id": "rs_1", "output_index": 0, "summary_index": 0, "text": "Plan A."},
        {"type": "response.reasoning_summary_text.done", "item_id": "rs_1", "output_index": 0, "summary_index": 1, "text": "Plan B."},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "ENC"}},
        {"type": "response.output_item.added", "output_index": 1, "item": {**MSG["item"]}},
        {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 1, "content_index": 0, "text": "Calling."},
        {"type": "response.output_item.added", "output_index": 2, "item": fc},
        {"type": "response.function_call_arguments.done", "output_index": 2, "arguments": '{"x": 1}'},  # no item_id
        {"type": "response.output_item.done", "output_index": 2, "item": {**fc, "arguments": '{"x": 1}', "status": "completed"}},
        {"type": "response.output_item.done", "output_index": 3, "item": fc2},  # never announced
        _end("response.completed", usage=USAGE),
    )
    server.enqueue(Reply(body))
    r = client.complete(MODEL, "x")
    assert r.reasoning == "Plan A.\n\nPlan B."
    assert r.parts[0] == ReasoningPart("Plan A.\n\nPlan B.", '{"id":"rs_1","encrypted_content":"ENC"}')
    assert r.text == "Calling."
    assert [(c.id, c.name, c.arguments) for c in r.tool_calls] == [("call_1", "f", {"x": 1}), ("call_2", "g", {"y": 2})]
    assert r.finish_reason == "tool_calls" and r.id == "resp_syn"


def test_synthetic_cut_before_completed(server, client):
    body = sse({"type": "response.created", "response": RESP}, MSG, _delta("Half"))
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.StreamInterruptedError) as info:
        client.complete(MODEL, "x")
    assert info.value.partial.text == "Half"


def test_synthetic_builtin_tools_are_provider_events():
    d = proto.Decoder()
    out = d.feed(sse(
        {"type": "response.created", "response": RESP},
        {"type": "response.output_item.added", "output_index": 0, "item": {"id": "ci_1", "type": "code_interpreter_call"}},
        {"type": "response.code_interpreter_call_code.delta", "item_id": "ci_1", "output_index": 0, "delta": "print(1)"},
        {"type": "response.file_search_call.searching", "item_id": "fs_1", "output_index": 1},
        {"type": "response.output_item.done", "output_index": 0, "item": {"id": "ci_1", "type": "code_interpreter_call", "code": "print(1)"}},
        _end("response.completed", usage=USAGE),
    ))
    out += d.end()
    assert d.complete
    assert [type(e).__name__ for e in out] == ["StreamStart", "ProviderEvent", "ProviderEvent", "ProviderEvent", "UsageEvent", "Finish"]
    assert [e.kind for e in out if type(e) is ev.ProviderEvent] == [
        "code_interpreter_call_code.delta", "file_search_call.searching", "code_interpreter_call",
    ]


def test_decoder_malformed_chunk_is_reported():
    d = proto.Decoder()
    out = d.feed(b"event: response.output_text.delta\ndata: {not json\n\n")
    assert [e.kind for e in out] == ["malformed"]


def test_synthetic_error_event_without_code():
    d = proto.Decoder()
    (err,) = d.feed(sse({"type": "error", "code": None, "message": "Something broke", "param": None}))
    assert (err.message, err.code, err.kind) == ("Something broke", None, "provider")
    assert not d.complete
