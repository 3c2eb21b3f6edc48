"""Server-sent events framing (WHATWG spec), on bytes."""

from __future__ import annotations

#: A frame: (event name or None, data bytes).
Frame = tuple["str | None", bytes]


class SSEParser:
    """Incremental SSE parser. `feed` may be called with any split of the body.

    Lines end in LF, CRLF or CR (a CR at the end of one chunk and an LF at the
    start of the next count as one line ending). Comment lines (`:`) are
    skipped; `id:` and `retry:` are ignored; multi-line `data:` is joined with
    LF. At EOF (`close`), a final event that lacks its blank line is still
    dispatched: a connection closed mid-event then shows up as undecodable
    data, which the protocol layer reports as an interrupted stream.
    """

    __slots__ = ("_buf", "_event", "_data", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: bytes | None = None
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[Frame]:
        if not chunk:
            return []  # an empty read must not forget a pending CR (CRLF split across reads)
        if (  # fast path: exactly one `data: ...` event, as most APIs write them (one per read)
            chunk[:6] == b"data: "
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk[-1:] == b"\n"
            and not self._buf
            and self._data is None
            and self._event is None
            and not self._skip_lf
            and b"\r" not in chunk
        ):
            return [(None, chunk[6:-2])]
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            self._buf += chunk
            return []
        lines = (self._buf + chunk).split(b"\n") if self._buf else chunk.split(b"\n")
        self._buf = lines.pop()
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[Frame]:
        out: list[Frame] = []
        data = self._data
        event = self._event
        for line in lines:
            if not line:
                if data is not None:
                    out.append((event, data))
                    data = None
                event = None
                continue
            if line[0] == 58:  # b":" comment / keep-alive
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data = value if data is None else data + b"\n" + value
            elif name == b"event":
                event = value.decode("utf-8", "replace")
        self._data = data
        self._event = event
        return out

    def close(self) -> list[Frame]:
        lines = [self._buf, b""] if self._buf else [b""]
        self._buf = b""
        return self._lines(lines)
