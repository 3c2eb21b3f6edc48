"""Newline-delimited JSON framing (Ollama, Cohere v1)."""

from __future__ import annotations


class NDJSONParser:
    """Yields each non-blank line (bytes, CR stripped). The last line may lack its LF at EOF."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._buf += chunk
            return []
        lines = (self._buf + chunk).split(b"\n") if self._buf else chunk.split(b"\n")
        self._buf = lines.pop()
        return [s for s in (line.strip() for line in lines) if s]

    def close(self) -> list[bytes]:
        rest = self._buf.strip()
        self._buf = b""
        return [rest] if rest else []
