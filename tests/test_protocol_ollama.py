"""Ollama protocol: every bundled recording replayed through the real HTTP path,
request bodies, /api/generate bodies, thinking and tool calls.

Cases marked "synthetic" are hand-written bodies, not recordings.
"""

from __future__ import annotations

import json

import pytest

import llmrelay
from llmrelay import events as ev
from llmrelay.messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from llmrelay.protocols.ollama import Decoder
from llmrelay.testing import Reply, read_recording, request_for, wire_recordings

from helpers import assemble

MODEL = "ollama:gemma3:1b"


def decode(body: bytes, size: int | None = None) -> tuple[list, Decoder]:
    d = Decoder()
    out: list = []
    if size is None:
        out += d.feed(body)
    else:
        for i in range(0, len(body), size):
            out += d.feed(body[i : i + size])
    out += d.end()
    return out, d


def ndjson(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def usage_of(r) -> tuple:
    u = r.usage
    return (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens, u.total_tokens, u.estimated)


COUNT_TEXT = "Okay, here we go!\n\n1, 2, 3, 4, 5\n"
REASONING_TEXT = (
    "Okay, let's break down 2 + 2:\n\n1. **Understand the Basics:** Addition is combining two things to get a total."
    "\n\n2. **Identify the Numbers:** We have two numbers: 2 and 2.\n\n3. **Perform the Addition:**  Simply add the "
    "numbers together: 2 + 2 = 4\n\n**Therefore, 2 + 2 = 4**\n\nLet me know if you'd like to try another math problem!"
)
LENGTH_TEXT = (
    "Hello there! I’m doing well, thanks for asking. As an AI, I don’t really *feel* in the same way humans do, "
    "but I’m functioning perfectly and ready to help you with whatever you need. 😊 "
)


def _chat_text_done_stop(r):
    assert r.text == COUNT_TEXT and r.parts == [TextPart(COUNT_TEXT)]
    assert (r.finish_reason, r.raw_finish_reason, r.status) == ("stop", "stop", "ok")
    assert usage_of(r) == (16, 22, None, None, 38, False)
    assert r.usage.raw == {
        "done_reason": "stop", "total_duration": 171946792, "load_duration": 38473250, "prompt_eval_count": 16,
        "prompt_eval_duration": 27608250, "eval_count": 22, "eval_duration": 105611917,
    }


def _chat_done_length(r):
    assert r.text == LENGTH_TEXT
    assert (r.finish_reason, r.raw_finish_reason, r.status) == ("length", "length", "truncated")
    assert usage_of(r) == (15, 50, None, None, 65, False)


def _chat_default_streaming_no_stream_key(r):
    # `think` was requested, but the model sent no `thinking` field: no reasoning
    assert r.text == REASONING_TEXT and r.reasoning == "" and len(r.parts) == 1
    assert (r.finish_reason, r.raw_finish_reason, r.status) == ("stop", "stop", "ok")
    assert usage_of(r) == (23, 102, None, None, 125, False)


def _generate_stream(r):
    assert r.text == COUNT_TEXT
    assert (r.finish_reason, r.raw_finish_reason, r.status) == ("stop", "stop", "ok")
    assert usage_of(r) == (16, 22, None, None, 38, False)
    assert "context" not in r.usage.raw  # the token array of /api/generate is never kept
    assert r.usage.raw["total_duration"] == 190084083


EXPECTED = {
    "ollama/chat_text_done_stop.ndjson": _chat_text_done_stop,
    "ollama/chat_done_length.ndjson": _chat_done_length,
    "ollama/chat_default_streaming_no_stream_key.ndjson": _chat_default_streaming_no_stream_key,
    "ollama/generate_stream.ndjson": _generate_stream,
}


def test_every_ollama_recording_is_covered():
    assert sorted(n for n in wire_recordings() if n.startswith("ollama/")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("chunking", ["random", "events", 3])
def test_recording_end_to_end(server, client, name, chunking):
    server.enqueue(Reply.recording(name, chunking=chunking))
    r = client.complete(MODEL, "hi")
    EXPECTED[name](r)
    assert (r.provider, r.model, r.requested_model, r.id) == ("ollama", "gemma3:1b", "gemma3:1b", None)
    sent = server.requests[0]
    assert sent.method == "POST" and sent.path == "/api/chat"


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recording_async(server, client, name):
    server.enqueue(Reply.recording(name))
    async with client.astream(MODEL, "hi") as s:
        r = await s.collect()
    EXPECTED[name](r)
    await client.aclose()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_any_split_decodes_the_same(name):
    body = read_recording(name)
    whole, d = decode(body)
    assert d.complete and not [e for e in whole if isinstance(e, ev.StreamError)]
    for size in (1, 2, 5, 64):
        assert decode(body, size)[0] == whole  # 1-byte reads split the UTF-8 of "’" and "😊"


def test_event_order_chat(server, client):
    server.enqueue(Reply.recording("ollama/chat_text_done_stop.ndjson", chunking="events"))
    with client.stream(MODEL, "hi") as s:
        events = list(s)
    assert events[0] == ev.StreamStart(None, "gemma3:1b")
    assert all(type(e) is ev.TextDelta for e in events[1:-2])
    assert events[1].text == "Okay" and events[2].text == ","
    assert events[-2] == ev.Finish("stop", "stop", 0)
    assert type(events[-1]) is ev.UsageEvent and events[-1].usage.output_tokens == 22
    # the final object's empty content adds no event
    assert len(events) == 1 + sum(1 for line in read_recording("ollama/chat_text_done_stop.ndjson").splitlines()
                                  if json.loads(line)["message"]["content"]) + 2


# -- requests ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_request_matches_recording(server, client, name):
    rec = request_for(name)
    server.enqueue(Reply.recording(name))
    messages = rec.get("messages") or [{"role": "user", "content": rec["prompt"]}]
    opts = rec.get("options", {})
    params = {}
    if "temperature" in opts:
        params["temperature"] = opts["temperature"]
    if "num_predict" in opts:
        params["max_tokens"] = opts["num_predict"]
    client.complete(MODEL, messages, **params)
    sent = server.requests[0]
    assert "authorization" in sent.headers  # client_for gives every provider a key
    body = sent.json
    assert body["model"] == rec["model"]
    assert body["messages"] == messages
    assert body["stream"] is True  # always explicit (the recorded request without it still streamed)
    assert body["options"] == {k: v for k, v in opts.items() if k in ("temperature", "num_predict")}


def test_request_exact_body_for_a_full_conversation(server, client):
    server.enqueue(Reply.recording("ollama/chat_text_done_stop.ndjson"))
    messages = [
        {"role": "system", "content": "Be brief."},
        Message.user("What is this?", ImagePart(data="QUJD", media_type="image/png")),
        Message("assistant", [
            ReasoningPart("Look it up."),
            TextPart("Checking."),
            ToolCall("call_0", "lookup", {"q": "cat"}),
            ToolCall("call_1", "weather", None, raw_arguments='{"city": "Paris"}'),
        ]),
        Message.tool("call_0", "a cat"),  # tool_name found from the call id
        Message.tool("call_1", "sunny", name="weather"),
        Message.tool("unknown", "?"),  # no name known: sent without tool_name
        {"role": "user", "content": "Thanks"},
    ]
    client.complete(MODEL, messages, temperature=0.2, max_tokens=100, top_p=0.9, stop=["END"], seed=7,
                    reasoning_effort="high")
    assert server.requests[0].json == {
        "model": "gemma3:1b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is this?", "images": ["QUJD"]},
            {"role": "assistant", "content": "Checking.", "thinking": "Look it up.", "tool_calls": [
                {"function": {"name": "lookup", "arguments": {"q": "cat"}}},
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
            ]},
            {"role": "tool", "content": "a cat", "tool_name": "lookup"},
            {"role": "tool", "content": "sunny", "tool_name": "weather"},
            {"role": "tool", "content": "?"},
            {"role": "user", "content": "Thanks"},
        ],
        "stream": True,
        "options": {"temperature": 0.2, "num_predict": 100, "top_p": 0.9, "stop": ["END"], "seed": 7},
        "think": "high",
    }


