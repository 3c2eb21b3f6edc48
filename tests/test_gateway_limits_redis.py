"""The gateway's per-key limits shared through Redis (`limits: {store: redis://…}`), over real sockets.

Two gateway instances (separate apps, separate Redis clients, the way two workers or replicas are) in front of
one replay server, counting in the real local Redis (`LLMRELAY_TEST_REDIS_URL`, default
redis://127.0.0.1:6379/0), each test under a prefix of its own that is deleted at the end. Skipped when Redis
(or redis-py) is not available, except under `CI=true`, where that is a failure.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import pytest

from db_helpers import REDIS_URL, redis_prefix
from helpers import wait_for
from gateway_helpers import GatewayThread, free_port, gpt_route

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from llmrelay.gateway.config import ConfigError, parse  # noqa: E402
from llmrelay.testing import ReplayServer, Reply, faults  # noqa: E402

URL = REDIS_URL
REC = "openai_chat/text_usage_chunk.sse"
HELD = faults.stall(REC, after=3, seconds=60)  # answers at once, then holds the request in flight
BODY = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": True}
AUTH = {"authorization": "Bearer sk-limited"}




@pytest.fixture
def store():
    """(a sync Redis client, a prefix of this test's own); the prefix's keys are deleted afterwards."""
    yield from redis_prefix("the shared-limits tests")


def config(up_url: str, prefix: str, key: str, limits: str = "", store_url: str = URL) -> str:
    return f"""
models:
{gpt_route(up_url)}keys:
  - {{name: limited, key: sk-limited, {key}}}
  - {{name: free, key: sk-free}}
limits:
  store: {store_url}
  prefix: "{prefix}"
  {limits}
"""


def in_flight(r, prefix: str) -> int:
    """Reservations in the Redis set of the key `limited`, as stored (expired ones are pruned only by admissions)."""
    (name,) = [k for k in r.scan_iter(match=prefix + "*:in_flight")] or [None]
    return 0 if name is None else r.zcard(name)


async def burst(client, urls: list[str], n: int, headers: dict[str, str] = AUTH) -> tuple[list, list]:
    """n streaming requests at once, spread over the instances: (the admitted responses, still open; the refused)."""

    async def one(i: int):
        req = client.build_request("POST", urls[i % len(urls)] + "/v1/chat/completions", json=BODY, headers=headers)
        resp = await client.send(req, stream=True)
        if resp.status_code != 200:
            await resp.aread()
            await resp.aclose()
        return resp

    out = await asyncio.gather(*(one(i) for i in range(n)))
    return [r for r in out if r.status_code == 200], [r for r in out if r.status_code != 200]


async def hang_up(responses) -> None:
    for r in responses:
        await r.aclose()


async def test_two_instances_count_max_parallel_and_rpm_exactly_and_aborts_release(store):
    r, prefix = store
    with ReplayServer(default=HELD) as up:
        cfg = config(up.url, prefix, "max_parallel: 3, rpm: 5")
        with GatewayThread(cfg) as a, GatewayThread(cfg) as b:
            urls = [a.url, b.url]
            async with httpx.AsyncClient(timeout=30) as client:
                # 8 at once over two instances: 3 slots in all, not 3 per instance
                ok, refused = await burst(client, urls, 8)
                assert len(ok) == 3 and len(refused) == 5
                for resp in refused:
                    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
                    err = resp.json()["error"]
                    assert err["type"] == "rate_limit_error" and "3 requests already in flight" in err["message"]
                assert in_flight(r, prefix) == 3
                assert len(up.requests) == 3  # the refused never went upstream
                up.enqueue(Reply.recording(REC, chunking="events"))
                assert (await client.post(a.url + "/v1/chat/completions", json=BODY,
                                          headers={"authorization": "Bearer sk-free"})).status_code == 200

                await hang_up(ok)  # the clients hang up mid-stream: each slot is released
                wait_for(lambda: in_flight(r, prefix) == 0, "the aborted streams' slots to be released")
                a.settle(), b.settle()

                # 3 of the 5 per minute are used (refusals for max_parallel do not count): 2 more, not 3
                ok, refused = await burst(client, urls, 4)
                assert len(ok) == 2 and len(refused) == 2
                for resp in refused:
                    assert resp.status_code == 429 and "more than 5 requests per minute" in resp.json()["error"]["message"]
                    assert 1 <= int(resp.headers["retry-after"]) <= 60
                await hang_up(ok)
                wait_for(lambda: in_flight(r, prefix) == 0, "the slots to be released")
                # the minute's 5 are spent, on either instance
                for url in urls:
                    resp = await client.post(url + "/v1/chat/completions", json=BODY, headers=AUTH)
                    assert resp.status_code == 429 and "per minute" in resp.json()["error"]["message"]
                assert in_flight(r, prefix) == 0


async def test_upstream_errors_release_and_a_flushed_script_is_loaded_again(store):
    r, prefix = store
    with ReplayServer() as up:
        cfg = config(up.url, prefix, "max_parallel: 1")
        with GatewayThread(cfg) as a:
            async with httpx.AsyncClient(timeout=30) as client:
                for reply, status in [(faults.status(500, "boom", protocol="openai_chat"), 500),
                                      (faults.cut(REC, after=2), 200), (faults.reset(), 502)]:
                    up.enqueue(reply)
                    resp = await client.post(a.url + "/v1/chat/completions", json=BODY, headers=AUTH)
                    assert resp.status_code == status
                    a.settle()
                    assert in_flight(r, prefix) == 0  # failed, cut or refused upstream: the slot is free
                r.script_flush()  # as after a Redis restart: EVALSHA fails with NOSCRIPT, EVAL loads it again
                up.enqueue(Reply.recording(REC, chunking="events"))
                resp = await client.post(a.url + "/v1/chat/completions", json=BODY, headers=AUTH)
                assert resp.status_code == 200 and "I'm" in resp.text
            assert a.gateway.shared.errors == 0  # no fallback on the way


async def test_a_reload_keeps_the_counts(store, tmp_path):
    """SIGHUP builds a new generation; a request in flight on the old one still holds its slot, and releases it."""
    r, prefix = store
    with ReplayServer(default=HELD) as up:
        path = tmp_path / "gateway.yaml"
        path.write_text(config(up.url, prefix, "max_parallel: 1"))
        with GatewayThread(path=str(path)) as a:
            async with httpx.AsyncClient(timeout=30) as client:
                ok, _ = await burst(client, [a.url], 1)
                assert len(ok) == 1
                old = a.gateway
                assert a.app.reload() and a.gateway is not old
                _, refused = await burst(client, [a.url], 1)
                assert refused[0].status_code == 429
                await hang_up(ok)  # released by the old generation, in the same Redis
                wait_for(lambda: in_flight(r, prefix) == 0, "the slot to be released")
                ok, _ = await burst(client, [a.url], 1)
                assert len(ok) == 1
                await hang_up(ok)


async def test_a_long_request_keeps_its_slot_past_the_lease(store):
    """The heartbeat renews a live request's deadline: it is not taken for a crashed one after `lease`."""
    r, prefix = store
    with ReplayServer(default=HELD) as up:
        cfg = config(up.url, prefix, "max_parallel: 1", "lease: 3")
        with GatewayThread(cfg) as a, GatewayThread(cfg) as b:
            async with httpx.AsyncClient(timeout=30) as client:
                ok, _ = await burst(client, [a.url], 1)
                assert len(ok) == 1
                start = float(r.time()[0])
                wait_for(lambda: float(r.time()[0]) > start + 7, "two leases to pass (Redis clock)")
                resp = await client.post(b.url + "/v1/chat/completions", json=BODY, headers=AUTH)
                assert resp.status_code == 429
                await hang_up(ok)
                wait_for(lambda: in_flight(r, prefix) == 0, "the slot to be released")
                ok, _ = await burst(client, [b.url], 1)
                assert len(ok) == 1
                await hang_up(ok)


class Serve:
    """`llmrelay serve` as a real process (SIGKILL-able), ready when /health/ready answers 200."""

    def __init__(self, path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "llmrelay.cli", "serve", "--config", str(path), "--port",
                                      str(self.port), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> Serve:
        def ready() -> bool:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:
                return httpx.get(self.url + "/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, "the gateway process to be ready", 60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stderr.close()


async def test_workers_of_one_server_share_the_count(store, tmp_path):
    """`llmrelay serve --workers 2`: two worker processes, one count."""
    r, prefix = store
    with ReplayServer(default=HELD) as up:
        path = tmp_path / "gateway.yaml"
        path.write_text(config(up.url, prefix, "max_parallel: 2"))
        with Serve(path, "--workers", "2") as gw:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                ok, refused = await burst(client, [gw.url], 6)
                assert len(ok) == 2 and [x.status_code for x in refused] == [429] * 4
                assert in_flight(r, prefix) == 2
                await hang_up(ok)
                wait_for(lambda: in_flight(r, prefix) == 0, "the aborted streams' slots to be released")


def test_a_killed_process_slots_expire(store, tmp_path):
    """A real `llmrelay serve` process holds the only slot and is killed (SIGKILL: no finally runs); its
    reservation stays in Redis until its lease ends, then another instance admits again."""
    r, prefix = store
    with ReplayServer(default=HELD) as up:
        cfg = config(up.url, prefix, "max_parallel: 1", "lease: 5")
        path = tmp_path / "gateway.yaml"
        path.write_text(cfg)
        with Serve(path) as a, httpx.Client(timeout=30) as client:
            with client.stream("POST", a.url + "/v1/chat/completions", json=BODY, headers=AUTH) as resp:
                assert resp.status_code == 200
                assert in_flight(r, prefix) == 1
                a.proc.send_signal(signal.SIGKILL)
                a.proc.wait(10)
        assert in_flight(r, prefix) == 1  # the dead process's slot is still reserved
        with GatewayThread(cfg) as b:
            def admitted() -> bool:
                with httpx.Client(timeout=30) as client:
                    with client.stream("POST", b.url + "/v1/chat/completions", json=BODY, headers=AUTH) as resp:
                        return resp.status_code == 200
            wait_for(admitted, "the dead process's reservation to expire", 30)
            wait_for(lambda: in_flight(r, prefix) == 0, "the slot to be released")


def _blackhole() -> socket.socket:
    """A port that accepts connections and never answers: a frozen Redis."""
    s = socket.create_server(("127.0.0.1", 0), backlog=64)
    return s


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
async def test_store_down_follows_on_store_error_without_hanging(mode):
    refused = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    hole = _blackhole()
    frozen = f"redis://127.0.0.1:{hole.getsockname()[1]}/0"
    try:
        with ReplayServer(default=HELD) as up:
            for store_url in (refused, frozen):
                cfg = config(up.url, "llmrelay-test-down:", "max_parallel: 1",
                             f"on_store_error: {mode}\n  timeout: 0.2", store_url=store_url)
                with GatewayThread(cfg) as a:
                    async with httpx.AsyncClient(timeout=20) as client:  # a hang fails here, not at pytest's timeout
                        ok, no = await burst(client, [a.url], 2)
                        if mode == "local":  # counted in this process: one in flight
                            assert len(ok) == 1 and no[0].status_code == 429
                        elif mode == "open":
                            assert len(ok) == 2
                        else:
                            assert not ok and all(x.status_code == 503 and x.headers["retry-after"] == "1" for x in no)
                            assert "rate-limit store is unreachable" in no[0].json()["error"]["message"]
                        await hang_up(ok)
                        # a key without limits never touches the store
                        up.enqueue(Reply.recording(REC, chunking="events"))
                        free = await client.post(a.url + "/v1/chat/completions", json=BODY,
                                                 headers={"authorization": "Bearer sk-free"})
                        assert free.status_code == 200
                    a.settle()
                    assert a.gateway.shared.errors >= 1
                    metrics = httpx.get(a.url + "/metrics").text
                    (line,) = [x for x in metrics.splitlines() if x.startswith("llmrelay_gateway_limits_store_errors_total")]
                    assert float(line.split()[-1]) >= 1
                    assert a.gateway.limits.counts.get("limited") is None or \
                        a.gateway.limits.counts["limited"].in_flight == 0
    finally:
        hole.close()


def test_limits_config():
    base = "models:\n  gpt: {model: 'openai:gpt-4o'}\n"
    cfg = parse(base + "limits:\n  store: ${REDIS}\n  on_store_error: closed\n  timeout: 0.1\n  lease: 30\n",
                env={"REDIS": "redis://10.0.0.1:6379/2"})
    assert cfg.limits is not None and cfg.limits.store == "redis://10.0.0.1:6379/2"
    assert (cfg.limits.on_store_error, cfg.limits.timeout, cfg.limits.lease) == ("closed", 0.1, 30.0)
    assert parse(base).limits is None
    for text, message, line in [
        ("limits:\n  store: http://x\n", "redis://", 4),
        ("limits:\n  prefix: a\n", "needs store", 4),
        ("limits:\n  store: redis://x\n  on_store_error: maybe\n", "on_store_error must be one of", 5),
        ("limits:\n  store: redis://x\n  ttl: 3\n", "unknown field 'ttl'", 5),
        ("limits:\n  store: redis://x\n  timeout: 0\n", "timeout must be at least", 5),
        ("limits:\n  store: redis://x\n  lease: 0.5\n", "lease must be at least", 5),
    ]:
        with pytest.raises(ConfigError, match=message) as e:
            parse(base + text)
        assert e.value.line == line, (text, e.value.line)


def test_import_llmrelay_does_not_import_redis():
    code = "import sys, llmrelay, llmrelay.gateway.app; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_serve_check_says_when_the_limits_store_does_not_answer(store, tmp_path, capsys):
    """`serve --check` PINGs the store once: silent when it answers; when it does not, a warning naming the
    store (password hidden) and what on_store_error would make of it, and still exit 0 (the gateway serves)."""
    from llmrelay.cli.main import main

    r, prefix = store
    good = tmp_path / "good.yaml"
    good.write_text(config("http://127.0.0.1:9", prefix, "max_parallel: 1"))
    assert main(["serve", "--config", str(good), "--check"]) == 0
    assert "does not answer" not in capsys.readouterr().err
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text(config("http://127.0.0.1:9", prefix, "max_parallel: 1",
                          store_url=f"redis://:hunter2secret@127.0.0.1:{port}/0"))
    assert main(["serve", "--config", str(bad), "--check"]) == 0
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "does not answer" in err and "on_store_error: local" in err
    assert "hunter2secret" not in err
