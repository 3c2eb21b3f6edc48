"""The embedded default store: one SQLite file (WAL mode, so readers never block the writer).

The writer thread owns the connection; `busy_timeout` bounds how long a
locked database may hold it (then the batch is reported and counted as
failed). The database file is created private to the user (mode 0600).
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from .migrations import BOOL_COLUMNS, COLUMNS, JSON_COLUMNS, apply_sqlite
from .query import Filters, combine, lookup
from .rows import sqlite_values

MARK = "?"

_INSERT = f"INSERT INTO turns ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def fts_query(text: str) -> str:
    """User words -> an FTS5 query matching rows that contain all of them (no FTS syntax errors)."""
    words = [w for w in text.split() if w]
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class SQLiteStore:
    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 1.0):
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.conn: sqlite3.Connection | None = None
        self.has_fts = False
        self.broken = False

    def describe(self) -> str:
        return self.path

    # -- lifecycle ------------------------------------------------------------------------
    def open(self, *, create: bool = True) -> SQLiteStore:
        if self.conn is not None:
            return self
        if self.path != ":memory:":
            if create:
                directory = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(directory, mode=0o700, exist_ok=True)
                if not os.path.exists(self.path):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            elif not os.path.exists(self.path):
                raise FileNotFoundError(f"no log database at {self.path}")
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if create:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                apply_sqlite(conn)
            self.has_fts = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'turns_fts'").fetchone() is not None
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return self

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> SQLiteStore:
        return self.open(create=False)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing (the writer thread) ----------------------------------------------------------
    def write(self, rows: list[dict[str, Any]], records: list[Any], scrubbers: list[Any]) -> None:
        conn = self.conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            # the full-text index follows by itself (triggers on turns, m005)
            conn.executemany(_INSERT, [sqlite_values(row) for row in rows])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reading (CLI, tests) -------------------------------------------------------------------
    def _query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        assert self.conn is not None
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def rows(self, where: str = "", params: tuple = (), order: str = "id", limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM turns" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_decode(r) for r in self._query(sql, params)]

    def recent(self, n: int = 20, filters: Filters | None = None) -> list[dict[str, Any]]:
        where, params = combine("", (), filters, MARK)
        return self.rows(where, params, order="id DESC", limit=n)

    def get(self, key: str) -> list[dict[str, Any]]:
        """A row by id, or every row of a call by correlation id (or a unique prefix of it)."""
        return lookup(key, lambda row_id: self.rows("id = ?", (row_id,)),
                      lambda prefix: self.rows("substr(correlation_id, 1, ?) = ?", (len(prefix), prefix)))

    def search(self, text: str, n: int = 20, filters: Filters | None = None) -> list[dict[str, Any]]:
        if self.has_fts:
            query = fts_query(text)
            if not query:
                return []
            return self.rows(*combine("id IN (SELECT rowid FROM turns_fts WHERE turns_fts MATCH ?)", (query,), filters, MARK),
                             "id DESC", n)
        like = f"%{text}%"
        return self.rows(*combine("text LIKE ? OR reasoning LIKE ? OR request_messages LIKE ?", (like, like, like),
                                  filters, MARK), "id DESC", n)

    def totals(self, by: str = "model", filters: Filters | None = None) -> list[dict[str, Any]]:
        where, params = combine("", (), filters, MARK)
        where = f" WHERE {where}" if where else ""
        key = {"model": "coalesce(model, '?')", "day": "date(started_at, 'unixepoch')"}[by]
        groups = self._query(
            f"SELECT {key} AS key, count(DISTINCT correlation_id) AS calls, count(*) AS requests, "
            "sum(coalesce(input_tokens, 0)) AS input_tokens, sum(coalesce(output_tokens, 0)) AS output_tokens, "
            "sum(cost_usd) AS cost_usd, sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced, "
            "sum(CASE WHEN status NOT IN ('ok', 'truncated') THEN 1 ELSE 0 END) AS failed "
            f"FROM turns{where} GROUP BY key ORDER BY key", params
        )
        ttfts: dict[Any, list[float]] = {}
        for key_value, ttft in self.conn.execute(  # type: ignore[union-attr]
            f"SELECT {key} AS key, ttft FROM turns WHERE ttft IS NOT NULL" + (f" AND {where[7:]}" if where else "")
            + " ORDER BY key, ttft", params
        ):
            ttfts.setdefault(key_value, []).append(ttft)
        for g in groups:
            values = ttfts.get(g["key"], [])
            g["ttft_p50"] = percentile(values, 0.50)
            g["ttft_p95"] = percentile(values, 0.95)
        return groups


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's `percentile_cont`)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name in JSON_COLUMNS:
        if row.get(name) is not None:
            row[name] = json.loads(row[name])
    for name in BOOL_COLUMNS:
        if row.get(name) is not None:
            row[name] = bool(row[name])
    return row
