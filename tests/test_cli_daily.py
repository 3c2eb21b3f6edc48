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


# -- default model, aliases, stored keys ------------------------------------------------------------


def test_default_model_and_aliases(server, isolated):
    server.default = by_request()
    url = server.url + "/v1"
    r = run("chat", "hi", "--base-url", url, "--key", "k")
    assert r.returncode == 2 and "llmrelay models default" in r.stderr
    child, log = spawn("models", "default")
    assert "no default model" in finish(child, log, status=1)
    child, log = spawn("models", "default", "nope:model")
    assert "Unknown provider 'nope'" in finish(child, log, status=2)
    child, log = spawn("models", "default", "openai:gpt-4o")
    assert "default model: openai:gpt-4o" in finish(child, log)
    child, log = spawn("chat", "hi", "--base-url", url, "--key", "k")  # no -m: the default
    assert FIRST_WORDS in finish(child, log)
    assert server.requests[-1].json["model"] == "gpt-4o"
    # aliases: set, list, use, remove
    child, log = spawn("aliases", "set", "mini", "openai:gpt-4o-mini")
    assert "mini -> openai:gpt-4o-mini" in finish(child, log)
    child, log = spawn("aliases", "set", "pair", "openai:gpt-4o", "anthropic:claude-sonnet-4-5")
    finish(child, log)
    child, log = spawn("aliases", "set", "a:b", "openai:gpt-4o")
    assert "cannot contain" in finish(child, log, status=2)
    child, log = spawn("aliases", "list")
    out = finish(child, log)
    assert re.search(r"mini\s+openai:gpt-4o-mini", out)
    assert re.search(r"pair\s+openai:gpt-4o -> anthropic:claude-sonnet-4-5\s+\(cascade\)", out)
    child, log = spawn("chat", "hi", "-m", "mini", "--base-url", url, "--key", "k")
    finish(child, log)
    assert server.requests[-1].json["model"] == "gpt-4o-mini"
    child, log = spawn("models", "default", "mini")  # an alias can be the default
    finish(child, log)
    r = run("chat", "hi", "--base-url", url, "--key", "k")
    assert r.returncode == 0 and server.requests[-1].json["model"] == "gpt-4o-mini"
    child, log = spawn("aliases", "remove", "mini")
    finish(child, log)
    child, log = spawn("aliases", "remove", "mini")
    assert "no alias 'mini'" in finish(child, log, status=1)
    child, log = spawn("aliases", "path")
    path = Path(finish(child, log).strip())
    assert path == isolated.parent.parent / "config" / "config.json"
    assert json.loads(path.read_text()) == {
        "default_model": "mini", "aliases": {"pair": ["openai:gpt-4o", "anthropic:claude-sonnet-4-5"]}}


