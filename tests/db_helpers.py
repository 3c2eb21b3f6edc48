"""The real local PostgreSQL (and SQLite beside it) for the store tests: one place that says whether
PostgreSQL can be used, and one `backend` fixture that runs a memory-store test on both.

PostgreSQL is `LLMRELAY_TEST_POSTGRES_DSN` (default `postgresql://postgres@127.0.0.1:5432/test`), each
test in a fresh random schema dropped at the end. A test that needs it is skipped when PostgreSQL (or
psycopg) is absent, except under `CI=true`, where that is a failure (`require_postgres`).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from typing import Any, Iterator

import pytest

from llmrelay.logs.redact import redact_dsn
from llmrelay.memory.embed import Embedder
from llmrelay.memory.sqlite_store import SQLiteMemoryStore

IN_CI = os.environ.get("CI") == "true"
DSN = os.environ.get("LLMRELAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LLMRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def sqlite_log_rows(path: Any) -> list[dict[str, Any]]:
    """Every row of a SQLite log store (`turns`), in the order written."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM turns ORDER BY id")]
    finally:
        conn.close()


def pg_problem() -> str | None:
    """Why PostgreSQL cannot be used here (None: it can)."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc}); pip install 'llmrelay[postgres]'"
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL is not reachable at {redact_dsn(DSN)}: {exc}"
    return None


def require_postgres(what: str) -> None:
    """Skip the test when PostgreSQL is absent; fail it under CI=true, where `what` must run."""
    problem = pg_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true: {what} must run, but {problem}")
        pytest.skip(problem)


def redis_problem() -> str | None:
    """Why Redis cannot be used here (None: it can)."""
    try:
        import redis
    except ImportError as exc:
        return f"redis-py is not installed ({exc}); pip install 'llmrelay[redis]'"
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis is not reachable at {REDIS_URL}: {exc}"
    return None


def redis_prefix(what: str) -> Iterator[tuple[Any, str]]:
    """For a fixture to `yield from`: (a sync Redis client, a key prefix of this test's own), the prefix's
    keys deleted afterwards. Skips when Redis is absent; fails under CI=true, where `what` must run."""
    problem = redis_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true: {what} must run, but {problem}")
        pytest.skip(problem)
    import redis

    r = redis.Redis.from_url(REDIS_URL, socket_timeout=5, decode_responses=True)
    prefix = f"llmrelay-test:{uuid.uuid4().hex}:"
    yield r, prefix
    for k in list(r.scan_iter(match=prefix + "*", count=500)):
        r.delete(k)
    r.close()


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class Backend:
    """Builds memory stores of one kind (a SQLite file or a fresh Postgres schema), reads their tables
    directly, and cleans up."""

    def __init__(self, kind: str, tmp_path: Any):
        self.kind = kind
        self.schema = f"llmrelay_mem_test_{uuid.uuid4().hex[:12]}"
        self.path = str(tmp_path / "memory.db")
        self.stores: list = []

    def make(self, embedder: Embedder | None = None, **kw: Any):
        """A store on this backend, keyword search only unless an `embedder` is given."""
        return self._build(embedder=embedder, **kw)

    def make_with_default_embedder(self, **kw: Any):
        """A store with no `embedder=` argument at all: the store's own default."""
        return self._build(**kw)

    def _build(self, **kw: Any):
        if self.kind == "sqlite":
            store = SQLiteMemoryStore(self.path, **kw)
        else:
            from llmrelay.memory.postgres_store import PostgresMemoryStore

            store = PostgresMemoryStore(DSN, schema=self.schema, **kw)
        self.stores.append(store)
        return store

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        if self.kind == "sqlite":
            import sqlite3

            with sqlite3.connect(self.path) as conn:
                return conn.execute(query, params).fetchall()
        import psycopg
        from psycopg import sql

        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            cur = conn.execute(query.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def user_tables(self) -> list[str]:
        if self.kind == "sqlite":
            names = [r[0] for r in self.sql("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return sorted(n for n in names if any(c[1] == "user_id" for c in self.sql(f"PRAGMA table_info({n})")))
        return sorted(r[0] for r in self.sql(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = ? AND column_name = 'user_id'",
            (self.schema,)))

    def counts(self, user_id: str) -> dict[str, int]:
        return {t: self.sql(f"SELECT COUNT(*) FROM {t} WHERE user_id = ?", (user_id,))[0][0] for t in self.user_tables()}

    def cleanup(self) -> None:
        for s in self.stores:
            s.close()
        if self.kind == "postgres":
            drop_schema(self.schema)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """A `Backend` of each kind: every test that uses it runs on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        require_postgres("the PostgreSQL memory tests")
    b = Backend(request.param, tmp_path)
    yield b
    b.cleanup()
