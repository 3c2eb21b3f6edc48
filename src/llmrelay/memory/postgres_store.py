"""The memory store for many processes: PostgreSQL through psycopg 3 (extra `postgres`).

Same tables, behaviour and ranking as `SQLiteMemoryStore` (the search logic is
shared: see `SQLMemoryStore.search`), in its own schema (default
`llmrelay_memory`, created if missing):

- text: a generated `tsvector` column (`to_tsvector('english', text)`, stemmed,
  English stopwords dropped) with a GIN index on (user_id, tsv) (extension
  `btree_gin`, created if missing and allowed: the query reads only the
  user's matching rows); GIN indexes without `fastupdate` (no pending list
  to scan on every search), queried with
  `websearch_to_tsquery` over the query's words OR-ed (that function never
  raises on any input; the words are letters and digits only anyway), ranked
  by `ts_rank` (cheaper than `ts_rank_cd`, which mattered at 10k facts of one user);
- graph: the `entities` and `relations` tables (names unique per user, case-folded);
- vectors: `float8[]` per fact, cosine computed in Python over the user's
  vectors. pgvector is not required nor used (an exact scan per user is fine
  for the thousands of facts one user has).

Every statement filters on `user_id` (except `curate`, a maintenance pass over
all users unless given one). Migrations are numbered and recorded in
`_migrations`, applied under a transaction-scoped advisory lock so processes
starting together do not race. One connection per store, guarded by a lock
(operations are serialized within a process; processes run concurrently and
rely on PostgreSQL's row locks and unique constraints); a broken connection is
reopened on the next operation.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Sequence

from .embed import AUTO, Embedder, resolve_embedder
from .nputil import numpy_module as _numpy
from .vecindex import VectorIndex
from .sqlbase import FACT_COLS, SQLMemoryStore
from .types import Fact

log = logging.getLogger("llmrelay.memory")

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        "CREATE TABLE IF NOT EXISTS facts (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, text TEXT NOT NULL, "
        "importance DOUBLE PRECISION NOT NULL DEFAULT 0.5, created_at DOUBLE PRECISION NOT NULL, "
        "updated_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, status TEXT NOT NULL DEFAULT 'active', "
        "access_count INTEGER NOT NULL DEFAULT 0, last_accessed_at DOUBLE PRECISION, source TEXT, "
        "superseded_by BIGINT, tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED)",
        "CREATE INDEX IF NOT EXISTS facts_user_status ON facts (user_id, status)",
        "CREATE INDEX IF NOT EXISTS facts_tsv ON facts USING GIN (tsv)",
        "CREATE TABLE IF NOT EXISTS entities (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, "
        "name_key TEXT NOT NULL, type TEXT NOT NULL DEFAULT 'thing', created_at DOUBLE PRECISION NOT NULL, "
        "UNIQUE (user_id, name_key))",
        "CREATE TABLE IF NOT EXISTS relations (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, subject TEXT NOT NULL, "
        "subject_key TEXT NOT NULL, predicate TEXT NOT NULL, object TEXT NOT NULL, object_key TEXT NOT NULL, "
        "fact_id BIGINT REFERENCES facts (id) ON DELETE SET NULL, created_at DOUBLE PRECISION NOT NULL, "
        "UNIQUE (user_id, subject_key, predicate, object_key))",
        "CREATE INDEX IF NOT EXISTS relations_object ON relations (user_id, object_key)",
        "CREATE TABLE IF NOT EXISTS vectors (fact_id BIGINT PRIMARY KEY REFERENCES facts (id) ON DELETE CASCADE, "
        "user_id TEXT NOT NULL, model TEXT NOT NULL, dims INTEGER NOT NULL, vector DOUBLE PRECISION[] NOT NULL)",
        "CREATE INDEX IF NOT EXISTS vectors_user ON vectors (user_id)",
    ]),
    (2, [
        "CREATE TABLE IF NOT EXISTS user_state (user_id TEXT PRIMARY KEY, version BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS pending (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, user_text TEXT NOT NULL, "
        "reply TEXT NOT NULL, model TEXT, source TEXT, origin TEXT, created_at DOUBLE PRECISION NOT NULL, "
        "claimed_by TEXT, claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS pending_user ON pending (user_id, id)",
        "CREATE TABLE IF NOT EXISTS tasks (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, text TEXT NOT NULL, "
        "due_at DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL DEFAULT 'pending', "
        "done_at DOUBLE PRECISION, source TEXT)",
        "CREATE INDEX IF NOT EXISTS tasks_due ON tasks (user_id, status, due_at)",
        # vectors as float32 bytes: read back in one buffer copy instead of parsing float8[] arrays
        "ALTER TABLE vectors ADD COLUMN IF NOT EXISTS vec BYTEA",
        "ALTER TABLE vectors ALTER COLUMN vector DROP NOT NULL",
    ]),
    (3, ["ALTER TABLE facts ADD COLUMN IF NOT EXISTS promoted_at_count INTEGER NOT NULL DEFAULT 0"]),  # access-based importance (curate)
    # GIN without the pending list: with fastupdate every text search also scans all entries inserted since
    # the last vacuum (4.3 ms instead of 0.2 ms after 10k facts of one user); facts are written by the
    # background learner, where the slower insert does not matter. The list already there is merged now.
    (4, ["ALTER INDEX facts_tsv SET (fastupdate = off)", "SELECT gin_clean_pending_list('facts_tsv'::regclass)",
         "ALTER INDEX IF EXISTS facts_user_tsv SET (fastupdate = off)",
         "SELECT gin_clean_pending_list(to_regclass('facts_user_tsv')) WHERE to_regclass('facts_user_tsv') IS NOT NULL"]),
]


def websearch_query(phrases: list[list[str]]) -> str:
    """A `websearch_to_tsquery` string: each phrase double-quoted, OR-ed."""
    parts = [" ".join(t.replace('"', " ") for t in p) for p in phrases if p]
    return " or ".join(f'"{p}"' for p in parts)


class PostgresMemoryStore(SQLMemoryStore):
    """`MemoryStore` on PostgreSQL. `dsn` is a libpq connection string or URL."""

    _vec_column = "vec"
    _vec_select = "v.vec, v.vector"

    def __init__(self, dsn: str, schema: str = "llmrelay_memory", embedder: Embedder | None | str = AUTO, *,
                 min_similarity: float = 0.2, connect_timeout: float = 10, cache_bytes: int = 256 << 20):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("PostgresMemoryStore needs psycopg: pip install 'llmrelay[postgres]'") from exc
        self.dsn = dsn
        self.schema = schema
        self.embedder = resolve_embedder(embedder)
        self._vindex = VectorIndex(self._unpack, max_bytes=cache_bytes)
        self.min_similarity = min_similarity
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._conn: Any = None
        self._closed = False
        self._migrate()

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=int(self.connect_timeout))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def _connection(self) -> Any:
        if self._closed:
            raise RuntimeError("the memory store is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001
                    pass
            self._conn = self._connect()
        return self._conn

    def _migrate(self) -> None:
        from psycopg import sql

        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("llmrelay_memory:" + self.schema,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute("CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, "
                             "applied_at DOUBLE PRECISION NOT NULL)")
                done = {r[0] for r in conn.execute("SELECT version FROM _migrations").fetchall()}
                for version, statements in MIGRATIONS:
                    if version not in done:
                        for stmt in statements:
                            conn.execute(stmt)
                        conn.execute("INSERT INTO _migrations (version, applied_at) VALUES (%s, %s)",
                                     (version, time.time()))
                self._user_text_index(conn)

    def _user_text_index(self, conn: Any) -> None:
        """A GIN index on (user_id, tsv) so a text query reads only the user's matching rows (0.3 ms instead
        of 4-7 ms at 10k facts of one user). Needs the `btree_gin` extension (contrib, shipped with
        PostgreSQL); where it cannot be created, the per-user btree index and the GIN on `tsv` serve."""
        import psycopg

        try:
            with conn.transaction():  # a savepoint: a refusal leaves the migration transaction usable
                if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'btree_gin'").fetchone():
                    conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gin SCHEMA public")
                conn.execute("CREATE INDEX IF NOT EXISTS facts_user_tsv ON facts USING GIN (user_id, tsv) "
                             "WITH (fastupdate = off)")
        except psycopg.Error as exc:
            log.info("memory: no (user_id, tsv) index, btree_gin is not available: %s", exc)

    def _tx(self) -> Any:
        return self._statements(atomic=True)

    def _reads(self) -> Any:
        """A search's statements in autocommit, without BEGIN and COMMIT (2 of its ~5 round trips): at
        READ COMMITTED every statement takes its own snapshot anyway, and the one write (the access
        counts) is a single UPDATE."""
        return self._statements(atomic=False)

    @contextmanager
    def _statements(self, atomic: bool) -> Iterator[tuple[Callable[..., list[Any]], Callable[..., int]]]:
        with self._lock:
            conn = self._connection()
            with conn.transaction() if atomic else nullcontext(), conn.cursor() as cur:

                def q(query: str, params: Sequence[Any] = ()) -> list[Any]:
                    cur.execute(query.replace("?", "%s"), tuple(params))
                    return cur.fetchall() if cur.description is not None else []

                def run(query: str, params: Sequence[Any] = ()) -> int:
                    cur.execute(query.replace("?", "%s"), tuple(params))
                    return cur.rowcount

                yield q, run

    def _text_search(self, q: Any, user_id: str, phrases: list[list[str]], now: float,
                     n: int) -> list[tuple[Fact, float]]:
        text = websearch_query(phrases)
        if not text:
            return []
        cols = ", ".join(f"f.{c.strip()}" for c in FACT_COLS.split(","))
        # no savepoint around it (two round trips per search): websearch_to_tsquery never raises, and the
        # phrases are letters and digits only (`query_terms`); test_any_text_query_never_raises holds it
        rows = q(f"SELECT {cols}, ts_rank(f.tsv, query) AS rank "
                 f"FROM facts f, websearch_to_tsquery('english', ?) query "
                 f"WHERE f.user_id = ? AND f.tsv @@ query AND f.status = 'active' "
                 f"AND (f.expires_at IS NULL OR f.expires_at > ?) ORDER BY rank DESC, f.id LIMIT ?",
                 (text, user_id, now, n))
        return [(self._fact(r), max(0.0, float(r[-1]))) for r in rows]

    def _pack(self, vec: list[float]) -> bytes:
        return array("f", [float(x) for x in vec]).tobytes()

    def _unpack(self, raw: Any) -> Any:
        if isinstance(raw, (list, tuple)):  # a float8[] row written before migration 2
            return [float(x) for x in raw]
        np = _numpy()
        if np is not None:
            return np.frombuffer(raw, dtype="<f4")
        out = array("f")
        out.frombytes(bytes(raw))
        return [x if math.isfinite(x) else 0.0 for x in out]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresMemoryStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["PostgresMemoryStore", "websearch_query"]
