"""Structured output (`output=`), end to end over real HTTP (replay server on 127.0.0.1), sync and async.

- The exact request body of each protocol's native mechanism (and of the fallbacks:
  JSON mode + instruction, a forced output tool, a prompt).
- Real recordings: `openai_chat/json_object_long.sse` (response_format json_object,
  ~47 KB of small deltas), `refusal.sse` / `refusal_with_logprobs.sse` (structured-output
  refusals), `n3_multiple_choices.sse` (n=3, JSON in every choice).
- SYNTHETIC streams (built by the `synthetic_*` helpers, labelled so) for what no
  recording has: Anthropic's forced tool (JSON as `input_json_delta`), Gemini, Ollama
  (`format`), Cohere, OpenAI Responses, bad answers for `output_retries`, the tool loop,
  fallback.
- Partial objects are checked at every chunk boundary: after each text delta, the
  partial shown is exactly what the text so far can be read as, each partial is a
  prefix-consistent view of the final object, and nothing handed out is mutated later.
- Lists stream item by item (`OutputItem`, once each, validated, when complete).
- Property test: random JSON documents split at random points through the observer.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional

import pytest

from helpers import collect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

import llmrelay
from llmrelay import Finish, RefusalDelta, Reset, TextDelta, ToolCallStart, ToolResult
from llmrelay.errors import (
    InvalidRequestError,
    OutputRefusedError,
    OutputValidationError,
    StructuredOutputValidationError,
)
from llmrelay.events import FallbackEvent, OutputItem, PartialOutput
from llmrelay.structured.partial_json import MISSING, PartialJSONParser
from llmrelay.providers import PROVIDERS
from llmrelay.structured import OutputSpec, mode_for
from llmrelay.structured.plan import _Watcher
from llmrelay.testing import Reply


# -- types ----------------------------------------------------------------------------------------
class Weather(BaseModel):
    """The weather in a city."""

    city: str
    temperature: int
    units: Literal["c", "f"]


class Current(BaseModel):
    temperature: str
    condition: str
    humidity: str
    windSpeed: str
    windDirection: str


class Day(BaseModel):
    day: str
    high: str
    low: str
    condition: str


class Report(BaseModel):
    location: str
    weather: Current
    forecast: list[Day]


class Item(BaseModel):
    name: str
    qty: int = 1
    note: Optional[str] = None


@dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


WEATHER_SCHEMA = {  # pydantic's key order (the instruction text embeds it)
    "description": "The weather in a city.",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "integer"},
                   "units": {"enum": ["c", "f"], "type": "string"}},
    "required": ["city", "temperature", "units"],
    "type": "object",
}
WEATHER_STRICT = {**WEATHER_SCHEMA, "additionalProperties": False}
QUESTION = "What is the weather in San Francisco?"
USER = [{"role": "user", "content": QUESTION}]


# -- driving --------------------------------------------------------------------------------------
run = collect  # every event and the final response (exceptions propagate)


async def run_until_error(client, mode: str, model: Any, messages: Any, **kw: Any) -> tuple[list, BaseException]:
    events: list = []
    with pytest.raises(llmrelay.LLMRelayError) as info:
        if mode == "sync":
            for e in client.stream(model, messages, **kw):
                events.append(e)
        else:
            async for e in client.astream(model, messages, **kw):
                events.append(e)
    return events, info.value


async def complete(client, mode: str, model: Any, messages: Any, **kw: Any):
    if mode == "sync":
        return client.complete(model, messages, **kw)
    return await client.acomplete(model, messages, **kw)


def view(value: Any, wrap: str | None) -> Any:
    if wrap is None or value is MISSING:
        return value
    return value.get(wrap, MISSING) if isinstance(value, dict) else value


def consistent(before: Any, after: Any) -> bool:
    """`after` extends `before`: complete values unchanged, strings and containers only grow."""
    if before is MISSING:
        return True
    if isinstance(before, dict):
        return isinstance(after, dict) and all(k in after and consistent(v, after[k]) for k, v in before.items())
    if isinstance(before, list):
        if not isinstance(after, list) or len(after) < len(before):
            return False
        return not before or (before[:-1] == after[: len(before) - 1] and consistent(before[-1], after[len(before) - 1]))
    if isinstance(before, str):
        return isinstance(after, str) and after.startswith(before)
    return type(before) is type(after) and before == after


def check_partials(events: list, final: Any, *, choice: int = 0, wrap: str | None = None, lenient: bool = False) -> list:
    """At every chunk boundary (each answer TextDelta): the partial that follows it, if any, is
    exactly what the text so far reads as; if none follows, what it reads as did not change.
    Every partial extends the one before and the final value; the last one is the final value;
    none was mutated after it was handed out (`events` holds them as they were yielded)."""
    text = ""
    shown: Any = MISSING
    partials = []
    for i, e in enumerate(events):
        if type(e) is TextDelta and e.choice == choice:
            text += e.text
            p = PartialJSONParser(lenient=lenient)
            try:
                p.feed(text)
                now = view(p.snapshot(), wrap)
            except ValueError:
                now = shown
            nxt = events[i + 1] if i + 1 < len(events) else None
            if type(nxt) is PartialOutput and nxt.choice == choice:
                assert nxt.value == now, (text, nxt.value, now)
                assert consistent(shown, nxt.value), (shown, nxt.value)
                shown = nxt.value
                partials.append(nxt.value)
            else:
                assert now == shown or now is MISSING, (text, now, shown)
        elif type(e) is PartialOutput and e.choice == choice:
            assert type(events[i - 1]) in (TextDelta, PartialOutput), "a partial always follows its chunk"
    assert partials, "no partial output at all"
    assert partials[-1] == final
    for p in partials:
        assert consistent(p, final)
    return partials


def frozen_copies(stream_events):
    """Iterate a stream keeping a deep copy of every partial as it was yielded."""
    out, copies = [], []
    for e in stream_events:
        out.append(e)
        if type(e) is PartialOutput:
            copies.append(copy.deepcopy(e.value))
    return out, copies


# -- SYNTHETIC streams ------------------------------------------------------------------------------
def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(items: list[tuple[str | None, dict]], done: bool = False) -> bytes:
    out = b""
    for name, obj in items:
        if name:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + json.dumps(obj).encode() + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def synthetic_chat(text_pieces: list[str], finish: str = "stop", usage: tuple[int, int] = (10, 5), **kw: Any) -> Reply:
    """SYNTHETIC OpenAI Chat stream: the text in the given pieces, then finish and usage."""
    chunks = [{"id": "syn", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{"id": "syn", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in text_pieces]
    chunks.append({"id": "syn", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({"id": "syn", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}})
    return Reply(sse([(None, c) for c in chunks], done=True), headers={"content-type": "text/event-stream"}, **kw)


def synthetic_chat_tool_call(name: str, args: str, call_id: str = "call_1") -> Reply:
    """SYNTHETIC OpenAI Chat stream: one tool call, arguments in pieces."""
    head = {"id": "syn", "model": "gpt-4o"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
        {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}, "finish_reason": None}]}]
    chunks += [{**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, "finish_reason": None}]}
               for p in pieces(args, 4)]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                   "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
    return Reply(sse([(None, c) for c in chunks], done=True), headers={"content-type": "text/event-stream"})


def synthetic_anthropic_tool(name: str, args: str, *, tool_id: str = "toolu_01", text: str | None = None,
                             stop: str = "tool_use", usage: tuple[int, int] = (20, 9)) -> Reply:
    """SYNTHETIC Anthropic Messages stream: (optional text, then) one `tool_use` block whose
    input arrives as `input_json_delta` pieces, as a forced tool call streams."""
    items: list[tuple[str | None, dict]] = [("message_start", {"type": "message_start", "message": {
        "id": "msg_syn", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "usage": {"input_tokens": usage[0], "output_tokens": 1}}})]
    index = 0
    if text:
        items.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
        items.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}))
        items.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    items.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
        "type": "tool_use", "id": tool_id, "name": name, "input": {}}}))
    items.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}))
    for p in pieces(args, 5):
        items.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}}))
    items.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    items.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                    "usage": {"output_tokens": usage[1]}}))
    items.append(("message_stop", {"type": "message_stop"}))
    return Reply(sse(items), headers={"content-type": "text/event-stream"})


def synthetic_gemini(text: str) -> Reply:
    """SYNTHETIC Gemini streamGenerateContent (SSE): the JSON text in pieces, then STOP and usage."""
    parts = pieces(text, 6)
    items = [(None, {"candidates": [{"content": {"parts": [{"text": p}], "role": "model"}}], "modelVersion": "gemini-2.5-flash"})
             for p in parts[:-1]]
    items.append((None, {"candidates": [{"content": {"parts": [{"text": parts[-1]}], "role": "model"}, "finishReason": "STOP"}],
                         "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 8, "totalTokenCount": 20},
                         "modelVersion": "gemini-2.5-flash"}))
    return Reply(sse(items), headers={"content-type": "text/event-stream"})


def synthetic_ollama(text: str) -> Reply:
    """SYNTHETIC Ollama /api/chat NDJSON (a `format` answer): content pieces, then done."""
    lines = [{"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": p}, "done": False}
             for p in pieces(text, 4)]
    lines.append({"model": "llama3.2", "created_at": "2025-01-01T00:00:01Z", "message": {"role": "assistant", "content": ""},
                  "done_reason": "stop", "done": True, "prompt_eval_count": 30, "eval_count": 12})
    return Reply(b"".join(json.dumps(x).encode() + b"\n" for x in lines), headers={"content-type": "application/x-ndjson"})


def synthetic_cohere(text: str) -> Reply:
    """SYNTHETIC Cohere v2 /v2/chat SSE: content-delta pieces, then message-end COMPLETE."""
    items: list[tuple[str | None, dict]] = [
        ("message-start", {"id": "syn", "type": "message-start", "delta": {"message": {"role": "assistant", "content": []}}}),
        ("content-start", {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
    ]
    items += [("content-delta", {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}}) for p in pieces(text, 5)]
    items.append(("content-end", {"type": "content-end", "index": 0}))
    items.append(("message-end", {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": {
        "billed_units": {"input_tokens": 9, "output_tokens": 11}, "tokens": {"input_tokens": 70, "output_tokens": 11}}}}))
    return Reply(sse(items), headers={"content-type": "text/event-stream"})


def synthetic_responses(text: str) -> Reply:
    """SYNTHETIC OpenAI Responses stream: `response.output_text.delta` pieces, then `response.completed`."""
    resp = {"id": "resp_syn", "model": "gpt-4o", "status": "in_progress"}
    items: list[tuple[str | None, dict]] = [
        ("response.created", {"type": "response.created", "response": resp}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                        "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}),
    ]
    items += [("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                                              "content_index": 0, "delta": p}) for p in pieces(text, 4)]
    items.append(("response.output_text.done", {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
                                                 "content_index": 0, "text": text}))
    items.append(("response.completed", {"type": "response.completed", "response": {
        **resp, "status": "completed", "usage": {"input_tokens": 15, "output_tokens": 9, "total_tokens": 24}}}))
    return Reply(sse(items), headers={"content-type": "text/event-stream"})


WEATHER_JSON = '{"city": "San Francisco", "temperature": 18, "units": "c"}'
WEATHER_OBJ = Weather(city="San Francisco", temperature=18, units="c")


# -- request bodies: the native mechanism of each protocol -------------------------------------------
def body(client, model: str, **kw: Any) -> dict:
    _, request, _, _ = client.prepare(model, USER, **kw)
    return request.json


def test_openai_chat_json_schema_strict(client):
    assert body(client, "openai:gpt-4o", output=Weather) == {
        "model": "gpt-4o", "messages": USER, "stream": True, "stream_options": {"include_usage": True},
        "response_format": {"type": "json_schema", "json_schema": {"name": "Weather", "schema": WEATHER_STRICT, "strict": True}},
    }


def test_openai_chat_strict_form_of_optional_fields_and_lists(client):
    """Every property required, objects closed, `default` dropped; a list root is wrapped in an object."""
    fmt = body(client, "openai:gpt-4o", output=list[Item])["response_format"]
    item = {"type": "object", "properties": {"name": {"type": "string"}, "qty": {"type": "integer"},
                                             "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "required": ["name", "qty", "note"], "additionalProperties": False}
    assert fmt == {"type": "json_schema", "json_schema": {"name": "Item_list", "strict": True, "schema": {
        "type": "object", "properties": {"items": {"type": "array", "items": item}}, "required": ["items"],
        "additionalProperties": False}}}


def test_openai_chat_non_strict_when_the_schema_cannot_be(client):
    class Loose(BaseModel):
        data: dict[str, Any]

    fmt = body(client, "openai:gpt-4o", output=Loose)["response_format"]["json_schema"]
    assert fmt["strict"] is False
    assert fmt["schema"] == {"type": "object", "properties": {"data": {"type": "object", "additionalProperties": True}},
                             "required": ["data"]}


def test_schema_dict_sent_as_given(client):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    fmt = body(client, "openai:gpt-4o", output=schema)["response_format"]["json_schema"]
    assert fmt == {"name": "output", "schema": schema, "strict": True}
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert body(client, "openai:gpt-4o", output=loose)["response_format"]["json_schema"] == {"name": "output", "schema": loose, "strict": False}
    named = {"name": "thing", "schema": schema, "strict": False}  # the OpenAI shape
    assert body(client, "openai:gpt-4o", output=named)["response_format"]["json_schema"] == {"name": "thing", "schema": schema, "strict": False}


def test_openai_responses_text_format(client):
    assert body(client, "openai-responses:gpt-4o", output=Weather) == {
        "model": "gpt-4o", "input": USER, "stream": True,
        "text": {"format": {"type": "json_schema", "name": "Weather", "schema": WEATHER_STRICT, "strict": True}},
    }


def test_anthropic_forced_tool(client):
    assert body(client, "anthropic:claude-sonnet-4-5", output=Weather) == {
        "model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        "max_tokens": 4096, "stream": True,
        "tools": [{"name": "Weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "Weather"},
    }


def test_anthropic_with_user_tools_and_with_thinking(client):
    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    b = body(client, "anthropic:claude-sonnet-4-5", output=Weather, tools=[lookup])
    assert [t["name"] for t in b["tools"]] == ["lookup", "Weather"]
    assert b["tool_choice"] == {"type": "any"}  # some tool must be called; the output tool ends the loop
    b = body(client, "anthropic:claude-sonnet-4-5", output=Weather, thinking_budget=2048)
    assert "tool_choice" not in b  # thinking allows only auto: the tool is offered and the model told
    assert b["system"] == "Give your final answer by calling the Weather tool."
    assert b["tools"][0]["name"] == "Weather"


def test_gemini_response_json_schema(client):
    call, request, _, _ = client.prepare("gemini:gemini-2.5-flash", USER, output=Weather)
    assert request.json == {
        "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": WEATHER_SCHEMA},
    }
    assert request.url.endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")


def test_ollama_format(client):
    assert body(client, "ollama:llama3.2", output=Weather) == {
        "model": "llama3.2", "messages": USER, "stream": True, "format": WEATHER_SCHEMA}


def test_cohere_response_format(client):
    assert body(client, "cohere:command-a-03-2025", output=Weather) == {
        "model": "command-a-03-2025", "messages": USER, "stream": True,
        "response_format": {"type": "json_object", "json_schema": WEATHER_SCHEMA}}
    assert body(client, "cohere-v1:command-r", output=Weather) == {
        "model": "command-r", "message": QUESTION, "chat_history": [], "stream": True,
        "response_format": {"type": "json_object", "schema": WEATHER_SCHEMA}}


def test_json_object_mode_with_the_schema_in_a_system_message(client):
    schema_text = json.dumps(WEATHER_SCHEMA, separators=(",", ":"))
    for model in ("groq:llama-3.3-70b-versatile", "deepseek:deepseek-chat"):
        b = body(client, model, output=Weather)
        assert b["response_format"] == {"type": "json_object"}
        assert b["messages"] == [
            {"role": "system", "content": "Answer in JSON: a single JSON object that matches this JSON schema:\n" + schema_text},
            *USER]
    # after the caller's own system messages, before the conversation
    _, request, _, _ = client.prepare("groq:x", [{"role": "system", "content": "Be brief."}, *USER], output=Weather)
    assert [m["role"] for m in request.json["messages"]] == ["system", "system", "user"]
    assert request.json["messages"][0]["content"] == "Be brief."


def with_mode(client, provider: str, structured: str):
    return client_for_providers(client, {provider: replace(PROVIDERS[provider], structured=structured)})


def client_for_providers(client, providers):
    new = llmrelay.Client(base_urls=client.base_urls, api_keys=client.api_keys, providers=providers, retry=0)
    return new


def test_profile_field_chooses_the_mechanism(client):
    tool = with_mode(client, "openai", "tool")
    b = body(tool, "openai:gpt-4o", output=Weather)
    assert "response_format" not in b
    assert b["tools"] == [{"type": "function", "function": {"name": "Weather", "description": "The weather in a city.",
                                                            "parameters": WEATHER_STRICT, "strict": True}}]
    assert b["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}
    prompt = with_mode(client, "openai", "prompt")
    b = body(prompt, "openai:gpt-4o", output=Weather)
    assert "response_format" not in b and "tools" not in b
    assert b["messages"][0]["role"] == "system" and b["messages"][0]["content"].startswith("Answer with a single JSON value")
    # a mechanism the protocol lacks falls back: Ollama cannot force a tool -> prompt
    assert mode_for(with_mode(client, "ollama", "tool").prepare("ollama:x", USER, output=Weather)[0]) == "prompt"
    assert mode_for(with_mode(client, "anthropic", "json_schema").prepare("anthropic:x", USER, output=Weather)[0]) == "tool"
    b = body(with_mode(client, "gemini", "tool"), "gemini:gemini-2.5-flash", output=Weather)
    assert b["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["Weather"]}}
    with pytest.raises(InvalidRequestError, match="structured must be one of"):
        with_mode(client, "openai", "xml").prepare("openai:gpt-4o", USER, output=Weather)


def test_output_types(client):
    """Models, dataclasses, TypedDicts, lists, scalars and schema dicts all give a schema."""
    for tp, name in ((Point, "Point"), (Movie, "Movie"), (list[Item], "Item_list"), (int, "int")):
        fmt = body(client, "openai:gpt-4o", output=tp)["response_format"]["json_schema"]
        assert fmt["name"] == name and fmt["schema"]["type"] == "object"
    assert body(client, "openai:gpt-4o", output=int)["response_format"]["json_schema"]["schema"] == {
        "type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"], "additionalProperties": False}


class Node(BaseModel):
    name: str
    children: list["Node"] = []


def test_recursive_model_stays_an_object_at_the_root(client):
    schema = body(client, "openai:gpt-4o", output=Node)["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["name"] == "Node"
    root = schema["schema"]
    assert root["type"] == "object" and set(root["properties"]) == {"name", "children"}
    assert root["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"} and "Node" in root["$defs"]
    assert OutputSpec.of(Node).validate('{"name": "a", "children": [{"name": "b", "children": []}]}') == Node(
        name="a", children=[Node(name="b")])


def test_bad_options_fail_before_sending(client, server):
    with pytest.raises(InvalidRequestError, match="cannot build a JSON schema"):
        client.stream("openai:gpt-4o", USER, output=object())
    with pytest.raises(InvalidRequestError, match="output_retries"):
        client.stream("openai:gpt-4o", USER, output=Weather, output_retries=-1)
    with pytest.raises(InvalidRequestError, match="output_retries needs output"):
        client.stream("openai:gpt-4o", USER, output_retries=2)

    def Weather_(x: int) -> int:  # noqa: N802
        return x

    with pytest.raises(InvalidRequestError, match="like the output type"):
        client.stream("anthropic:claude", USER, output=Weather, tools=[llmrelay.tool(Weather_, name="Weather")])
    assert server.requests == []


def test_import_does_not_load_pydantic():
    code = "import llmrelay, sys; print('pydantic' in sys.modules, 'llmrelay.structured' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- real recordings ----------------------------------------------------------------------------------
async def test_json_object_long_partials_at_every_chunk(server, client, mode):
    """Recorded `response_format: json_object` answer (~47 KB of small deltas), split in random
    small network pieces: every chunk boundary checked, then validated once into a nested model."""
    server.enqueue(Reply.recording("openai_chat/json_object_long.sse", max_piece=9))
    if mode == "sync":
        s = client.stream("openai:gpt-4o", USER, output=Report)
        events, copies = frozen_copies(s)
        response = s.response
    else:
        s = client.astream("openai:gpt-4o", USER, output=Report)
        events, copies = frozen_copies([e async for e in s])
        response = s.response
    final = json.loads(response.text)
    partials = check_partials(events, final)
    assert [e.value for e in events if type(e) is PartialOutput] == copies  # never mutated afterwards
    assert len(partials) > 50
    assert response.output == Report.model_validate(final)
    assert response.output.forecast[2].condition == "Cloudy"
    assert server.requests[0].json["response_format"]["type"] == "json_schema"


async def test_json_object_long_with_a_schema_dict(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/json_object_long.sse"))
    schema = {"type": "object", "properties": {"location": {"type": "string"}, "forecast": {"type": "array"}},
              "required": ["location", "forecast"]}
    events, r = await run(client, mode, "openai:gpt-4o", USER, output=schema)
    assert r.output == json.loads(r.text) and r.output["location"] == "San Francisco, CA"
    check_partials(events, r.output)


@pytest.mark.parametrize("name, text", [
    ("openai_chat/refusal.sse", "I'm sorry, I can't assist with that request."),
    ("openai_chat/refusal_with_logprobs.sse", "I'm very sorry, but I can't assist with that."),
])
async def test_refusal_is_a_typed_error(server, client, mode, name, text):
    server.enqueue(Reply.recording(name))
    events, error = await run_until_error(client, mode, "openai:gpt-4o", USER, output=Weather)
    assert type(error) is OutputRefusedError
    assert error.refusal == text and error.reason == "refusal"
    assert error.response.refusal == text and error.response.output is None
    assert error.response.usage.output_tokens is not None
    assert "".join(e.text for e in events if type(e) is RefusalDelta) == text
    assert not any(type(e) is PartialOutput for e in events)
    server.enqueue(Reply.recording(name))
    with pytest.raises(OutputRefusedError):
        await complete(client, mode, "openai:gpt-4o", USER, output=Weather, output_retries=3)
    assert len(server.requests) == 2  # a refusal is never asked again


async def test_n3_every_choice_streams_partials(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/n3_multiple_choices.sse"))
    events, r = await run(client, mode, "openai:gpt-4o", USER, output=Weather, n=3)
    for choice, temperature in ((0, 65), (1, 61), (2, 59)):
        final = {"city": "San Francisco", "temperature": temperature, "units": "f"}
        assert json.loads(r.choices[choice].text) == final
        check_partials(events, final, choice=choice)
    assert r.output == Weather(city="San Francisco", temperature=65, units="f")  # choice 0
    assert server.requests[0].json["n"] == 3


# -- SYNTHETIC streams per protocol ---------------------------------------------------------------------
@pytest.mark.parametrize("model, reply", [
    ("gemini:gemini-2.5-flash", synthetic_gemini),
    ("ollama:llama3.2", synthetic_ollama),
    ("cohere:command-a-03-2025", synthetic_cohere),
    ("openai-responses:gpt-4o", synthetic_responses),
    ("openai:gpt-4o", lambda t: synthetic_chat(pieces(t, 2))),
    ("groq:llama-3.3-70b-versatile", lambda t: synthetic_chat(pieces(t, 2))),
])
async def test_each_protocol_streams_partials_and_validates(server, client, mode, model, reply):
    server.enqueue(reply(WEATHER_JSON))
    events, r = await run(client, mode, model, USER, output=Weather)
    check_partials(events, json.loads(WEATHER_JSON))
    assert r.output == WEATHER_OBJ and r.status == "ok"
    assert r.text == WEATHER_JSON


async def test_anthropic_forced_tool_streams_as_text(server, client, mode):
    """SYNTHETIC Anthropic forced tool call: the JSON arrives as input_json_delta; the caller sees
    it as TextDelta + partials, the output tool never as a tool call, and the loop does not run it."""
    server.enqueue(synthetic_anthropic_tool("Weather", WEATHER_JSON))
    events, r = await run(client, mode, "anthropic:claude-sonnet-4-5", USER, output=Weather)
    assert not any(type(e) in (ToolCallStart, llmrelay.ToolCallDelta, llmrelay.ToolCallEnd) for e in events)
    assert "".join(e.text for e in events if type(e) is TextDelta) == WEATHER_JSON
    check_partials(events, json.loads(WEATHER_JSON))
    assert r.output == WEATHER_OBJ
    assert r.text == WEATHER_JSON and r.tool_calls == [] and r.finish_reason == "stop"
    assert r.raw_finish_reason == "tool_use"
    assert [m.role for m in r.messages] == ["user", "assistant"] and r.messages[1].text == WEATHER_JSON
    assert len(server.requests) == 1


async def test_anthropic_prose_before_the_tool_is_kept_but_not_parsed(server, client, mode):
    server.enqueue(synthetic_anthropic_tool("Weather", WEATHER_JSON, text="Here you go."))
    events, r = await run(client, mode, "anthropic:claude-sonnet-4-5", USER, output=Weather)
    assert r.output == WEATHER_OBJ
    assert r.text == "Here you go." + WEATHER_JSON
    check_partials([e for e in events if not (type(e) is TextDelta and e.text == "Here you go.")], json.loads(WEATHER_JSON))


async def test_complete_skips_partials_but_validates(server, client, mode):
    server.enqueue(synthetic_anthropic_tool("Weather", WEATHER_JSON))
    r = await complete(client, mode, "anthropic:claude-sonnet-4-5", USER, output=Weather)
    assert r.output == WEATHER_OBJ and r.text == WEATHER_JSON and r.tool_calls == []


async def test_partial_stream_and_partials(server, client):
    server.enqueue(synthetic_chat(pieces(WEATHER_JSON, 4)))
    with client.stream("openai:gpt-4o", USER, output=Weather) as s:
        got = list(s.partial_stream)
        assert all(type(p) is PartialOutput for p in got)
        assert got[-1].value == json.loads(WEATHER_JSON) and got[0].value == {}
        assert s.response.output == WEATHER_OBJ
    server.enqueue(synthetic_chat(pieces(WEATHER_JSON, 4)))
    s = client.astream("openai:gpt-4o", USER, output=Weather)
    agot = [p async for p in s.partials]
    assert [p.value for p in agot] == [p.value for p in got]
    assert s.response.output == WEATHER_OBJ


async def test_prompt_mode_reads_leniently(server, client, mode):
    prompt = with_mode(client, "openai", "prompt")
    text = 'Sure!\n```json\n' + WEATHER_JSON + '\n```\nAnything else?'
    server.enqueue(synthetic_chat(pieces(text, 3)))
    events, r = await run(prompt, mode, "openai:gpt-4o", USER, output=Weather)
    assert r.output == WEATHER_OBJ
    check_partials(events, json.loads(WEATHER_JSON), lenient=True)


# -- lists stream item by item ---------------------------------------------------------------------------
ITEMS_JSON = '{"items": [{"name": "apple", "qty": 2, "note": null}, {"name": "pear"}, {"name": "fig", "qty": 3, "note": "dried"}]}'


def item_ends(doc: str, key: str = "items") -> list[int]:
    """Where each item of the array ends in the text (the character after it)."""
    start = doc.index("[", doc.index(f'"{key}"') if key else 0) + 1
    dec = json.JSONDecoder()
    ends, pos = [], start
    while True:
        while doc[pos] in " ,\n":
            pos += 1
        if doc[pos] == "]":
            return ends
        _, pos = dec.raw_decode(doc, pos)
        ends.append(pos)


async def test_list_items_are_reported_once_when_complete(server, client, mode):
    server.enqueue(synthetic_chat(pieces(ITEMS_JSON, 4)))
    events, r = await run(client, mode, "openai:gpt-4o", USER, output=list[Item])
    expected = [Item(name="apple", qty=2), Item(name="pear"), Item(name="fig", qty=3, note="dried")]
    assert r.output == expected
    items = [e for e in events if type(e) is OutputItem]
    assert [(e.index, e.item) for e in items] == list(enumerate(expected))
    ends = item_ends(ITEMS_JSON)
    text = ""
    for e in events:
        if type(e) is TextDelta:
            before, text = len(text), text + e.text
        elif type(e) is OutputItem:
            assert before < ends[e.index] <= len(text)  # reported by the chunk that completes it
    check_partials(events, json.loads(ITEMS_JSON)["items"], wrap="items")


async def test_list_items_through_the_forced_tool_and_a_bare_array(server, client, mode):
    server.enqueue(synthetic_anthropic_tool("Item_list", ITEMS_JSON))
    events, r = await run(client, mode, "anthropic:claude-sonnet-4-5", USER, output=list[Item])
    assert [e.index for e in events if type(e) is OutputItem] == [0, 1, 2]
    assert [i.name for i in r.output] == ["apple", "pear", "fig"]
    # a model only asked (prompt mode) may answer with the bare array
    bare = json.dumps(json.loads(ITEMS_JSON)["items"])
    server.enqueue(synthetic_chat(pieces("Here:\n" + bare, 5)))
    events, r = await run(with_mode(client, "openai", "prompt"), mode, "openai:gpt-4o", USER, output=list[Item])
    assert [e.item.name for e in events if type(e) is OutputItem] == ["apple", "pear", "fig"]
    assert [i.name for i in r.output] == ["apple", "pear", "fig"]


async def test_an_invalid_item_is_not_reported(server, client, mode):
    doc = '{"items": [{"name": "ok"}, {"name": 5}, {"name": "fine"}]}'
    server.enqueue(synthetic_chat(pieces(doc, 4)))
    events, error = await run_until_error(client, mode, "openai:gpt-4o", USER, output=list[Item])
    assert [e.index for e in events if type(e) is OutputItem] == [0, 2]
    assert type(error) is OutputValidationError and error.errors[0]["loc"] == (1, "name")


# -- validation errors and output_retries ---------------------------------------------------------------
BAD_JSON = '{"city": "Paris", "temperature": "warm", "units": "c"}'


async def test_validation_error_carries_raw_text_and_errors(server, client, mode):
    server.enqueue(synthetic_chat(pieces(BAD_JSON)))
    events, error = await run_until_error(client, mode, "openai:gpt-4o", USER, output=Weather)
    assert isinstance(error, StructuredOutputValidationError) and StructuredOutputValidationError is OutputValidationError
    assert isinstance(error, ValueError)
    assert error.raw == BAD_JSON and error.attempts == 1
    assert [e["loc"] for e in error.errors] == [("temperature",)] and error.errors[0]["type"] == "int_parsing"
    assert error.response.usage.output_tokens == 5 and error.response.output is None
    assert "temperature" in str(error)
    check_partials(events, json.loads(BAD_JSON))  # partials showed what came; the end said no
    assert len(server.requests) == 1


async def test_not_json_at_all(server, client, mode):
    server.enqueue(synthetic_chat(["I cannot", " do that."]))
    events, error = await run_until_error(client, mode, "openai:gpt-4o", USER, output=Weather)
    assert type(error) is OutputValidationError and error.errors[0]["type"] == "json_invalid"
    assert error.raw == "I cannot do that." and not any(type(e) is PartialOutput for e in events)


async def test_output_retries_asks_again_with_the_errors(server, client, mode):
    server.enqueue(synthetic_chat(pieces(BAD_JSON), usage=(10, 5)), synthetic_chat(pieces(WEATHER_JSON), usage=(40, 7)))
    events, r = await run(client, mode, "openai:gpt-4o", USER, output=Weather, output_retries=2)
    assert r.output == WEATHER_OBJ
    assert len(server.requests) == 2
    second = server.requests[1].json
    assert second["response_format"] == server.requests[0].json["response_format"]
    msgs = second["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == BAD_JSON
    assert "temperature" in msgs[2]["content"] and "Answer again with JSON" in msgs[2]["content"]
    resets = [e for e in events if type(e) is Reset]
    assert len(resets) == 1 and resets[0].discarded_text == BAD_JSON
    after = events[events.index(resets[0]) + 1:]
    check_partials(after, json.loads(WEATHER_JSON))
    assert (r.usage.input_tokens, r.usage.output_tokens) == (50, 12)  # counted over both answers
    assert len(r.turns) == 2 and r.turns[0].text == BAD_JSON
    assert [m.role for m in r.messages] == ["user", "assistant", "user", "assistant"]


async def test_output_retries_exhausted(server, client, mode):
    server.enqueue(*(synthetic_chat(pieces(BAD_JSON)) for _ in range(3)))
    _, error = await run_until_error(client, mode, "openai:gpt-4o", USER, output=Weather, output_retries=2)
    assert type(error) is OutputValidationError and error.attempts == 3
    assert error.response.usage.output_tokens == 15 and len(server.requests) == 3


async def test_forced_tool_retry_says_call_the_tool_again(server, client, mode):
    server.enqueue(synthetic_anthropic_tool("Weather", BAD_JSON), synthetic_anthropic_tool("Weather", WEATHER_JSON, tool_id="toolu_02"))
    _, r = await run(client, mode, "anthropic:claude-sonnet-4-5", USER, output=Weather, output_retries=1)
    assert r.output == WEATHER_OBJ
    msgs = server.requests[1].json["messages"]
    assert msgs[1] == {"role": "assistant", "content": [{"type": "text", "text": BAD_JSON}]}
    assert "Call the Weather tool again" in msgs[2]["content"][0]["text"]
    assert server.requests[1].json["tool_choice"] == {"type": "tool", "name": "Weather"}


async def test_cut_by_max_tokens_is_not_asked_again(server, client, mode):
    server.enqueue(synthetic_chat(pieces(WEATHER_JSON[:30]), finish="length"))
    _, error = await run_until_error(client, mode, "openai:gpt-4o", USER, output=Weather, output_retries=3)
    assert type(error) is OutputValidationError and "max_tokens" in str(error)
    assert len(server.requests) == 1


# -- the tool loop ----------------------------------------------------------------------------------------
async def test_tool_loop_then_the_object(server, client, mode):
    """Recorded multiply call (simonw/llm), the tool runs, then a SYNTHETIC JSON answer."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), synthetic_chat(pieces('{"value": 2869461}')))

    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    events, r = await run(client, mode, "openai:gpt-4o-mini", USER, output=int, tools=[multiply])
    assert r.output == 2869461
    assert [type(e) for e in events].count(ToolResult) == 1
    for q in server.requests:
        assert q.json["response_format"]["json_schema"]["name"] == "int"
        assert [t["function"]["name"] for t in q.json["tools"]] == ["multiply"]
    assert len(r.turns) == 2 and r.usage.output_tokens == r.turns[0].usage.output_tokens + 5
    partials = [e.value for e in events if type(e) is PartialOutput]
    assert partials[-1] == 2869461


