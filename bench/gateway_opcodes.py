"""Python opcodes per gateway request, by function: an exact count, not a timing, so a change to the
gateway's hot path can be measured on a busy shared machine.

    .venv/bin/python bench/gateway_opcodes.py                 # non-streaming requests
    .venv/bin/python bench/gateway_opcodes.py --stream        # 50-chunk streams
    .venv/bin/python bench/gateway_opcodes.py --requests 50 --top 40

`GatewayApp` (no server in front) answers OpenAI Chat requests driven in-process, its upstream being
bench/_server.py in its own process. After a warm-up, `sys.settrace` counts every opcode the event
loop's thread executes while N sequential requests are served: per function, the opcodes of its own
code (self) and of everything under it (total). Work done in C (JSON, aiohttp's HTTP parser, system
calls, the event loop itself) is not counted: pair it with callgrind for instructions (bench/README.md,
*Gateway*). The count moves a little between runs with how the upstream's bytes are batched into reads.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def short(code: Any) -> str:
    name = code.co_filename
    for marker in ("site-packages/", "/src/", "/python3.11/", "/python3.12/", "/python3.13/"):
        if marker in name:
            name = name.split(marker)[-1]
            break
    return f"{name}:{code.co_name}"


class Counter:
    """A `sys.settrace` tracer: opcodes per function, self and total (a function counted once per opcode
    however deep it recurses)."""

    def __init__(self) -> None:
        self.self_ops: collections.Counter[str] = collections.Counter()
        self.total_ops: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            self.calls[short(frame.f_code)] += 1
        elif event == "opcode":
            self.self_ops[short(frame.f_code)] += 1
            seen = set()
            f = frame
            while f is not None:
                key = short(f.f_code)
                if key not in seen:
                    seen.add(key)
                    self.total_ops[key] += 1
                f = f.f_back
        return self


async def run(port: int, stream: bool, requests: int) -> Counter:
    from llmrelay.gateway.app import GatewayApp

    cfg = Path(tempfile.mkdtemp(prefix="llmrelay-opcodes-")) / "gateway.yaml"
    scenario = "n50" if stream else "n1"
    cfg.write_text(f"models:\n  m:\n    model: openai:gpt-4o\n    base_url: http://127.0.0.1:{port}/{scenario}/v1\n"
                   "    api_key: x\n    retries: 0\n")
    app = GatewayApp(str(cfg), load_now=True)
    await app.startup()
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode()
    headers = [(b"host", b"gateway"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"authorization", b"Bearer x")]

    async def one() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        done = asyncio.Event()
        given = False
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # as a server does: the disconnect comes once the response is sent
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        done.set()
        if statuses != [200]:
            raise RuntimeError(f"the gateway answered {statuses}")

    for _ in range(30):  # imports, the price data, pools, caches
        await one()
    await asyncio.sleep(0.3)
    counter = Counter()
    sys.settrace(counter)
    try:
        for _ in range(requests):
            await one()
    finally:
        sys.settrace(None)
    await app.shutdown()
    return counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", action="store_true", help="50-chunk streams instead of non-streaming requests")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    upstream = subprocess.Popen([sys.executable, str(HERE / "_server.py")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(upstream.stdout.readline())  # type: ignore[union-attr]
        try:
            import uvloop

            counter = uvloop.run(run(port, a.stream, a.requests))
        except ImportError:
            counter = asyncio.run(run(port, a.stream, a.requests))
    finally:
        upstream.stdin.close()  # type: ignore[union-attr]
        upstream.wait(10)
    n = a.requests
    total = sum(counter.self_ops.values())
    what = "50-chunk stream" if a.stream else "non-streaming request"
    print(f"per {what}: {total / n:,.0f} opcodes, {sum(counter.calls.values()) / n:,.0f} Python calls")
    print(f"\n{'total':>8} {'self':>7} {'calls':>6}  function")
    rows = [(key, ops) for key, ops in counter.total_ops.most_common()
            if not key.startswith(("uvloop/", "asyncio/", "bench/", HERE.name + "/")) and "gateway_opcodes" not in key]
    for key, ops in rows[:a.top]:
        print(f"{ops / n:8.0f} {counter.self_ops[key] / n:7.0f} {counter.calls[key] / n:6.1f}  {key}")
    print(f"\nby self opcodes:\n{'self':>8} {'calls':>6}  function")
    for key, ops in counter.self_ops.most_common(a.top):
        print(f"{ops / n:8.0f} {counter.calls[key] / n:6.1f}  {key}")


if __name__ == "__main__":
    main()
