"""The CLI as a daily tool, run for real in a pseudo-terminal (pexpect) against a replay server:
`llmrelay replay`, the default model, aliases, stored keys, the interactive session, `--cid`,
`-a` attachments, `--schema` and `models --provider`. Never touches the network.

Every test points the log store and the config directory at its own temporary directory."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pexpect
import pytest

from llmrelay.logs import open_store
from llmrelay.testing import ReplayServer, Reply, by_request
from test_cli import ANSI, CLI, FIRST_WORDS, FULL_TEXT, LAST_WORDS, TEXT_REC, clean_env, openai_args, paced, run

HAS_PRICES = importlib.util.find_spec("genai_prices") is not None


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLMRELAY_LOG_DIR", str(tmp_path / "logdir"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LLMRELAY_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("LLMRELAY_LOG", raising=False)
    return tmp_path / "logdir" / "logs.db"


@pytest.fixture
def log_db(isolated) -> Path:
    return isolated


def spawn(*args: str, env: dict[str, str] | None = None, program: list[str] | None = None) -> tuple[pexpect.spawn, io.StringIO]:
    cmd = program or CLI
    log = io.StringIO()
    child = pexpect.spawn(cmd[0], cmd[1:] + list(args), env=env or clean_env(), dimensions=(40, 200),
                          encoding="utf-8", codec_errors="replace", timeout=20)
    child.logfile_read = log
    return child, log


def finish(child: pexpect.spawn, log: io.StringIO, status: int = 0) -> str:
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    out = ANSI.sub("", log.getvalue())
    assert child.exitstatus == status, out
    assert "Traceback" not in out
    return out


def logged(path: Path) -> list[dict]:
    with open_store(str(path)) as store:
        return store.rows()


def png(width: int = 1, height: int = 1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# -- llmrelay replay ------------------------------------------------------------------------------


def test_replay_serves_the_readme_command_offline():
    server, slog = spawn("replay", "--port", "0", "--delay", "0")
    server.expect(r"listening on http://127\.0\.0\.1:(\d+)", timeout=15)
    port = server.match.group(1)
    # the command the README documents
    child, log = spawn("chat", "--base-url", f"http://127.0.0.1:{port}/v1", "-m", "openai-compatible:x", "hi")
    out = finish(child, log)
    assert FULL_TEXT.split(".")[0] in out and "tok/s" in out
    server.expect(re.escape("POST /v1/chat/completions (model x) -> openai_chat/text_usage_chunk.sse"))
    # a model that names a recording picks it; every protocol has its default
    child, log = spawn("chat", "hi", "-m", "openai-compatible:parallel_tool_calls", "--base-url",
                       f"http://127.0.0.1:{port}/v1")
    out = finish(child, log)
    assert 'tool call GetWeatherArgs({"city": "Edinburgh"' in out
    child, log = spawn("chat", "hi", "-m", "anthropic:claude-sonnet-4-5", "--base-url", f"http://127.0.0.1:{port}",
                       "--key", "x")
    assert "Captain" in finish(child, log)
    server.sendcontrol("c")
    server.expect(r"stopped after 3 requests")
    finish(server, slog)


def test_replay_recording_option_list_and_a_taken_port():
    with ReplayServer() as taken:
        r = run("replay", "--port", str(taken.port))
        assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{taken.port}" in r.stderr
    r = run("replay", "--list")
    assert r.returncode == 0 and "anthropic/text_basic.sse   (default)" in r.stdout
    assert "openai_chat/parallel_tool_calls.sse" in r.stdout
    assert run("replay", "--recording", "nope.sse").returncode == 2
    server, slog = spawn("replay", "--port", "0", "--delay", "0", "--recording", "anthropic/text_basic.sse")
    server.expect(r"listening on (http://127\.0\.0\.1:\d+)", timeout=15)
    url = server.match.group(1)
    child, log = spawn("chat", "hi", "-m", "anthropic:claude-3-haiku", "--base-url", url, "--key", "x")
    assert "Scoop" in finish(child, log)
    server.sendcontrol("c")
    finish(server, slog)


def test_by_request_picks_by_path_model_tools_and_schema():
    """The replay server's choice, through a real client: by protocol path, model name, tools, JSON."""
    import llmrelay
    from llmrelay.testing import client_for

    with ReplayServer(default=by_request()) as server:
        client = client_for(server, retry=0)

        @llmrelay.tool
        def multiply(a: int, b: int) -> int:
            """Multiply two numbers."""
            return a * b

        r = client.complete("openai:gpt-4o-mini", "What is 1231 * 2331?", tools=[multiply])
        assert "2,869,461" in r.text and len(r.turns) == 2  # tool call, then the answer after it
        r = client.complete("openai:gpt-4o", "weather?", output={"type": "object", "properties": {
            "location": {"type": "string"}}, "required": ["location"]})
        assert r.output["location"] == "San Francisco, CA"
        assert client.complete("gemini:gemini-2.5-flash", "hi").text.strip() == "The capital of France is Paris."
        assert client.complete("ollama:gemma3:1b", "hi").text.startswith("Okay, here we go!")
        assert client.complete("openai:text_after_tool_result", "hi").text.startswith("The result of")
        client.close()
        import httpx

        r = httpx.post(server.url + "/nowhere", json={})
        assert r.status_code == 404 and "no protocol uses POST /nowhere" in r.json()["error"]["message"]
