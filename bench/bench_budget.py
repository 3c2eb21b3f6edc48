"""The gateway's per-key budgets: what a reservation plus its settlement costs, per process and shared through Redis.

    .venv/bin/python bench/bench_budget.py [--n 5000] [--concurrency 64] [--redis redis://127.0.0.1:6379/0]

Rows, side by side in one run: a key without a budget (the hot path: the handler's `key.budget is None`), a token
budget counted in the process, and one counted in Redis (one Lua reservation + one Lua settlement per request).
Each request settles the usage of one upstream response (14 + 30 tokens). For each: wall time per reserve+settle
one at a time (p50, p99) and, with `--concurrency` at once, the gateway process's CPU (user+sys) per request and
Redis's own CPU per request (INFO cpu). Say the load (`uptime`) with any number.
"""

from __future__ import annotations

import asyncio
import json
import time

from bench_limits import compare, measure  # the same three-row table, run by both
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

    return await measure(one, n, concurrency)


async def main() -> None:
    await compare(_config, "budgeted", ("no budget", "in-process budget", "Redis budget"), _run)


if __name__ == "__main__":
    asyncio.run(main())
