"""The gateway with the official openai and anthropic SDKs as clients, over real sockets, against the replay server.

What each SDK assembles through the gateway must equal what it assembles talking
to the replay server directly (same protocol: the fast path), and carry the same
text, tool calls, reasoning and usage across protocols (translation).
"""

from __future__ import annotations

import json

import pytest

from gateway_helpers import GatewayThread, config_for

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from llmrelay.testing import ReplayServer, Reply  # noqa: E402

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stack():
    with ReplayServer() as up, GatewayThread(config_for(up.url)) as gw:
        yield up, gw


def rec(name: str) -> Reply:
    return Reply.recording(name, chunking="events")


def oa(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, **kw)


def chat_stream(client: openai.OpenAI, model: str, **kw) -> tuple[str, list, object, list]:
    text, tools, usage, reasoning = [], {}, None, []
    for chunk in client.chat.completions.create(model=model, messages=MSG, stream=True,
                                                stream_options={"include_usage": True}, **kw):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                text.append(c.delta.content)
            extra = getattr(c.delta, "model_extra", None) or {}
            if extra.get("reasoning_content"):
                reasoning.append(extra["reasoning_content"])
            for tc in c.delta.tool_calls or ():
                slot = tools.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    return "".join(text), [tools[i] for i in sorted(tools)], usage, reasoning


# -- same protocol: the fast path -------------------------------------------------------------
@pytest.mark.parametrize("recording", ["openai_chat/text_usage_chunk.sse", "openai_chat/parallel_tool_calls.sse",
                                       "openai_chat/refusal.sse"])
def test_openai_chat_stream_same_as_direct(stack, recording):
    up, gw = stack
    up.enqueue(rec(recording), rec(recording))
    direct = chat_stream(oa(up.url), "gpt-4o")
    via = chat_stream(oa(gw.url), "gpt")
    assert via[0] == direct[0] and via[1] == direct[1]
    assert via[2] == direct[2]
    sent = up.requests[-1].json
    assert sent["model"] == "gpt-4o" and sent["messages"] == MSG  # the client's body, model replaced


def test_openai_stream_helper_and_fields_forwarded(stack):
    up, gw = stack
    up.enqueue(rec("openai_chat/tool_call_single.sse"), rec("openai_chat/tool_call_single.sse"))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}}]
    finals = []
    for url in (up.url, gw.url):
        with oa(url).chat.completions.stream(model="gpt", messages=MSG, tools=tools, logit_bias={"1": 2}) as s:
            for _ in s:
                pass
            finals.append(s.get_final_completion())
    a, b = finals
    assert b.choices[0].message.tool_calls[0].function.arguments == a.choices[0].message.tool_calls[0].function.arguments
    assert b.choices[0].message.tool_calls[0].function.name == a.choices[0].message.tool_calls[0].function.name
    assert b.usage == a.usage
    assert up.requests[-1].json["logit_bias"] == {"1": 2}  # a field llmrelay does not model still arrives


