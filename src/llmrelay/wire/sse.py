"""Server-sent events framing (WHATWG spec), on bytes."""

from __future__ import annotations

from ..errors import ResponseTooLargeError
from ..limits import DEFAULT_LIMITS

#: A frame: (event name or None, data bytes).
Frame = tuple["str | None", bytes]


def line_too_long(limit: int, what: str) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"the stream sent a {what} longer than Limits.max_line={limit} bytes; the connection was dropped",
        limit="max_line", size=limit,
    )


class LineBuffer:
    """Cuts bytes into LF-terminated lines for a framing parser. An unfinished line is kept as a
    list of pieces, joined once when its LF arrives: time linear in its length, whatever the
    split. Past `max_line` bytes it raises `ResponseTooLargeError`."""

    __slots__ = ("_buf", "_size", "max_line")

    def __init__(self, max_line: int | None = DEFAULT_LIMITS.max_line) -> None:
        # pieces of the unfinished line; an empty tuple while there is none (no list per stream in flight)
        self._buf: list[bytes] | tuple[()] = ()
        self._size = 0
        self.max_line = max_line

    def _split(self, chunk: bytes) -> list[bytes]:
        """The lines this chunk completes (without their LF); the rest is held."""
        if b"\n" not in chunk:
            if chunk:
                self._hold(chunk)
            return []
        if self._buf:  # the held line ends in this chunk: join it once, copy nothing twice
            nl = chunk.find(b"\n")
            held = b"".join([*self._buf, chunk[:nl]])
            self._buf, self._size = (), 0
            lines = chunk[nl + 1:].split(b"\n")
            lines.insert(0, held)
        else:
            lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            self._hold(rest)
        return lines

    def _hold(self, piece: bytes) -> None:
        if self._buf:
            self._buf.append(piece)  # not empty: a list
        else:
            self._buf = [piece]
        self._size += len(piece)
        if self.max_line is not None and self._size > self.max_line:
            self._buf, self._size = (), 0
            raise line_too_long(self.max_line, "line")

    def _take_rest(self) -> bytes:
        rest = b"".join(self._buf)
        self._buf, self._size = (), 0
        return rest


class SSEParser(LineBuffer):
    """Incremental SSE parser. `feed` may be called with any split of the body.

    Lines end in LF, CRLF or CR (a CR at the end of one chunk and an LF at the
    start of the next count as one line ending). Comment lines (`:`) are
    skipped; `id:` and `retry:` are ignored; multi-line `data:` is joined with
    LF. At EOF (`close`), a final event that lacks its blank line is still
    dispatched: a connection closed mid-event then shows up as undecodable
    data, which the protocol layer reports as an interrupted stream.

    An unfinished line and the extra `data:` lines of an event are kept as lists of
    pieces, joined once: time linear in the input. A line or an event longer than
    `max_line` bytes raises `ResponseTooLargeError`.
    """

    __slots__ = ("_event", "_data", "_more", "_event_size", "_skip_lf")

    def __init__(self, max_line: int | None = DEFAULT_LIMITS.max_line) -> None:
        super().__init__(max_line)
        self._event: str | None = None
        self._data: bytes | None = None
        self._more: list[bytes] | None = None  # the event's second and later data lines
        self._event_size = 0
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
        return self._lines(self._split(chunk))

    def _lines(self, lines: list[bytes]) -> list[Frame]:
        out: list[Frame] = []
        data = self._data
        event = self._event
        more = self._more
        for line in lines:
            if not line:
                if data is not None:
                    if more is not None:
                        data = b"\n".join([data, *more])
                        more = None
                    out.append((event, data))
                    data = None
                event = None
                continue
            if line[0] == 58:  # b":" comment / keep-alive
                continue
            if line[:6] == b"data: ":  # the usual line: one copy of the value, not two
                name, value = b"data", line[6:]
            else:
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
            if name == b"data":
                if data is None:
                    data = value
                else:
                    if more is None:
                        more = []
                        self._event_size = len(data)
                    more.append(value)
                    self._event_size += len(value) + 1
                    if self.max_line is not None and self._event_size > self.max_line:
                        self._data = self._more = self._event = None
                        raise line_too_long(self.max_line, "event")
            elif name == b"event":
                event = value.decode("utf-8", "replace")
        self._data = data
        self._event = event
        self._more = more
        return out

    def close(self) -> list[Frame]:
        return self._lines([self._take_rest(), b""] if self._buf else [b""])
