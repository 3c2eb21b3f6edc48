"""The shared store: PostgreSQL through psycopg 3 (`pip install 'llmrelay[postgres]'`).

Many processes and machines write to one database; each writer thread holds
one connection. Tables live in their own schema (default `llmrelay`; the
`schema=` option, or `?schema=` is *not* parsed from the DSN), created by the
migrations with the same columns as SQLite (JSONB for JSON, BOOLEAN for
flags). Search uses a GIN-indexed `tsvector` ('simple' configuration) over the
response text, reasoning and request message strings.

`connect_timeout` and `statement_timeout` bound how long a slow server can
hold the writer thread; a broken connection is reopened for the next batch.
"""

from __future__ import annotations

import re
from typing import Any

from .query import Filters, combine, lookup
from .migrations import COLUMNS, JSON_COLUMNS, SEARCH_VECTOR, TIMESTAMP_COLUMNS, apply_postgres
from .redact import redact_dsn

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


MARK = "%s"


def _placeholder(name: str) -> str:
    return "%s::jsonb" if name in JSON_COLUMNS else "%s::timestamptz" if name in TIMESTAMP_COLUMNS else "%s"


_INSERT = f"INSERT INTO turns ({', '.join(COLUMNS)}) VALUES ({', '.join(_placeholder(c) for c in COLUMNS)})"


def is_dsn(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


class PostgresStore:
    dialect = "postgres"

    def __init__(self, dsn: str, *, schema: str = "llmrelay", connect_timeout: float = 5.0,
                 statement_timeout: float = 10.0):
        if not _SCHEMA.match(schema):
            raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.conn: Any = None
        self.broken = False

    def describe(self) -> str:
        return f"{redact_dsn(self.dsn)} (schema {self.schema})"

    # -- lifecycle ------------------------------------------------------------------------
    def open(self, *, create: bool = True) -> PostgresStore:
        if self.conn is not None and not self.conn.closed:
            return self
        try:
            import psycopg
        except ImportError as exc:
            raise ImportError("logging to PostgreSQL needs psycopg: pip install 'llmrelay[postgres]'") from exc

        conn = psycopg.connect(
            self.dsn,
            connect_timeout=max(1, int(self.connect_timeout)),
            options=f"-c statement_timeout={int(self.statement_timeout * 1000)}",
            application_name="llmrelay-logs",
        )
        try:
            if create:
                apply_postgres(conn, self.schema)
            from psycopg import sql

            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.broken = False
        return self

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def __enter__(self) -> PostgresStore:
        return self.open(create=False)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def drop_schema(self) -> None:
        """Remove the schema and everything in it (tests)."""
        from psycopg import sql

        assert self.conn is not None
        self.conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        self.conn.commit()

    # -- writing (the writer thread) ----------------------------------------------------------
    def write(self, rows: list[dict[str, Any]], records: list[Any], scrubbers: list[Any]) -> None:
        import psycopg

        conn = self.conn
        try:
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.executemany(_INSERT, [tuple(row[c] for c in COLUMNS) for row in rows])
        except psycopg.Error as exc:
            if conn.closed or isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                self.broken = True
            raise

    # -- reading (CLI, tests) -------------------------------------------------------------------
    def _query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            names = [d.name for d in cur.description]
            out = [dict(zip(names, row)) for row in cur.fetchall()]
        self.conn.rollback()  # end the read transaction
        return out

    def rows(self, where: str = "", params: tuple = (), order: str = "id", limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM turns" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, params)

    def recent(self, n: int = 20, filters: Filters | None = None) -> list[dict[str, Any]]:
        where, params = combine("", (), filters, MARK)
        return self.rows(where, params, order="id DESC", limit=n)

    def get(self, key: str) -> list[dict[str, Any]]:
        return lookup(key, lambda row_id: self.rows("id = %s", (row_id,)),
                      lambda prefix: self.rows("left(correlation_id, %s) = %s", (len(prefix), prefix)))

    def search(self, text: str, n: int = 20, filters: Filters | None = None) -> list[dict[str, Any]]:
        if not text.strip():
            return []
        return self.rows(*combine(f"{SEARCH_VECTOR} @@ plainto_tsquery('simple'::regconfig, %s)", (text,), filters, MARK),
                         "id DESC", n)

    def totals(self, by: str = "model", filters: Filters | None = None) -> list[dict[str, Any]]:
        where, params = combine("", (), filters, MARK)
        where = f" WHERE {where}" if where else ""
        key = {"model": "coalesce(model, '?')",
               "day": "to_char(to_timestamp(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}[by]
        groups = self._query(
            f"SELECT {key} AS key, count(DISTINCT correlation_id) AS calls, count(*) AS requests, "
            "sum(coalesce(input_tokens, 0)) AS input_tokens, sum(coalesce(output_tokens, 0)) AS output_tokens, "
            "sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced, "
            "count(*) FILTER (WHERE status NOT IN ('ok', 'truncated')) AS failed, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft) AS ttft_p50, "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft) AS ttft_p95 "
            f"FROM turns{where} GROUP BY 1 ORDER BY 1", params
        )
        for g in groups:  # bigint sums arrive as Decimal
            for name in ("input_tokens", "output_tokens"):
                g[name] = int(g[name]) if g[name] is not None else None
        return groups
