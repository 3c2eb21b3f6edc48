"""Newline-delimited JSON framing (Ollama, Cohere v1)."""

from __future__ import annotations

from ..limits import DEFAULT_LIMITS
from .sse import line_too_long


class NDJSONParser:
    """Yields each non-blank line (bytes, CR stripped). The last line may lack its LF at EOF.

    An unfinished line is kept as a list of pieces (joined once, when its LF arrives), so a
    long line costs time linear in its length; past `max_line` bytes it raises
    `ResponseTooLargeError`."""

    __slots__ = ("_buf", "_size", "max_line")

    def __init__(self, max_line: int | None = DEFAULT_LIMITS.max_line) -> None:
        self._buf: list[bytes] = []
        self._size = 0
        self.max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            if chunk:
                self._hold(chunk)
            return []
        if self._buf:  # the held line ends in this chunk: join it once, copy nothing twice
            nl = chunk.find(b"\n")
            self._buf.append(chunk[:nl])
            held = b"".join(self._buf)
            self._buf, self._size = [], 0
            lines = chunk[nl + 1:].split(b"\n")
            lines.insert(0, held)
        else:
            lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            self._hold(rest)
        return [s for s in (line.strip() for line in lines) if s]

    def _hold(self, piece: bytes) -> None:
        self._buf.append(piece)
        self._size += len(piece)
        if self.max_line is not None and self._size > self.max_line:
            self._buf, self._size = [], 0
            raise line_too_long(self.max_line, "line")

    def close(self) -> list[bytes]:
        rest = b"".join(self._buf).strip()
        self._buf, self._size = [], 0
        return [rest] if rest else []
