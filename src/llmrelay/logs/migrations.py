"""Numbered schema migrations, the same for SQLite and PostgreSQL.

Each migration runs once per database, inside a transaction, and is recorded
in `_migrations (version, name, applied_at)`. Applying is idempotent and safe
when several processes start at once (SQLite: `BEGIN IMMEDIATE`; PostgreSQL:
a transaction-level advisory lock). A new migration is appended to
`MIGRATIONS` with the next number; released ones are never edited.

The `turns` table has one row per model request (a *turn*: every retry,
fallback attempt and tool round is one row); the rows of one logical call
share `correlation_id`, and the calls of one conversation `conversation_id`
(the caller's, m004). `started_at` / `ended_at` are seconds since the epoch
(UTC) in both databases; since m004, `started_at_iso` / `ended_at_iso` hold the
same instants as ISO-8601 UTC (TEXT `2026-12-06T17:05:01.123456+00:00` in
SQLite, TIMESTAMPTZ in PostgreSQL) on rows written from then on (older rows are
never rewritten: `datetime(started_at, 'unixepoch')` reads them). JSON columns
are TEXT in SQLite and JSONB in PostgreSQL.

Full-text search: SQLite uses an FTS5 table `turns_fts` with the turns table as
its content (`content="turns"`: columns request_messages, text, reasoning,
refusal), kept in step by triggers (m005, which replaced m002's contentless
table and indexed the existing rows), so plain SQL (`... WHERE turns_fts MATCH
'pelican'`) and Datasette's search box both use it; skipped, with a LIKE
fallback, if the SQLite build lacks FTS5. PostgreSQL has a GIN index over
`SEARCH_VECTOR` (the 'simple' configuration: words are lower-cased, not
stemmed, as in FTS5).
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
    #: m004: the caller's conversation id, the request parameters (JSON: temperature, max_tokens...,
    #: tool_choice, options, extra_body), the base URL without credentials, ISO-8601 UTC times beside
    #: the epoch floats (TEXT in SQLite, TIMESTAMPTZ in PostgreSQL), time to first visible text.
    "conversation_id": ("TEXT", "TEXT"),
    "params": ("TEXT", "JSONB"),
    "base_url": ("TEXT", "TEXT"),
    "started_at_iso": ("TEXT", "TIMESTAMPTZ"),
    "ended_at_iso": ("TEXT", "TIMESTAMPTZ"),
    "time_to_first_text": ("REAL", "DOUBLE PRECISION"),
}
#: Columns that arrived after m001: m001 creates the table without them, a later migration adds them.
_LATER = {"output": 3, "conversation_id": 4, "params": 4, "base_url": 4, "started_at_iso": 4, "ended_at_iso": 4,
          "time_to_first_text": 4}
JSON_COLUMNS = frozenset(name for name, (_, pg) in COLUMNS.items() if pg == "JSONB")
TIMESTAMP_COLUMNS = frozenset(name for name, (_, pg) in COLUMNS.items() if pg == "TIMESTAMPTZ")
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
    Migration(
        4,
        "m004_conversation",
        (*(f"ALTER TABLE turns ADD COLUMN {c} {COLUMNS[c][0]}" for c, v in _LATER.items() if v == 4),
         "CREATE INDEX IF NOT EXISTS turns_conversation ON turns (conversation_id)"),
        (*(f"ALTER TABLE turns ADD COLUMN IF NOT EXISTS {c} {COLUMNS[c][1]}" for c, v in _LATER.items() if v == 4),
         "CREATE INDEX IF NOT EXISTS turns_conversation ON turns (conversation_id)"),
    ),
    Migration(
        5,
        "m005_search_content",
        # An FTS5 table over the turns table's own columns (external content), kept in step by
        # triggers, so `SELECT ... WHERE turns_fts MATCH ...` and Datasette's search box (it finds
        # the table by content="turns") both work; the old contentless index goes, the new one is
        # built from the rows (read, never rewritten). PostgreSQL's index (m002) already searches.
        ("DROP TABLE IF EXISTS turns_fts",
         'CREATE VIRTUAL TABLE turns_fts USING fts5(request_messages, text, reasoning, refusal, '
         'content="turns", content_rowid="id", tokenize="unicode61")',
         "CREATE TRIGGER IF NOT EXISTS turns_fts_insert AFTER INSERT ON turns BEGIN "
         "INSERT INTO turns_fts (rowid, request_messages, text, reasoning, refusal) "
         "VALUES (new.id, new.request_messages, new.text, new.reasoning, new.refusal); END",
         "CREATE TRIGGER IF NOT EXISTS turns_fts_delete AFTER DELETE ON turns BEGIN "
         "INSERT INTO turns_fts (turns_fts, rowid, request_messages, text, reasoning, refusal) "
         "VALUES ('delete', old.id, old.request_messages, old.text, old.reasoning, old.refusal); END",
         "CREATE TRIGGER IF NOT EXISTS turns_fts_update AFTER UPDATE ON turns BEGIN "
         "INSERT INTO turns_fts (turns_fts, rowid, request_messages, text, reasoning, refusal) "
         "VALUES ('delete', old.id, old.request_messages, old.text, old.reasoning, old.refusal); "
         "INSERT INTO turns_fts (rowid, request_messages, text, reasoning, refusal) "
         "VALUES (new.id, new.request_messages, new.text, new.reasoning, new.refusal); END",
         "INSERT INTO turns_fts (turns_fts) VALUES ('rebuild')"),
        (),
        optional="fts5",
    ),
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
                    break  # the feature is missing from this build: skip the rest of the migration
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
