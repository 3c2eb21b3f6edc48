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


# -- item 3: one usage rule ---------------------------------------------------------------------
def chat_stream(usage: dict, text: str = "Hi") -> Reply:
    """SYNTHETIC OpenAI Chat Completions stream (the recorded shape) ending with `usage`."""
    chunks = [
        {"id": "c1", "object": "chat.completion.chunk", "model": "grok-3-mini",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "model": "grok-3-mini",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return Reply(body, headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize("usage, expected", [
    # xAI (the numbers): reasoning outside completion_tokens, the total says so
    ({"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 303,
      "completion_tokens_details": {"reasoning_tokens": 290}}, (12, 291, 290)),
    # OpenAI / DeepSeek style: reasoning inside completion_tokens
    ({"prompt_tokens": 12, "completion_tokens": 300, "total_tokens": 312,
      "completion_tokens_details": {"reasoning_tokens": 290}}, (12, 300, 290)),
    # no total: the protocol's documented default (inside, for Chat Completions)
    ({"prompt_tokens": 12, "completion_tokens": 300, "completion_tokens_details": {"reasoning_tokens": 290}},
     (12, 300, 290)),
])
async def test_output_includes_reasoning_whatever_the_provider_counted(server, client, mode, usage, expected):
    server.enqueue(chat_stream(usage))
    r = await complete(client, mode, "xai:grok-3-mini")
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens) == expected
    assert u.reasoning_tokens <= u.output_tokens


def test_the_usage_rule_is_one_function():
    from llmrelay.usage import output_with_reasoning

    assert output_with_reasoning(1, 290, 12, 303) == 291
    assert output_with_reasoning(300, 290, 12, 312) == 300
    assert output_with_reasoning(10, 5, None, None, outside=True) == 15  # Gemini without a total
    assert output_with_reasoning(10, 5, None, None) == 10
    assert output_with_reasoning(None, 5, outside=True) == 5
    assert output_with_reasoning(10, None, 1, 11) == 10


# -- item 4: in-band error codes ----------------------------------------------------------------
async def test_cohere_error_type_is_the_error_code(server, client, mode):
    """SYNTHETIC Cohere v2 stream (the recorded event shapes): message-end with finish_reason ERROR
    and error_type INVALID_TOOL_GENERATION."""
    body = (
        b'event: message-start\ndata: {"id":"x1","type":"message-start","delta":{"message":{"role":"assistant"}}}\n\n'
        b'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Par"}}}}\n\n'
        b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"ERROR",'
        b'"error_type":"INVALID_TOOL_GENERATION","error":"the model generated an invalid tool call"}}\n\n'
    )
    server.enqueue(Reply(body, headers={"content-type": "text/event-stream"}))
    with pytest.raises(llmrelay.ProviderStreamError) as info:
        client.complete("cohere:command-a-03-2025", "hi") if mode == "sync" else await client.acomplete(
            "cohere:command-a-03-2025", "hi")
    assert info.value.code == "INVALID_TOOL_GENERATION"
    assert "invalid tool call" in str(info.value)
    assert info.value.partial.finish_reason == "error" and info.value.partial.raw_finish_reason == "ERROR"


# -- item 5: the caller's correlation and conversation ids --------------------------------------
class Seen(llmrelay.Hooks):
    def __init__(self) -> None:
        self.ids: list[tuple[str, str, Any]] = []

    def on_call_start(self, ctx):
        self.ids.append(("call_start", ctx.correlation_id, ctx.conversation_id))

    def on_turn_end(self, ctx, call, response):
        self.ids.append(("turn_end", response.correlation_id, response.conversation_id))

    def on_call_end(self, ctx, response, error):
        self.ids.append(("call_end", response.correlation_id, response.conversation_id))


@pytest.mark.parametrize("how", ["stream", "complete"])
async def test_the_callers_ids_flow_into_hooks_and_the_response(server, client, mode, how):
    hooks = Seen()
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    kw = {"tools": [any_tool("multiply", mode)], "hooks": [hooks],
          "correlation_id": "req-42", "conversation_id": "thread-7"}
    if how == "stream":
        s = client.stream("openai:gpt-4o-mini", "hi", **kw) if mode == "sync" else client.astream("openai:gpt-4o-mini", "hi", **kw)
        assert s.correlation_id == "req-42"
        await drain(s, mode)
        r = s.response
    else:
        r = await complete(client, mode, "openai:gpt-4o-mini", **kw)
    assert (r.correlation_id, r.conversation_id) == ("req-42", "thread-7")
    assert all(t.correlation_id == "req-42" and t.conversation_id == "thread-7" for t in r.turns)
    assert hooks.ids == [("call_start", "req-42", "thread-7"), ("turn_end", "req-42", "thread-7"),
                         ("turn_end", "req-42", "thread-7"), ("call_end", "req-42", "thread-7")]


async def test_a_generated_id_is_never_a_conversation_id(server, client, mode):
    hooks = Seen()
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    r = await complete(client, mode, "anthropic:claude-sonnet-4-5", hooks=[hooks])
    assert len(r.correlation_id) == 32 and r.conversation_id is None
    assert {c for _, _, c in hooks.ids} == {None}


@pytest.mark.parametrize("bad", ["", "  ", 42])
def test_ids_must_be_strings(client, bad):
    for name in ("correlation_id", "conversation_id"):
        with pytest.raises(llmrelay.InvalidRequestError, match=name):
            client.stream("openai:gpt-4o-mini", "hi", **{name: bad})


# -- item 6: time to first text -----------------------------------------------------------------
async def test_time_to_first_text_follows_the_reasoning(server, client, mode):
    """Recorded DeepSeek reasoner stream: reasoning first, then the answer text."""
    server.enqueue(Reply.recording("deepseek/reasoning_content_stream.sse", chunking="events", delay=0.004))
    r = await complete(client, mode, "deepseek:deepseek-reasoner")
    t = r.timings
    assert r.reasoning and r.text
    assert t.time_to_first_token is not None and t.time_to_first_text is not None
    assert t.time_to_first_text > t.time_to_first_token + 0.01
    assert t.time_to_first_text < t.total
    assert t.to_dict()["time_to_first_text"] == t.time_to_first_text


async def test_time_to_first_text_in_a_tool_loop_counts_the_tool_round(server, client, mode):
    """The issue's case: TTFT is the first tool-call token; the first text comes a turn later."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse", chunking="events", delay=0.002))

    def slow(**kwargs: Any) -> str:
        import time

        time.sleep(0.3)
        return "2869461"

    if mode == "async":
        async def aslow(**kwargs: Any) -> str:
            import asyncio

            await asyncio.sleep(0.3)
            return "2869461"
        tool = llmrelay.Tool("multiply", "", {"type": "object", "properties": {}}, aslow)
    else:
        tool = llmrelay.Tool("multiply", "", {"type": "object", "properties": {}}, slow)
    r = await complete(client, mode, "openai:gpt-4o-mini", tools=[tool])
    first, last = r.turns
    assert first.timings.time_to_first_text is None and first.timings.time_to_first_token is not None
    assert last.timings.time_to_first_text is not None
    assert r.timings.time_to_first_token == first.timings.time_to_first_token
    assert r.timings.time_to_first_text >= 0.3 + last.timings.time_to_first_text  # the tool ran before any text
    assert r.timings.time_to_first_text > r.timings.time_to_first_token


# -- item 7: text_stream and a fallback restart -------------------------------------------------
def restart_server(server) -> None:
    from llmrelay.testing import faults

    server.enqueue(faults.cut("openai_chat/text_usage_chunk.sse", after=4), faults.ok("anthropic/text_basic.sse"))


MODELS = ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5"]


async def llmgate_loop(client, mode: str, **kw: Any) -> str:
    """llmgate's loop, unchanged: print every text piece of `text_stream`."""
    out = ""
    if mode == "sync":
        for text in client.stream(MODELS, "hi", fallback_mode="restart", **kw).text_stream:
            out += text
    else:
        async for text in client.astream(MODELS, "hi", fallback_mode="restart", **kw).text_stream:
            out += text
    return out


async def test_restart_raises_in_text_stream_by_default(server, client, mode):
    restart_server(server)
    with pytest.raises(llmrelay.StreamResetError) as info:
        await llmgate_loop(client, mode)
    assert info.value.discarded_text and "text_reset" in str(info.value)


@pytest.mark.parametrize("where", ["call", "client"])
async def test_restart_with_a_separator(server, mode, where):
    from llmrelay.stream import RESET_SEPARATOR
    from llmrelay.testing import client_for

    restart_server(server)
    client = client_for(server, retry=0, **({"text_reset": "separator"} if where == "client" else {}))
    out = await llmgate_loop(client, mode, **({"text_reset": "separator"} if where == "call" else {}))
    shown, _, answer = out.partition(RESET_SEPARATOR)
    assert shown and answer == "- Captain\n- Scoop"
    client.close()


async def test_restart_continue_yields_only_the_new_answer(server, client, mode):
    restart_server(server)
    out = await llmgate_loop(client, mode, text_reset="continue")
    assert out.endswith("- Captain\n- Scoop") and len(out) > len("- Captain\n- Scoop")


def test_text_reset_is_validated(client):
    with pytest.raises(llmrelay.InvalidRequestError, match="text_reset"):
        client.stream("openai:gpt-4o-mini", "hi", text_reset="skip")
    with pytest.raises(llmrelay.InvalidRequestError, match="text_reset"):
        llmrelay.Client(text_reset="skip")