async def test_tool_loop_with_the_output_tool(server, client, mode):
    """SYNTHETIC Anthropic: a user tool first, then the output tool ends the loop."""
    server.enqueue(synthetic_anthropic_tool("lookup", '{"city": "San Francisco"}', tool_id="toolu_a"),
                   synthetic_anthropic_tool("Weather", WEATHER_JSON, tool_id="toolu_b"))
    looked: list = []

    def lookup(city: str) -> str:
        """Look a city up."""
        looked.append(city)
        return "18 C"

    events, r = await run(client, mode, "anthropic:claude-sonnet-4-5", USER, output=Weather, tools=[lookup])
    assert looked == ["San Francisco"] and r.output == WEATHER_OBJ
    assert [e.name for e in events if type(e) is ToolCallStart] == ["lookup"]
    for q in server.requests:
        assert [t["name"] for t in q.json["tools"]] == ["lookup", "Weather"]
        assert q.json["tool_choice"] == {"type": "any"}
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "assistant"]
    check_partials(events[events.index(next(e for e in events if type(e) is ToolResult)):], json.loads(WEATHER_JSON))


async def test_output_call_next_to_other_calls_ends_the_loop(server, client, mode):
    """A turn that calls the output tool is the answer: its other calls are not run."""
    head = {"id": "syn", "model": "gpt-4o"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "x"}'}},
        {"index": 1, "id": "c2", "type": "function", "function": {"name": "Weather", "arguments": WEATHER_JSON}}]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    server.enqueue(Reply(sse([(None, c) for c in chunks], done=True), headers={"content-type": "text/event-stream"}))
    ran: list = []

    def lookup(city: str) -> str:
        """Look up."""
        ran.append(city)
        return "?"

    _, r = await run(with_mode(client, "openai", "tool"), mode, "openai:gpt-4o", USER, output=Weather, tools=[lookup])
    assert r.output == WEATHER_OBJ and ran == [] and len(server.requests) == 1


