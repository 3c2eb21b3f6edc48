"""Memory benchmark: time to first token of a stream that does not search memory, with and without
memory enabled (the `search_memory` tool offered, the learning hook, background learning running).

    .venv/bin/python bench/bench_memory.py            # a table
    from bench_memory import run; run()["ratio"]      # TTFT with memory / without (median), for `make bench`

Set-up: one `llmrelay.testing.ReplayServer` on 127.0.0.1 serves SYNTHETIC OpenAI Chat streams: the
first token after `first_token_delay` (50 ms, a fast provider's latency), then `chunks` chunks
`chunk_delay` apart. An extraction request (it carries `response_format`) gets a valid extraction
JSON at once, so learning really runs: every memory stream's exchange passes the salience gate,
goes through extraction and is consolidated into a SQLite store seeded with 200 facts, on the
worker thread, while the next streams run. Rounds are interleaved (plain, memory, plain, ...) on
one warm client; TTFT is from the `stream(...)` call (so it includes memory's per-call work) to the
first text event; the table shows medians.

Keys: `ttft_plain_ms`, `ttft_memory_ms` (medians), `ratio` (the median over rounds of memory /
plain TTFT, robust to load drift; the issue's bound is 1.05), `ratio_of_medians`, `within_5pct`, `overhead_us` (median paired difference of TTFT with a zero-latency server:
memory's absolute per-call cost), `prepare_us` (MemoryClient's own per-call work alone:
messages, tools, hook), `learned` / `failed` (worker outcomes during the run).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(HERE.parent / "src"))

MESSAGE = "I moved to Lisbon last spring and I work at Acme as a data engineer."
EXTRACTION = {
    "facts": [{"text": "The user lives in Lisbon.", "importance": 0.8, "expires_in_days": None, "replaces": None},
              {"text": "The user works at Acme as a data engineer.", "importance": 0.7, "expires_in_days": None,
               "replaces": None}],
    "entities": [{"name": "Lisbon", "type": "place"}, {"name": "Acme", "type": "organization"}],
    "relations": [{"subject": "user", "predicate": "lives_in", "object": "Lisbon"},
                  {"subject": "user", "predicate": "works_at", "object": "Acme"}],
}


def _sse(pieces: list[str]) -> bytes:
    """SYNTHETIC OpenAI Chat SSE body: the pieces, a finish chunk, usage, [DONE]."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06"}

    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    out = [event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": pieces[0]},
                                       "finish_reason": None}]})]
    out += [event({**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in pieces[1:]]
    out.append(event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    out.append(event({**head, "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": len(pieces),
                                                        "total_tokens": 30 + len(pieces)}}))
    return b"".join(out) + b"data: [DONE]\n\n"


def _router(first_token_delay: float, chunks: int, chunk_delay: float) -> Any:
    from llmrelay.testing import Reply

    chat = _sse([f" word{i}" for i in range(chunks)])
    extract = _sse([json.dumps(EXTRACTION)])

    def handler(request: Any) -> Any:
        if b'"response_format"' in request.body:
            return Reply(extract, chunking="events")
        return Reply(chat, chunking="events", first_byte_delay=first_token_delay, delay=chunk_delay)

    return handler


def _ttft(client: Any) -> float:
    t0 = time.perf_counter()
    first = None
    with client.stream("openai:gpt-4o", [{"role": "user", "content": MESSAGE}]) as s:
        for e in s:
            if first is None and e.type == "text":
                first = time.perf_counter() - t0
    assert first is not None
    return first


def _pairs(plain: Any, memory: Any, reps: int) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for i in range(reps):  # interleaved, alternating which goes first
        if i % 2:
            b.append(_ttft(memory))
            a.append(_ttft(plain))
        else:
            a.append(_ttft(plain))
            b.append(_ttft(memory))
    return a, b


def run(reps: int = 41, first_token_delay: float = 0.05, chunks: int = 20, chunk_delay: float = 0.005,
        zero_latency_reps: int = 201) -> dict[str, Any]:
    """See the module docstring for each key."""
    from llmrelay.memory import Memory, SQLiteMemoryStore, with_memory
    from llmrelay.testing import ReplayServer, client_for

    results: dict[str, Any] = {"reps": reps, "first_token_delay_ms": first_token_delay * 1000}
    store = SQLiteMemoryStore()
    memory = Memory(store)
    memory.add_facts("alice", [f"The user noted fact number {i} about topic {i % 17}." for i in range(200)])
    with ReplayServer(default=_router(first_token_delay, chunks, chunk_delay)) as server:
        client = client_for(server, retry=0)
        chat = with_memory(client, "alice", memory)
        for _ in range(3):  # warm up: pool, imports, pydantic schema of the extraction
            _ttft(client), _ttft(chat)
        memory.flush(30)
        before = (memory.stats.learned, memory.stats.failed)
        plain_t, mem_t = _pairs(client, chat, reps)
        memory.flush(30)
        results["ttft_plain_ms"] = statistics.median(plain_t) * 1000
        results["ttft_memory_ms"] = statistics.median(mem_t) * 1000
        results["ratio"] = statistics.median(m / p for p, m in zip(plain_t, mem_t))
        results["ratio_of_medians"] = results["ttft_memory_ms"] / results["ttft_plain_ms"]
        results["within_5pct"] = results["ratio"] <= 1.05
        results["learned"] = memory.stats.learned - before[0]
        results["failed"] = memory.stats.failed - before[1]
        client.close()

    with ReplayServer(default=_router(0.0, 1, 0.0)) as server:  # memory's absolute per-call cost
        client = client_for(server, retry=0)
        chat = with_memory(client, "alice", memory, learn=False)
        for _ in range(20):
            _ttft(client), _ttft(chat)
        plain_t, mem_t = _pairs(client, chat, zero_latency_reps)
        results["ttft_zero_latency_plain_us"] = statistics.median(plain_t) * 1e6
        results["overhead_us"] = statistics.median(m - p for p, m in zip(plain_t, mem_t)) * 1e6
        client.close()

    n = 2000
    params: dict[str, Any] = {}
    t0 = time.perf_counter()
    for _ in range(n):
        params = {}
        chat._prepare([{"role": "user", "content": MESSAGE}], params)
    results["prepare_us"] = (time.perf_counter() - t0) / n * 1e6
    memory.close(30)
    store.close()
    return results


def main() -> None:
    r = run()
    print(f"TTFT, first token after {r['first_token_delay_ms']:.0f} ms, median of {r['reps']} interleaved rounds")
    print(f"  without memory            {r['ttft_plain_ms']:8.2f} ms")
    print(f"  with memory (no search)   {r['ttft_memory_ms']:8.2f} ms")
    print(f"  ratio (median of paired)  {r['ratio']:8.3f}      ({'within' if r['within_5pct'] else 'OVER'} the 5% bound;"
          f" ratio of medians {r['ratio_of_medians']:.3f})")
    print(f"  learned in the background {r['learned']} exchanges ({r['failed']} failed)")
    print(f"zero-latency server: TTFT {r['ttft_zero_latency_plain_us']:.0f} us without memory, "
          f"+{r['overhead_us']:.0f} us with memory")
    print(f"MemoryClient per-call work alone: {r['prepare_us']:.1f} us")


if __name__ == "__main__":
    main()
