"""The AWS event-stream decoder (`llmrelay.wire.eventstream`) on every bundled Bedrock body.

- Differential: botocore's own event-stream parser reads the same bytes; the messages
  (headers and payloads) must be equal.
- Any split of a body gives the same messages (hypothesis).
- A corrupted byte anywhere (CRC, lengths, headers, payload) gives `EventStreamError`, never
  a wrong message; a body cut anywhere inside a message gives `EventStreamError` at `close()`.
- Buffers are bounded: a message announcing more than the limit is refused from its prelude.
"""

from __future__ import annotations

import struct
from zlib import crc32

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llmrelay.testing import read_recording, wire_recordings
from llmrelay.wire.eventstream import EventStreamError, EventStreamParser, encode_message, parse_headers

botocore_eventstream = pytest.importorskip("botocore.eventstream")

BODIES = [n for n in wire_recordings() if n.endswith(".eventstream")]
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ours(data: bytes, pieces: list[int] | None = None) -> list:
    p = EventStreamParser()
    out: list = []
    if pieces is None:
        out += p.feed(data)
    else:
        pos = 0
        for size in pieces:
            out += p.feed(data[pos : pos + size])
            pos += size
        out += p.feed(data[pos:])
    out += p.close()
    return out


def botocore_messages(data: bytes) -> list:
    buf = botocore_eventstream.EventStreamBuffer()
    buf.add_data(data)
    return [(m.headers, m.payload) for m in buf]


def test_all_bedrock_bodies_are_bundled():
    assert len(BODIES) == 19


@pytest.mark.parametrize("name", BODIES)
def test_same_messages_as_botocore(name):
    data = read_recording(name)
    expected = botocore_messages(data)
    got = ours(data)
    assert got == expected
    assert len(got) > 0
    assert all(h[":message-type"] == "event" for h, _ in got)


@pytest.mark.parametrize("name", BODIES)
@SETTINGS
@given(data=st.data())
def test_any_split_gives_the_same_messages(name, data):
    body = read_recording(name)
    sizes = data.draw(st.lists(st.integers(0, 80), max_size=60), label="piece sizes")
    assert ours(body, sizes) == ours(body)


@pytest.mark.parametrize("name", ["bedrock/converse_stream_thinking_claude.eventstream",
                                  "bedrock/invoke_stream_anthropic_text.eventstream"])
def test_one_byte_reads(name):
    body = read_recording(name)
    assert ours(body, [1] * len(body)) == ours(body)


@pytest.mark.parametrize("name", ["bedrock/converse_stream_tool_use_claude.eventstream",
                                  "bedrock/converse_stream_code_interpreter_nova2.eventstream"])
@SETTINGS
@given(data=st.data())
def test_a_corrupted_byte_is_an_error_never_a_wrong_message(name, data):
    body = bytearray(read_recording(name))
    at = data.draw(st.integers(0, len(body) - 1), label="at")
    body[at] ^= data.draw(st.integers(1, 255), label="xor")
    reference = ours(read_recording(name))
    step = data.draw(st.sampled_from([len(body), 7, 1]), label="read size")
    p = EventStreamParser()
    got: list = []
    with pytest.raises(EventStreamError):
        for pos in range(0, len(body), step):
            got += p.feed(bytes(body[pos : pos + step]))
        got += p.close()
    # the messages before the damaged one come out intact (also from the read that holds the damage)
    boundary, count = 0, 0
    while boundary + struct.unpack_from(">I", read_recording(name), boundary)[0] <= at:
        boundary += struct.unpack_from(">I", read_recording(name), boundary)[0]
        count += 1
    assert got == reference[:count]


def test_good_messages_before_a_bad_one_in_the_same_read():
    body = read_recording("bedrock/converse_stream_text_nova.eventstream")
    first = struct.unpack_from(">I", body, 0)[0]
    damaged = bytearray(body)
    damaged[first + 20] ^= 1  # inside the second message
    p = EventStreamParser()
    assert p.feed(bytes(damaged)) == ours(body)[:1]
    assert isinstance(p.error, EventStreamError)
    with pytest.raises(EventStreamError):
        p.feed(b"")


