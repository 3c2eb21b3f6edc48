"""`llmrelay.logs` against real SQLite files, through the real HTTP path (replay server).

- Every outcome (complete, truncated, in-band error, cut, aborted by the
  caller, fallback, retry, tool loop) gives exactly one row per model request
  with the right status, partial text, usage (estimated where the provider
  never reported it), cost, a shared correlation id, tags and attempts.
- The log store never slows or breaks a stream: a locked database, a
  read-only directory, a blocked store, a full queue, a store that raises —
  the calls succeed, a `LogStoreWarning` is emitted and `stats` count it.
- No API key is stored: every byte of the database and the payload files is scanned.
- Numbered migrations are idempotent; `llmrelay logs` prints the rows and totals.

The scenarios here are reused by `test_logs_postgres.py` against PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import llmrelay
from llmrelay import ProviderStreamError, Retry, RetryEvent, StreamInterruptedError, TextDelta
from llmrelay.logs import LogHook, LogStoreWarning, default_path, hook_from
from llmrelay.logs.migrations import MIGRATIONS, apply_sqlite
from llmrelay.logs.sqlite import SQLiteStore
from llmrelay.testing import Reply, client_for, read_recording

#: Distinctive fake keys: the redaction tests look for these bytes everywhere.
KEYS = {
    "openai": "sk-llmrelayTESTopenai-4f1c9e27b8d3a6054e1f",
    "anthropic": "sk-ant-llmrelayTESTanthropic-93b1d7e2c4a8f605",
    "groq": "gsk_llmrelayTESTgroq8c2e4a1f7b3d9e05",
}
CUSTOM_SECRET = "tok-llmrelayTESTheader-5d8e2a9c1b7f"

OPENAI = "openai:gpt-4o"
ANTHROPIC = "anthropic:claude-sonnet-4-5"
GROQ = "groq:openai/gpt-oss-120b"
TEXT_REC = "openai_chat/text_usage_chunk.sse"
TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
    "I recommend checking a reliable weather website or a weather app."
)


def server_error() -> Reply:
    return Reply.json({"error": {"message": "boom", "type": "server_error"}}, status=500)


def get_weather(city: str, country: str, units: str = "c") -> str:
    """The weather in a city."""
    return f"12 degrees {units} and rain in {city}, {country}"


get_weather.__name__ = "GetWeatherArgs"  # the name the recorded tool call uses


# -- scenarios: each makes one logical call and says what its rows must hold --------------------


@dataclass
class Expect:
    #: One per row, in turn order: the status and the turn's own response (as the caller can see it).
    statuses: list[str]
    responses: list[Any]
    correlation_id: str
    tags: dict[str, Any] = field(default_factory=dict)
    #: Row index -> the attempts (model, ok) it must carry.
    attempts: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)
    #: Per-row (input, output) tokens when the response object holds a sum (tool loop).
    tokens: list[tuple[int, int]] | None = None
    check: Callable[[list[dict[str, Any]]], None] | None = None


def scenario_complete(server: Any, client: Any) -> Expect:
    server.enqueue(Reply.recording(TEXT_REC))
    r = client.complete(OPENAI, "What's the weather in San Francisco?", tags={"user": "alice", "n": 1})
    assert r.text == TEXT

    def check(rows: list[dict[str, Any]]) -> None:
        row = rows[0]
        assert (row["input_tokens"], row["output_tokens"], row["usage_estimated"]) == (14, 30, False)
        assert row["model"] == "gpt-4o-2024-08-06" and row["requested_model"] == "gpt-4o"
        assert row["provider"] == "openai" and row["finish_reason"] == "stop"
        assert row["request_messages"] == [{"role": "user", "content": "What's the weather in San Francisco?"}]
        assert row["cost_usd"] is not None and row["cost_usd"] > 0
        assert row["attempts"] is None and row["error"] is None

    return Expect(["ok"], [r], r.correlation_id, {"user": "alice", "n": 1}, check=check)


def scenario_truncated(server: Any, client: Any) -> Expect:
    server.enqueue(Reply.recording("openai_chat/finish_length.sse"))
    r = client.complete(OPENAI, "Give me JSON", max_tokens=1)
    assert r.status == "truncated"

    def check(rows: list[dict[str, Any]]) -> None:
        assert rows[0]["finish_reason"] == "length" and rows[0]["usage_estimated"] is False

    return Expect(["truncated"], [r], r.correlation_id, check=check)


def scenario_in_band_error(server: Any, client: Any) -> Expect:
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    with pytest.raises(ProviderStreamError) as info:
        client.complete(GROQ, "Call the tool")
    partial = info.value.partial
    assert partial.reasoning  # the reasoning streamed before the error event

    def check(rows: list[dict[str, Any]]) -> None:
        assert rows[0]["error_type"] == "ProviderStreamError" and "groq reported an error" in rows[0]["error"]
        assert rows[0]["reasoning"] == partial.reasoning

    return Expect(["error"], [partial], partial.correlation_id, check=check)


def scenario_cut(server: Any, client: Any) -> Expect:
    body = read_recording(TEXT_REC)
    server.enqueue(Reply(body=body[:900], headers={"content-type": "text/event-stream"}))
    with pytest.raises(StreamInterruptedError) as info:
        client.complete(OPENAI, "Weather?")
    partial = info.value.partial
    assert partial.text and TEXT.startswith(partial.text) and partial.text != TEXT

    def check(rows: list[dict[str, Any]]) -> None:
        assert rows[0]["usage_estimated"] is True and rows[0]["output_tokens"] > 0

    return Expect(["error"], [partial], partial.correlation_id, check=check)


def scenario_aborted(server: Any, client: Any) -> Expect:
    server.enqueue(Reply.recording(TEXT_REC, chunking="events", delay=0.005))
    s = client.stream(OPENAI, "Weather?", tags={"why": "abort"})
    seen = ""
    for e in s:
        if type(e) is TextDelta:
            seen += e.text
            if len(seen) > 10:
                break
    s.close()
    r = s.response
    assert r.status == "aborted" and r.text == seen

    def check(rows: list[dict[str, Any]]) -> None:
        assert rows[0]["text"] == seen and rows[0]["usage_estimated"] is True and rows[0]["stream"] is True

    return Expect(["aborted"], [r], s.correlation_id, {"why": "abort"}, check=check)


def scenario_fallback(server: Any, client: Any) -> Expect:
    server.enqueue(server_error(), Reply.recording("anthropic/text_basic.sse"))
    r = client.complete([OPENAI, ANTHROPIC], "Name two pets")
    assert r.provider == "anthropic"

    def check(rows: list[dict[str, Any]]) -> None:
        assert rows[0]["provider"] == "openai" and rows[0]["error_type"] == "InternalServerError"
        assert rows[1]["provider"] == "anthropic" and rows[1]["model"].startswith("claude-sonnet-4-5")
        assert json.loads(rows[1]["requested"]) == [OPENAI, ANTHROPIC]
        assert rows[0]["attempts"] is None

    return Expect(["error", "ok"], [r.attempts[0].response, r], r.correlation_id,
                  attempts={1: [(OPENAI, False), (ANTHROPIC, True)]}, check=check)


def scenario_retry(server: Any, client: Any) -> Expect:
    server.enqueue(server_error(), Reply.recording(TEXT_REC))
    s = client.stream(OPENAI, "Weather?", retry=Retry(1, initial_delay=0.0))
    retries = [e for e in s if type(e) is RetryEvent]
    r = s.response
    assert r.text == TEXT and len(retries) == 1
    return Expect(["error", "ok"], [retries[0].error.partial, r], s.correlation_id,
                  attempts={1: [(OPENAI, False), (OPENAI, True)]})


def scenario_tool_loop(server: Any, client: Any) -> Expect:
    server.enqueue(Reply.recording("openai_chat/tool_call_single.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    r = client.complete(OPENAI, "Weather in Edinburgh?", tools=[get_weather])
    assert len(r.turns) == 2

    def check(rows: list[dict[str, Any]]) -> None:
        first, second = rows
        assert first["finish_reason"] == "tool_calls"
        assert first["tool_calls"] == [{"id": "call_c91SqDXlYFuETYv8mUHzz6pp", "name": "GetWeatherArgs",
                                        "arguments": {"city": "Edinburgh", "country": "UK", "units": "c"}}]
        (result,) = first["tool_results"]
        assert result["call_id"] == "call_c91SqDXlYFuETYv8mUHzz6pp" and result["error"] is None
        assert result["content"] == "12 degrees c and rain in Edinburgh, UK"
        assert second["tool_calls"] is None and second["tool_results"] is None
        # the second request carried the tool call and its result
        roles = [m["role"] for m in second["request_messages"]]
        assert roles == ["user", "assistant", "tool"]
        assert second["request_messages"][2]["content"] == result["content"]

    return Expect(["ok", "ok"], [r.turns[0], r], r.correlation_id, tokens=[(76, 24), (87, 26)], check=check)


SCENARIOS = {
    "complete": scenario_complete,
    "truncated": scenario_truncated,
    "in_band_error": scenario_in_band_error,
    "cut": scenario_cut,
    "aborted": scenario_aborted,
    "fallback": scenario_fallback,
    "retry": scenario_retry,
    "tool_loop": scenario_tool_loop,
}


def check_rows(rows: list[dict[str, Any]], expect: Expect) -> None:
    """Exactly one row per request, each the faithful record of its turn."""
    rows = sorted(rows, key=lambda r: r["turn"])
    assert [r["status"] for r in rows] == expect.statuses
    assert [r["turn"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["correlation_id"] for r in rows} == {expect.correlation_id}
    for i, (row, resp) in enumerate(zip(rows, expect.responses)):
        assert row["text"] == resp.text
        assert (row["reasoning"] or "") == resp.reasoning
        if expect.tokens is not None:
            assert (row["input_tokens"], row["output_tokens"]) == expect.tokens[i]
        else:
            assert (row["input_tokens"], row["output_tokens"]) == (resp.usage.input_tokens, resp.usage.output_tokens)
            assert row["usage_estimated"] == resp.usage.estimated
            assert row["cost_usd"] == pytest.approx(resp.cost.total) if resp.cost.total is not None else row["cost_usd"] is None
            assert row["ttft"] == pytest.approx(resp.timings.time_to_first_token) if resp.timings.time_to_first_token else True
        if row["cost_usd"] is None:
            assert row["cost_reason"]  # why the cost is unknown
        assert row["tags"] == (expect.tags or None)
        assert row["started_at"] <= row["ended_at"]
        expected_attempts = expect.attempts.get(i)
        if expected_attempts is None:
            assert row["attempts"] is None
        else:
            assert [(a["model"], a["ok"]) for a in row["attempts"]] == expected_attempts
    if expect.check is not None:
        expect.check(rows)


# -- fixtures ---------------------------------------------------------------------------------


def rows_of(hook: LogHook) -> list[dict[str, Any]]:
    """Flush the hook, then read everything back through a separate connection."""
    assert hook.flush(10)
    store = hook.store
    reader = SQLiteStore(store.path) if isinstance(store, SQLiteStore) else type(store)(store.dsn, schema=store.schema)
    with reader:
        return reader.rows()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "calls.db"


@pytest.fixture
def hook(db: Path):
    h = LogHook(db, busy_timeout=0.2)
    yield h
    h.close(10)


@pytest.fixture
def make_client(server):
    made = []

    def make(*hooks: Any, **kw: Any) -> llmrelay.Client:
        kw.setdefault("retry", 0)
        c = client_for(server, hooks=list(hooks), api_keys=KEYS, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- every outcome, one row per request --------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_outcome_gives_one_row_per_request(server, make_client, hook, name):
    expect = SCENARIOS[name](server, make_client(hook))
    check_rows(rows_of(hook), expect)
    assert hook.stats.written == len(expect.statuses) and hook.stats.lost == 0


def test_all_outcomes_in_one_database_keep_their_calls_apart(server, make_client, hook):
    expects = [fn(server, make_client(hook)) for fn in SCENARIOS.values()]
    rows = rows_of(hook)
    assert len(rows) == sum(len(e.statuses) for e in expects)
    for e in expects:
        check_rows([r for r in rows if r["correlation_id"] == e.correlation_id], e)


async def test_async_calls_are_logged_too(server, make_client, hook):
    client = make_client(hook)
    server.enqueue(Reply.recording(TEXT_REC))
    r = await client.acomplete(OPENAI, "Weather?", tags={"mode": "async"})
    server.enqueue(Reply.recording(TEXT_REC, chunking="events", delay=0.005))
    s = client.astream(OPENAI, "Weather?")
    async for e in s:
        if type(e) is TextDelta:
            break
    await s.aclose()
    rows = rows_of(hook)
    assert [(x["correlation_id"], x["status"], x["stream"]) for x in rows] == [
        (r.correlation_id, "ok", False), (s.correlation_id, "aborted", True)]
    assert rows[0]["text"] == TEXT and rows[0]["tags"] == {"mode": "async"}
    assert rows[1]["text"] == s.response.text and rows[1]["usage_estimated"] is True
    await client.aclose()


def test_all_models_failing_puts_the_attempts_on_the_last_row(server, make_client, hook):
    server.enqueue(server_error(), server_error())
    with pytest.raises(llmrelay.AllModelsFailedError):
        make_client(hook).complete([OPENAI, ANTHROPIC], "Hi")
    rows = rows_of(hook)
    assert [r["status"] for r in rows] == ["error", "error"]
    assert rows[0]["attempts"] is None
    assert [(a["model"], a["ok"]) for a in rows[1]["attempts"]] == [(OPENAI, False), (ANTHROPIC, False)]


def test_a_model_skipped_for_a_missing_key_is_in_the_attempts_but_has_no_row(server, hook):
    client = client_for(server, hooks=[hook], retry=0, api_keys={"openai": ""}, env={})
    server.enqueue(Reply.recording("anthropic/text_basic.sse"))
    r = client.complete([OPENAI, ANTHROPIC], "Hi")
    rows = rows_of(hook)
    assert len(rows) == 1 and rows[0]["provider"] == "anthropic" and r.attempts[0].response is None
    assert [(a["model"], a["ok"], a["status"]) for a in rows[0]["attempts"]] == [
        (OPENAI, False, "skipped"), (ANTHROPIC, True, "ok")]
    client.close()


def test_a_stream_closed_before_it_started_writes_nothing(server, make_client, hook):
    make_client(hook).stream(OPENAI, "Hi").close()
    assert hook.flush(10) and hook.stats.written == 0 and server.requests == []
    assert not os.path.exists(hook.store.path)  # nothing to write: the database is not even created


def test_files_dir_one_redacted_pair_per_request(server, make_client, tmp_path):
    files = tmp_path / "payloads"
    hook = LogHook(tmp_path / "l.db", files_dir=files)
    expect = scenario_fallback(server, make_client(hook))
    scenario_tool_loop(server, make_client(hook))
    assert hook.flush(10) and hook.stats.files == 4
    names = sorted(os.listdir(files))
    assert len(names) == 8
    pattern = re.compile(r"^\d{8}T\d{9}Z_[0-9a-f]{32}_\d{3}\.(request|response)\.json$")
    assert all(pattern.match(n) for n in names), names
    pairs = sorted({n.rsplit(".", 2)[0] for n in names})
    assert len(pairs) == 4 and all(f"{p}.request.json" in names and f"{p}.response.json" in names for p in pairs)
    first = [p for p in pairs if expect.correlation_id in p]
    assert [p[-3:] for p in first] == ["001", "002"]
    request = json.loads((files / f"{first[0]}.request.json").read_text())
    assert request["body"] == server.requests[0].json
    assert request["headers"]["authorization"] == "[REDACTED]" and request["url"].endswith("/chat/completions")
    response = json.loads((files / f"{first[1]}.response.json").read_text())
    assert response["status"] == "ok" and response["usage"]["output_tokens"] == 10
    assert response["choices"][0]["parts"][0]["text"] == expect.responses[1].text
    assert [a["ok"] for a in response["attempts"]] == [False, True]
    for name in names:
        assert stat.S_IMODE(os.stat(files / name).st_mode) == 0o600
    hook.close()


def test_safe_file_names_from_hostile_ids(tmp_path):
    from llmrelay.logs.rows import safe_name

    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("a b/c\\d:e*f?g") == "a_b_c_d_e_f_g"
    assert safe_name("...") == "x" and len(safe_name("z" * 500)) == 64


# -- secrets never stored -----------------------------------------------------------------------


def every_byte_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_no_api_key_in_any_stored_byte(server, make_client, tmp_path):
    store_dir = tmp_path / "store"
    hook = LogHook(store_dir / "logs.db", files_dir=store_dir / "files")
    client = make_client(hook)
    for name in ("complete", "in_band_error", "cut", "aborted", "fallback", "retry", "tool_loop"):
        SCENARIOS[name](server, client)
    # a key echoed in a prompt, an extra header or an error body is scrubbed too
    server.enqueue(Reply.json({"error": {"message": f"Incorrect API key provided: {KEYS['openai']}"}}, status=401))
    with pytest.raises(llmrelay.AuthenticationError):
        client.complete(OPENAI, f"my key is {KEYS['openai']} and {KEYS['anthropic']}",
                        extra_headers={"x-custom-token": CUSTOM_SECRET})
    assert hook.flush(10) and hook.stats.lost == 0 and hook.stats.written == 11
    # the server did receive the keys: the test would catch a leak
    sent = b"".join(json.dumps(r.headers).encode() + r.body for r in server.requests)
    assert KEYS["openai"].encode() in sent and KEYS["anthropic"].encode() in sent and CUSTOM_SECRET.encode() in sent
    stored_before_close = every_byte_under(store_dir)  # with the WAL file
    hook.close()
    stored = stored_before_close + every_byte_under(store_dir)
    assert b"[REDACTED]" in stored
    for secret in [*KEYS.values(), CUSTOM_SECRET]:
        for form in (secret, secret[4:], secret.encode("utf-16-le").decode("latin-1")):
            assert form.encode("latin-1") not in stored, f"{secret!r} leaked"


def test_redaction_helpers():
    from llmrelay.logs.redact import Scrubber, redact_headers, redact_url

    headers = {"Authorization": "Bearer x", "x-api-key": "k", "X-Goog-Api-Key": "k", "api-key": "k",
               "X-My-Secret": "s", "Proxy-Authorization": "p", "x-session-token": "t", "content-type": "json"}
    assert redact_headers(headers) == {**{k: "[REDACTED]" for k in headers}, "content-type": "json"}
    assert redact_url("https://u:pw@h/p?key=abc&alt=sse") == "https://u:[REDACTED]@h/p?key=[REDACTED]&alt=sse"
    s = Scrubber(["hunter2-secret", None, "ab"])
    assert s.text('x hunter2-secret "ab" Bearer abcdefghijkl sk-proj-abcdefghijklmnopqrstu') == \
        'x [REDACTED] "ab" [REDACTED] [REDACTED]'
    assert s.obj({"hunter2-secret": ["hunter2-secret", 1]}) == {"[REDACTED]": ["[REDACTED]", 1]}


# -- the store never slows or breaks a stream ----------------------------------------------------


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list]:
    """Run `fn` in a daemon thread: (the thread, [its result or the exception it raised])."""
    out: list = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def test_a_locked_database_never_blocks_the_stream(server, make_client, db):
    """The writer may wait up to a minute on SQLite's lock (busy_timeout=60); the test holds the lock
    the whole time, and the call still completes (and its row waits): the stream never waited on
    the lock. The 30 s join is a hang guard, not a speed bound."""
    hook = LogHook(db, busy_timeout=60)
    client = make_client(hook)
    scenario_complete(server, client)
    assert hook.flush(10) and hook.stats.written == 1
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        thread, out = in_thread(lambda: scenario_complete(server, client))
        thread.join(30)
        assert not thread.is_alive(), "the call did not complete while the log database was locked: it waited on the lock"
        assert isinstance(out[0], Expect), out[0]
        assert hook.stats.written == 1  # the row is still waiting for the lock
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert hook.flush(10)  # the lock is gone: the waiting row is written, nothing lost
    assert hook.stats.written == 2 and hook.stats.failed == 0
    assert len(rows_of(hook)) == 2
    hook.close()


def test_locked_database(server, make_client, db):
    """A lock held longer than busy_timeout: the row is counted as failed ("locked", with a warning
    and `on_error`), the call itself succeeds, and logging goes on once the lock is gone."""
    failures = []
    hook = LogHook(db, busy_timeout=0.3, on_error=failures.append)
    client = make_client(hook)
    scenario_complete(server, client)
    assert hook.flush(10) and hook.stats.written == 1
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        expect = scenario_complete(server, client)
        assert expect.responses[0].status == "ok"
        with pytest.warns(LogStoreWarning, match="locked"):
            assert hook.flush(10)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert hook.stats.failed == 1 and hook.stats.errors == {"locked": 1}
    assert [(f.kind, f.rows) for f in failures] == [("locked", 1)] and "locked" in str(failures[0].error)
    scenario_complete(server, client)  # the lock is gone: logging goes on
    assert len(rows_of(hook)) == 2 and hook.stats.written == 2
    hook.close()


@pytest.fixture
def readonly_dir(tmp_path: Path):
    """A directory nobody can write in (as root: chmod does not stop root, so the immutable flag)."""
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    if getattr(os, "geteuid", lambda: -1)() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode != 0:
            path.chmod(0o755)
            pytest.skip("running as root without chattr +i: cannot make a read-only directory")
        immutable = True
    yield path
    if immutable:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)


def test_read_only_directory(server, make_client, readonly_dir):
    hook = LogHook(readonly_dir / "logs.db", files_dir=readonly_dir / "files")
    client = make_client(hook)
    with pytest.warns(LogStoreWarning) as caught:
        expect = scenario_complete(server, client)
        assert expect.responses[0].text == TEXT  # the stream succeeded
        assert hook.flush(10)
    messages = [str(w.message) for w in caught]
    assert any(str(readonly_dir / "logs.db") in m for m in messages), messages
    assert any("log files" in m for m in messages), messages
    assert hook.stats.failed == 1 and hook.stats.written == 0
    assert hook.stats.errors == {"readonly": 1, "files:readonly": 1}
    scenario_complete(server, client)  # later calls: counted, still no exception
    assert hook.flush(10) and hook.stats.failed == 2
    hook.close()


class BlockedStore:
    """A store that hangs until released: the worst slow database."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows: list[dict[str, Any]] = []

    def describe(self) -> str:
        return "blocked"

    def open(self) -> None:
        pass

    def write(self, rows: list[dict[str, Any]], records: Any, scrubbers: Any) -> None:
        self.release.wait(60)  # longer than the six calls could take unless one of them waited here
        self.rows.extend(rows)

    def close(self) -> None:
        pass


