"""Built-in middlewares: `Timeout` (per-turn timeouts) and `Logging` (one record per turn).

Both wrap a model turn (see `llmrelay.reliability.middleware`), so they work the same for
`stream`, `astream`, `complete` and `acomplete`, and for every provider:

    import logging
    import llmrelay
    from llmrelay.reliability import Logging, Timeout

    logging.basicConfig(level=logging.INFO)
    client = llmrelay.Client(middleware=[
        Logging(),                            # "llmrelay" logger, content masked
        Timeout(first_token=10, idle=30),     # give up on a stuck model (then Retry / fallback)
    ])
    client.complete(["openai:gpt-4o", "anthropic:claude-sonnet-4-5"], "Hi")

A model list wraps the whole chain, so each model tried gets the timeouts and
its own pair of log records; `Retry` is innermost, so a turn logged once may
have been sent more than once (its `RetryEvent`s say so).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import replace
from typing import Any

from .. import events as ev
from .middleware import Middleware, SendFn
from ..engine.plan import Plan
from ..call import Call
from ..timeouts import Timeouts
from ..usage import Usage

__all__ = ["Timeout", "Logging"]

_UNSET: Any = object()
_CONTENT = frozenset(ev.CONTENT_EVENTS)


class Timeout(Middleware):
    """Set timeouts for each model turn it wraps (seconds; None turns one off).

    Only the fields given change; the others keep the call's (the client's or
    the per-call `timeout=`). `first_token` bounds the wait from sending the
    request to the first content (text, reasoning, tool call), keep-alives or
    not; `idle` the longest silence between two chunks; `total` the whole turn.
    A timeout before content is retried by `Retry` and moves a model list on;
    after content it raises `APITimeoutError` with the partial response (or a
    model list continues, per its mode).
    """

    def __init__(
        self,
        first_token: float | None = _UNSET,
        idle: float | None = _UNSET,
        total: float | None = _UNSET,
        *,
        connect: float | None = _UNSET,
        first_byte: float | None = _UNSET,
        write: float | None = _UNSET,
    ):
        given = {"first_token": first_token, "idle": idle, "total": total, "connect": connect,
                 "first_byte": first_byte, "write": write}
        self.changes = {k: v for k, v in given.items() if v is not _UNSET}
        for name, value in self.changes.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"Timeout({name}=...) must be a positive number of seconds or None, got {value!r}")

    def __repr__(self) -> str:
        return "Timeout(" + ", ".join(f"{k}={v!r}" for k, v in self.changes.items()) + ")"

    def apply(self, call: Call) -> Call:
        """The call with these timeouts."""
        return replace(call, timeouts=replace(call.timeouts or Timeouts(), **self.changes))

    def turn(self, call: Call, send: SendFn) -> Plan:
        return (yield from send(self.apply(call)))


_turn_ids = itertools.count(1)


class _Watch:
    """What a turn showed so far (for a turn aborted before its response exists)."""

    __slots__ = ("t_first", "usage", "text")

    def __init__(self) -> None:
        self.t_first: float | None = None
        self.usage: Usage | None = None
        self.text: list[str] | None = None

    def __call__(self, event: Any) -> Any:
        t = type(event)
        if t is ev.UsageEvent:
            if self.usage is None:
                self.usage = Usage()
            self.usage.merge(event.usage)
        elif t in _CONTENT:
            if self.t_first is None:
                self.t_first = time.perf_counter()
            if self.text is not None and t is ev.TextDelta and event.choice == 0:
                self.text.append(event.text)
        return event


class Logging(Middleware):
    """Log each model turn through Python `logging`: a record when it starts, one when it ends.

    - Start (at `level`): provider, model, message count, and the messages'
      content only with `log_content=True` (masked by default).
    - End: status ("ok", "truncated", "error", "aborted"), usage, time to first
      token, duration, and for a failure the error type (at `error_level`,
      WARNING by default; an early close by the caller is "aborted", at `level`).
      With `log_content=True` the answer text too.
    - API keys are never logged (nor headers); with `log_content`, a key that
      appears in the text is masked as well.

    Records carry the same data as a dict in `record.llmrelay` (for JSON log
    formatters): `{"event": "turn_start" | "turn_end", "turn": n, ...}`. One
    record per turn, never per chunk.
    """

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        level: int = logging.INFO,
        *,
        log_content: bool = False,
        error_level: int = logging.WARNING,
    ):
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or "llmrelay")
        self.logger = logger
        self.level = level
        self.log_content = log_content
        self.error_level = error_level

    def __repr__(self) -> str:
        return f"Logging(logger={self.logger.name!r}, level={logging.getLevelName(self.level)}, log_content={self.log_content})"

    def turn(self, call: Call, send: SendFn) -> Plan:
        log = self.logger
        if not log.isEnabledFor(min(self.level, self.error_level)):
            return (yield from send(call))
        turn_id = next(_turn_ids)
        mask = _masker(call.api_key)
        info: dict[str, Any] = {
            "event": "turn_start",
            "turn": turn_id,
            "provider": call.provider.name,
            "model": call.model,
            "messages": len(call.messages),
        }
        if self.log_content:
            info["content"] = [{"role": m.role, "text": mask(m.text)} for m in call.messages]
        self._log(self.level, info)
        started = time.perf_counter()
        watch = _Watch()
        if self.log_content:
            watch.text = []
        response: Any = None
        error: BaseException | None = None
        status = "aborted"
        try:
            response = yield from send(call, on_event=watch)
            status = response.status
            return response
        except GeneratorExit:  # the caller closed the stream: no response will come
            status = "aborted"
            raise
        except BaseException as exc:
            error = exc
            status = "aborted" if type(exc).__name__ == "CancelledError" or isinstance(exc, KeyboardInterrupt) else "error"
            raise
        finally:
            self._end(turn_id, call, started, watch, response, error, status, mask)

    def _end(self, turn_id: int, call: Call, started: float, watch: _Watch, response: Any,
             error: BaseException | None, status: str, mask: Any) -> None:
        duration = time.perf_counter() - started
        source = response if response is not None else getattr(error, "partial", None)
        usage = source.usage if source is not None else watch.usage
        ttft = source.timings.time_to_first_token if source is not None else None
        if ttft is None and watch.t_first is not None:
            ttft = watch.t_first - started
        info: dict[str, Any] = {
            "event": "turn_end",
            "turn": turn_id,
            "provider": (response.provider if response is not None else None) or call.provider.name,
            "model": (response.model if response is not None else None) or call.model,
            "status": status,
            "input_tokens": usage.input_tokens if usage is not None else None,
            "output_tokens": usage.output_tokens if usage is not None else None,
            "usage_estimated": bool(usage is not None and usage.estimated),
            "ttft": round(ttft, 4) if ttft is not None else None,
            "duration": round(duration, 4),
        }
        if response is not None and response.finish_reason is not None:
            info["finish_reason"] = response.finish_reason
        if error is not None:
            info["error"] = type(error).__name__
            code = getattr(error, "status_code", None)
            if code:
                info["status_code"] = code
        if self.log_content:
            text = source.text if source is not None else "".join(watch.text or ())
            info["text"] = mask(text)
        level = self.error_level if status == "error" else self.level
        self._log(level, info)

    def _log(self, level: int, info: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(level):
            return
        head = f"llmrelay turn {info['turn']} {'start' if info['event'] == 'turn_start' else 'end'}"
        fields = " ".join(f"{k}={_fmt(v)}" for k, v in info.items() if k not in ("event", "turn", "content", "text"))
        if info["event"] == "turn_start" and "content" not in info:
            fields += " content=<masked>"
        message = f"{head}: {fields}"
        if "content" in info:
            message += f" content={info['content']!r}"
        if "text" in info:
            message += f" text={info['text']!r}"
        self.logger.log(level, "%s", message, extra={"llmrelay": info})


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}s"
    return str(value)


def _masker(secret: str | None) -> Any:
    if not secret or len(secret) < 4:
        return lambda text: text
    return lambda text: text.replace(secret, "***") if text else text