def test_request_without_key_has_no_auth_header(server):
    with llmrelay.Client(base_urls={"ollama": server.url}, env={}) as c:
        _, req, _, _ = c.prepare(MODEL, "Hi")
    assert "authorization" not in req.headers
    assert req.json == {"model": "gemma3:1b", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    assert req.url == server.url + "/api/chat" and req.headers["accept"] == "application/x-ndjson"


def test_request_with_key_is_bearer(client):
    _, req, _, _ = client.prepare(MODEL, "Hi", api_key="secret")
    assert req.headers["authorization"] == "Bearer secret"


@pytest.mark.parametrize("kwargs, think", [
    ({"reasoning_effort": "none"}, False),
    ({"reasoning_effort": "minimal"}, "low"),
    ({"reasoning_effort": "low"}, "low"),
    ({"reasoning_effort": "medium"}, "medium"),
    ({"reasoning_effort": "xhigh"}, "high"),
    ({"thinking_budget": 1024}, True),
    ({"thinking_budget": 0}, False),
])
def test_think(client, kwargs, think):
    _, req, _, _ = client.prepare(MODEL, "Hi", **kwargs)
    assert req.json["think"] == think


def test_image_url_is_a_clear_error(client):
    with pytest.raises(llmrelay.UnsupportedParameterError, match="base64"):
        client.prepare(MODEL, [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])


def test_n_is_unsupported(client):
    with pytest.raises(llmrelay.UnsupportedParameterError):
        client.prepare(MODEL, "Hi", n=2)


# -- synthetic streams -------------------------------------------------------------------
THINK_TOOLS = ndjson(
    {"model": "qwen3", "message": {"role": "assistant", "content": "", "thinking": "The user wants"}, "done": False},
    {"model": "qwen3", "message": {"role": "assistant", "content": "", "thinking": " the weather."}, "done": False},
    {"model": "qwen3", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}},
        {"id": "call_xyz", "function": {"index": 1, "name": "get_time", "arguments": {}}},
    ]}, "done": False},
    {"model": "qwen3", "message": {"role": "assistant", "content": ""}, "done_reason": "stop", "done": True,
     "prompt_eval_count": 40, "eval_count": 31, "total_duration": 5},
)


