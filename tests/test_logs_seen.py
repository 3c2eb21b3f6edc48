"""Logs keep what users look for (issue 13, item 9): the conversation id, the request parameters,
the base URL without credentials, ISO-8601 times beside the epoch floats (m004, old rows never
rewritten), full-text search that plain SQL and Datasette both use (m005), and `llmrelay logs`
filters. SQLite always; PostgreSQL at 127.0.0.1:5432 when reachable (must run with CI=true)."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from db_helpers import sqlite_log_rows

import llmrelay
from llmrelay.logs import LogHook
from llmrelay.logs.migrations import MIGRATIONS, apply_sqlite
from llmrelay.logs.query import Filters, parse_time
from llmrelay.logs.sqlite import SQLiteStore
from llmrelay.testing import Reply, client_for

IN_CI = os.environ.get("CI") == "true"
DSN = os.environ.get("LLMRELAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

#: Datasette's own FTS detection (datasette/utils `detect_fts_sql`, 0.65): a virtual FTS table whose
#: SQL names the table as `content="turns"` (or `content=[turns]`) gets a search box on that table.
DATASETTE_DETECT = """
    select name from sqlite_master where rootpage = 0 and (
        sql like '%VIRTUAL TABLE%USING FTS%content="turns"%'
        or sql like '%VIRTUAL TABLE%USING FTS%content=[turns]%'
        or (tbl_name = "turns" and sql like '%VIRTUAL TABLE%USING FTS%'))
