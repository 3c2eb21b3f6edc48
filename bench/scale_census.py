"""What a stream in flight costs the garbage collector: raw aiohttp vs llmrelay, deterministic counts.

    .venv/bin/python bench/scale_census.py                 # 1,000 streams: objects per stream by type
    .venv/bin/python bench/scale_census.py --work 3000     # the collector's work in one bench_scale burst
    LLMRELAY_BENCH_SRC=/tmp/old/src .venv/bin/python bench/scale_census.py   # another llmrelay tree

Census: N paced streams (40 chunks 50 ms apart); once every stream has taken 10 events, the
GC-tracked objects that appeared, per stream, by type (each variant in its own process).
Work: one burst like `bench_scale.py` (20 chunks 50 ms apart) with the collector's collections per
generation and the objects it traversed (the sizes of the generations each collection examined):
unlike a timing, this does not move with the machine's load. The client's wall time at thousands
of streams is mostly this work (bench/README.md, *Async scale*).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_scale as bs  # noqa: E402

STEADY = 10  # events every stream has taken when the census is taken


def _streams(variant: str, base: str, n: int, on_steady: Any) -> Any:
    """The burst as an awaitable; `on_steady()` is called once every stream has taken STEADY events."""
    reached = [0]

    def took(k: int) -> None:
        if k == STEADY:
            reached[0] += 1
            if reached[0] == n:
                on_steady()

    if variant == "raw":
        import aiohttp

        async def raw() -> list[int]:
            async def one(s: Any) -> int:
                k = 0
                async with s.post(base + "/chat/completions", json=bs.BODY, headers=bs.HEADERS) as r:
                    async for line in r.content:
                        if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                            json.loads(line[6:])
                            k += 1
                            took(k)
                return k

            timeout = aiohttp.ClientTimeout(total=None, sock_connect=bs.CONNECT_S)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
                return list(await asyncio.gather(*(one(s) for _ in range(n))))

        return raw()
    import llmrelay

    async def relay() -> list[int]:
        c = llmrelay.Client(api_keys={"openai": "x"}, async_backend="aiohttp", retry=0,
                            timeout=llmrelay.Timeouts(connect=bs.CONNECT_S, first_byte=bs.CONNECT_S))

        async def one() -> int:
            k = 0
            async for _e in c.astream("openai:gpt-4o", bs.MESSAGES, base_url=base):
                k += 1
                took(k)
            return k

        try:
            return list(await asyncio.gather(*(one() for _ in range(n))))
        finally:
            await c.aclose()

    return relay()


def _types() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def census(variant: str, base: str, n: int) -> dict[str, Any]:
    async def main() -> dict[str, float]:
        await _streams(variant, base, 1, lambda: None)  # warm-up: lazy imports and caches are not per stream
        before = _types()
        steady = asyncio.Event()
        burst = asyncio.ensure_future(_streams(variant, base, n, steady.set))
        await steady.wait()
        during = _types()
        await burst
        return {k: (during[k] - before.get(k, 0)) / n for k in during if during[k] != before.get(k, 0)}

    per = asyncio.run(main())
    return {"per_stream": round(sum(per.values()), 1), "by_type": dict(sorted(per.items(), key=lambda kv: -kv[1]))}


def work(variant: str, base: str, n: int) -> dict[str, Any]:
    counts, traversed, on = [0, 0, 0], [0, 0, 0], [False]

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and on[0]:
            g = info["generation"]
            counts[g] += 1
            traversed[g] += sum(len(gc.get_objects(i)) for i in range(g + 1))

    async def main() -> list[int]:
        await _streams(variant, base, 1, lambda: None)  # warm-up, as bench_scale imports before measuring
        gc.collect()
        on[0] = True
        try:
            return list(await _streams(variant, base, n, lambda: None))
        finally:
            on[0] = False

    gc.callbacks.append(seen)
    out = asyncio.run(main())
    return {"collections": counts, "traversed_M": [round(t / 1e6, 2) for t in traversed],
            "ok": sum(1 for k in out if k >= 20) == n}


def child(mode: str, variant: str, base: str, n: int) -> None:
    bs._nofile()
    if variant == "llmrelay":
        sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(bs.ROOT / "src"))
    print(json.dumps((census if mode == "census" else work)(variant, base, n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--work", type=int, metavar="STREAMS", help="the collector's work in one burst of STREAMS")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    bs._nofile()
    server = subprocess.Popen(bs._pin(1) + [sys.executable, str(HERE / "_server.py")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        mode, n = ("work", a.work) if a.work else ("census", a.streams)
        base = f"http://127.0.0.1:{port}/{'p20d50' if mode == 'work' else 'p40d50'}/v1"
        res = {}
        for variant in ("raw", "llmrelay"):
            p = subprocess.run(bs._pin(0) + [sys.executable, __file__, "--child", mode, variant, base, str(n)],
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-2000:])
            res[variant] = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    if mode == "work":
        for variant, r in res.items():
            print(f"{variant:9s} collections (gen 0/1/2) {r['collections']}  objects traversed (M) {r['traversed_M']}"
                  f"  total {sum(r['traversed_M']):.2f}  all complete: {r['ok']}")
        return
    raw, rel = res["raw"]["by_type"], res["llmrelay"]["by_type"]
    print(f"GC-tracked objects per stream in flight: raw aiohttp {res['raw']['per_stream']}, "
          f"llmrelay {res['llmrelay']['per_stream']}")
    print("   raw  llmrelay  type")
    for k in sorted(set(raw) | set(rel), key=lambda k: -max(raw.get(k, 0), rel.get(k, 0)))[:a.top]:
        print(f"{raw.get(k, 0):6.2f} {rel.get(k, 0):9.2f}  {k}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
