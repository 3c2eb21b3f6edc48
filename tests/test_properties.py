"""Properties every protocol decoder must have, checked on every bundled recording.

- Any split of a body into reads yields exactly the events of the whole body.
- Decoders never raise: garbage, mutations and truncations become `StreamError`
  events (or nothing), never exceptions.
- Through `StreamCore`, a truncated stream raises only `llmrelay.APIError`
  subclasses (mostly `StreamInterruptedError`), never anything else.

A protocol module that does not exist yet is skipped (ModuleNotFoundError
for that module only); everything else runs.
"""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmrelay
from llmrelay import events as ev
from llmrelay.client import protocol_module
from llmrelay.providers import PROVIDERS
from llmrelay.stream import StreamCore
from llmrelay.testing import provider_for, read_recording, wire_recordings

RECORDINGS = wire_recordings()
PROTOCOLS = sorted({p.protocol for p in PROVIDERS.values()})
#: Recordings that end in an in-band error event, by design.
IN_BAND_ERRORS = {"groq/error_event_tool_use_failed.sse", "openrouter/error_in_chunk_after_finish.sse"}
#: Recordings whose model answered nothing (legacy Claude: `completion: ""`, stopped at its stop sequence).
NO_CONTENT = {"bedrock/invoke_stream_anthropic_claude_instant_completion.eventstream"}

_CLIENT = llmrelay.Client(api_keys={n: "k" for n in PROVIDERS}, env={
    "AWS_REGION": "us-east-1", "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "GOOGLE_CLOUD_PROJECT": "p"})

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def module_for_protocol(protocol: str):
    try:
        return protocol_module(protocol)
    except ModuleNotFoundError as exc:
        if exc.name == f"llmrelay.protocols.{protocol}":
            pytest.skip(f"protocol module llmrelay.protocols.{protocol} does not exist yet")
        raise


def decoder_class(name: str):
    return module_for_protocol(PROVIDERS[provider_for(name)].protocol).Decoder


@lru_cache(maxsize=None)
def body_of(name: str) -> bytes:
    return read_recording(name)


def decode(decoder_cls, pieces) -> list:
    d = decoder_cls()
    out: list = []
    for p in pieces:
        out.extend(d.feed(p))
    out.extend(d.end())
    return out


@lru_cache(maxsize=None)
def whole_events(name: str) -> tuple:
    return tuple(decode(decoder_class(name), [body_of(name)]))


def test_every_recording_maps_to_a_provider():
    assert len(RECORDINGS) == 86  # 59 + 4 Azure + 19 Bedrock event streams + 4 Vertex (HTTP error bodies excluded)
    for name in RECORDINGS:
        assert provider_for(name) in PROVIDERS


# ---------------------------------------------------------------------------
# Any split == whole
# ---------------------------------------------------------------------------


@st.composite
def splits(draw, body: bytes):
    """A split of `body` into reads: random cut points (empty reads allowed) or a fixed read size."""
    n = len(body)
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=80)))
        bounds = [0, *cuts, n]
        return [body[a:b] for a, b in zip(bounds, bounds[1:])]
    lo = max(1, n // 3000)  # keep the number of reads bounded on the 280 KB recordings
    size = draw(st.integers(lo, max(lo, 97)))
    return [body[i : i + size] for i in range(0, n, size)]


@pytest.mark.parametrize("name", RECORDINGS)
@SETTINGS
@given(data=st.data())
def test_any_split_yields_the_same_events(name, data):
    cls = decoder_class(name)
    body = body_of(name)
    pieces = data.draw(splits(body), label="pieces")
    assert b"".join(pieces) == body
    assert decode(cls, pieces) == list(whole_events(name))


@pytest.mark.parametrize("name", [n for n in RECORDINGS if len(read_recording(n)) <= 16_000])
def test_byte_by_byte_yields_the_same_events(name):
    body = body_of(name)
    assert decode(decoder_class(name), [body[i : i + 1] for i in range(len(body))]) == list(whole_events(name))


@pytest.mark.parametrize("name", RECORDINGS)
def test_whole_recording_decodes_cleanly(name):
    """Sanity: every recording decodes to content and completes; only the in-band error files carry an error."""
    cls = decoder_class(name)
    d = cls()
    events = d.feed(body_of(name)) + d.end()
    errors = [e for e in events if isinstance(e, ev.StreamError)]
    if name in IN_BAND_ERRORS:
        assert len(errors) == 1 and errors[0].kind == "provider"
    else:
        assert errors == []
        assert d.complete, "the recording reached its final event"
        assert not d.cut
    if name not in NO_CONTENT:
        assert any(type(e) in ev.CONTENT_EVENTS for e in events)


# ---------------------------------------------------------------------------
# Decoders never raise
# ---------------------------------------------------------------------------


def feed_never_raises(decoder_cls, pieces) -> list:
    d = decoder_cls()
    out: list = []
    for p in pieces:
        out.extend(d.feed(p))
    out.extend(d.end())
    assert isinstance(d.complete, bool)
    for e in out:
        assert type(e) in (*ev.Event.__args__, ev.StreamError), e  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
@SETTINGS
@given(garbage=st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_raise(protocol, garbage):
    feed_never_raises(module_for_protocol(protocol).Decoder, garbage)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
# keys the decoders look at, so the shapes reach deep into their code
KEYS = ["choices", "delta", "content", "tool_calls", "function", "arguments", "index", "id", "name", "usage",
        "finish_reason", "type", "message", "done", "candidates", "parts", "text", "error", "item", "response",
        "content_block", "index", "event_type", "output_index", "item_id", "functionCall", "usageMetadata",
        "stop_reason", "thinking", "reasoning", "refusal", "x_groq", "partial_json", "delta", "tool_call"]
shaped = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8) | st.sampled_from(["", "{}", "[]", "text", "tool_use"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=25,
)


def sse_frames(objs, names):
    return b"".join(
        (b"event: " + n.encode() + b"\n" if n else b"") + b"data: " + json.dumps(o).encode() + b"\n\n"
        for o, n in zip(objs, names)
    )


EVENT_NAMES = st.sampled_from([None, "error", "message_start", "content_block_delta", "message_delta", "message_stop",
                               "response.output_text.delta", "response.completed", "content-delta", "message-end"])


def shaped_body(objs, names, framing) -> bytes:
    if framing == "sse":
        return sse_frames(objs, names)
    if framing == "ndjson":
        return b"".join(json.dumps(o).encode() + b"\n" for o in objs)
    return b"[" + b",\r\n".join(json.dumps(o).encode() for o in objs) + b"]"


def protocol_params(known_crashes: set[str]):
    """Protocols, with a strict xfail where this (derandomized) search finds a known crash today."""
    return [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="wrong-shape JSON crashes this decoder (see WRONG_SHAPES)"))
        if p in known_crashes else p
        for p in PROTOCOLS
    ]


