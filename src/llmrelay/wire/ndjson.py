"""Newline-delimited JSON framing (Ollama, Cohere v1)."""

from __future__ import annotations

from .sse import LineBuffer


class NDJSONParser(LineBuffer):
    """Yields each non-blank line (bytes, CR stripped). The last line may lack its LF at EOF.
    Linear in the input and bounded by `max_line` (see `LineBuffer`)."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> list[bytes]:
        return [s for s in (line.strip() for line in self._split(chunk)) if s]

    def close(self) -> list[bytes]:
        rest = self._take_rest().strip()
        return [rest] if rest else []
