"""`llmrelay.logs` against the real local PostgreSQL: the same scenarios and checks as SQLite.

Runs against `LLMRELAY_TEST_POSTGRES_DSN` (default
`postgresql://postgres@127.0.0.1:5432/test`), each test in a fresh random
schema dropped at the end. Skipped when PostgreSQL (or psycopg) is not
available, except under `CI=true`, where that is a failure.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import pytest

from llmrelay.logs import LogHook, LogStoreWarning
from llmrelay.logs.migrations import MIGRATIONS, SEARCH_VECTOR, apply_postgres
from llmrelay.testing import Reply

from db_helpers import DSN, drop_schema, require_postgres
from test_logs import (  # the shared scenarios and checks
    CUSTOM_SECRET,
    KEYS,
    OPENAI,
    SCENARIOS,
    TEXT_REC,
    check_cli,
    check_rows,
    cli_fixture,
    make_client,  # noqa: F401 - the fixture
    rows_of,
    scenario_complete,
)


@pytest.fixture(scope="module")
def pg_dsn() -> str:
    require_postgres("the PostgreSQL log tests")
    return DSN


@pytest.fixture
def schema(pg_dsn: str):
    name = f"llmrelay_test_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(name)


@pytest.fixture
def pg_hook(pg_dsn: str, schema: str):
    hook = LogHook(dsn=pg_dsn, schema=schema)
    yield hook
    hook.close(10)


def query(schema: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(sql, params).fetchall()


# -- the same outcomes, the same rows ----------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_outcome_gives_one_row_per_request(server, make_client, pg_hook, name):
    expect = SCENARIOS[name](server, make_client(pg_hook))
    check_rows(rows_of(pg_hook), expect)
    assert pg_hook.stats.written == len(expect.statuses) and pg_hook.stats.lost == 0


def test_all_outcomes_in_one_schema(server, make_client, pg_hook, schema):
    expects = [fn(server, make_client(pg_hook)) for fn in SCENARIOS.values()]
    rows = rows_of(pg_hook)
    assert len(rows) == sum(len(e.statuses) for e in expects)
    for e in expects:
        check_rows([r for r in rows if r["correlation_id"] == e.correlation_id], e)
    # the columns have PostgreSQL types: JSONB, BOOLEAN
    types = dict(query(schema, "SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = %s AND table_name = 'turns'", (schema,)))
    assert (types["tags"], types["usage_estimated"], types["started_at"]) == ("jsonb", "boolean", "double precision")
    assert query(schema, "SELECT count(*) FROM turns WHERE tags->>'user' = 'alice'") == [(1,)]


def test_no_api_key_in_any_postgres_row(server, make_client, pg_hook, schema, tmp_path):
    files = LogHook(tmp_path / "l.db", files_dir=tmp_path / "files")
    client = make_client(pg_hook, files)
    for name in ("complete", "in_band_error", "cut", "aborted", "fallback", "retry", "tool_loop"):
        SCENARIOS[name](server, client)
    server.enqueue(Reply.json({"error": {"message": f"Incorrect API key provided: {KEYS['openai']}"}}, status=401))
    with pytest.raises(Exception):
        client.complete(OPENAI, f"my key is {KEYS['openai']}", extra_headers={"x-custom-token": CUSTOM_SECRET})
    assert pg_hook.flush(10) and files.flush(10) and pg_hook.stats.written == 11 and pg_hook.stats.lost == 0
    files.close()
    tables = [t for (t,) in query(schema, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                  (schema,))]
    assert {"turns", "_migrations"} <= set(tables)
    dump = "\n".join(str(row) for t in tables for row in query(schema, f'SELECT x::text FROM "{t}" x'))
    dump += "\n".join(str(r) for r in query(schema, f"SELECT {SEARCH_VECTOR}::text FROM turns"))
    stored = dump.encode() + b"".join(p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file())
    assert "[REDACTED]" in dump
    for secret in [*KEYS.values(), CUSTOM_SECRET]:
        assert secret.encode() not in stored and secret[4:].lower().encode() not in stored.lower(), f"{secret!r} leaked"


# -- schema -------------------------------------------------------------------------------------


def test_migrations_are_idempotent_and_safe_to_race(pg_dsn, schema):
    import psycopg

    from llmrelay.logs.postgres import PostgresStore

    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            PostgresStore(pg_dsn, schema=schema).open().close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    open_close()
    assert query(schema, "SELECT version, name FROM _migrations ORDER BY version") == [
        (m.version, m.name) for m in MIGRATIONS]
    with psycopg.connect(pg_dsn) as conn:
        assert apply_postgres(conn, schema) == []
    indexes = {i for (i,) in query(schema, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
    assert {"turns_correlation", "turns_search"} <= indexes


def test_search_uses_the_text_index(server, make_client, pg_hook):
    from llmrelay.logs.postgres import PostgresStore

    expects = cli_fixture(server, make_client, pg_hook)
    with PostgresStore(pg_hook.store.dsn, schema=pg_hook.store.schema) as store:
        assert [r["correlation_id"] for r in store.search("weather website")] == [expects[0].correlation_id]
        assert len(store.search("FRANCISCO")) == 1
        assert {r["correlation_id"] for r in store.search("pets")} == {expects[1].correlation_id}
        assert store.search("") == [] and store.search("zzz-nothing") == []


def test_cli(server, make_client, pg_hook, schema, pg_dsn):
    expects = cli_fixture(server, make_client, pg_hook)
    check_cli(["--dsn", pg_dsn, "--schema", schema], expects)


def test_get_by_an_all_digit_correlation_prefix(server, make_client, pg_hook):
    """Correlation ids are hex: a prefix can be all digits and still names the call (not a row id)."""
    server.enqueue(Reply.recording(TEXT_REC))
    digits = "1234567890" + "ab" * 11
    make_client(pg_hook).complete(OPENAI, "hi", correlation_id=digits)
    assert pg_hook.flush(10)
    (row,) = pg_hook.store.get(digits[:10])
    assert row["correlation_id"] == digits
    assert [r["id"] for r in pg_hook.store.get(str(row["id"]))] == [row["id"]]
    assert pg_hook.store.get("9" * 40) == []


# -- failures never reach the stream -----------------------------------------------------------------


def test_unreachable_server(server, make_client, pg_dsn):
    hook = LogHook(dsn="postgresql://postgres@127.0.0.1:1/test")
    with pytest.warns(LogStoreWarning, match="connection"):
        expect = scenario_complete(server, make_client(hook))
        assert expect.responses[0].status == "ok"
        assert hook.flush(20)
    assert hook.stats.failed == 1 and hook.stats.errors == {"connection": 1}
    assert "127.0.0.1:1" in hook.stats.last_error
    hook.close()


def test_a_lost_connection_is_reported_then_reopened(server, make_client, pg_hook, schema):
    client = make_client(pg_hook)
    scenario_complete(server, client)
    assert pg_hook.flush(10) and pg_hook.stats.written == 1
    pid = pg_hook.store.conn.info.backend_pid
    assert query(schema, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
    with pytest.warns(LogStoreWarning, match="connection"):
        scenario_complete(server, client)
        assert pg_hook.flush(10)
    assert pg_hook.stats.failed == 1 and pg_hook.stats.errors == {"connection": 1}
    scenario_complete(server, client)
    assert pg_hook.flush(10)
    assert len(rows_of(pg_hook)) == 2 and pg_hook.stats.written == 2


def test_many_processes_share_one_schema(pg_dsn, schema, tmp_path):
    script = f"""
from llmrelay.logs import LogHook
from llmrelay.testing import ReplayServer, Reply, client_for
with ReplayServer() as server:
    for _ in range(5):
        server.enqueue(Reply.recording({TEXT_REC!r}))
    hook = LogHook(dsn={pg_dsn!r}, schema={schema!r})
    client = client_for(server, hooks=[hook], retry=0)
    for i in range(5):
        client.complete("openai:gpt-4o", "Hi", tags={{"worker": __import__("sys").argv[1]}})
# exit without close(): the rows are flushed at interpreter exit
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], stderr=subprocess.PIPE, text=True)
             for n in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    counts = query(schema, "SELECT tags->>'worker', count(*), count(DISTINCT correlation_id) FROM turns GROUP BY 1 ORDER BY 1")
    assert counts == [("0", 5, 5), ("1", 5, 5), ("2", 5, 5)]
