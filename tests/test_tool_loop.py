"""The tool loop, end to end over real HTTP (replay server on 127.0.0.1), sync and async.

Every protocol: a recorded tool-call turn, the tools run, then a recorded answer; the
exact request body of each turn, the event order, the transcript, usage summed over
turns. Then the loop's rules: `max_tool_rounds`, tool errors (returned or raised), bad
arguments, unknown tools, truncated calls, parallel calls run concurrently, manual mode,
`complete`, `tool_choice`, and closing the stream during a tool round.

Recordings are real; the few synthetic bodies are built by `synthetic_*` helpers and
say so. Recorded answers are not always the answer to *this* question (a replay serves
whatever it is given): the tests check what llmrelay sends and does, not the wording.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import collect

import llmrelay
from llmrelay import (
    Finish,
    Message,
    ReasoningPart,
    StreamStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolExecutionError,
    ToolLoopLimitError,
    ToolResult,
)
from llmrelay.testing import ReplayServer, Reply, client_for, read_recording

PAYLOADS = Path(__file__).parent / "payloads"
QUESTION = "What is 1231 * 2331?"


# -- helpers --------------------------------------------------------------------------------
run = collect  # every event and the final response (exceptions propagate)


async def run_until_error(client, mode: str, model: str, messages: Any, **kw: Any) -> tuple[list, BaseException]:
    events: list = []
    if mode == "sync":
        s = client.stream(model, messages, **kw)
        with pytest.raises(llmrelay.LLMRelayError) as info:
            for e in s:
                events.append(e)
    else:
        s = client.astream(model, messages, **kw)
        with pytest.raises(llmrelay.LLMRelayError) as info:
            async for e in s:
                events.append(e)
    return events, info.value


async def complete(client, mode: str, model: str, messages: Any, **kw: Any):
    if mode == "sync":
        return client.complete(model, messages, **kw)
    return await client.acomplete(model, messages, **kw)


def make_tool(name: str, fn: Any, mode: str, params: dict[str, Any] | None = None, description: str = "") -> llmrelay.Tool:
    """A tool around `fn(**kwargs)`: an async function in async mode, a sync one in sync mode
    (the mixed cases have their own tests)."""
    schema = {"type": "object", "properties": params or {}}
    if mode == "async":
        async def afn(**kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return fn(**kwargs)

        return llmrelay.Tool(name, description, schema, afn)
    return llmrelay.Tool(name, description, schema, lambda **kwargs: fn(**kwargs))


def sse_payloads(name: str) -> list[dict]:
    """The JSON of every `data:` line of a recording, read without llmrelay's parser."""
    out = []
    for line in read_recording(name).decode("utf-8").splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                out.append(json.loads(data))
    return out


def synthetic_sse(path: Path) -> bytes:
    """SYNTHETIC FRAMING of real payloads: each JSON line becomes `data: …\\n\\n`, then `data: [DONE]`."""
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def synthetic_chat(calls: list[tuple[str, str, str]], finish: str | None = "tool_calls") -> Reply:
    """SYNTHETIC OpenAI Chat stream: tool calls `(id, name, raw arguments)`, arguments in two fragments."""
    chunks: list[dict] = [{"id": "syn", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    for i, (cid, name, args) in enumerate(calls):
        half = len(args) // 2
        chunks.append({"id": "syn", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": args[:half]}}]}, "finish_reason": None}]})
        chunks.append({"id": "syn", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "function": {"arguments": args[half:]}}]}, "finish_reason": None}]})
    chunks.append({"id": "syn", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return Reply(body, headers={"content-type": "text/event-stream"})


def synthetic_ollama_tool_call(name: str, arguments: dict) -> Reply:
    """SYNTHETIC Ollama /api/chat NDJSON (no real recording has streamed tool calls): a whole
    call with an object of arguments, then `done` with done_reason "stop"."""
    lines = [
        {"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z",
         "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": arguments}}]},
         "done": False},
        {"model": "llama3.2", "created_at": "2025-01-01T00:00:01Z", "message": {"role": "assistant", "content": ""},
         "done_reason": "stop", "done": True, "prompt_eval_count": 20, "eval_count": 7},
    ]
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    return Reply(body, headers={"content-type": "application/x-ndjson"})


def kinds(events: list) -> list[type]:
    return [type(e) for e in events]


def check_order(events: list, n_calls: int, turns: int = 2) -> None:
    """Turn 1's events (calls start/delta/end…), then one ToolResult per call, then the next turn."""
    k = kinds(events)
    starts = [i for i, t in enumerate(k) if t is StreamStart]
    assert len(starts) == turns
    for turn in range(turns - 1):
        lo, hi = starts[turn], starts[turn + 1]
        section = k[lo:hi]
        assert section[-n_calls:] == [ToolResult] * n_calls, section
        assert section.count(ToolCallStart) == section.count(ToolCallEnd) == n_calls
        first_result = hi - n_calls
        assert max(i for i in range(lo, hi) if k[i] in (ToolCallStart, ToolCallDelta, ToolCallEnd)) < first_result
        # every call's start comes before its deltas and its end
        for idx in range(n_calls):
            mine = [e for e in events[lo:first_result] if type(e) in (ToolCallStart, ToolCallDelta, ToolCallEnd) and e.index == idx]
            assert type(mine[0]) is ToolCallStart and type(mine[-1]) is ToolCallEnd
    results = [e for e in events if type(e) is ToolResult]
    ends = [e for e in events if type(e) is ToolCallEnd]
    assert [(r.call_id, r.name, r.index) for r in results[:n_calls]] == [(e.id, e.name, e.index) for e in ends[:n_calls]]
    assert ToolResult not in k[starts[-1]:]


def check_usage_summed(response: Any) -> None:
    assert response.turns is not None and len(response.turns) >= 2
    for field in ("input_tokens", "output_tokens"):
        assert getattr(response.usage, field) == sum(getattr(t.usage, field) or 0 for t in response.turns)


