"""Reliability: middleware around one model turn, and the built-ins made with it.

`middleware.py` (the `Middleware` protocol and the runner), `retry.py` (`Retry`:
backoff, Retry-After, only before content), `fallback.py` (`Router`: the next model
answers in the same stream, modes prefill / user_turn / restart), `builtins.py`
(`Logging`, `Timeout`). Written as plans (engine), so sync and async share them.
May import the engine and below.
"""

from typing import TYPE_CHECKING, Any

from ..engine.plan import Emit, Plan, Send, Sleep
from .fallback import Router
from .middleware import Middleware, SendFn
from .retry import Retry

if TYPE_CHECKING:
    from .builtins import Logging, Timeout

__all__ = ["Emit", "Logging", "Middleware", "Plan", "Retry", "Router", "Send", "SendFn", "Sleep", "Timeout"]


def __getattr__(name: str) -> Any:  # the built-ins (and `logging`) load on first use
    if name in ("Logging", "Timeout"):
        from . import builtins

        return getattr(builtins, name)
    raise AttributeError(f"module 'llmrelay.reliability' has no attribute {name!r}")
