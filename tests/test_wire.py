"""Framing parsers (`llmrelay.wire`): bytes in, frames out, whatever the split.

Hand-written inputs here are synthetic; the real recordings are exercised in
test_properties.py and the protocol tests.
"""

from __future__ import annotations

import json

import pytest

from llmrelay.testing import read_recording
from llmrelay.wire import JSONArrayParser, NDJSONParser, SSEParser


def feed_all(parser, pieces):
    out = []
    for p in pieces:
        out.extend(parser.feed(p))
    out.extend(parser.close())
    return out


def sse(pieces):
    return feed_all(SSEParser(), pieces)


def every_split(body: bytes):
    """The body whole, byte by byte, and cut in two at every position."""
    yield [body]
    yield [body[i : i + 1] for i in range(len(body))]
    for i in range(len(body) + 1):
        yield [body[:i], body[i:]]


# ---------------------------------------------------------------------------
# SSE
# ---------------------------------------------------------------------------

TWO_EVENTS = [(None, b'{"a":1}'), ("ping", b"{}")]


@pytest.mark.parametrize(
    "body",
    [
        b'data: {"a":1}\n\nevent: ping\ndata: {}\n\n',
        b'data: {"a":1}\r\n\r\nevent: ping\r\ndata: {}\r\n\r\n',
        b'data: {"a":1}\r\revent: ping\rdata: {}\r\r',
        # mixed endings in one stream
        b'data: {"a":1}\r\n\nevent: ping\rdata: {}\n\r\n',
    ],
    ids=["LF", "CRLF", "CR", "mixed"],
)
def test_sse_line_endings(body):
    for pieces in every_split(body):
        assert sse(pieces) == TWO_EVENTS, pieces


def test_sse_crlf_split_between_feeds_is_one_line_ending():
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    # the LF completing the CRLF must not count as a second (blank) line
    assert p.feed(b"\ndata: b\r") == []
    assert p.feed(b"\n\r") == [(None, b"a\nb")]
    assert p.feed(b"\n") == []
    assert p.close() == []


def test_sse_cr_then_empty_feed_then_lf():
    """An empty read between the CR and the LF of one CRLF (synthetic)."""
    p = SSEParser()
    out = p.feed(b"data: a\r")
    out += p.feed(b"")
    out += p.feed(b"\ndata: b\r\n\r\n")
    out += p.close()
    assert out == [(None, b"a\nb")]


def test_sse_comments_and_keepalives_are_skipped():
    body = b": OPENROUTER PROCESSING\n\n:\n\ndata: {}\n: inside an event\ndata: x\n\n: trailing\n"
    for pieces in every_split(body):
        assert sse(pieces) == [(None, b"{}\nx")]


def test_sse_multiline_data_joined_with_lf():
    body = b"data: line one\ndata:line two\ndata:  indented\ndata\n\n"
    # one optional space after the colon is removed; a bare "data" adds an empty line
    assert sse([body]) == [(None, b"line one\nline two\n indented\n")]


def test_sse_event_name_resets_after_dispatch():
    body = b"event: error\ndata: 1\n\ndata: 2\n\nevent: a\nevent: b\ndata: 3\n\n"
    for pieces in every_split(body):
        assert sse(pieces) == [("error", b"1"), (None, b"2"), ("b", b"3")]


def test_sse_event_without_data_is_not_dispatched_and_name_does_not_leak():
    body = b"event: lonely\n\ndata: x\n\n"
    assert sse([body]) == [(None, b"x")]


def test_sse_id_and_retry_and_unknown_fields_ignored():
    body = b"id: 7\nretry: 1000\nfoo: bar\ndata: x\n\n"
    assert sse([body]) == [(None, b"x")]


def test_sse_unterminated_final_event_flushed_at_close():
    p = SSEParser()
    assert p.feed(b'data: {"a":1}\n\nevent: message_stop\ndata: {"type":"message_stop"}') == [(None, b'{"a":1}')]
    assert p.close() == [("message_stop", b'{"type":"message_stop"}')]


def test_sse_unterminated_final_event_with_single_newline_flushed_at_close():
    p = SSEParser()
    assert p.feed(b"data: tail\n") == []
    assert p.close() == [(None, b"tail")]


def test_sse_close_on_clean_stream_and_on_empty_stream():
    p = SSEParser()
    assert p.feed(b"data: x\n\n") == [(None, b"x")]
    assert p.close() == []
    assert SSEParser().close() == []


def test_sse_utf8_multibyte_split_across_feeds():
    text = "héllo 😊 — 中文"
    body = ("data: " + json.dumps({"t": text}, ensure_ascii=False) + "\n\n").encode()
    assert len(body) != len(text)  # really multibyte
    for pieces in every_split(body):
        frames = sse(pieces)
        assert len(frames) == 1
        assert json.loads(frames[0][1]) == {"t": text}


def test_sse_data_is_bytes_and_event_is_str():
    [(name, data)] = sse([b"event: caf\xc3\xa9\ndata: x\n\n"])
    assert name == "café" and data == b"x"


