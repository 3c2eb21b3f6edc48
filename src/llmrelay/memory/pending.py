"""The durable parts of a SQL memory store: exchanges waiting to be learned (`pending`) and the
users' scheduled tasks (`tasks`). Shared by SQLite and Postgres (`SQLMemoryStore` mixes it in).

**Pending exchanges.** `Memory.submit` writes the exchange here before returning, so a burst,
a crash or an exit without `close()` loses nothing: any worker (this process's, or the next
one's) picks the rows up. A worker *claims* a row for `lease` seconds (`claimed_by`,
`claimed_until`); only the oldest row of a user is ever claimable, and not while it is claimed,
so one user's exchanges are learned strictly in order whatever the number of workers or
processes. A finished row is deleted; a failed one is released for a later attempt or deleted
after its last one. Rows claimed by a process of this host that no longer runs are released
when a worker starts (`release_dead`); others wait for their lease to end.

**Tasks.** `add_task(user_id, text, due_at)` (the `schedule_task` tool); `due_tasks` lists the
user's undelivered tasks due by now; `mark_tasks_done` marks them delivered.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Sequence

from .types import PendingExchange, Task, check_user

_PENDING_COLS = "id, user_id, user_text, reply, model, source, origin, created_at, attempts"
_TASK_COLS = "id, user_id, text, due_at, created_at, status, done_at, source"


def claimer_id(token: str) -> str:
    """`host:pid:token`: who claims a row (the host and pid let a later worker see it died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PendingMixin:
    _tx: Any

    # -- pending exchanges ------------------------------------------------------------------------
    def add_pending(self, user_id: str, user_text: str, reply: str, *, model: str | None = None,
                    source: str | None = None, origin: str | None = None) -> int:
        check_user(user_id)
        with self._tx() as (q, _run):
            rows = q("INSERT INTO pending (user_id, user_text, reply, model, source, origin, created_at, "
                     "claimed_until, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0) RETURNING id",
                     (user_id, user_text.replace("\x00", ""), reply.replace("\x00", ""), model, source, origin,
                      time.time()))
        return int(rows[0][0])

    def claim_pending(self, claimer: str, *, lease: float = 300.0, limit: int = 1,
                      now: float | None = None) -> list[PendingExchange]:
        """Claim up to `limit` rows, each the oldest of its user and not claimed (see the module docstring)."""
        now = time.time() if now is None else now
        out: list[PendingExchange] = []
        with self._tx() as (q, run):
            ids = [int(r[0]) for r in q(
                "SELECT p.id FROM pending p WHERE p.claimed_until <= ? AND NOT EXISTS "
                "(SELECT 1 FROM pending o WHERE o.user_id = p.user_id AND o.id < p.id) ORDER BY p.id LIMIT ?",
                (now, limit))]
            for pid in ids:
                if run("UPDATE pending SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1 "
                       "WHERE id = ? AND claimed_until <= ?", (claimer, now + lease, pid, now)) == 1:
                    r = q(f"SELECT {_PENDING_COLS} FROM pending WHERE id = ?", (pid,))[0]
                    out.append(PendingExchange(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], float(r[7]), int(r[8])))
        return out

    def has_pending(self, pending_id: int) -> bool:
        """Whether the row is still there (`forget` deletes a user's rows, also one being learned)."""
        with self._tx() as (q, _run):
            return bool(q("SELECT 1 FROM pending WHERE id = ?", (pending_id,)))

    def finish_pending(self, pending_id: int) -> None:
        with self._tx() as (_q, run):
            run("DELETE FROM pending WHERE id = ?", (pending_id,))

    def release_pending(self, pending_id: int, retry_at: float) -> None:
        with self._tx() as (_q, run):
            run("UPDATE pending SET claimed_by = NULL, claimed_until = ? WHERE id = ?", (retry_at, pending_id))

    def release_dead(self, now: float | None = None) -> int:
        """Release rows claimed by processes of this host that are gone. Returns how many."""
        now = time.time() if now is None else now
        host = socket.gethostname()
        released = 0
        with self._tx() as (q, run):
            for (claimer,) in q("SELECT DISTINCT claimed_by FROM pending WHERE claimed_until > ? "
                                "AND claimed_by IS NOT NULL", (now,)):
                h, _, rest = str(claimer).partition(":")
                pid = rest.partition(":")[0]
                if h == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    released += max(0, run("UPDATE pending SET claimed_by = NULL, claimed_until = 0 "
                                           "WHERE claimed_by = ?", (claimer,)))
        return released

    def count_pending(self, *, origin: str | None = None, up_to: int | None = None,
                      user_id: str | None = None) -> int:
        where, args = ["1 = 1"], []
        if origin is not None:
            where.append("origin = ?"), args.append(origin)
        if up_to is not None:
            where.append("id <= ?"), args.append(up_to)
        if user_id is not None:
            where.append("user_id = ?"), args.append(check_user(user_id))
        with self._tx() as (q, _run):
            return int(q(f"SELECT COUNT(*) FROM pending WHERE {' AND '.join(where)}", tuple(args))[0][0])

    # -- tasks -----------------------------------------------------------------------------------------
    @staticmethod
    def _task(r: Sequence[Any]) -> Task:
        return Task(int(r[0]), r[1], r[2], float(r[3]), float(r[4]), r[5], r[6], r[7])

    def add_task(self, user_id: str, text: str, due_at: float, *, source: str | None = None) -> int:
        check_user(user_id)
        text = (text or "").replace("\x00", "").strip()
        if not text:
            raise ValueError("a task needs a text")
        with self._tx() as (q, _run):
            rows = q("INSERT INTO tasks (user_id, text, due_at, created_at, status, source) "
                     "VALUES (?, ?, ?, ?, 'pending', ?) RETURNING id", (user_id, text, float(due_at), time.time(), source))
        return int(rows[0][0])

    def due_tasks(self, user_id: str, now: float | None = None, *, limit: int = 20) -> list[Task]:
        """The user's undelivered tasks due by `now`, oldest due first."""
        check_user(user_id)
        now = time.time() if now is None else now
        with self._tx() as (q, _run):
            rows = q(f"SELECT {_TASK_COLS} FROM tasks WHERE user_id = ? AND status = 'pending' AND due_at <= ? "
                     f"ORDER BY due_at, id LIMIT ?", (user_id, now, limit))
        return [self._task(r) for r in rows]

    def mark_tasks_done(self, user_id: str, ids: Sequence[int]) -> int:
        check_user(user_id)
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        with self._tx() as (_q, run):
            return max(0, run(f"UPDATE tasks SET status = 'done', done_at = ? WHERE user_id = ? AND "
                              f"status = 'pending' AND id IN ({marks})", (time.time(), user_id, *ids)))

    def list_tasks(self, user_id: str, *, status: str | None = None) -> list[Task]:
        check_user(user_id)
        with self._tx() as (q, _run):
            if status is None:
                rows = q(f"SELECT {_TASK_COLS} FROM tasks WHERE user_id = ? ORDER BY due_at, id", (user_id,))
            else:
                rows = q(f"SELECT {_TASK_COLS} FROM tasks WHERE user_id = ? AND status = ? ORDER BY due_at, id",
                         (user_id, status))
        return [self._task(r) for r in rows]


__all__ = ["PendingMixin", "claimer_id"]
