"""One configuration generation: the llmrelay client, the routes as model lists, the keys and their limits.

A SIGHUP builds a new `Gateway` and swaps it in; requests in flight keep the
one they started with, which is closed when its last request ends.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import random
from typing import Any

from ..client import Client
from ..providers import PROVIDERS, parse_model
from ..reliability.fallback import Router
from ..reliability.retry import Retry
from ..timeouts import Timeouts
from .config import GatewayConfig, Key, Route
from .encode import GatewayError
from .limits import LocalLimits
from .relay import RelayTransport

__all__ = ["Gateway"]


class Gateway:
    def __init__(self, config: GatewayConfig, *, async_backend: str = "aiohttp", tracer_provider: Any = None):
        self.config = config
        self.options = config.server
        providers: dict[str, Any] = {}
        api_keys: dict[str, str] = {}
        self.targets: dict[str, list[tuple[str, float]]] = {}  # route -> [(model string, weight)]
        n = 0
        cloud = False  # a cloud provider's credential chain needs the live os.environ (see cloud/)
        for route in config.routes.values():
            entries = []
            for t in route.targets:
                name, model_id = parse_model(t.model, PROVIDERS)
                cloud = cloud or PROVIDERS[name].cloud
                if t.base_url is not None or t.api_key is not None:
                    n += 1
                    base = PROVIDERS[name]
                    derived = f"{name}#{n}"
                    providers[derived] = base.__class__(
                        derived, base.protocol, t.base_url or base.base_url, () if t.api_key else base.key_env,
                        (), requires_key=base.requires_key if not t.api_key else True, stream_usage=base.stream_usage,
                        supports_prefill=base.supports_prefill, max_tokens_field=base.max_tokens_field,
                        reasoning_echo=base.reasoning_echo, unsupported=base.unsupported, headers=base.headers,
                        description=base.description, structured=base.structured)
                    if t.api_key:
                        api_keys[derived] = t.api_key
                    name = derived
                entries.append((f"{name}:{model_id}", t.weight))
            self.targets[route.name] = entries
        self._fixed: dict[str, list[str]] = {}
        for route in config.routes.values():
            if all(len(self.targets[name]) == 1 for name in (route.name, *route.fallbacks)):
                self._fixed[route.name] = self.models_for(route)
        hooks: list[Any] = []
        self.tracer: Any = None
        if config.server.otel:
            from opentelemetry import trace

            from ..observability.tracing import OpenTelemetryHooks

            hooks.append(OpenTelemetryHooks(tracer_provider=tracer_provider))
            self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("llmrelay.gateway")
        budgeted = any(k.budget is not None for k in config.keys.values())
        if budgeted:
            from .budget import BudgetHook

            hooks.append(BudgetHook())  # every upstream request's usage, for the budgets
        # env: a snapshot, taken once per gateway state (a config reload takes a new one). Nothing changes a
        # running gateway's environment from outside, and the derived providers' env names (`OPENAI#1_BASE_URL`)
        # were looked up in os.environ on every request (~2% of its CPU). Not with a cloud route: the cloud
        # credential chains (botocore, azure-identity, google-auth) run only with the live os.environ.
        self.client = Client(providers=providers, api_keys=api_keys, retry=0, async_backend=async_backend,
                             log=(config.logging or True) if config.logging is not None else False, hooks=hooks,
                             env=None if cloud else dict(os.environ))
        self.protocols = {name: p.protocol for name, p in self.client.providers.items()}
        self.client._async_transport = RelayTransport(self.client._async())
        self.timeouts = {name: _timeouts(r.timeout) for name, r in config.routes.items()}
        self.retries: dict[str, Any] = {name: Retry(r.retries, initial_delay=0.05, max_delay=2.0) if r.retries else 0
                                        for name, r in config.routes.items()}
        self.limits = LocalLimits()
        self.shared: Any = None  # RedisLimits when the config has a limits store
        if config.limits is not None:
            from .limits import RedisLimits

            self.shared = RedisLimits(config.limits, self.limits)
        self.budgets: Any = None  # Budgets when a key has a budget
        if budgeted:
            from .budget import Budgets

            self.budgets = Budgets(self)
        self.in_flight = 0
        self.retired = False

    @property
    def log_hook(self) -> Any:
        from ..logs import LogHook

        return next((h for h in self.client.hooks if isinstance(h, LogHook)), None)

    # -- auth and limits ----------------------------------------------------------------------
    def authenticate(self, headers: dict[str, str]) -> Key | None:
        """The key of this request (None when the gateway is open); raises GatewayError(401)."""
        if not self.config.keys:
            return None
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "").strip()
        if not token:
            raise GatewayError(401, "missing API key: send Authorization: Bearer <key> or x-api-key", "authentication_error")
        key = self.config.keys.get("sha256:" + hashlib.sha256(token.encode()).hexdigest())
        if key is None:
            raise GatewayError(401, "invalid API key", "authentication_error")
        if key.expires is not None and _dt.datetime.now(_dt.timezone.utc) >= key.expires:
            raise GatewayError(401, f"API key {key.name!r} expired on {key.expires.isoformat()}", "authentication_error")
        return key

    def allowed(self, key: Key | None, model: str) -> bool:
        return key is None or key.models is None or model in key.models

    def acquire(self, key: Key | None) -> Any:
        """None when admitted here and now (no limits, or counted in this process), else the shared store's
        admission to await (one Redis round trip) for a `Held` to pass to `shared.release`. Raises
        GatewayError(429) when over a limit."""
        if key is None or (key.max_parallel is None and key.rpm is None):
            return None
        if self.shared is not None:
            return self.shared.acquire(key)
        self.limits.acquire(key)
        return None

    def release(self, key: Key | None) -> None:
        """The end of a request admitted by `acquire` without the shared store."""
        if key is not None and self.shared is None and (key.max_parallel is not None or key.rpm is not None):
            self.limits.release(key)

    # -- routing ------------------------------------------------------------------------------
    def route(self, model: str) -> Route:
        route = self.config.routes.get(model)
        if route is None:
            raise GatewayError(404, f"The model {model!r} does not exist (known: {', '.join(self.config.routes)})",
                               "not_found_error")
        return route

    def models_for(self, route: Route) -> list[str]:
        """The targets in the order to try them: one picked by weight first, then the rest, then each fallback's."""
        fixed = self._fixed.get(route.name)
        if fixed is not None:  # no weighted pick on the way: the same list every time
            return fixed
        out: list[str] = []
        for name in (route.name, *route.fallbacks):
            entries = self.targets[name]
            if len(entries) > 1:
                first = random.choices(range(len(entries)), weights=[w for _, w in entries])[0]
                entries = [entries[first]] + [e for i, e in enumerate(entries) if i != first]
            out.extend(m for m, _ in entries if m not in out)
        return out

    def call_options(self, route: Route) -> dict[str, Any]:
        models = self.models_for(route)
        opts: dict[str, Any] = {"retry": self.retries[route.name], "run_tools": False}
        if self.timeouts[route.name] is not None:
            opts["timeout"] = self.timeouts[route.name]
        opts["model"] = models[0] if len(models) == 1 else Router(models, mode=route.fallback_mode)
        return opts

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.budgets is not None:
            await self.budgets.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        hook = self.log_hook
        if hook is not None:
            import asyncio

            await asyncio.to_thread(hook.close)


def _timeouts(value: Any) -> Timeouts | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return Timeouts(**value)
    return Timeouts.of(value)
