"""The `llmrelay` command, run for real: in a pseudo-terminal (pexpect) or a subprocess,
against a `ReplayServer` on 127.0.0.1. Never touches the network.

`chat` logs by default: every test here points `LLMRELAY_LOG_DIR` (and `XDG_DATA_HOME`)
at its own temporary directory, so nothing is ever written to the user's log file, and
`LLMRELAY_CONFIG_DIR` at another, so the user's default model, aliases and keys stay out."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from llmrelay.logs import open_store
from llmrelay.providers import PROVIDERS
from llmrelay.testing import Reply

from helpers import wait_for

_SCRIPT = Path(sys.executable).parent / "llmrelay"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "llmrelay.cli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")

TEXT_REC = "openai_chat/text_usage_chunk.sse"  # 34 events: "I'm unable to provide … or a weather app."
FIRST_WORDS, LAST_WORDS = "unable to provide", "weather app"
FULL_TEXT = ("I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
             "I recommend checking a reliable weather website or a weather app.")
#: gpt-4o, 14 in / 30 out tokens: priced by genai-prices when installed (the `prices` extra).
HAS_PRICES = importlib.util.find_spec("genai_prices") is not None
GPT4O_COST = "cost $0.000335" if HAS_PRICES else "cost n/a"


@pytest.fixture(autouse=True)
def log_db(tmp_path, monkeypatch) -> Path:
    """The default log file of every command a test runs: in the test's own directory."""
    monkeypatch.setenv("LLMRELAY_LOG_DIR", str(tmp_path / "logdir"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LLMRELAY_CONFIG_DIR", str(tmp_path / "config"))  # no default model, alias or stored key
    monkeypatch.delenv("LLMRELAY_LOG", raising=False)
    monkeypatch.delenv("LLMRELAY_LOG_FILES", raising=False)
    return tmp_path / "logdir" / "logs.db"


def logged(path: Path) -> list[dict]:
    assert path.exists(), f"no log database at {path}"
    with open_store(str(path)) as store:
        return store.rows()


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
    # incremental: the first words are on screen while the server is still sending (the timeouts
    # here are hang guards; the order of what happened is the assertion)
    child.expect(FIRST_WORDS, timeout=20)
    assert not server.requests[0].completed, "the first words must show before the server sent the last event"
    assert LAST_WORDS not in ANSI.sub("", log.getvalue())
    child.expect(LAST_WORDS, timeout=20)
    child.expect("tok/s", timeout=10)  # the stats line
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 0, log.getvalue()
    out = ANSI.sub("", log.getvalue())
    assert "TTFT" in out and "14 in / 30 out tokens" in out and GPT4O_COST in out
    assert "Traceback" not in out
    wait_for(lambda: server.requests[0].completed, "the server to finish its reply")  # marked after its last write


def test_ctrl_c_closes_the_stream_and_exits_130(server, log_db):
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
    # the partial answer was kept on screen and logged, as "aborted"
    [row] = logged(log_db)
    assert row["status"] == "aborted" and row["usage_estimated"]
    partial = row["text"]
    assert partial.startswith("I'm unable to provide") and FULL_TEXT.startswith(partial) and partial != FULL_TEXT
    assert partial.split()[-1].strip(".,") in out
    assert row["request_messages"] == [{"role": "user", "content": "What's the weather?"}]


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


def test_missing_model_is_a_usage_error():
    r = run("chat", "hi")
    assert r.returncode == 2
    assert "llmrelay: error: -m/--model is required" in r.stderr


def test_continue_with_nothing_logged_says_so(log_db):
    r = run("chat", "-c", "and then?")
    assert r.returncode == 1
    assert r.stderr.startswith("llmrelay: error: nothing to continue: no conversation is logged at ")
    assert str(log_db) in r.stderr and "Traceback" not in r.stderr
    assert not log_db.exists()  # -c only reads; it does not create a store


def test_continue_with_an_empty_log_says_so(tmp_path):
    from llmrelay.logs.sqlite import SQLiteStore

    empty = tmp_path / "empty.db"
    SQLiteStore(str(empty)).open().close()
    r = run("chat", "-c", "and then?", "--db", str(empty))
    assert r.returncode == 1
    assert "llmrelay: error: nothing to continue: " in r.stderr and "no conversation yet" in r.stderr


# -- logging and -c ------------------------------------------------------------------------------


def test_chat_logs_by_default_and_continue_sends_the_whole_conversation(server, log_db):
    server.enqueue(Reply.recording(TEXT_REC), Reply.recording(TEXT_REC))
    r = run("chat", "weather?", "-s", "Be brief.", *openai_args(server))
    assert r.returncode == 0, r.stderr
    [row] = logged(log_db)
    assert row["status"] == "ok" and row["text"] == FULL_TEXT
    assert (row["input_tokens"], row["output_tokens"]) == (14, 30)
    if HAS_PRICES:
        assert row["cost_usd"] == pytest.approx(0.000335)
    # -c: no -m needed (the logged model is reused), the first exchange + the new prompt
    r = run("chat", "-c", "And tomorrow?", "-v", "--base-url", server.url + "/v1", "--key", "test-key")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == FULL_TEXT
    second = server.requests[1].json
    assert second["model"] == "gpt-4o"
    assert second["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": FULL_TEXT},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert f"from call {row['correlation_id']}" in r.stderr
    conversation = row["conversation_id"]
    assert f"continuing conversation {conversation} " in r.stderr
    assert f"logged to {log_db}" in r.stderr
    rows = logged(log_db)
    assert len(rows) == 2 and rows[1]["request_messages"] == second["messages"]
    assert rows[1]["conversation_id"] == conversation  # -c goes on in the same conversation


def test_continue_after_ctrl_c_continues_the_partial_answer(server, log_db):
    """The aborted row is a conversation too: -c sends the partial answer back."""
    server.enqueue(paced(TEXT_REC, 0.3))
    child, log = spawn("chat", "What's the weather?", *openai_args(server))
    child.expect(FIRST_WORDS, timeout=5)
    child.send("\x03")
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 130, ANSI.sub("", log.getvalue())
    [row] = logged(log_db)
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "-c", "go on", *openai_args(server))
    assert r.returncode == 0, r.stderr
    assert server.requests[-1].json["messages"] == [
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": row["text"]},
        {"role": "user", "content": "go on"},
    ]


def test_no_log_and_log_path(server, log_db, tmp_path):
    server.enqueue(*(Reply.recording(TEXT_REC) for _ in range(4)))
    assert run("chat", "one", "--no-log", *openai_args(server)).returncode == 0
    assert run("chat", "two", *openai_args(server), env=clean_env(LLMRELAY_LOG="0")).returncode == 0
    assert not log_db.exists()
    mine = tmp_path / "mine.db"
    r = run("chat", "three", *openai_args(server), f"--log={mine}", env=clean_env(LLMRELAY_LOG="0"))
    assert r.returncode == 0, r.stderr
    assert [row["request_messages"][-1]["content"] for row in logged(mine)] == ["three"]
    assert not log_db.exists()
    listed = run("logs", "list", "--db", str(mine))
    assert listed.returncode == 0 and "openai:gpt-4o" in listed.stdout
    from_env = tmp_path / "env.db"  # LLMRELAY_LOG=PATH
    assert run("chat", "four", *openai_args(server), env=clean_env(LLMRELAY_LOG=str(from_env))).returncode == 0
    assert len(logged(from_env)) == 1 and not log_db.exists()


def test_a_log_store_that_cannot_be_written_does_not_fail_the_chat(server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "hi", *openai_args(server), env=clean_env(LLMRELAY_LOG_DIR=str(blocker)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == FULL_TEXT
    assert "llmrelay: warning: this call was not logged: " in r.stderr
    assert "Traceback" not in r.stderr and "LogStoreWarning" not in r.stderr


def test_errors_are_logged_with_the_partial_answer(server, log_db):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    r = run("chat", "call the tool", "-m", "groq:openai/gpt-oss-120b", "--base-url", server.url + "/v1", "--key", "k")
    assert r.returncode == 1
    [row] = logged(log_db)
    assert row["status"] == "error" and row["error_type"] == "ProviderStreamError"
    assert "We need to call the tool" in row["reasoning"]


def test_verbose_says_why_there_is_no_cost_or_where_the_price_came_from(server):
    server.enqueue(Reply.recording("ollama/chat_text_done_stop.ndjson"), Reply.recording(TEXT_REC))
    r = run("chat", "hi", "-v", "-m", "ollama:gemma3:1b", "--base-url", server.url)
    assert r.returncode == 0, r.stderr
    assert "cost n/a (ollama serves local models" in r.stderr
    r = run("chat", "hi", "-v", *openai_args(server))
    assert r.returncode == 0, r.stderr
    assert ("cost $0.000335 (genai-prices openai:gpt-4o)" if HAS_PRICES else "cost n/a (") in r.stderr


# -- plain output, options, stdin ------------------------------------------------------------------


def test_json_prints_one_typed_event_per_line(server, log_db):
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
    done = lines[-1]
    assert done["status"] == "ok"
    if HAS_PRICES:
        assert done["cost"]["usd"] == pytest.approx(0.000335) and done["cost"]["source"] == "prices"
    else:
        assert done["cost"]["usd"] is None and done["cost"]["reason"]
    assert [row["correlation_id"] for row in logged(log_db)] == [done["correlation_id"]]


def test_plain_output_options_and_system_prompt(server):
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "weather?", "-s", "Be brief.", "-o", "temperature", "0.2", "-o", "max_tokens", "50",
            *openai_args(server))
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout  # not a TTY: plain text
    assert r.stdout.strip().endswith("weather app.")
    assert GPT4O_COST in r.stderr and "TTFT" in r.stderr
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
    from llmrelay.cli.common import parse_options

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
    # the last section reads the demo's own temporary log store back
    logs = out[out.index("7. Every call logged"):]
    calls = int(re.search(r"demo OK: (\d+) calls", out).group(1))
    m = re.search(r"(\d+) rows for (\d+) calls .* rows per status: error (\d+), ok (\d+)", logs)
    assert m, logs
    assert int(m.group(2)) == calls and int(m.group(1)) == int(m.group(3)) + int(m.group(4)) > calls
    assert "TTFT p50" in logs and re.search(r"cost \$\d", logs) and "store.totals('model')" in logs
    assert "FAILED" not in out


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
    assert "weather app." in out and GPT4O_COST in out
