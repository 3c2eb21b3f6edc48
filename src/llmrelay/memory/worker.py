"""The background worker that learns from finished exchanges, off the stream's thread.

The queue is the store's `pending` table (`llmrelay.memory.pending`): `Memory.submit` writes the
exchange there and only wakes the worker, so nothing is held in memory and nothing is dropped
(a submit fails only when the store itself cannot be written: then a "dropped" event). A burst
waits in the table; a crash or an exit without `close()` leaves the rows for the next worker.

- `concurrency` (1) daemon threads, started on the first submit (or `start()`), each claim the
  oldest unclaimed exchange of a user none of them is working on: one user's exchanges are
  learned strictly in order, different users' in parallel. A thread that finds nothing waits
  for a submit or `poll` seconds (rows written by other processes, leases ending).
- A job that raises (anything, `BaseException` included) is reported and the thread goes on: a
  failure never kills the worker. A failed exchange is retried `retries` times (`retry_delay`
  apart, growing), then deleted.
- Every outcome is a `MemoryEvent` ("learned", "skipped", "failed", "dropped", "curated") given to
  `on_event` and to every `subscribe()`d callback (their exceptions are logged and swallowed),
  and counted in `stats`; failures and drops are logged at WARNING on the `llmrelay.memory`
  logger. The first failure of a worker is one clear WARNING naming the model and the fix.
- With `curate_every` (seconds), the threads also run `memory.curate()` at that interval.
- `flush(timeout)` waits until every exchange this worker's Memory submitted before the call is
  done; `close(timeout)` flushes, then stops the threads (a later submit starts them again).
  Interpreter exit closes every worker (5 s each); what is left stays in the table.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .pending import claimer_id

logger = logging.getLogger("llmrelay.memory")

EventKind = Literal["learned", "skipped", "failed", "dropped", "curated"]


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
    #: For "learned" / "skipped": the `LearnResult`; for "curated": the counts.
    result: Any = None
    #: For "failed": the extraction model, and whether the exchange will be tried again.
    model: str | None = None
    will_retry: bool = False


@dataclass
class MemoryStats:
    submitted: int = 0
    learned: int = 0
    skipped: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0
    facts_added: int = 0
    facts_merged: int = 0
    facts_superseded: int = 0
    curations: int = 0
    #: Failures by stage.
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


class Worker:
    """Runs `memory.process(exchange)` for the store's pending exchanges (see the module docstring)."""

    def __init__(self, memory: Any, *, concurrency: int = 1, on_event: Callable[[MemoryEvent], Any] | None = None,
                 name: str = "llmrelay-memory", poll: float = 1.0, lease: float = 300.0, retries: int = 0,
                 retry_delay: float = 5.0, curate_every: float | None = None):
        self.memory = memory
        self.concurrency = max(1, concurrency)
        self.on_event = on_event
        self.name = name
        self.poll, self.lease = poll, lease
        self.retries, self.retry_delay = max(0, retries), retry_delay
        self.curate_every = curate_every
        self.stats = MemoryStats()
        #: Written on every exchange this worker's Memory submits; `flush` waits for these.
        self.origin = f"{os.getpid()}-{os.urandom(6).hex()}"
        self.claimer = claimer_id(self.origin)
        self._subscribers: list[Callable[[MemoryEvent], Any]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        self._wakeups = 0
        self._last_id = 0
        self._last_curate = time.monotonic()
        self._warned = False
        self._inflight: set[int] = set()  # pending ids being learned by these threads (<= concurrency)
        _WORKERS.add(self)

    def subscribe(self, callback: Callable[[MemoryEvent], Any]) -> Callable[[], None]:
        """Call `callback(event)` on every event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    # -- the stream's side ------------------------------------------------------------------------
    def submitted(self, pending_id: int) -> None:
        """An exchange was written to the table: count it, wake a thread (starting them if needed)."""
        with self._cond:
            self.stats.submitted += 1
            self._last_id = max(self._last_id, pending_id)
            self._wakeups += 1
            self._cond.notify()
            if not self._stopping and not self._alive():
                self._start()

    def count(self, *, merged: bool) -> None:
        """A fact stored directly (`Memory.add_facts`): added or merged."""
        with self._lock:
            if merged:
                self.stats.facts_merged += 1
            else:
                self.stats.facts_added += 1

    def dropped(self, user_id: str, exc: BaseException, correlation_id: str | None) -> None:
        with self._lock:
            self.stats.dropped += 1
        self._emit(MemoryEvent("dropped", user_id, error=exc, detail=f"the exchange could not be stored: "
                               f"{type(exc).__name__}: {exc}", correlation_id=correlation_id), logging.WARNING)

    def start(self) -> None:
        """Start the threads now (they also start on the first submit): learn what earlier processes left."""
        with self._lock:
            self._stopping = False
            if not self._alive():
                self._start()

    def _alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _start(self) -> None:
        try:
            self.memory.store.release_dead()
        except Exception as exc:  # noqa: BLE001 - recovery is best effort; leases end anyway
            logger.debug("llmrelay.memory: releasing dead claims failed: %s", exc)
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.concurrency:
            t = threading.Thread(target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True)
            t.start()
            self._threads.append(t)

    # -- control --------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Exchanges this worker's Memory submitted that are not learned yet."""
        return self.memory.store.count_pending(origin=self.origin)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every exchange submitted (by this Memory) before this call is done. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._last_id
        if target == 0:
            return True
        with self._lock:
            if not self._stopping and not self._alive():
                self._start()
        while self.memory.store.count_pending(origin=self.origin, up_to=target) or self._busy(target):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with self._cond:
                self._cond.wait(min(0.05, left) if left is not None else 0.05)
        return True

    def drain(self, timeout: float | None = None) -> bool:
        """Start the threads and wait until the store has no pending exchange at all (any process's,
        e.g. those a crashed process left). False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.start()
        while self.memory.store.count_pending() or self._busy(1 << 62):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with self._cond:
                self._wakeups += 1
                self._cond.notify_all()
                self._cond.wait(min(0.05, left) if left is not None else 0.05)
        return True

    def _busy(self, target: int) -> bool:
        with self._lock:
            return any(i <= target for i in self._inflight)

    def close(self, timeout: float | None = None) -> bool:
        """Learn what was submitted (`flush`), then stop the threads. False on timeout (the rest stays
        in the table for the next worker)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            ok = self.flush(timeout)
        except Exception as exc:  # noqa: BLE001 - a closed store: nothing to wait for
            logger.debug("llmrelay.memory: flush at close failed: %s", exc)
            ok = False
        with self._cond:
            self._stopping = True
            threads, self._threads = list(self._threads), []
            self._cond.notify_all()
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._stopping = False
        return ok and not any(t.is_alive() for t in threads)

    # -- the threads ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:  # load a local embedding model here, not on the first search of a caller's thread
            load = getattr(getattr(self.memory.store, "embedder", None), "_load", None)
            if load is not None:
                load()
        except Exception as exc:  # noqa: BLE001 - searching will report it
            logger.debug("llmrelay.memory: warming the embedder failed: %s", exc)
        while True:
            with self._lock:
                if self._stopping:
                    return
                seen = self._wakeups
            try:
                self._maybe_curate()
                claimed = self.memory.store.claim_pending(self.claimer, lease=self.lease)
            except Exception as exc:  # noqa: BLE001 - a broken store: wait and try again
                if getattr(self.memory.store, "closed", False):
                    return  # the store was closed under us: nothing more to learn here
                logger.warning("llmrelay.memory: reading pending exchanges failed: %s: %s", type(exc).__name__, exc)
                claimed = []
            if not claimed:
                with self._cond:
                    if not self._stopping and self._wakeups == seen:
                        self._cond.wait(self.poll)
                continue
            for exchange in claimed:
                with self._lock:
                    self._inflight.add(exchange.id)
                try:
                    self._one(exchange)
                except BaseException as exc:  # reporting itself failed: still never die
                    logger.exception("llmrelay.memory worker: unexpected error: %s", exc)
                with self._cond:
                    self._inflight.discard(exchange.id)
                    self._cond.notify_all()

    def _maybe_curate(self) -> None:
        if not self.curate_every:
            return
        with self._lock:
            if time.monotonic() - self._last_curate < self.curate_every:
                return
            self._last_curate = time.monotonic()
        try:
            counts = self.memory.curate()
        except Exception as exc:  # noqa: BLE001
            logger.warning("llmrelay.memory: curation failed: %s: %s", type(exc).__name__, exc)
            return
        with self._lock:
            self.stats.curations += 1
        self._emit(MemoryEvent("curated", detail=", ".join(f"{k} {v}" for k, v in counts.items()), result=counts),
                   logging.DEBUG)

    def _one(self, exchange: Any) -> None:
        store = self.memory.store
        try:
            result = self.memory.process(exchange)
        except BaseException as exc:
            stage = getattr(exc, "stage", "worker")
            model = getattr(exc, "model", None)
            message = f"{type(exc).__name__}: {exc}"
            retry = exchange.attempts <= self.retries
            with self._lock:
                self.stats.failed += 1
                self.stats.errors[stage] = self.stats.errors.get(stage, 0) + 1
                self.stats.last_error = message
                self.stats.retried += retry
                first, self._warned = not self._warned, True
            if retry:
                store.release_pending(exchange.id, time.time() + self.retry_delay * exchange.attempts)
            else:
                store.finish_pending(exchange.id)
            if first:
                logger.warning("llmrelay.memory: learning failed for the first time (stage %s, model %s): %s. %s",
                               stage, model, message, _fix(stage, model))
            self._emit(MemoryEvent("failed", exchange.user_id, stage, exc, message, exchange.source, model=model,
                                   will_retry=retry), logging.WARNING)
            logger.debug("llmrelay.memory: learning failed", exc_info=exc)
            return
        store.finish_pending(exchange.id)
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
        self._emit(MemoryEvent(kind, exchange.user_id, detail=skipped or "", correlation_id=exchange.source,
                               result=result), logging.DEBUG)

    def _emit(self, event: MemoryEvent, level: int) -> None:
        if level >= logging.WARNING:
            logger.warning("llmrelay.memory: %s%s for user %r (stream %s): %s", event.kind,
                           f" at {event.stage}" if event.stage else "", event.user_id, event.correlation_id,
                           event.detail)
        elif logger.isEnabledFor(level):
            logger.log(level, "llmrelay.memory: %s for user %r: %s", event.kind, event.user_id, event.detail)
        with self._lock:
            callbacks = ([self.on_event] if self.on_event is not None else []) + list(self._subscribers)
        for callback in callbacks:
            try:
                callback(event)
            except Exception as exc:
                logger.warning("llmrelay.memory: on_event raised %s: %s", type(exc).__name__, exc)


def _fix(stage: str, model: str | None) -> str:
    if stage == "extract":
        return (f"Check that {model!r} is reachable with this client (its key and base URL), or set "
                "Memory(extract_model='provider:model') to a model you can call; "
                "subscribe to failures with Memory(on_event=...) or memory.worker.subscribe(...)")
    return "See the traceback at DEBUG on the llmrelay.memory logger"


_WORKERS: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    for w in list(_WORKERS):
        try:
            w.close(5.0)
        except Exception:
            pass
