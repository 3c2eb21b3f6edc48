"""A small hostile HTTP server for the tests: it answers every request with a scripted behaviour
(an endless line, a gzip bomb, an echo of the request's secrets...), written straight to the
socket so nothing limits what it sends. Plus `client_sockets(port)`: this process's open TCP
sockets connected to `port`, read from /proc (Linux)."""

from __future__ import annotations

import socket
import threading
import zlib
from typing import Callable, Iterator

from llmrelay.testing.sockets import open_sockets

Behaviour = Callable[[dict], Iterator[bytes]]


class HostileServer:
    """`HostileServer(behaviour)`: `behaviour(request)` yields the raw bytes to send (status line and
    headers included); the server writes them until the client hangs up. `requests` counts requests."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.requests: list[dict] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.hung_up = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            want = int(headers.get("content-length", "0"))
            while len(body) < want:
                piece = conn.recv(65536)
                if not piece:
                    return
                body += piece
            request = {"line": lines[0], "headers": headers, "body": body}
            self.requests.append(request)
            try:
                for out in self.behaviour(request):
                    conn.sendall(out)
            except OSError:
                self.hung_up.set()


def head(status: int = 200, content_type: str = "text/event-stream", **headers: str) -> bytes:
    """A response head without a length: the body runs until the connection closes."""
    lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}", "connection: close"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def gzip_bomb(size: int, piece: bytes = b"\0" * (1 << 20), prefix: bytes = b"") -> Iterator[bytes]:
    """`size` bytes of `piece`s (after `prefix`) gzip-compressed, as it is produced (a few KB per MB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = z.compress(prefix)
    if out:
        yield out
    for _ in range(size // len(piece)):
        out = z.compress(piece)
        if out:
            yield out
    yield z.flush()


def client_sockets(port: int) -> int:
    """Open TCP sockets of this process whose remote end is 127.0.0.1:`port`."""
    return open_sockets(port)
