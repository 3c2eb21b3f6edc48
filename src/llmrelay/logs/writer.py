"""The background writer: one daemon thread per store, fed through a bounded queue.

The stream's thread only calls `submit` (`put_nowait`; a full queue drops the
rows and counts them). The thread wakes on the first row, lingers a moment
(`linger`, 0.25 s) so the calls of that moment share one wake-up and one
transaction, turns records into rows (JSON, cost, redaction, files), writes
them in batches, and reports failures without ever raising into a stream:

- a `LogStoreWarning`, once per failure kind ("locked", "readonly", "open",
  "connection", "files", "serialize", "queue_full", or the exception's name),
- a count in `stats.errors[kind]`, the lost rows in `stats.failed` (store
  failures) or `stats.dropped` (queue full),
- `on_error(LogStoreFailure)` when given (its own exceptions are swallowed).

`flush(timeout)` waits until everything submitted so far is written;
`close()` drains the queue, stops the thread and closes the store (a later
`submit` starts a new thread). A forked child gets its own thread and
connection (rows queued before the fork are the parent's to write).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from .rows import TurnRecord, build_row, scrubber_for, write_files


class LogStoreWarning(RuntimeWarning):
    """The log store could not be written (the stream itself was not affected)."""


@dataclass
class LogStoreFailure:
    """What `on_error` receives: the failure kind, the exception and how many rows were lost."""

    kind: str
    error: BaseException | None
    rows: int
    store: str


@dataclass
class LogStats:
    written: int = 0
    #: Rows dropped because the queue was full.
    dropped: int = 0
    #: Rows lost because the store (or serialization) failed.
    failed: int = 0
    #: Failures by kind (a batch that fails counts once).
    errors: dict[str, int] = field(default_factory=dict)
    #: `files_dir` pairs written.
    files: int = 0
    last_error: str | None = None

    @property
    def lost(self) -> int:
        return self.dropped + self.failed


def failure_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if isinstance(exc, PermissionError) or "readonly" in text or "read-only" in text or "permission denied" in text:
        return "readonly"
    if "unable to open" in text:
        return "open"
    for cls in type(exc).__mro__:  # psycopg's OperationalError family (AdminShutdown, ...) without importing it
        if (cls.__module__ or "").startswith("psycopg") and cls.__name__ in ("OperationalError", "InterfaceError"):
            return "connection"
    return type(exc).__name__


class _Marker:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


_STOP = object()


class Writer:
    """Owns a store (`open()`, `write(rows, records)`, `close()`, `describe()`) and its thread."""

    def __init__(self, store: Any, *, queue_size: int = 10_000, batch_size: int = 200,
                 files_dir: str | None = None, on_error: Callable[[LogStoreFailure], Any] | None = None,
                 reopen_interval: float = 1.0, linger: float = 0.25):
        self.store = store
        self.files_dir = os.fspath(files_dir) if files_dir is not None else None
        self.batch_size = max(1, batch_size)
        self.on_error = on_error
        self.reopen_interval = reopen_interval
        #: Seconds the thread waits for more rows after the first one (flush() and close() cut it short).
        self.linger = linger
        self._wake = threading.Event()
        self.stats = LogStats()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._opened = False
        self._next_open = 0.0
        _WRITERS.add(self)

    # -- the stream's side (cheap) ----------------------------------------------------------
    def submit(self, records: list[TurnRecord]) -> bool:
        """Queue a call's rows; never blocks, never raises."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            if not self._start():
                return self._write_now(records)
        try:
            self._queue.put_nowait(records)
            return True
        except queue.Full:
            with self._lock:
                self.stats.dropped += len(records)
            self._report("queue_full", None, len(records),
                         f"the log queue is full ({self._queue.maxsize} calls); rows are dropped")
            return False

    def _start(self) -> bool:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return True
            thread = threading.Thread(target=self._run, name=f"llmrelay-log-{self.store.describe()}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: no new threads
                return False
            self._thread = thread
            return True

    def _forked(self) -> None:
        """In a forked child: the parent's thread, queue and connection are not ours."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        self._opened = False
        if getattr(self.store, "conn", None) is not None:
            self.store.conn = None  # abandoned, never closed: closing would end the parent's session

    def _write_now(self, records: list[TurnRecord]) -> bool:
        try:
            self._write(records)
        finally:
            self._close_store()
        return True

    # -- control --------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what was submitted before is written (or failed). False on timeout."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty()
        marker = _Marker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._wake.set()
        return marker.event.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue, stop the thread, close the store. Returns False if it timed out."""
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._thread = None
                self._close_store()
                return True
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                return False
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                return False
            self._thread = None
            return True

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        stop = False
        markers: list[_Marker] = []
        while not stop:
            item = q.get()
            batch: list[TurnRecord] = []
            markers = []
            lingered = self.linger <= 0
            while True:
                if item is _STOP:
                    stop = True
                elif type(item) is _Marker:
                    markers.append(item)
                else:
                    batch.extend(item)
                if stop or len(batch) >= self.batch_size:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    if lingered or markers:
                        break
                    # let a few calls gather: one wake-up and one transaction for all of them
                    lingered = True
                    self._wake.wait(self.linger)
                    self._wake.clear()
                    try:
                        item = q.get_nowait()
                    except queue.Empty:
                        break
            if batch:
                try:
                    self._write(batch)
                except BaseException as exc:  # never let the thread die
                    self._fail("writer", exc, len(batch))
            if not stop:
                for m in markers:
                    m.event.set()
        # submitted while closing: written too, so nothing queued is left behind
        late: list[TurnRecord] = []
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if type(item) is _Marker:
                markers.append(item)
            elif item is not _STOP:
                late.extend(item)
        if late:
            try:
                self._write(late)
            except BaseException as exc:
                self._fail("writer", exc, len(late))
        for m in markers:
            m.event.set()
        self._close_store()

    def _write(self, batch: list[TurnRecord]) -> None:
        rows: list[dict[str, Any]] = []
        records: list[TurnRecord] = []
        scrubbers = []
        for rec in batch:
            try:
                scrub = scrubber_for(rec)
                rows.append(build_row(rec, scrub))
                records.append(rec)
                scrubbers.append(scrub)
            except Exception as exc:
                self._fail("serialize", exc, 1)
        if self.files_dir is not None:
            for rec, row, scrub in zip(records, rows, scrubbers):
                try:
                    write_files(self.files_dir, rec, row, scrub)
                    self.stats.files += 1
                except Exception as exc:
                    self._report(failure_kind(exc) if isinstance(exc, OSError) else "files", exc, 0,
                                 f"could not write log files to {self.files_dir}: {exc}", files=True)
        if not rows:
            return
        if not self._opened:
            now = time.monotonic()
            if now < self._next_open:
                self._fail("open", None, len(rows), quiet=True)
                return
            try:
                self.store.open()
                self._opened = True
            except Exception as exc:
                self._next_open = time.monotonic() + self.reopen_interval
                self._fail(failure_kind(exc), exc, len(rows))
                self._close_store()
                return
        try:
            self.store.write(rows, records, scrubbers)
            self.stats.written += len(rows)
        except Exception as exc:
            self._fail(failure_kind(exc), exc, len(rows))
            if getattr(self.store, "broken", False):
                self._close_store()

    def _close_store(self) -> None:
        self._opened = False
        try:
            self.store.close()
        except Exception:
            pass

    # -- reporting -------------------------------------------------------------------------------
    def _fail(self, kind: str, exc: BaseException | None, rows: int, quiet: bool = False) -> None:
        self.stats.failed += rows
        if quiet:
            return
        self._report(kind, exc, rows, f"could not write {rows} row(s) to {self.store.describe()}: "
                     f"{type(exc).__name__ + ': ' if exc is not None else ''}{exc}")

    def _report(self, kind: str, exc: BaseException | None, rows: int, message: str, files: bool = False) -> None:
        key = f"files:{kind}" if files else kind
        errors = self.stats.errors
        errors[key] = errors.get(key, 0) + 1
        self.stats.last_error = message
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"llmrelay.logs: {message} (the stream is not affected; further {key!r} failures "
                          "are only counted in .stats)", LogStoreWarning, stacklevel=2)
        if self.on_error is not None:
            try:
                self.on_error(LogStoreFailure(key, exc, rows, self.store.describe()))
            except Exception:
                pass


#: Every writer, so rows queued by a hook that is gone are still written at exit
#: (a running thread keeps its writer alive). Hooks close first: their `atexit` runs before this one.
_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    for writer in list(_WRITERS):
        try:
            writer.close(5.0)
        except Exception:
            pass


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
