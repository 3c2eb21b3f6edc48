"""`llmrelay.logs`: a row for every model request, in SQLite (default) or PostgreSQL.

    client = llmrelay.Client(log=True)                    # SQLite in the user data dir
    client = llmrelay.Client(log="calls.db")              # a SQLite file of your choice
    client = llmrelay.Client(log="postgresql://host/db")  # shared by many processes
    # or LLMRELAY_LOG=1 | /path/to/logs.db | postgresql://… in the environment

    hook = llmrelay.logs.LogHook("calls.db", files_dir="payloads/")
    client = llmrelay.Client(hooks=[hook])

One row per model request (*turn*): every retry, fallback attempt and tool
round is a row; the rows of one logical call share `correlation_id`. A row
holds the provider, the model requested and the model that served, status
(ok, truncated, error, aborted), the error, request messages, response text,
reasoning, tool calls and the tool results that answered them, usage
(`usage_estimated` when the provider never reported it), cost (`cost_usd`,
NULL when unknown, and `cost_reason`), time to first token, duration, the
attempts history (on the row that answered), tags and timestamps. Columns:
`llmrelay.logs.migrations.COLUMNS`. A row is what *that* request did: its own
usage and cost (a tool loop's total is the sum of its rows), its own text
(after a prefill fallback, the continuation; the caller's stitched answer is
`Response.text`). Search: FTS5 in SQLite, a GIN-indexed tsvector in PostgreSQL.

Writes never slow or break a stream: the hook only keeps references; a
background thread per store serializes, prices, redacts and writes in
batches, through a bounded queue (a full queue drops rows and counts them).
Failures (locked database, read-only directory, lost connection) give one
`LogStoreWarning` per kind, a count in `hook.stats` and `on_error(...)`.
`hook.flush()` / `hook.close()`; pending rows are flushed at interpreter exit.

API keys and auth headers are never stored (`llmrelay.logs.redact`).

`llmrelay logs list | show ID | search TEXT | totals [--by model|day]` reads
them back.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .hook import LogHook
    from .writer import LogStats, LogStoreFailure, LogStoreWarning

__all__ = ["LogHook", "LogStats", "LogStoreFailure", "LogStoreWarning", "default_path", "enable", "hook_from",
           "open_store", "ENV_VAR"]

from .paths import _OFF, _ON, ENV_VAR, FILES_ENV_VAR, _is_dsn, default_path  # noqa: F401


def __getattr__(name: str) -> Any:  # the hook and writer load on first use, not with the CLI
    if name == "LogHook":
        from .hook import LogHook

        return LogHook
    if name in ("LogStats", "LogStoreFailure", "LogStoreWarning"):
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'llmrelay.logs' has no attribute {name!r}")


_SHARED: dict[tuple[str, str, str | None], LogHook] = {}
_SHARED_LOCK = threading.Lock()


def _shared(kind: str, target: str, files_dir: str | None) -> LogHook:
    """One hook (one writer thread, one connection) per store, however many clients log to it."""
    from .hook import LogHook

    key = (kind, target, files_dir)
    with _SHARED_LOCK:
        hook = _SHARED.get(key)
        if hook is None:
            hook = LogHook(dsn=target, files_dir=files_dir) if kind == "postgres" else LogHook(target, files_dir=files_dir)
            _SHARED[key] = hook
        return hook


def hook_from(value: Any = None, env: Mapping[str, str] | None = None) -> LogHook | None:
    """What `Client(log=value)` means: a `LogHook`, or None for no logging.

    - None: the `LLMRELAY_LOG` environment variable decides (unset, "", "0": off;
      "1": the default path; else a SQLite path or a `postgresql://` DSN).
    - False: off, whatever the environment says. True: the default path.
    - A path (str or `os.PathLike`) or a DSN string; a `LogHook`; a dict of `LogHook` arguments.

    Hooks built from a path or DSN are shared per store (one writer thread each).
    """
    from .hook import LogHook
    environ = os.environ if env is None else env
    files_dir = environ.get(FILES_ENV_VAR) or None
    if value is None:
        raw = (environ.get(ENV_VAR) or "").strip()
        if raw.lower() in _OFF:
            return None
        value = True if raw.lower() in _ON else raw
    if value is False:
        return None
    if isinstance(value, LogHook):
        return value
    if isinstance(value, Mapping):
        return LogHook(**value)
    if value is True:
        return _shared("sqlite", os.path.abspath(default_path(environ)), files_dir)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if _is_dsn(value):
            return _shared("postgres", value, files_dir)
        return _shared("sqlite", os.path.abspath(os.path.expanduser(value)), files_dir)
    raise TypeError(f"log must be True, False, a path, a postgresql:// DSN, a dict or a LogHook; got {type(value).__name__}")


def enable(path: str | os.PathLike[str] | None = None, *, dsn: str | None = None, **options: Any) -> LogHook:
    """Log the module-level calls (`llmrelay.stream`, `llmrelay.complete`, …) and return the hook.

    For your own `Client`, pass `log=...` (or `hooks=[hook]`)."""
    from ..observability.hooks import DEFAULT_CLIENT_HOOKS
    from .hook import LogHook

    hook: LogHook | None
    if options:
        hook = LogHook(path, dsn=dsn, **options)
    else:
        hook = hook_from(dsn if dsn is not None else (path if path is not None else True))
        assert hook is not None
    if hook not in DEFAULT_CLIENT_HOOKS:  # the default client's own hook list (see llmrelay.default_client)
        DEFAULT_CLIENT_HOOKS.append(hook)
    return hook


def open_store(target: str | os.PathLike[str] | None = None, *, schema: str = "llmrelay") -> Any:
    """A store to read logs back (`with open_store(path_or_dsn) as store: store.recent(10)`).

    `target`: a SQLite path, a DSN, or None for `LLMRELAY_LOG` / the default path."""
    if target is None:
        raw = (os.environ.get(ENV_VAR) or "").strip()
        target = raw if raw and raw.lower() not in _ON + _OFF else default_path()
    target = os.fspath(target)
    if _is_dsn(target):
        from .postgres import PostgresStore

        return PostgresStore(target, schema=schema)
    from .sqlite import SQLiteStore

    return SQLiteStore(os.path.expanduser(target))
