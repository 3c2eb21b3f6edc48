"""Framing: bytes in, frames out. No I/O, no JSON semantics.

- `SSEParser`: text/event-stream (CRLF/LF/CR line endings, comments, multi-line
  `data:`, a final event without its blank line flushed at EOF).
- `NDJSONParser`: one JSON document per line.
- `JSONArrayParser`: a JSON array written incrementally (Gemini without `alt=sse`).

Each has `feed(bytes) -> list[frame]` and `close() -> list[frame]` (EOF).
"""

from .jsonarray import JSONArrayParser
from .ndjson import NDJSONParser
from .sse import SSEParser

__all__ = ["SSEParser", "NDJSONParser", "JSONArrayParser"]
