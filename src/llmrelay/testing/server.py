"""A real HTTP/1.1 server on 127.0.0.1 that replays recorded provider streams.

Use it to test your own application offline, through the real HTTP path:

    from llmrelay.testing import ReplayServer, Reply

    with ReplayServer() as server:
        server.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse"))
        client = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, api_keys={"openai": "test"})
        print(client.complete("openai:gpt-4o", "Hi").text)
        print(server.requests[0].json)          # the exact request body sent

Each reply's body is written in pieces (`chunking`: "random" splits at random
byte boundaries, "events" one piece per SSE event / NDJSON line as real APIs
send them, "whole", or a fixed size), optionally paced with `delay` seconds
between pieces. The server runs its own event loop in a background thread, so
sync and async clients can both use it, and it notices at once when a client
closes the connection (`server.wait_disconnect()`).

A reply can also fail the way real providers do: `Reply(reset=True)` resets
the connection before any header, `Reply(cut_after=N)` drops it after N pieces
without ending the body, `Reply(stall_after=N, stall=seconds)` goes silent
after N pieces. `llmrelay.testing.faults` builds these (and HTTP errors with
`Retry-After`, in-band error events, malformed chunks) from recordings.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..wire.eventstream import split_messages
from .recordings import content_type_for, read_recording, status_for

EVENTSTREAM = "application/vnd.amazon.eventstream"

_EVENT_SPLIT = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)")


@dataclass
class Reply:
    """One scripted HTTP response."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: "random" | "events" | "whole" | int (fixed piece size) | list of piece sizes
    chunking: Any = "random"
    #: Seconds between pieces (realistic pacing), and before the headers.
    delay: float = 0.0
    first_byte_delay: float = 0.0
    seed: int | None = 0
    max_piece: int = 64
    #: Faults (see `llmrelay.testing.faults` for helpers that build them):
    #: close the connection (TCP reset) after reading the request, before any header.
    reset: bool = False
    #: Close the connection abruptly after this many body pieces (0: right after
    #: the headers), without the chunked terminator: a connection cut mid-stream.
    cut_after: int | None = None
    #: Pause `stall` seconds after this many body pieces (0: right after the
    #: headers), then go on: a stream that stops moving.
    stall_after: int | None = None
    stall: float = 0.0
    #: During the stall, send `keepalive_bytes` every `keepalive` seconds (0: a
    #: silent stall): headers and pings but no tokens, as a stuck provider does.
    keepalive: float = 0.0
    keepalive_bytes: bytes = b": keep-alive\n\n"

    @classmethod
    def recording(cls, name: str, **kw: Any) -> Reply:
        """A recorded real stream bundled with llmrelay (see `llmrelay.testing.recordings`)."""
        headers = kw.pop("headers", {})
        headers.setdefault("content-type", content_type_for(name))
        kw.setdefault("status", status_for(name))
        return cls(read_recording(name), headers=headers, **kw)

    @classmethod
    def json(cls, obj: Any, status: int = 200, **kw: Any) -> Reply:
        headers = kw.pop("headers", {})
        headers.setdefault("content-type", "application/json")
        return cls(json.dumps(obj).encode(), status=status, headers=headers, **kw)

    def pieces(self) -> list[bytes]:
        body = self.body
        if not body:
            return []
        mode = self.chunking
        if mode == "whole":
            return [body]
        if mode == "events":
            if self.headers.get("content-type") == EVENTSTREAM:  # binary: one message per piece
                messages = split_messages(body)
                if messages is not None:
                    return messages
            if b"\n\n" in body or b"\r\n\r\n" in body:
                return [p for p in _EVENT_SPLIT.split(body) if p]
            return [line for line in body.splitlines(keepends=True) if line]
        if isinstance(mode, int):
            return [body[i : i + mode] for i in range(0, len(body), mode)]
        if isinstance(mode, (list, tuple)):
            out, pos, sizes = [], 0, list(mode) or [len(body)]
            i = 0
            while pos < len(body):
                size = max(1, sizes[i % len(sizes)])
                out.append(body[pos : pos + size])
                pos += size
                i += 1
            return out
        rng = random.Random(self.seed)
        out, pos = [], 0
        while pos < len(body):
            size = rng.randint(1, self.max_piece)
            out.append(body[pos : pos + size])
            pos += size
        return out


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    disconnected_at: float | None = None
    completed: bool = False
    #: Body bytes written so far (each piece counted once its write drained): a count that stops growing shows
    #: that the client's backpressure reached the server.
    written: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Handler = Callable[[RecordedRequest], Reply]