def test_a_hanging_store_and_a_full_queue_never_slow_a_stream(server, make_client):
    """The store hangs until the test releases it: all six calls complete while it still hangs
    (nothing written yet), the queue overflow is counted, and nothing is lost once it moves."""
    store = BlockedStore()
    hook = LogHook(store=store, queue_size=2, batch_size=1, linger=0)
    client = make_client(hook)
    with pytest.warns(LogStoreWarning, match="queue is full"):
        for _ in range(6):
            expect = scenario_complete(server, client)
            assert expect.responses[0].status == "ok"
    assert store.rows == [] and not store.release.is_set(), "a call waited for the hung store"
    assert hook.stats.dropped >= 3 and hook.stats.errors["queue_full"] == hook.stats.dropped
    store.release.set()
    assert hook.flush(10)
    assert hook.stats.written + hook.stats.dropped == 6 == len(store.rows) + hook.stats.dropped
    hook.close()


class FailingStore(BlockedStore):
    def write(self, rows: list[dict[str, Any]], records: Any, scrubbers: Any) -> None:
        raise RuntimeError("disk on fire")


def test_a_failing_store_is_reported_once_and_counted(server, make_client):
    hook = LogHook(store=FailingStore())
    client = make_client(hook)
    with pytest.warns(LogStoreWarning, match="disk on fire") as caught:
        for _ in range(3):
            scenario_complete(server, client)
            assert hook.flush(10)
    assert len([w for w in caught if issubclass(w.category, LogStoreWarning)]) == 1
    assert hook.stats.failed == 3 and hook.stats.errors == {"RuntimeError": 3}
    hook.close()


