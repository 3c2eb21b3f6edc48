"""Filters for reading logs back (`llmrelay logs ... --model --provider --status --conversation
--since --until`), one WHERE clause for SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(slots=True)
class Filters:
    """Rows to keep; None is "any". `model` matches the served or the requested model (a
    trailing `*` is a prefix); times are seconds since the epoch, on `started_at`."""

    model: str | None = None
    provider: str | None = None
    status: str | None = None
    conversation: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self, mark: str) -> tuple[str, tuple[Any, ...]]:
        """(SQL condition or "", parameters), with `mark` the driver's placeholder ("?" or "%s")."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.model:
            if self.model.endswith("*"):
                prefix = self.model[:-1]
                clauses.append(f"(substr(model, 1, {mark}) = {mark} OR substr(requested_model, 1, {mark}) = {mark})")
                params += [len(prefix), prefix, len(prefix), prefix]
            else:
                clauses.append(f"(model = {mark} OR requested_model = {mark})")
                params += [self.model, self.model]
        for column, value in (("provider", self.provider), ("status", self.status),
                              ("conversation_id", self.conversation)):
            if value:
                clauses.append(f"{column} = {mark}")
                params.append(value)
        if self.since is not None:
            clauses.append(f"started_at >= {mark}")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"started_at < {mark}")
            params.append(self.until)
        return " AND ".join(clauses), tuple(params)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.model, self.provider, self.status, self.conversation,
                                          self.since, self.until))


def parse_time(value: str, now: float | None = None) -> float:
    """A moment as seconds since the epoch: `30m`, `2h`, `7d`, `1w` ago, or an ISO-8601 date or
    date-time (`2026-12-06`, `2026-12-06T17:00`, with an offset or `Z`; no offset means UTC)."""
    import datetime

    m = _RELATIVE.match(value)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {value!r} (use 30m, 2h, 7d, 1w, or an ISO date like 2026-12-06T17:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def lookup(key: str, by_id: Callable[[int], list[dict[str, Any]]],
           by_prefix: Callable[[str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """`llmrelay logs show KEY` for any store: a row by id, else every row of a call by correlation id
    (or a prefix of it). Digits are a row id only when there is such a row (and the number fits one):
    correlation ids are hex, so a prefix of one can be all digits."""
    if key.isdigit() and len(key) <= 18:
        found = by_id(int(key))
        if found:
            return found
    return by_prefix(key) if key else []


def combine(where: str, params: tuple[Any, ...], filters: Filters | None, mark: str) -> tuple[str, tuple[Any, ...]]:
    """`where` AND the filters' condition."""
    if not filters:
        return where, params
    extra, extra_params = filters.where(mark)
    if not where:
        return extra, extra_params
    return f"({where}) AND {extra}", params + extra_params
