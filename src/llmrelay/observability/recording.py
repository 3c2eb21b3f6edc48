"""`RecordingHooks`: every hook call kept in a bounded in-memory deque, for tests and debugging."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from .hooks import CallContext, Hooks

__all__ = ["HookRecord", "RecordingHooks"]


def _scrub(text: str, secrets: Any) -> str:
    for s in secrets:
        if s and len(s) >= 4 and s in text:
            text = text.replace(s, "***")
    return text


@dataclass(frozen=True, slots=True)
class HookRecord:
    """One hook call: `kind` is the hook without `on_` (call_start, turn_start, first_token,
    tool_result, retry, fallback, turn_end, call_end)."""

    kind: str
    correlation_id: str
    timestamp: float
    details: dict[str, Any]


class RecordingHooks(Hooks):
    """Keeps the last `max_events` hook calls in memory (a bounded deque), for tests and debugging.

    Details are small summaries: never headers, API keys or message content;
    URLs without their query; error texts with known API keys masked.
    """

    def __init__(self, max_events: int = 1000):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.events: collections.deque[HookRecord] = collections.deque(maxlen=max_events)
        self._secrets: collections.OrderedDict[str, set] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[HookRecord]:
        return iter(list(self.events))

    def of(self, correlation_id: str) -> list[HookRecord]:
        return [e for e in self if e.correlation_id == correlation_id]

    def kinds(self, correlation_id: str | None = None) -> list[str]:
        return [e.kind for e in self if correlation_id is None or e.correlation_id == correlation_id]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self._secrets.clear()

    def _add(self, kind: str, ctx: CallContext, **details: Any) -> None:
        with self._lock:
            self.events.append(HookRecord(kind, ctx.correlation_id, time.time(), details))

    def _error(self, ctx: CallContext, error: BaseException | None) -> dict[str, Any]:
        if error is None:
            return {}
        return {"error_type": type(error).__qualname__, "error": _scrub(str(error), self._secrets.get(ctx.correlation_id, ()))[:1000]}

    def on_call_start(self, ctx: CallContext) -> None:
        requested = ctx.requested.models if hasattr(ctx.requested, "models") else ctx.requested
        self._add("call_start", ctx, requested=list(requested) if isinstance(requested, (list, tuple)) else str(requested),
                  stream=ctx.stream, tags=dict(ctx.tags))

    def on_turn_start(self, ctx: CallContext, call: Any, request: Any) -> None:
        if call.api_key:
            with self._lock:
                self._secrets.setdefault(ctx.correlation_id, set()).add(call.api_key)
                while len(self._secrets) > (self.events.maxlen or 1000):
                    self._secrets.popitem(last=False)
        url = urlsplit(request.url)
        self._add("turn_start", ctx, turn=ctx.turns, provider=call.provider.name, model=call.model,
                  method=request.method, url=f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}")

    def on_first_token(self, ctx: CallContext, call: Any, ttft: float) -> None:
        self._add("first_token", ctx, provider=call.provider.name, model=call.model, ttft=ttft)

    def on_tool_result(self, ctx: CallContext, result: Any) -> None:
        self._add("tool_result", ctx, name=result.name, call_id=result.call_id, ok=result.error is None,
                  duration=result.duration, **({"error": result.error[:1000]} if result.error else {}))

    def on_retry(self, ctx: CallContext, event: Any) -> None:
        self._add("retry", ctx, attempt=event.attempt, delay=event.delay, provider=event.provider, model=event.model,
                  **self._error(ctx, event.error))

    def on_fallback(self, ctx: CallContext, event: Any) -> None:
        self._add("fallback", ctx, from_model=event.from_model, to_model=event.to_model, mode=event.mode,
                  **self._error(ctx, event.error))

    def on_turn_end(self, ctx: CallContext, call: Any, response: Any) -> None:
        self._add("turn_end", ctx, provider=call.provider.name, model=response.model, status=response.status,
                  finish_reason=response.finish_reason, usage=response.usage.to_dict() | {"raw": None},
                  ttft=response.timings.time_to_first_token, **self._error(ctx, response.error))

    def on_call_end(self, ctx: CallContext, response: Any, error: BaseException | None) -> None:
        details = self._error(ctx, error or (response.error if response is not None else None))
        with self._lock:
            self._secrets.pop(ctx.correlation_id, None)
        if response is not None:
            details.update(status=response.status, provider=response.provider, model=response.model,
                           usage=response.usage.to_dict() | {"raw": None})
        self._add("call_end", ctx, **details)
