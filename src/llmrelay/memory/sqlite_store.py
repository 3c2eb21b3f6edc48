"""The embedded memory store: one SQLite file (or ":memory:"), no dependency.

Tables (numbered, idempotent migrations recorded in `_migrations`): `facts`
(text, importance, timestamps, expiry, status, access counts, source,
superseded_by), `facts_fts` (an FTS5 index of fact texts kept in sync by
triggers), `entities` (unique per user and case-folded name), `relations`
(subject -predicate-> object, optionally tied to the fact it came from) and
`vectors` (one float32 blob per fact, when an embedder is set). Every row has
`user_id` and every statement filters on it.

Concurrency: one connection, every operation under one lock (writes are
serialized; so are reads, which on SQLite are fast). A file database is in WAL
mode with a busy timeout, so a few processes can share it; for many processes
use `PostgresMemoryStore`.

The search logic (ranking, tiers, graph expansion, hybrid fusion) lives in
`SQLMemoryStore` and is shared with Postgres; a backend supplies SQL execution,
a full-text query and the vector encoding. Ranking is documented on
`SQLMemoryStore.search`.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from array import array
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from .embed import Embedder
from .types import Fact

from .sqlbase import FACT_COLS, TIER_LIMITS, SQLMemoryStore, blend, log, query_terms, rrf  # noqa: F401

# -- SQLite ------------------------------------------------------------------------
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        "CREATE TABLE IF NOT EXISTS facts (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "text TEXT NOT NULL, importance REAL NOT NULL DEFAULT 0.5, created_at REAL NOT NULL, "
        "updated_at REAL NOT NULL, expires_at REAL, status TEXT NOT NULL DEFAULT 'active', "
        "access_count INTEGER NOT NULL DEFAULT 0, last_accessed_at REAL, source TEXT, superseded_by INTEGER)",
        "CREATE INDEX IF NOT EXISTS facts_user_status ON facts (user_id, status)",
        "CREATE VIRTUAL TABLE IF NOT EXISTS facts_fts USING fts5(text, user_id UNINDEXED, "
        "tokenize = 'porter unicode61 remove_diacritics 2')",
        "CREATE TRIGGER IF NOT EXISTS facts_fts_ins AFTER INSERT ON facts BEGIN "
        "INSERT INTO facts_fts (rowid, text, user_id) VALUES (new.id, new.text, new.user_id); END",
        "CREATE TRIGGER IF NOT EXISTS facts_fts_del AFTER DELETE ON facts BEGIN "
        "DELETE FROM facts_fts WHERE rowid = old.id; END",
        "CREATE TRIGGER IF NOT EXISTS facts_fts_upd AFTER UPDATE OF text ON facts BEGIN "
        "UPDATE facts_fts SET text = new.text WHERE rowid = old.id; END",
        "CREATE TABLE IF NOT EXISTS entities (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "name TEXT NOT NULL, name_key TEXT NOT NULL, type TEXT NOT NULL DEFAULT 'thing', created_at REAL NOT NULL, "
        "UNIQUE (user_id, name_key))",
        "CREATE TABLE IF NOT EXISTS relations (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "subject TEXT NOT NULL, subject_key TEXT NOT NULL, predicate TEXT NOT NULL, object TEXT NOT NULL, "
        "object_key TEXT NOT NULL, fact_id INTEGER REFERENCES facts (id) ON DELETE SET NULL, "
        "created_at REAL NOT NULL, UNIQUE (user_id, subject_key, predicate, object_key))",
        "CREATE INDEX IF NOT EXISTS relations_object ON relations (user_id, object_key)",
        "CREATE TABLE IF NOT EXISTS vectors (fact_id INTEGER PRIMARY KEY REFERENCES facts (id) ON DELETE CASCADE, "
        "user_id TEXT NOT NULL, model TEXT NOT NULL, dims INTEGER NOT NULL, vector BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS vectors_user ON vectors (user_id)",
    ]),
]


def fts_query(phrases: list[list[str]]) -> str:
    """An FTS5 MATCH string: each phrase double-quoted (quotes doubled), OR-ed."""
    parts = [" ".join(t.replace('"', '""') for t in p) for p in phrases if p]
    return " OR ".join(f'"{p}"' for p in parts)


class SQLiteMemoryStore(SQLMemoryStore):
    """`MemoryStore` on SQLite. `path` is a file or ":memory:"; `embedder` enables hybrid search."""

    _tables = ("relations", "entities", "vectors", "facts", "facts_fts")

    def __init__(self, path: str = ":memory:", embedder: Embedder | None = None, *, min_similarity: float = 0.2):
        self.path = str(path)
        self.embedder = embedder
        self.min_similarity = min_similarity
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:" and not self.path.startswith("file::memory:"):
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._tx() as (q, _run):
            q("CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            done = {r[0] for r in q("SELECT version FROM _migrations")}
            for version, statements in MIGRATIONS:
                if version not in done:
                    for stmt in statements:
                        q(stmt)
                    q("INSERT INTO _migrations (version, applied_at) VALUES (?, ?)", (version, time.time()))

    @contextmanager
    def _tx(self) -> Iterator[tuple[Callable[..., list[Any]], Callable[..., int]]]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("the memory store is closed")

            def q(sql: str, params: Sequence[Any] = ()) -> list[Any]:
                return conn.execute(sql, tuple(params)).fetchall()

            def run(sql: str, params: Sequence[Any] = ()) -> int:
                return conn.execute(sql, tuple(params)).rowcount

            conn.execute("BEGIN IMMEDIATE")
            try:
                yield q, run
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _text_search(self, q: Any, user_id: str, phrases: list[list[str]], now: float,
                     n: int) -> list[tuple[Fact, float]]:
        match = fts_query(phrases)
        if not match:
            return []
        cols = ", ".join(f"f.{c.strip()}" for c in FACT_COLS.split(","))
        try:
            rows = q(f"SELECT {cols}, bm25(facts_fts) AS rank FROM facts_fts JOIN facts f ON f.id = facts_fts.rowid "
                     f"WHERE facts_fts MATCH ? AND facts_fts.user_id = ? AND f.user_id = ? AND f.status = 'active' "
                     f"AND (f.expires_at IS NULL OR f.expires_at > ?) ORDER BY rank LIMIT ?",
                     (match, user_id, user_id, now, n))
        except sqlite3.OperationalError as exc:  # never let a query string break a search
            log.debug("memory: FTS query %r failed: %s", match, exc)
            return []
        return [(self._fact(r), max(0.0, -float(r[-1]))) for r in rows]

    def _pack(self, vec: list[float]) -> bytes:
        return array("f", vec).tobytes()

    def _unpack(self, raw: bytes) -> list[float]:
        out = array("f")
        out.frombytes(raw)
        return [x if math.isfinite(x) else 0.0 for x in out]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteMemoryStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["SQLMemoryStore", "SQLiteMemoryStore", "TIER_LIMITS", "query_terms", "fts_query", "blend", "rrf"]
