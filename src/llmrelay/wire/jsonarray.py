"""A JSON array written incrementally: `[{…}\n,\r\n{…}\n]` (Gemini without `alt=sse`).

Tracks bracket depth and string state (escapes included) so each top-level
element is handed out as soon as its closing brace arrives, whatever the
pretty-printing and however the bytes are split.

It never raises: a body that is not an array (a bare error object, an HTML
error page) is still cut into frames, which the protocol layer then decodes
or reports as malformed.
"""

from __future__ import annotations

import re

from ..limits import DEFAULT_LIMITS
from .sse import line_too_long

_SPECIAL = re.compile(rb'[\[\]{}"\\]')
_STRING = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[ \t\r\n,\]]")

# what the parser is inside of, at the top level of the array
_BETWEEN, _NESTED, _STR, _SCALAR = 0, 1, 2, 3


class JSONArrayParser:
    __slots__ = ("_buf", "_pos", "_state", "_depth", "_in_str", "_start", "_opened", "_closed", "max_line")

    def __init__(self, max_line: int | None = DEFAULT_LIMITS.max_line) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._state = _BETWEEN
        self._depth = 0  # bracket depth inside the current object/array element
        self._in_str = False  # inside a string within a nested element
        self._start = -1  # where the current element began
        self._opened = False
        self._closed = False

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        out: list[bytes] = []
        buf = self._buf
        pos = self._pos
        n = len(buf)
        while pos < n:
            state = self._state
            if state == _BETWEEN:
                c = buf[pos]
                pos += 1
                if c in b" \t\r\n":
                    continue
                if not self._opened:
                    self._opened = True
                    if c == 0x5B:  # [
                        continue
                    # not an array: read the body as a sequence of bare values
                if c == 0x2C:  # ,
                    continue
                if c == 0x5D:  # ] end of the array
                    self._closed = True
                    continue
                self._start = pos - 1
                if c in b"{[":
                    self._state = _NESTED
                    self._depth = 1
                elif c == 0x22:  # "
                    self._state = _STR
                else:  # a number, true/false/null, or garbage
                    self._state = _SCALAR
                continue
            if state == _NESTED:
                m = _SPECIAL.search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.end()
                c = buf[pos - 1]
                if self._in_str:
                    if c == 0x5C:  # backslash: skip the escaped byte
                        pos += 1
                    elif c == 0x22:
                        self._in_str = False
                elif c == 0x22:
                    self._in_str = True
                elif c in b"{[":
                    self._depth += 1
                elif c in b"}]":
                    self._depth -= 1
                    if self._depth == 0:
                        self._emit(out, pos)
                continue
            if state == _STR:
                m = _STRING.search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.end()
                if buf[pos - 1] == 0x5C:
                    pos += 1
                else:
                    self._emit(out, pos)
                continue
            # _SCALAR: ends before whitespace, "," or "]"
            m = _SCALAR_END.search(buf, pos)
            if m is None:
                pos = n
                break
            pos = m.start()
            self._emit(out, pos)
        # drop consumed bytes (pos may point one past the end after an escape)
        keep_from = self._start if self._start >= 0 else min(pos, n)
        if keep_from:
            del buf[:keep_from]
            pos -= keep_from
            if self._start >= 0:
                self._start = 0
        self._pos = pos
        if self.max_line is not None and len(buf) > self.max_line and self._start >= 0:
            self._buf, self._pos, self._start, self._state = bytearray(), 0, -1, _BETWEEN
            raise line_too_long(self.max_line, "JSON element")
        return out

    def _emit(self, out: list[bytes], end: int) -> None:
        out.append(bytes(self._buf[self._start : end]))
        self._start = -1
        self._state = _BETWEEN

    @property
    def complete(self) -> bool:
        return self._closed

    def close(self) -> list[bytes]:
        if self._start >= 0:
            tail = bytes(self._buf[self._start :])
            self._start = -1
            self._state = _BETWEEN
            return [tail]  # an unfinished element: the protocol layer reports the cut
        return []
