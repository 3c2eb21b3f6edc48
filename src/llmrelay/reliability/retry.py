"""Retries: only before any content has reached the caller, with exponential backoff and full jitter.

Retried: connection errors and timeouts, HTTP 408, 409, 429, 500, 502, 503,
504 and 529, a 200 that is not a stream (`UnexpectedResponseError`), and
in-band error events or malformed chunks, as long as nothing of the answer
(text, reasoning, refusal, tool call) was shown. Never retried: 400, 401, 402,
403, 404, 413, 422, and permanent errors whatever their status or channel
(quota, billing, invalid request, content policy: `errors.is_permanent`),
since the same request would fail the same way.

`Retry-After` (seconds or HTTP date, or `retry-after-ms`) is honoured as a
minimum; above `max_retry_after` we give up at once with the typed error. The
request count is exactly `1 + max_retries` at most: nothing underneath retries.
"""

from __future__ import annotations

import random
from typing import Any, Generator, Sequence

from ..errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    InvalidRequestError,
    ProviderStreamError,
    UnexpectedResponseError,
    is_permanent,
)
from ..events import RetryEvent
from .middleware import Middleware, SendFn, with_middleware
from ..engine.plan import Emit, Plan, Send, Sleep, answered, single_call, thrown
from ..call import Call
from ..response import Attempt, Response

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def content_shown(error: APIError) -> bool:
    """Did any of the answer reach the caller before this error?"""
    p = error.partial
    if p is None:
        return False
    return any(c.parts or c.refusal for c in p.choices)


def is_retryable(error: BaseException) -> bool:
    if not isinstance(error, APIError) or content_shown(error) or is_permanent(error):
        return False
    if isinstance(error, APIStatusError):
        return error.status_code in RETRY_STATUSES
    return isinstance(error, (APIConnectionError, ProviderStreamError, UnexpectedResponseError))


class Retry(Middleware):
    """Retry a model turn that failed before content. `Client(retry=Retry(...))`, or `retry=3`."""

    def __init__(
        self,
        max_retries: int = 2,
        *,
        initial_delay: float = 0.5,
        max_delay: float = 8.0,
        multiplier: float = 2.0,
        max_retry_after: float = 60.0,
        jitter: bool = True,
        seed: int | None = None,
    ):
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidRequestError(f"retry: max_retries must be an integer >= 0, got {max_retries!r}")
        for name, value in (("initial_delay", initial_delay), ("max_delay", max_delay), ("multiplier", multiplier),
                            ("max_retry_after", max_retry_after)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise InvalidRequestError(f"retry: {name} must be a finite number >= 0, got {value!r}")
        self.max_retries = max_retries
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.max_retry_after = max_retry_after
        self.jitter = jitter
        self._random = random.Random(seed)

    def __repr__(self) -> str:
        return f"Retry(max_retries={self.max_retries})"

    def delay(self, attempt: int, error: BaseException) -> float | None:
        """Seconds before retry number `attempt + 1`, or None to give up now."""
        cap = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        delay = self._random.uniform(0, cap) if self.jitter else cap
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            delay = max(delay, retry_after)
        return delay

    def turn(self, call: Call, send: SendFn) -> Plan:
        attempt = 0
        failed: list[Attempt] = []
        while True:
            try:
                response = yield from send(call)
            except APIError as error:
                if attempt >= self.max_retries or not is_retryable(error):
                    error.retried = failed  # the requests that failed before this one (fallback records them)
                    raise
                # the failed request stays on record (its usage and cost, if the provider reported any)
                failed.append(Attempt(f"{call.provider.name}:{call.model}", error.partial, error))
                delay = self.delay(attempt, error)
                if delay is None:
                    error.retried = failed
                    raise
                attempt += 1
                yield Emit(RetryEvent(attempt, delay, error, call.provider.name, call.model))
                if delay > 0:
                    yield Sleep(delay)
                continue
            if failed:
                response.attempts = [*failed, *(response.attempts or [Attempt(failed[0].model, response, None)])]
            return response


class RetryPlan(Generator[Any, Any, Response]):
    """`with_middleware(single(call), [retry])` for a plain `Retry`, as one small object: the plan of
    every call of a default client. The generic way holds four generators, two closures and their
    cells and tuples, a list and the `Send` (19 GC-tracked objects per stream in flight,
    bench/scale_census.py); this holds one. It behaves as they do, action for action:
    tests/test_retry.py runs every end-to-end case both ways (a subclass of `Retry` takes the
    generic way, so an overridden `turn` is honoured)."""

    __slots__ = ("call", "retry", "attempt", "failed", "wait", "state")

    def __init__(self, call: Call, retry: Retry):
        self.call = call
        self.retry = retry
        self.attempt = 0
        self.failed: list[Attempt] | None = None  # the attempts that failed, once one did
        self.wait = 0.0
        self.state = 0  # 0 not started, 1 a Send out, 2 an Emit out (a retry decided), 3 a Sleep out, 4 finished

    def send(self, value: Any) -> Any:
        state = self.state
        if state == 1:  # the response: with the failed attempts on record, and the exchange as its messages
            self.state = 4
            failed = self.failed
            if failed:
                value.attempts = [*failed, *(value.attempts or [Attempt(failed[0].model, value, None)])]
            raise StopIteration(answered(self.call, value))
        if state == 0:
            if value is not None:
                raise TypeError("can't send non-None value to a just-started generator")
        elif state == 4:
            raise StopIteration
        elif state == 2 and self.wait > 0:
            self.state = 3
            return Sleep(self.wait)
        self.state = 1
        return Send(self.call)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        val = thrown(typ, val, tb)
        if self.state == 1 and isinstance(val, APIError):  # the turn failed: `Retry.turn`'s rules
            retry, call = self.retry, self.call
            if self.failed is None:
                self.failed = []
            if self.attempt < retry.max_retries and is_retryable(val):
                self.failed.append(Attempt(f"{call.provider.name}:{call.model}", val.partial, val))
                delay = retry.delay(self.attempt, val)
                if delay is not None:
                    self.attempt += 1
                    self.wait = delay
                    self.state = 2
                    return Emit(RetryEvent(self.attempt, delay, val, call.provider.name, call.model))
            val.retried = self.failed  # the requests that failed before this one (fallback records them)
        self.state = 4
        raise val

    def close(self) -> None:
        self.state = 4


def with_chain(plan: Plan, chain: Sequence[Middleware]) -> Plan:
    """`with_middleware(plan, chain)`; a one-request plan with a plain `Retry` alone is a `RetryPlan`."""
    if len(chain) == 1 and type(chain[0]) is Retry:
        call = single_call(plan)
        if call is not None:
            return RetryPlan(call, chain[0])
    return with_middleware(plan, chain)


def as_retry(value: Any) -> Retry | None:
    """`retry=` accepts a `Retry`, a number of retries, or None/0/False for none."""
    if value is None or value is False:
        return None
    if isinstance(value, Retry):
        return value if value.max_retries else None
    if isinstance(value, int) and not isinstance(value, bool):
        return Retry(value) if value else None
    raise InvalidRequestError(f"retry must be a Retry, an int >= 0 or None, got {value!r}")