def user(text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- per protocol: a recorded tool-call turn, the tools, a recorded answer ------------------------
MULTIPLY_SCHEMA = {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"], "type": "object"}


def multiply_tool(mode: str, record: list | None = None) -> llmrelay.Tool:
    def multiply(a: int, b: int) -> int:
        if record is not None:
            record.append((a, b))
        return a * b

    return _multiply(mode, multiply)


def _multiply(mode: str, fn: Any) -> llmrelay.Tool:
    """`multiply` built by the decorator from hints and docstring, sync or async."""
    if mode == "async":
        async def multiply(a: int, b: int) -> int:
            """Multiply two numbers."""
            await asyncio.sleep(0)
            return fn(a, b)
    else:
        def multiply(a: int, b: int) -> int:  # type: ignore[misc]
            """Multiply two numbers."""
            return fn(a, b)

    return llmrelay.tool(multiply)


MULTIPLY_DEF = {"type": "function", "function": {"name": "multiply", "description": "Multiply two numbers.",
                                                 "parameters": {**MULTIPLY_SCHEMA, "additionalProperties": False}}}


async def test_openai_chat_round_trip(server, client, mode):
    """Recorded pair (simonw/llm): a `multiply` call in small fragments, then the answer."""
    calls: list = []
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    messages = user()
    before = copy.deepcopy(messages)
    events, r = await run(client, mode, "openai:gpt-4o-mini", messages, tools=[multiply_tool(mode, calls)])

    assert calls == [(1231, 2331)]
    assert messages == before  # the caller's list is never touched
    first = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}], "stream": True,
             "stream_options": {"include_usage": True}, "tools": [MULTIPLY_DEF]}
    call_id = "call_1EYWDzueHEp8OsB8jJSEp7WB"
    second = {**first, "messages": [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "multiply", "arguments": '{"a":1231,"b":2331}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "2869461"},
    ]}
    assert [q.json for q in server.requests] == [first, second]
    assert [q.path for q in server.requests] == ["/v1/chat/completions"] * 2

    check_order(events, 1)
    deltas = [e.arguments for e in events if type(e) is ToolCallDelta]
    assert len(deltas) > 5 and "".join(deltas) == '{"a":1231,"b":2331}'  # fragmented arguments
    (end,) = [e for e in events if type(e) is ToolCallEnd]
    assert (end.id, end.name, end.arguments) == (call_id, "multiply", {"a": 1231, "b": 2331})
    (res,) = [e for e in events if type(e) is ToolResult]
    assert (res.call_id, res.name, res.value, res.content, res.error, res.index) == (call_id, "multiply", 2869461, "2869461", None, 0)
    assert res.duration >= 0 and res.ok

    assert r.status == "ok" and r.finish_reason == "stop"
    assert r.text == "The result of \\( 1231 \\times 2331 \\) is \\( 2,869,461 \\)."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "assistant"]
    assert r.messages[1].tool_calls[0].arguments == {"a": 1231, "b": 2331}
    tool_msg = r.messages[2]
    assert (tool_msg.tool_call_id, tool_msg.name, tool_msg.text, tool_msg.is_error) == (call_id, "multiply", "2869461", False)
    assert r.messages[3].text == r.text
    assert len(r.turns) == 2 and r.turns[0].tool_calls[0].id == call_id and r.turns[-1].text == r.text
    check_usage_summed(r)
    first_usage = r.turns[0].usage
    assert (r.usage.input_tokens, r.usage.output_tokens) == (first_usage.input_tokens + 87, first_usage.output_tokens + 26)


