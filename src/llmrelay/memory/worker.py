"""The background worker that learns from finished exchanges, off the stream's thread.

- `submit(job)` never blocks and never raises: a full queue (`queue_size`, 256)
  drops the job, counted in `stats.dropped` and reported as a "dropped" event.
- `concurrency` (1) daemon threads, started on the first job, run the jobs;
  a job that raises (anything, `BaseException` included) is reported and the
  thread goes on with the next one: a failure never kills the worker.
- Every outcome is a `MemoryEvent` ("learned", "skipped", "failed", "dropped")
  given to `on_event` (its own exceptions are logged and swallowed) and counted
  in `stats`; failures and drops are also logged at WARNING on the
  `llmrelay.memory` logger (with the traceback at DEBUG).
- `flush(timeout)` waits until every job submitted before it is done;
  `close(timeout)` drains the queue, then stops the threads (a later `submit`
  starts them again). Interpreter exit closes every worker (5 s each).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

logger = logging.getLogger("llmrelay.memory")

EventKind = Literal["learned", "skipped", "failed", "dropped"]


@dataclass
class MemoryEvent:
    """One outcome of the learning worker."""

    kind: EventKind
    user_id: str | None = None
    #: For "failed": "gate", "extract", "consolidate" or "worker" (anything else raised).
    stage: str | None = None
    error: BaseException | None = None
    #: Why it was skipped or dropped, or the error message.
    detail: str = ""
    #: The correlation id of the stream the exchange came from.
    correlation_id: str | None = None
    #: For "learned" / "skipped": the `LearnResult`.
    result: Any = None


@dataclass
class MemoryStats:
    submitted: int = 0
    learned: int = 0
    skipped: int = 0
    failed: int = 0
    dropped: int = 0
    facts_added: int = 0
    facts_merged: int = 0
    facts_superseded: int = 0
    #: Failures by stage.
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


@dataclass
class Job:
    """One exchange to learn from; `run()` returns a `LearnResult` or raises."""

    user_id: str
    run: Callable[[], Any]
    correlation_id: str | None = None
    seq: int = 0


_STOP = object()


class Worker:
    def __init__(self, *, queue_size: int = 256, concurrency: int = 1,
                 on_event: Callable[[MemoryEvent], Any] | None = None, name: str = "llmrelay-memory"):
        self.queue_size = max(1, queue_size)
        self.concurrency = max(1, concurrency)
        self.on_event = on_event
        self.name = name
        self.stats = MemoryStats()
        self._queue: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._seq = 0
        self._inflight: set[int] = set()  # seq of jobs submitted and not yet finished
        _WORKERS.add(self)

    # -- the stream's side (cheap) ------------------------------------------------------------------
    def submit(self, job: Job) -> bool:
        """Queue a job; never blocks, never raises. False if it was dropped."""
        try:
            with self._lock:
                if not self._alive():
                    self._start()
                self._seq += 1
                job.seq = self._seq
                self._queue.put_nowait(job)
                self._inflight.add(job.seq)
                self.stats.submitted += 1
            return True
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
            self._emit(MemoryEvent("dropped", job.user_id, detail=f"the memory queue is full ({self.queue_size} jobs)",
                                   correlation_id=job.correlation_id), logging.WARNING)
            return False
        except Exception as exc:  # no thread could start (interpreter exit): report, never raise
            with self._lock:
                self.stats.dropped += 1
            self._emit(MemoryEvent("dropped", job.user_id, error=exc, detail=f"{type(exc).__name__}: {exc}",
                                   correlation_id=job.correlation_id), logging.WARNING)
            return False

    def _alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _start(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.concurrency:
            t = threading.Thread(target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True)
            t.start()
            self._threads.append(t)

    # -- control --------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return len(self._inflight)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted before this call is done. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            target = self._seq
            while any(s <= target for s in self._inflight):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue (every queued job runs), then stop the threads. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads, self._threads = list(self._threads), []
        live = [t for t in threads if t.is_alive()]
        for _ in live:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._queue.put(_STOP, timeout=left)
            except queue.Full:
                return False
        for t in live:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in live)

    # -- the threads ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self._one(job)
            except BaseException as exc:  # reporting itself failed: still never die
                logger.exception("llmrelay.memory worker: unexpected error: %s", exc)
            finally:
                with self._done:
                    self._inflight.discard(job.seq)
                    self._done.notify_all()

    def _one(self, job: Job) -> None:
        try:
            result = job.run()
        except BaseException as exc:
            stage = getattr(exc, "stage", "worker")
            message = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.stats.failed += 1
                self.stats.errors[stage] = self.stats.errors.get(stage, 0) + 1
                self.stats.last_error = message
            self._emit(MemoryEvent("failed", job.user_id, stage, exc, message, job.correlation_id), logging.WARNING)
            logger.debug("llmrelay.memory: learning failed", exc_info=exc)
            return
        skipped = getattr(result, "skipped", None)
        with self._lock:
            if skipped is not None:
                self.stats.skipped += 1
            else:
                self.stats.learned += 1
                self.stats.facts_added += len(getattr(result, "added", ()))
                self.stats.facts_merged += len(getattr(result, "merged", ()))
                self.stats.facts_superseded += len(getattr(result, "superseded", ()))
        kind: EventKind = "skipped" if skipped is not None else "learned"
        self._emit(MemoryEvent(kind, job.user_id, detail=skipped or "", correlation_id=job.correlation_id,
                               result=result), logging.DEBUG)

    def _emit(self, event: MemoryEvent, level: int) -> None:
        if level >= logging.WARNING:
            logger.warning("llmrelay.memory: %s%s for user %r (stream %s): %s", event.kind,
                           f" at {event.stage}" if event.stage else "", event.user_id, event.correlation_id,
                           event.detail)
        elif logger.isEnabledFor(level):
            logger.log(level, "llmrelay.memory: %s for user %r: %s", event.kind, event.user_id, event.detail)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception as exc:
                logger.warning("llmrelay.memory: on_event raised %s: %s", type(exc).__name__, exc)


_WORKERS: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    for w in list(_WORKERS):
        try:
            w.close(5.0)
        except Exception:
            pass
