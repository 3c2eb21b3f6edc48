"""`llmrelay serve --workers 2`, run for real (a process per worker): `/metrics` counts the whole server whichever
worker answers, and SIGHUP reloads the configuration in every worker without restarting them or cutting a stream.

To know which worker answers, the test stops the other one (SIGSTOP) for the length of one request: the kernel then
hands every new connection to the one still running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway_helpers import config_for, free_port

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from llmrelay.testing import ReplayServer, Reply, faults  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses SIGSTOP")

MSG = [{"role": "user", "content": "hi"}]
_SCRIPT = Path(sys.executable).parent / "llmrelay"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "llmrelay.cli"]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in cmd:  # not multiprocessing's resource tracker
                out.append(int(entry))
    return sorted(out)


class Served:
    def __init__(self, config: Path, workers: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*CLI, "serve", "--config", str(config), "--port", str(self.port),
                                      "--workers", str(workers)], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 90
        while len(self.workers()) < workers or any(self.metric(self.get_metrics(w), "llmrelay_gateway_workers") != workers
                                                   for w in self.workers()):
            assert self.proc.poll() is None, "serve exited:\n" + "".join(self.log)
            assert time.monotonic() < deadline, "the workers did not come up:\n" + "".join(self.log)
            time.sleep(0.2)

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.log.append(line)

    def workers(self) -> list[int]:
        return _children(self.proc.pid)

    @contextmanager
    def only(self, worker: int):
        """While inside, new connections go to `worker`: the others are stopped (briefly: the supervisor's
        health check would replace a worker stopped for more than 5 s)."""
        others = [w for w in self.workers() if w != worker]
        for w in others:
            os.kill(w, signal.SIGSTOP)
        try:
            yield
        finally:
            for w in others:
                os.kill(w, signal.SIGCONT)

    def get(self, path: str, worker: int | None = None, **kw) -> httpx.Response:
        if worker is None:
            return httpx.get(self.url + path, timeout=10, **kw)
        with self.only(worker):
            return httpx.get(self.url + path, timeout=10, **kw)

    def get_metrics(self, worker: int | None = None) -> str:
        try:
            return self.get("/metrics", worker).text
        except httpx.TransportError:
            return ""

    @staticmethod
    def metric(text: str, name: str, labels: str = "") -> float | None:
        m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def served(tmp_path):
    servers: list[Served] = []
    with ReplayServer(default=Reply.recording("openai_chat/text_usage_chunk.sse", chunking="events")) as up:
        def start(extra: str = "", workers: int = 2) -> Served:
            cfg = tmp_path / "gw.yaml"
            cfg.write_text(config_for(up.url, extra))
            s = Served(cfg, workers)
            s.config, s.up = cfg, up
            servers.append(s)
            return s

        yield start
        for s in servers:
            s.close()


def chat(url: str, **kw):
    return openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0).chat.completions.create(
        model="gpt", messages=MSG, **kw)


def test_metrics_count_the_whole_server_whichever_worker_answers(served, tmp_path):
    s = served(f"logging: {tmp_path / 'log.db'}")
    a, b = s.workers()
    sent = 0
    for worker, n in ((a, 3), (b, 2)):
        with s.only(worker):  # these requests are served by `worker` alone
            for _ in range(n):
                chat(s.url)
                sent += 1
    for _ in range(3):
        for _ in chat(s.url, stream=True, stream_options={"include_usage": True}):
            pass
        sent += 1
    ok = 'llmrelay_gateway_requests_total{endpoint="chat",model="gpt",status="ok"}'
    for worker in (a, b):  # each worker reports the other's requests too (written there within a second)
        deadline = time.monotonic() + 30
        while (s.metric(s.get_metrics(worker), ok) != sent or
               s.metric(s.get_metrics(worker), 'llmrelay_gateway_tokens_total{model="gpt",kind="output"}') != 30 * sent):
            assert time.monotonic() < deadline, s.get_metrics(worker)
            time.sleep(0.1)
        text = s.get_metrics(worker)
        assert s.metric(text, "llmrelay_gateway_workers") == 2
        assert s.metric(text, "llmrelay_gateway_in_flight_requests") == 0
        assert s.metric(text, 'llmrelay_gateway_overhead_ms_count{endpoint="chat"}') == sent
    assert s.metric(s.get_metrics(), ok) == sent  # and so does whichever the kernel picks

    # a worker that exits is replaced by the supervisor; its requests stay in the totals
    state = dict(e.split(b"=", 1) for e in Path(f"/proc/{a}/environ").read_bytes().split(b"\0") if b"=" in e)
    shared_dir = Path(state[b"LLMRELAY_GATEWAY_STATE"].decode())
    os.kill(a, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while not ((now := s.workers()) and len(now) == 2 and a not in now):
        assert time.monotonic() < deadline, "".join(s.log)
        time.sleep(0.1)
    assert b in now, (a, b, now, "".join(s.log))
    c = next(w for w in now if w != b)
    for worker in (b, c):
        deadline = time.monotonic() + 30
        while s.metric(s.get_metrics(worker), "llmrelay_gateway_workers") != 2:
            assert time.monotonic() < deadline, s.get_metrics(worker)
            time.sleep(0.1)
        assert s.metric(s.get_metrics(worker), ok) == sent
    assert len(list(shared_dir.iterdir())) <= 3  # the two workers' files and the retired one
    s.close()
    assert not shared_dir.exists()  # removed when the server exits


def test_sighup_reloads_every_worker_without_restarting_them_or_cutting_a_stream(served):
    s = served()
    before = s.workers()
    up = s.up
    up.enqueue(faults.drip("openai_chat/text_usage_chunk.sse", delay=0.25))  # ~8 s of stream
    stream = chat(s.url, stream=True)
    first = next(stream)  # the stream is in flight (for ~8 s; a reload takes well under one)
    text = [c.choices[0].delta.content or "" for c in [first] if c.choices]
    s.config.write_text(config_for(up.url, f"  extra:\n    model: openai:gpt-4o\n    base_url: {up.url}/v1\n"
                                           "    api_key: x\n"))
    s.proc.send_signal(signal.SIGHUP)
    for worker in before:  # every worker, not just one, serves the new configuration
        deadline = time.monotonic() + 30
        while "extra" not in [m["id"] for m in s.get("/v1/models", worker).json()["data"]]:
            assert time.monotonic() < deadline, "".join(s.log)
            time.sleep(0.1)
    text += [c.choices[0].delta.content or "" for c in stream if c.choices]
    expected = "".join(c.choices[0].delta.content or "" for c in chat(s.url, stream=True) if c.choices)
    assert "".join(text) == expected and expected  # the whole answer, not cut by the reload
    assert s.workers() == before  # reloaded in place: no worker was replaced

    s.config.write_text("models: [broken")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not any("reload refused" in line for line in s.log):
        assert time.monotonic() < deadline, "".join(s.log)
        time.sleep(0.1)
    for worker in before:
        assert "extra" in [m["id"] for m in s.get("/v1/models", worker).json()["data"]]
    assert s.workers() == before and s.proc.poll() is None


def test_a_worker_follows_the_reload_generation_and_nothing_else(tmp_path):
    from llmrelay.gateway.app import GatewayApp
    from llmrelay.gateway.config import parse
    from llmrelay.gateway.workers import Shared, fold

    cfg = tmp_path / "gw.yaml"
    cfg.write_text(config_for("http://127.0.0.1:9"))
    app = GatewayApp(str(cfg), load_now=True)
    state = tmp_path / "state"
    state.mkdir()
    shared = Shared(str(state), app)
    first = app.gateway
    shared.tick()
    assert app.gateway is first  # no reload asked for
    (state / "reload").write_text("1")  # the supervisor's bump, seen by a worker that missed the signal
    shared.tick()
    assert app.gateway is not first
    second = app.gateway
    app.metrics.request_done("chat", "gpt", "ok", 0.5)
    shared.flush(alive=False)
    fold(str(state), live=set())  # the worker has exited: its counts move to retired.json
    assert [p.name for p in state.iterdir() if p.name.startswith("worker-")] == []
    other = GatewayApp(parse(config_for("http://127.0.0.1:9")), load_now=True)
    text = other.metrics.render(Shared(str(state), other).others()).decode()
    assert 'llmrelay_gateway_requests_total{endpoint="chat",model="gpt",status="ok"} 1' in text
    assert "llmrelay_gateway_workers 1" in text  # an exited worker is not counted as one
    for p in state.iterdir():
        p.unlink()
    state.rmdir()  # the directory is gone (the supervisor was killed): keep serving, no reload every tick
    shared.tick()
    assert app.gateway is second