async def test_continuing_the_transcript_sends_it_back_unchanged(server, client, mode):
    """`response.messages` + a new user turn is a valid next request (no tools run again)."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"),
                   Reply.recording("openai_chat/text_usage_chunk.sse"))
    _, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)])
    _, r2 = await run(client, mode, "openai:gpt-4o-mini", [*r.messages, Message.user("Thanks!")], tools=[multiply_tool(mode)])
    sent = server.requests[2].json["messages"]
    assert sent[:4] == [*server.requests[1].json["messages"], {"role": "assistant", "content": r.text}]
    assert sent[4] == {"role": "user", "content": "Thanks!"}
    assert [m.role for m in r2.messages] == ["user", "assistant", "tool", "assistant", "user", "assistant"]


async def test_groq_whole_arguments_call(server, client, mode):
    """Groq (gpt-oss): reasoning, then one call whose arguments arrive whole in one fragment."""
    seen: list = []
    server.enqueue(Reply.recording("groq/tool_calls_x_groq_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    tool = make_tool("get_something_by_name", lambda name: seen.append(name) or f"thing:{name}", mode, {"name": {"type": "string"}})
    events, r = await run(client, mode, "groq:openai/gpt-oss-120b", "Find example", tools=[tool])
    assert seen == ["example"]
    call_id = "fc_bfb39741-3748-4def-9886-a93fc9c64a90"
    tools_def = [{"type": "function", "function": {"name": "get_something_by_name",
                                                   "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}}]
    first = {"model": "openai/gpt-oss-120b", "messages": [{"role": "user", "content": "Find example"}], "stream": True,
             "stream_options": {"include_usage": True}, "tools": tools_def}
    second = {**first, "messages": [
        {"role": "user", "content": "Find example"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_something_by_name", "arguments": '{"name":"example"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "thing:example"},
    ]}
    assert [q.json for q in server.requests] == [first, second]
    check_order(events, 1)
    assert [e.arguments for e in events if type(e) is ToolCallDelta] == ['{"name":"example"}']
    assert r.turns[0].reasoning.startswith("We need to call the function")
    assert isinstance(r.messages[1].parts[0], ReasoningPart)  # kept in the transcript
    check_usage_summed(r)


@pytest.mark.parametrize("recording", [
    "openrouter/tool_args_empty_then_full_name_repeated.sse",
    "openrouter/tool_args_full_first_no_finish.sse",
])
async def test_openrouter_variants_without_a_tool_calls_finish(server, client, mode, recording):
    """Real captures (Novita upstream): the name repeated in a later fragment, `""` then `"{}"`,
    and never a finish_reason: the call is still assembled once and executed."""
    ran: list = []
    server.enqueue(Reply.recording(recording), Reply.recording("openrouter/text_basic.sse"))
    tool = make_tool("llm_version", lambda: ran.append(1) or "0.27", mode)
    events, r = await run(client, mode, "openrouter:moonshotai/kimi-k2", "Which version?", tools=[tool])
    assert ran == [1]
    assert r.turns[0].finish_reason is None and not any(type(e) is Finish for e in events[: events.index(next(e for e in events if type(e) is ToolResult))])
    (start,) = [e for e in events if type(e) is ToolCallStart]
    assert start.name == "llm_version"  # not "llm_versionllm_version"
    tools_def = [{"type": "function", "function": {"name": "llm_version", "parameters": {"type": "object", "properties": {}}}}]
    assert server.requests[1].json == {
        "model": "moonshotai/kimi-k2", "stream": True, "stream_options": {"include_usage": True}, "tools": tools_def,
        "messages": [
            {"role": "user", "content": "Which version?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "0", "type": "function", "function": {"name": "llm_version", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "0", "content": "0.27"},
        ],
    }
    check_order(events, 1)
    check_usage_summed(r)
    assert r.usage.provider_cost == pytest.approx(0.00007159)  # OpenRouter cost, summed (the answer's cost is 0)


async def test_tool_calls_run_even_when_the_turn_finishes_with_stop(server, client, mode):
    """SYNTHETIC: a service that ends a tool-call turn with finish_reason "stop"."""
    server.enqueue(synthetic_chat([("c1", "multiply", '{"a": 2, "b": 21}')], finish="stop"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)])
    assert r.turns[0].finish_reason == "stop"
    assert [(e.call_id, e.content) for e in events if type(e) is ToolResult] == [("c1", "42")]
    assert server.requests[1].json["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "42"}


async def test_openai_chat_parallel_calls(server, client, mode):
    """Two parallel calls (index 0 and 1) with fragmented arguments: both run, results in call order."""
    server.enqueue(Reply.recording("openai_chat/parallel_tool_calls.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    weather = make_tool("GetWeatherArgs", lambda city, country, units: f"{city},{country}: 12{units}", mode,
                        {"city": {"type": "string"}, "country": {"type": "string"}, "units": {"type": "string"}})
    stock = make_tool("get_stock_price", lambda ticker, exchange: {"ticker": ticker, "price": 1.5}, mode,
                      {"ticker": {"type": "string"}, "exchange": {"type": "string"}})
    events, r = await run(client, mode, "openai:gpt-4o", "Weather and AAPL?", tools=[weather, stock])
    check_order(events, 2)
    results = [e for e in events if type(e) is ToolResult]
    assert [(x.index, x.name, x.content) for x in results] == [
        (0, "GetWeatherArgs", "Edinburgh,GB: 12c"), (1, "get_stock_price", '{"ticker": "AAPL", "price": 1.5}')]
    assert results[1].value == {"ticker": "AAPL", "price": 1.5}
    second = server.requests[1].json["messages"]
    assert second[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_JMW1whyEaYG438VE1OIflxA2", "type": "function",
         "function": {"name": "GetWeatherArgs", "arguments": '{"city": "Edinburgh", "country": "GB", "units": "c"}'}},
        {"id": "call_DNYTawLBoN8fj3KN6qU9N1Ou", "type": "function",
         "function": {"name": "get_stock_price", "arguments": '{"ticker": "AAPL", "exchange": "NASDAQ"}'}}]}
    assert second[2:] == [
        {"role": "tool", "tool_call_id": "call_JMW1whyEaYG438VE1OIflxA2", "content": "Edinburgh,GB: 12c"},
        {"role": "tool", "tool_call_id": "call_DNYTawLBoN8fj3KN6qU9N1Ou", "content": '{"ticker": "AAPL", "price": 1.5}'},
    ]
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    check_usage_summed(r)


async def test_mistral_payload_call_without_index(server, client, mode):
    """Real Mistral payloads in SYNTHETIC SSE framing: no `index`, whole arguments, finish and usage in one chunk."""
    server.enqueue(Reply(synthetic_sse(PAYLOADS / "mistral/tool_call_no_index.chunks.jsonl")),
                   Reply.recording("mistral/magistral_thinking_content_parts.sse"))
    tool = make_tool("weather", lambda location: f"sunny in {location}", mode, {"location": {"type": "string"}})
    events, r = await run(client, mode, "mistral:mistral-small-latest", "Weather in SF?", tools=[tool])
    tools_def = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
    first = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "Weather in SF?"}], "stream": True, "tools": tools_def}
    assert [q.json for q in server.requests] == [first, {**first, "messages": [
        {"role": "user", "content": "Weather in SF?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "gSIMJiOkT", "type": "function", "function": {"name": "weather", "arguments": '{"location": "San Francisco"}'}}]},
        {"role": "tool", "tool_call_id": "gSIMJiOkT", "content": "sunny in San Francisco"},
    ]}]
    check_order(events, 1)
    check_usage_summed(r)


async def test_deepseek_payload_reasoning_then_call(server, client, mode):
    """Real DeepSeek reasoner payloads in SYNTHETIC SSE framing: reasoning, then a fragmented call."""
    server.enqueue(Reply(synthetic_sse(PAYLOADS / "deepseek/reasoner_tool_call.chunks.jsonl")),
                   Reply.recording("deepseek/reasoning_content_stream.sse"))
    tool = make_tool("weather", lambda location: "18C", mode, {"location": {"type": "string"}})
    events, r = await run(client, mode, "deepseek:deepseek-reasoner", "Weather in SF?", tools=[tool])
    check_order(events, 1)
    sent = server.requests[1].json["messages"]
    assert sent[1]["tool_calls"] == [{"id": "call_00_ioIn7yN9p1ZOMNpDLwd4MgAF", "type": "function",
                                      "function": {"name": "weather", "arguments": '{"location": "San Francisco"}'}}]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_00_ioIn7yN9p1ZOMNpDLwd4MgAF", "content": "18C"}
    check_usage_summed(r)


async def test_deepseek_tool_call_turn_sends_reasoning_content_back(server, client):
    server.enqueue(Reply(synthetic_sse(PAYLOADS / "deepseek/reasoner_tool_call.chunks.jsonl")),
                   Reply.recording("deepseek/reasoning_content_stream.sse"))
    tool = make_tool("weather", lambda location: "18C", "sync", {"location": {"type": "string"}})
    r = client.complete("deepseek:deepseek-reasoner", "Weather in SF?", tools=[tool])
    assert server.requests[1].json["messages"][1]["reasoning_content"] == r.turns[0].reasoning


async def test_openai_responses_round_trip(server, client, mode):
    """Recorded pair (simonw/llm): a function_call item, then the answer to its function_call_output."""
    server.enqueue(Reply.recording("openai_responses/function_call.sse"), Reply.recording("openai_responses/text_after_function_output.sse"))
    q = "What is 1231 * 2331? Use the multiply tool."
    events, r = await run(client, mode, "openai-responses:gpt-5.5", q, tools=[multiply_tool(mode)])
    tool_def = {"type": "function", "name": "multiply", "description": "Multiply two numbers.",
                "parameters": {**MULTIPLY_SCHEMA, "additionalProperties": False}, "strict": False}
    first = {"model": "gpt-5.5", "input": [{"role": "user", "content": q}], "stream": True, "tools": [tool_def]}
    call_id = "call_sVidsfFJ6zlzRpelrPkTPlpd"
    second = {**first, "input": [
        {"role": "user", "content": q},
        {"type": "function_call", "call_id": call_id, "name": "multiply", "arguments": '{"a":1231,"b":2331}'},
        {"type": "function_call_output", "call_id": call_id, "output": "2869461"},
    ]}
    assert [x.json for x in server.requests] == [first, second]
    assert [x.path for x in server.requests] == ["/v1/responses"] * 2
    # what the recording's own second request carried, item for item (it also sent the reasoning options)
    from llmrelay.testing import request_for

    assert second["input"][1:] == [
        {**item, "arguments": '{"a":1231,"b":2331}'} if item.get("type") == "function_call" else item
        for item in request_for("openai_responses/text_after_function_output.sse")["input"][1:]
    ]
    check_order(events, 1)
    assert r.text == "1231 × 2331 = **2,869,461**"
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "assistant"]
    check_usage_summed(r)
    assert (r.usage.input_tokens, r.usage.output_tokens) == (58 + 94, 23 + 18)


async def test_openai_responses_reasoning_item_goes_back_before_the_call(server, client, mode):
    """A reasoning item with encrypted_content, then a function call: the next request sends the
    reasoning item back (stateless reasoning across the tool round), then the call and its output."""
    server.enqueue(Reply.recording("openai_responses/reasoning_then_function_call.sse"),
                   Reply.recording("openai_responses/text_after_function_output.sse"))
    tool = make_tool("final_result", lambda result: "done", mode, {"result": {"type": "integer"}})
    _, r = await run(client, mode, "openai-responses:gpt-5", "Go", tools=[tool], reasoning_effort="low")
    done = [p["item"] for p in sse_payloads("openai_responses/reasoning_then_function_call.sse")
            if p.get("type") == "response.output_item.done" and p["item"]["type"] == "reasoning"]
    (item,) = done
    sent = server.requests[1].json
    assert sent["input"][1] == {"type": "reasoning", "id": item["id"], "summary": [], "encrypted_content": item["encrypted_content"]}
    assert sent["input"][2:] == [
        {"type": "function_call", "call_id": "call_CWXgs68YprAjp6t0371hiPOI", "name": "final_result", "arguments": '{"result":6666}'},
        {"type": "function_call_output", "call_id": "call_CWXgs68YprAjp6t0371hiPOI", "output": "done"},
    ]
    assert sent["include"] == ["reasoning.encrypted_content"]


def anthropic_thinking() -> tuple[str, str]:
    """(thinking text, signature) of `thinking_then_tool_use.sse`, read straight from the recording."""
    text, sig = "", None
    for p in sse_payloads("anthropic/thinking_then_tool_use.sse"):
        d = p.get("delta") or {}
        if d.get("type") == "thinking_delta":
            text += d["thinking"]
        elif d.get("type") == "signature_delta":
            sig = d["signature"]
    assert sig
    return text, sig


async def test_anthropic_thinking_then_tool_use_round_trip(server, client, mode):
    """Thinking (signed) then tool_use with `partial_json: ""`: the next request echoes the thinking
    block with its signature unchanged, the tool_use with input {}, then the tool_result."""
    server.enqueue(Reply.recording("anthropic/thinking_then_tool_use.sse"), Reply.recording("anthropic/text_basic.sse"))
    tool = make_tool("fixed_version", lambda: "1.2.3", mode, description="Return a fixed test version string")
    q = "Use the fixed_version tool. Then tell me the version and make one short joke about it. Think about it first."
    events, r = await run(client, mode, "anthropic:claude-haiku-4-5-20251001", q, tools=[tool],
                          thinking_budget=1024, max_tokens=64000)
    thinking, signature = anthropic_thinking()
    tools_def = [{"name": "fixed_version", "description": "Return a fixed test version string",
                  "input_schema": {"type": "object", "properties": {}}}]
    first = {"model": "claude-haiku-4-5-20251001", "messages": [{"role": "user", "content": [{"type": "text", "text": q}]}],
             "max_tokens": 64000, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 1024}, "tools": tools_def}
    call_id = "toolu_01825dXWLSoJwCst1qTsiWdb"
    second = {**first, "messages": [
        {"role": "user", "content": [{"type": "text", "text": q}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": thinking, "signature": signature},
            {"type": "tool_use", "id": call_id, "name": "fixed_version", "input": {}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "1.2.3"}]},
    ]}
    assert [x.json for x in server.requests] == [first, second]
    assert [x.path for x in server.requests] == ["/v1/messages"] * 2
    check_order(events, 1)
    (end,) = [e for e in events if type(e) is ToolCallEnd]
    assert (end.arguments, end.raw_arguments) == ({}, "")  # empty arguments mean {}
    assert r.messages[1].parts[0] == ReasoningPart(thinking, signature)
    assert r.text == "- Captain\n- Scoop"
    check_usage_summed(r)
    assert r.usage.reasoning_tokens == 53


async def test_anthropic_parallel_calls_with_empty_input(server, client, mode):
    """Two parallel tool_use blocks, each with `partial_json: ""`: both run with no arguments and the
    results go back as two tool_result blocks of one user message."""
    n = iter(["Percy", "Pelly"])
    lock = threading.Lock()

    def name() -> str:
        with lock:
            return next(n)

    server.enqueue(Reply.recording("anthropic/parallel_tool_use_empty_input.sse"), Reply.recording("anthropic/text_basic.sse"))
    tool = make_tool("pelican_name_generator", name, mode)
    events, r = await run(client, mode, "anthropic:claude-haiku-4-5-20251001", "Two names for a pet pelican", tools=[tool])
    check_order(events, 2)
    sent = server.requests[1].json["messages"]
    ids = ["toolu_01LtHJmixrs9NcWQkK8hu8hj", "toolu_01N8a4jWyf116qKTMqKKmjyt"]
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": i, "name": "pelican_name_generator", "input": {}} for i in ids]}
    contents = {b["content"] for b in sent[2]["content"]}
    assert sent[2]["role"] == "user" and [b["tool_use_id"] for b in sent[2]["content"]] == ids and contents == {"Percy", "Pelly"}
    assert len(sent) == 3
    assert server.requests[1].json["max_tokens"] == 4096


def gemini_signature() -> str:
    (p,) = [p for p in sse_payloads("gemini/function_call_thought_signature_sse.sse")
            if "functionCall" in p["candidates"][0]["content"]["parts"][0]]
    return p["candidates"][0]["content"]["parts"][0]["thoughtSignature"]


async def test_gemini_function_call_with_thought_signature(server, client, mode):
    """gemini-3: a functionCall part carrying thoughtSignature (no finishReason on its chunk): the next
    request echoes the signature on the functionCall part and sends the functionResponse."""
    server.enqueue(Reply.recording("gemini/function_call_thought_signature_sse.sse"), Reply.recording("gemini/text_sse.sse"))
    tool = make_tool("get_country", lambda: "France", mode)
    q = "What is the capital of the user country? Call the tool"
    events, r = await run(client, mode, "gemini:gemini-3-pro-preview", q, tools=[tool])
    tools_def = [{"functionDeclarations": [{"name": "get_country", "description": "", "parametersJsonSchema": {"type": "object", "properties": {}}}]}]
    first = {"contents": [{"role": "user", "parts": [{"text": q}]}], "tools": tools_def}
    second = {**first, "contents": [
        {"role": "user", "parts": [{"text": q}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_country", "args": {}}, "thoughtSignature": gemini_signature()}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_country", "response": {"result": "France"}}}]},
    ]}
    assert [x.json for x in server.requests] == [first, second]
    assert [x.path for x in server.requests] == ["/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"] * 2
    check_order(events, 1)
    assert r.text == "The capital of France is Paris.\n"
    check_usage_summed(r)


async def test_gemini_function_call_with_arguments(server, client, mode):
    server.enqueue(Reply.recording("gemini/function_call_sse.sse"), Reply.recording("gemini/text_sse.sse"))
    tool = make_tool("get_capital", lambda country: {"capital": "Paris"}, mode, {"country": {"type": "string"}})
    events, r = await run(client, mode, "gemini:gemini-2.0-flash", "Capital of France?", tools=[tool])
    assert server.requests[1].json["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_capital", "args": {"country": "France"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_capital", "response": {"result": '{"capital": "Paris"}'}}}]},
    ]
    check_order(events, 1)
    check_usage_summed(r)


async def test_ollama_synthetic_tool_call(server, client, mode):
    """SYNTHETIC NDJSON tool call (none recorded), then a recorded answer."""
    server.enqueue(synthetic_ollama_tool_call("multiply", {"a": 6, "b": 7}), Reply.recording("ollama/chat_text_done_stop.ndjson"))
    events, r = await run(client, mode, "ollama:llama3.2", "6 times 7?", tools=[multiply_tool(mode)])
    tools_def = [{"type": "function", "function": {"name": "multiply", "description": "Multiply two numbers.",
                                                   "parameters": {**MULTIPLY_SCHEMA, "additionalProperties": False}}}]
    first = {"model": "llama3.2", "messages": [{"role": "user", "content": "6 times 7?"}], "stream": True, "tools": tools_def}
    second = {**first, "messages": [
        {"role": "user", "content": "6 times 7?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "multiply", "arguments": {"a": 6, "b": 7}}}]},
        {"role": "tool", "content": "42", "tool_name": "multiply"},
    ]}
    assert [x.json for x in server.requests] == [first, second]
    assert [x.path for x in server.requests] == ["/api/chat"] * 2
    check_order(events, 1)
    assert r.turns[0].finish_reason == "tool_calls" and r.turns[0].raw_finish_reason == "stop"
    check_usage_summed(r)
    assert (r.usage.input_tokens, r.usage.output_tokens) == (20 + 16, 7 + 22)


async def test_cohere_v2_round_trip(server, client, mode):
    """Tool plan (reasoning), tool-call-start / tool-call-delta fragments, then the answer."""
    server.enqueue(Reply.recording("cohere/v2_tool_call.sse"), Reply.recording("cohere/v2_text.sse"))

    def person(name: str, age: int) -> dict:
        return {"name": name, "age": age}

    tool = make_tool("Person", person, mode, {"name": {"type": "string"}, "age": {"type": "integer"}})
    events, r = await run(client, mode, "cohere:command-r", "Erick, 27 years old", tools=[tool])
    tools_def = [{"type": "function", "function": {"name": "Person", "description": "", "parameters": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}]
    first = {"model": "command-r", "messages": [{"role": "user", "content": "Erick, 27 years old"}], "stream": True, "tools": tools_def}
    plan = "".join(p["delta"]["message"]["tool_plan"] for p in sse_payloads("cohere/v2_tool_call.sse") if p["type"] == "tool-plan-delta")
    raw = "".join(p["delta"]["message"]["tool_calls"]["function"]["arguments"]
                  for p in sse_payloads("cohere/v2_tool_call.sse") if p["type"] == "tool-call-delta")
    call_id = "Person_2fnrphbsnr66"
    second = {**first, "messages": [
        {"role": "user", "content": "Erick, 27 years old"},
        {"role": "assistant", "tool_plan": plan, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "Person", "arguments": raw}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"name": "Erick", "age": 27}'},
    ]}
    assert [x.json for x in server.requests] == [first, second]
    assert [x.path for x in server.requests] == ["/v2/chat"] * 2
    check_order(events, 1)
    assert len([e for e in events if type(e) is ToolCallDelta]) > 3
    check_usage_summed(r)


# -- max_tool_rounds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rounds", [0, 2, None])
async def test_always_tool_server_stops_after_max_rounds(mode, rounds):
    """A server that always asks for a tool: exactly max_tool_rounds + 1 requests, then the typed error."""
    ran: list = []
    with ReplayServer(default=lambda req: Reply.recording("openai_chat/tool_call_then_usage.sse")) as srv:
        c = client_for(srv)
        kw = {} if rounds is None else {"max_tool_rounds": rounds}
        events, err = await run_until_error(c, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode, ran)], **kw)
        c.close()
        limit = 10 if rounds is None else rounds
        assert isinstance(err, ToolLoopLimitError)
        assert f"max_tool_rounds={limit}" in str(err)
        assert len(srv.requests) == limit + 1
        assert len(ran) == limit  # the last turn's calls are not run
        assert len([e for e in events if type(e) is ToolResult]) == limit
        assert len([e for e in events if type(e) is StreamStart]) == limit + 1
        assert [m.role for m in err.messages] == ["user"] + ["assistant", "tool"] * limit + ["assistant"]
        assert err.messages[-1].tool_calls and err.response.messages == err.messages
        assert len(err.response.turns) == limit + 1
        if limit:
            assert err.response.usage.input_tokens == sum(t.usage.input_tokens for t in err.response.turns)
            # every request carried the whole transcript so far
            assert [len(q.json["messages"]) for q in srv.requests] == [1 + 2 * i for i in range(limit + 1)]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_tool_rounds_validation(client, bad):
    with pytest.raises(llmrelay.InvalidRequestError, match="max_tool_rounds"):
        client.stream("openai:gpt-4o-mini", "hi", tools=[multiply_tool("sync")], max_tool_rounds=bad)


def test_tool_errors_validation(client):
    with pytest.raises(llmrelay.InvalidRequestError, match="tool_errors"):
        client.stream("openai:gpt-4o-mini", "hi", tools=[multiply_tool("sync")], tool_errors="ignore")


# -- tool errors, bad arguments, unknown tools ----------------------------------------------------------
def raising_multiply(mode: str) -> llmrelay.Tool:
    def boom(a: int, b: int) -> int:
        raise ValueError("no multiplying today")

    return _multiply(mode, boom)


async def test_a_tool_that_raises_sends_the_error_back(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[raising_multiply(mode)])
    (res,) = [e for e in events if type(e) is ToolResult]
    msg = "Error: ValueError: no multiplying today"
    assert (res.error, res.content, res.value, res.ok) == (msg, msg, None, False)
    assert server.requests[1].json["messages"][2] == {"role": "tool", "tool_call_id": "call_1EYWDzueHEp8OsB8jJSEp7WB", "content": msg}
    assert r.messages[2].is_error is True and r.messages[2].text == msg
    assert r.status == "ok" and len(server.requests) == 2


async def test_anthropic_tool_error_is_flagged_is_error(server, client, mode):
    server.enqueue(Reply.recording("anthropic/thinking_then_tool_use.sse"), Reply.recording("anthropic/text_basic.sse"))

    def broken() -> str:
        raise RuntimeError("version service down")

    tool = make_tool("fixed_version", broken, mode)
    events, _ = await run(client, mode, "anthropic:claude-haiku-4-5-20251001", "Version?", tools=[tool],
                          thinking_budget=1024, max_tokens=4096)
    (res,) = [e for e in events if type(e) is ToolResult]
    assert res.error == "Error: RuntimeError: version service down"
    assert server.requests[1].json["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01825dXWLSoJwCst1qTsiWdb",
         "content": "Error: RuntimeError: version service down", "is_error": True}]}


async def test_tool_errors_raise(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    events, err = await run_until_error(client, mode, "openai:gpt-4o-mini", user(), tools=[raising_multiply(mode)], tool_errors="raise")
    assert isinstance(err, ToolExecutionError)
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "no multiplying today"
    assert err.result.name == "multiply" and err.result.error == "Error: ValueError: no multiplying today"
    assert kinds(events)[-1] is ToolResult  # the caller saw the result event before the exception
    assert [m.role for m in err.messages] == ["user", "assistant", "tool"] and err.messages[2].is_error
    assert len(server.requests) == 1  # no further request


async def test_tool_errors_raise_also_for_bad_arguments(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"))

    def multiply(a: int, c: int) -> int:
        """Wrong parameter name."""
        return a * c

    events, err = await run_until_error(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply], tool_errors="raise")
    assert isinstance(err, ToolExecutionError) and err.__cause__ is None
    assert "invalid arguments for multiply" in err.result.error
    assert len(server.requests) == 1


async def test_invalid_json_arguments_go_back_as_an_error(server, client, mode):
    """SYNTHETIC: a finished turn (finish_reason tool_calls) whose arguments are not JSON: the tool
    does not run; the parse error is the result; the raw arguments go back unchanged."""
    ran: list = []
    server.enqueue(synthetic_chat([("c1", "multiply", '{"a": 2, "b": ')]), Reply.recording("openai_chat/text_after_tool_result.sse"))
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode, ran)])
    assert ran == []
    (end,) = [e for e in events if type(e) is ToolCallEnd]
    assert end.arguments is None and end.error.startswith("arguments are not valid JSON")
    (res,) = [e for e in events if type(e) is ToolResult]
    assert res.error == f"Error: invalid arguments for multiply: {end.error}"
    sent = server.requests[1].json["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"a": 2, "b": '
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": res.error}


async def test_arguments_not_a_json_object(server, client, mode):
    server.enqueue(synthetic_chat([("c1", "multiply", "[1, 2]")]), Reply.recording("openai_chat/text_after_tool_result.sse"))
    events, _ = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)])
    (res,) = [e for e in events if type(e) is ToolResult]
    assert res.error == "Error: invalid arguments for multiply: arguments must be a JSON object, got list"


async def test_arguments_that_do_not_match_the_schema(server, client, mode):
    """The recorded call sends a and b; this tool takes a and c: nothing runs, the model is told why."""
    ran: list = []
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    if mode == "async":
        async def multiply(a: int, c: int) -> int:
            ran.append(1)
            return a * c
    else:
        def multiply(a: int, c: int) -> int:  # type: ignore[misc]
            ran.append(1)
            return a * c
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply])
    assert ran == []
    (res,) = [e for e in events if type(e) is ToolResult]
    assert res.error == "Error: invalid arguments for multiply: c: Field required; b: Extra inputs are not permitted"
    assert server.requests[1].json["messages"][2]["content"] == res.error
    assert r.messages[2].is_error


async def test_explicit_schema_mismatch(server, client, mode):
    server.enqueue(synthetic_chat([("c1", "lookup", '{"q": 5}')]), Reply.recording("openai_chat/text_after_tool_result.sse"))
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tool = llmrelay.Tool.from_function(lambda **kw: "x", name="lookup", schema=schema)
    events, _ = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[tool])
    (res,) = [e for e in events if type(e) is ToolResult]
    assert res.error == "Error: invalid arguments for lookup: q: expected string, got int"


async def test_unknown_tool(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    divide = make_tool("divide", lambda **kw: 0, mode)
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[divide])
    (res,) = [e for e in events if type(e) is ToolResult]
    assert (res.call_id, res.name) == ("call_1EYWDzueHEp8OsB8jJSEp7WB", "multiply")
    assert res.error == "Error: unknown tool 'multiply'. Available tools: divide."
    assert server.requests[1].json["messages"][2] == {"role": "tool", "tool_call_id": res.call_id, "content": res.error}
    assert len(server.requests) == 2 and r.text


async def test_errors_and_successes_mix_in_one_round(server, client, mode):
    """SYNTHETIC: three calls in one turn: good, unknown, bad JSON: three results, in call order."""
    server.enqueue(synthetic_chat([("c1", "multiply", '{"a": 2, "b": 3}'), ("c2", "nope", "{}"), ("c3", "multiply", "{")]),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)])
    results = [e for e in events if type(e) is ToolResult]
    assert [(x.call_id, x.index, x.ok) for x in results] == [("c1", 0, True), ("c2", 1, False), ("c3", 2, False)]
    assert [m["tool_call_id"] for m in server.requests[1].json["messages"][2:]] == ["c1", "c2", "c3"]
    assert [m.is_error for m in r.messages[2:5]] == [False, True, True]


async def test_truncated_tool_call_is_never_run(server, client, mode):
    """`tool_use` cut by max_tokens: the arguments are not JSON. The loop stops at that turn: nothing
    runs, no further request; the response is "truncated" and the call keeps its raw text and error."""
    ran: list = []
    server.enqueue(Reply.recording("anthropic/tool_use_max_tokens_incomplete_json.sse"))
    tool = make_tool("make_file", lambda **kw: ran.append(kw) or "ok", mode,
                     {"filename": {"type": "string"}, "lines_of_text": {"type": "array", "items": {"type": "string"}}})
    events, r = await run(client, mode, "anthropic:claude-3-7-sonnet-20250219", "Write taxes.txt", tools=[tool])
    assert ran == [] and len(server.requests) == 1
    assert ToolResult not in kinds(events)
    (end,) = [e for e in events if type(e) is ToolCallEnd]
    assert end.arguments is None and end.error == "incomplete: the tool input was cut off (stop_reason 'max_tokens')"
    assert r.status == "truncated" and r.finish_reason == "length"
    (call,) = r.tool_calls
    assert call.arguments is None and call.raw_arguments.startswith('{"filename": "taxes.txt"') and call.error == end.error
    assert [m.role for m in r.messages] == ["user", "assistant"] and r.turns == [r]


async def test_schema_only_tools_end_the_loop_for_the_caller(server, client, mode):
    """A tool given as a schema dict has no function: a turn that calls it ends the loop, like manual mode."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"))
    definition = {"type": "function", "function": {"name": "multiply", "description": "Multiply two numbers.", "parameters": MULTIPLY_SCHEMA}}
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[definition])
    assert len(server.requests) == 1 and ToolResult not in kinds(events)
    assert r.tool_calls[0].arguments == {"a": 1231, "b": 2331}
    assert server.requests[0].json["tools"] == [definition]