@pytest.mark.parametrize("name", BODIES[:6])
@SETTINGS
@given(data=st.data())
def test_a_cut_inside_a_message_is_an_error_at_close(name, data):
    body = read_recording(name)
    boundaries, pos = set(), 0
    while pos < len(body):
        pos += struct.unpack_from(">I", body, pos)[0]
        boundaries.add(pos)
    cut = data.draw(st.integers(1, len(body) - 1).filter(lambda c: c not in boundaries), label="cut")
    p = EventStreamParser()
    got = p.feed(body[:cut])
    assert got == ours(body)[: len(got)]
    assert p.pending > 0
    with pytest.raises(EventStreamError, match="ended inside a message"):
        p.close()


def test_the_parser_stays_failed_after_an_error():
    body = bytearray(read_recording("bedrock/converse_stream_text_nova.eventstream"))
    body[8] ^= 1  # the prelude CRC of the first message
    p = EventStreamParser()
    with pytest.raises(EventStreamError, match="prelude CRC"):
        p.feed(bytes(body))
    with pytest.raises(EventStreamError):
        p.feed(read_recording("bedrock/converse_stream_text_nova.eventstream"))
    with pytest.raises(EventStreamError):
        p.close()


def test_an_oversized_message_is_refused_from_its_prelude():
    prelude = struct.pack(">II", 64 * 1024 * 1024, 0)
    prelude += struct.pack(">I", crc32(prelude))
    p = EventStreamParser()
    with pytest.raises(EventStreamError, match="exceeds"):
        p.feed(prelude)
    small = EventStreamParser(max_message=100)
    message = encode_message({":message-type": "event"}, b"x" * 200)
    with pytest.raises(EventStreamError, match="exceeds"):
        small.feed(message[:12])


def test_impossible_lengths_are_refused():
    prelude = struct.pack(">II", 20, 30)  # headers longer than the message
    prelude += struct.pack(">I", crc32(prelude))
    with pytest.raises(EventStreamError, match="impossible"):
        EventStreamParser().feed(prelude + b"\0" * 8)


def test_every_header_value_type():
    """Synthetic header block with all ten value types (none of the recordings uses them all)."""
    raw = b""

    def h(name: str, kind: int, value: bytes) -> bytes:
        return bytes([len(name)]) + name.encode() + bytes([kind]) + value

    raw += h("t", 0, b"") + h("f", 1, b"") + h("b", 2, struct.pack(">b", -3)) + h("s", 3, struct.pack(">h", -300))
    raw += h("i", 4, struct.pack(">i", 70000)) + h("l", 5, struct.pack(">q", 2**40))
    raw += h("by", 6, struct.pack(">H", 3) + b"\x00\x01\x02") + h("st", 7, struct.pack(">H", 2) + "é".encode())
    raw += h("ts", 8, struct.pack(">q", 1700000000000)) + h("u", 9, bytes(range(16)))
    assert parse_headers(raw) == {
        "t": True, "f": False, "b": -3, "s": -300, "i": 70000, "l": 2**40, "by": b"\x00\x01\x02", "st": "é",
        "ts": 1700000000000, "u": bytes(range(16)),
    }
    with pytest.raises(EventStreamError):
        parse_headers(h("x", 42, b""))
    with pytest.raises(EventStreamError):
        parse_headers(h("st", 7, struct.pack(">H", 10) + b"abc"))


def test_encode_message_round_trips_through_botocore():
    message = encode_message({":message-type": "exception", ":exception-type": "throttlingException"}, b'{"message":"slow down"}')
    assert botocore_messages(message) == ours(message) == [
        ({":message-type": "exception", ":exception-type": "throttlingException"}, b'{"message":"slow down"}')]
