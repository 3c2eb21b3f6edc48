"""Run the gateway on a real socket (uvicorn in a background thread) in front of a ReplayServer."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from db_helpers import sqlite_log_rows
from llmrelay.gateway.app import GatewayApp
from llmrelay.gateway.config import parse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayThread:
    def __init__(self, yaml_text: str | None = None, env: dict[str, str] | None = None, path: str | None = None,
                 **app_options: Any):
        import uvicorn

        if path is not None:
            self.app = GatewayApp(path, **app_options)
        else:
            self.config = parse(yaml_text or "", env=env or {})
            self.app = GatewayApp(self.config, **app_options)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                             http="httptools", loop="asyncio", access_log=False)
        self.server = uvicorn.Server(cfg)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> GatewayThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def gateway(self) -> Any:
        return self.app.gateway

    def settle(self, timeout: float = 20) -> None:
        """Wait until no request is being served (each one queued its log row as its call ended), then until the
        log writer wrote every queued row. A deadline, not a sleep: returns as soon as the condition holds."""
        deadline = time.monotonic() + timeout
        while self.app.metrics.in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.app.metrics.in_flight} request(s) still in flight")
            time.sleep(0.01)
        hook = self.gateway.log_hook
        if hook is not None and not hook.flush(max(0.1, deadline - time.monotonic())):
            raise TimeoutError("the log writer did not catch up")


def gpt_route(upstream_url: str) -> str:
    """The `gpt` alias (OpenAI Chat at the replay server, no retries), as lines under `models:`."""
    return f"""  gpt:
    model: openai:gpt-4o
    base_url: {upstream_url}/v1
    api_key: sk-up
    retries: 0
"""


def config_for(upstream_url: str, extra: str = "", keys: str = "") -> str:
    """Aliases for each protocol, all pointing at the replay server."""
    return f"""
models:
{gpt_route(upstream_url)}  claude:
    model: anthropic:claude-sonnet-4-5
    base_url: {upstream_url}
    api_key: sk-ant-up
    retries: 0
  resp:
    model: openai-responses:gpt-4o
    base_url: {upstream_url}/v1
    api_key: sk-up
    retries: 0
  gem:
    model: gemini:gemini-2.5-flash
    base_url: {upstream_url}/v1beta
    api_key: g-up
    retries: 0
{extra}
{keys}
"""


def rows(gw: GatewayThread, db: Any) -> list[dict[str, Any]]:
    """The gateway's SQLite log rows, once every call served so far has ended and its row is written."""
    gw.settle()
    return sqlite_log_rows(db)