# -- parallel calls really run concurrently ------------------------------------------------------------------
class Meeting:
    """What the two tools of one parallel round have done, shared across threads and event loops."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.alone: list[str] = []


#: How long a waiting tool waits for the other before it gives up (a hang guard, never reached when
#: the two calls really overlap).
MEETING_GUARD = 10.0


def waiting_tools(kind: str, meeting: Meeting, until: dict[str, Callable[[Meeting], bool]]) -> list[llmrelay.Tool]:
    """The two tools of `parallel_tool_calls.sse`. Each records its start, then (if `until` names it)
    waits until `until[name](meeting)` holds, polling, so it works the same whatever runs it (threads,
    tasks, a worker thread's loop). It returns "<name> done", or "<name> alone" (and records it) if
    the condition never held: the other call never ran while this one did."""

    def ready(name: str) -> bool:
        cond = until.get(name)
        return cond is None or cond(meeting)

    def finish(name: str, met: bool) -> str:
        if not met:
            meeting.alone.append(name)
        meeting.finished.append(name)
        return f"{name} done" if met else f"{name} alone"

    tools = []
    for name, params in (("GetWeatherArgs", ("city", "country", "units")), ("get_stock_price", ("ticker", "exchange"))):
        schema = {"type": "object", "properties": {p: {"type": "string"} for p in params}}
        if kind == "async":
            async def fn(_n=name, **kw: Any) -> str:
                meeting.started.append(_n)
                deadline = time.monotonic() + MEETING_GUARD
                while not ready(_n) and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                return finish(_n, ready(_n))
        else:
            def fn(_n=name, **kw: Any) -> str:  # type: ignore[misc]
                meeting.started.append(_n)
                deadline = time.monotonic() + MEETING_GUARD
                while not ready(_n) and time.monotonic() < deadline:
                    time.sleep(0.002)
                return finish(_n, ready(_n))
        tools.append(llmrelay.Tool(name, "", schema, fn))
    return tools


def both_started(m: Meeting) -> bool:
    return len(m.started) == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_parallel_calls_run_concurrently(server, client, mode, kind):
    """Each of the two tools waits until the other has started: that only works if they run at the
    same time (sync tools in threads, async tools as tasks, also each way round: async tools under a
    sync stream, sync tools under an async one). Run one after the other, the first would wait
    alone until its guard gave up."""
    meeting = Meeting()
    server.enqueue(Reply.recording("openai_chat/parallel_tool_calls.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    tools = waiting_tools(kind, meeting, {"GetWeatherArgs": both_started, "get_stock_price": both_started})
    events, _ = await run(client, mode, "openai:gpt-4o", "Weather and AAPL?", tools=tools)
    assert meeting.alone == [], f"{meeting.alone} ran alone: the calls did not overlap"
    assert sorted(meeting.finished) == ["GetWeatherArgs", "get_stock_price"]
    results = [e for e in events if type(e) is ToolResult]
    assert [x.content for x in results] == ["GetWeatherArgs done", "get_stock_price done"]
    assert all(x.ok and x.duration > 0 for x in results)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_results_come_in_call_order_whatever_finishes_first(server, client, mode, kind):
    """The first call waits until the second has finished, so the second always finishes first;
    the results still go back in call order."""
    meeting = Meeting()
    server.enqueue(Reply.recording("openai_chat/parallel_tool_calls.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    tools = waiting_tools(kind, meeting, {"GetWeatherArgs": lambda m: "get_stock_price" in m.finished})
    events, r = await run(client, mode, "openai:gpt-4o", "Weather and AAPL?", tools=tools)
    assert meeting.alone == [] and meeting.finished == ["get_stock_price", "GetWeatherArgs"]  # the second call finished first
    assert [(x.index, x.name) for x in events if type(x) is ToolResult] == [(0, "GetWeatherArgs"), (1, "get_stock_price")]
    assert [m["content"] for m in server.requests[1].json["messages"][2:]] == ["GetWeatherArgs done", "get_stock_price done"]


def test_an_async_tool_under_a_sync_stream_inside_a_running_loop(server, client):
    """A sync stream used from code that already runs an event loop: an async tool still runs
    (on its own loop, in a worker thread)."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))

    async def main() -> Any:
        return client.complete("openai:gpt-4o-mini", user(), tools=[multiply_tool("async")])

    r = asyncio.run(main())
    assert r.messages[2].text == "2869461"


# -- manual mode, complete, tool_choice ------------------------------------------------------------------------
async def test_run_tools_false_stops_at_the_calls(server, client, mode):
    ran: list = []
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"))
    events, r = await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode, ran)], run_tools=False)
    assert ran == [] and len(server.requests) == 1
    assert ToolResult not in kinds(events) and kinds(events).count(ToolCallEnd) == 1
    assert r.finish_reason == "tool_calls" and r.tool_calls[0].arguments == {"a": 1231, "b": 2331}
    assert [m.role for m in r.messages] == ["user", "assistant"]
    # the caller runs the call and continues by hand
    server.requests.clear()
    server.enqueue(Reply.recording("openai_chat/text_after_tool_result.sse"))
    call = r.tool_calls[0]
    _, r2 = await run(client, mode, "openai:gpt-4o-mini",
                      [*r.messages, Message.tool(call.id, str(call.arguments["a"] * call.arguments["b"]), call.name)],
                      tools=[multiply_tool(mode, ran)], run_tools=False)
    assert ran == [] and server.requests[0].json["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "2869461"}
    assert r2.text.startswith("The result")


async def test_complete_runs_the_same_loop(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    r = await complete(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)])
    assert r.text == "The result of \\( 1231 \\times 2331 \\) is \\( 2,869,461 \\)."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "assistant"]
    assert len(server.requests) == 2 and len(r.turns) == 2
    check_usage_summed(r)


