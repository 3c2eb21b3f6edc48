"""Structured output benchmark: client CPU per chunk of a 2,000-chunk JSON object stream, with and
without `output=`, and the partial parser's cost per chunk early vs late in the document.

    .venv/bin/python bench/bench_structured.py        # a table
    from bench_structured import run; run()           # the numbers (µs per chunk), for `make bench`

The stream is an OpenAI Chat SSE body of 2,000 content chunks that together form
`{"items": [...]}` (~200 objects), served in-process by `httpx.MockTransport` (one
network chunk per SSE event), so only client CPU is measured (`time.process_time`).
Rows:

- `plain`: `stream(...)` without `output=` (decode + assemble), the baseline.
- `output=Model`: the same stream with `output=Report` (partials after each chunk,
  validation once at the end).
- `output=list[Entry]`: plus each item validated and reported once as it completes.
- `complete(output=Model)`: `complete` skips the partials: validation only.
- `output=Model, first/last 500`: the same stream, CPU per chunk over its first and its last
  quarter: flat as the JSON grows.
- `parser first/last quarter`: the incremental parser alone (feed + snapshot per chunk) over
  the first and the last 500 chunks: flat means no re-parsing of the prefix (a parser
  that re-read the prefix every chunk would be ~7x slower in the last quarter).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(HERE.parent / "src"))

N_CHUNKS = 2000
MESSAGES = [{"role": "user", "content": "list them"}]


def document(n_chunks: int = N_CHUNKS) -> list[str]:
    """`{"items": [...]}` split into `n_chunks` pieces of about the same size."""
    items = [{"id": i, "name": f"item number {i}", "tags": ["alpha", "beta"], "score": round(i / 7, 3)}
             for i in range(400)]
    text = json.dumps({"items": items})
    size = max(1, len(text) // n_chunks)
    out = [text[i * size : (i + 1) * size] for i in range(n_chunks - 1)]
    out.append(text[(n_chunks - 1) * size :])
    return out


def sse_events(pieces: list[str]) -> list[bytes]:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06"}

    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    out = [event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    out += [event({**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in pieces]
    out.append(event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    out.append(event({**head, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": len(pieces), "total_tokens": 10 + len(pieces)}}))
    out.append(b"data: [DONE]\n\n")
    return out


def _types() -> tuple[Any, Any]:
    from pydantic import BaseModel

    class Entry(BaseModel):
        id: int
        name: str
        tags: list[str]
        score: float

    class Report(BaseModel):
        items: list[Entry]

    return Report, Entry


def _client(events: list[bytes]) -> Any:
    import httpx

    import llmrelay

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(events))

    return llmrelay.Client(api_keys={"openai": "x"}, retry=0, transport=httpx.MockTransport(handler))


def _cpu(fn: Any, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _parser_quarters(pieces: list[str], reps: int) -> tuple[float, float]:
    from llmrelay.structured.partial_json import PartialJSONParser

    quarter = len(pieces) // 4
    first = last = float("inf")
    for _ in range(reps):
        p = PartialJSONParser(watch=("items",))
        t0 = time.process_time()
        for piece in pieces[:quarter]:
            if p.feed(piece):
                p.snapshot()
            p.items.clear()
        t1 = time.process_time()
        for piece in pieces[quarter:-quarter]:
            if p.feed(piece):
                p.snapshot()
            p.items.clear()
        t2 = time.process_time()
        for piece in pieces[-quarter:]:
            if p.feed(piece):
                p.snapshot()
            p.items.clear()
        t3 = time.process_time()
        first, last = min(first, t1 - t0), min(last, t3 - t2)
    return first / quarter * 1e6, last / quarter * 1e6


def _stream_quarters(client: Any, output: Any, reps: int) -> tuple[float, float]:
    """CPU per chunk of `stream(output=...)` over its first and its last quarter of chunks."""
    first = last = float("inf")
    for _ in range(reps):
        marks: dict[int, float] = {}
        n = 0
        with client.stream("openai:gpt-4o", MESSAGES, output=output) as s:
            for e in s:
                if e.type == "text":
                    n += 1
                    marks[n] = time.process_time()
        q = n // 4
        first = min(first, (marks[q + 1] - marks[1]) / q)
        last = min(last, (marks[n] - marks[n - q]) / q)
    return first * 1e6, last * 1e6


def run(n_chunks: int = N_CHUNKS, reps: int = 7) -> dict[str, float]:
    """µs of client CPU per chunk, best of `reps`; see the module docstring for each key."""
    pieces = document(n_chunks)
    client = _client(sse_events(pieces))
    Report, Entry = _types()
    expected = json.loads("".join(pieces))

    def plain() -> None:
        with client.stream("openai:gpt-4o", MESSAGES) as s:
            for _ in s:
                pass

    def with_model() -> None:
        with client.stream("openai:gpt-4o", MESSAGES, output=Report) as s:
            for _ in s:
                pass
            assert len(s.response.output.items) == len(expected["items"])

    def with_list() -> None:
        with client.stream("openai:gpt-4o", MESSAGES, output=list[Entry]) as s:
            n = sum(1 for e in s if e.type == "output_item")
            assert n == len(expected["items"])

    def completed() -> None:
        assert len(client.complete("openai:gpt-4o", MESSAGES, output=Report).output.items) == len(expected["items"])

    for fn in (plain, with_model, with_list, completed):  # warm up (imports, pydantic schemas)
        fn()
    per = 1e6 / n_chunks
    results = {
        "chunks": float(n_chunks),
        "plain_us_per_chunk": _cpu(plain, reps) * per,
        "output_model_us_per_chunk": _cpu(with_model, reps) * per,
        "output_list_us_per_chunk": _cpu(with_list, reps) * per,
        "complete_output_us_per_chunk": _cpu(completed, reps) * per,
    }
    results["output_overhead_us_per_chunk"] = results["output_model_us_per_chunk"] - results["plain_us_per_chunk"]
    first, last = _stream_quarters(client, Report, reps)
    results["output_first_quarter_us_per_chunk"] = first
    results["output_last_quarter_us_per_chunk"] = last
    first, last = _parser_quarters(pieces, reps)
    results["parser_first_quarter_us_per_chunk"] = first
    results["parser_last_quarter_us_per_chunk"] = last
    client.close()
    return results


def main() -> None:
    r = run()
    rows = [
        ("plain stream (no output=)", r["plain_us_per_chunk"]),
        ("stream, output=Model", r["output_model_us_per_chunk"]),
        ("stream, output=list[Entry]", r["output_list_us_per_chunk"]),
        ("complete, output=Model", r["complete_output_us_per_chunk"]),
        ("  overhead of output= (stream)", r["output_overhead_us_per_chunk"]),
        ("stream, output=Model, first 500", r["output_first_quarter_us_per_chunk"]),
        ("stream, output=Model, last 500", r["output_last_quarter_us_per_chunk"]),
        ("parser alone, first 500 chunks", r["parser_first_quarter_us_per_chunk"]),
        ("parser alone, last 500 chunks", r["parser_last_quarter_us_per_chunk"]),
    ]
    print(f"structured output, {int(r['chunks'])}-chunk JSON object stream (client CPU, µs per chunk)")
    for name, value in rows:
        print(f"  {name:<34} {value:8.2f}")


if __name__ == "__main__":
    main()
