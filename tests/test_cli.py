"""The `llmrelay` command, run for real: in a pseudo-terminal (pexpect) or a subprocess,
against a `ReplayServer` on 127.0.0.1. Never touches the network."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from llmrelay.providers import PROVIDERS
from llmrelay.testing import Reply

_SCRIPT = Path(sys.executable).parent / "llmrelay"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "llmrelay.cli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")

TEXT_REC = "openai_chat/text_usage_chunk.sse"  # 34 events: "I'm unable to provide … or a weather app."
FIRST_WORDS, LAST_WORDS = "unable to provide", "weather app"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any provider key or base URL (so nothing can leak to a real API)."""
    drop = ("_API_KEY", "_BASE_URL", "_API_BASE", "_TOKEN", "_HOST", "_API_URL")
    env = {k: v for k, v in os.environ.items() if not k.endswith(drop) and k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + list(args), input=input, capture_output=True, text=True, timeout=timeout,
        env=env or clean_env(), stdin=None if input is not None else subprocess.DEVNULL,
    )


def spawn(*args: str) -> tuple[pexpect.spawn, io.StringIO]:
    log = io.StringIO()
    child = pexpect.spawn(
        CLI[0], CLI[1:] + list(args), env=clean_env(), dimensions=(40, 200),
        encoding="utf-8", codec_errors="replace", timeout=20,
    )
    child.logfile_read = log
    return child, log


def openai_args(server) -> list[str]:
    return ["-m", "openai:gpt-4o", "--base-url", server.url + "/v1", "--key", "test-key"]


def paced(name: str, delay: float) -> Reply:
    return Reply.recording(name, chunking="events", delay=delay)


# -- in a real terminal ------------------------------------------------------------------------


def test_chat_streams_incrementally_in_a_tty(server):
    server.enqueue(paced(TEXT_REC, 0.25))  # 34 events: the last one leaves the server after ~8.5 s
    child, log = spawn("chat", "What's the weather in San Francisco?", *openai_args(server))
    child.expect(FIRST_WORDS, timeout=6)
    seen_early = time.monotonic()
    assert not server.requests[0].completed, "the first words must show before the server sent the last event"
    child.expect(LAST_WORDS, timeout=20)
    assert time.monotonic() - seen_early > 1.0
    child.expect("tok/s", timeout=10)  # the stats line
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 0, log.getvalue()
    out = ANSI.sub("", log.getvalue())
    assert "TTFT" in out and "14 in / 30 out tokens" in out and "cost n/a" in out
    assert "Traceback" not in out
    assert server.requests[0].completed


def test_ctrl_c_closes_the_stream_and_exits_130(server):
    server.enqueue(paced(TEXT_REC, 0.3))  # ~10 s in all: plenty of time to interrupt
    child, log = spawn("chat", "What's the weather?", *openai_args(server))
    child.expect(FIRST_WORDS, timeout=5)
    child.send("\x03")
    child.expect(r"\(interrupted\)", timeout=10)
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    raw = log.getvalue()
    out = ANSI.sub("", raw)
    assert child.exitstatus == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    # the partial answer's stats: estimated output tokens, since usage never arrived
    stats = [line for line in out.splitlines() if "(interrupted)" in line][-1]
    assert "TTFT" in stats and re.search(r"~\d+ out tokens", stats), stats
    # the server saw the connection closed before the end of its reply
    request = server.wait_disconnect(timeout=5)
    assert request is not None and not request.completed
    # the terminal is left clean: a hidden cursor is shown again, no "^C" echoed into the live area
    if "\x1b[?25l" in raw:
        assert raw.rindex("\x1b[?25h") > raw.rindex("\x1b[?25l")
    assert "^C" not in raw


def test_ctrl_c_restores_terminal_settings(server):
    """Echo is turned off while the live view redraws; it must be back on after Ctrl-C."""
    server.enqueue(paced(TEXT_REC, 0.3))
    cmd = " ".join(shlex.quote(a) for a in CLI + ["chat", "weather?", *openai_args(server)])
    child = pexpect.spawn("bash", ["--norc", "--noprofile", "-c", f"stty echo echoctl; {cmd}; echo RC=$?; stty -a"],
                          env=clean_env(), dimensions=(40, 200), encoding="utf-8", codec_errors="replace", timeout=20)
    log = io.StringIO()
    child.logfile_read = log
    child.expect(FIRST_WORDS, timeout=5)
    child.send("\x03")
    child.expect(r"RC=(\d+)", timeout=10)
    assert child.match.group(1) == "130", ANSI.sub("", log.getvalue())
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    settings = child.before.split()
    assert "echo" in settings and "-echo" not in settings
    assert "echoctl" in settings and "-echoctl" not in settings


def test_reasoning_flag_shows_reasoning_in_a_tty(server):
    server.enqueue(Reply.recording("deepseek/reasoning_content_stream.sse", chunking="events"))
    child, log = spawn("chat", "Hello", "--reasoning", "-m", "deepseek:deepseek-reasoner",
                       "--base-url", server.url, "--key", "k")
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    out = ANSI.sub("", log.getvalue())
    assert child.exitstatus == 0, out
    assert 'the user just said "Hello"' in out
    assert "How can I help you today?" in out


# -- errors --------------------------------------------------------------------------------------