async def test_manual_mode_returns_the_calls_without_output(server, client, mode):
    server.enqueue(synthetic_chat_tool_call("lookup", '{"city": "x"}'))
    schema_tool = {"name": "lookup", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    _, r = await run(client, mode, "openai:gpt-4o", USER, output=Weather, tools=[schema_tool])
    assert r.output is None and r.tool_calls[0].name == "lookup"


# -- fallback ---------------------------------------------------------------------------------------------
async def test_fallback_validates_whichever_model_answered(server, client, mode):
    from llmrelay.testing import faults

    server.enqueue(faults.status(500), synthetic_anthropic_tool("Weather", WEATHER_JSON))
    events, r = await run(client, mode, ["openai:gpt-4o", "anthropic:claude-sonnet-4-5"], USER, output=Weather)
    assert r.output == WEATHER_OBJ and r.provider == "anthropic"
    assert [a.ok for a in r.attempts] == [False, True]
    first, second = (q.json for q in server.requests)
    assert first["response_format"]["json_schema"]["name"] == "Weather"
    assert second["tool_choice"] == {"type": "tool", "name": "Weather"}  # each model in its own mechanism
    check_partials(events, json.loads(WEATHER_JSON))


async def test_fallback_after_content_restarts_the_object(server, client, mode):
    """The first model is cut mid-JSON: a JSON answer cannot be continued, so the next model
    restarts it (a Reset, then fresh partials), whatever fallback_mode says."""
    cut = synthetic_chat(pieces(WEATHER_JSON[:25], 3), chunking="events", cut_after=6)
    server.enqueue(cut, synthetic_gemini(WEATHER_JSON))
    events, r = await run(client, mode, ["openai:gpt-4o", "gemini:gemini-2.5-flash"], USER, output=Weather)
    assert r.output == WEATHER_OBJ and r.provider == "gemini" and not r.resumed
    (fb,) = [e for e in events if type(e) is FallbackEvent]
    assert fb.mode == "restart"
    reset = next(e for e in events if type(e) is Reset)
    assert events.index(reset) > events.index(fb)
    before = [e.value for e in events[: events.index(reset)] if type(e) is PartialOutput]
    assert before and before[-1] != json.loads(WEATHER_JSON)
    check_partials(events[events.index(reset):], json.loads(WEATHER_JSON))
    assert "generationConfig" in server.requests[1].json  # the retargeted call kept the output


# -- property: random documents through the observer -------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.dictionaries(st.text(max_size=6), json_values, max_size=5), indent=st.sampled_from([None, 2]), data=st.data())
def test_random_documents_through_the_observer(value, indent, data):
    doc = json.dumps(value, indent=indent, ensure_ascii=data.draw(st.booleans()))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(doc) - 1)), max_size=30))))
    spec = OutputSpec.of({"type": "object"})
    watcher = _Watcher(spec, "json_schema")
    events: list = []
    prev = 0
    for cut in [*cuts, len(doc)]:
        if cut > prev:
            out = watcher(TextDelta(doc[prev:cut]))
            events.extend(out if type(out) is list else [out])
            prev = cut
    check_partials(events, json.loads(doc))
    assert spec.validate(doc) == json.loads(doc)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list('{}[]",: \\0123456789.-eEtrufalsnx')), max_size=40),
       cuts=st.lists(st.integers(0, 40), max_size=8))