def test_sse_real_gemini_crlf_recording_every_split_matches_whole():
    body = read_recording("gemini/text_sse.sse")
    assert b"\r\n\r\n" in body
    whole = sse([body])
    assert len(whole) >= 2 and all(name is None for name, _ in whole)
    for frame in whole:
        json.loads(frame[1])
    assert sse([body[i : i + 1] for i in range(len(body))]) == whole
    for i in range(0, len(body) + 1, 3):
        assert sse([body[:i], body[i:]]) == whole


# ---------------------------------------------------------------------------
# NDJSON
# ---------------------------------------------------------------------------


def nd(pieces):
    return feed_all(NDJSONParser(), pieces)


def test_ndjson_lines_and_blank_lines_and_crlf():
    body = b'{"a":1}\n\n{"b":2}\r\n   \n{"c":"\xc3\xa9"}\n'
    for pieces in every_split(body):
        assert nd(pieces) == [b'{"a":1}', b'{"b":2}', b'{"c":"\xc3\xa9"}']


def test_ndjson_last_line_without_lf_flushed_at_close():
    p = NDJSONParser()
    assert p.feed(b'{"a":1}\n{"done":true}') == [b'{"a":1}']
    assert p.close() == [b'{"done":true}']
    assert p.close() == []


def test_ndjson_real_recording_any_split():
    body = read_recording("ollama/chat_text_done_stop.ndjson")
    whole = nd([body])
    assert [json.loads(x)["done"] for x in whole][-1] is True
    for i in range(len(body) + 1):
        assert nd([body[:i], body[i:]]) == whole
    assert nd([body[i : i + 1] for i in range(len(body))]) == whole


# ---------------------------------------------------------------------------
# JSON array (Gemini without alt=sse)
# ---------------------------------------------------------------------------

PRETTY = (
    b'[{\n  "candidates": [\n    {\n      "content": {"parts": [{"text": "a ] } [ { \\" \\\\"}]}\n    }\n  ]\n}\n'
    b',\r\n{\n  "x": [1, 2, {"y": "}"}],\n  "s": "\xe4\xb8\xad\\u00e9"\n}\n]'
)


def ja(pieces):
    p = JSONArrayParser()
    out = feed_all(p, pieces)
    return out, p


def test_json_array_pretty_printed_elements_split_at_every_byte():
    expected = [
        {"candidates": [{"content": {"parts": [{"text": 'a ] } [ { " \\'}]}}]},
        {"x": [1, 2, {"y": "}"}], "s": "中é"},
    ]
    for pieces in every_split(PRETTY):
        frames, parser = ja(pieces)
        assert [json.loads(f) for f in frames] == expected, pieces
        assert parser.complete


def test_json_array_element_emitted_as_soon_as_it_closes():
    p = JSONArrayParser()
    assert p.feed(b'[{"a":1}') == [b'{"a":1}']
    assert not p.complete
    assert p.feed(b"\n,\r\n") == []
    assert p.feed(b'{"b":[') == []
    assert p.feed(b"2]}") == [b'{"b":[2]}']
    assert p.feed(b"\n]") == []
    assert p.complete
    assert p.close() == []


def test_json_array_empty_and_whitespace():
    frames, p = ja([b"  \r\n[ \n ]\n"])
    assert frames == [] and p.complete


def test_json_array_unfinished_element_returned_at_close():
    p = JSONArrayParser()
    assert p.feed(b'[{"a":1},\n{"b": "cut') == [b'{"a":1}']
    assert not p.complete
    assert p.close() == [b'{"b": "cut']


@pytest.mark.parametrize(
    "name",
    ["gemini/json_array_enum_int_crlf.json", "gemini/json_array_text_thoughts.json", "gemini/json_array_thought_function_call.json"],
)
def test_json_array_real_recordings_every_split(name):
    body = read_recording(name)
    expected = json.loads(body)
    frames, p = ja([body])
    assert [json.loads(f) for f in frames] == expected and p.complete
    for i in range(len(body) + 1):
        frames, p = ja([body[:i], body[i:]])
        assert [json.loads(f) for f in frames] == expected
    frames, p = ja([body[i : i + 1] for i in range(len(body))])
    assert [json.loads(f) for f in frames] == expected and p.complete


def test_json_array_scalar_elements():
    frames, p = ja([b'[1, "two", {"three": 3}, true, null]'])
    assert [json.loads(f) for f in frames] == [1, "two", {"three": 3}, True, None]
    assert p.complete
    for pieces in every_split(b'[12,"a]b", -3.5e2]'):
        frames, p = ja(pieces)
        assert [json.loads(f) for f in frames] == [12, "a]b", -350.0] and p.complete


@pytest.mark.parametrize(
    "garbage",
    [b"<html>502 Bad Gateway</html>", b'{"error": {"code": 500}}', b"[{]]]}}}", b"\x00\xff\xfe", b"[1 2 @@ }"],
)
def test_json_array_never_raises_on_garbage(garbage):
    """Decoders must never raise: bad framing becomes frames the protocol layer rejects."""
    for pieces in every_split(garbage):
        p = JSONArrayParser()
        for piece in pieces:
            p.feed(piece)
        p.close()


def test_json_array_bare_object_body_is_one_frame():
    """A 200 body that is a single JSON object (not an array) still reaches the decoder (synthetic)."""
    frames, p = ja([b'{"error": {"code": 500, "message": "x"}}\n'])
    assert [json.loads(f) for f in frames] == [{"error": {"code": 500, "message": "x"}}]
    assert not p.complete
