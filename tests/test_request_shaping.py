"""What llmrelay sends (issue 13, item 2): `extra_body` merges deeply into the encoded body of
every protocol (objects merge, scalars and lists replace); Ollama's runtime options go in with
`options=` beside llmrelay's own. Every body is the one the replay server received."""

from __future__ import annotations

import pytest

import llmrelay
from llmrelay.protocols.base import deep_merge
from llmrelay.testing import Reply

#: A recording per protocol, and the nested object llmrelay fills from the typed parameters.
PROTOCOLS = [
    ("ollama:gemma3:1b", "ollama/chat_text_done_stop.ndjson", "options", {"temperature": 0, "num_predict": 50}),
    ("gemini:gemini-2.5-flash", "gemini/text_sse.sse", "generationConfig", {"temperature": 0, "maxOutputTokens": 50}),
    ("openai:gpt-4o-mini", "openai_chat/text_usage_chunk.sse", "stream_options", {"include_usage": True}),
    ("anthropic:claude-sonnet-4-5", "anthropic/text_basic.sse", "thinking", None),
    ("cohere:command-a-03-2025", "cohere/v2_text.sse", "thinking", None),
    ("openai-responses:gpt-4o-mini", "openai_responses/openrouter_reasoning_text_done.sse", "reasoning", None),
]


def test_deep_merge_rules():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 1, "c": [1]}
    extra = {"a": {"y": [3], "z": {"j": 2}, "w": None}, "b": {"n": 1}, "c": [2], "d": 4}
    assert deep_merge(base, extra) == {"a": {"x": 1, "y": [3], "z": {"k": 1, "j": 2}, "w": None},
                                       "b": {"n": 1}, "c": [2], "d": 4}
    assert base == {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 1, "c": [1]}  # untouched


@pytest.mark.parametrize("model, recording, key, ours", PROTOCOLS)
def test_extra_body_merges_into_nested_objects(server, client, model, recording, key, ours):
    params = {}
    if model.startswith("ollama") or model.startswith("gemini"):
        params = {"temperature": 0, "max_tokens": 50}
    server.enqueue(Reply.recording(recording), Reply.recording(recording))
    client.complete(model, "hi", **params)
    plain = server.requests[0].json
    if ours is not None:
        assert plain[key] == ours
    extra = {key: {"added": 8192}, "top": {"x": [1, 2]}}
    client.complete(model, "hi", extra_body=extra, **params)
    sent = server.requests[1].json
    assert sent[key] == {**(ours or {}), "added": 8192}  # llmrelay's own fields survive
    assert sent["top"] == {"x": [1, 2]}
    assert {k: v for k, v in sent.items() if k not in (key, "top")} == {k: v for k, v in plain.items() if k != key}


def test_extra_body_scalars_and_lists_replace(server, client):
    server.enqueue(Reply.recording("ollama/chat_text_done_stop.ndjson"))
    client.complete("ollama:gemma3:1b", "hi", temperature=0, stop=["a"],
                    extra_body={"options": {"temperature": 0.5, "stop": ["b", "c"]}, "stream": True})
    assert server.requests[0].json["options"] == {"temperature": 0.5, "stop": ["b", "c"]}


def test_ollama_options_land_beside_llmrelays_own(server, client):
    """The issue's case: num_ctx must not drop the temperature and num_predict llmrelay set."""
    server.enqueue(Reply.recording("ollama/chat_text_done_stop.ndjson"), Reply.recording("ollama/chat_text_done_stop.ndjson"))
    r = client.complete("ollama:gemma3:1b", "Count from 1 to 5", temperature=0, max_tokens=50,
                        options={"num_ctx": 8192, "top_k": 20, "keep_alive": "10m"})
    sent = server.requests[0].json
    assert sent["options"] == {"temperature": 0, "num_predict": 50, "num_ctx": 8192, "top_k": 20}
    assert sent["keep_alive"] == "10m"  # a top-level field in Ollama's API
    assert r.text
    client.complete("ollama:gemma3:1b", "hi", max_tokens=50, extra_body={"options": {"num_ctx": 8192}})
    assert server.requests[1].json["options"] == {"num_predict": 50, "num_ctx": 8192}