async def test_messages_given_as_message_objects_are_not_mutated(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    messages = [Message.system("Be brief."), Message.user(QUESTION)]
    snapshot = copy.deepcopy(messages)
    ids = [id(m) for m in messages]
    _, r = await run(client, mode, "openai:gpt-4o-mini", messages, tools=[multiply_tool(mode)])
    assert messages == snapshot and [id(m) for m in messages] == ids and len(messages) == 2
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize("model, choice, sent", [
    ("openai:gpt-4o", "auto", ("tool_choice", "auto")),
    ("openai:gpt-4o", "none", ("tool_choice", "none")),
    ("openai:gpt-4o", "required", ("tool_choice", "required")),
    ("openai:gpt-4o", "multiply", ("tool_choice", {"type": "function", "function": {"name": "multiply"}})),
    ("groq:llama", "multiply", ("tool_choice", {"type": "function", "function": {"name": "multiply"}})),
    ("openai-responses:gpt-5", "auto", ("tool_choice", "auto")),
    ("openai-responses:gpt-5", "none", ("tool_choice", "none")),
    ("openai-responses:gpt-5", "required", ("tool_choice", "required")),
    ("openai-responses:gpt-5", "multiply", ("tool_choice", {"type": "function", "name": "multiply"})),
    ("anthropic:claude", "auto", ("tool_choice", {"type": "auto"})),
    ("anthropic:claude", "none", ("tool_choice", {"type": "none"})),
    ("anthropic:claude", "required", ("tool_choice", {"type": "any"})),
    ("anthropic:claude", "multiply", ("tool_choice", {"type": "tool", "name": "multiply"})),
    ("gemini:gemini-2.5-flash", "auto", ("toolConfig", {"functionCallingConfig": {"mode": "AUTO"}})),
    ("gemini:gemini-2.5-flash", "none", ("toolConfig", {"functionCallingConfig": {"mode": "NONE"}})),
    ("gemini:gemini-2.5-flash", "required", ("toolConfig", {"functionCallingConfig": {"mode": "ANY"}})),
    ("gemini:gemini-2.5-flash", "multiply", ("toolConfig", {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["multiply"]}})),
    ("cohere:command-r", "auto", ("tool_choice", None)),
    ("cohere:command-r", "none", ("tool_choice", "NONE")),
    ("cohere:command-r", "required", ("tool_choice", "REQUIRED")),
    ("cohere:command-r", "multiply", ("tool_choice", "REQUIRED")),
    ("ollama:llama3.2", "auto", ("tool_choice", None)),
])
def test_tool_choice_encoding(client, model, choice, sent):
    _, request, _, _ = client.prepare(model, "hi", tools=[multiply_tool("sync")], tool_choice=choice)
    key, value = sent
    assert request.json.get(key) == value


