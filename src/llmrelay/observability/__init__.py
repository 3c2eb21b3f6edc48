"""Observability: `hooks.py` (the `Hooks` observer API every call reports to, and
`CallContext`) and `tracing.py` (OpenTelemetry GenAI spans and metrics as hooks;
opentelemetry is imported only when `OpenTelemetryHooks` is built).
May import only the vocabulary (TYPE_CHECKING for the rest).
"""