class ReplayServer:
    """See the module docstring. `url` is `http://127.0.0.1:<port>`."""

    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | Handler | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self._queue: list[Reply] = list(replies)
        self.default = default
        self.requests: list[RecordedRequest] = []
        self.host = host
        #: The port to listen on (0: any free port); the bound port once started.
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._lock = threading.Lock()
        self._disconnect = threading.Condition(self._lock)
        self.connections = 0

    # -- lifecycle ------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ReplayServer:
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=2048)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            try:
                loop.run_until_complete(boot())
            except OSError as exc:  # the port is taken
                failed.append(exc)
                ready.set()
                loop.close()
                return
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="llmrelay-replay-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("replay server did not start")
        if failed:
            self._loop = None
            raise failed[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), loop)
        try:
            fut.result(5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- scripting ------------------------------------------------------------
    def enqueue(self, *replies: Reply) -> ReplayServer:
        """Serve these replies, in order, to the next requests."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def wait_disconnect(self, timeout: float = 5.0) -> RecordedRequest | None:
        """Block until a client closes a connection in the middle of a reply."""
        deadline = time.monotonic() + timeout
        with self._disconnect:
            while True:
                for r in self.requests:
                    if r.disconnected_at is not None:
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._disconnect.wait(left)

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        default = self.default
        if callable(default):
            return default(request)
        if default is not None:
            return default
        return Reply.json({"error": {"message": "replay server: no reply scripted for this request"}}, status=599)

    # -- HTTP -------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                reply = self._next_reply(request)
                keep = await self._respond(reader, writer, request, reply)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # client gone, or the server is stopping
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        return RecordedRequest(method, path, headers, body, time.monotonic())

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest, reply: Reply) -> bool:
        eof = asyncio.ensure_future(reader.read(65536))

        async def pause(seconds: float) -> bool:
            """Sleep, but wake at once if the client hangs up. True if it did."""
            if seconds > 0:
                await asyncio.wait({eof}, timeout=seconds)
            else:
                await asyncio.sleep(0)
            return eof.done()

        try:
            if await pause(reply.first_byte_delay):
                return self._hung_up(request)
            if reply.reset:
                _abort(writer, reset=True)
                return False
            headers = {"content-type": "text/event-stream", **{k.lower(): v for k, v in reply.headers.items()}}
            headers["transfer-encoding"] = "chunked"
            headers.pop("content-length", None)
            reason = "OK" if reply.status < 400 else "Error"
            head = f"HTTP/1.1 {reply.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            writer.write(head.encode("latin-1"))
            await writer.drain()
            pieces = reply.pieces()
            for sent, piece in enumerate(pieces):
                if sent == reply.cut_after:
                    _abort(writer)
                    return False
                if sent == reply.stall_after and await self._stall(writer, reply, pause):
                    return self._hung_up(request)
                if eof.done():
                    return self._hung_up(request)
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                request.written += len(piece)
                if reply.delay and await pause(reply.delay):
                    return self._hung_up(request)
            if reply.cut_after is not None and reply.cut_after >= len(pieces):
                _abort(writer)  # everything written, but never the chunked terminator
                return False
            if reply.stall_after is not None and reply.stall_after >= len(pieces) and await self._stall(writer, reply, pause):
                return self._hung_up(request)
            if eof.done():
                return self._hung_up(request)
            # stop watching before the last bytes: the client's next request must reach _read_request
            eof.cancel()
            await asyncio.gather(eof, return_exceptions=True)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            request.completed = True
            return True
        except ConnectionError:
            return self._hung_up(request)
        finally:
            if not eof.done():
                eof.cancel()
                await asyncio.gather(eof, return_exceptions=True)

    @staticmethod
    async def _stall(writer: asyncio.StreamWriter, reply: Reply, pause: Callable[[float], Any]) -> bool:
        """The stall of a reply (with keep-alive pings if asked). True if the client hung up."""
        if not reply.keepalive or not reply.keepalive_bytes:
            return await pause(reply.stall)
        end = time.monotonic() + reply.stall
        while (left := end - time.monotonic()) > 0:
            if await pause(min(reply.keepalive, left)):
                return True
            if time.monotonic() < end:
                ping = reply.keepalive_bytes
                writer.write(b"%x\r\n%s\r\n" % (len(ping), ping))
                await writer.drain()
        return False

    def _hung_up(self, request: RecordedRequest) -> bool:
        with self._disconnect:
            request.disconnected_at = time.monotonic()
            self._disconnect.notify_all()
        return False


def _abort(writer: asyncio.StreamWriter, *, reset: bool = False) -> None:
    """Drop the connection now. `reset`: with a TCP RST (SO_LINGER 0), as a crashed
    proxy does; otherwise a plain close after what was written (the client reads
    it all, then an incomplete chunked body)."""
    sock = writer.get_extra_info("socket")
    if reset and sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort() if reset else writer.close()
