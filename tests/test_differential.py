"""Differential tests: the official SDKs parse the same bytes from the same replay server.

For every OpenAI-compatible recording, the `openai` SDK's chunks (assembled here,
independently of llmrelay) and llmrelay's `Response` must agree on text, refusal,
reasoning, tool calls, raw finish reasons and usage. For every Anthropic
recording, `anthropic`'s `messages.stream(...).get_final_message()` must agree
with llmrelay on text, thinking (text, signatures, redacted data), tool_use
inputs, stop_reason and usage.

Both SDKs talk to the same `ReplayServer` over real HTTP; nothing reaches the network.
"""

from __future__ import annotations

import warnings

import pytest

from llmrelay import ProviderStreamError
from llmrelay.testing import Reply, provider_for, read_recording, wire_recordings

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

CHAT_FOLDERS = ("openai_chat", "deepseek", "groq", "mistral", "openrouter", "together")
CHAT_RECORDINGS = [n for n in wire_recordings() if n.split("/")[0] in CHAT_FOLDERS]
#: Recordings that end in an in-band error: the openai SDK raises `APIError` on them.
IN_BAND_ERRORS = ["groq/error_event_tool_use_failed.sse", "openrouter/error_in_chunk_after_finish.sse"]
ANTHROPIC_RECORDINGS = [n for n in wire_recordings() if n.startswith("anthropic/")]
MESSAGES = [{"role": "user", "content": "hi"}]


def _skip_if_protocol_missing(exc: ModuleNotFoundError) -> None:
    if (exc.name or "").startswith("llmrelay.protocols."):
        pytest.skip(f"protocol module not written yet: {exc.name}")
    raise exc


def relay(client, name: str, mode: str = "sync"):
    """(response, error) from llmrelay for one recording."""
    model = f"{provider_for(name)}:test-model"
    try:
        s = client.stream(model, "hi")
    except ModuleNotFoundError as exc:
        _skip_if_protocol_missing(exc)
    try:
        s.collect()
    except ProviderStreamError as exc:
        return exc.partial, exc
    return s.response, None


# -- OpenAI Chat Completions (and compatible services) --------------------------------------


class _Choice:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] | None = None
        self.finish_reason: str | None = None
        self.tools: dict[int, dict] = {}


def _extra(obj, key):
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get(key)


def assemble_openai_chunks(chunks) -> tuple[dict[int, _Choice], object]:
    """Fold `ChatCompletionChunk`s per choice: what an SDK user would write.

    Tool calls are keyed by `index`; the id and the name are taken from the first
    fragment that carries them (a later fragment repeating them does not append),
    and argument fragments are concatenated.
    """
    choices: dict[int, _Choice] = {}
    usage = None
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices or []:
            ch = choices.setdefault(c.index, _Choice())
            d = c.delta
            if d is not None:
                content = d.content
                if isinstance(content, str):
                    ch.text.append(content)
                elif isinstance(content, list):  # Mistral typed content parts
                    for part in content:
                        if part.get("type") == "text":
                            ch.text.append(part.get("text") or "")
                        elif part.get("type") == "thinking":
                            inner = part.get("thinking")
                            if isinstance(inner, str):
                                ch.reasoning.append(inner)
                            else:
                                ch.reasoning.extend(p.get("text") or "" for p in inner or [] if isinstance(p, dict))
                reasoning = _extra(d, "reasoning_content") or _extra(d, "reasoning")
                if isinstance(reasoning, str):
                    ch.reasoning.append(reasoning)
                if d.refusal:
                    ch.refusal = (ch.refusal or []) + [d.refusal]
                for pos, tc in enumerate(d.tool_calls or []):
                    idx = tc.index if tc.index is not None else pos
                    call = ch.tools.setdefault(idx, {"id": None, "name": None, "arguments": []})
                    if tc.id and call["id"] is None:
                        call["id"] = tc.id
                    fn = tc.function
                    if fn is not None:
                        if fn.name and not call["name"]:
                            call["name"] = fn.name
                        if fn.arguments:
                            call["arguments"].append(fn.arguments)
            if c.finish_reason is not None:
                ch.finish_reason = c.finish_reason
    return choices, usage


def sdk_chat_stream(server, name: str):
    """(chunks received, error raised by the SDK or None)."""
    server.enqueue(Reply.recording(name))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    chunks = []
    try:
        stream = client.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
        try:
            for chunk in stream:
                chunks.append(chunk)
        finally:
            stream.close()
    except openai.APIError as exc:
        return chunks, exc
    finally:
        client.close()
    return chunks, None


