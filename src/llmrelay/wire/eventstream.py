"""AWS event-stream framing (`application/vnd.amazon.eventstream`, Bedrock): bytes in, messages out.

A message is:

    total length (u32) | headers length (u32) | prelude CRC32 (u32)
    headers (headers length bytes) | payload | message CRC32 (u32)

all big-endian. The prelude CRC covers the first 8 bytes, the message CRC
everything before it. A header is `name length (u8) | name | type (u8) | value`
(types 0-9: true, false, byte, short, int, long, bytes, string, timestamp, uuid).

`EventStreamParser.feed(bytes)` returns the complete messages as
`(headers: dict, payload: bytes)`; any split of the body gives the same
messages. A bad CRC, an impossible length or a bad header raises
`EventStreamError` (after handing out the good messages of the same read: then
`error` is set and the next call raises), and the parser stays failed (a binary
stream cannot be resynchronized). `close()` raises `EventStreamError` if a message was cut.
Buffers are bounded: a message announcing more than `max_message` bytes is an
error before its bytes are read.
"""

from __future__ import annotations

import struct
from zlib import crc32

#: Frames larger than this are refused (botocore's limits: 128 KiB of headers, 24 MiB of payload).
MAX_MESSAGE = 16 * 1024 * 1024 + 128 * 1024
MAX_HEADERS = 128 * 1024
_PRELUDE = 12
_MIN_MESSAGE = 16  # prelude + message CRC

_u32x3 = struct.Struct(">III").unpack_from
_u16 = struct.Struct(">H").unpack_from
_i16 = struct.Struct(">h").unpack_from
_i32 = struct.Struct(">i").unpack_from
_i64 = struct.Struct(">q").unpack_from
_u32 = struct.Struct(">I").unpack_from

#: Parsed header blocks by their raw bytes: Bedrock repeats the same few blocks
#: (`contentBlockDelta` event headers) on nearly every message.
_HEADER_CACHE_SIZE = 64


class EventStreamError(ValueError):
    """The bytes are not a valid AWS event stream (bad CRC, bad length, bad header, cut message)."""


Message = tuple[dict, bytes]


def parse_headers(raw: bytes) -> dict:
    headers: dict = {}
    pos, n = 0, len(raw)
    try:
        while pos < n:
            name_len = raw[pos]
            pos += 1
            name = raw[pos : pos + name_len].decode("utf-8")
            pos += name_len
            kind = raw[pos]
            pos += 1
            if kind == 7 or kind == 6:  # string, bytes
                size = _u16(raw, pos)[0]
                pos += 2
                value = raw[pos : pos + size]
                if len(value) != size:
                    raise EventStreamError(f"header {name!r}: value cut short")
                pos += size
                headers[name] = value.decode("utf-8") if kind == 7 else bytes(value)
            elif kind == 0:
                headers[name] = True
            elif kind == 1:
                headers[name] = False
            elif kind == 2:
                headers[name] = struct.unpack_from(">b", raw, pos)[0]
                pos += 1
            elif kind == 3:
                headers[name] = _i16(raw, pos)[0]
                pos += 2
            elif kind == 4:
                headers[name] = _i32(raw, pos)[0]
                pos += 4
            elif kind == 5 or kind == 8:  # long, timestamp (ms since the epoch)
                headers[name] = _i64(raw, pos)[0]
                pos += 8
            elif kind == 9:
                if pos + 16 > n:
                    raise EventStreamError(f"header {name!r}: uuid cut short")
                headers[name] = bytes(raw[pos : pos + 16])
                pos += 16
            else:
                raise EventStreamError(f"header {name!r}: unknown value type {kind}")
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed headers: {exc}") from None
    if pos != n:
        raise EventStreamError("malformed headers: a value runs past the header block")
    return headers


class EventStreamParser:
    """Incremental AWS event-stream parser (see the module docstring)."""

    __slots__ = ("_buf", "_need", "_error", "max_message", "_headers")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()  # the start of an unfinished message
        self._need = _PRELUDE  # bytes the unfinished message needs before it can be parsed
        self._error: EventStreamError | None = None
        self.max_message = max_message
        self._headers: dict[bytes, dict] = {}

    def feed(self, chunk: bytes) -> list[Message]:
        if self._error is not None:
            raise self._error
        if self._buf:
            self._buf += chunk  # amortized O(1): a big message in small reads is not quadratic
            if len(self._buf) < self._need:
                return []
            buf = bytes(self._buf)
            self._buf.clear()
        else:
            buf = bytes(chunk)
        out: list[Message] = []
        pos, n = 0, len(buf)
        cache = self._headers
        try:
            while n - pos >= _PRELUDE:
                total, hlen, prelude_crc = _u32x3(buf, pos)
                if crc32(buf[pos : pos + 8]) != prelude_crc:
                    raise EventStreamError(f"prelude CRC mismatch at byte {pos}")
                if total < _MIN_MESSAGE or hlen > total - _MIN_MESSAGE or hlen > MAX_HEADERS:
                    raise EventStreamError(f"impossible lengths (total {total}, headers {hlen}) at byte {pos}")
                if total > self.max_message:
                    raise EventStreamError(f"message of {total} bytes exceeds the {self.max_message}-byte limit")
                end = pos + total
                if end > n:
                    self._need = total
                    break
                if crc32(buf[pos : end - 4]) != _u32(buf, end - 4)[0]:
                    raise EventStreamError(f"message CRC mismatch at byte {pos}")
                raw = buf[pos + _PRELUDE : pos + _PRELUDE + hlen]
                headers = cache.get(raw)
                if headers is None:
                    headers = parse_headers(raw)
                    if len(cache) < _HEADER_CACHE_SIZE:
                        cache[raw] = headers
                out.append((headers, buf[pos + _PRELUDE + hlen : end - 4]))
                pos = end
        except EventStreamError as exc:
            self._error = exc
            self._buf.clear()
            if not out:
                raise
            return out  # the messages before the bad one; the error is raised by the next call (see `error`)
        if pos < n:
            if n - pos < _PRELUDE:
                self._need = _PRELUDE
            self._buf += memoryview(buf)[pos:]
        return out

    @property
    def error(self) -> EventStreamError | None:
        """Set once the stream is found invalid (a `feed` that returned good messages may have set it)."""
        return self._error

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held so far."""
        return len(self._buf)

    def close(self) -> list[Message]:
        if self._error is not None:
            raise self._error
        if self._buf:
            size = len(self._buf)
            self._buf.clear()
            raise EventStreamError(f"the stream ended inside a message ({size} bytes of it received)")
        return []


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (for tests and fault injection)."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode("utf-8"), value.encode("utf-8")
        raw += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = _PRELUDE + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack(">I", crc32(body))


def split_messages(body: bytes) -> list[bytes] | None:
    """The body cut at message boundaries (by the length fields, no CRC check), or None if the
    lengths do not tile the body (not an event stream). For test servers sending one message per read."""
    out, pos, n = [], 0, len(body)
    while pos < n:
        if n - pos < _MIN_MESSAGE:
            return None
        total = _u32(body, pos)[0]
        if total < _MIN_MESSAGE or pos + total > n:
            return None
        out.append(body[pos : pos + total])
        pos += total
    return out
