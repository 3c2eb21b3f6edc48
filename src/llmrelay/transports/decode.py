"""Reading a response body within the client's `Limits`, the same way for every transport.

The HTTP libraries are asked for the raw bytes; content decoding happens here,
so it can be bounded: `BodyReader.feed(raw)` returns the decoded bytes (never
more than `PIECE` at a time: the rest of a compressed chunk waits in `tail`,
taken with `more()`) and counts them against `max_body`. `ErrorBody` reads at most `max_error_body` decoded bytes of
an error response. Both are sans-IO: the transports only move bytes in.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

from ..errors import MalformedChunkError, ResponseTooLargeError
from ..limits import Limits

class Labels(Protocol):
    """Whom a request is for, for the errors a transport raises: `get("provider")`, `get("model")`. A dict,
    or the model turn itself (`engine.turn.StreamCore`: no dict of its own per stream in flight)."""

    def get(self, key: str, /) -> Any: ...


#: The most decoded bytes one compressed chunk yields at a time.
PIECE = 1 << 20
#: What we ask for: only the encodings we decode (and bound) ourselves.
ACCEPT_ENCODING = "gzip, deflate"


class _Inflater:
    __slots__ = ("_z", "_undecided", "tail")

    def __init__(self, encoding: str):
        # deflate may be zlib-wrapped or raw: the first bytes decide
        self._undecided = encoding == "deflate"
        self._z: Any = zlib.decompressobj(zlib.MAX_WBITS if self._undecided else zlib.MAX_WBITS | 16)
        self.tail = b""

    def feed(self, data: bytes, room: int) -> bytes:
        if self.tail:
            data = self.tail + data
        try:
            out = self._z.decompress(data, room)
        except zlib.error:
            if not self._undecided:
                raise
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._z.decompress(data, room)
        self._undecided = False
        self.tail = self._z.unconsumed_tail
        return out


def inflater_for(encoding: str | None) -> _Inflater | None:
    """None for identity; an inflater for gzip/deflate; else None (the library decodes it)."""
    if not encoding:
        return None
    enc = encoding.strip().lower()
    if enc in ("gzip", "x-gzip", "deflate"):
        return _Inflater("gzip" if enc != "deflate" else "deflate")
    return None


def decodes_itself(encoding: str | None) -> bool:
    """True when the body must be left to the HTTP library to decode (an encoding we do not bound)."""
    if not encoding:
        return False
    return encoding.strip().lower() not in ("gzip", "x-gzip", "deflate", "identity")


class BodyReader:
    """Decoded bytes of one response body, counted against `Limits.max_body`."""

    __slots__ = ("total", "max_body", "tail", "_inflate", "_ctx")

    def __init__(self, encoding: str | None, limits: Limits, ctx: Labels):
        #: Decoded bytes of the last chunk still wait (take them with `more()`).
        self.tail = False
        self.total = 0
        self.max_body = limits.max_body if limits.max_body is not None else 1 << 62  # None: no limit
        self._inflate = inflater_for(encoding)
        self._ctx = ctx

    def feed(self, raw: bytes) -> bytes:
        if self._inflate is not None:
            try:
                raw = self._inflate.feed(raw, PIECE)
            except zlib.error as exc:
                raise MalformedChunkError(f"could not decompress the body from {self._ctx.get('provider')}: {exc}",
                                          code="bad_encoding", provider=self._ctx.get("provider"),
                                          model=self._ctx.get("model")) from None
            self.tail = bool(self._inflate.tail)
        self.total = n = self.total + len(raw)
        if n > self.max_body:
            raise self._too_large()
        return raw

    def more(self) -> bytes:
        return self.feed(b"")

    def _too_large(self) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"the response body from {self._ctx.get('provider')} went past Limits.max_body={self.max_body} bytes "
            "(decoded); the connection was dropped",
            limit="max_body", size=self.max_body, provider=self._ctx.get("provider"), model=self._ctx.get("model"),
        )


class ErrorBody:
    """At most `max_error_body` decoded bytes of an error response; `cut` says the rest was dropped."""

    __slots__ = ("limit", "parts", "size", "cut", "_inflate")

    def __init__(self, encoding: str | None, limits: Limits):
        self.limit = limits.max_error_body
        self.parts: list[bytes] = []
        self.size = 0
        self.cut = False
        self._inflate = inflater_for(encoding)

    def add(self, raw: bytes) -> bool:
        """Take one raw chunk; True once enough was read (stop reading and drop the connection)."""
        try:
            data = self._inflate.feed(raw, self.limit - self.size + 1) if self._inflate is not None else raw
        except zlib.error:
            self.cut = True
            return True
        room = self.limit - self.size
        if len(data) > room or (self._inflate is not None and self._inflate.tail):
            data = data[:room]
            self.cut = True
        self.parts.append(data)
        self.size += len(data)
        return self.cut

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    @property
    def truncated(self) -> int | None:
        return self.limit if self.cut else None