def _split_think(text: str) -> tuple[str, str] | None:
    """`<think>…</think>rest` inline reasoning (DeepSeek-R1 on Together): (reasoning, text)."""
    stripped = text.lstrip()
    if not stripped.startswith("<think>") or "</think>" not in stripped:
        return None
    inner, _, rest = stripped[len("<think>"):].partition("</think>")
    return inner, rest


def compare_chat_choice(mine, theirs: _Choice, name: str, *, finished: bool = True) -> None:
    sdk_text = "".join(theirs.text)
    sdk_reasoning = "".join(theirs.reasoning)
    split = _split_think(sdk_text) if not sdk_reasoning else None
    if split is not None:
        sdk_reasoning, sdk_text = split
    assert mine.text == sdk_text, name
    assert mine.reasoning == sdk_reasoning, name
    assert mine.refusal == ("".join(theirs.refusal) if theirs.refusal is not None else None), name
    expected_calls = [
        (c["id"], c["name"], "".join(c["arguments"])) for _, c in sorted(theirs.tools.items())
    ]
    assert [(c.id, c.name, c.raw_arguments) for c in mine.tool_calls] == expected_calls, name
    if finished:
        assert mine.raw_finish_reason == theirs.finish_reason, name


@pytest.mark.parametrize("name", [n for n in CHAT_RECORDINGS if n not in IN_BAND_ERRORS])
def test_openai_sdk_agrees(server, client, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic serializer warnings on provider extras
        chunks, sdk_error = sdk_chat_stream(server, name)
    if sdk_error is not None:
        pytest.skip(f"the openai SDK raises on this recording: {type(sdk_error).__name__}: {sdk_error}")
    server.enqueue(Reply.recording(name))
    r, error = relay(client, name)
    assert error is None, f"llmrelay raised where the SDK did not: {error!r}"
    sdk_choices, sdk_usage = assemble_openai_chunks(chunks)
    assert sorted(c.index for c in r.choices) == sorted(sdk_choices) or (not sdk_choices and len(r.choices) == 1)
    for choice in r.choices:
        compare_chat_choice(choice, sdk_choices.get(choice.index, _Choice()), name)
    # usage: every one of these recordings reports it; the SDK's last usage object is the truth
    assert sdk_usage is not None
    assert r.usage.input_tokens == sdk_usage.prompt_tokens
    assert r.usage.output_tokens == sdk_usage.completion_tokens
    assert r.usage.estimated is False
    details = sdk_usage.completion_tokens_details
    if details is not None and details.reasoning_tokens is not None:
        assert r.usage.reasoning_tokens == details.reasoning_tokens
    cost = _extra(sdk_usage, "cost")
    if isinstance(cost, (int, float)):
        assert r.usage.provider_cost == pytest.approx(cost)
    assert r.status == ("truncated" if r.finish_reason == "length" else "ok")


@pytest.mark.parametrize("name", IN_BAND_ERRORS)
def test_in_band_errors_agree_with_openai_sdk(server, client, name):
    """Where the SDK raises an in-band error, llmrelay raises a typed error with the same
    message, and keeps everything the SDK had received before it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chunks, sdk_error = sdk_chat_stream(server, name)
    assert isinstance(sdk_error, openai.APIError)
    server.enqueue(Reply.recording(name))
    partial, error = relay(client, name)
    assert isinstance(error, ProviderStreamError)
    assert sdk_error.message in str(error)
    sdk_choices, _ = assemble_openai_chunks(chunks)
    for choice in partial.choices:
        compare_chat_choice(choice, sdk_choices.get(choice.index, _Choice()), name, finished=False)


@pytest.mark.parametrize("name", [n for n in CHAT_RECORDINGS if n.startswith("openai_chat/")])
def test_openai_stream_helper_agrees(server, client, name):
    """Second oracle: the SDK's own accumulator (`chat.completions.stream` -> `get_final_completion`)."""
    server.enqueue(Reply.recording(name))
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with sdk.chat.completions.stream(model="test-model", messages=MESSAGES) as stream:
                final = stream.get_final_completion()
    except openai.LengthFinishReasonError as exc:
        final = exc.completion if hasattr(exc, "completion") else None
        if final is None:
            pytest.skip("the helper raises on finish_reason=length without the completion")
    finally:
        sdk.close()
    server.enqueue(Reply.recording(name))
    r, error = relay(client, name)
    assert error is None
    assert len(r.choices) == len(final.choices)
    for mine, theirs in zip(r.choices, sorted(final.choices, key=lambda c: c.index)):
        msg = theirs.message
        assert mine.text == (msg.content or ""), name
        assert mine.refusal == msg.refusal, name
        assert [(c.id, c.name, c.raw_arguments) for c in mine.tool_calls] == [
            (t.id, t.function.name, t.function.arguments) for t in msg.tool_calls or []
        ], name
        assert mine.raw_finish_reason == theirs.finish_reason, name
    assert (r.usage.input_tokens, r.usage.output_tokens) == (final.usage.prompt_tokens, final.usage.completion_tokens)


# -- Anthropic Messages ---------------------------------------------------------------------


def sdk_anthropic_message(server, reply: Reply):
    server.enqueue(reply)
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    try:
        with client.messages.stream(model="test-model", max_tokens=1024, messages=MESSAGES) as stream:
            return stream.get_final_message()
    finally:
        client.close()


def compare_anthropic(r, final) -> None:
    blocks = final.content
    text = "".join(b.text for b in blocks if b.type == "text")
    thinking = [b for b in blocks if b.type == "thinking"]
    redacted = [b for b in blocks if b.type == "redacted_thinking"]
    tool_uses = [b for b in blocks if b.type == "tool_use"]

    assert r.text == text
    assert r.reasoning == "".join(b.thinking for b in thinking)
    my_reasoning = [p for p in r.parts if p.type == "reasoning"]
    assert [p.signature for p in my_reasoning if p.redacted is None] == [b.signature for b in thinking]
    assert [p.redacted for p in my_reasoning if p.redacted is not None] == [b.data for b in redacted]
    assert [p.text for p in my_reasoning if p.redacted is None] == [b.thinking for b in thinking]

    # client tools only: server tools (web_search) are provider events, never calls to run
    assert [(c.id, c.name) for c in r.tool_calls] == [(b.id, b.name) for b in tool_uses]
    for mine, theirs in zip(r.tool_calls, tool_uses):
        if mine.error is None:
            assert mine.arguments == theirs.input
        else:
            # input cut by max_tokens: the SDK shows a best-effort partial parse of the same bytes
            from jiter import from_json

            assert mine.arguments is None
            assert from_json(mine.raw_arguments.encode(), partial_mode=True) == theirs.input

    assert r.raw_finish_reason == final.stop_reason
    u = final.usage
    cache_read = u.cache_read_input_tokens or 0
    cache_write = u.cache_creation_input_tokens or 0
    # llmrelay's input_tokens counts every prompt token: uncached + cache reads + cache writes
    assert r.usage.input_tokens == u.input_tokens + cache_read + cache_write
    assert r.usage.output_tokens == u.output_tokens
    assert (r.usage.cached_input_tokens or 0) == cache_read
    assert (r.usage.cache_write_tokens or 0) == cache_write
    assert r.usage.estimated is False
    assert r.status == ("truncated" if final.stop_reason == "max_tokens" else "ok")


@pytest.mark.parametrize("name", ANTHROPIC_RECORDINGS)
def test_anthropic_sdk_agrees(server, client, name):
    try:
        final = sdk_anthropic_message(server, Reply.recording(name))
    except anthropic.APIError as exc:  # pragma: no cover - every bundled recording parses today
        pytest.skip(f"the anthropic SDK cannot parse this recording: {exc}")
    server.enqueue(Reply.recording(name))
    r, error = relay(client, name)
    assert error is None, f"llmrelay raised where the SDK did not: {error!r}"
    compare_anthropic(r, final)


def test_anthropic_sdk_agrees_on_cache_usage(server, client):
    """SYNTHETIC: `anthropic/text_basic.sse` with cache reads (100) and writes (20) patched into
    both usage objects (the bundled recordings all report 0), so the normalisation
    input = uncached + cache reads + cache writes is checked against the SDK."""
    body = read_recording("anthropic/text_basic.sse")
    patched = body.replace(b'"cache_creation_input_tokens":0', b'"cache_creation_input_tokens":20').replace(
        b'"cache_read_input_tokens":0', b'"cache_read_input_tokens":100'
    )
    assert patched.count(b'"cache_read_input_tokens":100') == 2
    headers = {"content-type": "text/event-stream"}
    final = sdk_anthropic_message(server, Reply(patched, headers=headers))
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (17, 100)
    server.enqueue(Reply(patched, headers=headers))
    try:
        s = client.stream("anthropic:test-model", "hi")
    except ModuleNotFoundError as exc:
        _skip_if_protocol_missing(exc)
    r = s.collect()
    compare_anthropic(r, final)
    assert r.usage.input_tokens == 137