"""
#: What Datasette runs for `/logs/turns?_search=...` once it found the table.
DATASETTE_SEARCH = "select id from turns where rowid in (select rowid from [{fts}] where [{fts}] match :search) order by id"


rows = sqlite_log_rows


def log_two_calls(server, path, **kw):
    hook = LogHook(path)
    client = client_for(server, retry=0, hooks=[hook])
    server.enqueue(Reply.recording("anthropic/text_basic.sse"), Reply.recording("ollama/chat_text_done_stop.ndjson"))
    client.complete("anthropic:claude-sonnet-4-5", "Two names for a pet pelican", temperature=0.2, max_tokens=300,
                    conversation_id="thread-7", correlation_id="req-1", **kw)
    client.complete("ollama:gemma3:1b", "Count from 1 to 5", max_tokens=50, options={"num_ctx": 8192},
                    base_url=server.url.replace("http://", "http://alice:s3cret@"), conversation_id="thread-8")
    client.close()
    assert hook.close(10)


def test_rows_carry_conversation_params_base_url_and_iso_times(server, tmp_path):
    path = tmp_path / "logs.db"
    before = time.time()
    log_two_calls(server, path)
    first, second = rows(path)
    assert (first["correlation_id"], first["conversation_id"]) == ("req-1", "thread-7")
    assert second["conversation_id"] == "thread-8" and len(second["correlation_id"]) == 32
    assert json.loads(first["params"]) == {"temperature": 0.2, "max_tokens": 300}
    assert json.loads(second["params"]) == {"max_tokens": 50, "options": {"num_ctx": 8192}}
    assert first["base_url"] == server.url
    assert second["base_url"] == server.url and "s3cret" not in json.dumps(second) and "alice" not in second["base_url"]
    for row in (first, second):
        started = datetime.datetime.fromisoformat(row["started_at_iso"])
        assert started.utcoffset() == datetime.timedelta(0)
        assert started.timestamp() == pytest.approx(row["started_at"], abs=1e-5)
        assert datetime.datetime.fromisoformat(row["ended_at_iso"]).timestamp() == pytest.approx(row["ended_at"], abs=1e-5)
        assert row["started_at"] >= before - 1
        assert row["time_to_first_text"] is not None and row["time_to_first_text"] >= row["ttft"]


def test_old_rows_are_never_rewritten_and_become_searchable(tmp_path):
    """A database made by m001-m003 (contentless index) keeps its rows as they were after m004/m005,
    and the new index finds them."""
    import llmrelay.logs.migrations as m

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    old = m.MIGRATIONS
    try:
        m.MIGRATIONS = tuple(x for x in old if x.version <= 3)
        apply_sqlite(conn)
        conn.execute("INSERT INTO turns (correlation_id, started_at, status, text, request_messages) "
                     "VALUES ('c1', 1700000000.5, 'ok', 'a pelican named Scoop', '[]')")
    finally:
        m.MIGRATIONS = old
    before = conn.execute("SELECT * FROM turns").fetchall()
    assert apply_sqlite(conn) == ["m004_conversation", "m005_search_content"]
    after = conn.execute("SELECT * FROM turns").fetchall()
    assert [r[: len(before[0])] for r in after] == before  # the old columns, untouched
    assert conn.execute("SELECT started_at_iso, conversation_id FROM turns").fetchall() == [(None, None)]
    assert conn.execute("SELECT rowid FROM turns_fts WHERE turns_fts MATCH 'pelican'").fetchall() == [(1,)]
    assert [v for (v,) in conn.execute("SELECT version FROM _migrations ORDER BY version")] == [x.version for x in MIGRATIONS]
    conn.close()


def test_full_text_search_works_in_plain_sql_and_datasette(server, tmp_path):
    path = tmp_path / "logs.db"
    log_two_calls(server, path)
    conn = sqlite3.connect(path)
    (fts,) = [name for (name,) in conn.execute(DATASETTE_DETECT)]
    assert fts == "turns_fts"
    search = DATASETTE_SEARCH.format(fts=fts)
    # the bug: a contentless index made ?_search= return every row; now only the matching ones
    assert [i for (i,) in conn.execute(search, {"search": "pelican"})] == [1]
    assert [i for (i,) in conn.execute(search, {"search": "Scoop"})] == [1]  # response text
    assert [i for (i,) in conn.execute(search, {"search": "Count"})] == [2]  # request messages
    assert [i for (i,) in conn.execute(search, {"search": "zebra"})] == []
    # plain SQL reads the indexed text back from turns (external content)
    assert conn.execute("SELECT text FROM turns_fts WHERE turns_fts MATCH 'Scoop'").fetchone()[0] == "- Captain\n- Scoop"
    # and rows written or deleted by hand keep the index in step (triggers)
    conn.execute("INSERT INTO turns (correlation_id, started_at, status, text) VALUES ('x', 1.0, 'ok', 'zebra')")
    assert [i for (i,) in conn.execute(search, {"search": "zebra"})] == [3]
    conn.execute("DELETE FROM turns WHERE id = 3")
    assert [i for (i,) in conn.execute(search, {"search": "zebra"})] == []
    conn.close()
    with SQLiteStore(path) as store:
        assert [r["id"] for r in store.search("pelican")] == [1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmrelay.cli", *args], capture_output=True, text=True, timeout=60)


def test_logs_cli_filters_and_json_lines(server, tmp_path):
    path = tmp_path / "logs.db"
    log_two_calls(server, path)
    db = ("--db", str(path))

    def ids(*args: str) -> list[int]:
        r = cli("logs", *args, *db, "--json")
        assert r.returncode == 0, r.stderr
        return [json.loads(line)["id"] for line in r.stdout.splitlines()]  # JSON lines: one object per line

    assert ids("list") == [2, 1]
    assert ids("list", "--provider", "ollama") == [2]
    assert ids("list", "--model", "claude-sonnet-4-5") == [1]
    assert ids("list", "--model", "gemma*") == [2]
    assert ids("list", "--conversation", "thread-7") == [1]
    assert ids("list", "--status", "ok") == [2, 1] and ids("list", "--status", "error") == []
    assert ids("list", "--since", "1h") == [2, 1] and ids("list", "--until", "1h") == []
    assert ids("list", "--since", "2000-01-01", "--until", "2000-01-02T00:00Z") == []
    assert ids("search", "Count", "--provider", "ollama") == [2]
    assert ids("search", "Count", "--provider", "anthropic") == []
    r = cli("logs", "totals", *db, "--json", "--provider", "anthropic")
    assert [json.loads(line)["requests"] for line in r.stdout.splitlines()] == [1]
    r = cli("logs", "list", *db, "--since", "yesterday")
    assert r.returncode == 2 and "not a time" in r.stderr
    r = cli("logs", "list", "--help")
    assert "JSON lines" in r.stdout and "--conversation" in r.stdout


def test_parse_time():
    now = 1_800_000_000.0
    assert parse_time("30m", now) == now - 1800 and parse_time("2d", now) == now - 2 * 86400
    assert parse_time("2026-12-06T17:00:00Z") == parse_time("2026-12-06T18:00:00+01:00") == parse_time("2026-12-06T17:00")
    assert not Filters() and Filters(status="ok")


def test_chat_continue_keeps_the_conversation_id(server, tmp_path):
    path = tmp_path / "chat.db"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL", "_API_BASE"))}
    server.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse"), Reply.recording("openai_chat/text_usage_chunk.sse"),
                   Reply.recording("openai_chat/text_usage_chunk.sse"))
    args = ("-m", "openai:gpt-4o", "--base-url", server.url + "/v1", "--key", "k", "--db", str(path))

    def chat(*extra: str) -> None:
        r = subprocess.run([sys.executable, "-m", "llmrelay.cli", "chat", *extra, *args], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr

    chat("weather?")
    chat("-c", "and tomorrow?", "--correlation-id", "req-9")
    chat("a new one", "--conversation-id", "mine")
    first, second, third = rows(path)
    assert len(first["conversation_id"]) == 32 and second["conversation_id"] == first["conversation_id"]
    assert second["correlation_id"] == "req-9" and first["correlation_id"] != "req-9"
    assert third["conversation_id"] == "mine"


# -- PostgreSQL -------------------------------------------------------------------------------------
@pytest.fixture
def pg_schema():
    try:
        import psycopg

        psycopg.connect(DSN, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"CI=true: the PostgreSQL log tests must run, but PostgreSQL is not usable: {exc}")
        pytest.skip(f"PostgreSQL is not usable at 127.0.0.1:5432: {exc}")
    name = f"llmrelay_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_postgres_rows_and_filters(server, pg_schema):
    from llmrelay.logs import open_store

    hook = LogHook(dsn=DSN, schema=pg_schema)
    client = client_for(server, retry=0, hooks=[hook])
    server.enqueue(Reply.recording("anthropic/text_basic.sse"), Reply.recording("ollama/chat_text_done_stop.ndjson"))
    client.complete("anthropic:claude-sonnet-4-5", "Two names for a pet pelican", temperature=0.2,
                    conversation_id="thread-7")
    client.complete("ollama:gemma3:1b", "Count from 1 to 5", base_url=server.url.replace("http://", "http://a:pw@"))
    client.close()
    assert hook.close(10)
    store = open_store(DSN, schema=pg_schema)
    store.open(create=False)
    try:
        first, second = sorted(store.recent(10), key=lambda r: r["id"])
        assert first["conversation_id"] == "thread-7" and second["conversation_id"] is None
        assert first["params"] == {"temperature": 0.2} and second["base_url"] == server.url
        assert isinstance(first["started_at_iso"], datetime.datetime)
        assert first["started_at_iso"].timestamp() == pytest.approx(first["started_at"], abs=1e-5)
        assert [r["id"] for r in store.recent(10, Filters(conversation="thread-7"))] == [first["id"]]
        assert [r["id"] for r in store.recent(10, Filters(model="gemma*"))] == [second["id"]]
        assert [r["id"] for r in store.search("pelican", 10, Filters(provider="anthropic"))] == [first["id"]]
        assert store.search("pelican", 10, Filters(provider="ollama")) == []
        assert [g["requests"] for g in store.totals("model", Filters(since=time.time() - 3600))] == [1, 1]
    finally:
        store.close()
