"""The features on the cloud providers, with real recordings over HTTP: a tool loop on Bedrock (the two
recorded turns of one Nova conversation), structured output on Bedrock Claude (tool mode), request
logs on Azure and Bedrock without a secret byte stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from llmrelay.logs import LogHook
from llmrelay.logs.sqlite import SQLiteStore
from llmrelay.testing import Reply, client_for, request_for

NOVA = "bedrock:us.amazon.nova-micro-v1:0"


def get_capital(country: str) -> str:
    """Get the capital of a country.

    Args:
        country: The country name.
    """
    return {"France": "Paris"}.get(country, "unknown")


def get_temperature(city: str) -> str:
    """Get the temperature in a city.

    Args:
        city: The city name.
    """
    return "30°C" if city == "Paris" else "unknown"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_tool_loop_on_bedrock(server, mode):
    server.enqueue(Reply.recording("bedrock/converse_stream_text_then_tool_use_nova.eventstream"),
                   Reply.recording("bedrock/converse_stream_text_after_tool_result_nova.eventstream"))
    c = client_for(server, retry=0)
    messages = [{"role": "system", "content": "You are a helpful chatbot."},
                {"role": "user", "content": "What is the temperature of the capital of France?"}]
    if mode == "sync":
        r = c.complete(NOVA, messages, tools=[get_capital, get_temperature], top_p=0.5)
    else:
        r = await c.acomplete(NOVA, messages, tools=[get_capital, get_temperature], top_p=0.5)
    await c.aclose()
    assert r.turns[-1].text.startswith("The current temperature in Paris, the capital of France, is")
    first, second = (q.json for q in server.requests)
    recorded = request_for("bedrock/converse_stream_text_then_tool_use_nova.eventstream")
    assert first["messages"] == recorded["messages"] and first["system"] == recorded["system"]
    assert first["inferenceConfig"] == recorded["inferenceConfig"]
    assert [t["toolSpec"]["name"] for t in first["toolConfig"]["tools"]] == ["get_capital", "get_temperature"]
    # the second turn carries the model's tool call and our result, in Converse's shapes
    call = r.turns[0].tool_calls[0]
    assert (call.name, call.arguments) == ("get_temperature", {"city": "Paris"})
    assistant, result = second["messages"][1], second["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["content"][-1] == {"toolUse": {"toolUseId": call.id, "name": "get_temperature", "input": {"city": "Paris"}}}
    assert result == {"role": "user", "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "30°C"}]}}]}
    recorded_second = request_for("bedrock/converse_stream_text_after_tool_result_nova.eventstream")
    assert [m["role"] for m in second["messages"]] == [m["role"] for m in recorded_second["messages"]]


class get_weather(BaseModel):  # noqa: N801 - named as the recorded tool, so its call is the output
    location: str


def test_structured_output_on_bedrock_claude_via_a_forced_tool(server):
    server.enqueue(Reply.recording("bedrock/converse_stream_tool_use_claude.eventstream"))
    c = client_for(server, retry=0)
    r = c.complete("bedrock:us.anthropic.claude-sonnet-4-20250514-v1:0", "What is the weather in San Francisco, CA?",
                   output=get_weather)
    assert r.output == get_weather(location="San Francisco, CA")
    sent = server.requests[0].json["toolConfig"]
    assert sent["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert sent["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"] == {"location": {"type": "string"}}
    c.close()


def _stored(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_logs_on_azure_and_bedrock_keep_no_secret(server, tmp_path):
    azure_key, bedrock_key = "azure-secret-key-0123456789", "bedrock-api-key-0123456789abcdef"
    hook = LogHook(tmp_path / "logs.db", files_dir=tmp_path / "files")
    c = client_for(server, retry=0, hooks=[hook], api_keys={"azure": azure_key, "bedrock": bedrock_key})
    server.enqueue(Reply.recording("azure/chat_text_prompt_filter_usage.sse"),
                   Reply.recording("bedrock/converse_stream_text_nova.eventstream"))
    c.complete("azure:gpt-4o-mini", "Say hello")
    c.complete(NOVA, "hi")
    c.close()
    assert hook.flush(10)
    with SQLiteStore(tmp_path / "logs.db") as reader:
        rows = reader.rows()
    assert [(r["provider"], r["status"]) for r in rows] == [("azure", "ok"), ("bedrock", "ok")]
    assert rows[0]["model"] == "gpt-4o-mini-2024-07-18"
    assert server.requests[0].headers["api-key"] == azure_key  # sent, so a leak would be caught
    assert server.requests[1].headers["authorization"] == f"Bearer {bedrock_key}"
    hook.close()
    stored = _stored(tmp_path)
    assert b"[REDACTED]" in stored
    assert azure_key.encode() not in stored and bedrock_key.encode() not in stored


def test_tracing_hooks_see_the_cloud_calls(server):
    from llmrelay.observability import RecordingHooks

    rec = RecordingHooks()
    c = client_for(server, retry=0, hooks=[rec])
    server.enqueue(Reply.recording("vertex/gemini_sse_text_gemini25flash.sse"))
    r = c.complete("vertex:gemini-2.5-flash", "hi")
    c.close()
    assert r.provider == "vertex" and r.usage.output_tokens == 2581
    kinds = rec.kinds(r.correlation_id)
    assert kinds[0] == "call_start" and "first_token" in kinds and kinds[-1] == "call_end"
    (turn_start,) = [e for e in rec.of(r.correlation_id) if e.kind == "turn_start"]
    assert "vertex" in repr(turn_start.details) and "ya29" not in repr(list(rec))


def test_memory_on_a_bedrock_conversation(tmp_path):
    """with_memory on a Bedrock model: the Converse request offers `search_memory`, the recorded answer
    streams, and the background learner (extraction on OpenAI: a SYNTHETIC structured reply) stores
    the facts from the exchange."""
    import json

    from llmrelay.memory import Memory, SQLiteMemoryStore, with_memory
    from llmrelay.testing import ReplayServer

    fact = "The user lives in Lisbon."
    extraction = {"facts": [{"text": fact, "importance": 0.7, "expires_in_days": None, "replaces": None}],
                  "entities": [], "relations": []}
    synthetic = (b"data: " + json.dumps({"id": "syn", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": json.dumps(extraction)}, "finish_reason": "stop"}]}).encode()
        + b"\n\ndata: [DONE]\n\n")
    extract_bodies: list = []

    def route(request):
        if request.path.endswith("/converse-stream"):
            return Reply.recording("bedrock/converse_stream_text_nova.eventstream")
        extract_bodies.append(request.json)
        return Reply(synthetic, headers={"content-type": "text/event-stream"}, chunking="events")

    memory = Memory(SQLiteMemoryStore(tmp_path / "m.db", embedder=None), extract_model="openai:gpt-4o-mini")
    with ReplayServer(default=route) as server:
        client = client_for(server, retry=0)
        alice = with_memory(client, "alice", memory)
        r = alice.complete(NOVA, "I live in Lisbon and I have a dog named Rex.")
        assert r.text.startswith("The capital of France is Paris.")
        tools = server.requests[0].json["toolConfig"]["tools"]
        assert "search_memory" in [t["toolSpec"]["name"] for t in tools]
        assert alice.flush(10)
        client.close()
    assert [f.text for f in memory.list_facts("alice")] == [fact]
    prompt = extract_bodies[0]["messages"][-1]["content"]
    assert "I live in Lisbon" in prompt and "The capital of France is Paris." in prompt
    memory.close(5)
    memory.store.close()
