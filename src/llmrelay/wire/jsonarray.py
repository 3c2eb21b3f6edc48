"""A JSON array written incrementally: `[{…}\n,\r\n{…}\n]` (Gemini without `alt=sse`).

Tracks bracket depth and string state (escapes included) so each top-level
element is handed out as soon as its closing brace arrives, whatever the
pretty-printing and however the bytes are split.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(rb'[\[\]{}"\\]')


class JSONArrayParser:
    __slots__ = ("_buf", "_pos", "_depth", "_in_str", "_start", "_opened", "_closed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._depth = 0  # depth inside the outer array (0 = between elements)
        self._in_str = False
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
            if self._depth == 0:  # between elements (or before the opening bracket)
                c = buf[pos]
                pos += 1
                if c in b" \t\r\n":
                    continue
                if not self._opened:
                    if c != 0x5B:
                        raise ValueError(f"expected a JSON array, found {bytes([c])!r}")
                    self._opened = True
                elif c == 0x2C:  # ,
                    continue
                elif c == 0x5D:  # ] end of the array
                    self._closed = True
                elif c in b"{[":
                    self._start = pos - 1
                    self._depth = 1
                else:
                    raise ValueError(f"unexpected byte {bytes([c])!r} between array elements")
                continue
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
                    out.append(bytes(buf[self._start : pos]))
                    self._start = -1
        # drop consumed bytes (pos may point one past the end after an escape)
        keep_from = self._start if self._start >= 0 else min(pos, n)
        if keep_from:
            del buf[:keep_from]
            pos -= keep_from
            if self._start >= 0:
                self._start = 0
        self._pos = pos
        return out

    @property
    def complete(self) -> bool:
        return self._closed

    def close(self) -> list[bytes]:
        if self._start >= 0:
            tail = bytes(self._buf[self._start :])
            self._start = -1
            return [tail]  # an unfinished element: the protocol layer reports the cut
        return []