def test_keys_are_stored_for_the_owner_only_and_env_vars_win(server, isolated):
    server.default = by_request()
    child, log = spawn("keys", "set", "openai")
    child.expect("openai API key: ")
    child.sendline("sk-stored-0123456789")
    out = finish(child, log)
    assert "sk-stored-0123456789" not in out  # not echoed
    path = isolated.parent.parent / "config" / "keys.json"
    assert json.loads(path.read_text()) == {"openai": "sk-stored-0123456789"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    child, log = spawn("keys", "list")
    out = finish(child, log)
    assert "openai  sk-...6789" in out and "0123456" not in out
    child, log = spawn("keys", "path")
    assert finish(child, log).strip() == str(path)
    chat = ["chat", "hi", "-m", "openai:gpt-4o", "--base-url", server.url + "/v1"]
    child, log = spawn(*chat)  # no env var, no --key: the stored key
    finish(child, log)
    assert server.requests[-1].headers["authorization"] == "Bearer sk-stored-0123456789"
    child, log = spawn(*chat, env=clean_env(OPENAI_API_KEY="sk-from-env"))  # the env var wins
    finish(child, log)
    assert server.requests[-1].headers["authorization"] == "Bearer sk-from-env"
    child, log = spawn(*chat, "--key", "sk-flag", env=clean_env(OPENAI_API_KEY="sk-from-env"))  # --key wins
    finish(child, log)
    assert server.requests[-1].headers["authorization"] == "Bearer sk-flag"
    r = run("keys", "set", "groq", input="gsk-from-stdin\n")  # not a terminal: read from stdin
    assert r.returncode == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["groq"] == "gsk-from-stdin"
    assert run("keys", "set", "nope", "--value", "x").returncode == 2
    child, log = spawn("keys", "remove", "openai")
    finish(child, log)
    r = run(*chat)
    assert r.returncode == 2 and "OPENAI_API_KEY" in r.stderr and "llmrelay keys set" in r.stderr


# -- the interactive session ---------------------------------------------------------------------------


def test_interactive_session_multi_line_ctrl_c_and_exit(server, log_db):
    server.enqueue(Reply.recording(TEXT_REC), Reply.recording(TEXT_REC), paced(TEXT_REC, 0.3))
    child, log = spawn("chat", *openai_args(server))
    child.expect(r"Chatting with openai:gpt-4o · conversation ([0-9a-f]{32})")
    cid = child.match.group(1)
    child.expect("> ")
    child.sendline("weather?")
    child.expect(LAST_WORDS)
    child.expect("tok/s")
    child.expect("> ")
    child.sendline("!multi")
    child.expect(re.escape("... "))
    child.sendline("line one")
    child.sendline("line two")
    child.sendline("!end")
    child.expect("tok/s")
    child.expect("> ")
    child.sendline("and a slow one")
    child.expect(FIRST_WORDS)
    child.sendcontrol("c")  # stops this answer, not the session
    child.expect(r"\(interrupted\)")
    child.expect("> ")
    child.sendcontrol("c")  # at the prompt: a fresh prompt
    child.expect("> ")
    child.sendline("exit")
    out = finish(child, log)
    assert f"llmrelay chat --cid {cid}" in out
    bodies = [r.json["messages"] for r in server.requests]
    assert bodies[0] == [{"role": "user", "content": "weather?"}]
    assert bodies[1] == [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": FULL_TEXT},
                         {"role": "user", "content": "line one\nline two"}]
    assert bodies[2][:4] == bodies[1] + [{"role": "assistant", "content": FULL_TEXT}]
    assert bodies[2][-1] == {"role": "user", "content": "and a slow one"}
    rows = logged(log_db)
    assert [row["status"] for row in rows] == ["ok", "ok", "aborted"]
    assert {row["conversation_id"] for row in rows} == {cid}
    partial = rows[2]["text"]
    assert partial and FULL_TEXT.startswith(partial) and partial != FULL_TEXT
    # --cid (a prefix) continues that conversation, partial answer included, same id
    server.enqueue(Reply.recording(TEXT_REC))
    r = run("chat", "--cid", cid[:8], "go on", "--base-url", server.url + "/v1", "--key", "k")
    assert r.returncode == 0, r.stderr
    assert server.requests[-1].json["messages"] == bodies[2] + [
        {"role": "assistant", "content": partial}, {"role": "user", "content": "go on"}]
    assert server.requests[-1].json["model"] == "gpt-4o"  # the conversation's model
    last = logged(log_db)[-1]
    assert last["conversation_id"] == cid
    assert run("logs", "list", "--conversation", cid, "--json").stdout.count("\n") == 4  # 13's filter sees all four


def test_interactive_cid_session_leaves_on_ctrl_d(server, log_db):
    server.enqueue(Reply.recording(TEXT_REC), Reply.recording(TEXT_REC))
    r = run("chat", "first", *openai_args(server))
    assert r.returncode == 0, r.stderr
    [row] = logged(log_db)
    cid = row["conversation_id"]
    child, log = spawn("chat", "--cid", cid, "--base-url", server.url + "/v1", "--key", "k")
    child.expect(f"conversation {cid} \\(continuing: 2 messages\\)")
    child.expect("> ")
    child.sendline("second")
    child.expect("tok/s")
    child.expect("> ")
    child.sendeof()
    finish(child, log)
    assert server.requests[-1].json["messages"] == [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": FULL_TEXT},
        {"role": "user", "content": "second"}]
    rows = logged(log_db)
    assert len(rows) == 2 and rows[1]["conversation_id"] == cid


def test_cid_that_is_not_logged_says_so(server, log_db):
    server.enqueue(Reply.recording(TEXT_REC))
    assert run("chat", "first", *openai_args(server)).returncode == 0
    r = run("chat", "--cid", "feedface", "more", *openai_args(server))
    assert r.returncode == 1
    assert r.stderr.startswith("llmrelay: error: nothing to continue: no conversation 'feedface'")
    r = run("chat", "-c", "--cid", "x", "more", *openai_args(server))
    assert r.returncode == 2


# -- attachments and structured output ----------------------------------------------------------------


def test_attach_a_file_and_a_url(server, tmp_path):
    image = tmp_path / "dot.png"
    image.write_bytes(png())
    server.enqueue(Reply.recording(TEXT_REC))
    child, log = spawn("chat", "What is in this picture?", "-a", str(image), *openai_args(server))
    finish(child, log)
    content = server.requests[-1].json["messages"][-1]["content"]
    assert content == [{"type": "text", "text": "What is in this picture?"},
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png()).decode()}}]
    # a URL goes as a URL to a protocol that fetches it (Anthropic)...
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    child, log = spawn("chat", "Describe", "-a", "https://example.com/cat.png", "-m", "anthropic:claude-sonnet-4-5",
                       "--base-url", server.url, "--key", "k")
    finish(child, log)
    content = server.requests[-1].json["messages"][-1]["content"]
    assert {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}} in content
    # ...and is downloaded first for one that takes inline data only (Ollama)
    server.enqueue(Reply(png(2, 2), headers={"content-type": "image/png"}, chunking="whole"),
                   Reply.recording("ollama/chat_text_done_stop.ndjson"))
    child, log = spawn("chat", "Describe", "-a", server.url + "/cat.png", "-m", "ollama:gemma3:1b",
                       "--base-url", server.url)
    finish(child, log)
    assert server.requests[-2].path == "/cat.png"
    assert server.requests[-1].json["messages"][-1]["images"] == [base64.b64encode(png(2, 2)).decode()]


