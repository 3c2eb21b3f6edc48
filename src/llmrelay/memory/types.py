"""Memory records and the store interface every backend implements.

Every record is scoped by `user_id`; every read filters on it, so no query can
return another user's rows. Backends: SQLite (embedded default, FTS5) and
Postgres (many processes), both behind `MemoryStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

from ..errors import InvalidRequestError

Tier = Literal["fast", "balanced", "deep"]
FactStatus = Literal["active", "archived", "superseded", "expired"]


def check_user(user_id: Any, field: str = "user_id") -> str:
    """A valid user id, or `InvalidRequestError` naming the field (before anything is read or written):
    a non-empty str without NUL characters (PostgreSQL text cannot hold them)."""
    if not isinstance(user_id, str) or not user_id:
        raise InvalidRequestError(f"{field} must be a non-empty str, got {user_id!r}")
    if "\x00" in user_id:
        raise InvalidRequestError(f"{field} must not contain NUL characters, got {user_id!r}")
    return user_id


@dataclass(slots=True)
class NewFact:
    """A fact to store (what extraction produces)."""

    text: str
    importance: float = 0.5  # 0..1
    #: Seconds since the epoch after which the fact is no longer true (None: never).
    expires_at: float | None = None
    #: Where it came from (the correlation id of the conversation), for audit.
    source: str | None = None


@dataclass(slots=True)
class Fact:
    id: int
    user_id: str
    text: str
    importance: float
    created_at: float
    updated_at: float
    expires_at: float | None = None
    status: FactStatus = "active"
    access_count: int = 0
    last_accessed_at: float | None = None
    source: str | None = None
    #: The fact that replaced this one (consolidation), if any.
    superseded_by: int | None = None


@dataclass(slots=True)
class Entity:
    name: str
    type: str = "thing"
    id: int | None = None
    user_id: str | None = None


@dataclass(slots=True)
class Relation:
    subject: str
    predicate: str
    object: str
    id: int | None = None
    user_id: str | None = None
    fact_id: int | None = None


@dataclass(slots=True)
class Hit:
    """One search result: the fact, its score, and why it matched ("text", "graph", "vector")."""

    fact: Fact
    score: float
    via: str = "text"
    related: list[Relation] = field(default_factory=list)


@dataclass(slots=True)
class Task:
    """Something the model scheduled for the user (`schedule_task`): offered to the model at the start
    of the user's first conversation after `due_at`, then "done"."""

    id: int
    user_id: str
    text: str
    due_at: float
    created_at: float
    status: str = "pending"
    done_at: float | None = None
    source: str | None = None


@dataclass(slots=True)
class PendingExchange:
    """An exchange written to the store, waiting to be learned (see `llmrelay.memory.pending`)."""

    id: int
    user_id: str
    user_text: str
    reply: str
    model: str | None
    source: str | None
    origin: str | None
    created_at: float
    attempts: int


class MemoryStore(Protocol):
    """What `Memory` needs from a backend. All methods are synchronous and thread-safe
    (writes serialized); async callers run them in a thread."""

    def add_facts(self, user_id: str, facts: Sequence[NewFact]) -> list[int]: ...

    def add_entities(self, user_id: str, entities: Sequence[Entity]) -> None: ...

    def add_relations(self, user_id: str, relations: Sequence[Relation]) -> None: ...

    def search(self, user_id: str, query: str, *, limit: int | None = None, tier: Tier = "balanced",
               now: float | None = None) -> list[Hit]:
        """Full-text (and, for tier "deep", graph expansion from the entities named in the query;
        vector similarity when the store has an embedder). Never returns archived, superseded
        or expired facts, nor another user's. Counts an access on every returned fact."""
        ...

    def list_facts(self, user_id: str, *, status: FactStatus | None = "active") -> list[Fact]: ...

    def similar_facts(self, user_id: str, text: str, *, limit: int = 5) -> list[Fact]:
        """Active facts likely about the same thing as `text` (for consolidation)."""
        ...

    def supersede(self, user_id: str, old_id: int, new_id: int) -> None: ...

    def update_fact(self, user_id: str, fact_id: int, *, text: str | None = None,
                    importance: float | None = None, expires_at: float | None = None) -> None: ...

    def curate(self, *, now: float | None = None, stale_after: float = 90 * 86400,
               archive_below: float = 0.3) -> dict[str, int]:
        """Mark expired facts expired, archive stale low-importance ones. Returns counts."""
        ...

    def forget(self, user_id: str) -> int:
        """Delete every row stored for the user (facts, entities, relations, vectors). Returns rows deleted."""
        ...

    def close(self) -> None: ...