def test_synthetic_thinking_and_tool_calls(server, client):
    """Synthetic: `thinking` deltas, then two whole tool calls (arguments are objects)."""
    server.enqueue(Reply(THINK_TOOLS, headers={"content-type": "application/x-ndjson"}))
    r = client.complete("ollama:qwen3", "Weather in Paris?", reasoning_effort="low")
    reasoning, first, second = r.parts
    assert reasoning == ReasoningPart("The user wants the weather.")
    assert (first.id, first.name, first.arguments, first.error) == ("call_0", "get_weather", {"city": "Paris", "unit": "C"}, None)
    assert (second.id, second.name, second.arguments) == ("call_xyz", "get_time", {})
    assert (r.finish_reason, r.raw_finish_reason, r.status) == ("tool_calls", "stop", "ok")
    assert usage_of(r) == (40, 31, None, None, 71, False)
    # and the turn goes back with object arguments and thinking
    _, req, _, _ = client.prepare("ollama:qwen3", ["Weather in Paris?", r, Message.tool("call_0", "18C")])
    assert req.json["messages"][1:] == [
        {"role": "assistant", "content": "", "thinking": "The user wants the weather.", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}},
            {"function": {"name": "get_time", "arguments": {}}},
        ]},
        {"role": "tool", "content": "18C", "tool_name": "get_weather"},
    ]


async def test_synthetic_thinking_and_tool_calls_async(server, client):
    server.enqueue(Reply(THINK_TOOLS, chunking=1))
    async with client.astream("ollama:qwen3", "Weather?") as s:
        events = [e async for e in s]
        r = await s.collect()
    kinds = [type(e) for e in events]
    assert kinds == [ev.StreamStart, ev.ReasoningDelta, ev.ReasoningDelta,
                     ev.ToolCallStart, ev.ToolCallDelta, ev.ToolCallEnd,
                     ev.ToolCallStart, ev.ToolCallDelta, ev.ToolCallEnd, ev.Finish, ev.UsageEvent]
    assert [c.name for c in r.tool_calls] == ["get_weather", "get_time"]
    await client.aclose()