SHAPE_SETTINGS = settings(SETTINGS, max_examples=60)


@pytest.mark.parametrize("protocol", protocol_params(set()))
@SHAPE_SETTINGS
@given(objs=st.lists(json_values | shaped, min_size=1, max_size=6), names=st.lists(EVENT_NAMES, min_size=6, max_size=6),
       framing=st.sampled_from(["sse", "ndjson", "array"]))
def test_valid_json_of_any_shape_never_raises(protocol, objs, names, framing):
    """Valid JSON of unexpected shape becomes a StreamError (malformed) or is ignored; never an exception."""
    feed_never_raises(module_for_protocol(protocol).Decoder, [shaped_body(objs, names, framing)])


@pytest.mark.parametrize("protocol", protocol_params(set()))
@SHAPE_SETTINGS
@given(objs=st.lists(json_values | shaped, min_size=1, max_size=6), names=st.lists(EVENT_NAMES, min_size=6, max_size=6),
       framing=st.sampled_from(["sse", "ndjson", "array"]))
def test_valid_json_of_any_shape_through_core(protocol, objs, names, framing):
    """Through StreamCore: only APIError subclasses, and the (partial) response always builds."""
    provider = next(n for n, p in PROVIDERS.items() if p.protocol == protocol)
    module_for_protocol(protocol)
    check_core_body(provider, shaped_body(objs, names, framing))


