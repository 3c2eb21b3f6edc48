"""`Client`: configuration (keys, base URLs, timeouts, HTTP pools) and the four calls.

Building a `Client` is cheap: HTTP pools are created on first use and reused
for every later call on the same client.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Mapping

from .errors import InvalidRequestError, UnsupportedParameterError
from .messages import normalize_messages
from .protocols._base import Call, Params
from .providers import PROVIDERS, Provider, parse_model, resolve_api_key, resolve_base_url
from .response import Response
from .plan import single, tool_loop
from .stream import AsyncStream, Stream, StreamCore
from .timeouts import Timeouts

_PARAM_NAMES = tuple(Params.__slots__)  # type: ignore[attr-defined]
_CALL_OPTIONS = ("extra_body", "extra_headers", "timeout", "api_key", "base_url", "provider", "tools", "tool_choice")
_LOOP_OPTIONS = ("max_tool_rounds", "run_tools", "tool_errors")


def protocol_module(name: str) -> Any:
    return importlib.import_module(f"llmrelay.protocols.{name}")


def _check_params(raw: dict[str, Any]) -> Params:
    unknown = sorted(set(raw) - set(_PARAM_NAMES))
    if unknown:
        raise InvalidRequestError(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))}. Known: {', '.join(_PARAM_NAMES)}; "
            "pass provider-specific fields with extra_body={...}."
        )
    p = Params(**raw)
    for name in ("temperature", "top_p"):
        v = getattr(p, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InvalidRequestError(f"{name} must be a number, got {v!r}")
    for name in ("max_tokens", "seed", "thinking_budget", "n"):
        v = getattr(p, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise InvalidRequestError(f"{name} must be an integer, got {v!r}")
    if p.max_tokens is not None and p.max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {p.max_tokens}")
    if isinstance(p.stop, str):
        p.stop = [p.stop]
    elif p.stop is not None:
        if not isinstance(p.stop, (list, tuple)) or not all(isinstance(s, str) for s in p.stop):
            raise InvalidRequestError(f"stop must be a string or a list of strings, got {p.stop!r}")
        p.stop = list(p.stop)
    if p.reasoning_effort is not None and p.reasoning_effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
        raise InvalidRequestError(f"reasoning_effort must be one of none, minimal, low, medium, high, xhigh; got {p.reasoning_effort!r}")
    return p


class Client:
    """Holds configuration and HTTP pools; offers `stream`, `astream`, `complete`, `acomplete`.

    - `api_keys` / `base_urls`: per provider name (override the env vars).
    - `providers`: extra or replaced `Provider` profiles (an OpenAI-compatible
      service is one `Provider(name, "openai_chat", base_url, key_env)`).
    - `aliases`: names that stand for a model string.
    - `timeout`: a `Timeouts` or seconds.
    - `http_client` / `async_http_client`: your own `httpx.Client` / `httpx.AsyncClient`;
      or `transport` / `async_transport`: an httpx transport (e.g. `httpx.MockTransport`).
    """

    def __init__(
        self,
        *,
        api_keys: Mapping[str, str] | None = None,
        base_urls: Mapping[str, str] | None = None,
        providers: Mapping[str, Provider] | None = None,
        aliases: Mapping[str, str] | None = None,
        timeout: Timeouts | float | None = None,
        http_client: Any = None,
        async_http_client: Any = None,
        transport: Any = None,
        async_transport: Any = None,
        env: Mapping[str, str] | None = None,
    ):
        self.api_keys = dict(api_keys or {})
        self.base_urls = dict(base_urls or {})
        self.providers: dict[str, Provider] = {**PROVIDERS, **(providers or {})}
        self.aliases = dict(aliases or {})
        self.timeouts = Timeouts.of(timeout)
        self._env = env
        self._http_args = (http_client, transport)
        self._async_http_args = (async_http_client, async_transport)
        self._sync_transport: Any = None
        self._async_transport: Any = None

    # -- preparing a call (pure) ---------------------------------------------
    def prepare(self, model: str, messages: Any, **kwargs: Any) -> tuple[Call, Any, Any, Timeouts]:
        """Resolve, validate and encode a call without sending it: (call, request, decoder, timeouts)."""
        call, request, timeouts = self._prepare(model, messages, kwargs)
        return call, request, protocol_module(call.provider.protocol).Decoder(), timeouts

    def _prepare(self, model: str, messages: Any, kwargs: dict[str, Any]) -> tuple[Call, Any, Timeouts]:
        options = {k: kwargs.pop(k) for k in _CALL_OPTIONS if k in kwargs}
        params = _check_params(kwargs)
        env = os.environ if self._env is None else self._env
        if options.get("provider"):
            name = options["provider"]
            if name not in self.providers:
                parse_model(f"{name}:{model}", self.providers)  # raises UnknownProviderError
            model_id = model
        else:
            name, model_id = parse_model(model, self.providers, self.aliases)
        provider = self.providers[name]
        module = protocol_module(provider.protocol)
        unsupported = [f for f in params.set_fields() if f not in module.PARAMS or f in provider.unsupported]
        if unsupported:
            raise UnsupportedParameterError(
                provider.name, unsupported[0], "Drop it, or pass a provider-specific field with extra_body={...}."
            )
        base_url = resolve_base_url(provider, options.get("base_url") or self.base_urls.get(name), env)
        api_key = resolve_api_key(provider, options.get("api_key") or self.api_keys.get(name), env)
        for opt in ("extra_body", "extra_headers"):
            if options.get(opt) is not None and not isinstance(options[opt], dict):
                raise InvalidRequestError(f"{opt} must be a dict, got {type(options[opt]).__name__}")
        tools: dict[str, Any] = {}
        if options.get("tools"):
            from .tools import as_tools  # lazy: pydantic and inspect load only for tool users

            tools = as_tools(options["tools"])
        tool_choice = options.get("tool_choice")
        if tool_choice is not None and tool_choice not in ("auto", "none", "required") and tool_choice not in tools:
            raise InvalidRequestError(
                f"tool_choice must be 'auto', 'none', 'required' or the name of a given tool; got {tool_choice!r}"
            )
        call = Call(
            provider=provider,
            model=model_id,
            base_url=base_url,
            api_key=api_key,
            messages=normalize_messages(messages),
            params=params,
            extra_body=options.get("extra_body"),
            extra_headers=options.get("extra_headers"),
            tools=list(tools.values()) or None,
            tool_choice=tool_choice,
        )
        request = module.encode(call)  # encode now: a bad request fails here, not mid-iteration
        timeouts = Timeouts.of(options["timeout"]) if "timeout" in options else self.timeouts
        return call, request, timeouts

    def _plan(self, model: str, messages: Any, kwargs: dict[str, Any]) -> tuple[Any, Call, Any, Timeouts]:
        loop = {k: kwargs.pop(k) for k in _LOOP_OPTIONS if k in kwargs}
        call, request, timeouts = self._prepare(model, messages, kwargs)
        if call.tools:
            errors = loop.get("tool_errors", "return")
            if errors not in ("return", "raise"):
                raise InvalidRequestError(f"tool_errors must be 'return' or 'raise', got {errors!r}")
            rounds = loop.get("max_tool_rounds", 10)
            if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
                raise InvalidRequestError(f"max_tool_rounds must be a non-negative integer, got {rounds!r}")
            plan = tool_loop(call, {t.name: t for t in call.tools}, max_rounds=rounds,
                             run_tools=loop.get("run_tools", True), raise_tool_errors=errors == "raise")
        else:
            plan = single(call)
        return plan, call, request, timeouts

    # -- the four calls -----------------------------------------------------
    def stream(self, model: str, messages: Any, **params: Any) -> Stream:
        """Stream a response. Options besides the generation params: `tools`, `tool_choice`,
        `max_tool_rounds` (10), `run_tools` (True), `tool_errors` ("return" | "raise"),
        `extra_body`, `extra_headers`, `timeout`, `api_key`, `base_url`, `provider`."""
        plan, call, request, timeouts = self._plan(model, messages, params)
        return Stream(plan, _Engine(self._sync(), timeouts, call, request))

    def astream(self, model: str, messages: Any, **params: Any) -> AsyncStream:
        plan, call, request, timeouts = self._plan(model, messages, params)
        return AsyncStream(plan, _Engine(self._async(), timeouts, call, request))

    def complete(self, model: str, messages: Any, **params: Any) -> Response:
        with self.stream(model, messages, **params) as s:
            return s.collect()

    async def acomplete(self, model: str, messages: Any, **params: Any) -> Response:
        async with self.astream(model, messages, **params) as s:
            return await s.collect()

    # -- transports -----------------------------------------------------------
    def _sync(self) -> Any:
        if self._sync_transport is None:
            from .transport import SyncTransport

            self._sync_transport = SyncTransport(*self._http_args)
        return self._sync_transport

    def _async(self) -> Any:
        if self._async_transport is None:
            from .transport import AsyncTransport

            self._async_transport = AsyncTransport(*self._async_http_args)
        return self._async_transport

    def close(self) -> None:
        """Close the sync connection pool (a later call opens a new one)."""
        transport, self._sync_transport = self._sync_transport, None
        if transport is not None:
            transport.close()

    async def aclose(self) -> None:
        """Close both connection pools (a later call opens new ones)."""
        self.close()
        transport, self._async_transport = self._async_transport, None
        if transport is not None:
            await transport.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _Engine:
    """Builds one model turn for a driver: the encoded request, a fresh decoder, and its opener.

    The first turn reuses the request encoded (and so validated) when the stream was created."""

    __slots__ = ("transport", "timeouts", "first_call", "first_request")

    def __init__(self, transport: Any, timeouts: Timeouts, first_call: Call, first_request: Any):
        self.transport = transport
        self.timeouts = timeouts
        self.first_call = first_call
        self.first_request = first_request

    def turn(self, call: Call) -> tuple[StreamCore, Any]:
        module = protocol_module(call.provider.protocol)
        if call is self.first_call:
            request, self.first_request = self.first_request, None
        else:
            request = None
        if request is None:
            request = module.encode(call)
        core = StreamCore(call, request, module.Decoder())
        transport, timeouts = self.transport, self.timeouts
        core.total_timeout = timeouts.total
        return core, lambda: transport.open(request, timeouts, core.ctx)


_default: Client | None = None


def default_client() -> Client:
    global _default
    if _default is None:
        _default = Client()
    return _default


def stream(model: str, messages: Any, **params: Any) -> Stream:
    """Stream a chat response: iterate for typed events, `.text_stream` for text, `.collect()`."""
    return default_client().stream(model, messages, **params)


def astream(model: str, messages: Any, **params: Any) -> AsyncStream:
    return default_client().astream(model, messages, **params)


def complete(model: str, messages: Any, **params: Any) -> Response:
    return default_client().complete(model, messages, **params)


async def acomplete(model: str, messages: Any, **params: Any) -> Response:
    return await default_client().acomplete(model, messages, **params)