def test_synthetic_string_arguments_and_generate_thinking():
    """Synthetic: arguments sent as a JSON string still parse; /api/generate `thinking` is reasoning."""
    events, d = decode(ndjson(
        {"model": "m", "response": "", "thinking": "hmm", "done": False},
        {"model": "m", "response": "ok", "done": False},
        {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": '{"a": 1}'}}]}, "done": True, "done_reason": "stop"},
    ))
    r = assemble(events)
    assert (r.reasoning, r.text, r.tool_calls[0].arguments, r.finish_reason) == ("hmm", "ok", {"a": 1}, "tool_calls")
    assert d.complete and r.usage.input_tokens is None  # not reported: None, never 0


def test_synthetic_inline_think_tags():
    """Synthetic: a thinking model run without `think` puts `<think>…</think>` in the content."""
    events, _ = decode(ndjson(
        {"model": "deepseek-r1", "message": {"role": "assistant", "content": "<thi"}, "done": False},
        {"model": "deepseek-r1", "message": {"role": "assistant", "content": "nk>plan</th"}, "done": False},
        {"model": "deepseek-r1", "message": {"role": "assistant", "content": "ink>\n\nAnswer"}, "done": False},
        {"model": "deepseek-r1", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"},
    ))
    r = assemble(events)
    assert (r.reasoning, r.text) == ("plan", "\n\nAnswer")


def test_error_line_raises_with_partial(server, client):
    """Synthetic: Ollama reports mid-stream failures as an `{"error": "..."}` line."""
    body = ndjson({"model": "gemma3:1b", "message": {"role": "assistant", "content": "Par"}, "done": False},
                  {"error": "model runner has unexpectedly stopped"})
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.ProviderStreamError, match="unexpectedly stopped") as info:
        client.complete(MODEL, "hi")
    assert info.value.partial.text == "Par"


def test_truncated_stream_raises_with_partial(server, client):
    body = read_recording("ollama/chat_text_done_stop.ndjson")
    cut = body[: body.rindex(b'{"model"')]  # the final done:true object never arrives
    server.enqueue(Reply(cut))
    with pytest.raises(llmrelay.StreamInterruptedError) as info:
        client.complete(MODEL, "hi")
    assert info.value.partial.text == COUNT_TEXT
    assert info.value.partial.usage.estimated


def test_cut_mid_line_is_a_cut():
    body = read_recording("ollama/chat_text_done_stop.ndjson")
    events, d = decode(body[: body.rindex(b'"done_reason"')])
    assert d.cut and not d.complete
    assert assemble(events).text == COUNT_TEXT


def test_malformed_line():
    events, _ = decode(b'{"model": "m", "message": {"content": "a"}, "done": false}\nnot json\n')
    assert events[-1].kind == "malformed"
    events, _ = decode(b"[1, 2]\n")
    assert events[0].kind == "malformed"
    events, _ = decode(b'{"model": "m", "message": "not an object", "done": false}\n')  # an unexpected shape
    assert [type(e) for e in events] == [ev.StreamStart, ev.StreamError] and events[1].kind == "malformed"


def test_unknown_done_reason_is_stop():
    events, _ = decode(ndjson({"model": "m", "message": {"content": ""}, "done": True, "done_reason": "load"}))
    assert events[-2] == ev.Finish("stop", "load", 0)


WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_tools(client):
    _, req, _, _ = client.prepare(MODEL, "Weather?", tools=[WEATHER], tool_choice="auto")
    assert req.json["tools"] == [{"type": "function", "function": WEATHER}]
    _, req, _, _ = client.prepare(MODEL, "Weather?", tools=[WEATHER], tool_choice="none")
    assert "tools" not in req.json  # Ollama has no tool_choice: "none" means no tools offered
    for choice in ("required", "get_weather"):
        with pytest.raises(llmrelay.UnsupportedParameterError, match="tool_choice"):
            client.prepare(MODEL, "Weather?", tools=[WEATHER], tool_choice=choice)