def test_options_are_refused_where_no_provider_takes_them(client):
    with pytest.raises(llmrelay.UnsupportedParameterError, match="options"):
        client.complete("openai:gpt-4o-mini", "hi", options={"num_ctx": 8192})
    with pytest.raises(llmrelay.InvalidRequestError, match="options must be a dict"):
        client.complete("ollama:gemma3:1b", "hi", options=["num_ctx"])


def test_wire_body_is_sent_as_given_with_the_protocols_headers(server, client):
    """`wire_body` (what the gateway forwards a client's own body with): the body goes as given, request by
    request, with the protocol's URL and auth; None from the hook, or a protocol that takes no given body,
    encodes as usual."""
    given = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True,
             "stream_options": {"include_usage": True}, "logit_bias": {"50256": -100}}
    seen = []

    def hook(call):
        seen.append((call.provider.name, call.model))
        return given if call.provider.name == "openai" else None

    server.enqueue(*[Reply.recording("openai_chat/text_usage_chunk.sse")] * 2,
                   Reply.recording("anthropic/text_basic.sse"))
    r = client.complete("openai:gpt-4o-mini", "ignored", wire_body=hook, api_key="sk-wire")
    assert r.text and seen == [("openai", "gpt-4o-mini")]
    sent = server.requests[0]
    assert sent.json == given and sent.path.endswith("/chat/completions")
    assert sent.headers["authorization"] == "Bearer sk-wire"
    client.complete("openai:gpt-4o-mini", "plain", wire_body=lambda call: None)
    assert server.requests[1].json["messages"] == [{"role": "user", "content": "plain"}]
    client.complete("anthropic:claude-sonnet-4-5", "hi", wire_body=hook, api_key="sk-ant")
    assert server.requests[2].json["messages"][0]["content"] == [{"type": "text", "text": "hi"}]  # the hook said None
    with pytest.raises(llmrelay.InvalidRequestError, match="wire_body must be a callable"):
        client.complete("openai:gpt-4o-mini", "hi", wire_body={"model": "x"})


def test_a_given_body_is_the_requests_json_itself(server, client):
    """The gateway knows a request built from its client's own body by identity (`gateway.relay.raw_request`),
    so a body given with `wire_body` is the request's `json` itself; an encoded body is there too (the request
    keeps only its bytes while in flight and decodes them when `json` is read)."""
    given = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    server.enqueue(*[Reply.recording("openai_chat/text_usage_chunk.sse")] * 2)
    with client.stream("openai:gpt-4o-mini", "ignored", wire_body=lambda call: given) as s:
        s.collect()
        assert s.request is not None and s.request.json is given
    with client.stream("openai:gpt-4o-mini", "plain") as s:
        s.collect()
        assert s.request is not None and s.request.json["messages"] == [{"role": "user", "content": "plain"}]
        assert s.request.json == server.requests[1].json


def test_a_hook_changing_one_requests_headers_changes_only_that_request(server, client, mode):
    """Calls with the same provider, key and extra headers may share their URL and headers until one is
    changed: a hook adding a header to one request (a trace id, say) sends it with that request only, and
    every request shows (`stream.request`) what it sent."""

    class Tag(llmrelay.Hooks):
        def on_turn_start(self, ctx, call, request):
            request.headers["x-trace"] = "t-1"

    server.enqueue(*[Reply.recording("openai_chat/text_usage_chunk.sse")] * 3)

    def run(**options):
        if mode == "sync":
            with client.stream("openai:gpt-4o-mini", "hi", api_key="sk-same", **options) as s:
                s.collect()
                return s.request

        import asyncio

        async def go():
            async with client.astream("openai:gpt-4o-mini", "hi", api_key="sk-same", **options) as s:
                await s.collect()
                return s.request

        return asyncio.run(go())

    first, tagged, last = run(), run(hooks=[Tag()]), run()
    assert [r.headers.get("x-trace") for r in server.requests] == [None, "t-1", None]
    assert tagged.headers["x-trace"] == "t-1" and "x-trace" not in first.headers and "x-trace" not in last.headers
    assert first.headers == last.headers and first == last and repr(first) == repr(last)
    assert all(r.headers["authorization"] == "Bearer sk-same" for r in server.requests)