def test_rows_of_unfinished_calls_are_written_at_close(server, make_client, hook):
    server.enqueue(server_error(), Reply.recording(TEXT_REC))
    s = make_client(hook).stream(OPENAI, "Hi", retry=Retry(1, initial_delay=0.0))
    it = iter(s)
    assert type(next(it)) is RetryEvent  # the first request failed, the call goes on
    hook.close()
    assert [r["status"] for r in rows_of(hook)] == ["error"]
    for _ in it:
        pass
    assert [r["status"] for r in rows_of(hook)] == ["error", "ok"]  # the hook still works after close()


def test_pending_rows_are_flushed_at_interpreter_exit(tmp_path):
    db = tmp_path / "exit.db"
    script = f"""
import llmrelay
from llmrelay.testing import ReplayServer, Reply, client_for
server = ReplayServer().start()
for _ in range(3):
    server.enqueue(Reply.recording({TEXT_REC!r}))
from llmrelay.logs import hook_from
hook = hook_from({str(db)!r})
client = client_for(server, hooks=[hook])
for _ in range(3):
    client.complete("openai:gpt-4o", "Hi")
# no flush, no close: atexit writes the queued rows
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with SQLiteStore(db) as store:
        assert [r["status"] for r in store.rows()] == ["ok"] * 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_logs_with_its_own_thread_and_connection(server, make_client, hook):
    client = make_client(hook)
    scenario_complete(server, client)
    assert hook.flush(10)  # the parent's thread and connection are running
    server.enqueue(Reply.recording(TEXT_REC), Reply.recording(TEXT_REC))
    pid = os.fork()
    if pid == 0:  # the child: log one call, then leave without running the parent's cleanup
        code = 1
        try:
            client.complete(OPENAI, "from the child")
            code = 0 if hook.flush(10) and hook.stats.written == 2 and hook.stats.lost == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.complete(OPENAI, "from the parent")  # the parent's writer was not disturbed
    prompts = [r["request_messages"][0]["content"] for r in rows_of(hook)]
    assert sorted(prompts[1:]) == ["from the child", "from the parent"] and len(prompts) == 3


# -- configuration -----------------------------------------------------------------------------------


def test_hook_from_values_and_environment(tmp_path):
    env = {"LLMRELAY_LOG_DIR": str(tmp_path / "dir")}
    assert hook_from(None, env={}) is None
    for off in ("", "0", "false", "off"):
        assert hook_from(None, env={"LLMRELAY_LOG": off}) is None
    assert hook_from(False, env={"LLMRELAY_LOG": "1"}) is None
    default = hook_from(None, env={**env, "LLMRELAY_LOG": "1"})
    assert default.store.path == str(tmp_path / "dir" / "logs.db")
    assert hook_from(True, env=env) is default  # one hook (one writer thread) per store
    path = tmp_path / "x.db"
    assert hook_from(str(path), env={}) is hook_from(path, env={}) is hook_from(None, env={"LLMRELAY_LOG": str(path)})
    pg = hook_from("postgresql://user:pw@127.0.0.1:1/db", env={})
    assert pg.store.dsn.startswith("postgresql://") and "pw" not in pg.store.describe()
    own = LogHook(tmp_path / "own.db")
    assert hook_from(own) is own
    assert hook_from({"path": tmp_path / "d.db", "queue_size": 5}).writer._queue.maxsize == 5
    with pytest.raises(TypeError):
        hook_from(3)
    files = hook_from(True, env={**env, "LLMRELAY_LOG_FILES": str(tmp_path / "f")})
    assert files.files_dir == str(tmp_path / "f") and files is not default
    for h in (default, pg, own, files):
        h.close()


@pytest.mark.skipif("log" not in __import__("inspect").signature(llmrelay.Client).parameters,
                    reason="Client(log=...) is not wired yet (see llmrelay.logs.hook_from)")
def test_client_log_argument_and_environment(server, tmp_path):
    db, env_db = tmp_path / "arg.db", tmp_path / "env.db"
    clients = [client_for(server, retry=0, log=str(db)),
               client_for(server, retry=0, env={"LLMRELAY_LOG": str(env_db)})]
    for c in clients:
        scenario_complete(server, c)
    off = client_for(server, retry=0, log=False, env={"LLMRELAY_LOG": "1"})
    assert not any(isinstance(h, LogHook) for h in off.hooks)
    for path in (db, env_db):
        hook = hook_from(path)
        assert any(h is hook for c in clients for h in c.hooks)
        assert [r["status"] for r in rows_of(hook)] == ["ok"]
        hook.close()
    for c in (*clients, off):
        c.close()


def test_default_path():
    assert default_path({"LLMRELAY_LOG_DIR": "/x/y"}) == os.path.join("/x/y", "logs.db")
    assert default_path({"XDG_DATA_HOME": "/data"}) == os.path.join("/data", "llmrelay", "logs.db")
    if sys.platform.startswith("linux"):
        assert default_path({}) == os.path.expanduser("~/.local/share/llmrelay/logs.db")


def test_enable_logs_the_module_level_calls(tmp_path, monkeypatch):
    from llmrelay import client as client_module

    monkeypatch.setattr(client_module, "_default", None)
    hook = llmrelay.logs.enable(tmp_path / "m.db")
    assert hook in client_module.default_client().hooks
    assert llmrelay.logs.enable(tmp_path / "m.db") is hook
    assert client_module.default_client().hooks.count(hook) == 1
    hook.close()


# -- schema ---------------------------------------------------------------------------------------------


def test_migrations_are_numbered_recorded_and_idempotent(db):
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert [m.name for m in MIGRATIONS][:2] == ["m001_initial", "m002_search"]
    for _ in range(2):
        store = SQLiteStore(db).open()
        store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version, name FROM _migrations ORDER BY version").fetchall() == [
        (m.version, m.name) for m in MIGRATIONS]
    assert apply_sqlite(sqlite3.connect(db, isolation_level=None)) == []
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    assert {"turns", "turns_fts", "_migrations", "turns_correlation"} <= tables
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_search_finds_request_and_response_words(server, make_client, hook):
    scenario_complete(server, make_client(hook))
    scenario_fallback(server, make_client(hook))
    assert hook.flush(10)
    with SQLiteStore(hook.store.path) as store:
        assert [r["status"] for r in store.search("weather website")] == ["ok"]  # response text
        assert len(store.search("francisco")) == 1  # request text (case-insensitive)
        assert len(store.search("pets")) == 2  # both rows of the fallback call
        assert store.search('"unbalanced (quote') == [] and store.search("   ") == []


# -- the CLI ------------------------------------------------------------------------------------------


def logs_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmrelay.cli", "logs", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def cli_fixture(server: Any, make_client: Any, hook: LogHook) -> list[Expect]:
    expects = [scenario_complete(server, make_client(hook)), scenario_fallback(server, make_client(hook)),
               scenario_tool_loop(server, make_client(hook))]
    assert hook.flush(10)
    return expects


def check_cli(where: list[str], expects: list[Expect], env: dict[str, str] | None = None) -> None:
    """The four commands print what the rows hold (shared with the PostgreSQL tests)."""
    complete, fallback, tools = expects
    out = logs_cli("list", *where, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:6] == ["ID", "TIME", "CALL", "TURN", "MODEL", "STATUS"] and len(lines) == 1 + 5
    assert "anthropic:claude-sonnet-4-5-20250929" in out.stdout and "I'm unable to provide" in out.stdout
    assert logs_cli("list", "-n", "2", *where, env=env).stdout.count("\n") == 3

    listed = [json.loads(x) for x in logs_cli("list", "--json", *where, env=env).stdout.splitlines()]
    assert [r["status"] for r in listed] == ["ok", "ok", "ok", "error", "ok"]  # newest first
    first_id = listed[-1]["id"]

    shown = logs_cli("show", str(first_id), *where, env=env)
    assert shown.returncode == 0 and TEXT in shown.stdout and "What's the weather in San Francisco?" in shown.stdout
    assert '"user": "alice"' in shown.stdout
    call = logs_cli("show", fallback.correlation_id[:10], *where, env=env)
    assert call.stdout.count("── row") == 2 and "InternalServerError" in call.stdout and "attempts:" in call.stdout
    missing = logs_cli("show", "999999", *where, env=env)
    assert missing.returncode == 1 and "no log row" in missing.stderr

    found = [json.loads(x) for x in logs_cli("search", "Edinburgh", "--json", *where, env=env).stdout.splitlines()]
    assert {r["correlation_id"] for r in found} == {tools.correlation_id}
    assert logs_cli("search", "no-such-word-anywhere", *where, env=env).stdout == "(no rows)\n"

    totals = logs_cli("totals", *where, env=env)
    assert totals.returncode == 0 and "gpt-4o-2024-08-06" in totals.stdout and "TTFT P95" in totals.stdout
    by_model = {r["key"]: r for r in map(json.loads, logs_cli("totals", "--json", *where, env=env).stdout.splitlines())}
    gpt4o = by_model["gpt-4o-2024-08-06"]
    assert (gpt4o["calls"], gpt4o["requests"], gpt4o["input_tokens"], gpt4o["output_tokens"]) == (2, 2, 14 + 76, 30 + 24)
    assert by_model["gpt-4o"]["failed"] == 1  # the failed fallback attempt: no served model reported
    assert gpt4o["ttft_p50"] <= gpt4o["ttft_p95"] and gpt4o["cost_usd"] > 0
    by_day = [json.loads(x) for x in logs_cli("totals", "--by", "day", "--json", *where, env=env).stdout.splitlines()]
    assert [d["key"] for d in by_day] == [time.strftime("%Y-%m-%d", time.gmtime())]
    assert by_day[0]["calls"] == 3 and by_day[0]["requests"] == 5
    assert by_day[0]["input_tokens"] == sum(r["input_tokens"] for r in by_model.values())


def test_cli(server, make_client, hook, db):
    expects = cli_fixture(server, make_client, hook)
    check_cli(["--db", str(db)], expects)
    check_cli([], expects, env={"LLMRELAY_LOG": str(db)})  # the same database, found through the env var


def test_show_a_call_whose_correlation_prefix_is_all_digits(server, make_client, hook, db):
    """`logs show <prefix>` finds a call by the start of its correlation id even when that start is all
    digits (ids are hex: a 10-character prefix is all digits about 1 time in 110, which made test_cli
    fail now and then); a number that is a row id still shows that row."""
    server.enqueue(Reply.recording(TEXT_REC), Reply.recording(TEXT_REC))
    client = make_client(hook)
    digits = "1234567890" + "ab" * 11
    client.complete(OPENAI, "hi", correlation_id=digits)
    client.complete(OPENAI, "hi again")
    assert hook.flush(10)
    by_prefix = logs_cli("show", digits[:10], "--db", str(db))
    assert by_prefix.returncode == 0 and by_prefix.stdout.count("── row") == 1 and digits in by_prefix.stdout
    by_id = logs_cli("show", "2", "--db", str(db))
    assert by_id.returncode == 0 and by_id.stdout.count("── row") == 1 and "hi again" in by_id.stdout
    huge = logs_cli("show", "9" * 40, "--db", str(db))  # no such row or call: said, no crash
    assert huge.returncode == 1 and "no log row" in huge.stderr


def test_cli_without_a_database(tmp_path):
    out = logs_cli("list", "--db", str(tmp_path / "none.db"))
    assert out.returncode == 1 and "cannot read the logs" in out.stderr
    assert not (tmp_path / "none.db").exists()  # reading never creates one


def test_structured_output_is_stored_on_the_answering_row(tmp_path):
    """`output=`: the validated object lands, as JSON, on the row of the request that produced it."""
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temperature: int
        units: str

    path = tmp_path / "logs.db"
    from llmrelay.testing import ReplayServer

    with ReplayServer() as server:
        server.enqueue(Reply.recording("openai_chat/n3_multiple_choices.sse"))
        client = client_for(server, retry=0, log=str(path))
        r = client.complete("openai:gpt-4o", "weather?", output=Weather)
        assert client.hooks[-1].flush(5)
    rows = sqlite3.connect(path).execute("SELECT output, status FROM turns").fetchall()
    assert [(json.loads(o), s) for o, s in rows] == [(r.output.model_dump(), "ok")]


def test_m003_upgrades_a_database_made_before_it(tmp_path):
    """A log database created by m001+m002 only gains the `output` column, keeping its rows."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    import llmrelay.logs.migrations as m

    old = m.MIGRATIONS
    try:
        m.MIGRATIONS = tuple(x for x in old if x.version < 3)
        apply_sqlite(conn)
        conn.execute("INSERT INTO turns (correlation_id, started_at, status) VALUES ('c1', 1.0, 'ok')")
    finally:
        m.MIGRATIONS = old
    assert apply_sqlite(conn) == ["m003_output", "m004_conversation", "m005_search_content"]
    assert apply_sqlite(conn) == []  # idempotent
    assert conn.execute("SELECT correlation_id, output FROM turns").fetchall() == [("c1", None)]
