"""What the caller saw is what the response says (issue 13, items 1-7).

- `response.text` / `.reasoning` are everything the stream showed, across tool rounds
  (`collect().text == "".join(text_stream)`), for every bundled recording and every
  tool-loop scenario.

Recordings are real; synthetic bodies say so where they are built.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import drain, texts

import llmrelay
from llmrelay import APIError, ReasoningDelta
from llmrelay.testing import Reply, provider_for, wire_recordings

RECORDINGS = wire_recordings()


@pytest.fixture(params=["sync", "async"])
def mode(request):
    return request.param


async def text_stream(client: Any, mode: str, model: str, messages: Any = "hi", **kw: Any) -> tuple[str, Any, Any]:
    """(joined text_stream, error or None, the stream's response) for one call."""
    pieces: list[str] = []
    error = None
    if mode == "sync":
        s = client.stream(model, messages, **kw)
        try:
            for t in s.text_stream:
                pieces.append(t)
        except APIError as exc:
            error = exc
    else:
        s = client.astream(model, messages, **kw)
        try:
            async for t in s.text_stream:
                pieces.append(t)
        except APIError as exc:
            error = exc
    return "".join(pieces), error, s.response


async def complete(client: Any, mode: str, model: str, messages: Any = "hi", **kw: Any) -> Any:
    try:
        return client.complete(model, messages, **kw) if mode == "sync" else await client.acomplete(model, messages, **kw)
    except APIError as exc:
        return exc.partial


# -- item 1: text across tool rounds ----------------------------------------------------------
@pytest.mark.parametrize("name", RECORDINGS)
async def test_collected_text_is_what_text_stream_yielded_for_every_recording(server, client, mode, name):
    model = f"{provider_for(name)}:test-model"
    server.enqueue(Reply.recording(name, chunking="random"), Reply.recording(name, chunking="random"))
    shown, error, streamed = await text_stream(client, mode, model)
    response = error.partial if error is not None else streamed
    assert response.text == shown
    completed = await complete(client, mode, model)
    assert completed.text == shown


def anthropic_text_then_tool(text: str, tool: str, args: dict) -> Reply:
    """SYNTHETIC Anthropic Messages stream (the shape of the recorded ones): a text block, then a
    tool_use block, stop_reason tool_use. No bundled recording has text before a tool call."""
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_syn", "type": "message", "role": "assistant",
                            "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
                            "usage": {"input_tokens": 30, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[:5]}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[5:]}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "toolu_syn", "name": tool, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": json.dumps(args)}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    body = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
    return Reply(body, headers={"content-type": "text/event-stream"})


def any_tool(name: str, mode: str) -> llmrelay.Tool:
    schema = {"type": "object", "properties": {}}
    if mode == "async":
        async def afn(**kwargs: Any) -> str:
            return "2026-12-07"

        return llmrelay.Tool(name, "", schema, afn)
    return llmrelay.Tool(name, "", schema, lambda **kwargs: "2026-12-07")


async def test_text_before_a_tool_call_stays_in_the_response(server, client, mode):
    """The issue's case: "I will use the date tool. ", the call, then the answer (recorded)."""
    server.enqueue(anthropic_text_then_tool("I will use the date tool. ", "date", {}),
                   Reply.recording("anthropic/text_basic.sse"))
    shown, error, r = await text_stream(client, mode, "anthropic:claude-sonnet-4-5", tools=[any_tool("date", mode)])
    assert error is None and len(r.turns) == 2
    assert shown == "I will use the date tool. - Captain\n- Scoop"
    assert r.text == shown
    assert r.turns[-1].text == r.choice.text == "- Captain\n- Scoop"  # the last turn's own text
    assert r.to_message().text == "- Captain\n- Scoop"  # the transcript keeps each turn apart
    assert [m.text for m in r.messages if m.role == "assistant"] == ["I will use the date tool. ", "- Captain\n- Scoop"]
    server.enqueue(anthropic_text_then_tool("I will use the date tool. ", "date", {}),
                   Reply.recording("anthropic/text_basic.sse"))
    assert (await complete(client, mode, "anthropic:claude-sonnet-4-5", tools=[any_tool("date", mode)])).text == shown


#: Every recorded tool-call turn, followed by a recorded answer of the same protocol.
TOOL_LOOPS = [
    ("anthropic/thinking_then_tool_use.sse", "anthropic/text_basic.sse", "fixed_version"),
    ("anthropic/parallel_tool_use_empty_input.sse", "anthropic/text_basic.sse", "pelican_name_generator"),
    ("cohere/v2_tool_call.sse", "cohere/v2_text.sse", "Person"),
    ("gemini/function_call_sse.sse", "gemini/thought_parts_sse.sse", "get_capital"),
    ("gemini/function_call_thought_signature_sse.sse", "gemini/text_sse.sse", "get_country"),
    ("groq/tool_calls_x_groq_usage.sse", "openai_chat/text_after_tool_result.sse", "get_something_by_name"),
    ("openai_chat/tool_call_then_usage.sse", "openai_chat/text_after_tool_result.sse", "multiply"),
    ("openai_chat/parallel_tool_calls.sse", "deepseek/reasoning_content_stream.sse", "GetWeatherArgs|get_stock_price"),
    ("openai_responses/function_call.sse", "openai_responses/openrouter_reasoning_text_done.sse", "multiply"),
    ("openai_responses/reasoning_then_function_call.sse", "openai_responses/openrouter_reasoning_text_done.sse",
     "final_result"),
    ("openrouter/tool_args_full_first_no_finish.sse", "openai_chat/text_usage_chunk.sse", "llm_version"),
]


@pytest.mark.parametrize("how", ["text_stream", "events", "complete"])
@pytest.mark.parametrize("first, second, tools", TOOL_LOOPS)
async def test_every_tool_loop_collects_what_was_shown(server, client, mode, first, second, tools, how):
    server.enqueue(Reply.recording(first, chunking="random"), Reply.recording(second, chunking="random"))
    model = f"{provider_for(first)}:test-model"
    kw = {"tools": [any_tool(n, mode) for n in tools.split("|")]}
    if how == "text_stream":
        shown, error, r = await text_stream(client, mode, model, **kw)
        assert error is None
    elif how == "events":
        s = client.stream(model, "hi", **kw) if mode == "sync" else client.astream(model, "hi", **kw)
        events, error = await drain(s, mode)
        assert error is None
        r, shown = s.response, texts(events)
        assert r.reasoning == "".join(e.text for e in events if type(e) is ReasoningDelta and e.choice == 0)
        assert r.reasoning == "".join(t.reasoning for t in r.turns)
    else:
        r = await complete(client, mode, model, **kw)
        shown = "".join(t.text for t in r.turns)
    assert len(r.turns) == 2 and r.status == "ok"
    assert r.text == shown == r.turns[0].text + r.turns[1].text