def test_ollama_cannot_force_a_tool_and_none_drops_the_tools(client):
    with pytest.raises(llmrelay.UnsupportedParameterError):
        client.prepare("ollama:llama3.2", "hi", tools=[multiply_tool("sync")], tool_choice="required")
    _, request, _, _ = client.prepare("ollama:llama3.2", "hi", tools=[multiply_tool("sync")], tool_choice="none")
    assert "tools" not in request.json


def test_responses_strict_tool(client):
    t = llmrelay.Tool("lookup", "Look up.", {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
                                             "additionalProperties": False}, strict=True)
    _, request, _, _ = client.prepare("openai-responses:gpt-5", "hi", tools=[t])
    assert request.json["tools"] == [{"type": "function", "name": "lookup", "description": "Look up.",
                                      "parameters": t.parameters, "strict": True}]
    _, request, _, _ = client.prepare("openai-responses:gpt-5", "hi", tools=[{"name": "ping"}])
    assert request.json["tools"] == [{"type": "function", "name": "ping", "parameters": {"type": "object", "properties": {}}, "strict": False}]


@pytest.mark.parametrize("choice, later", [("required", None), ("multiply", None), ("auto", "auto")])
async def test_a_forced_tool_choice_applies_to_the_first_request_only(server, client, mode, choice, later):
    """After a tool round the model must be free to answer, else a forced choice loops to the limit."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    await run(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)], tool_choice=choice)
    first, second = (q.json for q in server.requests)
    assert first["tool_choice"] == (choice if choice != "multiply" else {"type": "function", "function": {"name": "multiply"}})
    assert second.get("tool_choice") == later
    assert second["tools"] == first["tools"]


# -- a failed request keeps the transcript -------------------------------------------------------------------------
async def test_a_failed_later_turn_keeps_the_transcript(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.json({"error": {"message": "upstream down", "type": "server_error"}}, status=500))
    _, err = await run_until_error(client, mode, "openai:gpt-4o-mini", user(), tools=[multiply_tool(mode)])
    assert isinstance(err, llmrelay.APIStatusError) and err.status_code == 500
    assert [m.role for m in err.partial.messages] == ["user", "assistant", "tool"]
    assert err.partial.messages[2].text == "2869461"


# -- closing the stream during a tool round ----------------------------------------------------------------------
async def test_cancelling_during_a_slow_async_tool_cancels_it_and_sends_nothing_more(server, client):
    """Cancelling the consumer mid-tool cancels the tool (it never finishes its 10 s: had the
    cancel waited for it, `finished` would be True) and sends no further request."""
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    started = asyncio.Event()
    state = {"cancelled": False, "finally": False, "finished": False}

    @llmrelay.tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, slowly."""
        started.set()
        try:
            await asyncio.sleep(10)
            state["finished"] = True
            return a * b
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        finally:
            state["finally"] = True

    s = client.astream("openai:gpt-4o-mini", user(), tools=[multiply])
    seen: list = []

    async def consume() -> None:
        async for e in s:
            seen.append(e)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state == {"cancelled": True, "finally": True, "finished": False}
    assert ToolCallEnd in kinds(seen) and ToolResult not in kinds(seen)
    await asyncio.sleep(0.2)
    assert len(server.requests) == 1  # no further request
    assert s.response.tool_calls and s.response.tool_calls[0].name == "multiply"
    async for _ in s:  # the stream is over
        pytest.fail("no more events after a cancelled tool round")


