"""`Client`: configuration (keys, base URLs, timeouts, HTTP pools) and the four calls.

Building a `Client` is cheap: HTTP pools are created on first use and reused
for every later call on the same client.
"""

from __future__ import annotations

from dataclasses import replace
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TypeVar, Union, overload

from .errors import (
    AllModelsFailedError,
    InvalidRequestError,
    MissingAPIKeyError,
    UnknownProviderError,
    UnsupportedParameterError,
)
from .reliability.fallback import DEFAULT_RESUME_PROMPT, FallbackMiddleware, Router
from .observability.hooks import DEFAULT_CLIENT_HOOKS, CallContext, Hooks
from .messages import MessagesInput, normalize_messages
from .reliability.middleware import Middleware
from .engine.plan import raise_on_length, single, tool_loop
from .engine.prepare import (
    CALL_OPTIONS,
    FLOW_OPTIONS,
    Settings,
    build_call,
    check_limits,
    encode,
    check_options,
    check_params,
    check_timeouts,
    protocol_module,
    resolve_model,
    retarget,
)
from .call import Call
from .providers import PROVIDERS, Provider
from .response import Attempt, Response
from .reliability.retry import Retry, as_retry, with_chain
from .stream import TEXT_RESETS, AsyncStream, Stream
from .stream.run import Run
from .limits import Limits
from .timeouts import Timeouts

if TYPE_CHECKING:
    from .memory.client import MemoryClient
    from .memory.memory import Memory

__all__ = ["Client", "stream", "astream", "complete", "acomplete", "default_client", "protocol_module", "ModelSpec"]

#: What the calls take as `model`: "provider:model" (or an alias, or a bare id with a default
#: provider), a list of them to fall back through, or a `Router`.
ModelSpec = Union[str, Sequence[str], Router]
#: The type asked for with `output=` (the calls return `Stream[T]` / `Response[T]`).
T = TypeVar("T")
_S = TypeVar("_S", Stream[Any], AsyncStream[Any])

#: Option name -> True for the control-flow options, False for the request-shaping ones.
_OPTION_KINDS = {**{k: False for k in CALL_OPTIONS}, **{k: True for k in FLOW_OPTIONS}}

#: Errors that make a fallback list skip a model before sending anything to it.
_SKIP_ON_PREPARE = (MissingAPIKeyError, UnsupportedParameterError)