def test_attachment_errors_are_usage_errors(server, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    r = run("chat", "hi", "-a", str(text), *openai_args(server))
    assert r.returncode == 2 and "is not an image" in r.stderr
    r = run("chat", "hi", "-a", str(tmp_path / "missing.png"), *openai_args(server))
    assert r.returncode == 2 and "cannot read attachment" in r.stderr
    image = tmp_path / "dot.png"
    image.write_bytes(png())
    r = run("chat", "hi", "-a", str(image), "-m", "cohere-v1:command-r", "--base-url", server.url, "--key", "k")
    assert r.returncode == 2 and "images" in r.stderr and "Traceback" not in r.stderr
    assert not server.requests


def test_schema_concise_syntax_streams_then_prints_validated_json(server):
    server.default = by_request()  # a response_format request gets the recorded JSON object
    child, log = spawn("chat", "Weather in SF?", "--schema", "location: the city", *openai_args(server))
    out = finish(child, log)
    assert '"location": "San Francisco, CA"' in out and "tok/s" in out
    sent = server.requests[-1].json["response_format"]["json_schema"]["schema"]
    assert sent == {"type": "object", "properties": {"location": {"type": "string", "description": "the city"}},
                    "required": ["location"]}
    # not a terminal: only the validated JSON on stdout, ready for jq
    r = run("chat", "Weather in SF?", "--schema", '{"type": "object", "properties": {"location": {"type": "string"}}}',
            *openai_args(server))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["location"] == "San Francisco, CA"
    r = run("chat", "x", "--schema", "age integer, name list", *openai_args(server))
    assert r.returncode == 2 and "unknown type 'list'" in r.stderr


def test_schema_that_does_not_validate_exits_1(server):
    server.default = by_request()
    r = run("chat", "Weather?", "--schema", "temperature int", *openai_args(server))  # the answer has no temperature
    assert r.returncode == 1
    assert "OutputValidationError" in r.stderr and "Traceback" not in r.stderr


def test_concise_schema():
    from llmrelay.cli.inputs import concise_schema, parse_schema

    assert concise_schema("name, age int, bio: one sentence, ok bool") == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                       "bio": {"type": "string", "description": "one sentence"}, "ok": {"type": "boolean"}},
        "required": ["name", "age", "bio", "ok"],
    }
    assert concise_schema("price float: in USD, with cents\ncity") == {  # newlines: commas stay in descriptions
        "type": "object", "properties": {"price": {"type": "number", "description": "in USD, with cents"},
                                         "city": {"type": "string"}}, "required": ["price", "city"]}
    assert parse_schema('{"type": "string"}') == {"type": "string"}


