"""Size limits on what a response may cost (bytes; None disables one).

Every buffer llmrelay keeps while reading a response has a bound, so a broken
or hostile server cannot make a call balloon: a line that never ends, a gzip
bomb, an endless stream or a huge error page each end in a typed
`ResponseTooLargeError` (naming the limit) that keeps the partial response.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    #: The longest line, frame or event the stream parsers buffer (an SSE event's
    #: `data:` lines together, an NDJSON line, a JSON-array element).
    max_line: int | None = 16 * MB
    #: The whole decoded (decompressed) body of one response. Compressed bodies are
    #: inflated in pieces of at most 1 MiB, so a gzip bomb stops here, never in MemoryError.
    max_body: int | None = 256 * MB
    #: How much of an error body (HTTP status >= 400) is read, decoded; the rest is
    #: dropped with the connection and the error message says the body was cut.
    max_error_body: int = 64 * 1024


DEFAULT_LIMITS = Limits()
