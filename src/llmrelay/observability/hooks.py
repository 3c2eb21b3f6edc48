"""Hooks: observe every call without touching the hot path.

Subclass `Hooks` and override what you need; pass instances with
`Client(hooks=[...])` or per call (`hooks=[...]`). Logs (`llmrelay.logs`) and
OpenTelemetry tracing (`llmrelay.observability.tracing`) are hooks too.

    class Printer(llmrelay.Hooks):
        def on_first_token(self, ctx, call, ttft):
            print(ctx.correlation_id, call.model, f"TTFT {ttft * 1000:.0f} ms")

        def on_turn_end(self, ctx, call, response):
            print(response.status, response.usage.output_tokens)

One `CallContext` (one `correlation_id`) spans a whole logical call: every
tool round, retry and fallback attempt. The caller may give its own
`correlation_id=` (a request id) and `conversation_id=` (a chat thread) per
call; an id is generated only for a correlation id not given, never for a
conversation. Each model request is a *turn*:
`on_turn_start` and `on_turn_end` come in pairs for every outcome, including
errors and an early `close()` (status "aborted"). Nothing is called per chunk;
`on_first_token` is called once per turn.

A hook that raises never breaks the stream: the error is reported with a
warning (`HookWarning`) and counted in `HOOK_ERRORS`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from random import getrandbits
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from ..events import FallbackEvent, RetryEvent, ToolResult
    from ..call import Call, HTTPRequest
    from ..response import Response


class HookWarning(RuntimeWarning):
    pass


#: How many hook calls raised (per process).
HOOK_ERRORS = {"count": 0}
#: The default client's hook list (`llmrelay.default_client().hooks` is this list): `llmrelay.logs.enable()`
#: appends here, so it works before or after the default client exists.
DEFAULT_CLIENT_HOOKS: list["Hooks"] = []


@dataclass(slots=True)
class CallContext:
    """One logical call: what `stream()` / `complete()` was asked to do."""

    #: The caller's `correlation_id=`, else a generated one (128 random bits, like uuid4).
    correlation_id: str = field(default_factory=lambda: "%032x" % getrandbits(128))  # no system call per call
    #: Caller-supplied labels (`tags={"user": "alice"}`).
    tags: dict[str, Any] = field(default_factory=dict)
    #: The model argument as given (a string, a list or a Router).
    requested: Any = None
    #: Wall-clock start (seconds since the epoch) and streaming mode.
    started_at: float = field(default_factory=time.time)
    stream: bool = True
    turns: int = 0
    #: The caller's `conversation_id=` (never generated: None when not given).
    conversation_id: str | None = None
    #: True when `correlation_id` came from the caller.
    correlation_given: bool = False


class Hooks:
    """No-op base: override any method. All arguments are read-only views."""

    def on_call_start(self, ctx: CallContext) -> None:
        pass

    def on_turn_start(self, ctx: CallContext, call: Call, request: HTTPRequest) -> None:
        pass

    def on_first_token(self, ctx: CallContext, call: Call, ttft: float) -> None:
        pass

    def on_tool_result(self, ctx: CallContext, result: ToolResult) -> None:
        pass

    def on_retry(self, ctx: CallContext, event: RetryEvent) -> None:
        pass

    def on_fallback(self, ctx: CallContext, event: FallbackEvent) -> None:
        pass

    def on_turn_end(self, ctx: CallContext, call: Call, response: Response) -> None:
        """Every outcome: `response.status` is ok, truncated, error or aborted."""

    def on_call_end(self, ctx: CallContext, response: Response | None, error: BaseException | None) -> None:
        pass


def notify(hooks: Sequence[Hooks], method: str, *args: Any) -> None:
    """Call `method` on every hook; a failing hook is reported, never raised."""
    for hook in hooks:
        try:
            getattr(hook, method)(*args)
        except Exception as exc:  # a broken hook must not break the stream
            HOOK_ERRORS["count"] += 1
            warnings.warn(f"{type(hook).__name__}.{method} raised {type(exc).__name__}: {exc}", HookWarning, stacklevel=2)
