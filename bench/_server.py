"""Benchmark server: synthetic OpenAI Chat SSE streams, generated lazily, in its own process.

Run as `python bench/_server.py`; it prints its port on stdout and serves until
stdin closes (or it is terminated). The scenario is the first path segment, so
one server covers every benchmark (clients use `base_url = URL/<scenario>/v1`):

    /n<N>/v1/chat/completions        N content chunks, written as fast as the client reads
    /p<N>d<MS>/v1/chat/completions   N content chunks, MS milliseconds apart (paced)
    /c<N>/v1/chat/completions        N content chunks, then the connection is cut (no final event:
                                     a fault, for the soak)
    (a request without `"stream": true` gets the N-chunk answer as one chat.completion JSON body)
    /b<N>/model/<id>/converse-stream N Bedrock ConverseStream text deltas (AWS event stream, one
                                     message per HTTP chunk), then contentBlockStop, messageStop, metadata
    /t<N>/v1/chat/completions        a tool round: a request without a tool result gets a short
                                     tool-call stream (one call of `lookup`, arguments in fragments,
                                     finish_reason "tool_calls"); one that carries a tool result
                                     (`"tool_call_id"` in the body) gets the N-chunk answer, as fast
                                     as the client reads

Every body is: N content chunks (the first carries `role`), a `finish_reason`
chunk, a usage chunk, then `data: [DONE]`, exactly as OpenAI sends them with
`stream_options={"include_usage": true}`. Each SSE event is its own HTTP chunk
(`Transfer-Encoding: chunked`) and its own socket write, with TCP_NODELAY, as
real APIs send them. Nothing is held per chunk: a 100,000-chunk body costs the
server no memory.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading

_ID = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
_HEAD = {"id": _ID, "object": "chat.completion.chunk", "created": 1741569952, "model": "gpt-4o-2024-08-06",
         "service_tier": "default", "system_fingerprint": "fp_f9f4fb6dbf"}
WORDS = (
    " The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", " Streaming",
    " responses", " arrive", " one", " token", " at", " a", " time", ",", " and", " each", " token",
    " is", " its", " own", " server", "-sent", " event", ";", " naïve", " clients", " pay", " for",
    " every", " one", " of", " them", "!", "\n\n", "Here", "'s", " a", " list", ":\n", "-", " item",
    " \"quoted\"", " café", " 😀", " end",
)


def _event(obj: dict) -> bytes:
    data = b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _content(text: str, first: bool = False) -> dict:
    delta = {"role": "assistant", "content": text, "refusal": None} if first else {"content": text}
    return {**_HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], "usage": None}


FIRST = _event(_content(WORDS[0], first=True))
CONTENT = [_event(_content(w)) for w in WORDS]
FINISH = _event({**_HEAD, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], "usage": None})
DONE = b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
END = b"0\r\n\r\n"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
    b"cache-control: no-cache\r\nx-request-id: req_bench\r\nopenai-processing-ms: 12\r\n\r\n"
)


def usage(n: int) -> bytes:
    u = {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": n + 9,
         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                       "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    return _event({**_HEAD, "choices": [], "usage": u})


def text_of(n: int) -> str:
    """The text a client must assemble for an n-chunk stream (for checks)."""
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


def _tool_delta(call: dict, first: bool = False) -> dict:
    delta: dict = {"tool_calls": [call]}
    if first:
        delta = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
    return {**_HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], "usage": None}


TOOL_NAME = "lookup"
TOOL_ROUND = (
    [_event(_tool_delta({"index": 0, "id": "call_bench0001", "type": "function",
                         "function": {"name": TOOL_NAME, "arguments": ""}}, first=True))]
    + [_event(_tool_delta({"index": 0, "function": {"arguments": a}})) for a in ('{"', "city", '":"', "Paris", '"}')]
    + [_event({**_HEAD, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}],
               "usage": None}), usage(7), DONE]
)

_STREAM = re.compile(rb'"stream"\s*:\s*true')


def completion(n: int) -> dict:
    """The non-streaming answer to a request without `"stream": true` (the gateway benchmark)."""
    u = json.loads(usage(n).split(b"data: ", 1)[1].split(b"\n", 1)[0])["usage"]
    return {**_HEAD, "object": "chat.completion", "usage": u, "choices": [{"index": 0, "finish_reason": "stop",
            "logprobs": None, "message": {"role": "assistant", "content": text_of(n), "refusal": None}}]}


_SCENARIO = re.compile(rb"^/(?:n(\d+)|p(\d+)d(\d+)|t(\d+)|c(\d+))/")
_BEDROCK = re.compile(rb"^/b(\d+)/model/[^/]+/converse-stream")
_BEDROCK_CACHE: dict[str, list[bytes]] = {}


def bedrock_messages() -> dict[str, list[bytes]]:
    """Bedrock ConverseStream messages (AWS event stream, each as one HTTP chunk), built once:
    the same words as the SSE streams, with the `p` padding field Bedrock adds."""
    if not _BEDROCK_CACHE:
        from llmrelay.wire.eventstream import encode_message

        def msg(kind: str, obj: dict) -> bytes:
            data = encode_message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                                  json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
            return b"%x\r\n%s\r\n" % (len(data), data)

        _BEDROCK_CACHE["start"] = [msg("messageStart", {"p": "abcdefghijklmn", "role": "assistant"})]
        _BEDROCK_CACHE["content"] = [msg("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w},
                                                               "p": "abcdefghijklmnopqrstuvwxyzABCD"}) for w in WORDS]
        _BEDROCK_CACHE["stop"] = [msg("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefghij"}),
                                  msg("messageStop", {"p": "abcdefghijklmnopq", "stopReason": "end_turn"})]
    return _BEDROCK_CACHE


def bedrock_metadata(n: int) -> bytes:
    from llmrelay.wire.eventstream import encode_message

    data = encode_message({":event-type": "metadata", ":content-type": "application/json", ":message-type": "event"},
                          json.dumps({"metrics": {"latencyMs": 100}, "p": "abc",
                                      "usage": {"inputTokens": 9, "outputTokens": n, "totalTokens": n + 9}}).encode())
    return b"%x\r\n%s\r\n" % (len(data), data)


BEDROCK_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\ntransfer-encoding: chunked\r\n"
    b"x-amzn-requestid: req_bench\r\n\r\n"
)


async def _respond_bedrock(writer: asyncio.StreamWriter, n: int) -> None:
    m = bedrock_messages()
    write, drain = writer.write, writer.drain
    write(BEDROCK_HEAD)
    write(m["start"][0])
    content = m["content"]
    k = len(content)
    for i in range(n):
        write(content[i % k])
        await drain()
    for stop in m["stop"]:
        write(stop)
    write(bedrock_metadata(n))
    write(END)
    await drain()


async def _respond(writer: asyncio.StreamWriter, path: bytes, body: bytes = b"") -> bool:
    """Write one response; False when the connection was cut (the scenario's fault)."""
    b = _BEDROCK.match(path)
    if b is not None:
        await _respond_bedrock(writer, int(b.group(1)))
        return True
    m = _SCENARIO.match(path)
    if m is None:
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        return True
    if m.group(5) is not None:
        writer.write(HEAD)
        for i in range(int(m.group(5))):
            writer.write(FIRST if i == 0 else CONTENT[i % len(CONTENT)])
            await writer.drain()
        writer.transport.abort()
        return False
    if body and _STREAM.search(body) is None:  # a non-streaming request: one chat.completion body
        n = int(m.group(1) or m.group(2) or m.group(4) or m.group(5))
        data = json.dumps(completion(n), separators=(",", ":"), ensure_ascii=False).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"x-request-id: req_bench\r\n\r\n%s" % (len(data), data))
        await writer.drain()
        return True
    if m.group(4) is not None:
        if b'"tool_call_id"' not in body:  # the first turn: the model calls the tool
            writer.write(HEAD)
            for event in TOOL_ROUND:  # one socket write per event, as below
                writer.write(event)
                await writer.drain()
            writer.write(END)
            await writer.drain()
            return True
        n, delay = int(m.group(4)), 0.0
    elif m.group(1) is not None:
        n, delay = int(m.group(1)), 0.0
    else:
        n, delay = int(m.group(2)), int(m.group(3)) / 1000
    write, drain = writer.write, writer.drain
    write(HEAD)
    k = len(CONTENT)
    for i in range(n):
        if delay and i:
            await asyncio.sleep(delay)
        write(FIRST if i == 0 else CONTENT[i % k])
        await drain()
    if delay:
        await asyncio.sleep(delay)
    write(FINISH)
    write(usage(n))
    write(DONE)
    write(END)
    await drain()
    return True


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            first, _, rest = head.partition(b"\r\n")
            parts = first.split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            length = 0
            m = re.search(rb"(?im)^content-length:\s*(\d+)", rest)
            if m:
                length = int(m.group(1))
            body = await reader.readexactly(length) if length else b""
            if not await _respond(writer, path, body):
                break
            if re.search(rb"(?im)^connection:\s*close", rest):
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
        pass  # client gone, or we are shutting down
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def _main() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def watch_stdin() -> None:  # the parent closes our stdin (or dies): stop
        try:
            sys.stdin.buffer.read()
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    except Exception:
        pass
    asyncio.run(_main(), debug=False)