def check_core_body(provider: str, body: bytes) -> None:
    call, request, decoder, _ = _CLIENT.prepare(f"{provider}:model", "hi")
    core = StreamCore(call, request, decoder)
    core.dispatch()
    try:
        for _ in core.feed(body):
            pass
        for _ in core.finish():
            pass
    except llmrelay.APIError as exc:
        core.fail(exc)  # builds the partial response, as the stream does
    r = core.response()
    for c in r.choices:
        assert type(c.text) is str and type(c.reasoning) is str
        assert c.refusal is None or type(c.refusal) is str
        for t in c.tool_calls:
            assert type(t.name) is str and (t.id is None or type(t.id) is str) and type(t.raw_arguments) is str


_BUG = "decoder passes a wrong-shape value on (AttributeError/TypeError in the decoder or the assembler)"


def _case(protocol, body, bug=False):
    marks = [pytest.mark.xfail(strict=True, raises=(TypeError, AttributeError), reason=_BUG)] if bug else []
    return pytest.param(protocol, body, marks=marks, id=f"{protocol}:{body[:60]!r}")


# SYNTHETIC: valid JSON where a field has the wrong type or shape.
WRONG_SHAPES = [
    _case("openai_chat", b'data: [1]\n\n'),
    _case("openai_chat", b'data: {"choices":[{"delta":"x"}]}\n\n'),
    _case("openai_chat", b'data: {"choices":"x"}\n\n'),
    _case("openai_chat", b'data: {"choices":[{"delta":{"content":5}}]}\n\n'),
    _case("openai_chat", b'data: {"choices":[{"delta":{"reasoning":[1]}}]}\n\n'),
    _case("openai_chat", b'data: {"choices":[{"delta":{"refusal":[1]}}]}\n\n'),
    _case("openai_chat", b'data: {"choices":[{"index":"0","delta":{"content":"x"}}]}\n\n'),
    _case("openai_chat", b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":5,"function":{"name":[1]}}]}}]}\n\n'),
    _case("openai_chat", b'data: {"choices":[{"delta":{"content":[{"type":"text","text":[1]}]}}]}\n\n'),
    _case("openai_chat", b'data: {"usage":{"prompt_tokens":"ten","completion_tokens":[1]}}\n\n'),
    _case("anthropic", b'data: {"type":["x"]}\n\n'),
    _case("anthropic", b'event: message_start\ndata: {"type":"message_start","message":[1]}\n\n'),
    _case("anthropic", b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":[1]}\n\n'),
    _case("anthropic", b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                       b'"delta":{"type":"text_delta","text":[1]}}\n\n'),
    _case("gemini", b'data: {"candidates":"x"}\r\n\r\n'),
    _case("gemini", b'data: {"candidates":[{"content":{"parts":[{"text":["x"]}]}}]}\r\n\r\n'),
    _case("ollama", b'{"message":[1]}\n'),
    _case("ollama", b'{"message":{"role":"assistant","thinking":[1]},"done":false}\n'),
    _case("cohere", b'data: {"type":{"a":1}}\n\n'),
    _case("cohere", b'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":["x"]}\n\n'),
    _case("cohere", b'event: content-delta\ndata: {"type":"content-delta","index":0,'
                    b'"delta":{"message":{"content":{"text":[1]}}}}\n\n'),
    _case("cohere_v1", b'{"event_type":[]}\n'),
    _case("cohere_v1", b'{"event_type":"text-generation","text":[1]}\n'),
    _case("openai_responses", b'data: {"type":["x"]}\n\n'),
    _case("openai_responses", b'event: response.completed\ndata: {"type":"response.completed","response":[1]}\n\n'),
    _case("openai_responses", b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                              b'"delta":[1],"output_index":0,"item_id":"x"}\n\n'),
]


@pytest.mark.parametrize("protocol,body", WRONG_SHAPES)
def test_wrong_shape_chunk_never_crashes(protocol, body):
    module_for_protocol(protocol)
    provider = next(n for n, p in PROVIDERS.items() if p.protocol == protocol)
    feed_never_raises(module_for_protocol(protocol).Decoder, [body])
    check_core_body(provider, body)


@pytest.mark.parametrize("name", RECORDINGS)
@SETTINGS
@given(data=st.data())
def test_mutated_recordings_never_raise(name, data):
    body = bytearray(body_of(name))
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        pos = data.draw(st.integers(0, len(body)), label="pos")
        kind = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="kind")
        if kind == "insert" or pos == len(body):
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8), label="insert")
        elif kind == "delete":
            del body[pos : pos + data.draw(st.integers(1, 16), label="len")]
        else:
            body[pos] ^= data.draw(st.integers(1, 255), label="xor")
    pieces = data.draw(splits(bytes(body)), label="pieces")
    feed_never_raises(decoder_class(name), pieces)


