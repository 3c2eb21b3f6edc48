"""A JSON array written incrementally: `[{…}\n,\r\n{…}\n]` (Gemini without `alt=sse`).

Tracks bracket depth and string state (escapes included) so each top-level
element is handed out as soon as its closing brace arrives, whatever the
pretty-printing and however the bytes are split.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(rb'[\[\]{}"\\]')


class JSONArrayParser:
    __slots__ = ("_buf", "_pos", "_depth", "_in_str", "_esc", "_start", "_opened", "_closed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._depth = 0  # depth inside the outer array (0 = between elements)
        self._in_str = False
        self._esc = False
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
            if self._in_str:
                if self._esc:
                    self._esc = False
                    pos += 1
                    continue
                m = _SPECIAL.search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.start()
                c = buf[pos]
                if c == 0x5C:  # backslash
                    self._esc = True
                elif c == 0x22:
                    self._in_str = False
                pos += 1
                continue
            if not self._opened:
                c = buf[pos]
                if c == 0x5B:  # [
                    self._opened = True
                elif c not in b" \t\r\n":
                    raise ValueError(f"expected a JSON array, found {bytes([c])!r}")
                pos += 1
                continue
            if self._depth == 0:
                c = buf[pos]
                if c in b" \t\r\n,":
                    pos += 1
                    continue
                if c == 0x5D:  # ] end of the array
                    self._closed = True
                    pos += 1
                    continue
                self._start = pos
                if c in b"{[":
                    self._depth = 1
                elif c == 0x22:
                    self._depth = 1
                    self._in_str = True
                else:
                    raise ValueError(f"unexpected byte {bytes([c])!r} between array elements")
                pos += 1
                continue
            m = _SPECIAL.search(buf, pos)
            if m is None:
                pos = n
                break
            pos = m.start()
            c = buf[pos]
            pos += 1
            if c == 0x22:
                self._in_str = True
            elif c in b"{[":
                self._depth += 1
            elif c in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    out.append(bytes(buf[self._start : pos]))
                    self._start = -1
        # drop consumed bytes
        keep_from = self._start if self._start >= 0 else pos
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
