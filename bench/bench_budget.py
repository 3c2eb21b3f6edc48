"""The gateway's per-key budgets: what a reservation plus its settlement costs, per process and shared through Redis.

    .venv/bin/python bench/bench_budget.py [--n 5000] [--concurrency 64] [--redis redis://127.0.0.1:6379/0]

Rows, side by side in one run: a key without a budget (the hot path: the handler's `key.budget is None`), a token
budget counted in the process, and one counted in Redis (one Lua reservation + one Lua settlement per request).
Each request settles the usage of one upstream response (14 + 30 tokens). For each: wall time per reserve+settle
one at a time (p50, p99) and, with `--concurrency` at once, the gateway process's CPU (user+sys) per request and
Redis's own CPU per request (INFO cpu). Say the load (`uptime`) with any number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

from llmrelay.gateway.config import parse
from llmrelay.gateway.state import Gateway
from llmrelay.response import Response
from llmrelay.usage import Usage

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}).encode()


def _config(limits: str) -> str:
    return f"""
models:
  m: {{model: 'openai:gpt-4o', api_key: x}}
keys:
  - {{name: free, key: k-free}}
  - {{name: budgeted, key: k-budget, budget: {{tokens: 1_000_000_000_000, period: month}}}}
{limits}
"""


class _X:  # what `reserve` writes its headers to (the handler's Exchange)
    __slots__ = ("extra_headers",)

    def __init__(self) -> None:
        self.extra_headers: list[tuple[bytes, bytes]] = []


async def _run(gw: Gateway, key: object, n: int, concurrency: int) -> dict[str, float]:
    route = gw.config.routes["m"]
    body = json.loads(BODY)
    usage = Response(usage=Usage(input_tokens=14, output_tokens=30))

    async def one() -> float:
        t = time.perf_counter()
        if key.budget is not None:  # type: ignore[attr-defined]
            charge = await gw.budgets.reserve(key, route, body, BODY, _X())
            charge.responses.append(usage)
            await gw.budgets.settle(charge)
        return time.perf_counter() - t

    for _ in range(200):  # warm-up: connections, the scripts cached
        await one()
    lat = sorted([await one() for _ in range(n)])
    cpu0 = time.process_time()
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    return {"p50_us": lat[len(lat) // 2] * 1e6, "p99_us": lat[int(len(lat) * 0.99)] * 1e6, "cpu_us": cpu / n * 1e6}


def _redis_cpu(url: str) -> float:
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--redis", default=os.environ.get("LLMRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    prefix = f"llmrelay-bench:{uuid.uuid4().hex}:"
    local = Gateway(parse(_config("")))
    shared = Gateway(parse(_config(f"limits: {{store: '{args.redis}', prefix: '{prefix}'}}")))
    free = next(k for k in local.config.keys.values() if k.name == "free")
    budgeted = next(k for k in local.config.keys.values() if k.name == "budgeted")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; n={args.n}, concurrency={args.concurrency}")
    print(f"{'row':<28} {'p50 µs':>8} {'p99 µs':>8} {'CPU µs/req':>11} {'Redis CPU µs/req':>17}")
    rows = [("no budget", local, free, False), ("in-process budget", local, budgeted, False),
            ("Redis budget", shared, budgeted, True)]
    for name, gw, key, redis_row in rows:
        r0 = _redis_cpu(args.redis) if redis_row else 0.0
        res = await _run(gw, key, args.n, args.concurrency)
        rcpu = f"{(_redis_cpu(args.redis) - r0) / (args.n * 2 + 200) * 1e6:>17.1f}" if redis_row else f"{'':>17}"
        print(f"{name:<28} {res['p50_us']:>8.1f} {res['p99_us']:>8.1f} {res['cpu_us']:>11.1f} {rcpu}")
    import redis

    r = redis.Redis.from_url(args.redis)
    for k in r.scan_iter(match=prefix + "*"):
        r.delete(k)
    await shared.aclose()
    await local.aclose()


if __name__ == "__main__":
    asyncio.run(main())
