"""llmrelay benchmark: client CPU per chunk, fixed cost per request, concurrency, import time, memory,
and the cost of the tool loop, logging, structured output and memory (`with_memory`); then the bars.

    .venv/bin/python bench/bench.py              # everything, one table (~2 min on 2 cores)
    .venv/bin/python bench/bench.py --quick      # fewer repeats, smaller concurrency (smoke test)
    .venv/bin/python bench/bench.py --only chunks,fixed,tools,logging
    .venv/bin/python bench/bench.py --profile sync   # cProfile of llmrelay on the 2,000-chunk stream

The server (`bench/_server.py`) runs in its own process, so its CPU is never
counted: client CPU is the `time.process_time()` delta in this process.
Results also go to `.bench/results.json`. See bench/README.md for what each
row means and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# LLMRELAY_BENCH_SRC=/path/to/other/src measures another copy of llmrelay (A/B a change without installing it)
sys.path.insert(0, os.environ.get("LLMRELAY_BENCH_SRC") or str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from _server import text_of  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi"}]
BODY = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
HEADERS = {"authorization": "Bearer x", "accept": "text/event-stream"}
MODEL = "openai:gpt-4o"

try:
    import aiohttp  # noqa: F401

    HAVE_AIOHTTP = True
except ImportError:  # the aiohttp rows are skipped
    HAVE_AIOHTTP = False


def _raise_nofile() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    except Exception:
        pass


class Server:
    """bench/_server.py in a subprocess; stops when we close its stdin."""

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_server.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip():
            raise RuntimeError("benchmark server did not start")
        self.url = f"http://127.0.0.1:{int(line)}"
        return self

    def base(self, scenario: str) -> str:
        return f"{self.url}/{scenario}/v1"

    def __exit__(self, *exc: Any) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(5)
        except Exception:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------
# One request per variant. Each returns the number of data events (or typed
# events) it consumed, so a silently short stream shows up.
# ---------------------------------------------------------------------------
def raw_httpx_sync(client: Any, base: str) -> int:
    loads = json.loads
    n = 0
    with client.stream("POST", base + "/chat/completions", json=BODY, headers=HEADERS) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    continue
                loads(data)
                n += 1
    return n


async def raw_httpx_async(client: Any, base: str) -> int:
    loads = json.loads
    n = 0
    async with client.stream("POST", base + "/chat/completions", json=BODY, headers=HEADERS) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    continue
                loads(data)
                n += 1
    return n


async def raw_aiohttp(session: Any, base: str) -> int:
    loads = json.loads
    n = 0
    async with session.post(base + "/chat/completions", json=BODY, headers=HEADERS) as r:
        async for line in r.content:
            if line.startswith(b"data: "):
                data = line[6:]
                if data.startswith(b"[DONE]"):
                    continue
                loads(data)
                n += 1
    return n


def openai_sdk(client: Any) -> int:
    n = 0
    for _chunk in client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        n += 1
    return n


def relay_sync(client: Any, base: str, **params: Any) -> int:
    s = client.stream(MODEL, MESSAGES, base_url=base, **params)
    n = 0
    for _e in s:
        n += 1
    s.response  # noqa: B018 - building the Response is part of the cost
    return n


async def relay_async(client: Any, base: str) -> int:
    s = client.astream(MODEL, MESSAGES, base_url=base)
    n = 0
    async for _e in s:
        n += 1
    s.response  # noqa: B018
    return n


def relay_client(async_backend: str = "httpx", **options: Any) -> Any:
    """A Client on an explicit async backend (the default "auto" picks aiohttp when it is installed)."""
    import llmrelay

    c = llmrelay.Client(api_keys={"openai": "x"}, base_urls={"openai": "http://127.0.0.1:1/v1"},
                        async_backend=async_backend, **options)
    assert c.async_backend == async_backend, (c.async_backend, async_backend)
    return c


def _lookup_tool() -> Any:
    import llmrelay

    @llmrelay.tool
    def lookup(city: str) -> str:
        """Current weather for a city.

        Args:
            city: City name, e.g. "Paris".
        """
        return f"{city}: 21 C, clear"

    return lookup


def relay_sync_timed(client: Any, base: str, **params: Any) -> tuple[int, float]:
    """relay_sync, plus the CPU spent from the first text event to the end (the answer's own cost)."""
    clock = time.process_time
    s = client.stream(MODEL, MESSAGES, base_url=base, **params)
    n = 0
    c0 = None
    for e in s:
        if c0 is None and e.type == "text":
            c0 = clock()
        n += 1
    s.response  # noqa: B018
    return n, clock() - (c0 if c0 is not None else clock())


def check_relay(client: Any, base: str, n: int) -> None:
    """One untimed call that must assemble exactly what the server sent."""
    r = client.complete(MODEL, MESSAGES, base_url=base)
    assert r.text == text_of(n), "llmrelay assembled the wrong text"
    assert r.usage.output_tokens == n and r.finish_reason == "stop" and r.status == "ok", r


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------
def _run(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    if asyncio.iscoroutine(out):
        out = loop.run_until_complete(out)
    return time.process_time() - c0, time.perf_counter() - w0, out


def interleaved(loop: asyncio.AbstractEventLoop, variants: dict[str, Callable[[], Any]], warmup: int, reps: int) -> dict[str, dict[str, Any]]:
    """Run every variant once per round (so drift hits all alike); keep the medians."""
    samples: dict[str, list[tuple[float, float, Any]]] = {k: [] for k in variants}
    for rnd in range(warmup + reps):
        for name, fn in variants.items():
            cpu, wall, out = _run(loop, fn)
            if rnd >= warmup:
                samples[name].append((cpu, wall, out))
    return {
        k: {
            "cpu_s": statistics.median(c for c, _, _ in v),
            "wall_s": statistics.median(w for _, w, _ in v),
            "cpu_all_s": [round(c, 5) for c, _, _ in v],
            "out": v[-1][2],
            "outs": [o for _, _, o in v],
        }
        for k, v in samples.items()
    }


# ---------------------------------------------------------------------------
# 1. per-chunk CPU
# ---------------------------------------------------------------------------
def bench_chunks(srv: Server, loop: asyncio.AbstractEventLoop, n: int, warmup: int, reps: int) -> dict[str, Any]:
    import httpx
    import openai

    base = srv.base(f"n{n}")
    hx = httpx.Client(timeout=None)
    oc = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
    rs = relay_client()
    ra = relay_client("httpx")
    check_relay(rs, base, n)
    hxa = loop.run_until_complete(_make(lambda: httpx.AsyncClient(timeout=None)))
    variants: dict[str, Callable[[], Any]] = {
        "a raw httpx sync (iter_lines+json.loads)": lambda: raw_httpx_sync(hx, base),
        "b openai SDK sync": lambda: openai_sdk(oc),
        "c llmrelay sync": lambda: relay_sync(rs, base),
        "d llmrelay async, async_backend=httpx": lambda: relay_async(ra, base),
        "e raw httpx async (aiter_lines+json.loads)": lambda: raw_httpx_async(hxa, base),
    }
    if HAVE_AIOHTTP:
        import aiohttp

        session = loop.run_until_complete(_make(lambda: aiohttp.ClientSession()))
        rh = relay_client("aiohttp")
        variants["f raw aiohttp async (line iter+json.loads)"] = lambda: raw_aiohttp(session, base)
        variants["g llmrelay async, async_backend=aiohttp"] = lambda: relay_async(rh, base)
    res = interleaved(loop, variants, warmup, reps)
    hx.close()
    oc.close()
    rs.close()
    loop.run_until_complete(ra.aclose())
    loop.run_until_complete(hxa.aclose())
    if HAVE_AIOHTTP:
        loop.run_until_complete(session.close())
        loop.run_until_complete(rh.aclose())
    a = res["a raw httpx sync (iter_lines+json.loads)"]["cpu_s"]
    e = res["e raw httpx async (aiter_lines+json.loads)"]["cpu_s"]
    rows = []
    for name, r in res.items():
        is_async = "async" in name
        rows.append(
            {
                "variant": name,
                "us_per_chunk": r["cpu_s"] / n * 1e6,
                "wall_ms": r["wall_s"] * 1e3,
                "x_vs_a": r["cpu_s"] / a,
                "x_vs_e": r["cpu_s"] / e if is_async else None,
                "events": r["out"],
                "cpu_samples_s": r["cpu_all_s"],
            }
        )
    return {"chunks": n, "reps": reps, "rows": rows}


async def _make(factory: Callable[[], Any]) -> Any:
    return factory()  # aiohttp / httpx async clients are built inside the loop


# ---------------------------------------------------------------------------
# 2. fixed cost per request
# ---------------------------------------------------------------------------
def bench_fixed(srv: Server, loop: asyncio.AbstractEventLoop, requests: int, warmup: int, reps: int) -> dict[str, Any]:
    import httpx
    import openai

    base = srv.base("n1")
    hx = httpx.Client(timeout=None)
    oc = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
    rs = relay_client()
    ra = relay_client("httpx")
    check_relay(rs, base, 1)
    hxa = loop.run_until_complete(_make(lambda: httpx.AsyncClient(timeout=None)))

    def many_sync(fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            return sum(fn() for _ in range(requests))

        return run

    def many_async(fn: Callable[[], Any]) -> Callable[[], Any]:
        async def run() -> int:
            total = 0
            for _ in range(requests):
                total += await fn()
            return total

        return run

    variants: dict[str, Callable[[], Any]] = {
        "raw httpx sync": many_sync(lambda: raw_httpx_sync(hx, base)),
        "llmrelay sync": many_sync(lambda: relay_sync(rs, base)),
        "openai SDK sync": many_sync(lambda: openai_sdk(oc)),
        "raw httpx async": many_async(lambda: raw_httpx_async(hxa, base)),
        "llmrelay async, async_backend=httpx": many_async(lambda: relay_async(ra, base)),
    }
    if HAVE_AIOHTTP:
        import aiohttp

        session = loop.run_until_complete(_make(lambda: aiohttp.ClientSession()))
        rh = relay_client("aiohttp")
        variants["raw aiohttp async"] = many_async(lambda: raw_aiohttp(session, base))
        variants["llmrelay async, async_backend=aiohttp"] = many_async(lambda: relay_async(rh, base))
    res = interleaved(loop, variants, warmup, reps)
    hx.close()
    oc.close()
    rs.close()
    loop.run_until_complete(ra.aclose())
    loop.run_until_complete(hxa.aclose())
    if HAVE_AIOHTTP:
        loop.run_until_complete(session.close())
        loop.run_until_complete(rh.aclose())
    sync_base = res["raw httpx sync"]["cpu_s"]
    async_base = res["raw httpx async"]["cpu_s"]
    rows = []
    for name, r in res.items():
        ref = async_base if "async" in name else sync_base
        rows.append(
            {
                "variant": name,
                "us_cpu_per_request": r["cpu_s"] / requests * 1e6,
                "wall_ms_per_request": r["wall_s"] / requests * 1e3,
                "x_vs_raw_httpx": r["cpu_s"] / ref,
                "ref": "raw httpx async" if "async" in name else "raw httpx sync",
            }
        )
    return {"requests": requests, "events_per_request": 3, "reps": reps, "rows": rows}


# ---------------------------------------------------------------------------
# 3. concurrency
# ---------------------------------------------------------------------------
def bench_concurrency(
    srv: Server, loop: asyncio.AbstractEventLoop, streams: int, chunks: int, delay_ms: int, reps: int,
    row_budget_s: float = 8.0, section_budget_s: float = 75.0,
) -> dict[str, Any]:
    """`streams` paced streams at once. Each run builds a fresh pool and times one burst (connects
    included); llmrelay runs then time a second burst on the same client ("warm pool"), as a
    long-lived app would see it. Every row runs once; then rows are repeated (up to `reps`) while
    their own runs add up to less than `row_budget_s` and the section to less than `section_budget_s`."""
    import httpx

    import llmrelay.transports.httpx as T

    base = srv.base(f"p{chunks}d{delay_ms}")
    ideal = chunks * delay_ms / 1000  # the server's own pacing
    WARM = "  same, 2nd burst on the same Client (warm pool)"

    async def fan_out(one: Callable[[], Any]) -> list[int]:
        return await asyncio.gather(*(one() for _ in range(streams)))

    async def timed(coro: Any) -> tuple[float, float, Any]:
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        out = await coro
        return time.process_time() - c0, time.perf_counter() - w0, out

    async def relay(backend: str) -> list[tuple[float, float, Any]]:
        c = relay_client(backend)
        try:
            cold = await timed(fan_out(lambda: relay_async(c, base)))
            warm = await timed(fan_out(lambda: relay_async(c, base)))
            return [cold, warm]
        finally:
            await c.aclose()

    async def hx(mod: Any, limits: Any) -> list[tuple[float, float, Any]]:
        async with mod.AsyncClient(timeout=None, limits=limits) as c:
            return [await timed(fan_out(lambda: raw_httpx_async(c, base)))]

    async def aio(limit: int) -> list[tuple[float, float, Any]]:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as s:
            return [await timed(fan_out(lambda: raw_aiohttp(s, base)))]

    # name(s) of the row(s) a run fills -> the run
    variants: dict[tuple[str, ...], Callable[[], Any]] = {
        (f"llmrelay async, httpx (max_conn={T.ASYNC_MAX_CONNECTIONS:,}, keepalive={T.ASYNC_MAX_KEEPALIVE})", WARM):
            lambda: relay("httpx"),
    }
    variants[("raw httpx.AsyncClient() default limits (100)",)] = lambda: hx(httpx, httpx.Limits())
    try:
        import httpx2  # the fork openai>=3.50 runs on; its pool is not O(n^2)

        limits2 = httpx2.Limits(max_connections=10_000, max_keepalive_connections=1_000)
        variants[(f"raw httpx2 {httpx2.__version__} AsyncClient(max_conn=10k)",)] = lambda: hx(httpx2, limits2)
    except ImportError:
        pass
    if HAVE_AIOHTTP:
        variants[("raw aiohttp default connector (limit=100)",)] = lambda: aio(100)
        variants[("raw aiohttp TCPConnector(limit=0)",)] = lambda: aio(0)
        variants[(f"llmrelay async, aiohttp (limit={T.ASYNC_MAX_CONNECTIONS:,})", WARM + ".")] = lambda: relay("aiohttp")
    samples: dict[str, list[tuple[float, float]]] = {n: [] for names in variants for n in names}
    complete: dict[str, bool] = {}
    t_section = time.perf_counter()
    for rnd in range(reps):
        for names, fn in variants.items():
            spent = sum(w for _, w in samples[names[0]])
            if rnd and (spent >= row_budget_s or time.perf_counter() - t_section >= section_budget_s):
                continue
            for name, (cpu, wall, out) in zip(names, loop.run_until_complete(fn())):
                expected = chunks + 3 if names[0].startswith("llmrelay") else chunks + 2  # typed vs data events
                complete[name] = complete.get(name, True) and len(out) == streams and all(x == expected for x in out)
                samples[name].append((cpu, wall))
    rows = []
    for name, v in samples.items():
        wall = statistics.median(w for _, w in v)
        cpu = statistics.median(c for c, _ in v)
        rows.append(
            {
                "variant": name.rstrip("."),
                "wall_s": wall,
                "cpu_s": cpu,
                "us_cpu_per_chunk": cpu / (streams * (chunks + 2)) * 1e6,
                "all_complete": complete[name],
                "samples": len(v),
                "wall_samples_s": [round(w, 3) for _, w in v],
            }
        )
    return {"streams": streams, "chunks": chunks, "delay_ms": delay_ms, "ideal_wall_s": ideal, "reps": reps, "rows": rows}


# ---------------------------------------------------------------------------
# 4. import time
# ---------------------------------------------------------------------------
def bench_import(runs: int) -> dict[str, Any]:
    def best(code: str, n: int) -> float:
        times = []
        # as installed packages are: with cached bytecode (the first run writes it; best-of drops it)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        if os.environ.get("LLMRELAY_BENCH_SRC"):
            env["PYTHONPATH"] = os.environ["LLMRELAY_BENCH_SRC"]
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            times.append(time.perf_counter() - t0)
        return min(times)

    bare = best("pass", runs)
    rows = [
        {"what": "import llmrelay", "ms": (best("import llmrelay", runs) - bare) * 1e3},
        {"what": "import llmrelay, httpx (what the first call adds: httpx is lazy)",
         "ms": (best("import llmrelay, httpx", runs) - bare) * 1e3},
        {"what": "import openai (reference)", "ms": (best("import openai", max(2, runs - 2)) - bare) * 1e3},
    ]
    if HAVE_AIOHTTP:
        rows.append({"what": "import aiohttp (reference)", "ms": (best("import aiohttp", max(2, runs - 2)) - bare) * 1e3})
    return {"runs": runs, "bare_python_ms": bare * 1e3, "rows": rows}


# ---------------------------------------------------------------------------
# 5. memory
# ---------------------------------------------------------------------------
def bench_stream_memory(srv: Server, sizes: list[int]) -> dict[str, Any]:
    import httpx

    rows = []
    for n in sizes:
        base = srv.base(f"n{n}")
        kinds = ["llmrelay sync"] + (["raw httpx + list/join (reference)"] if n == sizes[0] else [])
        for kind in kinds:
            client = relay_client() if kind == "llmrelay sync" else httpx.Client(timeout=None)
            if kind == "llmrelay sync":
                check_relay(client, srv.base("n1"), 1)  # pool, imports and caches exist before we trace
            else:
                raw_httpx_sync(client, srv.base("n1"))
            gc.collect()
            tracemalloc.start()
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            if kind == "llmrelay sync":
                s = client.stream(MODEL, MESSAGES, base_url=base)
                for _e in s:
                    pass
                text = s.response.text
                held = tracemalloc.get_traced_memory()[0] - start  # the finished Stream still alive
            else:
                pieces = []
                with client.stream("POST", base + "/chat/completions", json=BODY, headers=HEADERS) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            for ch in json.loads(line[6:])["choices"]:
                                c = ch["delta"].get("content")
                                if c:
                                    pieces.append(c)
                text = "".join(pieces)
                held = tracemalloc.get_traced_memory()[0] - start  # pieces list still alive
            peak = tracemalloc.get_traced_memory()[1] - start
            secs = time.perf_counter() - t0
            tracemalloc.stop()
            assert text == text_of(n), kind
            text_bytes = sys.getsizeof(text)
            rows.append(
                {
                    "variant": kind,
                    "chunks": n,
                    "peak_bytes": peak,
                    "peak_bytes_per_chunk": peak / n,
                    "held_after_bytes": held,
                    "text_chars": len(text),
                    "text_bytes": text_bytes,
                    "beyond_text_bytes_per_chunk": (peak - text_bytes) / n,
                    "traced_seconds": secs,
                }
            )
            client.close()
            del text
    return {"rows": rows}


# ---------------------------------------------------------------------------
# 6. tool loop
# ---------------------------------------------------------------------------
def bench_tools(srv: Server, loop: asyncio.AbstractEventLoop, n: int, warmup: int, reps: int) -> dict[str, Any]:
    """Sync, interleaved: the n-chunk stream with and without `tools=[lookup]` (no call in the
    stream, so one turn), and a real tool round (`/t<n>`: a tool-call stream, `lookup` runs, then
    the n-chunk answer). `answer us/chunk` is the CPU from the first text event to the end."""
    from _server import TOOL_NAME

    base, tbase = srv.base(f"n{n}"), srv.base(f"t{n}")
    lookup = _lookup_tool()
    assert lookup.name == TOOL_NAME
    plain, tooled, rounds = relay_client(), relay_client(), relay_client()
    check_relay(plain, base, n)
    r = rounds.complete(MODEL, MESSAGES, base_url=tbase, tools=[lookup])
    assert r.text == text_of(n) and r.finish_reason == "stop", r
    PLAIN, TOOLS, ROUND = ("llmrelay sync, no tools", "llmrelay sync, tools=[lookup], no call (one turn)",
                           f"llmrelay sync, tool round, then the {n:,}-chunk answer")
    variants: dict[str, Callable[[], Any]] = {
        PLAIN: lambda: relay_sync_timed(plain, base),
        TOOLS: lambda: relay_sync_timed(tooled, base, tools=[lookup]),
        ROUND: lambda: relay_sync_timed(rounds, tbase, tools=[lookup]),
    }
    res = interleaved(loop, variants, warmup, reps)
    for c in (plain, tooled, rounds):
        c.close()
    base_cpu = res[PLAIN]["cpu_s"]
    base_answer = statistics.median(a for _, a in res[PLAIN]["outs"])
    rows = []
    for name, v in res.items():
        answer = statistics.median(a for _, a in v["outs"])
        rows.append({
            "variant": name,
            "us_per_chunk": v["cpu_s"] / n * 1e6,
            "answer_us_per_chunk": answer / n * 1e6,
            "wall_ms": v["wall_s"] * 1e3,
            "x_total": v["cpu_s"] / base_cpu,
            "x_answer": answer / base_answer,
            "events": v["out"][0],
            "cpu_samples_s": v["cpu_all_s"],
        })
    rows[2]["tool_round_fixed_us"] = (res[ROUND]["cpu_s"] - base_cpu) * 1e6  # the extra turn + running the tool
    return {"chunks": n, "reps": reps, "rows": rows,
            "tools_ratio": res[TOOLS]["cpu_s"] / base_cpu,
            "round_answer_ratio": rows[2]["x_answer"]}


# ---------------------------------------------------------------------------
# 7. logging
# ---------------------------------------------------------------------------
def _ttft_sync(client: Any, base: str) -> float:
    t0 = time.perf_counter()
    first = None
    with client.stream(MODEL, MESSAGES, base_url=base) as s:
        for e in s:
            if first is None and e.type == "text":
                first = time.perf_counter() - t0
    assert first is not None
    return first


def bench_logging(srv: Server, loop: asyncio.AbstractEventLoop, n: int, warmup: int, reps: int,
                  ttft_reps: int, paced: str = "p10d5") -> dict[str, Any]:
    """Per-chunk CPU of the n-chunk stream with `Client(log=<temp sqlite>)` vs without: each logged
    run ends with `hook.flush()`, so the writer thread's CPU (serialize, insert, commit) is counted.
    Then TTFT (from `stream(...)` to the first text event) on a paced stream, alternating plain and
    logged calls, without flushing: the writer runs in the background, as in an app."""
    import shutil
    import tempfile

    from llmrelay.logs import LogHook

    tmp = tempfile.mkdtemp(prefix="llmrelay-bench-")
    path = os.path.join(tmp, "logs.db")
    base, pbase = srv.base(f"n{n}"), srv.base(paced)
    plain, logged = relay_client(), relay_client(log=path)
    hook = next(h for h in logged.hooks if isinstance(h, LogHook))
    check_relay(plain, base, n)
    check_relay(logged, base, n)
    hook.flush()
    written0 = hook.stats.written

    def logged_run() -> int:
        out = relay_sync(logged, base)
        hook.flush()
        return out

    PLAIN, LOGGED = "llmrelay sync", "llmrelay sync, log=<temp>.db (+ flush)"
    res = interleaved(loop, {PLAIN: lambda: relay_sync(plain, base), LOGGED: logged_run}, warmup, reps)
    rows = [{"variant": k, "us_per_chunk": v["cpu_s"] / n * 1e6, "wall_ms": v["wall_s"] * 1e3,
             "x": v["cpu_s"] / res[PLAIN]["cpu_s"], "cpu_samples_s": v["cpu_all_s"]} for k, v in res.items()]
    written = hook.stats.written - written0

    for _ in range(5):  # warm the paced path
        _ttft_sync(plain, pbase), _ttft_sync(logged, pbase)
    a: list[float] = []
    b: list[float] = []
    for i in range(ttft_reps):  # interleaved, alternating which goes first
        if i % 2:
            b.append(_ttft_sync(logged, pbase))
            a.append(_ttft_sync(plain, pbase))
        else:
            a.append(_ttft_sync(plain, pbase))
            b.append(_ttft_sync(logged, pbase))
    hook.flush()
    stats = hook.stats
    out = {
        "chunks": n, "reps": reps, "rows": rows, "rows_written": written,
        "cpu_ratio": res[LOGGED]["cpu_s"] / res[PLAIN]["cpu_s"],
        "ttft_scenario": paced, "ttft_reps": ttft_reps,
        "ttft_p50_plain_ms": statistics.median(a) * 1e3,
        "ttft_p50_logged_ms": statistics.median(b) * 1e3,
        "ttft_p90_plain_ms": statistics.quantiles(a, n=10)[-1] * 1e3,
        "ttft_p90_logged_ms": statistics.quantiles(b, n=10)[-1] * 1e3,
        "ttft_ratio": statistics.median(y / x for x, y in zip(a, b)),  # median of paired ratios
        "ttft_added_us": statistics.median(y - x for x, y in zip(a, b)) * 1e6,
        "log_dropped": stats.dropped, "log_failed": stats.failed,
    }
    plain.close()
    logged.close()
    hook.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------
# 8. structured output, 9. memory (with_memory): the two bench modules
# ---------------------------------------------------------------------------
def bench_structured_section(quick: bool) -> dict[str, Any]:
    import bench_structured

    return bench_structured.run(reps=3 if quick else 7)


def bench_bedrock_section(srv: Server, quick: bool) -> dict[str, Any]:
    import bench_bedrock

    return bench_bedrock.run(srv.url, reps=3 if quick else 9)


def bench_memory_section(quick: bool) -> dict[str, Any]:
    import logging

    import bench_memory

    class Once(logging.Filter):  # a failing learner logs once per exchange; show the first, count the rest
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def filter(self, record: logging.LogRecord) -> bool:
            self.seen += 1
            return self.seen == 1

    log = logging.getLogger("llmrelay.memory")
    once = Once()
    log.addFilter(once)
    try:
        out = bench_memory.run(reps=15, zero_latency_reps=41) if quick else bench_memory.run()
    finally:
        log.removeFilter(once)
    out["memory_log_records"] = once.seen
    return out


def bench_memory_search_section(quick: bool) -> dict[str, Any]:
    import bench_memory_search

    return bench_memory_search.run(quick=quick)


# ---------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------
def profile(srv: Server, which: str, n: int = 2000, runs: int = 5, top: int = 15) -> None:
    """cProfile llmrelay on the n-chunk stream: sync, async (httpx backend), aiohttp (aiohttp
    backend), tools (sync, a tool round then the answer), log (sync, Client(log=...), flushed)."""
    import cProfile
    import pstats
    import shutil
    import tempfile

    base = srv.base(f"n{n}")
    loop = asyncio.new_event_loop()
    tmp = tempfile.mkdtemp(prefix="llmrelay-bench-")
    client = relay_client("aiohttp" if which == "aiohttp" else "httpx",
                          **({"log": os.path.join(tmp, "logs.db")} if which == "log" else {}))
    if which == "sync":
        fn: Callable[[], Any] = lambda: relay_sync(client, base)  # noqa: E731
    elif which == "tools":
        lookup = _lookup_tool()
        fn = lambda: relay_sync(client, srv.base(f"t{n}"), tools=[lookup])  # noqa: E731
    elif which == "log":
        hook = client.hooks[-1]

        def fn() -> None:
            relay_sync(client, base)
            hook.flush()
    else:
        fn = lambda: loop.run_until_complete(relay_async(client, base))  # noqa: E731
    for _ in range(2):
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(runs):
        fn()
    prof.disable()
    print(f"cProfile: llmrelay {which}, {runs} x {n}-chunk stream, top {top} by tottime"
          + (" (the log writer thread is not profiled: cProfile sees this thread only)" if which == "log" else ""))
    pstats.Stats(prof).strip_dirs().sort_stats("tottime").print_stats(top)
    if which in ("async", "aiohttp"):
        loop.run_until_complete(client.aclose())
    client.close()
    loop.close()
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# bars
# ---------------------------------------------------------------------------
def _row(section: dict[str, Any] | None, key: str, prefix: str) -> dict[str, Any] | None:
    for r in (section or {}).get("rows", []):
        if r[key].startswith(prefix):
            return r
    return None


def compute_bars(res: dict[str, Any]) -> list[dict[str, Any]]:
    """[{what, value, bar, ok}]: ok is None when the numbers are missing (section skipped or failed)."""
    out: list[dict[str, Any]] = []

    def bar(what: str, value: float | None, limit: float, fmt: str, op: str = "<=", note: str = "") -> None:
        ok = None if value is None else (value <= limit if op == "<=" else value < limit)
        out.append({"what": what, "value": value, "bar": f"{op} {format(limit, fmt)}", "ok": ok,
                    "shown": "-" if value is None else format(value, fmt), "note": note})

    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
        return a[key] / b[key] if a and b else None

    ch = res.get("chunks")
    raw_s, raw_a = _row(ch, "variant", "a "), _row(ch, "variant", "e ")
    bar("per-chunk CPU: llmrelay sync / raw httpx sync", ratio(_row(ch, "variant", "c "), raw_s, "us_per_chunk"), 2, ".2f")
    bar("per-chunk CPU: llmrelay async httpx / raw httpx async",
        ratio(_row(ch, "variant", "d "), raw_a, "us_per_chunk"), 2, ".2f")
    if HAVE_AIOHTTP:
        bar("per-chunk CPU: llmrelay async aiohttp / raw httpx async",
            ratio(_row(ch, "variant", "g "), raw_a, "us_per_chunk"), 2, ".2f")
    fx = res.get("fixed")
    for label, prefix in (("sync", "llmrelay sync"), ("async httpx", "llmrelay async, async_backend=httpx"),
                          ("async aiohttp", "llmrelay async, async_backend=aiohttp")):
        if label == "async aiohttp" and not HAVE_AIOHTTP:
            continue
        r = _row(fx, "variant", prefix)
        bar(f"fixed cost/request: llmrelay {label} / raw httpx {label.split()[0]}",
            r["x_vs_raw_httpx"] if r else None, 1.5, ".2f")
    imp = _row(res.get("import"), "what", "import llmrelay")
    bar("import llmrelay (ms)", imp["ms"] if imp else None, 150, ".1f", "<")
    mem = [r for r in (res.get("memory") or {}).get("rows", []) if r["variant"] == "llmrelay sync"]
    flat = mem[-1]["peak_bytes_per_chunk"] / mem[0]["peak_bytes_per_chunk"] if len(mem) > 1 else None
    bar("stream memory flat: peak B/chunk at 100k / at 10k", flat, 1.10, ".2f")
    t = res.get("tools") or {}
    bar("tools=[fn], no call: per-chunk CPU / without tools", t.get("tools_ratio"), 1.05, ".3f",
        note="'no measurable cost'; 5% taken as the noise floor")
    bar("tool round: answer per-chunk CPU / plain stream", t.get("round_answer_ratio"), 1.05, ".3f",
        note="same 5%")
    lg = res.get("logging") or {}
    bar("log=<sqlite>: per-chunk CPU / without (writer incl.)", lg.get("cpu_ratio"), 1.10, ".3f", "<")
    bar("log=<sqlite>: TTFT p50 / without (paired median)", lg.get("ttft_ratio"), 1.05, ".3f",
        note="'nothing added'; 5% taken as the noise floor")
    m = res.get("memory_ttft") or {}
    bar("with_memory (no search): TTFT / without", m.get("ratio"), 1.05, ".3f")
    ms = res.get("memory_search") or {}
    for name, row in (ms.get("search") or {}).items():
        bar(f"memory search p50 ms, {name}", row["p50_ms"], 5.0, ".2f")
        bar(f"memory search p99 ms, {name}", row["p99_ms"], 25.0, ".2f")
    st = res.get("structured") or {}
    flat_st = (st["output_last_quarter_us_per_chunk"] / st["output_first_quarter_us_per_chunk"]
               if st.get("output_first_quarter_us_per_chunk") else None)
    bar("structured: output=Model per-chunk CPU, last / first quarter", flat_st, 1.5, ".2f",
        note="flat: no re-parse of the prefix")
    # No bar was set for output=; the per-chunk bar (<= 2x raw httpx) is applied to a stream with
    # output=Model: llmrelay sync's us/chunk (section 1) plus what output= adds per chunk (section 8,
    # measured in-process, so it adds the same absolute CPU whatever the transport).
    c = _row(ch, "variant", "c ")
    with_output = ((c["us_per_chunk"] + st["output_overhead_us_per_chunk"]) / raw_s["us_per_chunk"]
                   if c and raw_s and "output_overhead_us_per_chunk" in st else None)
    bar("structured: (llmrelay sync + output= cost) / raw httpx", with_output, 2, ".2f",
        note="the per-chunk bar applied to output=Model")
    br = res.get("bedrock") or {}
    bar("Bedrock event stream: per-chunk CPU / SSE (llmrelay sync)", br.get("sync_ratio"), 2, ".2f")
    return out


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return format("-", spec.split(".")[0]) if v is None else format(v, spec)


def print_table(res: dict[str, Any]) -> None:
    W = 100
    out: list[str] = []
    meta = res["meta"]
    out.append("=" * W)
    out.append(
        f"llmrelay bench  |  python {meta['python']}  |  {meta['cpus']} cores (load {meta['loadavg_start'][0]:.1f})  |  "
        + "  ".join(f"{k} {v}" for k, v in meta["versions"].items())
    )
    out.append("=" * W)
    if "chunks" in res:
        c = res["chunks"]
        out.append(f"1. Per-chunk client CPU: {c['chunks']:,}-chunk OpenAI Chat stream, one HTTP chunk per event "
                   f"(median of {c['reps']})")
        out.append(f"   {'variant':<50}{'us/chunk':>10}{'wall ms':>10}{'x vs a':>9}{'x vs e':>9}")
        for r in c["rows"]:
            out.append(f"   {r['variant']:<50}{r['us_per_chunk']:>10.1f}{r['wall_ms']:>10.1f}"
                       f"{_fmt(r['x_vs_a'], '>9.2f')}{_fmt(r['x_vs_e'], '>9.2f')}")
        out.append("")
    if "fixed" in res:
        f = res["fixed"]
        out.append(f"2. Fixed cost per request: {f['requests']} sequential 3-event streams on one client "
                   f"(median of {f['reps']})")
        out.append(f"   {'variant':<50}{'us CPU/req':>12}{'wall ms/req':>13}{'x vs raw httpx':>16}")
        for r in f["rows"]:
            out.append(f"   {r['variant']:<50}{r['us_cpu_per_request']:>12.0f}{r['wall_ms_per_request']:>13.2f}"
                       f"{r['x_vs_raw_httpx']:>16.2f}")
        out.append("   (async rows are compared with raw httpx async, sync rows with raw httpx sync)")
        out.append("")
    if "concurrency" in res:
        k = res["concurrency"]
        out.append(f"3. Concurrency: {k['streams']} concurrent streams x {k['chunks']} chunks, {k['delay_ms']} ms apart "
                   f"(ideal wall ~{k['ideal_wall_s']:.2f} s; new pool per run unless warm; median of n)")
        out.append(f"   {'variant':<54}{'wall s':>8}{'CPU s':>8}{'us CPU/chunk':>14}{'x wall vs aiohttp':>19}{'n':>3}{'ok':>5}")
        ref = next((r["wall_s"] for r in k["rows"] if r["variant"] == "raw aiohttp TCPConnector(limit=0)"), None)
        for r in k["rows"]:
            out.append(f"   {r['variant']:<54}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['us_cpu_per_chunk']:>14.1f}"
                       f"{_fmt(r['wall_s'] / ref if ref else None, '>19.2f')}{r['samples']:>3}"
                       f"{('yes' if r['all_complete'] else 'NO'):>5}")
        out.append("")
    if "import" in res:
        i = res["import"]
        out.append(f"4. Import time (best of {i['runs']} subprocess runs minus bare `python -c pass` "
                   f"= {i['bare_python_ms']:.1f} ms)")
        for r in i["rows"]:
            out.append(f"   {r['what']:<70}{r['ms']:>9.1f} ms")
        out.append("")
    if "memory" in res:
        out.append("5. Memory: tracemalloc peak while streaming, then building the Response (sync)")
        out.append(f"   {'variant':<36}{'chunks':>9}{'peak':>10}{'B/chunk':>9}{'text chars':>12}"
                   f"{'text bytes':>12}{'beyond text B/chunk':>21}{'held after':>12}")
        for r in res["memory"]["rows"]:
            out.append(f"   {r['variant']:<36}{r['chunks']:>9,}{r['peak_bytes'] / 1e6:>8.2f}MB"
                       f"{r['peak_bytes_per_chunk']:>9.0f}{r['text_chars']:>12,}{r['text_bytes']:>12,}"
                       f"{r['beyond_text_bytes_per_chunk']:>21.0f}{r['held_after_bytes'] / 1e6:>10.2f}MB")
        out.append("   (text bytes = sys.getsizeof of the final str: 4 B/char here, the text has an emoji; "
                   "held after = still traced with the finished stream alive)")
        out.append("")
    if "tools" in res:
        t = res["tools"]
        out.append(f"6. Tool loop: per-chunk client CPU, {t['chunks']:,}-chunk stream, sync (median of {t['reps']}; "
                   "answer = CPU from the first text event on)")
        out.append(f"   {'variant':<56}{'us/chunk':>10}{'answer us/chunk':>17}{'wall ms':>9}{'x':>7}{'x answer':>10}")
        for r in t["rows"]:
            out.append(f"   {r['variant']:<56}{r['us_per_chunk']:>10.2f}{r['answer_us_per_chunk']:>17.2f}"
                       f"{r['wall_ms']:>9.1f}{r['x_total']:>7.3f}{r['x_answer']:>10.3f}")
        out.append(f"   (the tool round adds {t['rows'][2]['tool_round_fixed_us']:.0f} us CPU in all: "
                   "a second request, the tool-call turn, validating and running `lookup`)")
        out.append("")
    if "logging" in res:
        lg = res["logging"]
        out.append(f"7. Logging: Client(log=<temp sqlite>) vs none, sync (median of {lg['reps']}; "
                   f"{lg['rows_written']} rows written, {lg['log_dropped']} dropped, {lg['log_failed']} failed)")
        out.append(f"   {'variant':<56}{'us/chunk':>10}{'wall ms':>10}{'x':>8}")
        for r in lg["rows"]:
            out.append(f"   {r['variant']:<56}{r['us_per_chunk']:>10.2f}{r['wall_ms']:>10.1f}{r['x']:>8.3f}")
        out.append(f"   TTFT, client-side (stream() to first text event), /{lg['ttft_scenario']} paced stream, "
                   f"{lg['ttft_reps']} alternating pairs, writer in the background:")
        out.append(f"   {'':<56}{'p50 ms':>10}{'p90 ms':>10}")
        out.append(f"   {'without log':<56}{lg['ttft_p50_plain_ms']:>10.3f}{lg['ttft_p90_plain_ms']:>10.3f}")
        out.append(f"   {'with log':<56}{lg['ttft_p50_logged_ms']:>10.3f}{lg['ttft_p90_logged_ms']:>10.3f}")
        out.append(f"   paired: TTFT ratio {lg['ttft_ratio']:.3f} (median of with/without per pair), "
                   f"{lg['ttft_added_us']:+.0f} us median difference; ratio of the p50s "
                   f"{lg['ttft_p50_logged_ms'] / lg['ttft_p50_plain_ms']:.3f}")
        out.append("")
    if "bedrock" in res:
        br = res["bedrock"]
        out.append(f"11. Bedrock ConverseStream (binary AWS event stream) vs OpenAI Chat SSE: {br['chunks']:,} text deltas, "
                   f"one message/event per HTTP chunk (bench/bench_bedrock.py; median of {br['reps']})")
        for r in br["rows"]:
            out.append(f"   {r['variant']:<56}{r['us_per_chunk']:>10.2f} us/chunk")
        out.append(f"   bedrock / sse: llmrelay sync {br['sync_ratio']:.2f}x, decoders alone {br['decoder_ratio']:.2f}x")
        out.append("")
    if "structured" in res:
        st = res["structured"]
        out.append(f"8. Structured output: {int(st['chunks']):,}-chunk JSON object stream, in-process MockTransport "
                   "(bench/bench_structured.py; client CPU, best of runs)")
        for label, key in (
            ("plain stream (no output=)", "plain_us_per_chunk"),
            ("stream, output=Model", "output_model_us_per_chunk"),
            ("stream, output=list[Entry]", "output_list_us_per_chunk"),
            ("complete, output=Model", "complete_output_us_per_chunk"),
            ("  overhead of output= (stream)", "output_overhead_us_per_chunk"),
            ("stream, output=Model, first 500 chunks", "output_first_quarter_us_per_chunk"),
            ("stream, output=Model, last 500 chunks", "output_last_quarter_us_per_chunk"),
            ("parser alone, first 500 chunks", "parser_first_quarter_us_per_chunk"),
            ("parser alone, last 500 chunks", "parser_last_quarter_us_per_chunk"),
        ):
            x = f"{st[key] / st['plain_us_per_chunk']:>8.2f}x plain" if key.startswith(("output_model", "output_list", "complete")) else ""
            out.append(f"   {label:<56}{st[key]:>10.2f} us/chunk{x}")
        out.append("")
    if "memory_ttft" in res:
        m = res["memory_ttft"]
        out.append(f"9. Memory (with_memory, no search): TTFT, first token after {m['first_token_delay_ms']:.0f} ms, "
                   f"{m['reps']} interleaved rounds (bench/bench_memory.py)")
        out.append(f"   {'without memory':<56}{m['ttft_plain_ms']:>10.2f} ms")
        out.append(f"   {'with memory':<56}{m['ttft_memory_ms']:>10.2f} ms")
        out.append(f"   {'ratio (median of paired)':<56}{m['ratio']:>10.3f}     (ratio of medians {m['ratio_of_medians']:.3f})")
        out.append(f"   zero-latency server: +{m['overhead_us']:.0f} us per call with memory "
                   f"(TTFT {m['ttft_zero_latency_plain_us']:.0f} us without); MemoryClient._prepare {m['prepare_us']:.1f} us")
        note = "" if not m["failed"] else "  <- learning FAILED, so its background work is missing from this TTFT"
        out.append(f"   background learning during the run: {m['learned']} learned, {m['failed']} failed{note}")
        out.append("")
    if "memory_search" in res:
        ms = res["memory_search"]
        out.append("10. Memory recall and search (bench/bench_memory_search.py)")
        for mode, v in ms["recall_at_5"].items():
            out.append(f"   {'recall@5, paraphrase set, ' + mode:<56}{v:>10.2f}")
        for name, row in ms["search"].items():
            out.append(f"   {'search ' + name:<56}p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms")
        if "query_embed_ms" in ms:
            out.append(f"   {'+ embedding the query (local MiniLM, p50)':<56}{ms['query_embed_ms']:>10.1f} ms")
        for mode, v in ms["learn_per_s"].items():
            out.append(f"   {'learning throughput, ' + mode:<56}{v:>10.0f} exchanges/s")
        i = ms["install"]
        out.append(f"   {'memory-local install (code + weights)':<56}{i['total_mb']:>10.0f} MB "
                   f"({i['extra_mb']:.0f} + {i['weights_mb']:.0f}; PyTorch stack ~1400)")
        out.append("")
    for key, err in res.get("errors", {}).items():
        out.append(f"!! section {key} failed: {err}")
    if res.get("errors"):
        out.append("")
    if res.get("bars"):
        out.append("Bars")
        out.append(f"   {'':<62}{'value':>9}{'bar':>10}")
        for b in res["bars"]:
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[b["ok"]]
            note = f"  ({b['note']})" if b["note"] else ""
            out.append(f"   {b['what']:<62}{b['shown']:>9}{b['bar']:>10}  {verdict}{note}")
        out.append("")
    secs = ", ".join(f"{k} {v:.0f}" for k, v in res["meta"].get("section_seconds", {}).items())
    out.append(f"total bench time {res['meta']['seconds']:.0f} s ({secs}); load at the end "
               f"{res['meta']['loadavg_end'][0]:.1f}; JSON: .bench/results.json")
    print("\n".join(out))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("llmrelay", "httpx", "httpcore", "h11", "openai", "aiohttp"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


SECTIONS = ("chunks", "fixed", "concurrency", "tools", "logging", "import", "memory", "structured", "memory_ttft",
            "memory_search", "bedrock")
#: Sections run only when named in --only (they take minutes): the soak (bench_soak.py).
EXTRA_SECTIONS = ("soak", "lines")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller runs (smoke test)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated sections: " + ",".join(SECTIONS + EXTRA_SECTIONS) + " (soak only when named)")
    ap.add_argument("--soak-streams", type=int, default=20_000, help="streams per soak run (sync, then async)")
    ap.add_argument("--profile", choices=("sync", "async", "aiohttp", "tools", "log"),
                    help="cProfile llmrelay on the 2,000-chunk stream and exit")
    ap.add_argument("--streams", type=int, default=500, help="concurrent streams in section 3")
    args = ap.parse_args()
    _raise_nofile()
    only = set(args.only.split(","))
    q = args.quick
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "meta": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions(),
            "aiohttp_installed": HAVE_AIOHTTP,
            "llmrelay_src": os.path.dirname(os.path.dirname(__import__("llmrelay").__file__)),
            "loadavg_start": os.getloadavg(),
        }
    }
    with Server() as srv:
        if args.profile:
            profile(srv, args.profile)
            return
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        timing = res["meta"]["section_seconds"] = {}

        errors = res["errors"] = {}

        def section(key: str, fn: Callable[[], Any]) -> None:
            if key in only:
                t0 = time.perf_counter()
                try:
                    res[key] = fn()
                except Exception as exc:  # one broken section must not cost the rest of the run
                    import traceback

                    traceback.print_exc()
                    errors[key] = f"{type(exc).__name__}: {exc}"
                timing[key] = round(time.perf_counter() - t0, 1)

        section("chunks", lambda: bench_chunks(srv, loop, n=2000, warmup=2, reps=3 if q else 9))
        section("fixed", lambda: bench_fixed(srv, loop, requests=100 if q else 300, warmup=1, reps=2 if q else 3))
        section("concurrency", lambda: bench_concurrency(
            srv, loop, streams=min(args.streams, 100) if q else args.streams, chunks=20, delay_ms=50, reps=1 if q else 3))
        section("tools", lambda: bench_tools(srv, loop, n=2000, warmup=2, reps=5 if q else 15))
        section("logging", lambda: bench_logging(srv, loop, n=2000, warmup=2, reps=5 if q else 15,
                                                 ttft_reps=21 if q else 61))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        section("import", lambda: bench_import(runs=3 if q else 5))
        section("memory", lambda: bench_stream_memory(srv, [10_000] if q else [10_000, 100_000]))
        section("soak", lambda: __import__("bench_soak").run(srv.url, 2_000 if q else args.soak_streams))
        section("lines", lambda: __import__("bench_soak").lines())
        section("bedrock", lambda: bench_bedrock_section(srv, q))
    section("structured", lambda: bench_structured_section(q))
    section("memory_ttft", lambda: bench_memory_section(q))
    section("memory_search", lambda: bench_memory_search_section(q))
    res["bars"] = compute_bars(res)
    res["meta"]["seconds"] = time.perf_counter() - t_start
    res["meta"]["loadavg_end"] = os.getloadavg()
    print_table(res)
    if "soak" in res:
        __import__("bench_soak").print_report(res["soak"])
    if "lines" in res:
        __import__("bench_soak").print_lines(res["lines"])
    out = ROOT / ".bench" / "results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