def test_missing_key_names_the_env_var():
    r = run("chat", "hi", "-m", "groq:llama-3.1-8b-instant")
    assert r.returncode != 0
    assert "GROQ_API_KEY" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_unknown_provider_lists_providers():
    r = run("chat", "hi", "-m", "nope:some-model")
    assert r.returncode != 0
    assert "Known providers" in r.stderr
    for name in ("anthropic", "groq", "openai", "ollama"):
        assert name in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_http_error_prints_type_and_message(server):
    # every request gets the 429, so the default retries end on it too
    server.default = Reply.json({"error": {"message": "Rate limit reached for gpt-4o"}}, status=429)
    r = run("chat", "hi", *openai_args(server))
    assert r.returncode == 1
    assert "RateLimitError" in r.stderr and "Rate limit reached" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_in_band_error_keeps_partial_output(server):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    r = run("chat", "call the tool", "--reasoning", "-m", "groq:openai/gpt-oss-120b",
            "--base-url", server.url + "/v1", "--key", "k")
    assert r.returncode == 1
    assert "ProviderStreamError" in r.stderr and "tool_use_failed" in r.stderr
    assert "(error: partial answer)" in r.stderr
    assert "We need to call the tool" in r.stdout  # the partial reasoning was streamed
    assert "Traceback" not in r.stderr


def test_continue_is_not_available_yet():
    r = run("chat", "hi", "-c", "-m", "openai:gpt-4o")
    assert r.returncode == 2
    assert "not available yet" in r.stderr


# -- plain output, options, stdin ------------------------------------------------------------------


def test_json_prints_one_typed_event_per_line(server):
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "weather?", "--json", *openai_args(server))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines and all(isinstance(obj, dict) and "type" in obj for obj in lines)
    types = [obj["type"] for obj in lines]
    assert types[0] == "start" and "text" in types and "finish" in types and types[-1] == "done"
    text = "".join(obj["text"] for obj in lines if obj["type"] == "text")
    assert text.startswith("I'm unable to provide") and text.endswith("weather app.")
    usage = next(obj for obj in lines if obj["type"] == "usage")["usage"]
    assert usage["input_tokens"] == 14 and usage["output_tokens"] == 30
    assert lines[-1]["status"] == "ok"


def test_plain_output_options_and_system_prompt(server):
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "weather?", "-s", "Be brief.", "-o", "temperature", "0.2", "-o", "max_tokens", "50",
            *openai_args(server))
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout  # not a TTY: plain text
    assert r.stdout.strip().endswith("weather app.")
    assert "cost n/a" in r.stderr and "TTFT" in r.stderr
    body = server.requests[0].json
    assert body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][-1]["content"] == "weather?"


def test_prompt_from_stdin_and_no_stream(server):
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "-", "--no-stream", *openai_args(server), input="Prompt from stdin\n")
    assert r.returncode == 0, r.stderr
    assert "weather app." in r.stdout
    assert server.requests[0].json["messages"][-1]["content"] == "Prompt from stdin\n"


def test_models_lists_providers_and_env_vars():
    r = run("models")
    assert r.returncode == 0
    assert "groq" in r.stdout and "GROQ_API_KEY" in r.stdout
    assert "OLLAMA_HOST" in r.stdout and "anthropic" in r.stdout


def test_models_json():
    r = run("models", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {row["name"] for row in rows} == set(PROVIDERS)


def test_import_llmrelay_does_not_import_the_cli_or_rich():
    code = "import sys, llmrelay; print('llmrelay.cli' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_parse_options():
    from llmrelay.cli import parse_options

    assert parse_options([["temperature", "0.2"], ["stop", '["a"]'], ["max-tokens", "5"], ["x", "plain text"]]) == {
        "temperature": 0.2, "stop": ["a"], "max_tokens": 5, "x": "plain text",
    }


# -- the offline demo ---------------------------------------------------------------------------------


def test_demo_fast_runs_offline_without_a_tty():
    r = run("demo", "--fast", timeout=120)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "Traceback" not in out + r.stderr
    assert "\x1b[" not in out  # plain text for CI logs
    assert re.search(r"demo OK: \d+ calls", out)
    sections = {
        "openai": "openai_chat", "anthropic": "anthropic", "gemini": "gemini", "ollama": "ollama",
        "deepseek": "openai_chat", "groq": "openai_chat", "mistral": "openai_chat",
    }
    for provider, protocol in sections.items():
        if importlib.util.find_spec(f"llmrelay.protocols.{protocol}") is not None:
            assert f"== {provider} · " in out, provider
        else:
            assert f"{provider}: skipped" in out, provider
    assert "ToolCallEnd" in out and '"city": "Edinburgh"' in out
    assert "ProviderStreamError" in out and "tool_use_failed" in out
    assert "StreamInterruptedError" in out


def test_without_rich_a_terminal_gets_plain_incremental_text(server):
    """rich is an optional extra: without it the CLI still streams, as plain text."""
    server.enqueue(paced(TEXT_REC, 0.1))
    code = (
        "import sys; sys.modules['rich'] = None; from llmrelay.cli import main; "
        f"sys.exit(main({['chat', 'weather?', *openai_args(server)]!r}))"
    )
    child = pexpect.spawn(sys.executable, ["-c", code], env=clean_env(), dimensions=(40, 200),
                          encoding="utf-8", codec_errors="replace", timeout=20)
    log = io.StringIO()
    child.logfile_read = log
    child.expect(FIRST_WORDS, timeout=4)
    assert not server.requests[0].completed
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    out = log.getvalue()
    assert child.exitstatus == 0, out
    assert "\x1b[" not in out and "Traceback" not in out
    assert "weather app." in out and "cost n/a" in out
