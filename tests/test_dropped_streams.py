"""Dropping a stream without closing it is always safe, and pools never leak (issue 12, items 1 and 4).

- The README's quickstart pattern (`for text in stream(...).text_stream: break`, no close) runs
  in a loop in a subprocess with the cyclic GC made very eager, so dropped streams get finalized
  inside the next call (where httpcore holds its pool lock): it must finish (a watchdog kills a
  hang), and leave no socket behind.
- 32 threads making a client's first call together share one pool: `close()` closes every
  connection the client opened (sockets counted in /proc).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import llmrelay
from llmrelay.testing import Reply, ReplayServer

from hostile import client_sockets

SHORT = "openai_chat/text_usage_chunk.sse"
HERE = Path(__file__).parent

LOOP = textwrap.dedent('''
    import asyncio, gc, sys
    sys.path.insert(0, {here!r})
    import llmrelay
    from llmrelay.testing import Reply, ReplayServer
    from hostile import client_sockets

    gc.set_threshold(25)  # the cyclic GC runs inside almost every call: dropped streams die there
    with ReplayServer(default=Reply.recording({rec!r}, chunking="events")) as srv:
        client = llmrelay.Client(base_urls={{"openai": srv.url + "/v1"}}, api_keys={{"openai": "k"}}, retry=0,
                                 async_backend={backend!r})
        n = 0
        if {mode!r} == "sync":
            for i in range({runs}):
                s = client.stream("openai:gpt-4o", "hi")
                if {cyclic!r}:  # the caller's own cycle: only the garbage collector can free the stream
                    holder = {{"stream": s}}
                    holder["self"] = holder
                for text in s.text_stream:
                    n += 1
                    break
                s = holder = None
        else:
            async def main():
                global n
                for i in range({runs}):
                    async for text in client.astream("openai:gpt-4o", "hi").text_stream:
                        n += 1
                        break
                await asyncio.sleep(0)  # let the loop run the finalizers of the last dropped streams
                await client.aclose()
            asyncio.run(main())
        during = client_sockets(srv.port)
        client.close()
        gc.collect()
        print(n, during, client_sockets(srv.port), srv.connections)
''')


@pytest.mark.parametrize("mode,backend,cyclic", [("sync", "httpx", False), ("sync", "httpx", True),
                                                ("async", "httpx", False), ("async", "aiohttp", False)])
def test_quickstart_pattern_never_hangs_nor_leaks(mode, backend, cyclic):
    runs = 300
    code = LOOP.format(here=str(HERE), rec=SHORT, mode=mode, backend=backend, runs=runs, cyclic=cyclic)
    try:  # the watchdog: a hang is a failure, not a stuck test run
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the quickstart pattern hung ({mode}, {backend}): {exc.stderr!r}")
    assert out.returncode == 0, out.stderr
    texts, during, after, connections = map(int, out.stdout.split())
    assert texts == runs
    # at most the last dropped stream and the pooled connection; in a cycle, what the GC has not reached yet
    assert during <= (40 if cyclic else 2)
    assert after == 0  # close() released everything
    assert connections <= runs  # nothing reconnects behind our back


def test_dropped_stream_hangs_up_at_once_without_a_gc(server):
    """Dropped and finalized (here by an explicit collection): the server sees the hang-up."""
    server.enqueue(Reply.recording("openai_chat/json_object_long.sse", chunking="events", delay=0.01))
    server.enqueue(Reply.recording(SHORT))
    client = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, api_keys={"openai": "k"}, retry=0)
    try:
        for _ in client.stream("openai:gpt-4o", "hi").text_stream:
            break
        gc.collect()
        assert server.wait_disconnect(10) is not None
        assert client.complete("openai:gpt-4o", "hi").status == "ok"  # the pool slot was released
        assert client_sockets(server.port) <= 1
    finally:
        client.close()
    assert client_sockets(server.port) == 0


@pytest.mark.parametrize("threads", [32])
def test_first_call_from_many_threads_builds_one_pool(threads):
    with ReplayServer(default=Reply.recording(SHORT, chunking="events")) as srv:
        client = llmrelay.Client(base_urls={"openai": srv.url + "/v1"}, api_keys={"openai": "k"}, retry=0)
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                start.wait(10)
                assert client.complete("openai:gpt-4o", "hi").status == "ok"
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        gc.disable()  # a leaked pool must show up as an open socket, not be collected by chance
        try:
            workers = [threading.Thread(target=call) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(60)
            assert not errors, errors
            assert len(client._sync()._pools._built) == 1  # one httpx.Client for the scheme
            client.close()
            assert client_sockets(srv.port) == 0  # every connection the client opened is closed
        finally:
            gc.enable()


def test_close_closes_pools_of_every_event_loop():
    import asyncio

    with ReplayServer(default=Reply.recording(SHORT)) as srv:
        client = llmrelay.Client(base_urls={"openai": srv.url + "/v1"}, api_keys={"openai": "k"}, retry=0,
                                 async_backend="httpx")
        for _ in range(2):  # two loops: two pools
            asyncio.run(client.acomplete("openai:gpt-4o", "hi"))
        assert client_sockets(srv.port) >= 1

        async def close() -> None:
            await client.aclose()

        asyncio.run(close())
        gc.collect()
        assert client_sockets(srv.port) == 0


if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/net/tcp"):  # pragma: no cover
    pytestmark = pytest.mark.skip("counts sockets through /proc")