def test_random_text_never_breaks_the_observer(text, cuts):
    """Whatever arrives, the observer only ever passes events on; the end reports bad JSON as
    the documented `OutputValidationError` (through `_Invalid` inside)."""
    spec = OutputSpec.of(list[int])
    watcher = _Watcher(spec, "json_schema")
    prev = 0
    for cut in [*sorted(c for c in cuts if c <= len(text)), len(text)]:
        if cut > prev:
            out = watcher(TextDelta(text[prev:cut]))
            for e in out if type(out) is list else [out]:
                assert type(e) in (TextDelta, PartialOutput, OutputItem)
            prev = cut
    from llmrelay.structured.spec import _Invalid

    try:
        spec.validate(text)
    except _Invalid as invalid:
        assert invalid.errors and all("msg" in e for e in invalid.errors)


def test_watcher_passes_other_events_through():
    spec = OutputSpec.of({"type": "object"})
    w = _Watcher(spec, "json_schema")
    fin = Finish("stop")
    assert w(fin) is fin
    start = ToolCallStart(0, "c", "other")
    assert w(start) is start
    tool = _Watcher(spec, "tool")
    assert tool(TextDelta("prose")) == TextDelta("prose")  # in tool mode text is not the output
    assert tool(ToolCallStart(0, "c", "output")) is None  # the output tool's own events are hidden
    out = tool(llmrelay.ToolCallDelta(0, '{"a": "b'))
    assert out == [TextDelta('{"a": "b'), PartialOutput({"a": "b"})]
