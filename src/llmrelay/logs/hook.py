"""`LogHook`: the hook that logs every model request, off the hot path.

The hook methods only keep references (the call, the request, the response
the stream built for `on_turn_end`) and a wall-clock timestamp; nothing is
serialized, priced or written on the stream's thread.

Rows of one logical call are held in memory until `on_call_end`, then queued
together. Waiting lets the hook attach what arrives after a turn ended:

- tool results (`on_tool_result` comes after `on_turn_end` of the turn whose
  calls they answer) go to that turn's row, `tool_results`;
- the attempts history goes to the row of the turn that answered: the
  `Router`'s attempts (`response.attempts`, skipped models included) or, with
  retries only, one entry per row of the round. When every attempt failed,
  the last row carries it (`AllModelsFailedError.attempts`).

Memory stays bounded: at most `max_open_calls` calls are held (the oldest is
queued as it stands when a new one needs room) and `max_turns_per_call` rows
per call (older rows are queued early). Rows queued early lose nothing but the
attempts link. `close()` (and interpreter exit) queues the rows of calls still
in progress, then drains the writer.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import Any, Callable

from ..observability.hooks import Hooks
from .rows import OK_STATUSES, TurnRecord
from .writer import LogStats, LogStoreFailure, Writer

_now = time.time


class _CallState:
    __slots__ = ("info", "turns", "turn", "t_start", "request", "early")

    def __init__(self, ctx: Any):
        tags = ctx.tags
        self.info = (dict(tags) if tags else None, ctx.requested, ctx.stream, ctx.conversation_id)
        self.turns: list[TurnRecord] = []
        self.turn = 0
        self.t_start = 0.0
        self.request: Any = None
        self.early = False  # some rows were queued before the call ended


class LogHook(Hooks):
    """Log every model request of the calls it observes (see `llmrelay.logs`).

    - `path`: SQLite file (default: `default_path()`); or `dsn="postgresql://…"`
      (with `schema=`, default "llmrelay"); or any `store=` object.
    - `files_dir`: also write one redacted `.request.json` / `.response.json`
      pair per request there.
    - `queue_size` (calls), `batch_size` (rows per transaction), `linger` (seconds
      the writer gathers rows before a transaction), `busy_timeout` (seconds
      SQLite waits on a lock), `on_error(LogStoreFailure)`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        dsn: str | None = None,
        store: Any = None,
        files_dir: str | os.PathLike[str] | None = None,
        schema: str = "llmrelay",
        queue_size: int = 10_000,
        batch_size: int = 200,
        busy_timeout: float = 1.0,
        on_error: Callable[[LogStoreFailure], Any] | None = None,
        max_open_calls: int = 10_000,
        max_turns_per_call: int = 256,
        exit_timeout: float = 5.0,
        linger: float = 0.25,
    ):
        if store is None:
            if dsn is None and isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
                path, dsn = None, path
            if dsn is not None:
                from .postgres import PostgresStore

                store = PostgresStore(dsn, schema=schema)
            else:
                from .paths import default_path
                from .sqlite import SQLiteStore

                store = SQLiteStore(os.path.expanduser(os.fspath(path)) if path is not None else default_path(),
                                    busy_timeout=busy_timeout)
        self.store = store
        self.files_dir = os.fspath(files_dir) if files_dir is not None else None
        self.writer = Writer(store, queue_size=queue_size, batch_size=batch_size, files_dir=self.files_dir,
                             on_error=on_error, linger=linger)
        self.max_open_calls = max(1, max_open_calls)
        self.max_turns_per_call = max(2, max_turns_per_call)
        self.exit_timeout = exit_timeout
        self._calls: dict[str, _CallState] = {}
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"LogHook({self.store.describe()!r})"

    @property
    def stats(self) -> LogStats:
        """written, dropped (queue full), failed (store failures), errors by kind, files."""
        return self.writer.stats

    # -- the hooks (hot path: references only) ----------------------------------------------
    def _state(self, ctx: Any) -> _CallState:
        calls = self._calls
        state = calls.get(ctx.correlation_id)
        if state is None:
            if len(calls) >= self.max_open_calls:
                self._evict()
            state = calls[ctx.correlation_id] = _CallState(ctx)
        return state

    def on_turn_start(self, ctx: Any, call: Any, request: Any) -> None:
        state = self._state(ctx)
        state.turn = ctx.turns
        state.t_start = _now()
        state.request = request

    def on_turn_end(self, ctx: Any, call: Any, response: Any) -> None:
        state = self._state(ctx)
        now = _now()
        request, state.request = state.request, None
        turns = state.turns
        turns.append(TurnRecord(ctx.correlation_id, state.turn or ctx.turns, state.t_start or now, now,
                                call, request, response, state.info))
        if len(turns) >= self.max_turns_per_call:
            state.early = True
            self.writer.submit(turns[:-1])
            del turns[:-1]

    def on_tool_result(self, ctx: Any, result: Any) -> None:
        state = self._calls.get(ctx.correlation_id)
        if state is not None and state.turns:
            rec = state.turns[-1]
            if rec.tool_results is None:
                rec.tool_results = [result]
            else:
                rec.tool_results.append(result)

    def on_call_end(self, ctx: Any, response: Any, error: BaseException | None) -> None:
        state = self._calls.pop(ctx.correlation_id, None)
        if state is None or not state.turns:
            return
        tags = state.info[0]
        if tags is not None and ctx.tags:
            tags.update(ctx.tags)  # tags added during the call (the gateway's overhead) reach every row
        if not state.early:
            link_attempts(state.turns, response, error)
        output = getattr(response, "output", None)
        if output is not None and error is None:
            state.turns[-1].output = output  # the last request produced the validated object
        self.writer.submit(state.turns)

    # -- control --------------------------------------------------------------------------------
    def _evict(self) -> None:
        try:
            oldest = next(iter(self._calls))
        except (StopIteration, RuntimeError):
            return
        state = self._calls.pop(oldest, None)
        if state is not None and state.turns:
            self.writer.submit(state.turns)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the rows of every call that ended are written. False on timeout."""
        return self.writer.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Queue the rows of calls still in progress, write everything, stop the writer thread.

        The hook stays usable: a later call starts a new writer thread."""
        for cid in list(self._calls):
            state = self._calls.get(cid)
            if state is not None and state.turns:
                turns, state.turns = state.turns, []
                state.early = True
                self.writer.submit(turns)
        return self.writer.close(timeout)

    def __enter__(self) -> LogHook:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def link_attempts(turns: list[TurnRecord], final: Any, error: BaseException | None) -> None:
    """Give the row that answered each round (or the last row of a failed one) the round's attempts."""
    rounds: list[list[TurnRecord]] = []
    current: list[TurnRecord] = []
    for rec in turns:
        current.append(rec)
        if rec.status in OK_STATUSES:
            rounds.append(current)
            current = []
    if current:
        rounds.append(current)
    answers = getattr(final, "turns", None) or (
        [final] if final is not None and getattr(final, "status", None) in OK_STATUSES else [])
    for i, rnd in enumerate(rounds):
        last = rnd[-1]
        if last.status in OK_STATUSES:
            source = getattr(answers[i], "attempts", None) if i < len(answers) else None
        else:
            source = getattr(error, "attempts", None) if i == len(rounds) - 1 else None
        if source:
            last.attempts = list(source)
        elif len(rnd) > 1:
            last.attempts = list(rnd)  # retries: each row is an attempt (described by the writer)


_LIVE: weakref.WeakSet[LogHook] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    for hook in list(_LIVE):
        try:
            hook.close(hook.exit_timeout)
        except Exception:
            pass