async def test_async_openai_chat_stream(stack):
    up, gw = stack
    up.enqueue(rec("openai_chat/text_usage_chunk.sse"))
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    parts = []
    stream = await client.chat.completions.create(model="gpt", messages=MSG, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    await client.close()
    assert "".join(parts).startswith("I'm unable to provide real-time weather")


@pytest.mark.parametrize("recording", ["openai_responses/text_basic.sse", "openai_responses/function_call.sse",
                                       "openai_responses/reasoning_summary_text.sse"])
def test_openai_responses_stream_same_as_direct(stack, recording):
    up, gw = stack
    up.enqueue(rec(recording), rec(recording))
    finals = []
    for url in (up.url, gw.url):
        with oa(url).responses.stream(model="resp", input="hi") as s:
            for _ in s:
                pass
            finals.append(s.get_final_response())
    a, b = finals
    assert b.output_text == a.output_text
    assert [o.type for o in b.output] == [o.type for o in a.output]
    assert b.usage == a.usage


@pytest.mark.parametrize("recording", ["anthropic/text_basic.sse", "anthropic/thinking_then_tool_use.sse",
                                       "anthropic/redacted_thinking.sse"])
def test_anthropic_stream_same_as_direct(stack, recording):
    up, gw = stack
    up.enqueue(rec(recording), rec(recording))
    finals = []
    for url in (up.url, gw.url):
        client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
        with client.messages.stream(model="claude", max_tokens=200, messages=MSG) as s:
            for _ in s:
                pass
            finals.append(s.get_final_message())
    a, b = finals
    assert b.content == a.content and b.usage == a.usage and b.stop_reason == a.stop_reason


# -- across protocols -------------------------------------------------------------------------
def test_anthropic_sdk_to_openai_upstream(stack):
    up, gw = stack
    up.enqueue(rec("openai_chat/parallel_tool_calls.sse"), rec("openai_chat/parallel_tool_calls.sse"))
    direct = chat_stream(oa(up.url), "gpt-4o")
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    with client.messages.stream(model="gpt", max_tokens=200, messages=MSG,
                                tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as s:
        for _ in s:
            pass
        msg = s.get_final_message()
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [(t["id"], t["name"], json.loads(t["arguments"])) for t in direct[1]]
    assert msg.stop_reason == "tool_use"
    u = direct[2]
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == u.prompt_tokens
    assert msg.usage.output_tokens == u.completion_tokens
    sent = up.requests[-1].json
    assert sent["tools"][0]["function"]["name"] == "get_weather"  # translated into OpenAI's shape


def test_openai_sdk_to_anthropic_upstream_usage_and_reasoning(stack):
    up, gw = stack
    up.enqueue(rec("anthropic/thinking_then_tool_use.sse"), rec("anthropic/thinking_then_tool_use.sse"))
    client = anthropic.Anthropic(base_url=up.url, api_key="k", max_retries=0)
    with client.messages.stream(model="claude", max_tokens=200, messages=MSG) as s:
        direct = s.get_final_message()
    text, tools, usage, reasoning = chat_stream(oa(gw.url), "claude")
    thinking = "".join(b.thinking for b in direct.content if b.type == "thinking")
    assert "".join(reasoning) == thinking
    uses = [b for b in direct.content if b.type == "tool_use"]
    assert [(t["id"], t["name"], json.loads(t["arguments"])) for t in tools] == [(u.id, u.name, u.input) for u in uses]
    u = direct.usage
    # OpenAI counts cache reads and writes inside prompt_tokens; Anthropic apart
    assert usage.prompt_tokens == u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    assert usage.completion_tokens == u.output_tokens


def test_openai_sdk_to_gemini_upstream(stack):
    up, gw = stack
    up.enqueue(rec("gemini/text_sse.sse"))
    text, _, usage, _ = chat_stream(oa(gw.url), "gem")
    assert text and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert ":streamGenerateContent" in up.requests[-1].path


def test_responses_sdk_to_anthropic_upstream(stack):
    up, gw = stack
    up.enqueue(rec("anthropic/text_basic.sse"))
    with oa(gw.url).responses.stream(model="claude", input="hi") as s:
        final = s.get_final_response()
    assert final.output_text == "- Captain\n- Scoop"
    assert final.usage.output_tokens == 10


# -- non-streaming ----------------------------------------------------------------------------
def test_non_streaming_each_endpoint(stack):
    up, gw = stack
    up.enqueue(rec("anthropic/text_basic.sse"), rec("openai_chat/text_usage_chunk.sse"), rec("anthropic/text_basic.sse"))
    r = oa(gw.url).chat.completions.create(model="claude", messages=MSG)
    assert r.choices[0].message.content == "- Captain\n- Scoop" and r.usage.completion_tokens == 10
    m = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0).messages.create(
        model="gpt", max_tokens=100, messages=MSG)
    assert m.content[0].text.startswith("I'm unable") and m.usage.output_tokens == 30
    resp = oa(gw.url).responses.create(model="claude", input="hi")
    assert resp.output_text == "- Captain\n- Scoop"


def test_responses_create_stream_true(stack):
    up, gw = stack
    up.enqueue(rec("openai_responses/text_basic.sse"), rec("openai_responses/text_basic.sse"))
    out = []
    for url in (up.url, gw.url):
        deltas, done = [], None
        for event in oa(url).responses.create(model="resp", input="hi", stream=True):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                done = event.response
        out.append(("".join(deltas), done.output_text, done.usage))
    assert out[1] == out[0]