@pytest.mark.parametrize("name", RECORDINGS)
@SETTINGS
@given(data=st.data())
def test_truncated_recordings_never_raise_in_the_decoder(name, data):
    body = body_of(name)
    cut = data.draw(st.integers(0, len(body)), label="cut")
    pieces = data.draw(splits(body[:cut]), label="pieces")
    feed_never_raises(decoder_class(name), pieces)


# ---------------------------------------------------------------------------
# Through StreamCore: a truncated stream raises only APIError subclasses
# ---------------------------------------------------------------------------

def run_core(name: str, pieces) -> tuple[BaseException | None, StreamCore]:
    call, request, decoder, _ = _CLIENT.prepare(f"{provider_for(name)}:model", "hi")
    assert type(decoder) is decoder_class(name)
    core = StreamCore(call, request, decoder)
    core.dispatch()
    try:
        for p in pieces:
            for _ in core.feed(p):
                pass
        for _ in core.finish():
            pass
    except BaseException as exc:  # noqa: BLE001 - the point is to see every kind
        return exc, core
    return None, core


@pytest.mark.parametrize("name", RECORDINGS)
@SETTINGS
@given(data=st.data())
def test_truncated_stream_raises_only_api_errors(name, data):
    decoder_class(name)  # skip if the module is missing
    body = body_of(name)
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")
    pieces = data.draw(splits(body[:cut]), label="pieces")
    exc, core = run_core(name, pieces)
    if exc is not None:
        assert isinstance(exc, llmrelay.APIError), f"{type(exc).__name__}: {exc}"
        # the partial response can always be built
        r = core.response()
        assert r.status == "error" or r.status == "aborted" or r.status == "ok"
    if cut <= len(body) // 2:
        # far from the final event: the stream cannot look complete
        assert exc is not None, "a stream cut in its first half must raise"
        if name not in IN_BAND_ERRORS:
            assert isinstance(exc, llmrelay.StreamInterruptedError), f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("name", RECORDINGS)
def test_empty_body_is_interrupted(name):
    decoder_class(name)
    exc, core = run_core(name, [])
    assert type(exc) is llmrelay.UnexpectedResponseError  # a kind of StreamInterruptedError: nothing came
    assert isinstance(exc, llmrelay.StreamInterruptedError) and "the body is empty" in str(exc)


@pytest.mark.parametrize("name", RECORDINGS)
def test_whole_recording_through_core(name):
    decoder_class(name)
    exc, core = run_core(name, [body_of(name)])
    if name in IN_BAND_ERRORS:
        assert isinstance(exc, llmrelay.ProviderStreamError) and not isinstance(exc, llmrelay.MalformedChunkError)
    else:
        assert exc is None, f"{type(exc).__name__}: {exc}"
        assert core.done
        assert core.response().status in ("ok", "truncated")


@pytest.mark.parametrize("name", [n for n in RECORDINGS if n.endswith(".sse")])
def test_cut_mid_event_says_so(name):
    """A connection closed in the middle of an SSE event: interrupted, and the message says where."""
    body = body_of(name)
    # cut inside the first data line that carries JSON (long before the final event)
    pos = body.find(b"data: {")
    assert pos >= 0
    exc, _ = run_core(name, [body[: pos + 10]])
    assert isinstance(exc, llmrelay.StreamInterruptedError), f"{type(exc).__name__}: {exc}"
    assert "middle of an event" in str(exc)
