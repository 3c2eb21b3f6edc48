"""Bedrock benchmark: client CPU per chunk of a ConverseStream (binary AWS event stream) against the
same stream as OpenAI Chat SSE, through the same real HTTP path (`bench/_server.py`, one message /
one SSE event per HTTP chunk, 2,000 text deltas), and the two decoders alone.

    .venv/bin/python bench/bench_bedrock.py           # a table
    from bench_bedrock import run; run(url)           # the numbers, for `make bench`

Rows:

- `sse sync` / `bedrock sync`: `llmrelay.stream(...)` to the end, sync (httpx), CPU per chunk.
- `sse decoder` / `bedrock decoder`: the protocol decoder alone (`feed` one network chunk at a
  time, then `end`), in process: framing + JSON + events, no HTTP, no assembly.

The bar (`make bench`): bedrock sync per chunk <= 2x sse sync per chunk. Requests are signed
with a Bedrock API key (bearer), so SigV4 (once per request, not per chunk) is not in the numbers.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

N = 2000
MESSAGES = [{"role": "user", "content": "hi"}]
BEDROCK_MODEL = "bedrock:us.amazon.nova-micro-v1:0"


def _cpu(fn: Callable[[], Any]) -> float:
    gc.collect()
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def _stream(client: Any, model: str) -> int:
    n = 0
    s = client.stream(model, MESSAGES)
    for _ in s:
        n += 1
    s.response  # noqa: B018 - building the Response is part of the cost
    return n


def _bodies(n: int) -> tuple[list[bytes], list[bytes]]:
    """The two bodies as the network hands them over: one piece per SSE event / per message."""
    import json

    from _server import WORDS
    from llmrelay.wire.eventstream import encode_message

    sse, bedrock = [], []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        sse.append(b"data: " + json.dumps({"id": "chatcmpl-x", "object": "chat.completion.chunk", "model": "gpt-4o",
                                           "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]},
                                          separators=(",", ":")).encode() + b"\n\n")
        bedrock.append(encode_message({":event-type": "contentBlockDelta", ":content-type": "application/json",
                                       ":message-type": "event"},
                                      json.dumps({"contentBlockIndex": 0, "delta": {"text": w}, "p": "abcdefghij"},
                                                 separators=(",", ":")).encode()))
    return sse, bedrock


def run(url: str, n: int = N, reps: int = 9, warmup: int = 2) -> dict[str, Any]:
    import llmrelay
    from llmrelay.protocols import bedrock, openai_chat

    from _server import text_of

    sse_client = llmrelay.Client(api_keys={"openai": "x"}, base_urls={"openai": f"{url}/n{n}/v1"}, retry=0)
    br_client = llmrelay.Client(api_keys={"bedrock": "bench-key"}, base_urls={"bedrock": f"{url}/b{n}"}, env={}, retry=0)
    r = br_client.complete(BEDROCK_MODEL, MESSAGES)
    assert r.text == text_of(n) and r.usage.output_tokens == n and r.finish_reason == "stop", r
    sse_body, br_body = _bodies(n)

    def decode(cls: Any, pieces: list[bytes]) -> Callable[[], None]:
        def go() -> None:
            d = cls()
            for p in pieces:
                d.feed(p)
            d.end()
        return go

    variants = {
        "sse sync": lambda: _stream(sse_client, "openai:gpt-4o"),
        "bedrock sync": lambda: _stream(br_client, BEDROCK_MODEL),
        "sse decoder": decode(openai_chat.Decoder, sse_body),
        "bedrock decoder": decode(bedrock.Decoder, br_body),
    }
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for rnd in range(warmup + reps):
        for name, fn in variants.items():  # interleaved: drift hits every variant alike
            cpu = _cpu(fn)
            if rnd >= warmup:
                samples[name].append(cpu)
    sse_client.close()
    br_client.close()
    us = {k: statistics.median(v) / n * 1e6 for k, v in samples.items()}
    return {
        "chunks": n, "reps": reps,
        "rows": [{"variant": k, "us_per_chunk": v} for k, v in us.items()],
        "sync_ratio": us["bedrock sync"] / us["sse sync"],
        "decoder_ratio": us["bedrock decoder"] / us["sse decoder"],
    }


def main() -> None:
    from bench import Server

    with Server() as srv:
        res = run(srv.url)
    for row in res["rows"]:
        print(f"{row['variant']:<18} {row['us_per_chunk']:8.2f} µs/chunk")
    print(f"bedrock / sse, llmrelay sync: {res['sync_ratio']:.2f}x   decoders alone: {res['decoder_ratio']:.2f}x  (bar: <= 2x)")


if __name__ == "__main__":
    main()
