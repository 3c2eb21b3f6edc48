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

from .embed import AUTO, Embedder, resolve_embedder
from .types import Fact
from .nputil import numpy_module as _numpy
from .vecindex import VectorIndex

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
    # The FTS index gets an indexed per-user key (`u` + hex of the user id, one token), so a text query
    # is restricted to the user inside the index (`ukey : ... AND (...)`), before any ranking;
    # pending exchanges, tasks, and the per-user version of searchable vectors.
    (2, [
        "DROP TRIGGER IF EXISTS facts_fts_ins", "DROP TRIGGER IF EXISTS facts_fts_del",
        "DROP TRIGGER IF EXISTS facts_fts_upd", "DROP TABLE IF EXISTS facts_fts",
        "CREATE VIRTUAL TABLE facts_fts USING fts5(text, ukey, user_id UNINDEXED, "
        "tokenize = 'porter unicode61 remove_diacritics 2')",
        "INSERT INTO facts_fts (rowid, text, ukey, user_id) SELECT id, text, 'u' || hex(user_id), user_id FROM facts",
        "CREATE TRIGGER facts_fts_ins AFTER INSERT ON facts BEGIN "
        "INSERT INTO facts_fts (rowid, text, ukey, user_id) VALUES (new.id, new.text, 'u' || hex(new.user_id), "
        "new.user_id); END",
        "CREATE TRIGGER facts_fts_del AFTER DELETE ON facts BEGIN DELETE FROM facts_fts WHERE rowid = old.id; END",
        "CREATE TRIGGER facts_fts_upd AFTER UPDATE OF text ON facts BEGIN "
        "UPDATE facts_fts SET text = new.text WHERE rowid = old.id; END",
        "CREATE TABLE IF NOT EXISTS user_state (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "user_text TEXT NOT NULL, reply TEXT NOT NULL, model TEXT, source TEXT, origin TEXT, created_at REAL NOT NULL, "
        "claimed_by TEXT, claimed_until REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS pending_user ON pending (user_id, id)",
        "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "text TEXT NOT NULL, due_at REAL NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending', "
        "done_at REAL, source TEXT)",
        "CREATE INDEX IF NOT EXISTS tasks_due ON tasks (user_id, status, due_at)",
    ]),
    (3, ["ALTER TABLE facts ADD COLUMN promoted_at_count INTEGER NOT NULL DEFAULT 0"]),  # access-based importance (curate)
]


def fts_query(phrases: list[list[str]], user_id: str | None = None) -> str:
    """An FTS5 MATCH string: each phrase double-quoted (quotes doubled), OR-ed, in the `text` column;
    with `user_id`, AND-ed with the user's key (see migration 2)."""
    parts = [" ".join(t.replace('"', '""') for t in p) for p in phrases if p]
    text = " OR ".join(f'"{p}"' for p in parts)
    if not text or user_id is None:
        return text
    return f'ukey : "u{user_id.encode().hex().upper()}" AND text : ({text})'



class SQLiteMemoryStore(SQLMemoryStore):
    """`MemoryStore` on SQLite. `path` is a file or ":memory:"; `embedder` enables hybrid search."""

    _tables = ("relations", "entities", "vectors", "facts", "facts_fts", "user_state", "pending", "tasks")

    def __init__(self, path: str = ":memory:", embedder: Embedder | None | str = AUTO, *,
                 min_similarity: float = 0.2, cache_bytes: int = 256 << 20):
        self.path = str(path)
        self.embedder = resolve_embedder(embedder)
        self._vindex = VectorIndex(self._unpack, max_bytes=cache_bytes)
        self.min_similarity = min_similarity
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:" and not self.path.startswith("file::memory:"):
            self._conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a commit survives a process crash (SIGKILL) without an fsync per commit
            # (only a power loss may lose the last ones); every search commits its access counts
            self._conn.execute("PRAGMA synchronous = NORMAL")
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
        match = fts_query(phrases, user_id)
        if not match:
            return []
        cols = ", ".join(f"f.{c.strip()}" for c in FACT_COLS.split(","))
        try:
            # ranked inside the index (the user's rows only, see fts_query), then joined: only the top
            # candidates are read from `facts` (twice `n`, so inactive ones rarely cost a result)
            rows = q(f"SELECT {cols}, m.rank FROM (SELECT rowid AS id, bm25(facts_fts, 1.0, 0.0) AS rank "
                     f"FROM facts_fts WHERE facts_fts MATCH ? ORDER BY rank LIMIT ?) m JOIN facts f ON f.id = m.id "
                     f"WHERE f.user_id = ? AND f.status = 'active' AND (f.expires_at IS NULL OR f.expires_at > ?) "
                     f"ORDER BY m.rank LIMIT ?", (match, 2 * n, user_id, now, n))
        except sqlite3.OperationalError as exc:  # never let a query string break a search
            log.debug("memory: FTS query %r failed: %s", match, exc)
            return []
        return [(self._fact(r), max(0.0, -float(r[-1]))) for r in rows]

    def _pack(self, vec: list[float]) -> bytes:
        return array("f", vec).tobytes()

    def _unpack(self, raw: bytes) -> Any:
        np = _numpy()
        if np is not None:
            return np.frombuffer(raw, dtype="<f4")
        out = array("f")
        out.frombytes(raw)
        return [x if math.isfinite(x) else 0.0 for x in out]

    @property
    def closed(self) -> bool:
        return self._conn is None

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
