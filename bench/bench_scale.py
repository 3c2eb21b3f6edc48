"""Async scale: llmrelay's async streams vs raw aiohttp with thousands of streams in flight.

    .venv/bin/python bench/bench_scale.py                      # 3,000 and 10,000 streams
    .venv/bin/python bench/bench_scale.py --streams 1500 --reps 3

Each variant runs in a fresh process (pinned to core 0 with taskset when there
is one; the server in bench/_server.py on core 1), so its peak RSS is its own.
One stream first (both clients), so that one-time costs (lazy imports, the first
connection's set-up, caches) are not counted per stream; then one burst of N paced
streams (20 chunks 50 ms apart: ideal wall 1 s), connects included. Reported:
wall, client CPU, RSS growth during the burst per stream (peak RSS minus RSS
before the burst, over N). Bar: llmrelay within 1.2x of raw
aiohttp in wall time and in memory per stream. `bench.py --only scale` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MESSAGES = [{"role": "user", "content": "hi"}]
BODY = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
HEADERS = {"authorization": "Bearer x", "accept": "text/event-stream"}
#: Both clients wait this long for a connection: 10,000 connects at once overflow the server's
#: accept backlog on a loaded machine, and SYN retries take seconds (llmrelay's default is 10 s).
CONNECT_S = 120.0


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _raw(base: str, n: int) -> list[int]:
    import aiohttp

    loads = json.loads

    async def one(s: Any) -> int:
        k = 0
        async with s.post(base + "/chat/completions", json=BODY, headers=HEADERS) as r:
            async for line in r.content:
                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                    loads(line[6:])
                    k += 1
        return k

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        await one(s)  # warm-up: first-use imports and caches are not a cost per stream
        return await _burst(lambda: one(s), n)


async def _relay(base: str, n: int) -> list[int]:
    sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(ROOT / "src"))
    import llmrelay

    c = llmrelay.Client(api_keys={"openai": "x"}, async_backend="aiohttp", retry=0,
                        timeout=llmrelay.Timeouts(connect=CONNECT_S, first_byte=CONNECT_S))

    async def one() -> int:
        k = 0
        async for _e in c.astream("openai:gpt-4o", MESSAGES, base_url=base):
            k += 1
        return k

    try:
        await one()  # warm-up, as for raw aiohttp
        return await _burst(one, n)
    finally:
        await c.aclose()


_STATE: dict[str, Any] = {}


async def _burst(one: Any, n: int) -> list[int]:
    gc.collect()
    _STATE["rss0"] = _rss_kb()
    _STATE["cpu0"], _STATE["t0"] = time.process_time(), time.perf_counter()
    out = await asyncio.gather(*(one() for _ in range(n)))
    _STATE["wall"] = time.perf_counter() - _STATE["t0"]
    _STATE["cpu"] = time.process_time() - _STATE["cpu0"]
    return out


def child(variant: str, base: str, n: int) -> None:
    _nofile()
    if variant == "llmrelay":  # import before measuring
        sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(ROOT / "src"))
        import llmrelay  # noqa: F401
    import aiohttp  # noqa: F401

    out = asyncio.run((_relay if variant == "llmrelay" else _raw)(base, n))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall": _STATE["wall"], "cpu": _STATE["cpu"], "rss0_kb": _STATE["rss0"], "peak_kb": peak,
                      "per_stream_kb": (peak - _STATE["rss0"]) / n, "ok": sum(1 for k in out if k >= 20) == n}))


def _pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def run(streams: list[int], reps: int = 1) -> dict[str, Any]:
    _nofile()
    server = subprocess.Popen(_pin(1) + [sys.executable, str(HERE / "_server.py")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline())}/p20d50/v1"  # type: ignore[union-attr]
        rows = []
        for n in streams:
            samples: dict[str, list[dict[str, Any]]] = {"raw aiohttp": [], "llmrelay": []}
            for _ in range(reps):
                for name, variant in (("raw aiohttp", "raw"), ("llmrelay", "llmrelay")):  # interleaved
                    p = subprocess.run(_pin(0) + [sys.executable, __file__, "--child", variant, base, str(n)],
                                       capture_output=True, text=True, timeout=300)
                    if p.returncode != 0:
                        raise RuntimeError(p.stderr[-2000:])
                    samples[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
            med = {k: {f: statistics.median(s[f] for s in v) for f in ("wall", "cpu", "per_stream_kb", "peak_kb")}
                   for k, v in samples.items()}
            for k, v in samples.items():
                med[k]["ok"] = all(s["ok"] for s in v)
            raw, rel = med["raw aiohttp"], med["llmrelay"]
            rows.append({"streams": n, "raw": raw, "llmrelay": rel, "wall_ratio": rel["wall"] / raw["wall"],
                         "mem_ratio": rel["per_stream_kb"] / max(raw["per_stream_kb"], 1e-9)})
        return {"rows": rows, "reps": reps, "pinned": bool(_pin(0))}
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)


def table(res: dict[str, Any]) -> str:
    lines = ["| streams | variant | wall s | client CPU s | peak RSS MB | RSS growth per stream KB | all complete |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for name in ("raw", "llmrelay"):
            v = r[name]
            lines.append(f"| {r['streams']:,} | {'raw aiohttp' if name == 'raw' else 'llmrelay async (aiohttp)'} | "
                         f"{v['wall']:.2f} | {v['cpu']:.2f} | {v['peak_kb'] / 1024:.0f} | {v['per_stream_kb']:.1f} | {v['ok']} |")
        lines.append(f"| {r['streams']:,} | **llmrelay / raw** | **{r['wall_ratio']:.2f}x** | | | **{r['mem_ratio']:.2f}x** | |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="3000,10000")
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    res = run([int(x) for x in a.streams.split(",")], a.reps)
    print(table(res))