class Client:
    """Holds configuration and HTTP pools; offers `stream`, `astream`, `complete`, `acomplete`.

    - `api_keys` / `base_urls`: per provider name (override the env vars). For a cloud provider the
      "key" may also be a token callable or an `llmrelay.cloud` auth object (`AWSAuth`, `AzureAuth`, `GoogleAuth`).
    - `providers`: extra or replaced `Provider` profiles (an OpenAI-compatible
      service is one `Provider(name, "openai_chat", base_url, key_env)`).
    - `aliases`: names that stand for a model string, or for a list of model
      strings (a cascade: fails over before first content only).
    - `default_provider`: the provider for model strings that name none (`"gpt-4o"`), or
      "auto" to pick it by the id's family (`gpt-` -> openai, `claude-` -> anthropic...);
      None: `LLMRELAY_DEFAULT_PROVIDER`, else such a string raises `UnknownProviderError`.
    - `timeout`: a `Timeouts` or seconds.
    - `retry`: a `Retry` policy or a number of retries (default 2; 0 for none).
    - `middleware`: a list of `Middleware`, outermost first.
    - `fallback_mode` / `resume_prompt`: for model lists (see `llmrelay.fallback`).
    - `text_reset`: what `text_stream` does at a fallback restart: "raise" (`StreamResetError`,
      the default), "separator" (yields `llmrelay.stream.RESET_SEPARATOR`, then the new answer)
      or "continue" (only the new answer's text follows). Also per call.
    - `hooks`: `Hooks` instances observing every call (logs and tracing are hooks).
    - `prices`: a `llmrelay.cost.PriceTable` (or mapping) overriding the price database.
    - `limits`: a `Limits` (longest line, whole body, error body: bytes); safe defaults.
    - `async_backend`: "auto" (default: aiohttp when installed, else httpx), "httpx" or
      "aiohttp"; `LLMRELAY_ASYNC_BACKEND` overrides "auto". With hundreds of concurrent
      streams aiohttp is several times faster (`make bench`); sync calls always use httpx.
    - `log`: True (the default SQLite file), a path, a `postgresql://` DSN, or a
      `llmrelay.logs.LogHook`; None lets `LLMRELAY_LOG` decide (1 / path / DSN).
    - `http_client` / `async_http_client`: your own `httpx.Client` / `httpx.AsyncClient`;
      or `transport` / `async_transport`: an httpx transport (e.g. `httpx.MockTransport`).
    """

    def __init__(
        self,
        *,
        api_keys: Mapping[str, Any] | None = None,
        base_urls: Mapping[str, str] | None = None,
        providers: Mapping[str, Provider] | None = None,
        aliases: Mapping[str, Any] | None = None,
        timeout: Timeouts | float | None = None,
        retry: Retry | int | None = 2,
        middleware: list[Middleware] | tuple[Middleware, ...] = (),
        fallback_mode: str = "prefill",
        resume_prompt: str = DEFAULT_RESUME_PROMPT,
        text_reset: str = "raise",
        hooks: list[Hooks] | tuple[Hooks, ...] = (),
        prices: Any = None,
        log: Any = None,
        async_backend: str = "auto",
        limits: Limits | None = None,
        http_client: Any = None,
        async_http_client: Any = None,
        transport: Any = None,
        async_transport: Any = None,
        env: Mapping[str, str] | None = None,
        default_provider: str | None = None,
    ):
        self.api_keys = dict(api_keys or {})
        self.base_urls = dict(base_urls or {})
        self.providers: dict[str, Provider] = {**PROVIDERS, **(providers or {})}
        self.aliases = dict(aliases or {})
        if default_provider is not None and default_provider != "auto" and default_provider not in self.providers:
            raise UnknownProviderError(default_provider, list(self.providers),
                                       reason=f"Unknown default_provider {default_provider!r}")
        self.default_provider = default_provider
        self.timeouts = check_timeouts(Timeouts.of(timeout), "timeout")
        self.limits = check_limits(limits)
        self.retry = as_retry(retry)
        self.middleware = list(middleware)
        self.fallback_mode = fallback_mode
        self.resume_prompt = resume_prompt
        if text_reset not in TEXT_RESETS:
            raise InvalidRequestError(f"text_reset must be one of {', '.join(TEXT_RESETS)}; got {text_reset!r}")
        self.text_reset = text_reset
        self.hooks = list(hooks)
        if log is not None or (os.environ if env is None else env).get("LLMRELAY_LOG"):
            from .logs import hook_from  # sqlite3 and the writer load only when logging is on

            log_hook = hook_from(log, env)
            if log_hook is not None and log_hook not in self.hooks:
                self.hooks.append(log_hook)
        self.prices: Any = None
        if prices is not None:
            from .cost.prices import PriceTable  # lazy: only clients with their own prices pay for it

            self.prices = PriceTable.of(prices)
        self._env = env
        self.async_backend = _async_backend(async_backend, async_http_client, async_transport, env)
        self._http_args = (http_client, transport)
        self._async_http_args = (async_http_client, async_transport)
        self._sync_transport: Any = None
        self._async_transport: Any = None

    # -- preparing a call (pure) ---------------------------------------------
    @property
    def settings(self) -> Settings:
        return Settings(self.providers, self.aliases, self.api_keys, self.base_urls, self._env, self.default_provider)

    def prepare(self, model: Any, messages: Any, **kwargs: Any) -> tuple[Call, Any, Any, Timeouts]:
        """Resolve, validate and encode a call without sending it: (call, request, decoder, timeouts)."""
        _, call, request, timeouts, _ = self._plan(model, messages, kwargs)
        return call, request, protocol_module(call.provider.protocol).Decoder(), timeouts

    def _router(self, model: Any, flow: dict[str, Any]) -> Router | None:
        if isinstance(model, str) and model in self.aliases:
            model = self.aliases[model]
            if isinstance(model, (list, tuple)):  # a cascade: before first content only
                return Router(list(model), mode="none")
        if isinstance(model, Router):
            return model
        if isinstance(model, (list, tuple)):
            return Router(list(model), mode=flow.get("fallback_mode", self.fallback_mode),
                          resume_prompt=flow.get("resume_prompt", self.resume_prompt))
        return None

    def _plan(self, model: Any, messages: Any, kwargs: dict[str, Any],
              streaming: bool = True) -> tuple[Any, Call, Any, Timeouts, dict[str, Any]]:
        output, output_retries = kwargs.pop("output", None), kwargs.pop("output_retries", 0)
        flow: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for k in [k for k in kwargs if k in _OPTION_KINDS]:  # the few given, not every known name
            (flow if _OPTION_KINDS[k] else options)[k] = kwargs.pop(k)
        params = check_params(kwargs)
        tools, tool_choice = check_options(options)
        settings = self.settings
        router = self._router(model, flow)
        spec = None
        if output is not None:  # structured output (llmrelay.structured); pydantic loads here
            from .structured.spec import OutputSpec

            spec = OutputSpec.of(output)
            if router is not None and router.mode in ("prefill", "user_turn"):
                router = replace(router, mode="restart")  # a JSON answer cannot be continued by another model
        elif output_retries:
            raise InvalidRequestError("output_retries needs output=...")
        if router is None:
            model = self.aliases.get(model, model) if isinstance(model, str) else model
            call = build_call(settings, model, normalize_messages(messages), params, options, tools, tool_choice)
            skipped: list[Attempt] = []
        else:
            for m in router.models:  # a typo in any model string fails now, not mid-fallback
                resolve_model(settings, m)
            call, skipped = self._first_target(settings, router, messages, params, options, tools, tool_choice)
        if spec is not None:
            call.output = spec.wire
        wire_body = flow.get("wire_body")
        if wire_body is not None and not callable(wire_body):
            raise InvalidRequestError(f"wire_body must be a callable (call) -> dict | None, got {type(wire_body).__name__}")
        request = encode(call, wire_body)  # a bad request fails here
        timeouts = check_timeouts(options["timeout"]) if "timeout" in options else self.timeouts
        call.timeouts = timeouts
        chain: list[Middleware] = []
        if router is not None:
            chain.append(FallbackMiddleware(router, lambda c, m: retarget(settings, c, m), skipped))
        chain.extend(self.middleware)
        chain.extend(flow.get("middleware") or ())
        retry = as_retry(flow["retry"]) if "retry" in flow else self.retry
        if retry is not None:
            chain.append(retry)
        if spec is not None:
            from .structured.plan import structured_plan

            plan = structured_plan(call, lambda c: with_chain(self._base_plan(c, flow), chain), spec,
                                   retries=output_retries, partials=streaming)
        else:
            plan = with_chain(self._base_plan(call, flow), chain)
        on_length = flow.get("on_length", "return")
        if on_length not in ("return", "raise"):
            raise InvalidRequestError(f"on_length must be 'return' or 'raise', got {on_length!r}")
        if on_length == "raise":
            plan = raise_on_length(plan)
        return plan, call, request, timeouts, flow

    @staticmethod
    def _first_target(settings: Settings, router: Router, messages: Any, params: Any, options: dict[str, Any],
                      tools: Any, tool_choice: Any) -> tuple[Call, list[Attempt]]:
        msgs = normalize_messages(messages)
        skipped: list[Attempt] = []
        for index, m in enumerate(router.models):
            try:
                return build_call(settings, m, msgs, params, options if index == 0 else {}, tools, tool_choice), skipped
            except _SKIP_ON_PREPARE as error:
                skipped.append(Attempt(m, None, error))
        raise AllModelsFailedError(
            "no model of the fallback list can be called: " + "; ".join(f"{a.model}: {a.error}" for a in skipped),
            [a.error for a in skipped],
            attempts=skipped,
        )

    @staticmethod
    def _base_plan(call: Call, flow: dict[str, Any]) -> Any:
        if not call.tools:
            return single(call)
        errors = flow.get("tool_errors", "return")
        if errors not in ("return", "raise"):
            raise InvalidRequestError(f"tool_errors must be 'return' or 'raise', got {errors!r}")
        rounds = flow.get("max_tool_rounds", 10)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise InvalidRequestError(f"max_tool_rounds must be a non-negative integer, got {rounds!r}")
        return tool_loop(call, {t.name: t for t in call.tools}, max_rounds=rounds,
                         run_tools=flow.get("run_tools", True), raise_tool_errors=errors == "raise")

    # -- the four calls (typed per `output=`: a type gives `Stream[T]`, else `Stream[Any]`) --------
    @overload
    def stream(self, model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> Stream[T]: ...
    @overload
    def stream(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> Stream[Any]: ...
    def stream(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> Stream[Any]:
        """Stream a response from `model` ("provider:model", an alias, a list to fall back
        through, or a `Router`). Options besides the generation params: `tools`,
        `tool_choice`, `max_tool_rounds` (10), `run_tools` (True), `tool_errors`
        ("return" | "raise"), `retry`, `middleware`, `fallback_mode`, `resume_prompt`,
        `extra_body`, `extra_headers`, `timeout`, `api_key`, `base_url`, `provider`,
        `output` (a type or JSON schema: structured output, see `llmrelay.structured`), `output_retries`,
        `correlation_id` (your request id; else one is generated), `conversation_id` (your thread id),
        `text_reset`, `options` (Ollama runtime options), `wire_body` (a callable `(call) -> dict | None`:
        a JSON body to send as is for each request, see `engine.prepare.encode`)."""
        return self._open(Stream, self._sync(), model, messages, params, True)

    @overload
    def astream(self, model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> AsyncStream[T]: ...
    @overload
    def astream(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> AsyncStream[Any]: ...
    def astream(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> AsyncStream[Any]:
        return self._open(AsyncStream, self._async(), model, messages, params, True)

    @overload
    def complete(self, model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> Response[T]: ...
    @overload
    def complete(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]: ...
    def complete(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]:
        with self._open(Stream, self._sync(), model, messages, params, False) as s:
            return s.collect()

    @overload
    async def acomplete(self, model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> Response[T]: ...
    @overload
    async def acomplete(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]: ...
    async def acomplete(self, model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]:
        async with self._open(AsyncStream, self._async(), model, messages, params, False) as s:
            return await s.collect()

    def _open(self, cls: type[_S], transport: Any, model: Any, messages: Any, params: dict[str, Any],
              streaming: bool) -> _S:
        plan, call, request, timeouts, flow = self._plan(model, messages, params, streaming)
        hooks = tuple(self.hooks) + tuple(flow.get("hooks") or ())
        tags = flow.get("tags") or {}
        if not isinstance(tags, dict):
            raise InvalidRequestError(f"tags must be a dict, got {type(tags).__name__}")
        for name in ("correlation_id", "conversation_id"):
            value = flow.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}")
        correlation_id = flow.get("correlation_id")  # given: no random id drawn for nothing
        given: dict[str, Any] = {}
        if correlation_id is not None:
            given = {"correlation_id": correlation_id, "correlation_given": True}
        context = CallContext(tags=dict(tags), requested=model, stream=streaming, **given)
        context.conversation_id = flow.get("conversation_id")
        text_reset = flow.get("text_reset", self.text_reset)
        if text_reset not in TEXT_RESETS:
            raise InvalidRequestError(f"text_reset must be one of {', '.join(TEXT_RESETS)}; got {text_reset!r}")
        run = Run(plan, hooks, context, transport, timeouts, call, request, self.prices, self.limits.max_line,
                  flow.get("wire_body"))
        run.text_reset = text_reset
        return cls(run)

    def with_memory(self, user_id: str, memory: Memory | None = None, **options: Any) -> MemoryClient:
        """This client with user-scoped memory: a `search_memory` tool and background
        learning from each finished exchange (see `llmrelay.memory`)."""
        from .memory.memory import with_memory

        client: MemoryClient = with_memory(self, user_id, memory, **options)
        return client

    # -- transports -----------------------------------------------------------
    def _sync(self) -> Any:
        if self._sync_transport is None:
            from .transports.httpx import SyncTransport

            self._sync_transport = SyncTransport(*self._http_args, limits=self.limits)
        return self._sync_transport

    def _async(self) -> Any:
        if self._async_transport is None:
            client, transport = self._async_http_args
            if self.async_backend == "aiohttp":
                if transport is not None:
                    raise InvalidRequestError("async_transport= is an httpx transport; it needs async_backend='httpx'")
                from .transports.aiohttp import AiohttpTransport

                self._async_transport = AiohttpTransport(client, limits=self.limits)
            else:
                from .transports.httpx import AsyncTransport

                self._async_transport = AsyncTransport(client, transport, limits=self.limits)
        return self._async_transport

    def close(self) -> None:
        """Close the connection pools (a later call opens new ones). Prefer `aclose()` in async code."""
        transport, self._sync_transport = self._sync_transport, None
        if transport is not None:
            transport.close()
        close_async = getattr(self._async_transport, "close", None)  # aiohttp sessions close without a loop
        if close_async is not None:
            self._async_transport = None
            close_async()

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


def _async_backend(choice: str, client: Any, transport: Any, env: Mapping[str, str] | None) -> str:
    """Which async HTTP stack to use. An httpx client or transport given by the caller decides."""
    if choice not in ("auto", "httpx", "aiohttp"):
        raise InvalidRequestError(f"async_backend must be 'auto', 'httpx' or 'aiohttp'; got {choice!r}")
    if choice != "auto":
        return choice
    if transport is not None:
        return "httpx"
    if client is not None:
        return "aiohttp" if type(client).__module__.startswith("aiohttp") else "httpx"
    forced = (os.environ if env is None else env).get("LLMRELAY_ASYNC_BACKEND", "")
    if forced in ("httpx", "aiohttp"):
        return forced
    import importlib.util

    return "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"


_default: Client | None = None


def default_client() -> Client:
    """The client behind `llmrelay.stream()` and friends (built on first use from the environment).
    Its hook list is `observability.hooks.DEFAULT_CLIENT_HOOKS`, where `llmrelay.logs.enable()` adds."""
    global _default
    if _default is None:
        client = Client()
        DEFAULT_CLIENT_HOOKS.extend(h for h in client.hooks if h not in DEFAULT_CLIENT_HOOKS)
        client.hooks = DEFAULT_CLIENT_HOOKS
        _default = client
    return _default


@overload
def stream(model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> Stream[T]: ...
@overload
def stream(model: ModelSpec, messages: MessagesInput, **params: Any) -> Stream[Any]: ...
def stream(model: ModelSpec, messages: MessagesInput, **params: Any) -> Stream[Any]:
    """Stream a chat response: iterate for typed events, `.text_stream` for text, `.collect()`."""
    return default_client().stream(model, messages, **params)


@overload
def astream(model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> AsyncStream[T]: ...
@overload
def astream(model: ModelSpec, messages: MessagesInput, **params: Any) -> AsyncStream[Any]: ...
def astream(model: ModelSpec, messages: MessagesInput, **params: Any) -> AsyncStream[Any]:
    return default_client().astream(model, messages, **params)


@overload
def complete(model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> Response[T]: ...
@overload
def complete(model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]: ...
def complete(model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]:
    return default_client().complete(model, messages, **params)


@overload
async def acomplete(model: ModelSpec, messages: MessagesInput, *, output: type[T], **params: Any) -> Response[T]: ...
@overload
async def acomplete(model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]: ...
async def acomplete(model: ModelSpec, messages: MessagesInput, **params: Any) -> Response[Any]:
    return await default_client().acomplete(model, messages, **params)