async def test_a_timeout_around_collect_cancels_the_tools(server, client):
    server.enqueue(Reply.recording("anthropic/parallel_tool_use_empty_input.sse"), Reply.recording("anthropic/text_basic.sse"))
    cancelled: list = []

    @llmrelay.tool
    async def pelican_name_generator() -> str:
        """Slow names."""
        try:
            await asyncio.sleep(10)
            return "x"
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    s = client.astream("anthropic:claude-haiku-4-5-20251001", "Names", tools=[pelican_name_generator])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(s.collect(), 0.5)
    assert cancelled == [1, 1]  # both parallel calls
    await asyncio.sleep(0.2)
    assert len(server.requests) == 1


async def test_aclose_after_the_calls_never_runs_them(server, client):
    ran: list = []
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    s = client.astream("openai:gpt-4o-mini", user(), tools=[multiply_tool("async", ran)])
    async for e in s:
        if type(e) is ToolCallEnd:
            break
    await s.aclose()
    await asyncio.sleep(0.2)
    assert ran == [] and len(server.requests) == 1


async def test_aclose_after_a_tool_result_sends_nothing_more(server, client):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    s = client.astream("openai:gpt-4o-mini", user(), tools=[multiply_tool("async")])
    async for e in s:
        if type(e) is ToolResult:
            break
    await s.aclose()
    await asyncio.sleep(0.2)
    assert len(server.requests) == 1


def test_sync_close_after_a_tool_round_sends_nothing_more(server, client):
    ran: list = []
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    s = client.stream("openai:gpt-4o-mini", user(), tools=[multiply_tool("sync", ran)])
    for e in s:
        if type(e) is ToolResult:
            break
    s.close()
    time.sleep(0.2)
    assert ran == [(1231, 2331)] and len(server.requests) == 1
    assert list(s) == []  # closed: nothing more
    assert s.response.tool_calls[0].name == "multiply"


def test_sync_with_block_exit_during_a_round_sends_nothing_more(server, client):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording("openai_chat/text_after_tool_result.sse"))
    with client.stream("openai:gpt-4o-mini", user(), tools=[multiply_tool("sync")]) as s:
        for e in s:
            if type(e) is ToolCallEnd:
                break
    time.sleep(0.2)
    assert len(server.requests) == 1
