"""A slow client over real sockets: the gateway passes its backpressure up to the provider.

The client socket gets a small receive buffer and reads nothing for a while; the
provider's stream is far larger than every buffer on the way (kernel and
user-space, client and upstream side) can hold. The provider's writes must stall,
which bounds what the gateway can have buffered (everything the provider wrote
minus what the client read, i.e. minus nothing); then the client reads it all and
every piece of text arrives exactly once."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest

from gateway_helpers import GatewayThread, config_for

pytest.importorskip("uvicorn")

from llmrelay.testing import ReplayServer, Reply  # noqa: E402

from helpers import wait_for

PIECES = 6000
PIECE_TEXT = 8000  # characters of text per chunk: ~48 MB of SSE in all, several times what the buffers hold (~10 MB here)


def _text(i: int) -> str:
    return f"<{i:05d}>" + "abcdefghij"[i % 10] * (PIECE_TEXT - 7)


def _long_chat_stream() -> bytes:
    out = []
    for i in range(PIECES):
        chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o",
                 "choices": [{"index": 0, "delta": {"content": _text(i)}, "finish_reason": None}]}
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    last = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    out.append(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
    return b"".join(out)


def _settled(count, deadline: float) -> int:
    """Poll `count()` until it has started and then stops growing for a while (or the deadline passes);
    the last value. (A loaded machine can pause the writer before its first byte: that is no stall.)"""
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif last and time.monotonic() - since > 1.0:
            break
    return last


class _AnthropicReader:
    """Reads the chunked SSE answer as it arrives, keeping only a hash of its text (the answer is tens of MB)."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.sse = bytearray()
        self.head: bytes | None = None
        self.text = hashlib.sha256()
        self.ended = False

    def feed(self, data: bytes) -> None:
        self.raw += data
        if self.head is None:
            if b"\r\n\r\n" not in self.raw:
                return
            head, _, rest = bytes(self.raw).partition(b"\r\n\r\n")
            self.head, self.raw = head, bytearray(rest)
        while not self.ended and (eol := self.raw.find(b"\r\n")) >= 0:  # the body is chunked
            size = int(self.raw[:eol], 16)
            if len(self.raw) < eol + 2 + size + 2:
                return
            if size == 0:
                self.ended = True
            self.sse += self.raw[eol + 2:eol + 2 + size]
            del self.raw[:eol + 2 + size + 2]
        while (end := self.sse.find(b"\n\n")) >= 0:
            for line in bytes(self.sse[:end]).split(b"\n"):
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
                        self.text.update(event["delta"]["text"].encode())
            del self.sse[:end + 2]


def test_a_client_that_reads_nothing_stalls_the_provider_then_gets_everything_once():
    body = _long_chat_stream()
    with ReplayServer() as up:
        with GatewayThread(config_for(up.url, "server: {keepalive: 0}")) as gw:
            up.enqueue(Reply(body, headers={"content-type": "text/event-stream"}, chunking=65536))
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
            sock.connect(("127.0.0.1", gw.port))
            with sock:
                data = json.dumps({"model": "gpt", "max_tokens": 50, "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]}).encode()
                sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(data), data))
                deadline = time.monotonic() + 60
                while not up.requests and time.monotonic() < deadline:
                    time.sleep(0.01)
                mine = up.requests[-1]
                stalled = _settled(lambda: mine.written, deadline)
                # the provider is blocked in its writes, far from the end: nobody on the way buffers without bound
                assert not mine.completed and mine.disconnected_at is None
                assert 0 < stalled < len(body) // 2, (stalled, len(body))
                sock.settimeout(60)
                reader = _AnthropicReader()
                while not reader.ended and (chunk := sock.recv(1 << 20)):
                    reader.feed(chunk)
        wait_for(lambda: mine.completed, "the provider to finish its reply")  # marked after its last write
    assert reader.head is not None and b" 200 " in reader.head.split(b"\r\n")[0]
    expected = hashlib.sha256()
    for i in range(PIECES):
        expected.update(_text(i).encode())
    assert reader.ended and reader.text.hexdigest() == expected.hexdigest()  # all of it, once, in order
