"""Numbered schema migrations, the same for SQLite and PostgreSQL.

Each migration runs once per database, inside a transaction, and is recorded
in `_migrations (version, name, applied_at)`. Applying is idempotent and safe
when several processes start at once (SQLite: `BEGIN IMMEDIATE`; PostgreSQL:
a transaction-level advisory lock). A new migration is appended to
`MIGRATIONS` with the next number; released ones are never edited.

The `turns` table has one row per model request (a *turn*: every retry,
fallback attempt and tool round is one row); the rows of one logical call
share `correlation_id`. Timestamps are seconds since the epoch (UTC) in both
databases (`to_timestamp(started_at)` in PostgreSQL, `datetime(started_at,
'unixepoch')` in SQLite); JSON columns are TEXT in SQLite and JSONB in
PostgreSQL.

Full-text search: SQLite uses a contentless FTS5 table `turns_fts(rowid =
turns.id, request_text, response_text)` (skipped, with a LIKE fallback, if the
SQLite build lacks FTS5); PostgreSQL a GIN index over `SEARCH_VECTOR` (the
'simple' configuration: words are lower-cased, not stemmed, as in FTS5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

#: Column name -> (SQLite type, PostgreSQL type), in insert order (`id` excluded).
COLUMNS: dict[str, tuple[str, str]] = {
    "correlation_id": ("TEXT NOT NULL", "TEXT NOT NULL"),
    "turn": ("INTEGER", "INTEGER"),
    "started_at": ("REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    "ended_at": ("REAL", "DOUBLE PRECISION"),
    "provider": ("TEXT", "TEXT"),
    "requested": ("TEXT", "TEXT"),
    "requested_model": ("TEXT", "TEXT"),
    "model": ("TEXT", "TEXT"),
    "status": ("TEXT NOT NULL", "TEXT NOT NULL"),
    "finish_reason": ("TEXT", "TEXT"),
    "error_type": ("TEXT", "TEXT"),
    "error": ("TEXT", "TEXT"),
    "request_id": ("TEXT", "TEXT"),
    "response_id": ("TEXT", "TEXT"),
    "stream": ("INTEGER", "BOOLEAN"),
    "request_messages": ("TEXT", "JSONB"),
    "text": ("TEXT", "TEXT"),
    "reasoning": ("TEXT", "TEXT"),
    "refusal": ("TEXT", "TEXT"),
    "tool_calls": ("TEXT", "JSONB"),
    "tool_results": ("TEXT", "JSONB"),
    "input_tokens": ("INTEGER", "BIGINT"),
    "output_tokens": ("INTEGER", "BIGINT"),
    "cached_input_tokens": ("INTEGER", "BIGINT"),
    "cache_write_tokens": ("INTEGER", "BIGINT"),
    "reasoning_tokens": ("INTEGER", "BIGINT"),
    "usage_estimated": ("INTEGER", "BOOLEAN"),
    "cost_usd": ("REAL", "DOUBLE PRECISION"),
    "cost_reason": ("TEXT", "TEXT"),
    "ttft": ("REAL", "DOUBLE PRECISION"),
    "duration": ("REAL", "DOUBLE PRECISION"),
    "attempts": ("TEXT", "JSONB"),
    "tags": ("TEXT", "JSONB"),
    #: Structured output (`output=`): the validated object, as JSON (m003).
    "output": ("TEXT", "JSONB"),
}
#: Columns that arrived after m001: m001 creates the table without them, a later migration adds them.
_LATER = {"output": 3}
JSON_COLUMNS = frozenset(name for name, (_, pg) in COLUMNS.items() if pg == "JSONB")
BOOL_COLUMNS = frozenset(name for name, (_, pg) in COLUMNS.items() if pg == "BOOLEAN")

#: The PostgreSQL search expression (indexed by m002, used by `search`).
SEARCH_VECTOR = (
    "(to_tsvector('simple'::regconfig, coalesce(text, '') || ' ' || coalesce(reasoning, ''))"
    " || jsonb_to_tsvector('simple'::regconfig, coalesce(request_messages, '[]'::jsonb), '[\"string\"]'))"
)


def _create_turns(dialect: str) -> str:
    index = 0 if dialect == "sqlite" else 1
    pk = "id INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    cols = ",\n  ".join(f"{name} {types[index]}" for name, types in COLUMNS.items() if name not in _LATER)
    return f"CREATE TABLE IF NOT EXISTS turns (\n  {pk},\n  {cols}\n)"


_INDEXES = (
    "CREATE INDEX IF NOT EXISTS turns_correlation ON turns (correlation_id)",
    "CREATE INDEX IF NOT EXISTS turns_started ON turns (started_at)",
    "CREATE INDEX IF NOT EXISTS turns_model ON turns (model)",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]
    #: SQLite errors whose message contains this are tolerated (feature missing in this build).
    optional: str | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "m001_initial", (_create_turns("sqlite"), *_INDEXES), (_create_turns("postgres"), *_INDEXES)),
    Migration(
        2,
        "m002_search",
        ("CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts USING fts5("
         "request_text, response_text, content='', tokenize='unicode61')",),
        (f"CREATE INDEX IF NOT EXISTS turns_search ON turns USING GIN ({SEARCH_VECTOR})",),
        optional="fts5",
    ),
    Migration(3, "m003_output", ("ALTER TABLE turns ADD COLUMN output TEXT",),
              ("ALTER TABLE turns ADD COLUMN IF NOT EXISTS output JSONB",)),
)

_MIGRATIONS_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)",
}


def apply_sqlite(conn: Any) -> list[str]:
    """Bring a SQLite database (autocommit connection) up to date; returns the names applied now."""
    applied_now: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_MIGRATIONS_TABLE["sqlite"])
        done = {row[0] for row in conn.execute("SELECT version FROM _migrations")}
        for m in MIGRATIONS:
            if m.version in done:
                continue
            for statement in m.sqlite:
                try:
                    conn.execute(statement)
                except Exception as exc:
                    if m.optional is None or m.optional not in str(exc).lower():
                        raise
            conn.execute("INSERT INTO _migrations (version, name, applied_at) VALUES (?, ?, ?)", (m.version, m.name, time.time()))
            applied_now.append(m.name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied_now


def apply_postgres(conn: Any, schema: str) -> list[str]:
    """Bring a PostgreSQL schema up to date (creating it); returns the names applied now."""
    from psycopg import sql

    applied_now: list[str] = []
    with conn.transaction():
        with conn.cursor() as cur:
            # one migrator at a time per schema, across processes and machines
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"llmrelay.logs:{schema}",))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            cur.execute(_MIGRATIONS_TABLE["postgres"])
            cur.execute("SELECT version FROM _migrations")
            done = {row[0] for row in cur.fetchall()}
            for m in MIGRATIONS:
                if m.version in done:
                    continue
                for statement in m.postgres:
                    cur.execute(statement)
                cur.execute("INSERT INTO _migrations (version, name, applied_at) VALUES (%s, %s, %s)", (m.version, m.name, time.time()))
                applied_now.append(m.name)
    return applied_now