# -- models --provider -----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_PRICES, reason="the prices extra (genai-prices) is not installed")
def test_models_for_a_provider_from_the_price_database():
    child, log = spawn("models", "--provider", "openai")
    out = finish(child, log)
    assert re.search(r"openai:gpt-4o\s*│[^│\n]*│\s*2\.5\s*│\s*10\s*│", out), out
    assert "openai:gpt-4o-mini" in out and "known to genai-prices" in out
    r = run("models", "--provider", "anthropic", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert any(row["id"].startswith("claude-") and row["output_mtok"] for row in rows)
    assert {row["provider"] for row in rows} == {"anthropic"}


def test_models_for_a_provider_without_a_list():
    child, log = spawn("models", "--provider", "ollama")
    assert "serves local models" in finish(child, log, status=1)
    child, log = spawn("models", "--provider", "nope")
    assert "unknown provider 'nope'" in finish(child, log, status=2)
    # without the prices extra: a clear message, not a traceback
    code = "import sys; sys.modules['genai_prices'] = None; from llmrelay.cli import main; " \
           "sys.exit(main(['models', '--provider', 'openai']))"
    child, log = spawn("-c", code, program=[sys.executable])
    out = finish(child, log, status=1)
    assert "pip install 'llmrelay[prices]'" in out and "openai:MODEL" in out


def test_interactive_attachments_go_with_the_first_turn(server, tmp_path):
    image = tmp_path / "dot.png"
    image.write_bytes(png())
    server.enqueue(Reply.recording(TEXT_REC), Reply.recording(TEXT_REC))
    child, log = spawn("chat", "-a", str(image), *openai_args(server))
    child.expect("> ")
    child.sendline("What is this?")
    child.expect("tok/s")
    child.expect("> ")
    child.sendline("And now?")
    child.expect("tok/s")
    child.expect("> ")
    child.sendline("quit")
    finish(child, log)
    first, second = (r.json["messages"] for r in server.requests)
    assert first[0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert second[0] == first[0] and second[-1] == {"role": "user", "content": "And now?"}


# -- functions as tools --------------------------------------------------------------------------------


def test_functions_from_a_file_and_inline_run_as_tools(server, tmp_path):
    server.default = by_request()  # offers `multiply`: the recorded multiply call, then the answer after it
    tools = tmp_path / "tools.py"
    tools.write_text('import math\n\ndef multiply(a: int, b: int) -> int:\n    """Multiply two numbers."""\n'
                     '    return a * b\n\ndef _private():\n    pass\n')
    child, log = spawn("chat", "What is 1231 * 2331?", "--functions", str(tools), *openai_args(server))
    out = finish(child, log)
    assert "tool call multiply" in out and "multiply returned 2869461" in out and "2,869,461" in out
    offered = [t["function"]["name"] for t in server.requests[0].json["tools"]]
    assert offered == ["multiply"]  # not the imported module, not _private
    assert server.requests[1].json["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_1EYWDzueHEp8OsB8jJSEp7WB", "content": "2869461"}
    r = run("chat", "What is 1231 * 2331?", "--functions", "def multiply(a: int, b: int) -> int:\n    return a * b",
            *openai_args(server))
    assert r.returncode == 0, r.stderr
    assert "<- multiply returned 2869461" in r.stdout
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('nope')\n")
    r = run("chat", "hi", "--functions", str(broken), *openai_args(server))
    assert r.returncode == 2 and "RuntimeError: nope" in r.stderr and "Traceback" not in r.stderr
    r = run("chat", "hi", "--functions", "x = 1", *openai_args(server))
    assert r.returncode == 2 and "defines no function" in r.stderr


def test_a_broken_config_file_is_named_not_a_traceback(server, isolated):
    config = isolated.parent.parent / "config"
    config.mkdir()
    (config / "config.json").write_text("{not json")
    r = run("chat", "hi", *openai_args(server))
    assert r.returncode == 2 and "config.json is not valid JSON" in r.stderr and "Traceback" not in r.stderr
    child, log = spawn("aliases", "list")
    assert "config.json is not valid JSON" in finish(child, log, status=1)
    assert not server.requests
