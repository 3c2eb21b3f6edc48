"""Observability: `hooks.py` (the `Hooks` observer API every call reports to, and
`CallContext`) and `tracing.py` (OpenTelemetry GenAI spans and metrics as hooks;
opentelemetry is imported only when `OpenTelemetryHooks` is built).
May import only the vocabulary (TYPE_CHECKING for the rest).
"""

from typing import TYPE_CHECKING, Any

from .hooks import CallContext, Hooks

if TYPE_CHECKING:
    from .recording import HookRecord, RecordingHooks
    from .tracing import OpenTelemetryHooks

__all__ = ["CallContext", "HookRecord", "Hooks", "OpenTelemetryHooks", "RecordingHooks"]


def __getattr__(name: str) -> Any:  # tracing and the recorder load on first use
    if name == "OpenTelemetryHooks":
        from .tracing import OpenTelemetryHooks

        return OpenTelemetryHooks
    if name in ("HookRecord", "RecordingHooks"):
        from . import recording

        return getattr(recording, name)
    raise AttributeError(f"module 'llmrelay.observability' has no attribute {name!r}")
