"""Soak (`bench.py --only soak`; not in the default sections): many streams through one client,
with 10% dropped without close and 10% faulted, sync and async. Measures RSS growth per 1,000
streams (after a warm-up), this process's sockets to the server while running and after
`close()`, and hangs (a watchdog: no progress for 60 s).

- sync: one `Client` (httpx) shared by 4 threads; each stream is 10 chunks from the bench server. Kind by index:
  i % 10 == 0 the README's quickstart pattern, dropped without close after the first text
  (`for text in client.stream(...).text_stream: break`); i % 10 == 1 a connection cut after
  3 chunks (StreamInterruptedError, retry off); else the whole stream (`collect()`).
- async: the same mix, 32 streams at a time, on the default async backend.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from typing import Any, Callable

import llmrelay
from llmrelay.testing.sockets import open_sockets as sockets_to

MESSAGES = [{"role": "user", "content": "hi"}]
WARMUP = 1000
STALL = 60.0  # seconds without progress that count as a hang
THREADS = 4  # sync streams run in this many threads sharing the client (a dropped stream may die in any of them)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _kind(i: int) -> str:
    return "dropped" if i % 10 == 0 else "faulted" if i % 10 == 1 else "ok"


class _Progress:
    def __init__(self, n: int):
        self.n = n
        self.done = 0
        self.samples: list[tuple[int, int]] = []  # (streams done, RSS) every 1,000
        self.errors: dict[str, int] = {}
        self.t0 = time.perf_counter()

    def tick(self, error: BaseException | None = None) -> None:
        if error is not None:
            name = type(error).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
        self.done += 1
        if self.done % 1000 == 0:
            self.samples.append((self.done, rss()))


def _sync_one(client: Any, base: str, i: int) -> None:
    kind = _kind(i)
    if kind == "dropped":
        for _ in client.stream("openai:gpt-4o", MESSAGES, base_url=base + "/n10/v1").text_stream:
            break  # no close(): the stream is dropped here
    elif kind == "faulted":
        try:
            client.stream("openai:gpt-4o", MESSAGES, base_url=base + "/c3/v1").collect()
        except llmrelay.StreamInterruptedError:
            pass
    else:
        client.stream("openai:gpt-4o", MESSAGES, base_url=base + "/n10/v1").collect()


async def _async_one(client: Any, base: str, i: int) -> None:
    kind = _kind(i)
    if kind == "dropped":
        async for _ in client.astream("openai:gpt-4o", MESSAGES, base_url=base + "/n10/v1").text_stream:
            break
    elif kind == "faulted":
        try:
            await client.astream("openai:gpt-4o", MESSAGES, base_url=base + "/c3/v1").collect()
        except llmrelay.StreamInterruptedError:
            pass
    else:
        await client.astream("openai:gpt-4o", MESSAGES, base_url=base + "/n10/v1").collect()


def _watch(worker: Callable[[], None], progress: _Progress) -> bool:
    """Run `worker` in a thread; False if it stops making progress for STALL seconds (a hang)."""
    t = threading.Thread(target=worker, daemon=True)
    t.start()
    last, seen = time.monotonic(), -1
    while t.is_alive():
        t.join(1.0)
        if progress.done != seen:
            last, seen = time.monotonic(), progress.done
        elif time.monotonic() - last > STALL:
            return False
    return True


def _report(progress: _Progress, client: Any, port: int, close: Callable[[], None], hung: bool) -> dict[str, Any]:
    running = sockets_to(port)
    if not hung:
        close()
    gc.collect()
    after = sockets_to(port)
    base = next((r for n, r in progress.samples if n == WARMUP), progress.samples[0][1] if progress.samples else rss())
    end = progress.samples[-1] if progress.samples else (progress.done, rss())
    per_k = (end[1] - base) / max(1, (end[0] - WARMUP) / 1000) if end[0] > WARMUP else 0.0
    return {"streams": progress.done, "hangs": int(hung), "seconds": round(time.perf_counter() - progress.t0, 1),
            "rss_growth_kb_per_1000": round(per_k / 1024, 1), "rss_mb_end": round(end[1] / 2**20, 1),
            "sockets_running": running, "sockets_after_close": after, "errors": progress.errors}


def run(url: str, n: int = 20_000) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    out: dict[str, Any] = {}

    client = llmrelay.Client(api_keys={"openai": "x"}, retry=0, async_backend="httpx")
    progress = _Progress(n)

    lock = threading.Lock()

    def sync_thread(k: int) -> None:
        for i in range(k, n, THREADS):
            error = None
            try:
                _sync_one(client, url, i)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                error = exc
            with lock:
                progress.tick(error)

    def sync_worker() -> None:
        threads = [threading.Thread(target=sync_thread, args=(k,), daemon=True) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    hung = not _watch(sync_worker, progress)
    out["sync"] = _report(progress, client, port, client.close, hung)

    client = llmrelay.Client(api_keys={"openai": "x"}, retry=0)
    out["async_backend"] = client.async_backend
    progress = _Progress(n)

    def async_worker() -> None:
        async def main() -> None:
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with sem:
                    error = None
                    try:
                        await _async_one(client, url, i)
                    except Exception as exc:  # noqa: BLE001
                        error = exc
                    progress.tick(error)

            for start in range(0, n, 1000):  # in waves: bounded task count
                await asyncio.gather(*(one(i) for i in range(start, min(n, start + 1000))))
            await asyncio.sleep(0.1)  # the finalizers of the last dropped streams run on the loop
            out["async_sockets_running"] = sockets_to(port)
            await client.aclose()

        asyncio.run(main())

    hung = not _watch(async_worker, progress)
    out["async"] = _report(progress, client, port, client.close, hung)
    out["async"]["sockets_running"] = out.pop("async_sockets_running", out["async"]["sockets_running"])
    return out


def print_report(res: dict[str, Any]) -> None:
    print("\nSoak: 10% dropped without close, 10% cut mid-stream, the rest collected")
    print(f"   {'':8}{'streams':>9}{'hangs':>7}{'s':>7}{'RSS KB/1k':>11}{'RSS MB':>8}{'sockets run':>13}{'after close':>13}  errors")
    for key in ("sync", "async"):
        r = res.get(key)
        if not r:
            continue
        label = key if key == "sync" else f"async ({res.get('async_backend')})"
        print(f"   {label:8}{r['streams']:>9}{r['hangs']:>7}{r['seconds']:>7}{r['rss_growth_kb_per_1000']:>11}"
              f"{r['rss_mb_end']:>8}{r['sockets_running']:>13}{r['sockets_after_close']:>13}  {r['errors']}")


def lines(size: int = 100 * 2**20, piece: int = 65536) -> dict[str, Any]:
    """Parser time for `size` bytes in `piece`-byte reads: one endless line (then its LF) vs
    ordinary 200-byte SSE events, for the SSE and NDJSON parsers (no limit). Linear buffering
    means the long line costs about what the ordinary lines cost (the old bytes `+=` was quadratic)."""
    from llmrelay.wire import NDJSONParser, SSEParser

    out: dict[str, Any] = {}
    event = b"data: " + b"x" * 192 + b"\n\n"
    ordinary = event * (size // len(event))
    long_line = b"data: " + b"x" * (size - 8) + b"\n\n"
    for name, cls in (("sse", SSEParser), ("ndjson", NDJSONParser)):
        for label, body in (("lines", ordinary), ("one line", long_line)):
            best = float("inf")
            for _ in range(3):
                p = cls(max_line=None)
                t0 = time.perf_counter()
                for i in range(0, len(body), piece):
                    p.feed(body[i:i + piece])
                p.close()
                best = min(best, time.perf_counter() - t0)
            out[f"{name} {label}"] = round(best, 3)
        out[f"{name} ratio"] = round(out[f"{name} one line"] / out[f"{name} lines"], 2)
    return out


def print_lines(res: dict[str, Any]) -> None:
    print("\nLine buffering: 100 MB in 64 KB reads, seconds (best of 3)")
    for name in ("sse", "ndjson"):
        print(f"   {name:7} ordinary lines {res[f'{name} lines']:>7}   one 100 MB line {res[f'{name} one line']:>7}"
              f"   ratio {res[f'{name} ratio']}")
