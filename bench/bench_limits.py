"""The gateway's per-key limits: what an admission plus its release costs, per process and shared through Redis.

    .venv/bin/python bench/bench_limits.py [--n 5000] [--concurrency 64] [--redis redis://127.0.0.1:6379/0]

Rows, side by side in one run: a key without limits (the hot path: `Gateway.acquire` returns at once), the
in-process limiter, and the Redis store (one Lua admission + one ZREM per request). For each: wall time per
admission+release one at a time (p50, p99) and, with `--concurrency` requests at once, the gateway process's
CPU (user+sys) per request and Redis's own CPU per request (INFO cpu). Say the load (`uptime`) with any number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from llmrelay.gateway.config import parse
from llmrelay.gateway.state import Gateway


def _config(limits: str) -> str:
    return f"""
models:
  m: {{model: 'openai:gpt-4o', api_key: x}}
keys:
  - {{name: free, key: k-free}}
  - {{name: limited, key: k-limited, max_parallel: 1000000, rpm: 100000000}}
{limits}
"""


async def _run(gw: Gateway, key: object, n: int, concurrency: int) -> dict[str, float]:
    async def one() -> float:
        t = time.perf_counter()
        held = gw.acquire(key)
        if held is not None:
            held = await held
        if held is None:
            gw.release(key)
        else:
            await gw.shared.release(held)
        return time.perf_counter() - t

    return await measure(one, n, concurrency)


async def measure(one: Callable[[], Awaitable[float]], n: int, concurrency: int) -> dict[str, float]:
    """`one()` timed one at a time (p50, p99, after a warm-up that connects and caches the scripts), then the
    process's CPU per call with `concurrency` calls at once."""
    for _ in range(200):
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


async def compare(config: Callable[[str], str], key_name: str, labels: tuple[str, str, str],
                  run: Callable[..., Awaitable[dict[str, float]]]) -> None:
    """The table both admission benchmarks print: a key without the feature, the in-process store, Redis.
    `config(limits_section)` is the gateway YAML; `key_name` the key that has the feature; `run(gw, key, n, c)`."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--redis", default=os.environ.get("LLMRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    prefix = f"llmrelay-bench:{uuid.uuid4().hex}:"
    local = Gateway(parse(config("")))
    shared = Gateway(parse(config(f"limits: {{store: '{args.redis}', prefix: '{prefix}'}}")))
    free = next(k for k in local.config.keys.values() if k.name == "free")
    featured = next(k for k in local.config.keys.values() if k.name == key_name)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; n={args.n}, concurrency={args.concurrency}")
    print(f"{'row':<28} {'p50 µs':>8} {'p99 µs':>8} {'CPU µs/req':>11} {'Redis CPU µs/req':>17}")
    rows = [(labels[0], local, free, False), (labels[1], local, featured, False), (labels[2], shared, featured, True)]
    for name, gw, key, redis_row in rows:
        r0 = _redis_cpu(args.redis) if redis_row else 0.0
        res = await run(gw, key, args.n, args.concurrency)
        rcpu = f"{(_redis_cpu(args.redis) - r0) / (args.n * 2 + 200) * 1e6:>17.1f}" if redis_row else f"{'':>17}"
        print(f"{name:<28} {res['p50_us']:>8.1f} {res['p99_us']:>8.1f} {res['cpu_us']:>11.1f} {rcpu}")
    import redis

    r = redis.Redis.from_url(args.redis)
    for k in r.scan_iter(match=prefix + "*"):
        r.delete(k)
    await shared.aclose()
    await local.aclose()


async def main() -> None:
    await compare(_config, "limited", ("no limits", "in-process limits", "Redis store"), _run)


if __name__ == "__main__":
    asyncio.run(main())
