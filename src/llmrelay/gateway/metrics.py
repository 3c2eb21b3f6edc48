"""Prometheus metrics for the gateway, in-process and dependency-free (text exposition format 0.0.4).

Updated once per request when it ends (never per chunk); `/metrics` renders them.
With `llmrelay serve --workers N`, each worker writes `snapshot()` to a small file
once a second and `/metrics` adds the other workers' snapshots to its own live
values (`render(others)`, see workers.py): the whole server, whichever worker answers.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Any

from ..cost.prices import cost_of, rejected

__all__ = ["Metrics"]

_OVERHEAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _Histogram:
    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.series: dict[tuple[str, ...], list[float]] = {}  # labels -> [count per bucket..., +Inf, sum]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        s[bisect.bisect_left(self.bounds, value)] += 1
        s[-1] += value


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_COUNTERS = ("requests", "upstream", "tokens", "cost")
_HISTOGRAMS = ("overhead", "ttft", "lag")
_GAUGES = ("in_flight", "in_flight_streams")
_PROCESS = ("store_errors", "log_rows")  # counters of the process, not of one Metrics (they outlive a reload)


def merge(into: dict[str, Any], snap: dict[str, Any], gauges: bool = True) -> None:
    """Add one `snapshot()` to `into` (the same shape, with tuple keys): counters and histograms
    summed, gauges summed too unless `gauges=False` (a worker that has exited)."""
    for name in _COUNTERS + _PROCESS:
        dst = into.setdefault(name, {})
        for labels, value in snap.get(name, ()):
            k = tuple(labels)
            dst[k] = dst.get(k, 0) + value
    for name in _HISTOGRAMS:
        dst = into.setdefault(name, {})
        for labels, series in snap.get(name, ()):
            k = tuple(labels)
            have = dst.get(k)
            if have is None:
                dst[k] = list(series)
            elif len(have) == len(series):  # the same buckets (a worker of another version may differ)
                dst[k] = [a + b for a, b in zip(have, series)]
    if gauges:
        for name in _GAUGES:
            into[name] = into.get(name, 0) + snap.get(name, 0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, ...], int] = {}  # (endpoint, model, status)
        self.upstream: dict[tuple[str, ...], int] = {}  # (model,)
        self.tokens: dict[tuple[str, ...], int] = {}  # (model, kind)
        self.cost: dict[tuple[str, ...], float] = {}  # (model,)
        self.overhead = _Histogram(_OVERHEAD_BUCKETS)
        self.ttft = _Histogram(_TTFT_BUCKETS)
        self.lag = _Histogram(_LAG_BUCKETS)
        self.in_flight = 0
        self.in_flight_streams = 0
        self.last_lag = 0.0
        self.started = time.time()
        self._pricing: Any = None
        self.cost_dropped = 0
        self.log_hook: Any = None  # the gateway's LogHook, for the log_rows counter (set by GatewayApp)

    def request_done(self, endpoint: str, model: str, status: str, overhead_ms: float | None,
                     response: Any = None, upstream_requests: int = 0) -> None:
        key = (endpoint, model, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if upstream_requests:
            self.upstream[(model,)] = self.upstream.get((model,), 0) + upstream_requests
        if overhead_ms is not None:
            self.overhead.observe((endpoint,), overhead_ms)
        if response is None:
            return
        u = response.usage
        tokens = self.tokens
        for kind, value in (("input", u.input_tokens), ("output", u.output_tokens), ("cached", u.cached_input_tokens),
                            ("cache_write", u.cache_write_tokens), ("reasoning", u.reasoning_tokens)):
            if value:
                k = (model, kind)
                tokens[k] = tokens.get(k, 0) + value
        ttft = response.timings.time_to_first_token
        if ttft is not None:
            self.ttft.observe((model,), ttft)
        if not u.is_empty() and rejected(response) is None:  # a rejection is not billed (as Response.cost says)
            self._price(model, (response.provider, response.model, response.requested_model, u,
                                getattr(response, "_prices", None)))

    def _price(self, model: str, inputs: tuple[Any, ...]) -> None:
        """Cost is priced on a background thread: genai-prices takes ~1 ms per new usage value,
        too long for the event loop. The queue is bounded; beyond it, costs are counted as dropped.
        The thread drains a plain deque a few times a second: appending takes no lock and wakes no
        thread, so the event loop pays nothing per request for it. The queue holds what pricing
        needs (provider, models, usage), not the responses: ~25 objects per request kept alive
        until the thread ran made every young collection of the garbage collector walk them."""
        q = self._pricing
        if q is None:
            import collections
            import threading

            q = self._pricing = collections.deque()
            threading.Thread(target=self._pricer, name="llmrelay-gateway-pricing", daemon=True).start()
        if len(q) < 10_000:
            q.append((model, inputs))
        else:
            self.cost_dropped += 1

    def _pricer(self, interval: float = 0.1) -> None:
        q = self._pricing
        while True:
            time.sleep(interval)
            while q:
                model, (provider, served, requested, usage, prices) = q.popleft()  # type: ignore[union-attr]
                try:
                    total = cost_of(provider, served, usage, prices=prices, requested_model=requested).total
                except Exception:  # pricing must never fail anything
                    total = None
                if total:
                    self.cost[(model,)] = self.cost.get((model,), 0.0) + total

    async def watch_loop(self, interval: float = 0.25) -> None:
        """Event-loop lag: how late a sleep wakes up (a busy loop delays every stream)."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - t0 - interval)
            self.last_lag = lag
            self.lag.observe((), lag)

    def snapshot(self) -> dict[str, Any]:
        """The values as plain JSON data (lists, not tuple keys); cheap copies, safe against the pricing thread."""
        snap: dict[str, Any] = {name: [[list(k), v] for k, v in list(getattr(self, name).items())] for name in _COUNTERS}
        for name in _HISTOGRAMS:
            snap[name] = [[list(k), list(v)] for k, v in list(getattr(self, name).series.items())]
        for name in _GAUGES:
            snap[name] = getattr(self, name)
        for name, values in self._process().items():
            snap[name] = [[list(k), v] for k, v in values.items()]
        return snap

    def _process(self) -> dict[str, dict[tuple[str, ...], int]]:
        from .limits import STORE_ERRORS

        out: dict[str, dict[tuple[str, ...], int]] = {"store_errors": {(): STORE_ERRORS[0]}, "log_rows": {}}
        hook = self.log_hook  # one per store and process, shared by the configuration generations
        if hook is not None:
            st = hook.stats
            out["log_rows"] = {("written",): st.written, ("dropped",): st.dropped, ("failed",): st.failed}
        return out

    def render(self, others: list[dict[str, Any]] | None = None) -> bytes:
        """Prometheus text: this process's values, plus `others` (merged snapshots of the other workers)."""
        if others is None:
            data: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS + _GAUGES}
            data.update((name, getattr(self, name).series) for name in _HISTOGRAMS)
            data.update(self._process())
            workers = 1
        else:
            data = {}
            merge(data, self.snapshot())
            for snap in others:
                merge(data, snap, gauges=snap.get("alive", True))
            workers = 1 + sum(1 for snap in others if snap.get("alive", True))
        out: list[str] = []

        def counter(name: str, help_: str, names: tuple[str, ...], data: dict[tuple[str, ...], Any]) -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} counter")
            out.extend(f"{name}{_labels(names, k)} {v}" for k, v in sorted(data.items()))

        def histogram(name: str, help_: str, names: tuple[str, ...], bounds: tuple[float, ...],
                      series: dict[tuple[str, ...], list[float]]) -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} histogram")
            for k, s in sorted(series.items()):
                cumulative = 0.0
                for bound, count in zip(bounds + (float("inf"),), s[:-1]):
                    cumulative += count
                    le = 'le="' + ("+Inf" if bound == float("inf") else repr(bound)) + '"'
                    out.append(f"{name}_bucket{_labels(names, k, le)} {int(cumulative)}")
                out.append(f"{name}_sum{_labels(names, k)} {s[-1]}")
                out.append(f"{name}_count{_labels(names, k)} {int(cumulative)}")

        counter("llmrelay_gateway_requests_total", "Gateway requests by endpoint, model and outcome.",
                ("endpoint", "model", "status"), data["requests"])
        counter("llmrelay_gateway_upstream_requests_total", "Upstream requests (retries and fallbacks included).",
                ("model",), data["upstream"])
        counter("llmrelay_gateway_tokens_total", "Tokens by model and kind (cached, cache_write and reasoning are "
                "subsets of input and output).", ("model", "kind"), data["tokens"])
        counter("llmrelay_gateway_cost_usd_total", "Cost in USD, where a price is known.", ("model",), data["cost"])
        histogram("llmrelay_gateway_overhead_ms", "Time the gateway added (wall time minus upstream waits), ms.",
                  ("endpoint",), _OVERHEAD_BUCKETS, data["overhead"])
        histogram("llmrelay_gateway_ttft_seconds", "Time to first token of the answering upstream request.",
                  ("model",), _TTFT_BUCKETS, data["ttft"])
        histogram("llmrelay_gateway_event_loop_lag_seconds", "Event-loop lag (sleep overshoot), every worker's.", (),
                  _LAG_BUCKETS, data["lag"])
        counter("llmrelay_gateway_log_rows_total", "Log rows (one per upstream request): written, dropped (the "
                "writer's queue was full) or failed (the log store failed).", ("outcome",), data["log_rows"])
        counter("llmrelay_gateway_limits_store_errors_total", "Failed calls to the shared limits store (each "
                "admission among them followed on_store_error).", (), data["store_errors"])
        out.append("# HELP llmrelay_gateway_in_flight_requests Requests being served.\n"
                   "# TYPE llmrelay_gateway_in_flight_requests gauge")
        out.append(f"llmrelay_gateway_in_flight_requests {data['in_flight']}")
        out.append("# HELP llmrelay_gateway_in_flight_streams Streaming responses being served.\n"
                   "# TYPE llmrelay_gateway_in_flight_streams gauge")
        out.append(f"llmrelay_gateway_in_flight_streams {data['in_flight_streams']}")
        out.append("# HELP llmrelay_gateway_workers Worker processes whose values this answer includes.\n"
                   "# TYPE llmrelay_gateway_workers gauge")
        out.append(f"llmrelay_gateway_workers {workers}")
        return ("\n".join(out) + "\n").encode()
