"""Gemini protocol: every bundled recording replayed through the real HTTP path,
request bodies, the JSON-array / SSE sniffing, signatures, usage and finish rules.

Cases marked "synthetic" are hand-written bodies, not recordings.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import llmrelay
from llmrelay import events as ev
from llmrelay.messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from llmrelay.protocols import gemini
from llmrelay.protocols.gemini import Decoder
from llmrelay.testing import Reply, read_recording, request_for, wire_recordings

from helpers import assemble

MODEL = "gemini:gemini-2.5-flash"
PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
PAYLOADS = Path(__file__).parent / "payloads" / "gemini"


def chunks(name: str) -> list[dict]:
    """An independent reading of a recording (oracle for exact values such as signatures)."""
    body = read_recording(name)
    if name.endswith(".json"):
        return json.loads(body)
    return [json.loads(e[len(b"data: "):]) for e in body.split(b"\r\n\r\n") if e.strip()]


def sig(name: str, chunk: int, part: int) -> str:
    return chunks(name)[chunk]["candidates"][0]["content"]["parts"][part]["thoughtSignature"]


def decode(body: bytes, sizes=None) -> tuple[list, Decoder]:
    d = Decoder()
    out: list = []
    if sizes is None:
        out += d.feed(body)
    else:
        pos = 0
        rng = random.Random(7)
        while pos < len(body):
            n = sizes if isinstance(sizes, int) else rng.randint(1, 40)
            out += d.feed(body[pos : pos + n])
            pos += n
    out += d.end()
    return out, d


def usage_of(r) -> tuple:
    u = r.usage
    return (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens, u.total_tokens, u.estimated)


GEMINI_FILES = [n for n in wire_recordings() if n.startswith("gemini/")]


def test_every_gemini_recording_is_covered():
    assert sorted(GEMINI_FILES) == sorted(EXPECTED)


# -- every recording, end to end --------------------------------------------------
def _text_sse(r):
    assert r.text == "The capital of France is Paris.\n"
    assert r.parts == [TextPart("The capital of France is Paris.\n")]
    assert r.reasoning == "" and r.tool_calls == []
    assert (r.id, r.model) == ("w1peaMz6INOvnvgPgYfPiQY", "gemini-2.0-flash-exp")
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    # promptTokenCount goes 15 -> 13: the last value wins, never the max or the sum
    assert usage_of(r) == (13, 8, None, None, 21, False)


def _function_call_sse(r):
    assert r.text == "" and r.reasoning == ""
    [call] = r.tool_calls
    assert (call.name, call.arguments, call.error, call.signature) == ("get_capital", {"country": "France"}, None, None)
    assert call.id == gemini.SYNTHETIC_ID_PREFIX + "0" == "gemini-call-0"  # Gemini sent no id: a synthetic one (never sent back)
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "STOP")
    assert usage_of(r) == (52, 5, None, None, 57, False)
    assert r.model == "gemini-2.0-flash"


def _function_call_thought_signature_sse(r):
    name = "gemini/function_call_thought_signature_sse.sse"
    [call] = r.tool_calls
    assert r.parts == [call]  # the trailing empty text part adds nothing
    assert (call.name, call.arguments, call.raw_arguments) == ("get_country", {}, "{}")
    assert call.signature == sig(name, 0, 0) and call.signature.startswith("EpwICpkIAXLI2nxl")
    # the functionCall chunk has no finishReason; the later text chunk's STOP becomes tool_calls
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "STOP")
    assert usage_of(r) == (29, 10 + 202, None, 202, 241, False)
    assert r.model == "gemini-3-pro-preview"


def _code_execution_sse(r):
    name = "gemini/code_execution_sse.sse"
    text = "The result of $65465 - 6544 \\times 65464 - 6 + 1.02255$ is **-428,330,955.97745**."
    # the final empty text part carries the signature: it lands on the text part
    assert r.parts == [TextPart(text, sig(name, 5, 0))]
    assert r.tool_calls == []  # code execution is server-side, never a caller tool call
    kinds = [(e.kind, e.choice) for e in r.provider_events]
    assert kinds == [("executableCode", 0), ("codeExecutionResult", 0)]
    code = r.provider_events[0].data
    assert code["executableCode"]["code"] == "result = 65465 - 6544 * 65464 - 6 + 1.02255\nprint(result)"
    assert code["thoughtSignature"] == sig(name, 0, 0)  # kept with the code part
    assert r.provider_events[1].data["codeExecutionResult"]["output"] == "-428330955.97745\n"
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    # input = prompt 147 + toolUsePrompt 360; output = candidates 108 + thoughts 168; total 783
    assert usage_of(r) == (507, 276, None, 168, 783, False)
    assert r.usage.raw["toolUsePromptTokenCount"] == 360


def _vertex_flex_sse(r):
    name = "gemini/vertex_flex_sse.sse"
    assert r.parts == [TextPart("OK", sig(name, 0, 0))]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    assert usage_of(r) == (5, 101, None, 100, 106, False)
    assert r.usage.raw["trafficType"] == "ON_DEMAND_FLEX"
    assert (r.id, r.model) == ("a9--aa6MOKL4vdIPz7X2iQ4", "gemini-3-flash-preview")


def _json_array_thought_function_call(r):
    name = "gemini/json_array_thought_function_call.json"
    reasoning, call = r.parts
    assert isinstance(reasoning, ReasoningPart) and reasoning.signature is None
    assert reasoning.text == chunks(name)[0]["candidates"][0]["content"]["parts"][0]["text"]
    assert reasoning.text.startswith("**Generating Pelican Names**\n\nOkay, I'm thinking")
    assert reasoning.text.endswith("It's a quick plan.\n\n\n") and len(reasoning.text) == 236
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("pelican_name_generator", {})
    assert call.signature == sig(name, 1, 0) and call.signature.endswith("Nm5AKlk=")
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "STOP")
    assert usage_of(r) == (32, 12 + 42, None, 42, 86, False)
    assert r.usage.raw["serviceTier"] == "standard"
    assert r.model == "gemini-2.5-flash"


def _json_array_text_thoughts(r):
    name = "gemini/json_array_text_thoughts.json"
    reasoning, text = r.parts
    assert isinstance(reasoning, ReasoningPart) and reasoning.signature is None
    assert reasoning.text.startswith("**Considering the Constraint**\n\nI'm focusing intently")
    assert reasoning.text.endswith("This constraint is paramount.\n\n\n") and len(reasoning.text) == 275
    assert text == TextPart("Scoop", sig(name, 2, 0))
    assert r.text == "Scoop"
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    assert usage_of(r) == (11, 2 + 291, None, 291, 304, False)


def _json_array_enum_int_crlf(r):
    assert r.text.startswith("Clementine, a calico with a perpetually grumpy face, considered herself")
    assert r.text.endswith("she wasn't quite as grumpy as she thought she was.\n")
    assert len(r.text) == 2580 and len(r.parts) == 1
    # `finishReason: 1` (enum-encoding=int) is STOP; the raw reason is reported by name
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    assert usage_of(r) == (8, 578, None, None, 586, False)  # prompt 9 ... 9 -> 8: the last wins


def _thought_parts_sse(r):
    name = "gemini/thought_parts_sse.sse"
    reasoning, first, rest = r.parts
    assert isinstance(reasoning, ReasoningPart) and reasoning.signature is None
    assert reasoning.text.startswith("**Clarifying User Goals**\n\nI'm currently focused")
    assert "**Developing a Safety Protocol**" in reasoning.text and "**Crafting Safe Instructions**" in reasoning.text
    assert reasoning.text.endswith("regardless of specific circumstances or locations.\n\n\n")
    assert len(reasoning.text) == 1575
    # the signature rides on the first answer part and closes it; the rest is a new part
    assert first.signature == sig(name, 4, 0) and first.text.startswith("This is a great question!")
    assert len(first.text) == 117 and rest.signature is None
    assert r.text.endswith("be predictable**. Always assume a driver might not see you.")
    assert len(r.text) == 1938
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    assert usage_of(r) == (34, 469 + 787, None, 787, 1290, False)


EXPECTED = {
    "gemini/text_sse.sse": _text_sse,
    "gemini/function_call_sse.sse": _function_call_sse,
    "gemini/function_call_thought_signature_sse.sse": _function_call_thought_signature_sse,
    "gemini/code_execution_sse.sse": _code_execution_sse,
    "gemini/vertex_flex_sse.sse": _vertex_flex_sse,
    "gemini/json_array_thought_function_call.json": _json_array_thought_function_call,
    "gemini/json_array_text_thoughts.json": _json_array_text_thoughts,
    "gemini/json_array_enum_int_crlf.json": _json_array_enum_int_crlf,
    "gemini/thought_parts_sse.sse": _thought_parts_sse,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("chunking", ["random", "events", 1])
def test_recording_end_to_end(server, client, name, chunking):
    server.enqueue(Reply.recording(name, chunking=chunking))
    r = client.complete(MODEL, "hi")
    assert r.status == "ok" and r.error is None
    assert r.provider == "gemini" and r.requested_model == "gemini-2.5-flash"
    EXPECTED[name](r)
    assert server.requests[0].path == PATH


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recording_async(server, client, name):
    server.enqueue(Reply.recording(name))
    async with client.astream(MODEL, "hi") as s:
        r = await s.collect()
    assert r.status == "ok"
    EXPECTED[name](r)
    await client.aclose()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_any_split_decodes_the_same(name):
    body = read_recording(name)
    whole, d = decode(body)
    assert d.complete and not d.cut
    assert not [e for e in whole if isinstance(e, ev.StreamError)]
    for sizes in (1, 2, 7, "random"):
        assert decode(body, sizes)[0] == whole
    # a split between \r and \n and inside multi-byte UTF-8 (the story has "…")
    i = body.index(b"\r\n") + 1
    d2 = Decoder()
    assert d2.feed(body[:i]) + d2.feed(body[i:]) + d2.end() == whole


def test_event_order_text_sse(server, client):
    server.enqueue(Reply.recording("gemini/text_sse.sse", chunking="events"))
    with client.stream(MODEL, "hi") as s:
        events = list(s)
    assert [type(e) for e in events] == [
        ev.StreamStart, ev.TextDelta, ev.UsageEvent,  # chunk 1
        ev.TextDelta,  # chunk 2: usage unchanged, not repeated
        ev.TextDelta, ev.Finish, ev.UsageEvent,  # chunk 3
    ]
    assert events[0] == ev.StreamStart("w1peaMz6INOvnvgPgYfPiQY", "gemini-2.0-flash-exp")
    assert [e.text for e in events if isinstance(e, ev.TextDelta)] == ["The", " capital of France", " is Paris.\n"]
    assert events[2].usage.input_tokens == 15 and events[2].usage.output_tokens is None
    assert events[5] == ev.Finish("stop", "STOP", 0)
    assert events[6].usage.input_tokens == 13


def test_event_order_thought_function_call():
    events, _ = decode(read_recording("gemini/json_array_thought_function_call.json"))
    assert [type(e) for e in events] == [
        ev.StreamStart, ev.ReasoningDelta, ev.UsageEvent,
        ev.ToolCallStart, ev.ToolCallDelta, ev.ToolCallEnd, ev.Finish, ev.UsageEvent,
    ]
    start, end = events[3], events[5]
    assert (start.index, start.name, start.signature) == (0, "pelican_name_generator", end.signature)
    assert (end.arguments, end.raw_arguments, end.error) == ({}, "{}", None)


# -- requests ------------------------------------------------------------------------
def _recorded_call(name: str) -> tuple[list, dict, dict]:
    """The messages / params / extra_body that reproduce a recorded request."""
    rec = request_for(name)
    messages: list = []
    if "systemInstruction" in rec:
        messages.append({"role": "system", "content": rec["systemInstruction"]["parts"][0]["text"]})
    for c in rec["contents"]:
        messages.append({"role": "user", "content": c["parts"][0]["text"]})
    cfg = rec.get("generationConfig", {})
    params: dict = {}
    if "temperature" in cfg:
        params["temperature"] = cfg["temperature"]
    if "maxOutputTokens" in cfg:
        params["max_tokens"] = cfg["maxOutputTokens"]
    if "topP" in cfg:
        params["top_p"] = cfg["topP"]
    if "candidateCount" in cfg:
        params["n"] = cfg["candidateCount"]
    extra = {k: rec[k] for k in ("tools", "safetySettings") if k in rec}
    if set(cfg) - {"temperature", "maxOutputTokens", "topP", "candidateCount"}:
        extra["generationConfig"] = cfg  # fields llmrelay has no parameter for (responseModalities, ...)
    return messages, params, extra


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_request_matches_recording(server, client, name):
    server.enqueue(Reply.recording(name))
    messages, params, extra = _recorded_call(name)
    if "topK" in request_for(name).get("generationConfig", {}):
        extra.pop("generationConfig")  # compare the fields we do encode (topK has no parameter)
    client.complete(MODEL, messages, extra_body=extra or None, **params)
    sent = server.requests[0]
    assert sent.method == "POST" and sent.path == PATH
    assert sent.headers["x-goog-api-key"] == "test-key"
    assert "authorization" not in sent.headers
    rec = request_for(name)
    expected = {k: rec[k] for k in ("contents", "systemInstruction", "generationConfig", "tools", "safetySettings") if k in rec}
    if "systemInstruction" in expected:  # Gemini takes the instruction without a role
        expected["systemInstruction"] = {"parts": expected["systemInstruction"]["parts"]}
    if expected.get("generationConfig") == {}:
        del expected["generationConfig"]
    if "topK" in expected.get("generationConfig", {}):
        expected["generationConfig"] = {k: v for k, v in expected["generationConfig"].items() if k != "topK"}
    assert sent.json == expected


def test_request_exact_body_for_a_full_conversation(server, client):
    server.enqueue(Reply.recording("gemini/text_sse.sse"))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]},
        Message("assistant", [
            ReasoningPart("I should look it up.", signature="sig-thought"),
            ReasoningPart("unsigned summary"),  # dropped: Gemini never needs it back
            TextPart("Let me check.", signature="sig-text"),
            ToolCall("gemini-call-0", "lookup", {"q": "cat"}, signature="sig-call"),
            ToolCall("call_abc", "weather", None, raw_arguments='{"city": "Paris"}'),
        ]),
        Message.tool("gemini-call-0", "a cat"),  # name found from the call id
        Message.tool("call_abc", "sunny", name="weather"),
        {"role": "user", "content": "Thanks"},
    ]
    client.complete(MODEL, messages, temperature=0.2, max_tokens=100, top_p=0.9, stop=["END"], seed=7, n=2,
                    thinking_budget=512)
    assert server.requests[0].json == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "What is in these?"},
                {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}},
                {"fileData": {"fileUri": "https://example.com/cat.png", "mimeType": "image/png"}},
            ]},
            {"role": "model", "parts": [
                {"text": "I should look it up.", "thought": True, "thoughtSignature": "sig-thought"},
                {"text": "Let me check.", "thoughtSignature": "sig-text"},
                {"functionCall": {"name": "lookup", "args": {"q": "cat"}}, "thoughtSignature": "sig-call"},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "call_abc"}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"result": "a cat"}}},
                {"functionResponse": {"name": "weather", "response": {"result": "sunny"}, "id": "call_abc"}},
            ]},
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ],
        "generationConfig": {
            "temperature": 0.2, "maxOutputTokens": 100, "topP": 0.9, "stopSequences": ["END"], "seed": 7,
            "candidateCount": 2, "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True},
        },
    }


def test_request_minimal_and_headers(client):
    _, req, _, _ = client.prepare(MODEL, "Hi")
    assert req.json == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert req.url.endswith(PATH)
    assert req.headers["x-goog-api-key"] == "test-key"
    _, req, _, _ = client.prepare(MODEL, "Hi", api_key="k2", extra_headers={"x-extra": "1"})
    assert (req.headers["x-goog-api-key"], req.headers["x-extra"]) == ("k2", "1")


@pytest.mark.parametrize("effort, config", [
    ("minimal", {"thinkingLevel": "minimal", "includeThoughts": True}),
    ("low", {"thinkingLevel": "low", "includeThoughts": True}),
    ("medium", {"thinkingLevel": "medium", "includeThoughts": True}),
    ("high", {"thinkingLevel": "high", "includeThoughts": True}),
    ("xhigh", {"thinkingLevel": "high", "includeThoughts": True}),
    ("none", {"thinkingBudget": 0}),
])
def test_reasoning_effort(client, effort, config):
    _, req, _, _ = client.prepare(MODEL, "Hi", reasoning_effort=effort)
    assert req.json["generationConfig"] == {"thinkingConfig": config}


def test_thinking_budget_zero_and_conflicts(client):
    _, req, _, _ = client.prepare(MODEL, "Hi", thinking_budget=0)
    assert req.json["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}}
    with pytest.raises(llmrelay.InvalidRequestError, match="not both"):
        client.prepare(MODEL, "Hi", thinking_budget=100, reasoning_effort="low")


def test_model_paths(client):
    _, req, _, _ = client.prepare("gemini:tunedModels/my-model", "Hi")
    assert req.url.endswith("/v1beta/tunedModels/my-model:streamGenerateContent?alt=sse")


def test_tool_result_without_a_name_is_a_clear_error(client):
    with pytest.raises(llmrelay.InvalidRequestError, match="function name"):
        client.prepare(MODEL, [{"role": "tool", "tool_call_id": "nope", "content": "x"}])


def test_response_round_trip_keeps_signatures(server, client):
    """The assembled response goes back as the next turn with every signature in place."""
    server.enqueue(Reply.recording("gemini/json_array_thought_function_call.json"))
    r = client.complete(MODEL, "Two names for a pet pelican")
    call = r.tool_calls[0]
    _, req, _, _ = client.prepare(MODEL, ["Two names for a pet pelican", r, Message.tool(call.id, "Pelly")])
    assert req.json["contents"][1:] == [
        {"role": "model", "parts": [
            {"functionCall": {"name": "pelican_name_generator", "args": {}}, "thoughtSignature": call.signature},
        ]},
        {"role": "user", "parts": [{"functionResponse": {"name": "pelican_name_generator", "response": {"result": "Pelly"}}}]},
    ]
    server.enqueue(Reply.recording("gemini/thought_parts_sse.sse"))
    r = client.complete(MODEL, "How do I cross the street?")
    _, req, _, _ = client.prepare(MODEL, ["How do I cross the street?", r])
    model_parts = req.json["contents"][1]["parts"]
    assert model_parts[0] == {"text": r.parts[1].text, "thoughtSignature": r.parts[1].signature}
    assert model_parts[1] == {"text": r.parts[2].text}
    assert len(model_parts) == 2  # the unsigned thought summary is not sent back


# -- interrupted, errors, synthetic cases ----------------------------------------------
def _sse(*objs) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\r\n\r\n" for o in objs)


def test_truncated_stream_raises_with_partial_text(server, client):
    body = read_recording("gemini/text_sse.sse")
    cut = body[: body.rindex(b"data: ")]  # no finishReason ever arrives
    server.enqueue(Reply(cut, headers={"content-type": "text/event-stream"}))
    with pytest.raises(llmrelay.StreamInterruptedError) as info:
        client.complete(MODEL, "hi")
    assert info.value.partial.text == "The capital of France"
    assert info.value.partial.status == "error"
    assert info.value.partial.usage.input_tokens == 15


async def test_truncated_stream_async_mid_event(server, client):
    body = read_recording("gemini/json_array_text_thoughts.json")
    cut = body[: body.index(b'"Scoop"') + 4]  # cut inside the second element
    server.enqueue(Reply(cut, headers={"content-type": "application/json"}))
    with pytest.raises(llmrelay.StreamInterruptedError, match="in the middle of an event") as info:
        async with client.astream(MODEL, "hi") as s:
            await s.collect()
    assert info.value.partial.reasoning.startswith("**Considering the Constraint**")
    assert info.value.partial.text == ""
    await client.aclose()


def test_error_object_in_stream_keeps_partial(server, client):
    """Synthetic: an error chunk after some text (Gemini sends `{"error": {...}}`)."""
    body = _sse(
        {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}], "responseId": "r1"},
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
    )
    server.enqueue(Reply(body))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        client.complete(MODEL, "hi")
    assert (info.value.code, info.value.status_code) == ("UNAVAILABLE", 503)
    assert "overloaded" in str(info.value)
    assert info.value.partial.text == "Hel"


def test_bare_json_error_body():
    """Synthetic: a 200 body that is one JSON object, not an array or SSE."""
    events, d = decode(b'{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}\n')
    assert events == [ev.StreamError("bad", code="INVALID_ARGUMENT", status=400,
                                     data={"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"})]
    assert not d.complete


def test_prompt_blocked_is_content_filter(server, client):
    """Synthetic: promptFeedback.blockReason and no candidates."""
    server.enqueue(Reply(_sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                               "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}})))
    r = client.complete(MODEL, "hi")
    assert (r.finish_reason, r.raw_finish_reason, r.text, r.status) == ("content_filter", "PROHIBITED_CONTENT", "", "ok")
    assert r.usage.input_tokens == 7  # no candidatesTokenCount: the stream layer estimates the output
    events, _ = decode(_sse({"promptFeedback": {"blockReason": 1}}))  # enum-encoding=int
    assert events[-1] == ev.Finish("content_filter", "SAFETY", 0)


@pytest.mark.parametrize("reason, norm, raw", [
    ("MAX_TOKENS", "length", "MAX_TOKENS"), (2, "length", "MAX_TOKENS"),
    ("SAFETY", "content_filter", "SAFETY"), (3, "content_filter", "SAFETY"),
    ("RECITATION", "content_filter", "RECITATION"), (4, "content_filter", "RECITATION"),
    ("BLOCKLIST", "content_filter", "BLOCKLIST"), (7, "content_filter", "BLOCKLIST"),
    ("PROHIBITED_CONTENT", "content_filter", "PROHIBITED_CONTENT"), (8, "content_filter", "PROHIBITED_CONTENT"),
    ("SPII", "content_filter", "SPII"), (9, "content_filter", "SPII"),
    ("MALFORMED_FUNCTION_CALL", "error", "MALFORMED_FUNCTION_CALL"), (10, "error", "MALFORMED_FUNCTION_CALL"),
    ("OTHER", "error", "OTHER"), (5, "error", "OTHER"), (99, "error", "99"),
])
def test_finish_reason_mapping(reason, norm, raw):
    """Synthetic bodies; integers follow google.ai.generativelanguage.v1beta Candidate.FinishReason."""
    events, d = decode(_sse({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}))
    assert events[-1] == ev.Finish(norm, raw, 0) and d.complete


def test_max_tokens_is_truncated_status(server, client):
    server.enqueue(Reply(_sse({"candidates": [{"content": {"parts": [{"text": "abc"}]}, "finishReason": "MAX_TOKENS"}],
                               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5}})))
    r = client.complete(MODEL, "hi", max_tokens=5)
    assert (r.status, r.finish_reason, r.text) == ("truncated", "length", "abc")


def test_two_candidates():
    """Synthetic: n=2, candidates interleaved by `index`."""
    body = _sse(
        {"candidates": [{"content": {"parts": [{"text": "A"}]}, "index": 0},
                        {"content": {"parts": [{"text": "B"}]}, "index": 1}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}]}, "index": 1,
                         "finishReason": "STOP"}]},
        {"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0, "finishReason": "STOP"}]},
    )
    events, d = decode(body)
    r = assemble(events)
    assert d.complete
    assert (r.choices[0].text, r.choices[0].finish_reason) == ("Aa", "stop")
    assert (r.choices[1].text, r.choices[1].finish_reason) == ("B", "tool_calls")
    assert r.choices[1].tool_calls[0].arguments == {"x": 1}
    assert r.choices[1].tool_calls[0].id == "gemini-call-1-0"


def test_vertex_partial_args_assemble():
    """Payloads from tests/payloads (real Vertex data); the SSE framing around them is synthetic."""
    lines = (PAYLOADS / "vertex_streamed_function_call_partial_args.chunks.jsonl").read_bytes().splitlines()
    body = b"".join(b"data: " + line + b"\r\n\r\n" for line in lines if line.strip())
    events, d = decode(body)
    for sizes in (1, 5, "random"):
        assert decode(body, sizes)[0] == events
    r = assemble(events)
    assert d.complete and (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "STOP")
    first, second = r.tool_calls
    assert (first.name, first.arguments, first.id) == ("getWeather", {"location": "Boston"}, "gemini-call-0")
    assert first.signature == json.loads(lines[0])["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert (second.name, second.arguments, second.signature) == ("getWeather", {"location": "San Francisco"}, None)
    assert first.error is None and second.error is None
    assert [type(e).__name__ for e in events if isinstance(e, (ev.ToolCallStart, ev.ToolCallDelta, ev.ToolCallEnd))] == [
        "ToolCallStart", "ToolCallDelta", "ToolCallEnd", "ToolCallStart", "ToolCallDelta", "ToolCallEnd"]
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.reasoning_tokens) == (26, 23 + 132, 132)


def test_partial_args_nested_paths_and_types():
    """Synthetic: string continuation, numbers, booleans, nulls, nested objects and list items."""
    body = _sse(
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "book", "willContinue": True}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"willContinue": True, "partialArgs": [
            {"jsonPath": "$.trip.city", "stringValue": "New ", "willContinue": True},
            {"jsonPath": "$.trip.city", "stringValue": "York"},
            {"jsonPath": "$.trip.nights", "numberValue": 3},
            {"jsonPath": "$.guests[1].name", "stringValue": "Bo"},
            {"jsonPath": "$.guests[0]['name']", "stringValue": "Al"},
            {"jsonPath": "$.late", "boolValue": False},
            {"jsonPath": "$.note", "nullValue": "NULL_VALUE"},
        ]}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {}}]}, "finishReason": "STOP"}]},
    )
    r = assemble(decode(body)[0])
    assert r.tool_calls[0].arguments == {
        "trip": {"city": "New York", "nights": 3},
        "guests": [{"name": "Al"}, {"name": "Bo"}],
        "late": False,
        "note": None,
    }


def test_partial_call_cut_by_finish_is_closed():
    """Synthetic: the finish arrives while a streamed call is open: the call is closed with what came."""
    body = _sse(
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "willContinue": True}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"willContinue": True, "partialArgs": [
            {"jsonPath": "$.a", "stringValue": "x", "willContinue": True}]}}]}, "finishReason": "MAX_TOKENS"}]},
    )
    r = assemble(decode(body)[0])
    assert r.tool_calls[0].arguments == {"a": "x"} and r.finish_reason == "length"


def test_sniffing_ignores_leading_whitespace_and_empty_feeds():
    body = read_recording("gemini/json_array_text_thoughts.json")
    d = Decoder()
    events = d.feed(b"") + d.feed(b"\r\n  ") + d.feed(body) + d.end()
    assert assemble(events).text == "Scoop" and d.complete
    d = Decoder()
    assert d.end() == [] and not d.complete  # empty body: interrupted, never a crash


def test_garbage_body_is_malformed_not_a_crash():
    events, d = decode(b"[ 42 ]")
    assert [type(e) for e in events] == [ev.StreamError] and events[0].kind == "malformed"
    events, _ = decode(b"data: not json\r\n\r\n")
    assert events[0].kind == "malformed"
    events, _ = decode(_sse({"candidates": ["not an object"]}))  # an unexpected shape: reported, never raised
    assert [type(e) for e in events] == [ev.StreamStart, ev.StreamError] and events[1].kind == "malformed"


def test_unknown_parts_and_metadata_become_provider_events():
    """Synthetic: an inline image output part and grounding metadata."""
    body = _sse({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "QQ=="}}]},
                                 "groundingMetadata": {"webSearchQueries": ["q"]}, "finishReason": "STOP"}]})
    r = assemble(decode(body)[0])
    assert [(e.kind, e.data) for e in r.provider_events] == [
        ("inlineData", {"inlineData": {"mimeType": "image/png", "data": "QQ=="}}),
        ("groundingMetadata", {"webSearchQueries": ["q"]}),
    ]
    assert r.parts == [] and r.finish_reason == "stop"



WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


@pytest.mark.parametrize("choice, config", [
    (None, None),
    ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
    ("none", {"functionCallingConfig": {"mode": "NONE"}}),
    ("required", {"functionCallingConfig": {"mode": "ANY"}}),
    ("get_weather", {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
])
def test_tools_and_tool_choice(client, choice, config):
    kwargs = {"tools": [WEATHER]} if choice is None else {"tools": [WEATHER], "tool_choice": choice}
    _, req, _, _ = client.prepare(MODEL, "Weather in Paris?", **kwargs)
    assert req.json["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city.", "parametersJsonSchema": WEATHER["parameters"]}]}]
    assert req.json.get("toolConfig") == config
